//! XREAD and XREADGROUP with BLOCK over streams of several slots, answered as one node would:
//! every stream that has entries now is in the reply; if none has, the client blocks until any
//! stream gets one, or the timeout.
//!
//! | stage | sends | next |
//! |-------|-------|------|
//! | probe | the command without BLOCK, split by slot (pooled connections) | any entries: answer them all, merged; none: block |
//! | block | the command with BLOCK per slot group, each on a connection of the client's own | the first reply with entries ends it: the others are unblocked (`CLIENT UNBLOCK`, repeated until they answer); entries any of them returned meanwhile are merged into the answer |
//!
//! Nothing is lost: every request sent is waited for, and whatever entries come back (which
//! XREADGROUP has delivered to the consumer) are in the answer, streams in the caller's order.

use bytes::Bytes;
use protocol::{Frame, Request};
use routing::split::{self, Merge};

use super::pop::decode;
use super::{encode, Entry, Pending, Session};
use crate::dispatch::Target;
use crate::error::ProxyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Probe,
    Block,
}

/// A cross-slot blocking stream read in progress.
#[derive(Debug)]
pub(super) struct Read {
    /// The command table name, for mapping key names back.
    name: &'static str,
    /// Per slot group: the request without BLOCK, and with it.
    groups: Vec<(Pending, Request)>,
    merge: Merge,
    stage: Stage,
    /// The current stage's requests and their replies.
    parts: Vec<(Pending, Option<Bytes>)>,
    /// A blocked part answered with entries: the rest are being unblocked.
    won: bool,
}

// === impl Read ===

impl Read {
    /// Reads XREAD/XREADGROUP (table name `name`) with BLOCK over streams of several slots.
    pub(super) fn parse(name: &'static str, req: &Request) -> Result<Read, ProxyError> {
        let args: Vec<&[u8]> = req.args().collect();
        let streams_at = args
            .iter()
            .position(|a| a.eq_ignore_ascii_case(b"streams"))
            .ok_or(ProxyError::CrossSlot(name))?;
        let block_at = args[..streams_at]
            .iter()
            .position(|a| a.eq_ignore_ascii_case(b"block"))
            .ok_or(ProxyError::CrossSlot(name))?;
        let timeout = args.get(block_at + 1).copied().unwrap_or_default();
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
        let mut without: Vec<&[u8]> = args.clone();
        without.drain(block_at..block_at + 2);
        let split =
            split::split(name, &Request::from_args(without)).ok_or(ProxyError::CrossSlot(name))?;
        let groups = split
            .parts
            .into_iter()
            .map(|(slot, part)| {
                // The same part with `BLOCK ms` before STREAMS.
                let mut args: Vec<&[u8]> = part.args().collect();
                let at = args
                    .iter()
                    .position(|a| a.eq_ignore_ascii_case(b"streams"))
                    .unwrap_or(args.len());
                args.splice(at..at, [b"BLOCK".as_slice(), timeout]);
                let blocking = Request::from_args(args);
                (Pending::new(part, Target::Slot(slot)), blocking)
            })
            .collect();
        Ok(Read {
            name,
            groups,
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
        self.read_stage(seq, Stage::Probe);
    }

    fn read_stage(&mut self, seq: u64, stage: Stage) {
        let Some(idx) = self.index_of(seq) else {
            return;
        };
        let Some(Entry::Read(read)) = self.queue.get_mut(idx) else {
            return;
        };
        read.stage = stage;
        read.parts = read
            .groups
            .iter()
            .enumerate()
            .map(|(g, (probe, blocking))| {
                let mut p = Pending::new(probe.req.clone(), probe.target);
                if stage == Stage::Block {
                    p.req = blocking.clone();
                    // Lane 0 is the client's single-slot blocking and WATCH connection.
                    p.lane = Some(g as u32 + 1);
                }
                (p, None)
            })
            .collect();
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
        let nothing_yet = matches!(
            (&merged, read.stage),
            (Frame::NullArray | Frame::Null, Stage::Probe)
        );
        if nothing_yet {
            return self.read_stage(seq, Stage::Block);
        }
        let frame =
            crate::names::restore_reply(&self.shared.names, self.client.db, read.name, merged);
        self.queue[idx] = Entry::Done(encode(&frame, self.client.version));
    }
}
