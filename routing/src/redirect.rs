//! [`Redirect`]: `MOVED` and `ASK` errors from cluster nodes.

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
    /// Returns `None` if it is not a well-formed MOVED or ASK error.
    pub fn parse(error: &[u8]) -> Option<Redirect> {
        let _ = error;
        unimplemented!()
    }
}
