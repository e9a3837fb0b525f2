//! [`Slot`]: a cluster hash slot.

/// A hash slot. Invariant: the value is always below [`Slot::COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u16);

impl Slot {
    /// Number of hash slots in a Redis Cluster.
    pub const COUNT: usize = 16384;

    /// The slot of `key`: CRC16/XMODEM of the hash tag (the bytes between the first `{` and the
    /// first `}` after it, if non-empty) or of the whole key, modulo 16384.
    pub fn for_key(key: &[u8]) -> Slot {
        let _ = key;
        unimplemented!()
    }

    /// `Some(slot)` if `n < 16384`.
    pub fn new(n: u16) -> Option<Slot> {
        (usize::from(n) < Slot::COUNT).then_some(Slot(n))
    }

    /// The slot number, below 16384.
    pub fn get(self) -> u16 {
        self.0
    }
}
