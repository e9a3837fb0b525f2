//! [`SlotMap`]: which shard owns each of the 16384 slots.

use protocol::Frame;

use crate::Slot;

/// One shard: a master and its replicas, by `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// `host:port` of the master.
    pub master: String,
    /// Node id of the master, when the source gave it.
    pub master_id: Option<String>,
    /// `host:port` of each replica.
    pub replicas: Vec<String>,
}

/// A complete or partial slot → shard table.
///
/// Invariant: every entry of the slot table is either unassigned or a valid index into `shards`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    slots: Box<[u16]>,
    shards: Vec<Shard>,
}

/// Why a `CLUSTER SHARDS` / `CLUSTER SLOTS` reply could not be turned into a [`SlotMap`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotMapError {
    /// The reply does not have the documented shape; the text says where.
    #[error("malformed cluster topology reply: {0}")]
    Malformed(String),
}

impl SlotMap {
    /// Marker for an unassigned slot in the table.
    const UNASSIGNED: u16 = u16::MAX;

    /// Builds a map from a `CLUSTER SLOTS` reply. `queried` is the `host:port` that was asked,
    /// used where a node reports an empty or `?` host (Redis does so for itself when it does
    /// not know its own address).
    pub fn from_cluster_slots(reply: &Frame, queried: &str) -> Result<SlotMap, SlotMapError> {
        let _ = (reply, queried);
        unimplemented!()
    }

    /// Builds a map from a `CLUSTER SHARDS` reply (RESP2 arrays or RESP3 maps). Nodes whose
    /// `health` is not `online` are left out of replicas; a master that is not online still owns
    /// its slots.
    pub fn from_cluster_shards(reply: &Frame, queried: &str) -> Result<SlotMap, SlotMapError> {
        let _ = (reply, queried);
        unimplemented!()
    }

    /// The index into [`SlotMap::shards`] of the shard that owns `slot`, if any.
    pub fn shard_for(&self, slot: Slot) -> Option<usize> {
        match self.slots[usize::from(slot.get())] {
            SlotMap::UNASSIGNED => None,
            i => Some(usize::from(i)),
        }
    }

    /// All shards, in a stable order (sorted by master address).
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// True if every one of the 16384 slots has an owner.
    pub fn is_complete(&self) -> bool {
        !self.slots.iter().any(|&s| s == SlotMap::UNASSIGNED)
    }

    /// A copy of this map in which `slot` belongs to the shard whose master is `addr` (added as
    /// a new shard without replicas if unknown), as a `MOVED` reply says.
    pub fn with_moved(&self, slot: Slot, addr: &str) -> SlotMap {
        let _ = (slot, addr);
        unimplemented!()
    }
}
