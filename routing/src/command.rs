//! The Redis 7 command table.
//!
//! Generated from a real redis-server's `COMMAND` reply (see `routing/gen/`), with the commands
//! of later 7.x releases added by hand.

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
    /// `skip_monitor`, `skip_slowlog`, `no_mandatory_keys`, `loading`... (see table docs)
    pub const NO_MANDATORY_KEYS: Flags = Flags(1 << 15);

    /// True if every flag in `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
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

impl CommandSpec {
    /// True if `argc` (name included) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let _ = argc;
        unimplemented!()
    }
}

/// Finds a command by name, ignoring ASCII case, without allocating.
///
/// For a container command (one with subcommands) pass the subcommand in `sub` to get the
/// subcommand's spec: `lookup(b"config", Some(b"get"))`. With `sub = None`, or a `sub` the
/// container does not have, the container's own spec is returned.
pub fn lookup(name: &[u8], sub: Option<&[u8]>) -> Option<&'static CommandSpec> {
    let _ = (name, sub);
    unimplemented!()
}

/// Every top-level command in the table, for `COMMAND`, `COMMAND COUNT` and `COMMAND INFO`.
pub fn all() -> &'static [CommandSpec] {
    unimplemented!()
}
