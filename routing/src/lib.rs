//! Pure routing logic for Slotway: which cluster node serves a request.
//!
//! No I/O, no async, no allocation on the lookup path.
//!
//! - [`Slot`]: CRC16 (XMODEM) hash slots with the cluster spec's hash-tag rule.
//! - [`command`]: the table of every Redis 7 command: arity, flags, key specs, routing tips.
//! - [`keys`]: which arguments of a request are keys.
//! - [`SlotMap`]: slot → shard (master and replicas), built from `CLUSTER SHARDS` or `CLUSTER SLOTS`.
//! - [`Redirect`]: a parsed `MOVED` / `ASK` error.
//!
//! ```text
//! Request ─▶ command::lookup ─▶ CommandSpec ─▶ keys::keys ─▶ Slot::for_key ─▶ SlotMap::shard_for
//! ```

pub mod command;
pub mod keys;
mod redirect;
mod slot;
mod slot_map;

pub use command::{lookup, CommandSpec, Flags};
pub use redirect::Redirect;
pub use slot::Slot;
pub use slot_map::{Shard, SlotMap, SlotMapError};
