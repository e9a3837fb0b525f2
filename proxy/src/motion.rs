//! Slots seen migrating: the slots whose nodes recently answered `ASK` or `TRYAGAIN`.
//!
//! While a slot migrates, a command over several of its keys can be refused (`TRYAGAIN`:
//! some of its keys have moved, some not) and is then sent again a little later. A client's
//! requests pipelined after it must not run in between, as they would on one node; but they
//! are already on their way when the refusal comes back. So a session holds its next requests
//! behind a multi-key request to a slot seen migrating in the last few seconds, until that one
//! is answered (`Entry::holds_pipeline`). The first such request of a migration, before the
//! proxy has seen any redirect for the slot, can still be overtaken.
//!
//! One `AtomicU32` per slot (64 KiB): the second, counted from the proxy's start, of the last
//! `ASK` or `TRYAGAIN`, or 0. `MOVED` (the migration is over) clears it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use routing::Slot;

/// How long a slot counts as migrating after its last `ASK` or `TRYAGAIN`.
const WINDOW: Duration = Duration::from_secs(5);

/// The slots seen migrating.
pub struct Motion {
    start: Instant,
    last_seen: Box<[AtomicU32]>,
}

impl Motion {
    /// No slot seen migrating.
    pub fn new() -> Motion {
        Motion {
            start: Instant::now(),
            last_seen: (0..Slot::COUNT).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// A node answered `ASK` or `TRYAGAIN` for `slot`.
    pub fn seen(&self, slot: Slot) {
        self.cell(slot).store(self.now(), Ordering::Relaxed);
    }

    /// A node answered `MOVED` for `slot`: its migration is over.
    pub fn settled(&self, slot: Slot) {
        self.cell(slot).store(0, Ordering::Relaxed);
    }

    /// True if `slot` answered `ASK` or `TRYAGAIN` in the last few seconds.
    pub fn migrating(&self, slot: Slot) -> bool {
        match self.cell(slot).load(Ordering::Relaxed) {
            0 => false,
            seen => self.now().saturating_sub(seen) <= WINDOW.as_secs() as u32,
        }
    }

    /// The slot's entry (there is one for every slot: `Slot` is below `Slot::COUNT`).
    fn cell(&self, slot: Slot) -> &AtomicU32 {
        &self.last_seen[usize::from(slot.get())]
    }

    /// Seconds since the start, from 1 (0 means never).
    fn now(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_secs())
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }
}

impl Default for Motion {
    fn default() -> Self {
        Motion::new()
    }
}

impl std::fmt::Debug for Motion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Motion").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_migrates_from_its_first_redirect_until_moved() {
        let m = Motion::new();
        let (a, b) = (Slot::new(7).unwrap(), Slot::new(16383).unwrap());
        assert!(!m.migrating(a) && !m.migrating(b));
        m.seen(a);
        m.seen(b);
        assert!(m.migrating(a) && m.migrating(b));
        m.settled(a);
        assert!(!m.migrating(a) && m.migrating(b));
    }
}
