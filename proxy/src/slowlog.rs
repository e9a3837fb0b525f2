//! The slow-request log: requests whose reply took longer than `slowlog.slower_than_us` to be
//! ready, measured in the proxy (decode to reply, so node time and redirects included).
//!
//! Entries are kept for `SLOWLOG GET / LEN / RESET`, which the proxy answers in Redis's format
//! (`[id, unix time, microseconds, [args...], client addr, client name]`, newest first, at most
//! 32 arguments of at most 128 bytes each, AUTH passwords redacted), and each one is logged at
//! `warn` (at most [`LOG_LINES_PER_SECOND`]).
//!
//! The hot path is [`SlowLog::is_slow`]: one atomic load. The entry list is behind a mutex taken
//! only for slow requests and SLOWLOG commands.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};

use crate::config::SlowlogConfig;
use crate::error::ProxyError;
use crate::server::ClientState;

/// Most slow-request log lines per second; the others are counted and reported in the next line.
pub const LOG_LINES_PER_SECOND: u32 = 10;
/// Arguments kept per entry (as Redis: the last one says how many more there were).
const MAX_ARGS: usize = 32;
/// Bytes kept per argument (as Redis).
const MAX_ARG_LEN: usize = 128;

/// The slow-request log.
#[derive(Debug)]
pub struct SlowLog {
    slower_than_us: AtomicI64,
    max_len: AtomicUsize,
    log: AtomicBool,
    next_id: AtomicU64,
    entries: Mutex<VecDeque<Entry>>,
    /// (second of the last line, lines in that second, lines suppressed since the last line).
    lines: Mutex<(u64, u32, u64)>,
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    unix_secs: u64,
    micros: u64,
    args: Vec<Bytes>,
    client: String,
    name: Bytes,
}

impl SlowLog {
    /// An empty log with these settings.
    pub fn new(config: &SlowlogConfig) -> SlowLog {
        let log = SlowLog {
            slower_than_us: AtomicI64::new(0),
            max_len: AtomicUsize::new(0),
            log: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(VecDeque::new()),
            lines: Mutex::new((0, 0, 0)),
        };
        log.configure(config);
        log
    }

    /// Applies new settings (at start and on reload). A shorter `max_len` drops the oldest.
    pub fn configure(&self, config: &SlowlogConfig) {
        self.slower_than_us
            .store(config.slower_than_us, Ordering::Relaxed);
        self.max_len.store(config.max_len, Ordering::Relaxed);
        self.log.store(config.log, Ordering::Relaxed);
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncate(config.max_len);
    }

    /// True if a request that took `elapsed` must be recorded.
    pub fn is_slow(&self, elapsed: Duration) -> bool {
        let threshold = self.slower_than_us.load(Ordering::Relaxed);
        threshold >= 0 && elapsed.as_micros() >= threshold as u128
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True if no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a slow request: `raw` is the request as the client sent it.
    pub fn record(&self, raw: &Bytes, elapsed: Duration, client: &ClientState) {
        let args = entry_args(raw);
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            unix_secs: now.as_secs(),
            micros,
            client: client.peer().map(|p| p.to_string()).unwrap_or_default(),
            name: client.name().unwrap_or_default(),
            args,
        };
        if self.log.load(Ordering::Relaxed) {
            self.log_line(&entry, now.as_secs());
        }
        let max_len = self.max_len.load(Ordering::Relaxed);
        if max_len == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.push_front(entry);
        entries.truncate(max_len);
    }

    fn log_line(&self, entry: &Entry, second: u64) {
        let suppressed = {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.0 != second {
                lines.0 = second;
                lines.1 = 0;
            }
            if lines.1 >= LOG_LINES_PER_SECOND {
                lines.2 += 1;
                return;
            }
            lines.1 += 1;
            std::mem::take(&mut lines.2)
        };
        let command: Vec<String> = entry
            .args
            .iter()
            .take(4)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        tracing::warn!(
            target: "slotway::slowlog",
            duration_us = entry.micros,
            client = %entry.client,
            command = %command.join(" "),
            suppressed_before = suppressed,
            "slow request"
        );
    }

    /// Answers `SLOWLOG GET [count]`, `LEN`, `RESET` and `HELP` (`name` is the command table
    /// name, such as `slowlog|get`).
    pub fn answer(&self, name: &str, req: &Request) -> Result<Frame, ProxyError> {
        match name {
            "slowlog|get" => {
                let count = match req.arg(2) {
                    None => 10,
                    Some(c) => {
                        let c = std::str::from_utf8(c)
                            .ok()
                            .and_then(|c| c.parse::<i64>().ok())
                            .ok_or(ProxyError::NotAnInteger)?;
                        if c < -1 {
                            return Err(ProxyError::Other(
                                "ERR count should be greater than or equal to -1".to_string(),
                            ));
                        }
                        if c == -1 {
                            usize::MAX
                        } else {
                            c as usize
                        }
                    }
                };
                let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
                Ok(Frame::Array(
                    entries.iter().take(count).map(Entry::frame).collect(),
                ))
            }
            "slowlog|len" => Ok(Frame::Integer(self.len() as i64)),
            "slowlog|reset" => {
                self.entries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                Ok(Frame::Simple(Bytes::from_static(b"OK")))
            }
            _ => Ok(Frame::Array(
                [
                    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "GET [<count>]",
                    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                    "    Entries are made of:",
                    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                    "    client name",
                    "LEN",
                    "    Return the length of the slowlog.",
                    "RESET",
                    "    Reset the slowlog.",
                    "HELP",
                    "    Print this help.",
                ]
                .iter()
                .map(|s| Frame::Simple(Bytes::from_static(s.as_bytes())))
                .collect(),
            )),
        }
    }
}

impl Entry {
    fn frame(&self) -> Frame {
        Frame::Array(vec![
            Frame::Integer(self.id as i64),
            Frame::Integer(self.unix_secs as i64),
            Frame::Integer(self.micros as i64),
            Frame::Array(self.args.iter().cloned().map(Frame::Bulk).collect()),
            Frame::Bulk(Bytes::from(self.client.clone())),
            Frame::Bulk(self.name.clone()),
        ])
    }
}

/// The arguments of `raw` as SLOWLOG shows them: at most 32, each cut at 128 bytes, passwords
/// redacted.
fn entry_args(raw: &Bytes) -> Vec<Bytes> {
    let mut buf = BytesMut::from(&raw[..]);
    let Ok(Some(req)) = protocol::decode_request(&mut buf, &Limits::default()) else {
        return vec![Bytes::from_static(b"(unreadable request)")];
    };
    let name = req.name().to_ascii_lowercase();
    let redact_from = match name.as_slice() {
        b"auth" | b"migrate" => Some(1),
        b"hello" => req
            .args()
            .position(|a| a.eq_ignore_ascii_case(b"auth"))
            .map(|i| i + 1),
        _ => None,
    };
    let n = req.len();
    let shown = if n > MAX_ARGS { MAX_ARGS - 1 } else { n };
    let mut args: Vec<Bytes> = req
        .args()
        .take(shown)
        .enumerate()
        .map(|(i, a)| {
            if redact_from.is_some_and(|from| i >= from) {
                Bytes::from_static(b"(redacted)")
            } else if a.len() > MAX_ARG_LEN {
                let mut s = a[..MAX_ARG_LEN].to_vec();
                s.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_ARG_LEN).as_bytes(),
                );
                Bytes::from(s)
            } else {
                Bytes::copy_from_slice(a)
            }
        })
        .collect();
    if n > MAX_ARGS {
        args.push(Bytes::from(format!("... ({} more arguments)", n - shown)));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_zero_records_everything_and_negative_nothing() {
        let mut c = SlowlogConfig::default();
        let log = SlowLog::new(&c);
        assert!(!log.is_slow(Duration::from_micros(9_999)));
        assert!(log.is_slow(Duration::from_micros(10_000)));
        c.slower_than_us = 0;
        log.configure(&c);
        assert!(log.is_slow(Duration::ZERO));
        c.slower_than_us = -1;
        log.configure(&c);
        assert!(!log.is_slow(Duration::from_secs(100)));
    }

    #[test]
    fn args_are_capped_cut_and_redacted() {
        let raw = Request::from_args(["AUTH", "user", "secret"]).raw().clone();
        assert_eq!(entry_args(&raw), vec!["AUTH", "(redacted)", "(redacted)"]);
        let long = "x".repeat(200);
        let raw = Request::from_args(["SET", "k", long.as_str()])
            .raw()
            .clone();
        let args = entry_args(&raw);
        assert_eq!(args[2].len(), 128 + "... (72 more bytes)".len());
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let raw = Request::from_args(many.iter().map(String::as_str))
            .raw()
            .clone();
        let args = entry_args(&raw);
        assert_eq!(args.len(), 32);
        assert_eq!(args[31], "... (9 more arguments)");
    }
}
