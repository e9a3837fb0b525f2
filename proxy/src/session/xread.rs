//! XREAD with BLOCK, and XREADGROUP, over streams of several slots, answered as one node
//! would: every stream that has entries now is in the reply; if none has and BLOCK was given,
//! the client blocks until any stream gets one, or the timeout.
//!
//! | stage | sends | next |
//! |-------|-------|------|
//! | check (XREADGROUP) | `XINFO GROUPS key` for every stream (pooled connections) | the first stream, in the caller's order, that is not a stream with the group, or whose ID is not valid: its error, as the node words it; else probe |
//! | probe | the command without BLOCK, split by slot (pooled connections) | any entries: answer them all, merged; none: block (or nil without BLOCK) |
//! | block | the command with BLOCK per slot group, each on a connection of the client's own | the first reply with entries ends it: the others are unblocked (`CLIENT UNBLOCK`, repeated until they answer); entries any of them returned meanwhile are merged into the answer |
//!
//! One node checks every stream, its group and its ID before it delivers anything; the check
//! stage does the same, so a stream without the group does not leave the entries the other
//! slots delivered pending, unseen by the client. Nothing is lost: every request sent is
//! waited for, and whatever entries come back (which XREADGROUP has delivered to the consumer)
//! are in the answer, streams in the caller's order.

use bytes::Bytes;
use protocol::{Frame, Request};
use routing::split::{self, Merge};
use routing::Slot;

use super::pop::decode;
use super::{encode, Entry, Pending, Session};
use crate::dispatch::Target;
use crate::error::ProxyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Check,
    Probe,
    Block,
}

/// What XREADGROUP names: its group and, in the caller's order, each stream's key and ID.
#[derive(Debug)]
struct GroupCheck {
    group: Bytes,
    streams: Vec<(Bytes, Bytes)>,
}

/// A cross-slot stream read (XREAD with BLOCK, XREADGROUP) in progress.
#[derive(Debug)]
pub(super) struct Read {
    /// The command table name, for mapping key names back.
    name: &'static str,
    /// Per slot group: the request without BLOCK, and with it (if BLOCK was given).
    groups: Vec<(Pending, Option<Request>)>,
    /// XREADGROUP: what the check stage checks.
    check: Option<GroupCheck>,
    merge: Merge,
    stage: Stage,
    /// The current stage's requests and their replies.
    parts: Vec<(Pending, Option<Bytes>)>,
    /// A blocked part answered with entries: the rest are being unblocked.
    won: bool,
}

// === impl Read ===

impl Read {
    /// Reads XREAD with BLOCK or XREADGROUP (table name `name`) over streams of several slots.
    pub(super) fn parse(name: &'static str, req: &Request) -> Result<Read, ProxyError> {
        let args: Vec<&[u8]> = req.args().collect();
        let streams_at = args
            .iter()
            .position(|a| a.eq_ignore_ascii_case(b"streams"))
            .ok_or(ProxyError::CrossSlot(name))?;
        let option = |word: &[u8]| {
            args[..streams_at]
                .iter()
                .position(|a| a.eq_ignore_ascii_case(word))
        };
        let block_at = option(b"block");
        if let Some(at) = block_at {
            let timeout = args.get(at + 1).copied().unwrap_or_default();
            match std::str::from_utf8(timeout)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
            {
                Some(t) if t < 0 => {
                    return Err(ProxyError::Other("ERR timeout is negative".to_string()))
                }
                Some(_) => {}
                None => {
                    return Err(ProxyError::Other(
                        "ERR timeout is not an integer or out of range".to_string(),
                    ))
                }
            }
        } else if name == "xread" {
            return Err(ProxyError::CrossSlot(name));
        }
        let check = match option(b"group") {
            Some(at) if name == "xreadgroup" => {
                let listed = &args[streams_at + 1..];
                if !listed.len().is_multiple_of(2) {
                    // Redis 7's words, for XREAD and XREADGROUP alike.
                    return Err(ProxyError::Other(
                        "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' \
                         must be specified."
                            .to_string(),
                    ));
                }
                let (keys, ids) = listed.split_at(listed.len() / 2);
                Some(GroupCheck {
                    group: Bytes::copy_from_slice(args.get(at + 1).copied().unwrap_or_default()),
                    streams: keys
                        .iter()
                        .zip(ids)
                        .map(|(k, id)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(id)))
                        .collect(),
                })
            }
            _ => None,
        };
        let mut without: Vec<&[u8]> = args.clone();
        if let Some(at) = block_at {
            without.drain(at..at + 2);
        }
        let timeout = block_at.map(|at| args.get(at + 1).copied().unwrap_or_default());
        let split =
            split::split(name, &Request::from_args(without)).ok_or(ProxyError::CrossSlot(name))?;
        let groups = split
            .parts
            .into_iter()
            .map(|(slot, part)| {
                // The same part with `BLOCK ms` before STREAMS.
                let blocking = timeout.map(|timeout| {
                    let mut args: Vec<&[u8]> = part.args().collect();
                    let at = args
                        .iter()
                        .position(|a| a.eq_ignore_ascii_case(b"streams"))
                        .unwrap_or(args.len());
                    args.splice(at..at, [b"BLOCK".as_slice(), timeout]);
                    Request::from_args(args)
                });
                (Pending::new(part, Target::Slot(slot)), blocking)
            })
            .collect();
        Ok(Read {
            name,
            groups,
            check,
            merge: split.merge,
            stage: Stage::Probe,
            parts: Vec::new(),
            won: false,
        })
    }

    /// The pending request of part `part`, if not answered yet.
    pub(super) fn pending(&mut self, part: u32) -> Option<&mut Pending> {
        match self.parts.get_mut(part as usize)? {
            (p, None) => Some(p),
            _ => None,
        }
    }

    /// The target and own-connection lane of part `part`, if it lost the race and has not
    /// answered yet.
    pub(super) fn cancelling_lane(&self, part: u32) -> Option<(Target, u32)> {
        match self.parts.get(part as usize)? {
            (p, None) if self.stage == Stage::Block && self.won => Some((p.target, p.lane?)),
            _ => None,
        }
    }
}

// === impl Session: cross-slot blocking reads ===

impl Session {
    /// Starts read `seq` (at the head of the queue).
    pub(super) fn read_begin(&mut self, seq: u64) {
        let checks = matches!(
            self.index_of(seq).and_then(|idx| self.queue.get(idx)),
            Some(Entry::Read(read)) if read.check.is_some()
        );
        self.read_stage(seq, if checks { Stage::Check } else { Stage::Probe });
    }

    fn read_stage(&mut self, seq: u64, stage: Stage) {
        let Some(idx) = self.index_of(seq) else {
            return;
        };
        let Some(Entry::Read(read)) = self.queue.get_mut(idx) else {
            return;
        };
        read.stage = stage;
        read.parts = match (stage, &read.check) {
            (Stage::Check, Some(check)) => check
                .streams
                .iter()
                .map(|(key, _)| {
                    let req = Request::from_args([b"XINFO".as_slice(), b"GROUPS", key]);
                    (Pending::new(req, Target::Slot(Slot::for_key(key))), None)
                })
                .collect(),
            _ => read
                .groups
                .iter()
                .enumerate()
                .map(|(g, (probe, blocking))| {
                    let mut p = Pending::new(probe.req.clone(), probe.target);
                    if let (Stage::Block, Some(blocking)) = (stage, blocking) {
                        p.req = blocking.clone();
                        // Lane 0 is the client's single-slot blocking and WATCH connection.
                        p.lane = Some(g as u32 + 1);
                    }
                    (p, None)
                })
                .collect(),
        };
        let n = read.parts.len();
        if stage == Stage::Block {
            self.meter.block(seq);
        }
        for part in 0..n {
            self.send(seq, part as u32, None);
        }
    }

    /// A reply for part `part` of the read at queue position `idx`.
    pub(super) fn read_part_done(&mut self, seq: u64, idx: usize, part: u32, raw: Bytes) {
        let Some(Entry::Read(read)) = self.queue.get_mut(idx) else {
            return;
        };
        let Some(slot @ (_, None)) = read.parts.get_mut(part as usize) else {
            return;
        };
        let has_entries = !matches!(
            decode(&raw),
            Frame::Null | Frame::NullArray | Frame::Error(_)
        );
        let is_error = raw.first() == Some(&b'-');
        slot.1 = Some(raw);
        let mut losers = Vec::new();
        if read.stage == Stage::Block && !read.won && (has_entries || is_error) {
            read.won = true;
            losers = (0..read.parts.len() as u32)
                .filter(|&i| read.parts[i as usize].1.is_none())
                .collect();
        }
        if read.parts.iter().any(|(_, r)| r.is_none()) {
            for loser in losers {
                self.unblock(seq, loser);
            }
            return;
        }
        let replies: Vec<Frame> = read
            .parts
            .iter_mut()
            .map(|(_, r)| decode(&r.take().unwrap_or_default()))
            .collect();
        if read.stage == Stage::Check {
            return match read.check.as_ref().and_then(|c| c.refusal(replies)) {
                Some(err) => self.read_answer(idx, err),
                None => self.read_stage(seq, Stage::Probe),
            };
        }
        let any_entries = replies
            .iter()
            .any(|f| !matches!(f, Frame::Null | Frame::NullArray | Frame::Error(_)));
        // Entries some node has delivered (XREADGROUP) must reach the client even if another
        // part failed; without any, the first error is the answer. XREAD delivers nothing: as
        // on one node, an error (a key that is not a stream) is the answer.
        let replies = if any_entries && read.name != "xread" {
            replies
                .into_iter()
                .filter(|f| !matches!(f, Frame::Error(_)))
                .collect()
        } else {
            replies
        };
        let merged = read.merge.merge(replies);
        let blocks = read.groups.iter().any(|(_, blocking)| blocking.is_some());
        let nothing_yet = matches!(
            (&merged, read.stage),
            (Frame::NullArray | Frame::Null, Stage::Probe)
        );
        if nothing_yet && blocks {
            return self.read_stage(seq, Stage::Block);
        }
        self.read_answer(idx, merged);
    }

    /// Answers the read at queue position `idx` with `frame` (key names mapped back).
    fn read_answer(&mut self, idx: usize, frame: Frame) {
        let Some(Entry::Read(read)) = self.queue.get(idx) else {
            return;
        };
        let names = &self.shared.names;
        let frame = crate::names::restore_in_reply(names, self.client.db, read.name, frame);
        self.queue[idx] = Entry::Done(encode(&frame, self.client.version));
    }
}

// === impl GroupCheck ===

impl GroupCheck {
    /// The error one node would answer before delivering anything, given each stream's
    /// `XINFO GROUPS` reply (in the caller's order), if any: per stream in order, a key that is
    /// not a stream, a stream without the group, then the stream's ID.
    fn refusal(&self, replies: Vec<Frame>) -> Option<Frame> {
        for ((key, id), reply) in self.streams.iter().zip(replies) {
            let has_group = match reply {
                Frame::Error(e) if e.starts_with(b"ERR no such key") => false,
                err @ Frame::Error(_) => return Some(err),
                Frame::Array(groups) => groups.iter().any(|g| group_name(g) == Some(&self.group)),
                _ => false,
            };
            if !has_group {
                return Some(Frame::Error(Bytes::from(
                    [
                        b"NOGROUP No such key '".as_slice(),
                        key,
                        b"' or consumer group '",
                        &self.group,
                        b"' in XREADGROUP with GROUP option",
                    ]
                    .concat(),
                )));
            }
            if let Some(err) = id_refusal(id) {
                return Some(Frame::Error(Bytes::from_static(err)));
            }
        }
        None
    }
}

/// The `name` of one group in an `XINFO GROUPS` reply (a map in RESP3, pairs in an array in
/// RESP2).
fn group_name(group: &Frame) -> Option<&Bytes> {
    let is_name =
        |k: &Frame| matches!(k, Frame::Bulk(k) | Frame::Simple(k) if k.as_ref() == b"name");
    match group {
        Frame::Map(pairs) => pairs.iter().find(|(k, _)| is_name(k)).map(|(_, v)| v),
        Frame::Array(flat) => flat
            .chunks(2)
            .find(|kv| is_name(&kv[0]))
            .and_then(|kv| kv.get(1)),
        _ => None,
    }
    .and_then(|v| match v {
        Frame::Bulk(name) | Frame::Simple(name) => Some(name),
        _ => None,
    })
}

/// Redis's error for an XREADGROUP ID that is neither `>` nor a strict stream ID, if it is one
/// of those. A strict ID is `ms` or `ms-seq` (split at the first `-`, at most 127 bytes), each
/// read by Redis's `string2ull`.
fn id_refusal(id: &[u8]) -> Option<&'static [u8]> {
    const DOLLAR: &[u8] = b"ERR The $ ID is meaningless in the context of XREADGROUP: you want \
        to read the history of this consumer by specifying a proper ID, or use the > ID to get \
        new messages. The $ ID would just return an empty result set.";
    const INVALID: &[u8] = b"ERR Invalid stream ID specified as stream command argument";
    let valid = match id {
        b">" => return None,
        b"$" => return Some(DOLLAR),
        id if id.len() > 127 => false,
        id => match memchr::memchr(b'-', id) {
            Some(dash) => string2ull(&id[..dash]) && string2ull(&id[dash + 1..]),
            None => string2ull(id),
        },
    };
    (!valid).then_some(INVALID)
}

/// Redis's `string2ull`: a `long long` written strictly ([`routing::keys::string2ll`]) must not
/// be negative; anything else is what C's `strtoull` reads whole (leading white space, one
/// sign, digits, no overflow).
fn string2ull(s: &[u8]) -> bool {
    if let Some(n) = routing::keys::string2ll(s) {
        return n >= 0;
    }
    let start = s
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        .unwrap_or(s.len());
    let t = &s[start..];
    let t = t
        .strip_prefix(b"+")
        .or_else(|| t.strip_prefix(b"-"))
        .unwrap_or(t);
    !t.is_empty()
        && t.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(t).is_ok_and(|t| t.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_as_redis_checks_them() {
        // As redis-server 7 answers them (strtoull reads " 1", "+1", "01", and "-0" after the
        // first dash).
        let valid = [
            &b">"[..],
            b"0",
            b"0-0",
            b"5",
            b"1-1",
            b"01",
            b"+1",
            b" 1",
            b"1--0",
            b"18446744073709551615-18446744073709551615",
        ];
        for ok in valid {
            assert_eq!(id_refusal(ok), None, "{:?}", String::from_utf8_lossy(ok));
        }
        let invalid = [
            &b"-"[..],
            b"+",
            b"",
            b"1-x",
            b"x",
            b"1-",
            b"-1",
            b"-0",
            b"1--2",
            b"1 ",
            b"18446744073709551616",
        ];
        for bad in invalid {
            assert!(
                id_refusal(bad).is_some(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(id_refusal(b"$")
            .unwrap()
            .starts_with(b"ERR The $ ID is meaningless"));
    }
}
