//! Pure routing logic for Slotway: which cluster node serves a request.
//!
//! No I/O, no async, no allocation on the lookup path. This crate does not talk to Redis:
//! the proxy fetches `CLUSTER SHARDS` / `CLUSTER SLOTS` and hands the reply to [`SlotMap`],
//! and hands `MOVED` / `ASK` error texts to [`Redirect::parse`].
//!
//! - [`Slot`]: CRC16 (XMODEM) hash slots with the cluster spec's hash-tag rule.
//! - [`command`]: the table of every Redis 7 command: arity, flags, key specs, routing tips.
//! - [`keys`]: which arguments of a request are keys (and which are shard channels).
//! - [`SlotMap`]: slot → shard (master and replicas), built from `CLUSTER SHARDS` or `CLUSTER SLOTS`.
//! - [`Redirect`]: a parsed `MOVED` / `ASK` error.
//! - [`names`]: key names as stored (co-location hash tags, namespaced databases).
//! - [`split`]: multi-key commands split by slot, and the [`split::Merge`] of their replies.
//! - [`hll`]: HyperLogLog registers, for PFCOUNT over several slots.
//!
//! ```text
//! Request ─▶ command::lookup ─▶ CommandSpec ─▶ keys::for_each_key ─▶ Slot::for_key ─▶ SlotMap::shard_for
//! ```

pub mod command;
mod command_table;
pub mod glob;
pub mod hll;
pub mod keys;
pub mod names;
mod redirect;
mod slot;
mod slot_map;
pub mod split;

pub use command::{lookup, CommandSpec, Flags};
pub use redirect::{slot_in_motion, Redirect};
pub use slot::Slot;
pub use slot_map::{host_of, Shard, SlotMap, SlotMapError, Transport};
