//! MONITOR: every command Slotway's clients send, shown to the clients that asked, in
//! redis-server's format:
//!
//! ```text
//! +1700000000.123456 [0 127.0.0.1:51234] "SET" "key" "value"
//! ```
//!
//! A node's own MONITOR would show the proxy's pooled connections and stored key names; this
//! shows what a single node in the proxy's place would: each client's address, its database and
//! its command as sent. A command is shown when the proxy takes it (Redis shows it once run, so
//! a command refused by a node is shown here and not there); commands flagged `admin` or
//! `skip_monitor` are not shown, and the arguments of AUTH, and HELLO's AUTH username and
//! password, show as `(redacted)`, as in Redis. Commands that scripts run on the nodes are not
//! shown (Redis shows them as `[0 lua]`).
//!
//! Each session checks [`Monitors::active`] per request (one relaxed load); only while a
//! monitor is connected does it format lines, which reach each monitor's session through its
//! reply queue ([`MONITOR_SEQ`]) and are written out of band, as Redis writes them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::Request;

use crate::listener::ClientAddr;
use crate::reply::{Delivery, Reply, ReplyQueue};

/// Deliveries with this sequence number are MONITOR lines for a monitoring client.
pub const MONITOR_SEQ: u64 = u64::MAX - 2;

/// The monitoring clients.
#[derive(Debug, Default)]
pub struct Monitors {
    count: AtomicUsize,
    queues: Mutex<Vec<(u64, Arc<ReplyQueue>)>>,
}

impl Monitors {
    /// True while a client is monitoring.
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Client `id` monitors from now on; its lines go to `queue`.
    pub fn add(&self, id: u64, queue: Arc<ReplyQueue>) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if !queues.iter().any(|(c, _)| *c == id) {
            queues.push((id, queue));
            self.count.store(queues.len(), Ordering::Relaxed);
        }
    }

    /// True if client `id` is monitoring (Redis does not time monitors out).
    pub fn has(&self, id: u64) -> bool {
        self.active()
            && self
                .queues
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(c, _)| *c == id)
    }

    /// Client `id` stops monitoring (RESET, or it left).
    pub fn remove(&self, id: u64) {
        if !self.active() {
            return;
        }
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.retain(|(c, _)| *c != id);
        self.count.store(queues.len(), Ordering::Relaxed);
    }

    /// Sends `line` to every monitor (a monitor's own commands included, as in Redis).
    pub fn feed(&self, line: Bytes) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for (_, queue) in queues.iter() {
            queue.push(Delivery {
                seq: MONITOR_SEQ,
                part: 0,
                reply: Reply::Frame(line.clone()),
            });
        }
    }
}

/// True if a command of this table name and flags is shown.
pub fn shown(spec: &routing::CommandSpec) -> bool {
    !(spec.flags.contains(routing::Flags::ADMIN)
        || spec.flags.contains(routing::Flags::SKIP_MONITOR))
}

/// The MONITOR line for `req` (table name `name`) from a client at `peer` in database `db`.
pub fn line(now: SystemTime, db: u32, peer: &ClientAddr, name: &str, req: &Request) -> Bytes {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = format!("+{}.{:06} [{db} ", since.as_secs(), since.subsec_micros()).into_bytes();
    match peer {
        ClientAddr::Tcp(addr) => out.extend_from_slice(addr.to_string().as_bytes()),
        ClientAddr::Unix(path) => {
            out.extend_from_slice(b"unix:");
            out.extend_from_slice(path.as_bytes());
        }
    }
    out.extend_from_slice(b"]");
    let redacted = redacted(name, req);
    for (i, arg) in req.args().enumerate() {
        out.push(b' ');
        if redacted.contains(&i) {
            out.extend_from_slice(b"\"(redacted)\"");
        } else {
            repr(&mut out, arg);
        }
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Positions of the arguments shown as `(redacted)`: AUTH's, and HELLO's AUTH username and
/// password.
fn redacted(name: &str, req: &Request) -> Vec<usize> {
    match name {
        "auth" => (1..req.len()).collect(),
        "hello" => req
            .args()
            .position(|a| a.eq_ignore_ascii_case(b"AUTH"))
            .map_or_else(Vec::new, |i| vec![i + 1, i + 2]),
        _ => Vec::new(),
    }
}

/// `arg` quoted as Redis's `sdscatrepr` quotes it.
fn repr(out: &mut Vec<u8>, arg: &[u8]) {
    out.push(b'"');
    for &b in arg {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&[u8]]) -> Request {
        Request::from_args(args.iter().copied())
    }

    #[test]
    fn lines_are_redis_shaped() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_000_042);
        let peer = ClientAddr::Tcp("127.0.0.1:5000".parse().unwrap());
        let l = line(
            at,
            3,
            &peer,
            "set",
            &req(&[b"SET", b"k\"\\", b"a\r\n\t\x07\x08\x01\xff"]),
        );
        assert_eq!(
            &l[..],
            b"+1700000000.000042 [3 127.0.0.1:5000] \"SET\" \"k\\\"\\\\\" \"a\\r\\n\\t\\a\\b\\x01\\xff\"\r\n"
        );
        let unix = ClientAddr::Unix(Arc::from("/run/s.sock"));
        let l = line(at, 0, &unix, "auth", &req(&[b"AUTH", b"user", b"secret"]));
        assert!(l.ends_with(b"[0 unix:/run/s.sock] \"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"));
        let l = line(
            at,
            0,
            &peer,
            "hello",
            &req(&[b"HELLO", b"3", b"auth", b"u", b"p", b"SETNAME", b"n"]),
        );
        assert!(l.ends_with(
            b"\"HELLO\" \"3\" \"auth\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"n\"\r\n"
        ));
    }
}
