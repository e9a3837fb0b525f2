//! [`Slot`]: a cluster hash slot, and the hash-tag rule that maps a key to one.

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

/// A hash slot. Invariant: the value is always below [`Slot::COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u16);

impl Slot {
    /// Number of hash slots in a Redis Cluster.
    pub const COUNT: usize = 16384;

    /// The slot of `key`: CRC16/XMODEM of the hash tag (the bytes between the first `{` and the
    /// first `}` after it, if non-empty) or of the whole key, modulo 16384.
    ///
    /// As in the cluster spec: `{user}1` and `{user}2` share a slot, `foo{}{bar}` hashes the
    /// whole key (the first tag is empty), `foo{{bar}}` hashes `{bar`, and `foo{bar}{zap}`
    /// hashes `bar`.
    pub fn for_key(key: &[u8]) -> Slot {
        let crc = crc16::State::<crc16::XMODEM>::calculate(hash_tag(key));
        // Masking keeps the invariant: the result is below 16384.
        Slot(crc & (Slot::COUNT as u16 - 1))
    }

    /// `Some(slot)` if `n < 16384`.
    pub fn new(n: u16) -> Option<Slot> {
        (usize::from(n) < Slot::COUNT).then_some(Slot(n))
    }

    /// The slot number, below 16384.
    pub fn get(self) -> u16 {
        self.0
    }

    /// A short hash tag of this slot: `{tag}anything` is a key of this slot. The tag is the
    /// smallest decimal number whose CRC16 falls in the slot (a table built on first use, from
    /// about 150,000 hashes).
    pub fn tag(self) -> u32 {
        static TAGS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
        let tags = TAGS.get_or_init(|| {
            let mut tags = vec![u32::MAX; Slot::COUNT];
            let mut missing = Slot::COUNT;
            let mut n: u32 = 0;
            while missing > 0 {
                let slot = Slot::for_key(n.to_string().as_bytes());
                if let Some(t) = tags.get_mut(usize::from(slot.0)) {
                    if *t == u32::MAX {
                        *t = n;
                        missing -= 1;
                    }
                }
                n += 1;
            }
            tags
        });
        tags.get(usize::from(self.0)).copied().unwrap_or_default()
    }
}

/// The part of `key` that is hashed: the hash tag if there is a non-empty one, else the key.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = key.get(open + 1..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => rest.get(..close).unwrap_or(key),
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots() {
        assert_eq!(Slot::for_key(b"foo").get(), 12182);
        assert_eq!(Slot::for_key(b"bar").get(), 5061);
        assert_eq!(Slot::for_key(b"").get(), 0);
        // The CRC16/XMODEM check value.
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        assert_eq!(Slot::for_key(b"123456789").get(), 0x31C3 & 16383);
    }

    #[test]
    fn every_slot_has_a_tag_of_its_own() {
        for n in 0..Slot::COUNT as u16 {
            let slot = Slot(n);
            let key = format!("{{{}}}copy:1", slot.tag());
            assert_eq!(Slot::for_key(key.as_bytes()), slot, "{key}");
        }
        // `CLUSTER KEYSLOT 3560` is 0 on a real node.
        assert_eq!(Slot(0).tag(), 3560);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(Slot::for_key(b"{user}1"), Slot::for_key(b"{user}2"));
        assert_eq!(Slot::for_key(b"{user}1"), Slot::for_key(b"user"));
        assert_eq!(
            Slot::for_key(b"{user1000}.following"),
            Slot::for_key(b"{user1000}.followers")
        );
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"{a}"), b"a");
        assert_eq!(Slot::for_key(b"foo{{bar}}"), Slot::for_key(b"{bar"));
        assert_eq!(Slot::for_key(b"foo{bar}{zap}"), Slot::for_key(b"bar"));
    }

    #[test]
    fn new_checks_range() {
        assert_eq!(Slot::new(16383).map(Slot::get), Some(16383));
        assert_eq!(Slot::new(16384), None);
        assert_eq!(Slot::new(u16::MAX), None);
    }

    proptest::proptest! {
        #[test]
        fn always_in_range(key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert!(usize::from(Slot::for_key(&key).get()) < Slot::COUNT);
        }
    }
}
