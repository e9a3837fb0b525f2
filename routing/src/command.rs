//! The Redis 7 command table: arity, flags, key specs and tips of every command and subcommand.
//!
//! The data is in `command_table.rs`, generated from a real redis-server's `COMMAND` reply by
//! `routing/gen/gen_commands.py`, with the commands of later 7.x releases (7.2, 7.4) added by
//! hand in the generator.
//!
//! [`lookup`] runs once per request, so it neither allocates nor lower-cases into a copy: a
//! top-level name is hashed (FNV-1a over its ASCII-lower-cased bytes) into an open-addressing
//! index built at compile time, and the candidate compared ignoring case. A subcommand name is
//! lower-cased into a stack buffer and binary-searched among its container's sorted
//! subcommands.

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

use crate::command_table::{COMMANDS, MAX_NAME_LEN};

/// Command flags, from Redis's `COMMAND` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u32);

impl Flags {
    /// `write`
    pub const WRITE: Flags = Flags(1 << 0);
    /// `readonly`
    pub const READONLY: Flags = Flags(1 << 1);
    /// `denyoom`
    pub const DENYOOM: Flags = Flags(1 << 2);
    /// `admin`
    pub const ADMIN: Flags = Flags(1 << 3);
    /// `pubsub`
    pub const PUBSUB: Flags = Flags(1 << 4);
    /// `noscript`
    pub const NOSCRIPT: Flags = Flags(1 << 5);
    /// `blocking`
    pub const BLOCKING: Flags = Flags(1 << 6);
    /// `loading`
    pub const LOADING: Flags = Flags(1 << 7);
    /// `stale`
    pub const STALE: Flags = Flags(1 << 8);
    /// `fast`
    pub const FAST: Flags = Flags(1 << 9);
    /// `no_auth`
    pub const NO_AUTH: Flags = Flags(1 << 10);
    /// `movablekeys`
    pub const MOVABLE_KEYS: Flags = Flags(1 << 11);
    /// `no_multi`
    pub const NO_MULTI: Flags = Flags(1 << 12);
    /// `allow_busy`
    pub const ALLOW_BUSY: Flags = Flags(1 << 13);
    /// `may_replicate`
    pub const MAY_REPLICATE: Flags = Flags(1 << 14);
    /// `no_mandatory_keys`
    pub const NO_MANDATORY_KEYS: Flags = Flags(1 << 15);
    /// `skip_monitor`
    pub const SKIP_MONITOR: Flags = Flags(1 << 16);
    /// `skip_slowlog`
    pub const SKIP_SLOWLOG: Flags = Flags(1 << 17);
    /// `asking`
    pub const ASKING: Flags = Flags(1 << 18);
    /// `no_async_loading`
    pub const NO_ASYNC_LOADING: Flags = Flags(1 << 19);
    /// `module` (never set in this table, which has no module commands)
    pub const MODULE: Flags = Flags(1 << 20);
    /// `module_no_cluster` (never set in this table)
    pub const MODULE_NO_CLUSTER: Flags = Flags(1 << 21);

    /// No flags.
    pub const NONE: Flags = Flags(0);

    /// True if every flag in `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags set in `self` or in `other`.
    #[must_use]
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// True if no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Where a key spec starts looking for keys (Redis `begin_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// At a fixed argument index (1 = first argument after the name).
    Index(u32),
    /// After the first argument equal (ignoring case) to `keyword`, searching from argument
    /// `start_from` (negative: from the end, backwards).
    Keyword {
        /// The keyword, upper case.
        keyword: &'static str,
        /// Where the search starts.
        start_from: i32,
    },
    /// Keys cannot be found from the arguments alone.
    Unknown,
}

/// How many keys follow the start (Redis `find_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `last_key` (relative to the start; -1 = the last argument, -2 the one before),
    /// every `step`, at most `limit` fraction of the remaining args (0 = no limit, 2 = half...).
    Range {
        /// Last key relative to the start; negative counts from the end.
        last_key: i32,
        /// Distance between keys.
        step: u32,
        /// Redis `limit`.
        limit: u32,
    },
    /// The argument at `key_num_index` (relative to the start) holds the number of keys, which
    /// begin at `first_key` (relative to the start) and are `step` apart.
    KeyNum {
        /// Where the count is.
        key_num_index: u32,
        /// Where the first key is.
        first_key: u32,
        /// Distance between keys.
        step: u32,
    },
    /// Keys cannot be found from the arguments alone.
    Unknown,
}

/// One Redis key spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Where to start.
    pub begin_search: BeginSearch,
    /// How many keys.
    pub find_keys: FindKeys,
    /// True for `INCOMPLETE` key specs (keys may also be elsewhere).
    pub incomplete: bool,
    /// True for `NOT_KEY` key specs: the arguments are not keys but are hashed like keys, such
    /// as the shard channel of `SPUBLISH` and `SSUBSCRIBE`. [`crate::keys::for_each_key`] skips
    /// them, as Redis does; [`crate::keys::for_each_shard_channel`] yields only them.
    pub not_key: bool,
}

/// Everything Slotway knows about one command (or subcommand, such as `CONFIG GET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name, as `COMMAND` reports it (`get`, `config|get`).
    pub name: &'static str,
    /// Redis arity: positive = exact argument count (name included), negative = at least -arity.
    pub arity: i32,
    /// Flags.
    pub flags: Flags,
    /// Legacy first key index (0 = no keys).
    pub first_key: i32,
    /// Legacy last key index (negative counts from the end).
    pub last_key: i32,
    /// Legacy step.
    pub step: i32,
    /// Key specs, in Redis's order.
    pub key_specs: &'static [KeySpec],
    /// Command tips such as `request_policy:all_shards`, `response_policy:agg_sum`,
    /// `nondeterministic_output`.
    pub tips: &'static [&'static str],
    /// Subcommands (for container commands such as `CONFIG`, `CLIENT`, `XINFO`).
    pub subcommands: &'static [CommandSpec],
}

// === impl CommandSpec ===

impl CommandSpec {
    /// True if `argc` (name included) satisfies the arity: exactly `arity` arguments when it is
    /// positive, at least `-arity` when it is negative.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let want = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            argc == want
        } else {
            argc >= want
        }
    }

    /// True if a request of this command may name more than one key (MSET, RENAME, EVAL...):
    /// the commands a cluster node may refuse with `TRYAGAIN` while their slot migrates.
    pub fn may_name_several_keys(&self) -> bool {
        self.first_key != self.last_key || self.flags.contains(Flags::MOVABLE_KEYS)
    }

    /// True for a container command such as `CONFIG` or `CLIENT`, whose real work is done by
    /// its subcommands.
    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// The value of the `request_policy:` tip (`all_shards`, `all_nodes`, `multi_shard`,
    /// `special`), if the command has one.
    pub fn request_policy(&self) -> Option<&'static str> {
        self.tip_value("request_policy:")
    }

    /// The value of the `response_policy:` tip (`one_succeeded`, `all_succeeded`, `agg_sum`,
    /// `agg_min`, `agg_max`, `agg_logical_and`, `agg_logical_or`, `special`), if any.
    pub fn response_policy(&self) -> Option<&'static str> {
        self.tip_value("response_policy:")
    }

    fn tip_value(&self, prefix: &str) -> Option<&'static str> {
        self.tips.iter().find_map(|t| t.strip_prefix(prefix))
    }
}

/// Finds a command by name, ignoring ASCII case, without allocating.
///
/// For a container command (one with subcommands) pass the subcommand in `sub` to get the
/// subcommand's spec: `lookup(b"config", Some(b"get"))`. With `sub = None`, or a `sub` the
/// container does not have, the container's own spec is returned. `sub` is ignored for commands
/// that are not containers. Returns `None` for unknown names.
pub fn lookup(name: &[u8], sub: Option<&[u8]>) -> Option<&'static CommandSpec> {
    let cmd = find_command(name)?;
    match sub {
        Some(sub) if cmd.is_container() => {
            // Subcommand names are `container|sub`; compare only what follows the `|`.
            Some(find(cmd.subcommands, sub, cmd.name.len() + 1).unwrap_or(cmd))
        }
        _ => Some(cmd),
    }
}

/// Every top-level command in the table, sorted by name, for `COMMAND`, `COMMAND COUNT` and
/// `COMMAND INFO`. Subcommands are in each command's [`CommandSpec::subcommands`].
pub fn all() -> &'static [CommandSpec] {
    COMMANDS
}

/// Size of [`INDEX`]: a power of two, about four times the number of commands, so probe
/// sequences stay short.
const INDEX_SIZE: usize = 1024;

/// Marks an empty [`INDEX`] slot.
const EMPTY: u16 = u16::MAX;

/// Open-addressing hash index into [`COMMANDS`]: slot `hash(name) % INDEX_SIZE`, or the next
/// free one after it (linear probing), holds the command's position. Built at compile time.
static INDEX: [u16; INDEX_SIZE] = build_index(COMMANDS);

/// FNV-1a (32-bit) over the ASCII-lower-cased bytes of `name`.
// `i < name.len()` bounds the index; `get` is not usable in a `const fn`.
#[allow(clippy::indexing_slicing)]
const fn hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        h ^= name[i].to_ascii_lowercase() as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h
}

// Indexing is checked by the compiler here: the function only runs in const evaluation.
#[allow(clippy::indexing_slicing)]
const fn build_index(table: &[CommandSpec]) -> [u16; INDEX_SIZE] {
    // At least half the slots stay empty, which also guarantees every probe ends.
    assert!(table.len() <= INDEX_SIZE / 2, "grow INDEX_SIZE");
    let mut index = [EMPTY; INDEX_SIZE];
    let mut i = 0;
    while i < table.len() {
        let mut slot = hash(table[i].name.as_bytes()) as usize % INDEX_SIZE;
        while index[slot] != EMPTY {
            slot = (slot + 1) % INDEX_SIZE;
        }
        index[slot] = i as u16;
        i += 1;
    }
    index
}

/// The top-level command named `name`, ignoring ASCII case.
fn find_command(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    let mut slot = hash(name) as usize % INDEX_SIZE;
    loop {
        let i = *INDEX.get(slot)?;
        let cmd = COMMANDS.get(usize::from(i))?; // None for EMPTY: not in the table
        if cmd.name.as_bytes().eq_ignore_ascii_case(name) {
            return Some(cmd);
        }
        slot = (slot + 1) % INDEX_SIZE;
    }
}

/// Binary search of `table` (sorted by name) for `name`, ignoring ASCII case and the first
/// `skip` bytes of each entry's name.
fn find(table: &'static [CommandSpec], name: &[u8], skip: usize) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let lower = buf.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower: &[u8] = lower;
    let i = table
        .binary_search_by(|c| c.name.as_bytes().get(skip..).unwrap_or_default().cmp(lower))
        .ok()?;
    table.get(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case() {
        for name in [&b"get"[..], b"GET", b"gEt"] {
            let spec = lookup(name, None).unwrap();
            assert_eq!(spec.name, "get");
            assert_eq!(spec.arity, 2);
            assert!(spec.flags.contains(Flags::READONLY.union(Flags::FAST)));
            assert!(!spec.flags.contains(Flags::WRITE));
        }
        assert_eq!(
            lookup(b"ZRANGEBYSCORE", None).unwrap().name,
            "zrangebyscore"
        );
    }

    #[test]
    fn commands_that_may_name_several_keys() {
        for name in [
            "mset",
            "rename",
            "lmove",
            "eval",
            "zunionstore",
            "xread",
            "sort",
            "mget",
        ] {
            assert!(
                lookup(name.as_bytes(), None)
                    .unwrap()
                    .may_name_several_keys(),
                "{name}"
            );
        }
        for name in ["get", "set", "incr", "hset", "ping"] {
            assert!(
                !lookup(name.as_bytes(), None)
                    .unwrap()
                    .may_name_several_keys(),
                "{name}"
            );
        }
    }

    #[test]
    fn lookup_rejects_unknown_names() {
        assert_eq!(lookup(b"nosuchcommand", None), None);
        assert_eq!(lookup(b"", None), None);
        assert_eq!(lookup(&[b'a'; MAX_NAME_LEN + 1], None), None);
        assert_eq!(lookup(&[b'g'; 10_000], None), None);
        assert_eq!(lookup(b"g\xc3\xa9t", None), None);
        assert_eq!(lookup(b"get ", None), None);
        // Subcommand names are not top-level names.
        assert_eq!(lookup(b"config|get", None), None);
    }

    #[test]
    fn lookup_subcommands() {
        let spec = lookup(b"CONFIG", Some(b"GET")).unwrap();
        assert_eq!(spec.name, "config|get");
        assert_eq!(spec.arity, -3);
        assert_eq!(
            lookup(b"config", Some(b"set")).unwrap().request_policy(),
            Some("all_nodes")
        );
        let object = lookup(b"object", Some(b"encoding")).unwrap();
        assert_eq!(object.name, "object|encoding");
        assert_eq!(object.key_specs.len(), 1);
        // No or unknown subcommand: the container.
        let config = lookup(b"config", None).unwrap();
        assert_eq!(config.name, "config");
        assert!(config.is_container());
        assert_eq!(lookup(b"config", Some(b"nosuch")).unwrap().name, "config");
        assert_eq!(
            lookup(b"config", Some(&[b'x'; 100])).unwrap().name,
            "config"
        );
        // `sub` is ignored for commands without subcommands.
        assert_eq!(lookup(b"get", Some(b"get")).unwrap().name, "get");
    }

    #[test]
    fn later_releases_are_in_the_table() {
        let setinfo = lookup(b"client", Some(b"SETINFO")).unwrap();
        assert_eq!((setinfo.name, setinfo.arity), ("client|setinfo", 4));
        assert_eq!(lookup(b"client", Some(b"no-touch")).unwrap().arity, 3);
        assert_eq!(lookup(b"cluster", Some(b"myshardid")).unwrap().arity, 2);
        let waitaof = lookup(b"waitaof", None).unwrap();
        assert_eq!(
            (waitaof.arity, waitaof.response_policy()),
            (4, Some("agg_min"))
        );
        for name in ["hexpire", "hpexpire", "hexpireat", "hpexpireat"] {
            let spec = lookup(name.as_bytes(), None).unwrap();
            assert_eq!(spec.arity, -6, "{name}");
            assert!(spec.flags.contains(Flags::WRITE), "{name}");
            assert_eq!(spec.key_specs.len(), 1, "{name}");
        }
        for name in ["httl", "hpttl", "hexpiretime", "hpexpiretime"] {
            let spec = lookup(name.as_bytes(), None).unwrap();
            assert_eq!(spec.arity, -5, "{name}");
            assert!(spec.flags.contains(Flags::READONLY), "{name}");
        }
        assert!(lookup(b"hpersist", None)
            .unwrap()
            .flags
            .contains(Flags::WRITE));
    }

    #[test]
    fn table_is_sorted_and_consistent() {
        let all = all();
        assert!(all.len() >= 240, "{}", all.len());
        assert!(all.windows(2).all(|w| w[0].name < w[1].name));
        for cmd in all {
            assert_eq!(cmd.name, cmd.name.to_ascii_lowercase());
            assert!(cmd.name.len() <= MAX_NAME_LEN);
            assert_eq!(lookup(cmd.name.as_bytes(), None), Some(cmd));
            assert!(cmd.subcommands.windows(2).all(|w| w[0].name < w[1].name));
            for sub in cmd.subcommands {
                let (container, name) = sub.name.split_once('|').unwrap();
                assert_eq!(container, cmd.name);
                assert!(name.len() <= MAX_NAME_LEN);
                assert_eq!(
                    lookup(cmd.name.as_bytes(), Some(name.as_bytes())),
                    Some(sub)
                );
                assert!(sub.subcommands.is_empty());
            }
            for ks in cmd.key_specs {
                if let BeginSearch::Keyword { keyword, .. } = ks.begin_search {
                    assert_eq!(keyword, keyword.to_ascii_uppercase());
                }
            }
        }
    }

    #[test]
    fn hash_index_probes_are_short() {
        let mut longest = 0;
        for (i, cmd) in COMMANDS.iter().enumerate() {
            let mut slot = hash(cmd.name.as_bytes()) as usize % INDEX_SIZE;
            let mut probes = 1;
            while usize::from(INDEX[slot]) != i {
                assert_ne!(INDEX[slot], EMPTY, "{} not in the index", cmd.name);
                slot = (slot + 1) % INDEX_SIZE;
                probes += 1;
            }
            longest = longest.max(probes);
        }
        assert!(longest <= 4, "{longest}");
        assert_eq!(hash(b"GET"), hash(b"get"));
    }

    #[test]
    fn arity() {
        let get = lookup(b"get", None).unwrap();
        assert!(!get.arity_ok(1));
        assert!(get.arity_ok(2));
        assert!(!get.arity_ok(3));
        let mset = lookup(b"mset", None).unwrap();
        assert_eq!(mset.arity, -3);
        assert!(!mset.arity_ok(2));
        assert!(mset.arity_ok(3));
        assert!(mset.arity_ok(4));
        assert!(mset.arity_ok(usize::MAX));
    }

    #[test]
    fn tips() {
        let keys = lookup(b"keys", None).unwrap();
        assert_eq!(keys.request_policy(), Some("all_shards"));
        assert_eq!(keys.response_policy(), None);
        let dbsize = lookup(b"dbsize", None).unwrap();
        assert_eq!(dbsize.response_policy(), Some("agg_sum"));
        assert_eq!(lookup(b"get", None).unwrap().request_policy(), None);
    }

    #[test]
    fn flags() {
        let set = lookup(b"set", None).unwrap();
        assert!(set.flags.contains(Flags::WRITE.union(Flags::DENYOOM)));
        assert!(lookup(b"blpop", None)
            .unwrap()
            .flags
            .contains(Flags::BLOCKING));
        assert!(lookup(b"eval", None)
            .unwrap()
            .flags
            .contains(Flags::MOVABLE_KEYS));
        assert!(lookup(b"auth", None)
            .unwrap()
            .flags
            .contains(Flags::NO_AUTH));
        assert!(Flags::NONE.is_empty());
        assert!(Flags::NONE.contains(Flags::NONE));
    }
}
