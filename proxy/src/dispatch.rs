//! Decides where a request goes: answered by the proxy, sent to the owner of its slot, split by
//! slot, fanned out to every master, or refused. Pure: no I/O here; the session carries out the
//! [`Plan`].

use protocol::Request;
use routing::split::{Merge, Split};
use routing::{CommandSpec, Flags, Slot};

use crate::config::{Config, UnknownCommands};
use crate::copies::Copies;
use crate::error::ProxyError;

/// Bits of a SCAN cursor that say which master it belongs to (up to 1024 masters).
pub const SCAN_MASTER_BITS: u32 = 10;

/// Where a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The master that owns the slot, on a pooled connection.
    Slot(Slot),
    /// Any master (keyless, node-independent commands).
    AnyMaster,
    /// The master that owns the slot, on a connection of the client's own (blocking commands).
    Blocking(Slot),
    /// The `i`th master of the slot map (fan-out, SCAN).
    Master(usize),
    /// The `i`th node of the slot map, masters first, then replicas (CONFIG SET).
    Node(usize),
}

impl Target {
    /// The slot it is routed by, if any.
    pub fn slot(self) -> Option<Slot> {
        match self {
            Target::Slot(s) | Target::Blocking(s) => Some(s),
            Target::AnyMaster | Target::Master(_) | Target::Node(_) => None,
        }
    }
}

/// Which nodes a fanned-out command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fan {
    /// Every master.
    Masters,
    /// Every master and replica.
    AllNodes,
    /// Every master, on the client's own connection to it: SCRIPT KILL and FUNCTION KILL, which
    /// on the shared connection could wait behind the very script they are to stop.
    MastersOwnConnection,
}

/// What to do with the merged reply of a fan-out before it goes to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Nothing.
    AsIs,
    /// SCAN on master `master` of `masters`: turn the node's cursor into a proxy cursor.
    Scan {
        /// The master scanned.
        master: usize,
        /// MATCH pattern the proxy applies itself (to client key names), if any.
        pattern: Option<bytes::Bytes>,
        /// Keys the masters before `master` returned in this same call (their scans ended
        /// within the client's COUNT, so the next one started at once).
        carried: Vec<bytes::Bytes>,
    },
    /// INFO: the proxy's own sections, with `# Keyspace` summed from the masters' replies.
    Info,
    /// KEYS, RANDOMKEY: map stored key names back to the client's, drop those of other
    /// databases, and those not matching the pattern the proxy applies itself, if any.
    Names(Option<bytes::Bytes>),
    /// PUBLISH: the first part's count plus the channel's subscribers counted on the other
    /// nodes (parts that failed count nothing: the message was sent).
    Publish,
    /// WAIT: each master's reply is the last of the frames its payload produced
    /// (`session::wait`).
    Wait,
    /// SCRIPT LOAD: remember the script under its SHA1 so it can be loaded on a node that
    /// answers NOSCRIPT.
    ScriptLoad(bytes::Bytes),
    /// SUNIONSTORE, ZUNIONSTORE...: the merged set is then written to the destination
    /// (`session::store`).
    Store(routing::split::Destination),
    /// The destination write of a store command; the set has this many members.
    Stored(usize),
    /// ZUNION, LCS, PFMERGE...: the parts are `DUMP`s of the keys outside the home slot; then
    /// the command runs there over copies (`copies`).
    Copies(Box<Copies>),
    /// The run over copies; its reply is the answer.
    CopiesRan(Box<Copies>),
}

/// What to do with one request.
#[derive(Debug)]
pub enum Plan {
    /// Answer it in the proxy; the name is the command table name (`client|setname`).
    Local(&'static str),
    /// Forward it as it is.
    Forward(Target),
    /// Split by slot; send each part; merge.
    Split(Split),
    /// Send the same request (or `request`, if given) to many nodes; merge; finish.
    Fanout {
        /// Which nodes.
        fan: Fan,
        /// The request to send, if not the client's own.
        request: Option<Request>,
        /// How replies combine.
        merge: Merge,
        /// After merging.
        finish: Finish,
    },
    /// BLPOP, BRPOP, BZPOPMIN, BZPOPMAX, BLMPOP, BZMPOP, LMPOP, ZMPOP over keys of several
    /// slots (see `session::pop`).
    MultiPop,
    /// LMOVE, BLMOVE, RPOPLPUSH, BRPOPLPUSH between keys of two slots (see `session::lmove`).
    Move,
    /// RENAME, RENAMENX, COPY between keys of two slots (see `session::rename`).
    Rename,
    /// SMOVE between sets of two slots (see `session::smove`).
    SetMove,
    /// ZUNION, LCS, PFMERGE, SORT ... STORE... over keys of several slots: run on one node over copies of
    /// the others (see `copies`).
    OnCopies(Copies),
    /// XREAD with BLOCK, and XREADGROUP, over streams of several slots (see `session::xread`).
    StreamRead,
    /// PUBLISH: sent to the first master (where every Slotway instance subscribes its
    /// clients); the channel's subscribers on every other node are counted with PUBSUB NUMSUB
    /// and added to its count.
    Publish,
    /// WAIT: on every master, on a connection of the client's own, once everything the client
    /// sent before it is answered (see `session::wait`).
    Wait,
    /// SCAN: one step on one master.
    Scan {
        /// The master.
        master: usize,
        /// The request to send, with the master's own cursor.
        request: Request,
        /// MATCH pattern the proxy applies itself, if any.
        pattern: Option<bytes::Bytes>,
    },
}

/// Commands refused outright, with the reason given to the client.
fn refused(name: &str) -> Option<&'static str> {
    Some(match name {
        "multi" | "exec" | "discard" | "watch" | "unwatch" => "transactions are not supported yet",
        "waitaof" => "waiting for the AOF through shared connections is not supported yet",
        "sync" | "psync" | "replconf" => "it cannot work through a proxy",
        "shutdown" | "replicaof" | "slaveof" | "failover" | "debug" | "migrate" | "module"
        | "save" | "bgsave" | "bgrewriteaof" | "acl" | "latency" => {
            "it is a per-node administration command; send it to the nodes directly"
        }
        "cluster" | "asking" => "the proxy presents a single node, not a cluster",
        "swapdb" | "move" => "the proxy serves database 0 only",
        "client" => return None,
        _ if name.starts_with("cluster|") => "the proxy presents a single node, not a cluster",
        _ if name.starts_with("client|") => match name {
            "client|pause"
            | "client|unpause"
            | "client|tracking"
            | "client|trackinginfo"
            | "client|caching"
            | "client|getredir" => "it is not supported by the proxy",
            _ => return None,
        },
        _ if name.starts_with("acl|")
            || name.starts_with("latency|")
            || name.starts_with("module|")
            || name.starts_with("memory|") && name != "memory|usage" =>
        {
            "it is a per-node administration command; send it to the nodes directly"
        }
        _ => return None,
    })
}

/// Keyless commands that any one master answers exactly as a single node would.
fn node_independent(name: &str) -> bool {
    name.starts_with("command")
        || matches!(
            name,
            "lolwut"
                | "unwatch"
                | "eval"
                | "evalsha"
                | "eval_ro"
                | "evalsha_ro"
                | "fcall"
                | "fcall_ro"
                | "config|get"
                | "function|list"
                | "function|dump"
                | "function|stats"
                | "function|help"
                | "script|help"
                | "config|help"
                | "object|help"
                | "memory|usage"
        )
}

/// Keyless commands fanned out to many nodes, and how their replies merge.
fn fanout(name: &str) -> Option<(Fan, Merge)> {
    Some(match name {
        "dbsize" => (Fan::Masters, Merge::Sum),
        "keys" => (Fan::Masters, Merge::Concat),
        "flushdb" | "flushall" | "script|flush" | "function|flush" | "function|delete"
        | "function|restore" => (Fan::Masters, Merge::AllOk),
        "randomkey" => (Fan::Masters, Merge::AnyNonNil { start: 0 }),
        "lastsave" => (Fan::Masters, Merge::Min),
        "script|load" | "function|load" => (Fan::Masters, Merge::Same),
        "script|exists" => (Fan::Masters, Merge::AndArrays),
        "config|set" | "config|resetstat" | "config|rewrite" => (Fan::AllNodes, Merge::AllOk),
        "pubsub|channels" | "pubsub|shardchannels" => (Fan::Masters, Merge::Union),
        "pubsub|numsub" | "pubsub|shardnumsub" => (Fan::Masters, Merge::SumByKey),
        "pubsub|numpat" => (Fan::Masters, Merge::Sum),
        "script|kill" | "function|kill" => (Fan::MastersOwnConnection, Merge::OneOk),
        _ => return None,
    })
}

/// Plans one request. `spec` is the command (or subcommand) from the table, if known.
/// `masters` counts the masters in the current slot map (for SCAN cursors), only for the few
/// commands that need it.
pub fn plan(
    req: &Request,
    spec: Option<&'static CommandSpec>,
    config: &Config,
    masters: &dyn Fn() -> usize,
) -> Result<Plan, ProxyError> {
    let Some(spec) = spec else {
        return plan_unknown(req, config.unknown_commands);
    };
    if !spec.arity_ok(req.len()) {
        return Err(ProxyError::WrongArity(spec.name));
    }
    if spec.is_container() && !spec.name.contains('|') {
        return Err(ProxyError::UnknownSubcommand {
            container: req.arg_bytes(0).unwrap_or_default(),
            sub: req.arg_bytes(1).unwrap_or_default(),
        });
    }
    if config.deny_commands.iter().any(|d| d == spec.name) {
        return Err(ProxyError::Denied(spec.name));
    }
    if crate::local::is_local(spec.name) {
        return Ok(Plan::Local(spec.name));
    }
    if let Some(reason) = refused(spec.name) {
        return Err(ProxyError::Unsupported {
            command: spec.name,
            reason,
        });
    }
    match spec.name {
        "scan" => return plan_scan(req, masters()),
        // Every Slotway instance subscribes its clients on the first master (by address), so
        // PUBLISH there counts them; the cluster bus carries the message to every other node,
        // whose channel subscribers are counted with PUBSUB NUMSUB.
        "publish" => return Ok(Plan::Publish),
        "spublish" => {
            let mut slot = None;
            routing::keys::for_each_shard_channel(spec, req, |i| {
                slot = Some(Slot::for_key(req.arg(i).unwrap_or_default()))
            });
            return Ok(Plan::Forward(slot.map_or(Target::AnyMaster, Target::Slot)));
        }
        "info" => {
            return Ok(Plan::Fanout {
                fan: Fan::Masters,
                request: Some(Request::from_args(
                    std::iter::once("INFO").chain(crate::info::NODE_SECTIONS),
                )),
                merge: Merge::Concat,
                finish: Finish::Info,
            })
        }
        _ => {}
    }
    if spec.name == "wait" {
        check_wait_args(req)?;
        return Ok(Plan::Wait);
    }
    if let Some((fan, mut merge)) = fanout(spec.name) {
        if let Merge::AnyNonNil { start } = &mut merge {
            *start = random_index(masters());
        }
        let finish = match spec.name {
            "script|load" => Finish::ScriptLoad(req.arg_bytes(2).unwrap_or_default()),
            _ => Finish::AsIs,
        };
        let finish = match (spec.name, finish) {
            ("keys" | "randomkey", Finish::AsIs) => Finish::Names(None),
            (_, finish) => finish,
        };
        return Ok(Plan::Fanout {
            fan,
            request: None,
            merge,
            finish,
        });
    }
    if matches!(spec.name, "mset" | "msetnx") && req.len().is_multiple_of(2) {
        // A key without a value: one node refuses the arity before looking at slots.
        return Err(ProxyError::WrongArity(spec.name));
    }
    let Ok(slot) = key_slot(spec, req) else {
        // Arguments the command's key specs cannot read (a numkeys that is not a number, no
        // STREAMS): a node finds no keys either and answers with its own error.
        return Ok(Plan::Forward(Target::AnyMaster));
    };
    let slot = match slot {
        KeySlot::One(slot) => Some(slot),
        // The specs cannot read these arguments: a cluster node routes by the legacy key
        // range then (`PFMERGE dest`).
        KeySlot::None => legacy_slot(spec, req),
        KeySlot::Many
            if matches!(
                spec.name,
                "blpop"
                    | "brpop"
                    | "bzpopmin"
                    | "bzpopmax"
                    | "blmpop"
                    | "bzmpop"
                    | "lmpop"
                    | "zmpop"
            ) =>
        {
            return Ok(Plan::MultiPop);
        }
        KeySlot::Many if matches!(spec.name, "lmove" | "blmove" | "rpoplpush" | "brpoplpush") => {
            return Ok(Plan::Move);
        }
        KeySlot::Many if matches!(spec.name, "rename" | "renamenx" | "copy") => {
            return Ok(Plan::Rename);
        }
        KeySlot::Many if spec.name == "smove" => return Ok(Plan::SetMove),
        KeySlot::Many if spec.name == "xreadgroup" || (spec.name == "xread" && has_block(req)) => {
            return Ok(Plan::StreamRead);
        }
        KeySlot::Many => {
            return match routing::split::split(spec.name, req) {
                Some(split) => Ok(Plan::Split(split)),
                None if crate::copies::runs_on_copies(spec.name) => {
                    Ok(Plan::OnCopies(Copies::plan(spec, req)?))
                }
                None => Err(ProxyError::CrossSlot(spec.name)),
            };
        }
    };
    let blocking = spec.flags.contains(Flags::BLOCKING);
    match slot {
        Some(slot) if blocking => Ok(Plan::Forward(Target::Blocking(slot))),
        Some(slot) => Ok(Plan::Forward(Target::Slot(slot))),
        None if node_independent(spec.name) => Ok(Plan::Forward(Target::AnyMaster)),
        // A command that takes keys, given none its key specs can find (XREAD without
        // STREAMS, PFMERGE with its destination only): a node answers it as a cluster node
        // would, with its own error or a redirect to the key's owner, which is followed.
        None if takes_keys(spec) => Ok(Plan::Forward(Target::AnyMaster)),
        None => Err(ProxyError::Unsupported {
            command: spec.name,
            reason: "keyless commands of this kind are not supported yet",
        }),
    }
}

/// True if an XREAD / XREADGROUP has the BLOCK option.
fn has_block(req: &Request) -> bool {
    req.args()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
        .any(|a| a.eq_ignore_ascii_case(b"block"))
}

enum KeySlot {
    None,
    One(Slot),
    Many,
}

/// The slot of the first key of the command's legacy key range, if it has any here.
fn legacy_slot(spec: &CommandSpec, req: &Request) -> Option<Slot> {
    let mut first = None;
    routing::keys::for_each_legacy_key(spec, req, |i| {
        first = first.or(Some(i));
    });
    first.map(|i| Slot::for_key(req.arg(i).unwrap_or_default()))
}

/// True if the command has keys (in some argument forms).
fn takes_keys(spec: &CommandSpec) -> bool {
    spec.first_key > 0 || spec.key_specs.iter().any(|ks| !ks.not_key)
}

/// The one slot all keys of `req` hash to, or that there are none or several.
fn key_slot(spec: &'static CommandSpec, req: &Request) -> Result<KeySlot, ProxyError> {
    let mut slot: Option<Slot> = None;
    let mut cross = false;
    routing::keys::for_each_key(spec, req, |i| {
        let s = Slot::for_key(req.arg(i).unwrap_or_default());
        match slot {
            None => slot = Some(s),
            Some(first) if first != s => cross = true,
            Some(_) => {}
        }
    })
    .map_err(ProxyError::Keys)?;
    Ok(match slot {
        None => KeySlot::None,
        Some(_) if cross => KeySlot::Many,
        Some(s) => KeySlot::One(s),
    })
}

/// Checks WAIT's arguments as the node would, before anything is sent.
fn check_wait_args(req: &Request) -> Result<(), ProxyError> {
    let int = |i| {
        req.arg(i)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<i64>().ok())
    };
    int(1).ok_or(ProxyError::Other(
        "ERR value is not an integer or out of range".to_string(),
    ))?;
    let timeout = int(2).ok_or(ProxyError::Other(
        "ERR timeout is not an integer or out of range".to_string(),
    ))?;
    if timeout < 0 {
        return Err(ProxyError::Other("ERR timeout is negative".to_string()));
    }
    Ok(())
}

/// SCAN cursors: the low [`SCAN_MASTER_BITS`] bits name the master (by position in the slot
/// map, masters sorted by address), the rest is that master's own cursor. Cursor 0 starts at
/// master 0; when a master's cursor returns to 0 the next master starts; after the last, 0.
pub fn plan_scan(req: &Request, masters: usize) -> Result<Plan, ProxyError> {
    let cursor = req
        .arg(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or(ProxyError::Other("ERR invalid cursor".to_string()))?;
    let master = (cursor & ((1 << SCAN_MASTER_BITS) - 1)) as usize;
    let node_cursor = cursor >> SCAN_MASTER_BITS;
    if masters == 0 {
        return Err(ProxyError::NoSlotMap);
    }
    if master >= masters {
        return Err(ProxyError::Other("ERR invalid cursor".to_string()));
    }
    let node_cursor = node_cursor.to_string();
    let mut args: Vec<&[u8]> = req.args().collect();
    args[1] = node_cursor.as_bytes();
    Ok(Plan::Scan {
        master,
        request: Request::from_args(args),
        pattern: None,
    })
}

/// The proxy cursor for a node's SCAN reply cursor on master `master` of `masters`.
pub fn scan_cursor(master: usize, node_cursor: u64, masters: usize) -> u64 {
    if node_cursor != 0 {
        (node_cursor << SCAN_MASTER_BITS) | master as u64
    } else if master + 1 < masters {
        (master + 1) as u64
    } else {
        0
    }
}

fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(n);
    (h.finish() as usize) % n.max(1)
}

fn plan_unknown(req: &Request, rule: UnknownCommands) -> Result<Plan, ProxyError> {
    match rule {
        UnknownCommands::Refuse => Err(ProxyError::UnknownCommand {
            name: req.arg_bytes(0).unwrap_or_default(),
            args: (1..req.len().min(5))
                .filter_map(|i| req.arg_bytes(i))
                .collect(),
        }),
        UnknownCommands::AnyMaster => Ok(Plan::Forward(Target::AnyMaster)),
        UnknownCommands::FirstKey => Ok(Plan::Forward(match req.arg(1) {
            Some(key) => Target::Slot(Slot::for_key(key)),
            None => Target::AnyMaster,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(args: &[&str]) -> Result<Plan, ProxyError> {
        let req = Request::from_args(args.iter().map(|a| a.as_bytes()));
        let spec = routing::lookup(req.name(), req.arg(1));
        plan(&req, spec, &Config::default(), &|| 3)
    }

    #[test]
    fn scan_cursor_walks_masters_in_order() {
        assert_eq!(scan_cursor(0, 0, 3), 1);
        assert_eq!(scan_cursor(1, 0, 3), 2);
        assert_eq!(scan_cursor(2, 0, 3), 0);
        let c = scan_cursor(1, 12345, 3);
        assert_eq!(c & 1023, 1);
        assert_eq!(c >> SCAN_MASTER_BITS, 12345);
        match plan_of(&["SCAN", &c.to_string(), "MATCH", "x*"]).unwrap() {
            Plan::Scan {
                master, request, ..
            } => {
                assert_eq!(master, 1);
                assert_eq!(request.arg(1), Some(&b"12345"[..]));
                assert_eq!(request.arg(3), Some(&b"x*"[..]));
            }
            p => panic!("{p:?}"),
        }
        assert!(plan_of(&["SCAN", "5"]).is_err());
        assert!(plan_of(&["SCAN", "x"]).is_err());
    }

    #[test]
    fn routing_decisions() {
        assert!(matches!(
            plan_of(&["GET", "a"]),
            Ok(Plan::Forward(Target::Slot(_)))
        ));
        assert!(matches!(plan_of(&["PING"]), Ok(Plan::Local("ping"))));
        assert!(matches!(
            plan_of(&["BLPOP", "a", "0"]),
            Ok(Plan::Forward(Target::Blocking(_)))
        ));
        assert!(matches!(plan_of(&["MGET", "a", "b"]), Ok(Plan::Split(_))));
        // Blocking and multi-step commands over keys of several slots ("a" and "b" differ).
        for cmd in [
            &["BRPOP", "a", "b", "0"][..],
            &["BLMPOP", "0", "2", "a", "b", "LEFT"],
            &["ZMPOP", "2", "a", "b", "MIN"],
        ] {
            assert!(matches!(plan_of(cmd), Ok(Plan::MultiPop)), "{cmd:?}");
        }
        assert!(matches!(
            plan_of(&["BRPOPLPUSH", "a", "b", "0"]),
            Ok(Plan::Move)
        ));
        for cmd in [
            &["RENAME", "a", "b"][..],
            &["RENAMENX", "a", "b"],
            &["COPY", "a", "b"],
        ] {
            assert!(matches!(plan_of(cmd), Ok(Plan::Rename)), "{cmd:?}");
        }
        assert!(matches!(
            plan_of(&["XREAD", "BLOCK", "0", "STREAMS", "a", "b", "$", "$"]),
            Ok(Plan::StreamRead)
        ));
        assert!(matches!(
            plan_of(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "STREAMS",
                "a",
                "b",
                ">",
                ">"
            ]),
            Ok(Plan::StreamRead)
        ));
        assert!(matches!(
            plan_of(&["XREAD", "STREAMS", "a", "b", "0", "0"]),
            Ok(Plan::Split(_))
        ));
        assert!(matches!(plan_of(&["WAIT", "1", "0"]), Ok(Plan::Wait)));
        assert!(matches!(
            plan_of(&["WAIT", "1", "-1"]),
            Err(ProxyError::Other(_))
        ));
        assert!(matches!(
            plan_of(&["SINTERSTORE", "a", "b"]),
            Ok(Plan::Split(_))
        ));
        assert!(matches!(
            plan_of(&["SMOVE", "a", "b", "m"]),
            Ok(Plan::SetMove)
        ));
        assert!(matches!(
            plan_of(&["PFMERGE", "a", "b"]),
            Ok(Plan::OnCopies(_))
        ));
        assert!(matches!(
            plan_of(&["SORT", "a", "STORE", "b"]),
            Ok(Plan::OnCopies(_))
        ));
        assert!(matches!(
            plan_of(&["EVAL", "return 1", "2", "a", "b"]),
            Err(ProxyError::CrossSlot("eval"))
        ));
        assert!(matches!(
            plan_of(&["MSETNX", "a", "1", "b", "2"]),
            Err(ProxyError::CrossSlot("msetnx"))
        ));
        assert!(matches!(
            plan_of(&["SUNION", "{x}a", "{x}b"]),
            Ok(Plan::Forward(_))
        ));
        assert!(matches!(
            plan_of(&["GET"]),
            Err(ProxyError::WrongArity("get"))
        ));
        assert!(matches!(plan_of(&["DBSIZE"]), Ok(Plan::Fanout { .. })));
        assert!(matches!(
            plan_of(&["CLUSTER", "INFO"]),
            Err(ProxyError::Unsupported { .. })
        ));
        assert!(matches!(
            plan_of(&["CONFIG", "NOPE"]),
            Err(ProxyError::UnknownSubcommand { .. })
        ));
        assert!(matches!(
            plan_of(&["MYMODULE.CMD", "k"]),
            Ok(Plan::Forward(Target::Slot(_)))
        ));
    }

    #[test]
    fn denied_commands_are_refused() {
        let config = Config {
            deny_commands: vec!["flushall".into()],
            ..Config::default()
        };
        let req = Request::from_args(["FLUSHALL"]);
        let spec = routing::lookup(req.name(), None);
        assert!(matches!(
            plan(&req, spec, &config, &|| 3),
            Err(ProxyError::Denied("flushall"))
        ));
    }
}
