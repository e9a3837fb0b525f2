//! BLPOP, BRPOP, BZPOPMIN and BZPOPMAX whose keys span slots, answered as one node would: the
//! first key in argument order that has an element wins, with its real name; otherwise the
//! client blocks until any key gets one, or the timeout.
//!
//! Stages of one such request:
//!
//! | stage | sends | next |
//! |-------|-------|------|
//! | probe | `EXISTS key` for every key, in parallel | take the first existing key; none: block |
//! | take  | `RPOP`/`LPOP`/`ZPOPMIN`/`ZPOPMAX` of that key | element: answer; nil (someone was faster): probe again, at most 3 times, then block |
//! | block | the blocking pop per slot group, each on a connection of the client's own | first element wins; the others are unblocked (`CLIENT UNBLOCK`, repeated until they answer) and an element any of them popped meanwhile is pushed back where it came from |
//!
//! So no element is lost or delivered twice: every pop that was sent is waited for, and what
//! a loser took goes back to the same end of the same key.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};
use routing::Slot;

use super::{encode, Entry, Pending, Session};
use crate::backend::Job;
use crate::dispatch::Target;
use crate::reply::{Delivery, Reply, ReplyTo};
use crate::topology::NodePool;

/// Probe/take rounds before blocking.
const MAX_ROUNDS: u32 = 3;
/// How often a loser of the race is told again to stop blocking.
const UNBLOCK_EVERY: Duration = Duration::from_millis(100);

/// Which pop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PopKind {
    Left,
    Right,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Probe,
    Take(usize),
    Block,
}

/// A cross-slot blocking pop in progress.
#[derive(Debug)]
pub(super) struct Pop {
    kind: PopKind,
    /// Stored key names, in argument order.
    keys: Vec<Bytes>,
    timeout: Bytes,
    stage: Stage,
    /// The requests of the current stage: each with its reply once in, and (block stage) the
    /// indexes of its keys.
    parts: Vec<(Pending, Option<Bytes>, Vec<usize>)>,
    rounds: u32,
    /// The answer, once known (block stage: the winner).
    answer: Option<Frame>,
}

// === impl PopKind ===

impl PopKind {
    pub(super) fn of(name: &str) -> Option<PopKind> {
        Some(match name {
            "blpop" => PopKind::Left,
            "brpop" => PopKind::Right,
            "bzpopmin" => PopKind::Min,
            "bzpopmax" => PopKind::Max,
            _ => return None,
        })
    }

    fn blocking(self) -> &'static [u8] {
        match self {
            PopKind::Left => b"BLPOP",
            PopKind::Right => b"BRPOP",
            PopKind::Min => b"BZPOPMIN",
            PopKind::Max => b"BZPOPMAX",
        }
    }

    fn take(self) -> &'static [u8] {
        match self {
            PopKind::Left => b"LPOP",
            PopKind::Right => b"RPOP",
            PopKind::Min => b"ZPOPMIN",
            PopKind::Max => b"ZPOPMAX",
        }
    }

    /// The command that puts back what a pop took: the same end of the same key.
    fn push_back(self, key: &[u8], popped: &[Frame]) -> Option<Request> {
        let bulk = |f: &Frame| match f {
            Frame::Bulk(b) => Some(b.clone()),
            Frame::Double(d) => Some(Bytes::from(
                protocol::format_double(*d).as_str().to_string(),
            )),
            _ => None,
        };
        match self {
            PopKind::Left | PopKind::Right => {
                let value = bulk(popped.first()?)?;
                let cmd: &[u8] = if self == PopKind::Left {
                    b"LPUSH"
                } else {
                    b"RPUSH"
                };
                Some(Request::from_args([cmd, key, &value]))
            }
            PopKind::Min | PopKind::Max => {
                let member = bulk(popped.first()?)?;
                let score = bulk(popped.get(1)?)?;
                Some(Request::from_args([
                    b"ZADD".as_slice(),
                    key,
                    &score,
                    &member,
                ]))
            }
        }
    }
}

// === impl Session: cross-slot pops ===

impl Session {
    /// Starts a blocking pop whose keys (already stored names) span slots.
    pub(super) fn start_pop(&mut self, kind: PopKind, req: &Request) {
        let n = req.len();
        let keys = (1..n - 1).filter_map(|i| req.arg_bytes(i)).collect();
        let timeout = req.arg_bytes(n - 1).unwrap_or_default();
        let seq = self.next_seq();
        self.queue.push_back(Entry::Pop(Box::new(Pop {
            kind,
            keys,
            timeout,
            stage: Stage::Probe,
            parts: Vec::new(),
            rounds: 0,
            answer: None,
        })));
        self.pop_stage(seq, Stage::Probe);
    }

    fn pop_mut(&mut self, seq: u64) -> Option<(usize, &mut Pop)> {
        let idx = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        match self.queue.get_mut(idx)? {
            Entry::Pop(p) => Some((idx, p)),
            _ => None,
        }
    }

    /// Enters `stage`: builds its requests and sends them.
    fn pop_stage(&mut self, seq: u64, stage: Stage) {
        let Some((_, pop)) = self.pop_mut(seq) else {
            return;
        };
        pop.stage = stage;
        let slot = |k: &Bytes| Slot::for_key(k);
        pop.parts = match stage {
            Stage::Probe => pop
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let req = Request::from_args([b"EXISTS".as_slice(), k]);
                    (Pending::new(req, Target::Slot(slot(k))), None, vec![i])
                })
                .collect(),
            Stage::Take(i) => {
                let k = &pop.keys[i];
                let req = Request::from_args([pop.kind.take(), k]);
                vec![(Pending::new(req, Target::Slot(slot(k))), None, vec![i])]
            }
            Stage::Block => {
                let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
                for (i, k) in pop.keys.iter().enumerate() {
                    let s = slot(k);
                    match groups.iter_mut().find(|(g, _)| *g == s) {
                        Some((_, ks)) => ks.push(i),
                        None => groups.push((s, vec![i])),
                    }
                }
                groups
                    .into_iter()
                    .enumerate()
                    .map(|(g, (s, ks))| {
                        let mut args: Vec<&[u8]> = vec![pop.kind.blocking()];
                        args.extend(ks.iter().map(|&i| pop.keys[i].as_ref()));
                        args.push(&pop.timeout);
                        let mut p = Pending::new(Request::from_args(args), Target::Slot(s));
                        // Lane 0 is the client's single-slot blocking and WATCH connection.
                        p.lane = Some(g as u32 + 1);
                        (p, None, ks)
                    })
                    .collect()
            }
        };
        let n = pop.parts.len();
        if stage == Stage::Block {
            // Counted as blocked until answered or gone (the meter undoes it either way).
            self.meter.block(seq);
        }
        for part in 0..n {
            self.send(seq, part as u32, None);
        }
    }

    /// The pending request of part `part` of pop `seq`, if not answered yet.
    pub(super) fn pop_pending(&mut self, seq: u64, part: u32) -> Option<&mut Pending> {
        let (_, pop) = self.pop_mut(seq)?;
        match pop.parts.get_mut(part as usize)? {
            (p, None, _) => Some(p),
            _ => None,
        }
    }

    /// True if part `part` of pop `seq` lost the race and has not answered yet: a timer for it
    /// means "tell it again to stop blocking".
    pub(super) fn pop_is_cancelling(&mut self, seq: u64, part: u32) -> bool {
        self.pop_mut(seq).is_some_and(|(_, pop)| {
            pop.stage == Stage::Block
                && pop.answer.is_some()
                && matches!(pop.parts.get(part as usize), Some((_, None, _)))
        })
    }

    /// Sends `CLIENT UNBLOCK` for part `part`'s connection, and checks again later.
    pub(super) fn pop_unblock(&mut self, seq: u64, part: u32) {
        let Some((_, pop)) = self.pop_mut(seq) else {
            return;
        };
        let Some((pending, None, _)) = pop.parts.get(part as usize) else {
            return;
        };
        let (target, lane) = (pending.target, pending.lane.unwrap_or(0));
        if let Some(pool) = self.resolve(target) {
            if let Some(id) = self.dedicated_conn(&pool, lane).node_client_id() {
                let req = Request::from_args([
                    b"CLIENT".as_slice(),
                    b"UNBLOCK",
                    id.to_string().as_bytes(),
                ]);
                send_and_forget(&pool, self.client.version, self.client.id, req);
            }
        }
        let queue = self.replies.clone();
        tokio::spawn(async move {
            tokio::time::sleep(UNBLOCK_EVERY).await;
            queue.push(Delivery {
                seq,
                part,
                reply: Reply::Retry,
            });
        });
    }

    /// A reply for part `part` of the pop at queue position `idx`.
    pub(super) fn pop_part_done(&mut self, seq: u64, idx: usize, part: u32, raw: Bytes) {
        let Some(Entry::Pop(pop)) = self.queue.get_mut(idx) else {
            return;
        };
        let Some(slot) = pop.parts.get_mut(part as usize) else {
            return;
        };
        slot.1 = Some(raw.clone());
        let frame = decode(&raw);
        match pop.stage {
            Stage::Probe => {
                if pop.parts.iter().any(|(_, r, _)| r.is_none()) {
                    return;
                }
                let replies: Vec<Frame> = pop
                    .parts
                    .iter()
                    .map(|(_, r, _)| decode(r.as_deref().unwrap_or_default()))
                    .collect();
                if let Some(err) = replies.iter().find(|f| matches!(f, Frame::Error(_))) {
                    return self.pop_answer(idx, err.clone());
                }
                match replies
                    .iter()
                    .position(|f| matches!(f, Frame::Integer(n) if *n > 0))
                {
                    Some(i) => self.pop_stage(seq, Stage::Take(i)),
                    None => self.pop_stage(seq, Stage::Block),
                }
            }
            Stage::Take(i) => {
                let key = pop.keys[i].clone();
                if matches!(frame, Frame::Error(_)) {
                    return self.pop_answer(idx, frame);
                }
                match taken(key, frame) {
                    Some(items) => self.pop_answer(idx, Frame::Array(items)),
                    None => {
                        pop.rounds += 1;
                        let next = if pop.rounds < MAX_ROUNDS {
                            Stage::Probe
                        } else {
                            Stage::Block
                        };
                        self.pop_stage(seq, next);
                    }
                }
            }
            Stage::Block => {
                let popped = matches!(&frame, Frame::Array(items) if !items.is_empty());
                let kind = pop.kind;
                let mut losers = Vec::new();
                let mut put_back = None;
                if pop.answer.is_some() {
                    if let (true, Frame::Array(items)) = (popped, &frame) {
                        // Lost the race after taking an element: put it back where it was.
                        if let Some(Frame::Bulk(key)) = items.first() {
                            put_back = kind.push_back(key, &items[1..]).map(|r| (key.clone(), r));
                        }
                    }
                } else if popped || matches!(frame, Frame::Error(_)) {
                    pop.answer = Some(frame);
                    losers = pop
                        .parts
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, r, _))| r.is_none())
                        .map(|(i, _)| i as u32)
                        .collect();
                }
                let finished = pop.parts.iter().all(|(_, r, _)| r.is_some());
                let answer = if finished {
                    Some(pop.answer.take().unwrap_or(Frame::NullArray))
                } else {
                    None
                };
                if let Some((key, req)) = put_back {
                    if let Some(pool) = self.resolve(Target::Slot(Slot::for_key(&key))) {
                        send_and_forget(&pool, self.client.version, self.client.id, req);
                    }
                }
                for loser in losers {
                    self.pop_unblock(seq, loser);
                }
                if let Some(answer) = answer {
                    self.pop_answer(idx, answer);
                }
            }
        }
    }

    /// Answers the pop at queue position `idx` with `frame` (key names mapped back).
    fn pop_answer(&mut self, idx: usize, frame: Frame) {
        let frame = match frame {
            Frame::Array(_) => {
                crate::names::restore_reply(&self.shared.names, self.client.db, "brpop", frame)
            }
            other => other,
        };
        if let Some(entry) = self.queue.get_mut(idx) {
            *entry = Entry::Done(encode(&frame, self.client.version));
        }
    }
}

/// The reply to a take (`RPOP key`, `ZPOPMIN key`) as a blocking pop's reply, or `None` if
/// the key was empty.
fn taken(key: Bytes, frame: Frame) -> Option<Vec<Frame>> {
    let mut out = vec![Frame::Bulk(key)];
    match frame {
        Frame::Bulk(v) => out.push(Frame::Bulk(v)),
        Frame::Array(items) if items.len() >= 2 => out.extend(items.into_iter().take(2)),
        Frame::Array(items) if items.len() == 1 => match items.into_iter().next() {
            Some(Frame::Array(pair)) if pair.len() == 2 => out.extend(pair),
            _ => return None,
        },
        _ => return None,
    }
    Some(out)
}

fn decode(raw: &[u8]) -> Frame {
    let mut buf = BytesMut::from(raw);
    match protocol::decode(&mut buf, &Limits::default()) {
        Ok(Some(f)) => f,
        _ => Frame::Error(Bytes::from_static(
            b"ERR Slotway: unreadable reply from a cluster node",
        )),
    }
}

/// Sends a request whose reply nobody needs on the client's pooled connection to `pool`.
fn send_and_forget(pool: &Arc<NodePool>, version: protocol::Version, client: u64, req: Request) {
    let (tx, _rx) = tokio::sync::oneshot::channel();
    pool.conn(version, client)
        .send(Job::new(req.raw().clone(), ReplyTo::Oneshot(tx)));
}
