//! Applies `routing::names` to requests and replies: keys of a request become stored names;
//! replies that carry key names (BRPOP, KEYS, SCAN, RANDOMKEY, XREAD, ...) get the client's
//! names back; and with `databases: namespaced`, DBSIZE, FLUSHDB, KEYS, SCAN and RANDOMKEY see
//! only the client's database.
//!
//! In a namespaced database, DBSIZE, FLUSHDB and RANDOMKEY run a small Lua script on every
//! master that walks that master's keys (`KEYS`), so they cost O(keys) instead of O(1).

use bytes::Bytes;
use protocol::{Frame, Request};
use routing::names::{db_prefix, KeyNames, Restored};
use routing::split::Merge;
use routing::CommandSpec;

use crate::dispatch::{self, Fan, Finish, Plan};
use crate::error::ProxyError;

/// Counts a database's keys on one master. ARGV[1]: the key pattern of the database; for
/// database 0 (ARGV[1] empty), every key that is not in a namespaced database.
const COUNT_SCRIPT: &str = "if ARGV[1] ~= '' then return #redis.call('KEYS', ARGV[1]) end \
local n = 0 for _, k in ipairs(redis.call('KEYS', '*')) do \
if string.sub(k, 1, 12) ~= '__slotway_db' then n = n + 1 end end return n";

/// Deletes a database's keys on one master (ARGV as for [`COUNT_SCRIPT`]).
const FLUSH_SCRIPT: &str = "local ks = redis.call('KEYS', ARGV[1] ~= '' and ARGV[1] or '*') \
for _, k in ipairs(ks) do if ARGV[1] ~= '' or string.sub(k, 1, 12) ~= '__slotway_db' then \
redis.call('UNLINK', k) end end return redis.status_reply('OK')";

/// A random key of a database on one master (ARGV as for [`COUNT_SCRIPT`]).
const RANDOM_SCRIPT: &str = "local ks = redis.call('KEYS', ARGV[1] ~= '' and ARGV[1] or '*') \
local mine = {} for _, k in ipairs(ks) do if ARGV[1] ~= '' or string.sub(k, 1, 12) ~= '__slotway_db' \
then mine[#mine + 1] = k end end if #mine == 0 then return false end \
return mine[math.random(#mine)]";

/// The request with every key replaced by its stored name (unchanged if none changes).
pub fn rename_request(
    names: &KeyNames,
    db: u32,
    req: Request,
    spec: Option<&'static CommandSpec>,
) -> Request {
    let mut renamed: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut rename = |i: usize| {
        if let Some(stored) = req.arg(i).and_then(|k| names.store(db, k)) {
            renamed.push((i, stored));
        }
    };
    match spec {
        Some(spec) => {
            let _ = routing::keys::for_each_key(spec, &req, &mut rename);
        }
        // Unknown (module) commands: the first argument is taken as the key, as for routing.
        None if req.len() > 1 => rename(1),
        None => {}
    }
    // A script's arguments, for rules that say so (`Rule::script_args`).
    if let Some(first) = spec.and_then(|spec| script_args_start(spec.name, &req)) {
        for i in first..req.len() {
            if let Some(stored) = req.arg(i).and_then(|a| names.store_script_arg(db, a)) {
                renamed.push((i, stored));
            }
        }
    }
    if renamed.is_empty() {
        return req;
    }
    let args = req.args().enumerate().map(|(i, a)| {
        renamed
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(a, |(_, stored)| stored.as_slice())
    });
    Request::from_args(args)
}

/// Where the arguments (ARGV) of a script call start: after `numkeys` and the keys of EVAL,
/// EVALSHA, FCALL and their read-only forms.
fn script_args_start(name: &str, req: &Request) -> Option<usize> {
    if !matches!(
        name,
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
    ) {
        return None;
    }
    let numkeys = usize::try_from(routing::keys::string2ll(req.arg(2)?)?).ok()?;
    Some(3 + numkeys)
}

/// True for commands whose replies name keys.
pub fn reply_has_keys(name: &str) -> bool {
    matches!(
        name,
        "blpop"
            | "brpop"
            | "bzpopmin"
            | "bzpopmax"
            | "blmpop"
            | "lmpop"
            | "zmpop"
            | "bzmpop"
            | "xread"
            | "xreadgroup"
    )
}

/// Maps the key names in a reply of command `name` back to the client's names, dropping keys
/// of other databases.
pub fn restore_reply(names: &KeyNames, db: u32, name: &str, frame: Frame) -> Frame {
    let restore = |f: Frame| -> Option<Frame> {
        match f {
            Frame::Bulk(b) => match names.restore(db, &b) {
                Restored::Name(n) if n.as_slice() == b.as_ref() => Some(Frame::Bulk(b)),
                Restored::Name(n) => Some(Frame::Bulk(Bytes::from(n))),
                Restored::Foreign => None,
            },
            other => Some(other),
        }
    };
    match (name, frame) {
        ("keys", Frame::Array(items)) => {
            Frame::Array(items.into_iter().filter_map(restore).collect())
        }
        ("scan", Frame::Array(mut items)) if items.len() == 2 => {
            if let Some(Frame::Array(keys)) = items.pop() {
                items.push(Frame::Array(keys.into_iter().filter_map(restore).collect()));
            }
            Frame::Array(items)
        }
        ("randomkey", f @ Frame::Bulk(_)) => restore(f).unwrap_or(Frame::Null),
        ("xread" | "xreadgroup", Frame::Map(pairs)) => Frame::Map(
            pairs
                .into_iter()
                .filter_map(|(k, v)| Some((restore(k)?, v)))
                .collect(),
        ),
        ("xread" | "xreadgroup", Frame::Array(streams)) => Frame::Array(
            streams
                .into_iter()
                .map(|s| match s {
                    Frame::Array(mut kv) if !kv.is_empty() => {
                        let k = kv.remove(0);
                        kv.insert(0, restore(k).unwrap_or(Frame::Null));
                        Frame::Array(kv)
                    }
                    other => other,
                })
                .collect(),
        ),
        (_, Frame::Array(mut items)) if reply_has_keys(name) && !items.is_empty() => {
            let k = items.remove(0);
            items.insert(0, restore(k).unwrap_or(Frame::Null));
            Frame::Array(items)
        }
        (_, f) => f,
    }
}

/// An error reply (`-...\r\n`) with the stored key name it quotes mapped back to the client's
/// ([`restore_error_text`]). Anything else is returned as it is.
pub fn restore_error(names: &KeyNames, db: u32, error: Bytes) -> Bytes {
    let Some(text) = error
        .strip_prefix(b"-")
        .and_then(|text| restore_error_text(names, db, text))
    else {
        return error;
    };
    let mut out = Vec::with_capacity(text.len() + 1);
    out.push(b'-');
    out.extend_from_slice(&text);
    Bytes::from(out)
}

/// [`restore_reply`] for replies that name keys, [`restore_error_text`] for errors: one reply
/// of a command `name` whose request had its keys rewritten (a reply inside EXEC's array).
pub fn restore_in_reply(names: &KeyNames, db: u32, name: &str, reply: Frame) -> Frame {
    match reply {
        Frame::Error(text) => {
            Frame::Error(restore_error_text(names, db, &text).map_or(text, Bytes::from))
        }
        reply if reply_has_keys(name) => restore_reply(names, db, name, reply),
        reply => reply,
    }
}

/// The text of a consumer group error, `NOGROUP No such key '<key>' or consumer group '<group>'`
/// (XREADGROUP, XPENDING, XCLAIM, XGROUP, XINFO ...; the only Redis errors that quote a key),
/// with the client's name for the key. `None` for any other text, or a key of another database.
fn restore_error_text(names: &KeyNames, db: u32, text: &[u8]) -> Option<Vec<u8>> {
    const HEAD: &[u8] = b"NOGROUP No such key '";
    const TAIL: &[u8] = b"' or consumer group '";
    let rest = text.strip_prefix(HEAD)?;
    let end = memchr::memmem::find(rest, TAIL)?;
    let Restored::Name(name) = names.restore(db, rest.get(..end)?) else {
        return None;
    };
    let mut out = Vec::with_capacity(text.len());
    out.extend_from_slice(HEAD);
    out.extend_from_slice(&name);
    out.extend_from_slice(rest.get(end..)?);
    Some(out)
}

/// Keeps only the key names that match `pattern` (if any) in a KEYS or SCAN reply.
pub fn keep_matching(frame: Frame, name: &str, pattern: Option<&[u8]>) -> Frame {
    let Some(pattern) = pattern else {
        return frame;
    };
    let keep = |f: &Frame| match f {
        Frame::Bulk(k) => routing::glob::matches(pattern, k),
        _ => true,
    };
    match (name, frame) {
        ("keys", Frame::Array(mut items)) => {
            items.retain(keep);
            Frame::Array(items)
        }
        ("scan", Frame::Array(mut items)) if items.len() == 2 => {
            if let Some(Frame::Array(mut keys)) = items.pop() {
                keys.retain(keep);
                items.push(Frame::Array(keys));
            }
            Frame::Array(items)
        }
        (_, f) => f,
    }
}

/// When client names differ from stored names: KEYS and SCAN fetch the stored names of the
/// client's database and apply the client's pattern to the client names (a node cannot match
/// a pattern against names it does not store). With `databases: namespaced` (`namespaced`),
/// DBSIZE, FLUSHDB and RANDOMKEY see only the client's database too. `None` for other commands.
pub fn keyspace_plan(
    name: &str,
    req: &Request,
    db: u32,
    masters: usize,
    namespaced: bool,
) -> Option<Result<Plan, ProxyError>> {
    if !namespaced && !matches!(name, "keys" | "scan") {
        return None;
    }
    let pattern = if db > 0 {
        let mut p = db_prefix(db);
        p.push(b'*');
        p
    } else {
        Vec::new()
    };
    let script = |body: &str, merge: Merge| Plan::Fanout {
        fan: Fan::Masters,
        request: Some(Request::from_args([
            b"EVAL".as_slice(),
            body.as_bytes(),
            b"0",
            pattern.as_slice(),
        ])),
        merge,
        finish: Finish::Names(None),
    };
    Some(Ok(match name {
        "dbsize" => script(COUNT_SCRIPT, Merge::Sum),
        "flushdb" => script(FLUSH_SCRIPT, Merge::AllOk),
        "randomkey" => script(RANDOM_SCRIPT, Merge::AnyNonNil { start: 0 }),
        "keys" => {
            let mut all = db_prefix(db);
            all.push(b'*');
            Plan::Fanout {
                fan: Fan::Masters,
                request: Some(Request::from_args([b"KEYS".as_slice(), &all])),
                merge: Merge::Concat,
                finish: Finish::Names(req.arg_bytes(1)),
            }
        }
        "scan" => {
            // The client's MATCH is applied by the proxy; the node only narrows to the database.
            let mut args: Vec<Vec<u8>> = Vec::new();
            let mut client_pattern = None;
            let mut i = 0;
            while let Some(a) = req.arg(i) {
                if i >= 2 && a.eq_ignore_ascii_case(b"match") && req.arg(i + 1).is_some() {
                    client_pattern = req.arg_bytes(i + 1);
                    i += 2;
                    continue;
                }
                args.push(a.to_vec());
                i += 1;
            }
            if db > 0 {
                args.push(b"MATCH".to_vec());
                args.push(pattern.clone());
            }
            return Some(
                dispatch::plan_scan(&Request::from_args(args), masters).map(|plan| match plan {
                    Plan::Scan {
                        master, request, ..
                    } => Plan::Scan {
                        master,
                        request,
                        pattern: client_pattern,
                    },
                    other => other,
                }),
            );
        }
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_group_errors_name_the_clients_key() {
        let names = KeyNames::new(Vec::new());
        let error = Bytes::from_static(
            b"-NOGROUP No such key '__slotway_db1__:s' or consumer group 'g' in XREADGROUP\r\n",
        );
        assert_eq!(
            restore_error(&names, 1, error),
            &b"-NOGROUP No such key 's' or consumer group 'g' in XREADGROUP\r\n"[..]
        );
        // Other errors, and names of other databases, are left as they are.
        let other = Bytes::from_static(b"-WRONGTYPE Operation against a key\r\n");
        assert_eq!(restore_error(&names, 1, other.clone()), other);
        let foreign =
            Bytes::from_static(b"-NOGROUP No such key '__slotway_db2__:s' or consumer group 'g'");
        assert_eq!(restore_error(&names, 1, foreign.clone()), foreign);
        // Inside EXEC's array, as a frame.
        let frame = Frame::Error(Bytes::from_static(
            b"NOGROUP No such key '__slotway_db1__:s' or consumer group 'g'",
        ));
        assert_eq!(
            restore_in_reply(&names, 1, "xpending", frame),
            Frame::Error(Bytes::from_static(
                b"NOGROUP No such key 's' or consumer group 'g'"
            ))
        );
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let names = KeyNames::new(KeyNames::celery_rules());
        let req = Request::from_args(["BRPOP", "q", "celery-taskset-meta-g.j", "1"]);
        let spec = routing::lookup(b"brpop", None);
        let renamed = rename_request(&names, 1, req, spec);
        let args: Vec<&[u8]> = renamed.args().collect();
        assert_eq!(args[1], b"__slotway_db1__:q");
        assert_eq!(args[2], b"__slotway_db1__:{g}celery-taskset-meta-g.j");
        assert_eq!(args[3], b"1");
        let reply = Frame::Array(vec![
            Frame::Bulk(Bytes::copy_from_slice(args[2])),
            Frame::Bulk(Bytes::from_static(b"v")),
        ]);
        assert_eq!(
            restore_reply(&names, 1, "brpop", reply),
            Frame::Array(vec![
                Frame::Bulk(Bytes::from_static(b"celery-taskset-meta-g.j")),
                Frame::Bulk(Bytes::from_static(b"v")),
            ])
        );
        let keys = Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"__slotway_db1__:a")),
            Frame::Bulk(Bytes::from_static(b"b")),
        ]);
        assert_eq!(
            restore_reply(&names, 0, "keys", keys),
            Frame::Array(vec![Frame::Bulk(Bytes::from_static(b"b"))])
        );
    }
}
