//! Splitting a multi-key command by hash slot ([`split`]), and merging the parts' replies back
//! into the one reply a single node would give ([`Merge`]).
//!
//! Keys are grouped by slot, not by node: a node answers `CROSSSLOT` to a command whose keys
//! sit in two of its slots. Parts are ordered by slot; [`Merge::Mget`] remembers where each key
//! came from so values come back in the caller's order.

use std::collections::HashSet;

use bytes::Bytes;
use protocol::{Frame, Request};

use crate::Slot;

/// How the replies of a split or fanned-out command become one reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// MGET: `positions[p][j]` is the index, in the caller's key list, of the `j`th key of part
    /// `p`; `total` is the number of keys.
    Mget {
        /// Where each part's keys go.
        positions: Vec<Vec<u32>>,
        /// How many keys the caller asked for.
        total: usize,
    },
    /// DEL, UNLINK, EXISTS, TOUCH, DBSIZE: the sum of the integer replies.
    Sum,
    /// MSET, FLUSHALL, SCRIPT FLUSH, CONFIG SET: `+OK` once every part said OK.
    AllOk,
    /// SCRIPT KILL, FUNCTION KILL (Redis's `one_succeeded`): `+OK` if some part said OK (the
    /// node that ran the script); else the first error other than NOTBUSY (UNKILLABLE); else
    /// the first part's NOTBUSY.
    OneOk,
    /// KEYS: the arrays concatenated in part order.
    Concat,
    /// SCRIPT LOAD, FUNCTION LOAD: every part gives the same answer; that answer.
    Same,
    /// SCRIPT EXISTS: element-wise logical AND of integer arrays.
    AndArrays,
    /// LASTSAVE, WAIT: the smallest integer.
    Min,
    /// PUBSUB CHANNELS: the arrays concatenated without duplicates.
    Union,
    /// PUBSUB NUMSUB: `[name, count, ...]` pairs (or a map), counts summed by name, in the order
    /// names first appear.
    SumByKey,
    /// XREAD / XREADGROUP: each part answers `[[key, entries], ...]` (RESP3: a map) for its
    /// streams that have entries, or nil; the streams are listed in the caller's order.
    Streams {
        /// The stream names, in the caller's order.
        names: Vec<Bytes>,
    },
    /// RANDOMKEY: the non-nil reply of part `start` or the next part after it that has one
    /// (wrapping); nil if every part is nil.
    AnyNonNil {
        /// Where to start looking (chosen at random by the caller).
        start: usize,
    },
    /// SUNION, SINTER, SDIFF: the parts' sets combined (see [`SetOp`]). Members keep the order
    /// in which they first appear; the reply is a set if the parts' are (RESP3).
    Sets(SetOp),
    /// SINTERCARD, ZINTERCARD: each part is the SINTER / ZINTER of one slot's keys; the size of
    /// their intersection, at most `limit` (0: no limit).
    InterCard {
        /// The LIMIT option.
        limit: u64,
    },
    /// ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE: part `i` is `ZUNION 1 key_i WITHSCORES` (a set
    /// reads as scores of 1); the members combined as Redis does (below), as
    /// `[member, score, ...]` with each score written so that it parses back exactly.
    Scored {
        /// Union, intersection or difference.
        op: SetOp,
        /// WEIGHTS: one per key (1 each by default).
        weights: Vec<f64>,
        /// AGGREGATE.
        aggregate: Aggregate,
    },
    /// A command whose options the proxy could not read, sent to one node in a read-only form
    /// to get Redis's own error: that error, or `ERR syntax error` if the node took it.
    InvalidOptions,
    /// BITOP: part `i` is `GET key_i`; the result of the operation over the values (a missing
    /// key is an empty string; shorter values are padded with zero bytes).
    Bitop(BitOp),
    /// No part is sent: the command is answered with this error, as Redis would answer it.
    Refuse(&'static str),
    /// PFCOUNT: part `i` is `GET key_i`; the cardinality of the union of the HyperLogLogs
    /// ([`crate::hll`]). Errors are reported in key order, as Redis checks the keys.
    PfCount,
}

/// The operation of BITOP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitOp {
    /// AND.
    And,
    /// OR.
    Or,
    /// XOR.
    Xor,
    /// NOT (one source).
    Not,
}

/// AGGREGATE of ZUNIONSTORE / ZINTERSTORE: how a member's weighted scores combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// The sum (NaN, from `inf + -inf`, becomes 0, as in Redis).
    Sum,
    /// The smallest.
    Min,
    /// The largest.
    Max,
}

/// How [`Merge::Sets`] combines its parts' sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    /// SUNION: each part is the SUNION of one slot's keys; the result is their union.
    Union,
    /// SINTER: each part is the SINTER of one slot's keys; the result is their intersection.
    Inter,
    /// SDIFF: part 0 is the SDIFF of the first key and the other keys of its slot; every other
    /// part is the SUNION of one slot's keys; the result is part 0 without their members.
    Diff,
}

/// A command split into per-slot parts.
#[derive(Debug, Clone)]
pub struct Split {
    /// Each part: the slot all its keys hash to, and the request to send there.
    pub parts: Vec<(Slot, Request)>,
    /// How to put the replies together.
    pub merge: Merge,
    /// The STORE forms (SUNIONSTORE, ZUNIONSTORE...): where the merged set is then written.
    pub store: Option<Destination>,
}

/// Where a STORE form writes its result: it replaces whatever the key held, and an empty
/// result deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The destination key's slot.
    pub slot: Slot,
    /// The destination key.
    pub key: Bytes,
    /// What is written there.
    pub kind: Written,
}

/// The type of a STORE form's result, and the shape of its merged reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A set: the merged reply is its members.
    Set,
    /// A sorted set: the merged reply is `[member, score, ...]`.
    SortedSet,
    /// A string (BITOP): the merged reply is its value.
    String,
}

/// Splits MGET, MSET, DEL, UNLINK, EXISTS, TOUCH, SUNION, SINTER, SDIFF (and their STORE
/// forms) and XREAD / XREADGROUP (without BLOCK) by slot. `name` is the command table name.
///
/// Returns `None` for other commands and when every key shares one slot (send the request as
/// it is). The caller has checked the arity; an MSET with an odd number of arguments after the
/// name is not split (the node answers it with Redis's error).
pub fn split(name: &str, req: &Request) -> Option<Split> {
    match name {
        "xread" | "xreadgroup" => return split_streams(req),
        "sunion" => return split_sets(req, SetOp::Union, false),
        "sinter" => return split_sets(req, SetOp::Inter, false),
        "sdiff" => return split_sets(req, SetOp::Diff, false),
        "sunionstore" => return split_sets(req, SetOp::Union, true),
        "sinterstore" => return split_sets(req, SetOp::Inter, true),
        "sdiffstore" => return split_sets(req, SetOp::Diff, true),
        "sintercard" => return split_intercard(req, false),
        "zunionstore" => return split_scored(req, SetOp::Union),
        "zinterstore" => return split_scored(req, SetOp::Inter),
        "zdiffstore" => return split_scored(req, SetOp::Diff),
        "bitop" => return split_bitop(req),
        "pfcount" => return split_pfcount(req),
        "zintercard" => return split_intercard(req, true),
        _ => {}
    }
    let (step, merge_kind) = match name {
        "mget" => (1, MergeKind::Mget),
        "mset" => (2, MergeKind::AllOk),
        "del" | "unlink" | "exists" | "touch" => (1, MergeKind::Sum),
        _ => return None,
    };
    let nargs = req.len().checked_sub(1)?;
    if nargs == 0 || nargs % step != 0 {
        return None;
    }
    // (slot, key number) for each key, key number counted in the caller's order.
    let mut keys: Vec<(Slot, u32)> = (0..nargs / step)
        .map(|k| {
            let key = req.arg(1 + k * step).unwrap_or_default();
            (Slot::for_key(key), k as u32)
        })
        .collect();
    if keys.iter().all(|(s, _)| *s == keys[0].0) {
        return None;
    }
    // Stable: keys of one slot keep the caller's order within their part.
    keys.sort_by_key(|(slot, _)| *slot);
    let command = req.arg(0).unwrap_or_default();
    let mut parts = Vec::new();
    let mut positions: Vec<Vec<u32>> = Vec::new();
    for group in keys.chunk_by(|a, b| a.0 == b.0) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + group.len() * step);
        args.push(command);
        for &(_, k) in group {
            for j in 0..step {
                args.push(req.arg(1 + k as usize * step + j).unwrap_or_default());
            }
        }
        parts.push((group[0].0, Request::from_args(args)));
        positions.push(group.iter().map(|&(_, k)| k).collect());
    }
    let merge = match merge_kind {
        MergeKind::Mget => Merge::Mget {
            positions,
            total: nargs,
        },
        MergeKind::AllOk => Merge::AllOk,
        MergeKind::Sum => Merge::Sum,
    };
    Some(Split {
        parts,
        merge,
        store: None,
    })
}

/// XREAD / XREADGROUP without BLOCK: one request per slot with the same options, each with
/// its streams and their ids.
fn split_streams(req: &Request) -> Option<Split> {
    let args: Vec<&[u8]> = req.args().collect();
    let streams_at = args
        .iter()
        .position(|a| a.eq_ignore_ascii_case(b"streams"))?;
    if args[..streams_at]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(b"block"))
    {
        return None;
    }
    let rest = args.len() - streams_at - 1;
    if rest == 0 || !rest.is_multiple_of(2) {
        return None;
    }
    let n = rest / 2;
    let keys = &args[streams_at + 1..streams_at + 1 + n];
    let ids = &args[streams_at + 1 + n..];
    let mut by_slot: Vec<(Slot, Vec<u32>)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let slot = Slot::for_key(k);
        match by_slot.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, v)) => v.push(i as u32),
            None => by_slot.push((slot, vec![i as u32])),
        }
    }
    if by_slot.len() < 2 {
        return None;
    }
    let parts = by_slot
        .iter()
        .map(|(slot, members)| {
            let mut part: Vec<&[u8]> = args[..=streams_at].to_vec();
            part.extend(members.iter().map(|&i| keys[i as usize]));
            part.extend(members.iter().map(|&i| ids[i as usize]));
            (*slot, Request::from_args(part))
        })
        .collect();
    let names = keys.iter().map(|k| Bytes::copy_from_slice(k)).collect();
    Some(Split {
        parts,
        merge: Merge::Streams { names },
        store: None,
    })
}

/// SUNION / SINTER / SDIFF: one request per slot, the first key's slot first (see [`SetOp`]).
/// With `store`, the first argument is the destination, and the sources are read the same way
/// (even if they share one slot, when the destination is in another).
fn split_sets(req: &Request, op: SetOp, store: bool) -> Option<Split> {
    let skip = if store { 2 } else { 1 };
    let store = match store {
        true => {
            let dst = req.arg(1)?;
            Some(Destination {
                slot: Slot::for_key(dst),
                key: Bytes::copy_from_slice(dst),
                kind: Written::Set,
            })
        }
        false => None,
    };
    let mut groups: Vec<(Slot, Vec<&[u8]>)> = Vec::new();
    for key in req.args().skip(skip) {
        let slot = Slot::for_key(key);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, keys)) => keys.push(key),
            None => groups.push((slot, vec![key])),
        }
    }
    let one_slot = match (groups.as_slice(), &store) {
        ([], _) => return None,
        ([(slot, _)], Some(dst)) => *slot == dst.slot,
        ([_], None) => true,
        _ => false,
    };
    if one_slot {
        return None;
    }
    let (first, others): (&[u8], &[u8]) = match op {
        SetOp::Union => (b"SUNION", b"SUNION"),
        SetOp::Inter => (b"SINTER", b"SINTER"),
        SetOp::Diff => (b"SDIFF", b"SUNION"),
    };
    let parts = groups
        .into_iter()
        .enumerate()
        .map(|(i, (slot, keys))| {
            let command = if i == 0 { first } else { others };
            let args = std::iter::once(command).chain(keys);
            (slot, Request::from_args(args))
        })
        .collect();
    Some(Split {
        parts,
        merge: Merge::Sets(op),
        store,
    })
}

/// SINTERCARD / ZINTERCARD `numkeys key... [LIMIT limit]`: the members of each slot's
/// intersection (the caller checked `numkeys`). Options the proxy does not understand go, with
/// the first slot's keys, to that slot's node, which answers Redis's own error.
fn split_intercard(req: &Request, zset: bool) -> Option<Split> {
    let n: usize = std::str::from_utf8(req.arg(1)?).ok()?.parse().ok()?;
    let args: Vec<&[u8]> = req.args().collect();
    let keys = args.get(2..2 + n)?;
    let options = args.get(2 + n..)?;
    let mut groups: Vec<(Slot, Vec<&[u8]>)> = Vec::new();
    for &key in keys {
        let slot = Slot::for_key(key);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, keys)) => keys.push(key),
            None => groups.push((slot, vec![key])),
        }
    }
    if groups.len() < 2 {
        return None;
    }
    let mut limit = Some(0);
    for pair in options.chunks(2) {
        limit = match pair {
            [word, n] if word.eq_ignore_ascii_case(b"limit") => std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse::<u64>().ok()),
            _ => None,
        };
        if limit.is_none() {
            break;
        }
    }
    let Some(limit) = limit else {
        let (slot, keys) = groups.swap_remove(0);
        let count = keys.len().to_string();
        let part = [args[0], count.as_bytes()]
            .into_iter()
            .chain(keys)
            .chain(options.iter().copied());
        return Some(Split {
            parts: vec![(slot, Request::from_args(part))],
            merge: Merge::InterCard { limit: 0 },
            store: None,
        });
    };
    let parts = groups
        .into_iter()
        .map(|(slot, keys)| {
            let count = keys.len().to_string();
            let part: Vec<&[u8]> = if zset {
                [b"ZINTER".as_slice(), count.as_bytes()]
                    .into_iter()
                    .chain(keys)
                    .collect()
            } else {
                std::iter::once(b"SINTER".as_slice()).chain(keys).collect()
            };
            (slot, Request::from_args(part))
        })
        .collect();
    Some(Split {
        parts,
        merge: Merge::InterCard { limit },
        store: None,
    })
}

/// ZUNIONSTORE / ZINTERSTORE / ZDIFFSTORE `dst numkeys key... [WEIGHTS w...] [AGGREGATE
/// SUM|MIN|MAX]` (the caller checked `numkeys`): each key read with its scores, combined by
/// the proxy (see [`Merge::Scored`]).
fn split_scored(req: &Request, op: SetOp) -> Option<Split> {
    let args: Vec<&[u8]> = req.args().collect();
    let dst = *args.get(1)?;
    let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
    let keys = args.get(3..3 + n)?;
    let options = args.get(3 + n..)?;
    let slot = Slot::for_key(dst);
    if keys.iter().all(|k| Slot::for_key(k) == slot) {
        return None;
    }
    let read: &[u8] = match op {
        SetOp::Union => b"ZUNION",
        SetOp::Inter => b"ZINTER",
        SetOp::Diff => b"ZDIFF",
    };
    let Some((weights, aggregate)) = scored_options(op, options, n) else {
        // Redis's error, from the read-only form over copies of the first key (one slot).
        let first = *keys.first()?;
        let part = [read, args[2]]
            .into_iter()
            .chain(std::iter::repeat_n(first, n))
            .chain(options.iter().copied());
        return Some(Split {
            parts: vec![(Slot::for_key(first), Request::from_args(part))],
            merge: Merge::InvalidOptions,
            store: None,
        });
    };
    let parts = keys
        .iter()
        .map(|&key| {
            let part = [b"ZUNION".as_slice(), b"1", key, b"WITHSCORES"];
            (Slot::for_key(key), Request::from_args(part))
        })
        .collect();
    Some(Split {
        parts,
        merge: Merge::Scored {
            op,
            weights,
            aggregate,
        },
        store: Some(Destination {
            slot,
            key: Bytes::copy_from_slice(dst),
            kind: Written::SortedSet,
        }),
    })
}

/// WEIGHTS and AGGREGATE as Redis reads them (ZDIFFSTORE takes neither); `None` if anything
/// else is there, or a weight is not a number.
fn scored_options(op: SetOp, options: &[&[u8]], n: usize) -> Option<(Vec<f64>, Aggregate)> {
    let mut weights = vec![1.0; n];
    let mut aggregate = Aggregate::Sum;
    let mut rest = options;
    while let Some((word, after)) = rest.split_first() {
        if op != SetOp::Diff && word.eq_ignore_ascii_case(b"weights") && after.len() >= n {
            for (w, arg) in weights.iter_mut().zip(after) {
                *w = std::str::from_utf8(arg)
                    .ok()?
                    .parse::<f64>()
                    .ok()
                    .filter(|w| !w.is_nan())?;
            }
            rest = &after[n..];
        } else if op != SetOp::Diff && word.eq_ignore_ascii_case(b"aggregate") {
            let (how, after) = after.split_first()?;
            aggregate = match how.to_ascii_lowercase().as_slice() {
                b"sum" => Aggregate::Sum,
                b"min" => Aggregate::Min,
                b"max" => Aggregate::Max,
                _ => return None,
            };
            rest = after;
        } else {
            return None;
        }
    }
    Some((weights, aggregate))
}

/// PFCOUNT `key...` over several slots: each key's raw value read with GET.
fn split_pfcount(req: &Request) -> Option<Split> {
    let keys: Vec<&[u8]> = req.args().skip(1).collect();
    let first = Slot::for_key(keys.first()?);
    if keys.iter().all(|k| Slot::for_key(k) == first) {
        return None;
    }
    Some(Split {
        parts: get_each(&keys),
        merge: Merge::PfCount,
        store: None,
    })
}

/// One `GET key` part per key, to the key's slot.
fn get_each(keys: &[&[u8]]) -> Vec<(Slot, Request)> {
    keys.iter()
        .map(|&key| {
            (
                Slot::for_key(key),
                Request::from_args([b"GET".as_slice(), key]),
            )
        })
        .collect()
}

/// BITOP `op dst key...`: each source read with GET, the operation done by the proxy.
fn split_bitop(req: &Request) -> Option<Split> {
    let args: Vec<&[u8]> = req.args().collect();
    let dst = *args.get(2)?;
    let sources = args.get(3..)?;
    let refuse = |why| Split {
        parts: Vec::new(),
        merge: Merge::Refuse(why),
        store: None,
    };
    let op = match args.get(1)?.to_ascii_lowercase().as_slice() {
        b"and" => BitOp::And,
        b"or" => BitOp::Or,
        b"xor" => BitOp::Xor,
        b"not" => BitOp::Not,
        _ => return Some(refuse("ERR syntax error")),
    };
    if op == BitOp::Not && sources.len() != 1 {
        return Some(refuse(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    Some(Split {
        parts: get_each(sources),
        merge: Merge::Bitop(op),
        store: Some(Destination {
            slot: Slot::for_key(dst),
            key: Bytes::copy_from_slice(dst),
            kind: Written::String,
        }),
    })
}

enum MergeKind {
    Mget,
    AllOk,
    Sum,
}

// === impl Merge ===

impl Merge {
    /// Merges the parts' replies, given in part order. An error reply from any part is the
    /// result (the first one, in part order). A reply of an unexpected shape becomes an error
    /// that says so, never a guess.
    pub fn merge(&self, replies: Vec<Frame>) -> Frame {
        // PFCOUNT reports errors in key order itself (a part can fail without an error reply);
        // for SCRIPT KILL the other nodes' NOTBUSY is no failure.
        if !matches!(self, Merge::PfCount | Merge::OneOk) {
            if let Some(err) = replies.iter().find(|f| matches!(f, Frame::Error(_))) {
                return err.clone();
            }
        }
        match self {
            Merge::Mget { positions, total } => {
                let mut out = vec![Frame::Null; *total];
                for (part, reply) in positions.iter().zip(replies) {
                    let Some(values) = into_array(reply) else {
                        return unexpected("MGET");
                    };
                    if values.len() != part.len() {
                        return unexpected("MGET");
                    }
                    for (&k, v) in part.iter().zip(values) {
                        if let Some(slot) = out.get_mut(k as usize) {
                            *slot = v;
                        }
                    }
                }
                Frame::Array(out)
            }
            Merge::Sum => {
                let mut sum: i64 = 0;
                for r in replies {
                    match r {
                        Frame::Integer(n) => sum = sum.saturating_add(n),
                        _ => return unexpected("an integer"),
                    }
                }
                Frame::Integer(sum)
            }
            Merge::AllOk => {
                if replies.iter().all(is_ok) {
                    Frame::Simple(Bytes::from_static(b"OK"))
                } else {
                    unexpected("OK")
                }
            }
            Merge::Concat => {
                let mut out = Vec::new();
                for r in replies {
                    match into_array(r) {
                        Some(items) => out.extend(items),
                        None => return unexpected("an array"),
                    }
                }
                Frame::Array(out)
            }
            Merge::Streams { names } => {
                let mut found: Vec<(usize, Frame, Frame)> = Vec::new();
                let mut is_map = false;
                for reply in replies {
                    let pairs: Vec<(Frame, Frame)> = match reply {
                        Frame::Null | Frame::NullArray => continue,
                        Frame::Map(pairs) => {
                            is_map = true;
                            pairs
                        }
                        Frame::Array(items) => {
                            let mut pairs = Vec::new();
                            for item in items {
                                let Frame::Array(mut kv) = item else {
                                    return unexpected("stream replies");
                                };
                                if kv.len() != 2 {
                                    return unexpected("stream replies");
                                }
                                let v = kv.pop().unwrap_or(Frame::Null);
                                let k = kv.pop().unwrap_or(Frame::Null);
                                pairs.push((k, v));
                            }
                            pairs
                        }
                        _ => return unexpected("stream replies"),
                    };
                    for (k, v) in pairs {
                        let pos = match &k {
                            Frame::Bulk(name) => names.iter().position(|n| n == name),
                            _ => None,
                        };
                        let Some(pos) = pos else {
                            return unexpected("stream replies");
                        };
                        found.push((pos, k, v));
                    }
                }
                if found.is_empty() {
                    return Frame::NullArray;
                }
                // Streams in the caller's order, as one node would list them.
                found.sort_by_key(|(pos, _, _)| *pos);
                if is_map {
                    Frame::Map(found.into_iter().map(|(_, k, v)| (k, v)).collect())
                } else {
                    Frame::Array(
                        found
                            .into_iter()
                            .map(|(_, k, v)| Frame::Array(vec![k, v]))
                            .collect(),
                    )
                }
            }
            Merge::Union => merge_sets(SetOp::Union, replies),
            Merge::SumByKey => {
                let mut is_map = false;
                let mut out: Vec<(Frame, i64)> = Vec::new();
                for r in replies {
                    let pairs: Vec<(Frame, Frame)> = match r {
                        Frame::Map(pairs) => {
                            is_map = true;
                            pairs
                        }
                        Frame::Array(items) if items.len() % 2 == 0 => {
                            let mut it = items.into_iter();
                            let mut pairs = Vec::new();
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                pairs.push((k, v));
                            }
                            pairs
                        }
                        _ => return unexpected("name/count pairs"),
                    };
                    for (k, v) in pairs {
                        let Frame::Integer(n) = v else {
                            return unexpected("counts");
                        };
                        match out.iter_mut().find(|(name, _)| *name == k) {
                            Some((_, sum)) => *sum += n,
                            None => out.push((k, n)),
                        }
                    }
                }
                if is_map {
                    Frame::Map(
                        out.into_iter()
                            .map(|(k, n)| (k, Frame::Integer(n)))
                            .collect(),
                    )
                } else {
                    Frame::Array(
                        out.into_iter()
                            .flat_map(|(k, n)| [k, Frame::Integer(n)])
                            .collect(),
                    )
                }
            }
            Merge::Same => {
                let mut it = replies.into_iter();
                let Some(first) = it.next() else {
                    return unexpected("a reply");
                };
                if it.all(|r| r == first) {
                    first
                } else {
                    Frame::Error(Bytes::from_static(
                        b"ERR Slotway: the cluster's masters gave different answers",
                    ))
                }
            }
            Merge::AndArrays => {
                let mut out: Option<Vec<i64>> = None;
                for r in replies {
                    let Some(items) = into_array(r) else {
                        return unexpected("an array");
                    };
                    let ints: Option<Vec<i64>> = items
                        .into_iter()
                        .map(|f| match f {
                            Frame::Integer(n) => Some(n),
                            _ => None,
                        })
                        .collect();
                    let Some(ints) = ints else {
                        return unexpected("integers");
                    };
                    out = Some(match out {
                        None => ints,
                        Some(acc) if acc.len() == ints.len() => acc
                            .iter()
                            .zip(&ints)
                            .map(|(a, b)| i64::from(*a != 0 && *b != 0))
                            .collect(),
                        Some(_) => return unexpected("arrays of one length"),
                    });
                }
                Frame::Array(
                    out.unwrap_or_default()
                        .into_iter()
                        .map(Frame::Integer)
                        .collect(),
                )
            }
            Merge::Min => {
                let mut min: Option<i64> = None;
                for r in replies {
                    match r {
                        Frame::Integer(n) => min = Some(min.map_or(n, |m| m.min(n))),
                        _ => return unexpected("an integer"),
                    }
                }
                min.map_or_else(|| unexpected("an integer"), Frame::Integer)
            }
            Merge::Sets(op) => merge_sets(*op, replies),
            Merge::Scored {
                op,
                weights,
                aggregate,
            } => merge_scored(*op, weights, *aggregate, replies),
            Merge::InvalidOptions => Frame::Error(Bytes::from_static(b"ERR syntax error")),
            Merge::Refuse(why) => Frame::Error(Bytes::from_static(why.as_bytes())),
            Merge::PfCount => merge_pfcount(replies),
            Merge::OneOk => {
                let notbusy = |f: &Frame| matches!(f, Frame::Error(e) if e.starts_with(b"NOTBUSY"));
                if replies.iter().any(is_ok) {
                    return Frame::Simple(Bytes::from_static(b"OK"));
                }
                let first_error = replies
                    .iter()
                    .find(|f| matches!(f, Frame::Error(_)) && !notbusy(f));
                match first_error.or_else(|| replies.first()) {
                    Some(f @ Frame::Error(_)) => f.clone(),
                    _ => unexpected("OK"),
                }
            }
            Merge::Bitop(op) => merge_bitop(*op, replies),
            Merge::InterCard { limit } => match merge_sets(SetOp::Inter, replies) {
                Frame::Array(members) | Frame::Set(members) => {
                    let n = members.len() as u64;
                    Frame::Integer(if *limit > 0 { n.min(*limit) } else { n } as i64)
                }
                other => other,
            },
            Merge::AnyNonNil { start } => {
                let n = replies.len();
                if n == 0 {
                    return Frame::Null;
                }
                (0..n)
                    .map(|i| (start + i) % n)
                    .find_map(|i| replies.get(i).filter(|f| !is_nil(f)).cloned())
                    .unwrap_or(Frame::Null)
            }
        }
    }
}

fn merge_sets(op: SetOp, replies: Vec<Frame>) -> Frame {
    let is_set = replies.iter().any(|r| matches!(r, Frame::Set(_)));
    let mut parts = Vec::with_capacity(replies.len());
    for reply in replies {
        match into_array(reply) {
            Some(members) if members.iter().all(|m| matches!(m, Frame::Bulk(_))) => {
                parts.push(members)
            }
            _ => return unexpected("set members"),
        }
    }
    let mut parts = parts.into_iter();
    let first = parts.next().unwrap_or_default();
    let out: Vec<Frame> = match op {
        SetOp::Union => {
            let mut seen = HashSet::new();
            first
                .into_iter()
                .chain(parts.flatten())
                .filter(|m| seen.insert(member(m)))
                .collect()
        }
        SetOp::Inter => {
            let rest: Vec<HashSet<Bytes>> = parts.map(|p| p.iter().map(member).collect()).collect();
            first
                .into_iter()
                .filter(|m| rest.iter().all(|set| set.contains(&member(m))))
                .collect()
        }
        SetOp::Diff => {
            let minus: HashSet<Bytes> = parts.flatten().map(|m| member(&m)).collect();
            first
                .into_iter()
                .filter(|m| !minus.contains(&member(m)))
                .collect()
        }
    };
    if is_set {
        Frame::Set(out)
    } else {
        Frame::Array(out)
    }
}

/// Combines weighted sorted sets as Redis's `zunionInterDiffGenericCommand` does: a union
/// visits the keys in order, an intersection starts from the smallest set and visits the
/// others in order of size, a difference keeps the first set's members (and scores) that no
/// other set has. A weighted score that is NaN (`inf * 0`) counts as 0, as does a NaN sum.
fn merge_scored(op: SetOp, weights: &[f64], aggregate: Aggregate, replies: Vec<Frame>) -> Frame {
    let mut sets = Vec::with_capacity(replies.len());
    for reply in replies {
        match scored_members(reply) {
            Some(set) => sets.push(set),
            None => return unexpected("members with scores"),
        }
    }
    let combine = |target: &mut f64, value: f64| match aggregate {
        Aggregate::Sum => {
            *target += value;
            if target.is_nan() {
                *target = 0.0;
            }
        }
        Aggregate::Min => *target = target.min(value),
        Aggregate::Max => *target = target.max(value),
    };
    let weighted = |score: f64, i: usize| score * weights.get(i).copied().unwrap_or(1.0);
    let mut out: Vec<(Bytes, f64)> = Vec::new();
    match op {
        SetOp::Union => {
            let mut at: std::collections::HashMap<Bytes, usize> = std::collections::HashMap::new();
            for (i, set) in sets.into_iter().enumerate() {
                for (member, score) in set {
                    let mut value = weighted(score, i);
                    if value.is_nan() {
                        value = 0.0;
                    }
                    match at.get(&member) {
                        Some(&k) => combine(&mut out[k].1, value),
                        None => {
                            at.insert(member.clone(), out.len());
                            out.push((member, value));
                        }
                    }
                }
            }
        }
        SetOp::Inter => {
            let mut order: Vec<usize> = (0..sets.len()).collect();
            order.sort_by_key(|&i| sets[i].len());
            let lookup: Vec<std::collections::HashMap<&Bytes, f64>> = sets
                .iter()
                .map(|set| set.iter().map(|(m, s)| (m, *s)).collect())
                .collect();
            if let Some((&first, others)) = order.split_first() {
                'members: for (member, score) in &sets[first] {
                    let mut total = weighted(*score, first);
                    if total.is_nan() {
                        total = 0.0;
                    }
                    for &j in others {
                        match lookup[j].get(member) {
                            Some(&s) => combine(&mut total, weighted(s, j)),
                            None => continue 'members,
                        }
                    }
                    out.push((member.clone(), total));
                }
            }
        }
        SetOp::Diff => {
            let mut sets = sets.into_iter();
            let first = sets.next().unwrap_or_default();
            let minus: HashSet<Bytes> = sets.flatten().map(|(m, _)| m).collect();
            out = first
                .into_iter()
                .filter(|(m, _)| !minus.contains(m))
                .collect();
        }
    }
    Frame::Array(
        out.into_iter()
            .flat_map(|(member, score)| {
                [
                    Frame::Bulk(member),
                    Frame::Bulk(Bytes::from(format!("{score:e}"))),
                ]
            })
            .collect(),
    )
}

/// PFCOUNT over several keys, as Redis's `pfcountCommand` does it: a missing key is an empty
/// HyperLogLog, the first key that is not one (in key order) is the error.
fn merge_pfcount(replies: Vec<Frame>) -> Frame {
    let mut max = Box::new([0u8; crate::hll::REGISTERS]);
    for reply in replies {
        match reply {
            Frame::Null => {}
            Frame::Bulk(value) => {
                if let Err(e) = crate::hll::merge_max(&mut max, &value) {
                    return Frame::Error(Bytes::from_static(e.message().as_bytes()));
                }
            }
            err @ Frame::Error(_) => return err,
            _ => return unexpected("a string"),
        }
    }
    Frame::Integer(crate::hll::count(&max) as i64)
}

/// BITOP over the sources' values, as Redis computes it: the result is as long as the longest
/// value, the others count as zero bytes beyond their end.
fn merge_bitop(op: BitOp, replies: Vec<Frame>) -> Frame {
    let mut values = Vec::with_capacity(replies.len());
    for reply in replies {
        match reply {
            Frame::Bulk(v) => values.push(v),
            Frame::Null => values.push(Bytes::new()),
            _ => return unexpected("a string"),
        }
    }
    let len = values.iter().map(Bytes::len).max().unwrap_or(0);
    let byte = |v: &Bytes, i: usize| v.get(i).copied().unwrap_or(0);
    let result: Vec<u8> = (0..len)
        .map(|i| {
            let mut bytes = values.iter().map(|v| byte(v, i));
            let first = bytes.next().unwrap_or(0);
            match op {
                BitOp::And => bytes.fold(first, |acc, b| acc & b),
                BitOp::Or => bytes.fold(first, |acc, b| acc | b),
                BitOp::Xor => bytes.fold(first, |acc, b| acc ^ b),
                BitOp::Not => !first,
            }
        })
        .collect();
    Frame::Bulk(Bytes::from(result))
}

/// `ZUNION ... WITHSCORES` as pairs: RESP2 `[member, score, ...]` (scores as strings), RESP3
/// `[[member, score], ...]` (scores as doubles).
fn scored_members(reply: Frame) -> Option<Vec<(Bytes, f64)>> {
    let items = into_array(reply)?;
    let score = |f: Frame| f.as_f64();
    let mut out = Vec::with_capacity(items.len());
    let mut it = items.into_iter().peekable();
    while let Some(item) = it.next() {
        match item {
            Frame::Array(pair) => {
                let mut pair = pair.into_iter();
                let (Some(Frame::Bulk(m)), Some(s), None) = (pair.next(), pair.next(), pair.next())
                else {
                    return None;
                };
                out.push((m, score(s)?));
            }
            Frame::Bulk(m) => out.push((m, score(it.next()?)?)),
            _ => return None,
        }
    }
    Some(out)
}

/// A set member's bytes (checked to be a bulk string by the caller).
fn member(f: &Frame) -> Bytes {
    match f {
        Frame::Bulk(b) => b.clone(),
        _ => Bytes::new(),
    }
}

fn into_array(f: Frame) -> Option<Vec<Frame>> {
    match f {
        Frame::Array(items) | Frame::Set(items) => Some(items),
        _ => None,
    }
}

fn is_ok(f: &Frame) -> bool {
    matches!(f, Frame::Simple(s) if s.as_ref() == b"OK")
}

fn is_nil(f: &Frame) -> bool {
    matches!(f, Frame::Null | Frame::NullArray)
}

fn unexpected(what: &str) -> Frame {
    Frame::Error(Bytes::from(format!(
        "ERR Slotway: a cluster node did not answer with {what} as expected"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Request {
        Request::from_args(args.iter().map(|a| a.as_bytes()))
    }

    fn args(r: &Request) -> Vec<String> {
        r.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn same_slot_is_not_split() {
        assert!(split("mget", &req(&["MGET", "{a}1", "{a}2"])).is_none());
        assert!(split("get", &req(&["GET", "a"])).is_none());
    }

    #[test]
    fn mset_groups_pairs_by_slot_in_caller_order() {
        // The redis-rs example: foo and {foo}foo3 share a slot, foo2 does not.
        let s = split(
            "mset",
            &req(&["MSET", "foo", "bar", "foo2", "bar2", "{foo}foo3", "bar3"]),
        )
        .unwrap();
        assert_eq!(s.merge, Merge::AllOk);
        assert_eq!(s.parts.len(), 2);
        let mut all: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                vec!["MSET", "foo", "bar", "{foo}foo3", "bar3"],
                vec!["MSET", "foo2", "bar2"],
            ]
        );
        for (slot, r) in &s.parts {
            assert_eq!(*slot, Slot::for_key(r.arg(1).unwrap()));
        }
    }

    #[test]
    fn mget_merges_in_caller_order_with_duplicates_and_nils() {
        let r = req(&["MGET", "a", "b", "a", "c"]);
        let s = split("mget", &r).unwrap();
        // Answer each part with the key names themselves, "c" missing.
        let replies = s
            .parts
            .iter()
            .map(|(_, p)| {
                Frame::Array(
                    p.args()
                        .skip(1)
                        .map(|k| {
                            if k == b"c" {
                                Frame::Null
                            } else {
                                Frame::Bulk(Bytes::copy_from_slice(k))
                            }
                        })
                        .collect(),
                )
            })
            .collect();
        let merged = s.merge.merge(replies);
        let b = |s: &'static str| Frame::Bulk(Bytes::from_static(s.as_bytes()));
        assert_eq!(
            merged,
            Frame::Array(vec![b("a"), b("b"), b("a"), Frame::Null])
        );
    }

    #[test]
    fn set_commands_split_with_the_first_key_first() {
        // "foo" and "{foo}x" share a slot; "bar" and "baz" are elsewhere.
        let s = split("sdiff", &req(&["sdiff", "bar", "foo", "{bar}y", "baz"])).unwrap();
        assert_eq!(s.merge, Merge::Sets(SetOp::Diff));
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(
            parts,
            vec![
                vec!["SDIFF", "bar", "{bar}y"],
                vec!["SUNION", "foo"],
                vec!["SUNION", "baz"],
            ]
        );
        let s = split("sinter", &req(&["SINTER", "foo", "bar", "{foo}x"])).unwrap();
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(
            parts,
            vec![vec!["SINTER", "foo", "{foo}x"], vec!["SINTER", "bar"]]
        );
        assert!(split("sunion", &req(&["SUNION", "{a}1", "{a}2"])).is_none());
        assert_eq!(s.store, None);
    }

    #[test]
    fn intercard_reads_members_and_counts_up_to_the_limit() {
        let s = split(
            "zintercard",
            &req(&["ZINTERCARD", "3", "foo", "bar", "{foo}x", "LIMIT", "1"]),
        )
        .unwrap();
        assert_eq!(s.merge, Merge::InterCard { limit: 1 });
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(
            parts,
            vec![
                vec!["ZINTER", "2", "foo", "{foo}x"],
                vec!["ZINTER", "1", "bar"]
            ]
        );
        let b = |s: &'static str| Frame::Bulk(Bytes::from_static(s.as_bytes()));
        let two = || {
            vec![
                Frame::Array(vec![b("a"), b("b"), b("c")]),
                Frame::Array(vec![b("c"), b("a")]),
            ]
        };
        assert_eq!(s.merge.merge(two()), Frame::Integer(1));
        let s = split("sintercard", &req(&["SINTERCARD", "2", "foo", "bar"])).unwrap();
        assert_eq!(s.merge.merge(two()), Frame::Integer(2));
        // An option the proxy does not know: the node of the first slot says what is wrong.
        let s = split(
            "sintercard",
            &req(&["SINTERCARD", "2", "foo", "bar", "LIMIT", "-1"]),
        )
        .unwrap();
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(parts, vec![vec!["SINTERCARD", "1", "foo", "LIMIT", "-1"]]);
    }

    #[test]
    fn scored_stores_read_each_key_and_combine_like_redis() {
        let s = split(
            "zunionstore",
            &req(&[
                "ZUNIONSTORE",
                "d",
                "2",
                "foo",
                "bar",
                "WEIGHTS",
                "2",
                "inf",
                "AGGREGATE",
                "max",
            ]),
        )
        .unwrap();
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(
            parts,
            vec![
                vec!["ZUNION", "1", "foo", "WITHSCORES"],
                vec!["ZUNION", "1", "bar", "WITHSCORES"]
            ]
        );
        assert!(matches!(
            s.store,
            Some(Destination {
                kind: Written::SortedSet,
                ..
            })
        ));
        let b = |s: &str| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()));
        // RESP2 (flat, string scores) and RESP3 (pairs, doubles) replies.
        let foo = Frame::Array(vec![b("a"), b("1"), b("b"), b("0")]);
        let bar = Frame::Array(vec![
            Frame::Array(vec![b("b"), Frame::double(0.0)]),
            Frame::Array(vec![b("c"), Frame::double(-1.0)]),
        ]);
        let pairs = |f: Frame| match f {
            Frame::Array(items) => items
                .chunks(2)
                .map(|p| match (&p[0], &p[1]) {
                    (Frame::Bulk(m), Frame::Bulk(s)) => (
                        String::from_utf8_lossy(m).into_owned(),
                        std::str::from_utf8(s).unwrap().parse::<f64>().unwrap(),
                    ),
                    _ => panic!("not a pair"),
                })
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        // inf * 0 is NaN, which counts as 0; MAX keeps the larger.
        assert_eq!(
            pairs(s.merge.merge(vec![foo.clone(), bar.clone()])),
            vec![
                ("a".into(), 2.0),
                ("b".into(), 0.0),
                ("c".into(), f64::NEG_INFINITY)
            ]
        );
        let inter = Merge::Scored {
            op: SetOp::Inter,
            weights: vec![1.0, 1.0],
            aggregate: Aggregate::Sum,
        };
        assert_eq!(
            pairs(inter.merge(vec![foo.clone(), bar.clone()])),
            vec![("b".into(), 0.0)]
        );
        let diff = Merge::Scored {
            op: SetOp::Diff,
            weights: vec![1.0, 1.0],
            aggregate: Aggregate::Sum,
        };
        assert_eq!(pairs(diff.merge(vec![foo, bar])), vec![("a".into(), 1.0)]);
        // Options the proxy cannot read: the read-only form on the first key's node.
        let s = split(
            "zunionstore",
            &req(&["ZUNIONSTORE", "d", "2", "foo", "bar", "WITHSCORES"]),
        )
        .unwrap();
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(parts, vec![vec!["ZUNION", "2", "foo", "foo", "WITHSCORES"]]);
        assert_eq!(s.store, None);
        assert!(
            matches!(s.merge.merge(vec![Frame::Array(vec![])]), Frame::Error(e) if e.as_ref() == b"ERR syntax error")
        );
    }

    #[test]
    fn bitop_reads_each_source_and_pads_with_zero_bytes() {
        let s = split("bitop", &req(&["BITOP", "OR", "d", "foo", "bar"])).unwrap();
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(parts, vec![vec!["GET", "foo"], vec!["GET", "bar"]]);
        assert!(matches!(
            s.store,
            Some(Destination {
                kind: Written::String,
                ..
            })
        ));
        let v = |b: &'static [u8]| Frame::Bulk(Bytes::from_static(b));
        let merge = |op, replies| Merge::Bitop(op).merge(replies);
        assert_eq!(
            merge(BitOp::Or, vec![v(b"\x01\x02"), v(b"\x10")]),
            v(b"\x11\x02")
        );
        assert_eq!(
            merge(BitOp::And, vec![v(b"\xff\xff"), v(b"\x0f")]),
            v(b"\x0f\x00")
        );
        assert_eq!(
            merge(BitOp::Xor, vec![v(b"\xff"), Frame::Null, v(b"\x0f")]),
            v(b"\xf0")
        );
        assert_eq!(merge(BitOp::Not, vec![v(b"\x0f")]), v(b"\xf0"));
        assert_eq!(merge(BitOp::And, vec![Frame::Null, Frame::Null]), v(b""));
        // Argument errors are answered without asking a node, in Redis's words.
        for (cmd, why) in [
            (
                &["BITOP", "NAND", "d", "foo", "bar"][..],
                "ERR syntax error",
            ),
            (
                &["BITOP", "NOT", "d", "foo", "bar"][..],
                "ERR BITOP NOT must be called with a single source key.",
            ),
        ] {
            let s = split("bitop", &req(cmd)).unwrap();
            assert!(s.parts.is_empty());
            assert_eq!(
                s.merge.merge(vec![]),
                Frame::Error(Bytes::from_static(why.as_bytes()))
            );
        }
    }

    #[test]
    fn pfcount_reads_raw_values_and_reports_errors_in_key_order() {
        let s = split("pfcount", &req(&["PFCOUNT", "foo", "bar"])).unwrap();
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(parts, vec![vec!["GET", "foo"], vec!["GET", "bar"]]);
        assert!(split("pfcount", &req(&["PFCOUNT", "{a}1", "{a}2"])).is_none());
        let empty_sparse = Frame::Bulk(Bytes::from_static(
            b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0\x7f\xff",
        ));
        assert_eq!(
            s.merge.merge(vec![empty_sparse, Frame::Null]),
            Frame::Integer(0)
        );
        let wrongtype = Frame::Error(Bytes::from_static(b"WRONGTYPE Operation against a key"));
        let not_hll = Frame::Bulk(Bytes::from_static(b"hello"));
        let first = |f: Frame| match f {
            Frame::Error(e) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("{other:?}"),
        };
        assert!(
            first(s.merge.merge(vec![not_hll.clone(), wrongtype.clone()]))
                .contains("not a valid HyperLogLog")
        );
        assert!(first(s.merge.merge(vec![wrongtype, not_hll])).starts_with("WRONGTYPE Operation"));
    }

    #[test]
    fn store_forms_read_the_sources_then_name_the_destination() {
        // Sources in one slot, the destination in another: still split (one part).
        let s = split(
            "sinterstore",
            &req(&["SINTERSTORE", "bar", "{foo}1", "{foo}2"]),
        )
        .unwrap();
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(parts, vec![vec!["SINTER", "{foo}1", "{foo}2"]]);
        assert_eq!(
            s.store,
            Some(Destination {
                slot: Slot::for_key(b"bar"),
                key: Bytes::from_static(b"bar"),
                kind: Written::Set
            })
        );
        let s = split("sdiffstore", &req(&["SDIFFSTORE", "d", "foo", "bar"])).unwrap();
        assert_eq!(s.merge, Merge::Sets(SetOp::Diff));
        let parts: Vec<Vec<String>> = s.parts.iter().map(|(_, r)| args(r)).collect();
        assert_eq!(parts, vec![vec!["SDIFF", "foo"], vec!["SUNION", "bar"]]);
        // Everything in one slot: the node does it.
        assert!(split(
            "sunionstore",
            &req(&["SUNIONSTORE", "{a}d", "{a}1", "{a}2"])
        )
        .is_none());
    }

    #[test]
    fn set_merges_keep_first_seen_order_and_the_reply_type() {
        let b = |s: &'static str| Frame::Bulk(Bytes::from_static(s.as_bytes()));
        let set = |m: &[&'static str]| Frame::Set(m.iter().map(|s| b(s)).collect());
        let arr = |m: &[&'static str]| Frame::Array(m.iter().map(|s| b(s)).collect());
        let parts = || {
            vec![
                arr(&["a", "b", "c"]),
                arr(&["c", "d", "a"]),
                arr(&["a", "c", "e"]),
            ]
        };
        assert_eq!(
            Merge::Sets(SetOp::Union).merge(parts()),
            arr(&["a", "b", "c", "d", "e"])
        );
        assert_eq!(Merge::Sets(SetOp::Inter).merge(parts()), arr(&["a", "c"]));
        assert_eq!(Merge::Sets(SetOp::Diff).merge(parts()), arr(&["b"]));
        assert_eq!(
            Merge::Sets(SetOp::Inter).merge(vec![set(&["a", "b"]), set(&["b"])]),
            set(&["b"])
        );
        assert_eq!(
            Merge::Sets(SetOp::Inter).merge(vec![set(&["a"]), set(&[])]),
            set(&[])
        );
        let wrongtype = Frame::Error(Bytes::from_static(b"WRONGTYPE Operation"));
        assert_eq!(
            Merge::Sets(SetOp::Union).merge(vec![arr(&["a"]), wrongtype.clone()]),
            wrongtype
        );
        // Not a set's members: an error that says so, not a guess.
        let odd = Merge::Sets(SetOp::Union).merge(vec![arr(&["a"]), Frame::Integer(1)]);
        assert!(matches!(odd, Frame::Error(e) if e.starts_with(b"ERR Slotway")));
    }

    #[test]
    fn sum_and_errors() {
        let s = split("del", &req(&["DEL", "a", "b", "c"])).unwrap();
        assert_eq!(s.merge, Merge::Sum);
        assert_eq!(
            Merge::Sum.merge(vec![Frame::Integer(1), Frame::Integer(2)]),
            Frame::Integer(3)
        );
        let err = Frame::Error(Bytes::from_static(b"WRONGTYPE x"));
        assert_eq!(Merge::Sum.merge(vec![Frame::Integer(1), err.clone()]), err);
        assert!(matches!(
            Merge::Sum.merge(vec![Frame::Null]),
            Frame::Error(_)
        ));
    }

    #[test]
    fn xread_splits_by_slot_and_merges_in_caller_order() {
        let r = req(&[
            "XREAD", "COUNT", "2", "STREAMS", "a", "b", "c", "0", "1", "2",
        ]);
        let s = split("xread", &r).unwrap();
        assert!(s.parts.len() >= 2);
        for (_, p) in &s.parts {
            let args = args(p);
            assert_eq!(&args[..4], ["XREAD", "COUNT", "2", "STREAMS"]);
            assert_eq!((args.len() - 4) % 2, 0);
        }
        let entry = |k: &'static str| {
            Frame::Array(vec![
                Frame::Bulk(Bytes::from_static(k.as_bytes())),
                Frame::Array(vec![]),
            ])
        };
        // Parts answer out of order; streams come back as asked: a, c.
        let merged = s.merge.merge(vec![
            Frame::Array(vec![entry("c")]),
            Frame::Array(vec![entry("a")]),
            Frame::NullArray,
        ]);
        assert_eq!(merged, Frame::Array(vec![entry("a"), entry("c")]));
        assert_eq!(
            s.merge.merge(vec![Frame::NullArray, Frame::Null]),
            Frame::NullArray
        );
        assert!(split(
            "xread",
            &req(&["XREAD", "BLOCK", "0", "STREAMS", "a", "b", "0", "0"])
        )
        .is_none());
    }

    #[test]
    fn other_merges() {
        let ok = || Frame::Simple(Bytes::from_static(b"OK"));
        assert_eq!(Merge::AllOk.merge(vec![ok(), ok()]), ok());
        let error = |e: &'static str| Frame::Error(Bytes::from_static(e.as_bytes()));
        let notbusy = || error("NOTBUSY No scripts in execution right now.");
        let unkillable = error("UNKILLABLE Sorry the script already executed write commands");
        assert_eq!(Merge::OneOk.merge(vec![notbusy(), ok(), notbusy()]), ok());
        assert_eq!(Merge::OneOk.merge(vec![notbusy(), notbusy()]), notbusy());
        assert_eq!(
            Merge::OneOk.merge(vec![notbusy(), unkillable.clone()]),
            unkillable
        );
        assert_eq!(
            Merge::AndArrays.merge(vec![
                Frame::Array(vec![Frame::Integer(1), Frame::Integer(1)]),
                Frame::Array(vec![Frame::Integer(1), Frame::Integer(0)]),
            ]),
            Frame::Array(vec![Frame::Integer(1), Frame::Integer(0)])
        );
        assert_eq!(
            Merge::Min.merge(vec![Frame::Integer(5), Frame::Integer(3)]),
            Frame::Integer(3)
        );
        let k = Frame::Bulk(Bytes::from_static(b"k"));
        assert_eq!(
            Merge::AnyNonNil { start: 1 }.merge(vec![k.clone(), Frame::Null]),
            k
        );
        assert_eq!(
            Merge::Concat.merge(vec![
                Frame::Array(vec![k.clone()]),
                Frame::Array(vec![k.clone()])
            ]),
            Frame::Array(vec![k.clone(), k])
        );
    }
}
