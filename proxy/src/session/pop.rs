//! Pops whose keys span slots, answered as one node would: BLPOP, BRPOP, BZPOPMIN, BZPOPMAX,
//! BLMPOP, BZMPOP (and the non-blocking LMPOP, ZMPOP). The first key in argument order that has
//! an element wins, with its real name; otherwise the client blocks until any key gets one, or
//! the timeout (LMPOP and ZMPOP answer nil instead of blocking).
//!
//! Stages of one such request:
//!
//! | stage | sends | next |
//! |-------|-------|------|
//! | probe | `EXISTS key` for every key, in parallel | take the first existing key; none: block |
//! | take  | `RPOP`/`LPOP`/`ZPOPMIN`/`ZPOPMAX` of that key (`LMPOP 1 key ...`/`ZMPOP 1 key ...` for the `*MPOP` forms) | element: answer; nil (someone was faster): probe again, at most 3 times, then block |
//! | block | the blocking pop per slot group (`BLMPOP`/`BZMPOP` with that group's keys for the `*MPOP` forms), each on a connection of the client's own | first element wins; the others are unblocked (`CLIENT UNBLOCK`, repeated until they answer) and an element any of them popped meanwhile is pushed back where it came from |
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
use crate::error::ProxyError;
use crate::reply::ReplyTo;
use crate::topology::NodePool;

/// Probe/take rounds before blocking.
const MAX_ROUNDS: u32 = 3;
/// How often a loser of the race is told again to stop blocking.
const UNBLOCK_EVERY: Duration = Duration::from_millis(100);

/// Which end of which kind of key a pop takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PopKind {
    Left,
    Right,
    Min,
    Max,
}

/// The command's form: one element with its key (`BLPOP`: `[key, element]`), or up to COUNT
/// elements of one key (`BLMPOP`: `[key, [elements]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    One,
    Many { count: Option<Bytes> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Probe,
    Take(usize),
    Block,
}

/// A cross-slot pop in progress.
#[derive(Debug)]
pub(super) struct Pop {
    kind: PopKind,
    shape: Shape,
    /// False for LMPOP and ZMPOP: answer nil instead of blocking.
    blocking: bool,
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
    fn blocking(self, shape: &Shape) -> &'static [u8] {
        match (self, shape) {
            (PopKind::Left, Shape::One) => b"BLPOP",
            (PopKind::Right, Shape::One) => b"BRPOP",
            (PopKind::Min, Shape::One) => b"BZPOPMIN",
            (PopKind::Max, Shape::One) => b"BZPOPMAX",
            (PopKind::Left | PopKind::Right, Shape::Many { .. }) => b"BLMPOP",
            (PopKind::Min | PopKind::Max, Shape::Many { .. }) => b"BZMPOP",
        }
    }

    fn take(self, shape: &Shape) -> &'static [u8] {
        match (self, shape) {
            (PopKind::Left, Shape::One) => b"LPOP",
            (PopKind::Right, Shape::One) => b"RPOP",
            (PopKind::Min, Shape::One) => b"ZPOPMIN",
            (PopKind::Max, Shape::One) => b"ZPOPMAX",
            (PopKind::Left | PopKind::Right, Shape::Many { .. }) => b"LMPOP",
            (PopKind::Min | PopKind::Max, Shape::Many { .. }) => b"ZMPOP",
        }
    }

    /// The `*MPOP` direction argument.
    fn direction(self) -> &'static [u8] {
        match self {
            PopKind::Left => b"LEFT",
            PopKind::Right => b"RIGHT",
            PopKind::Min => b"MIN",
            PopKind::Max => b"MAX",
        }
    }

    /// The command that puts back what a pop took: the same end of the same key, in the
    /// order that restores it. `popped` is what followed the key in the pop's reply.
    fn push_back(self, key: &[u8], popped: &[Frame]) -> Option<Request> {
        let bulk = |f: &Frame| match f {
            Frame::Bulk(b) | Frame::Double(b) => Some(b.clone()),
            _ => None,
        };
        // `[element]` / `[member, score]` (BLPOP, BZPOPMIN), or `[[elements]]` /
        // `[[[member, score], ...]]` (BLMPOP, BZMPOP).
        let items: Vec<Vec<Bytes>> = match popped {
            [Frame::Array(many)] => many
                .iter()
                .map(|f| match f {
                    Frame::Array(pair) => pair.iter().map(bulk).collect(),
                    one => bulk(one).map(|b| vec![b]),
                })
                .collect::<Option<_>>()?,
            one => vec![one.iter().map(bulk).collect::<Option<_>>()?],
        };
        let mut args: Vec<Bytes> = Vec::with_capacity(2 + 2 * items.len());
        match self {
            PopKind::Left | PopKind::Right => {
                args.push(Bytes::from_static(if self == PopKind::Left {
                    b"LPUSH"
                } else {
                    b"RPUSH"
                }));
                args.push(Bytes::copy_from_slice(key));
                // The first element popped was nearest the end: push it last.
                for item in items.into_iter().rev() {
                    args.push(item.into_iter().next()?);
                }
            }
            PopKind::Min | PopKind::Max => {
                args.push(Bytes::from_static(b"ZADD"));
                args.push(Bytes::copy_from_slice(key));
                for item in items {
                    let [member, score] = <[Bytes; 2]>::try_from(item).ok()?;
                    args.push(score);
                    args.push(member);
                }
            }
        }
        (args.len() > 2).then(|| Request::from_args(args))
    }
}

// === impl Pop ===

impl Pop {
    /// Reads a pop command whose (stored) keys span slots; `name` is its table name.
    /// Checks what the node would check before popping anything: the timeout, the direction,
    /// COUNT.
    pub(super) fn parse(name: &str, req: &Request) -> Result<Pop, ProxyError> {
        let args: Vec<Bytes> = (0..req.len()).filter_map(|i| req.arg_bytes(i)).collect();
        let syntax = || ProxyError::Other("ERR syntax error".to_string());
        let (kind, shape, blocking, keys, timeout) = match name {
            "blpop" | "brpop" | "bzpopmin" | "bzpopmax" => {
                let kind = match name {
                    "blpop" => PopKind::Left,
                    "brpop" => PopKind::Right,
                    "bzpopmin" => PopKind::Min,
                    _ => PopKind::Max,
                };
                let n = args.len();
                let keys = args[1..n - 1].to_vec();
                (kind, Shape::One, true, keys, args[n - 1].clone())
            }
            "blmpop" | "bzmpop" | "lmpop" | "zmpop" => {
                let blocking = name.starts_with('b');
                let (timeout, rest) = if blocking {
                    (args[1].clone(), &args[2..])
                } else {
                    (Bytes::new(), &args[1..])
                };
                // The key specs already checked numkeys.
                let numkeys: usize = std::str::from_utf8(&rest[0])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(syntax)?;
                let keys = rest.get(1..=numkeys).ok_or_else(syntax)?.to_vec();
                let options = &rest[1 + numkeys..];
                let list = name.ends_with("lmpop");
                let kind = match options.first().map(|d| d.to_ascii_uppercase()) {
                    Some(d) if list && d == b"LEFT" => PopKind::Left,
                    Some(d) if list && d == b"RIGHT" => PopKind::Right,
                    Some(d) if !list && d == b"MIN" => PopKind::Min,
                    Some(d) if !list && d == b"MAX" => PopKind::Max,
                    _ => return Err(syntax()),
                };
                let count = match &options[1..] {
                    [] => None,
                    [word, n] if word.eq_ignore_ascii_case(b"count") => {
                        match std::str::from_utf8(n)
                            .ok()
                            .and_then(|n| n.parse::<i64>().ok())
                        {
                            Some(n) if n > 0 => Some(Bytes::from(n.to_string())),
                            _ => {
                                return Err(ProxyError::Other(
                                    "ERR count should be greater than 0".to_string(),
                                ))
                            }
                        }
                    }
                    _ => return Err(syntax()),
                };
                (kind, Shape::Many { count }, blocking, keys, timeout)
            }
            _ => return Err(ProxyError::CrossSlot("?")),
        };
        if blocking {
            check_timeout(&timeout)?;
        }
        Ok(Pop {
            kind,
            shape,
            blocking,
            keys,
            timeout,
            stage: Stage::Probe,
            parts: Vec::new(),
            rounds: 0,
            answer: None,
        })
    }

    /// The target and own-connection lane of part `part`, if it lost the race and has not
    /// answered yet.
    fn cancelling_lane(&self, part: u32) -> Option<(Target, u32)> {
        match self.parts.get(part as usize)? {
            (p, None, _) if self.stage == Stage::Block && self.answer.is_some() => {
                Some((p.target, p.lane?))
            }
            _ => None,
        }
    }

    /// The take request for key `i`.
    fn take_request(&self, i: usize) -> Request {
        let k = &self.keys[i];
        let mut args: Vec<&[u8]> = vec![self.kind.take(&self.shape)];
        if let Shape::Many { count } = &self.shape {
            args.extend([b"1".as_slice(), k, self.kind.direction()]);
            if let Some(n) = count {
                args.extend([b"COUNT".as_slice(), n]);
            }
        } else {
            args.push(k);
        }
        Request::from_args(args)
    }

    /// The blocking request for the keys numbered `ks`.
    fn block_request(&self, ks: &[usize]) -> Request {
        let mut args: Vec<&[u8]> = vec![self.kind.blocking(&self.shape)];
        let numkeys = ks.len().to_string();
        match &self.shape {
            Shape::One => {
                args.extend(ks.iter().map(|&i| self.keys[i].as_ref()));
                args.push(&self.timeout);
            }
            Shape::Many { count } => {
                args.extend([self.timeout.as_ref(), numkeys.as_bytes()]);
                args.extend(ks.iter().map(|&i| self.keys[i].as_ref()));
                args.push(self.kind.direction());
                if let Some(n) = count {
                    args.extend([b"COUNT".as_slice(), n]);
                }
            }
        }
        Request::from_args(args)
    }
}

/// Checks a blocking command's timeout in seconds as Redis does.
pub(super) fn check_timeout(timeout: &[u8]) -> Result<(), ProxyError> {
    let err = |text: &str| Err(ProxyError::Other(format!("ERR {text}")));
    match std::str::from_utf8(timeout)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
    {
        Some(t) if !t.is_finite() => err("timeout is out of range"),
        Some(t) if t < 0.0 => err("timeout is negative"),
        Some(_) => Ok(()),
        None => err("timeout is not a float or out of range"),
    }
}

// === impl Session: cross-slot pops ===

impl Session {
    /// Starts pop `seq` (at the head of the queue).
    pub(super) fn pop_begin(&mut self, seq: u64) {
        self.pop_stage(seq, Stage::Probe);
    }

    fn pop_mut(&mut self, seq: u64) -> Option<(usize, &mut Pop)> {
        let idx = self.index_of(seq)?;
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
                let req = pop.take_request(i);
                vec![(
                    Pending::new(req, Target::Slot(slot(&pop.keys[i]))),
                    None,
                    vec![i],
                )]
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
                        let mut p = Pending::new(pop.block_request(&ks), Target::Slot(s));
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

    /// The target and own-connection lane of part `part` of the cross-slot pop or read `seq`,
    /// if that part lost the race and has not answered yet: a timer for it means "tell it
    /// again to stop blocking".
    pub(super) fn cancelling(&self, seq: u64, part: u32) -> Option<(Target, u32)> {
        let idx = self.index_of(seq)?;
        match self.queue.get(idx)? {
            Entry::Pop(pop) => pop.cancelling_lane(part),
            Entry::Read(read) => read.cancelling_lane(part),
            _ => None,
        }
    }

    /// Sends `CLIENT UNBLOCK` for the connection of part `part` of the cross-slot pop or read
    /// `seq`, and checks again later.
    pub(super) fn unblock(&mut self, seq: u64, part: u32) {
        let Some((target, lane)) = self.cancelling(seq, part) else {
            return;
        };
        if let Some(pool) = self.resolve(target) {
            if let Some(id) = self.dedicated_conn(&pool, lane).node_client_id() {
                unblock_on_node(&pool, self.client.version, self.client.id, id, b"TIMEOUT");
            }
        }
        self.replies.retry_after(UNBLOCK_EVERY, seq, part);
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
                    None if pop.blocking => self.pop_stage(seq, Stage::Block),
                    None => self.pop_answer(idx, Frame::NullArray),
                }
            }
            Stage::Take(i) => {
                let key = pop.keys[i].clone();
                if matches!(frame, Frame::Error(_)) {
                    return self.pop_answer(idx, frame);
                }
                let taken = match pop.shape {
                    Shape::One => taken(key, frame),
                    Shape::Many { .. } => match frame {
                        Frame::Array(items) if !items.is_empty() => Some(items),
                        _ => None,
                    },
                };
                match taken {
                    Some(items) => self.pop_answer(idx, Frame::Array(items)),
                    None => {
                        pop.rounds += 1;
                        let next = if pop.rounds < MAX_ROUNDS {
                            Stage::Probe
                        } else if pop.blocking {
                            Stage::Block
                        } else {
                            // Every key was emptied by someone faster each time: one node
                            // could have answered nil as well.
                            return self.pop_answer(idx, Frame::NullArray);
                        };
                        self.pop_stage(seq, next);
                    }
                }
            }
            Stage::Block if slot.2.is_empty() => {
                // A put-back (below) answered: the element is where it was, unless the key
                // refused it (another client made it a string meanwhile).
                if !matches!(frame, Frame::Integer(_)) {
                    tracing::warn!(
                        client = self.client.id,
                        reply = ?frame,
                        "cross-slot pop: what a loser of the race took could not be put back"
                    );
                }
                if pop.parts.iter().all(|(_, r, _)| r.is_some()) {
                    let answer = pop.answer.take().unwrap_or(Frame::NullArray);
                    self.pop_answer(idx, answer);
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
                let mut put_back_part = None;
                if let Some((key, req)) = put_back {
                    // A part of its own, without keys: sent, redirected and retried like the
                    // others, and the pop is answered once it is back.
                    tracing::debug!(
                        client = self.client.id,
                        "cross-slot pop: a loser took an element, putting it back"
                    );
                    let p = Pending::new(req, Target::Slot(Slot::for_key(&key)));
                    pop.parts.push((p, None, Vec::new()));
                    put_back_part = Some(pop.parts.len() as u32 - 1);
                }
                let finished = pop.parts.iter().all(|(_, r, _)| r.is_some());
                let answer = if finished {
                    Some(pop.answer.take().unwrap_or(Frame::NullArray))
                } else {
                    None
                };
                if let Some(part) = put_back_part {
                    self.send(seq, part, None);
                }
                for loser in losers {
                    self.unblock(seq, loser);
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

pub(super) fn decode(raw: &[u8]) -> Frame {
    let mut buf = BytesMut::from(raw);
    match protocol::decode(&mut buf, &Limits::default()) {
        Ok(Some(f)) => f,
        _ => Frame::Error(Bytes::from_static(
            b"ERR Slotway: unreadable reply from a cluster node",
        )),
    }
}

/// Sends a request whose reply nobody needs on the client's pooled connection to `pool`.
/// Sends `CLIENT UNBLOCK node_id how` (TIMEOUT or ERROR) to `pool`'s node, on the shared
/// connection: the command blocked on the node's connection `node_id` ends.
pub(super) fn unblock_on_node(
    pool: &Arc<NodePool>,
    version: protocol::Version,
    client: u64,
    node_id: u64,
    how: &[u8],
) {
    let id = node_id.to_string();
    let req = Request::from_args([b"CLIENT".as_slice(), b"UNBLOCK", id.as_bytes(), how]);
    send_and_forget(pool, version, client, req);
}

pub(super) fn send_and_forget(
    pool: &Arc<NodePool>,
    version: protocol::Version,
    client: u64,
    req: Request,
) {
    let (tx, _rx) = tokio::sync::oneshot::channel();
    pool.conn(version, client)
        .send(Job::new(req.raw().clone(), ReplyTo::Oneshot(tx)));
}
