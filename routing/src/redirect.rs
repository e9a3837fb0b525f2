//! [`Redirect`]: `MOVED` and `ASK` errors from cluster nodes.
//!
//! The wire form is `MOVED <slot> <endpoint>:<port>` (or `ASK ...`). The endpoint is an IP
//! address (IPv6 without brackets, so the port is after the *last* colon), a hostname, or empty
//! or `?` when the node does not know it, meaning "the node that sent the redirect".

// Routing runs on untrusted input: no indexing, unwrapping or panicking outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use crate::Slot;

/// A redirect error returned by a cluster node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED <slot> <host>:<port>`: the slot now lives on `addr`; refresh the map.
    Moved {
        /// The slot that moved.
        slot: Slot,
        /// `host:port` of the new owner.
        addr: String,
    },
    /// `ASK <slot> <host>:<port>`: send `ASKING` then this one command to `addr`.
    Ask {
        /// The slot being migrated.
        slot: Slot,
        /// `host:port` of the importing node.
        addr: String,
    },
}

impl Redirect {
    /// Parses the text of an error reply (without the leading `-` and trailing CRLF).
    ///
    /// Returns `None` if it is not a well-formed MOVED or ASK error: another error code, a slot
    /// that is not a decimal number below 16384, an address without a `:port` (a decimal
    /// `u16`), non-UTF-8 bytes, or extra words. The host part is kept as sent, even when empty
    /// or `?`.
    pub fn parse(error: &[u8]) -> Option<Redirect> {
        let text = std::str::from_utf8(error).ok()?;
        let mut words = text.split(' ');
        let (kind, slot, addr) = (words.next()?, words.next()?, words.next()?);
        if words.next().is_some() {
            return None;
        }
        let slot = Slot::new(parse_decimal(slot)?)?;
        let (_host, port) = addr.rsplit_once(':')?;
        parse_decimal(port)?;
        let addr = addr.to_owned();
        match kind {
            "MOVED" => Some(Redirect::Moved { slot, addr }),
            "ASK" => Some(Redirect::Ask { slot, addr }),
            _ => None,
        }
    }

    /// The redirect with an unknown host (empty or `?`) replaced by the host of `sender`, the
    /// `host:port` of the node that sent it: the cluster spec's "same endpoint as the current
    /// request".
    pub fn filled_from(self, sender: &str) -> Redirect {
        let fill = |addr: String| match addr.rsplit_once(':') {
            Some(("" | "?", port)) => match sender.rsplit_once(':') {
                Some((host, _)) => format!("{host}:{port}"),
                None => addr,
            },
            _ => addr,
        };
        match self {
            Redirect::Moved { slot, addr } => Redirect::Moved {
                slot,
                addr: fill(addr),
            },
            Redirect::Ask { slot, addr } => Redirect::Ask {
                slot,
                addr: fill(addr),
            },
        }
    }

    /// The slot the redirect is about.
    pub fn slot(&self) -> Slot {
        match self {
            Redirect::Moved { slot, .. } | Redirect::Ask { slot, .. } => *slot,
        }
    }

    /// The `host:port` to go to, as sent (the host may be empty or `?`; see the module docs).
    pub fn addr(&self) -> &str {
        match self {
            Redirect::Moved { addr, .. } | Redirect::Ask { addr, .. } => addr,
        }
    }

    /// True for `MOVED`.
    pub fn is_moved(&self) -> bool {
        matches!(self, Redirect::Moved { .. })
    }
}

/// True for the errors a cluster node refuses a command with because its slot is elsewhere or
/// moving (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`): the command did not run. `EXEC` refused
/// this way has discarded its transaction.
pub fn slot_in_motion(error: &[u8]) -> bool {
    [&b"MOVED "[..], b"ASK ", b"TRYAGAIN", b"CLUSTERDOWN"]
        .iter()
        .any(|p| error.starts_with(p))
}

/// A `u16` written with ASCII digits only (no sign, no spaces), as Redis prints it.
fn parse_decimal(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_in_motion_errors() {
        for e in [
            &b"MOVED 1 a:1"[..],
            b"ASK 1 a:1",
            b"TRYAGAIN Multiple keys",
            b"CLUSTERDOWN x",
        ] {
            assert!(slot_in_motion(e));
        }
        for e in [
            &b"MOVEDX"[..],
            b"ERR x",
            b"WRONGTYPE x",
            b"EXECABORT x",
            b"",
        ] {
            assert!(!slot_in_motion(e));
        }
    }

    fn slot(n: u16) -> Slot {
        Slot::new(n).unwrap()
    }

    #[test]
    fn moved_and_ask() {
        assert_eq!(
            Redirect::parse(b"MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved {
                slot: slot(3999),
                addr: "127.0.0.1:6381".into()
            })
        );
        let ask = Redirect::parse(b"ASK 3999 127.0.0.1:6381").unwrap();
        assert_eq!(
            ask,
            Redirect::Ask {
                slot: slot(3999),
                addr: "127.0.0.1:6381".into()
            }
        );
        assert_eq!(ask.slot(), slot(3999));
        assert_eq!(ask.addr(), "127.0.0.1:6381");
        assert!(!ask.is_moved());
    }

    #[test]
    fn ipv6_and_hostnames() {
        assert_eq!(
            Redirect::parse(b"MOVED 1 ::1:7000"),
            Some(Redirect::Moved {
                slot: slot(1),
                addr: "::1:7000".into()
            })
        );
        assert_eq!(
            Redirect::parse(b"ASK 16383 redis-2.example.com:6379"),
            Some(Redirect::Ask {
                slot: slot(16383),
                addr: "redis-2.example.com:6379".into()
            })
        );
        // Unknown endpoint: the host is empty (or `?`) and is kept as sent.
        assert_eq!(Redirect::parse(b"MOVED 0 :6380").unwrap().addr(), ":6380");
        assert_eq!(Redirect::parse(b"MOVED 0 ?:6380").unwrap().addr(), "?:6380");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"MOVED 16384 127.0.0.1:6381"[..],
            b"MOVED 65536 127.0.0.1:6381",
            b"MOVED -1 127.0.0.1:6381",
            b"MOVED +1 127.0.0.1:6381",
            b"MOVED x 127.0.0.1:6381",
            b"MOVED  127.0.0.1:6381",
            b"MOVED 1 127.0.0.1",
            b"MOVED 1 127.0.0.1:",
            b"MOVED 1 127.0.0.1:65536",
            b"MOVED 1 127.0.0.1:63a",
            b"MOVED 1",
            b"MOVED",
            b"MOVED 1 127.0.0.1:6381 extra",
            b"moved 1 127.0.0.1:6381",
            b"ERR unknown command",
            b"TRYAGAIN Multiple keys request during rehashing of slot",
            b"MOVED 1 \xff:6381",
            b"",
        ] {
            assert_eq!(
                Redirect::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn unknown_hosts_are_filled_from_the_sender() {
        let moved = |text: &str| Redirect::parse(text.as_bytes()).unwrap();
        assert_eq!(
            moved("MOVED 3999 :6381")
                .filled_from("10.0.0.5:6380")
                .addr(),
            "10.0.0.5:6381"
        );
        assert_eq!(
            moved("ASK 3999 ?:6381")
                .filled_from("node-a.local:6380")
                .addr(),
            "node-a.local:6381"
        );
        assert_eq!(
            moved("MOVED 3999 ::1:6381")
                .filled_from("10.0.0.5:6380")
                .addr(),
            "::1:6381"
        );
        assert_eq!(
            moved("MOVED 3999 10.0.0.7:6381")
                .filled_from("10.0.0.5:6380")
                .addr(),
            "10.0.0.7:6381"
        );
    }
}
