//! Sharded pub/sub: SSUBSCRIBE and SUNSUBSCRIBE, answered as one Redis 7 node would, with each
//! shard channel subscribed on the master that owns its slot.
//!
//! The client's shard channels are counted here, as one node counts them (apart from its
//! SUBSCRIBE/PSUBSCRIBE count), and the confirmations are made here when the request is read.
//! The nodes' own confirmations are swallowed: they would count per node. A request still
//! waits in the session's queue until the nodes have answered its commands, so that a message
//! published after the client saw a confirmation reaches it, and none arrives after an
//! unsubscribe confirmation.
//!
//! | step | what happens |
//! |------|--------------|
//! | read | the client's channel set changes; the confirmations are encoded ([`Op`]) |
//! | head of the queue | per slot, one `SSUBSCRIBE`/`SUNSUBSCRIBE` on the client's shard connection to the slot's master (one per node, [`NodePool::subscriber`]), each followed by a `PING` marker |
//! | marker answered | the command is done; when all of the request's are, its confirmations go out |
//! | `smessage` | written to the client at once (held while an SSUBSCRIBE waits at the head) |
//!
//! A channel is subscribed on its node when the request reaches the head of the queue only if
//! the client still wants it then (so `SSUBSCRIBE a` `SUNSUBSCRIBE a` pipelined, or followed by
//! RESET, touch no node). Messages that come while an SSUBSCRIBE waits are held until its
//! confirmations are written (one may be for its channel).
//!
//! When a slot leaves a node, the node sends an unsolicited `sunsubscribe` for each of its shard
//! channels. It is not forwarded: the channel is subscribed again on the slot's master, following
//! `MOVED`; while the slot has no master (or on any other error but a redirect) it is retried with
//! back-off, and the client's request, if one was waiting, is confirmed meanwhile. A lost shard
//! connection disconnects the client, as the lost subscriber connection does (`session.rs`):
//! messages may have been missed, and a client of a failed Redis would be disconnected too.
//!
//! Frames of one shard connection are told apart from the others' by their delivery `part`: a
//! process-wide connection id, never reused by a session while frames of an old connection may
//! still be on their way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request, Version};
use routing::{Redirect, Slot};

use super::{encode, Entry, PubSub, Session};
use crate::backend::{BackendConn, Job, SUBSCRIBER_SEQ};
use crate::error::ProxyError;
use crate::reply::{Reply, ReplyQueue, ReplyTo};
use crate::server::Shared;
use crate::topology::NodePool;

/// The delivery `part` of the retry timer (shard connections have other parts; 0 is the
/// regular subscriber connection).
const RETRY_PART: u32 = u32::MAX;
/// Sent after every command on a shard connection: its reply ends the command's replies (an
/// error, one confirmation per channel, or unsolicited `sunsubscribe`s may come before it).
const MARK: &[u8] = b"*2\r\n$4\r\nPING\r\n$13\r\nslotway:shard\r\n";
/// The argument of [`MARK`], which its reply carries.
const MARK_ARG: &[u8] = b"slotway:shard";
/// First wait before subscribing again channels whose slot has no master; it doubles while
/// they still have none, up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(50);
/// See [`RETRY_MIN`].
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Shard connection ids, unique in the process (wrapping after 4 billion connections).
static CONN_IDS: AtomicU32 = AtomicU32::new(0);

/// A client's shard channels and shard connections.
#[derive(Debug, Default)]
pub(super) struct Shard {
    /// The client's shard channels, as one node counts them: changed when a request is read.
    channels: HashSet<Bytes>,
    /// Where each channel the nodes should hold is subscribed, or being subscribed: the id of
    /// the connection. Changed when a request reaches the head of the queue and when a slot
    /// moves.
    placed: HashMap<Bytes, u32>,
    /// Channels the nodes should hold that are subscribed nowhere (no master for the slot, or
    /// an error): subscribed again when the retry timer fires.
    homeless: HashSet<Bytes>,
    conns: Vec<ShardConn>,
    /// Messages that came while an SSUBSCRIBE waited at the head of the queue: they go out
    /// after its confirmations.
    held: Vec<Bytes>,
    /// The retry timer is set.
    retry_armed: bool,
    /// The next retry delay (0: [`RETRY_MIN`]).
    backoff: Duration,
}

/// One shard connection of a client, to one node.
#[derive(Debug)]
struct ShardConn {
    id: u32,
    addr: Arc<str>,
    conn: BackendConn,
    /// Channels placed on this connection.
    placed: usize,
    /// Commands sent and not yet answered up to their marker, oldest first.
    sent: VecDeque<Sent>,
}

/// A command sent on a shard connection.
#[derive(Debug)]
struct Sent {
    subscribe: bool,
    channels: Vec<Bytes>,
    /// Its answer counts for the request at the head of the session's queue.
    ticket: bool,
    redirects: u32,
    /// The node's error reply, if it gave one.
    error: Option<Bytes>,
}

/// An SSUBSCRIBE or SUNSUBSCRIBE in the session's queue.
#[derive(Debug)]
pub(super) struct Op {
    subscribe: bool,
    /// The channels named (SUNSUBSCRIBE without arguments: the client's channels then).
    channels: Vec<Bytes>,
    /// The confirmations one node would send, made when the request was read.
    reply: Bytes,
    /// `None` until the request reaches the head of the queue; then how many of its node
    /// commands are not answered yet.
    waiting: Option<usize>,
}

/// What a shard connection's frame is.
enum Kind<'a> {
    Message,
    /// An `ssubscribe` confirmation (the proxy makes its own).
    Confirmed,
    Error(Bytes),
    /// A `sunsubscribe` for this channel (asked for, or sent by the node when the slot left it).
    Unsubscribed(Bytes),
    Mark,
    Other(&'a [u8]),
}

// === impl Shard ===

impl Shard {
    /// True if the client has shard channels, which puts a RESP2 client in subscribed mode.
    pub(super) fn is_subscribed(&self) -> bool {
        !self.channels.is_empty()
    }

    /// True if the client has no shard channel and no shard connection (the idle timeout may
    /// apply: Redis does not time out subscribers).
    pub(super) fn is_idle(&self) -> bool {
        self.channels.is_empty() && self.conns.is_empty()
    }

    /// The client's number of shard channels.
    pub(super) fn count(&self) -> usize {
        self.channels.len()
    }

    fn conn_mut(&mut self, id: u32) -> Option<&mut ShardConn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    /// Forgets where `channel` is subscribed.
    fn unplace(&mut self, channel: &Bytes) -> Option<u32> {
        let id = self.placed.remove(channel)?;
        if let Some(c) = self.conn_mut(id) {
            c.placed = c.placed.saturating_sub(1);
        }
        Some(id)
    }

    /// Closes connection `id` if nothing is subscribed or being answered on it.
    fn prune(&mut self, id: u32) {
        self.conns
            .retain(|c| c.id != id || c.placed > 0 || !c.sent.is_empty());
    }

    /// Sends `SSUBSCRIBE channels` (one slot) on the client's shard connection to `pool`'s
    /// node, opened on first use.
    fn send(&mut self, io: &Io, pool: &NodePool, sent: Sent) {
        let pos = self
            .conns
            .iter()
            .position(|c| c.addr == *pool.addr() && !c.conn.is_closed());
        let i = match pos {
            Some(i) => i,
            None => {
                // Below the keyspace notification mirrors' parts (`notify.rs`).
                let id =
                    CONN_IDS.fetch_add(1, Ordering::Relaxed) % (super::notify::MIRROR_PART - 1) + 1;
                let conn = pool.subscriber(io.version, io.replies.clone(), id);
                self.conns.push(ShardConn {
                    id,
                    addr: pool.addr().clone(),
                    conn,
                    placed: 0,
                    sent: VecDeque::new(),
                });
                self.conns.len() - 1
            }
        };
        self.send_on(i, sent);
    }

    /// Sends `SSUBSCRIBE`/`SUNSUBSCRIBE channels` (one slot) and the marker on connection
    /// `self.conns[i]`; a subscribe places the channels there.
    fn send_on(&mut self, i: usize, sent: Sent) {
        let id = self.conns[i].id;
        if sent.subscribe {
            for ch in &sent.channels {
                if let Some(old) = self.placed.insert(ch.clone(), id) {
                    if let Some(c) = self.conn_mut(old) {
                        c.placed = c.placed.saturating_sub(1);
                    }
                }
            }
            self.conns[i].placed += sent.channels.len();
        }
        let name: &[u8] = if sent.subscribe {
            b"SSUBSCRIBE"
        } else {
            b"SUNSUBSCRIBE"
        };
        let req =
            Request::from_args(std::iter::once(name).chain(sent.channels.iter().map(|c| &c[..])));
        let mut payload = BytesMut::with_capacity(req.raw().len() + MARK.len());
        payload.extend_from_slice(req.raw());
        payload.extend_from_slice(MARK);
        let c = &mut self.conns[i];
        c.conn.send(Job::new(payload.freeze(), ReplyTo::Discard));
        c.sent.push_back(sent);
    }

    /// Subscribes the channels that the client wants and that are subscribed nowhere yet, on
    /// their slots' masters. Returns the number of commands sent with `ticket`.
    fn subscribe(&mut self, io: &Io, channels: Vec<Bytes>, ticket: bool) -> usize {
        let routes = io.shared.topology.routes();
        let mut seen = HashSet::new();
        let mut groups: BTreeMap<Slot, (&Arc<NodePool>, Vec<Bytes>)> = BTreeMap::new();
        for ch in channels {
            if !self.channels.contains(&ch)
                || self.placed.contains_key(&ch)
                || self.homeless.contains(&ch)
                || !seen.insert(ch.clone())
            {
                continue;
            }
            let slot = Slot::for_key(&ch);
            match routes.master_for(slot) {
                Some(pool) => groups.entry(slot).or_insert((pool, Vec::new())).1.push(ch),
                None => {
                    self.homeless.insert(ch);
                }
            }
        }
        let sent = groups.len();
        for (pool, channels) in groups.into_values() {
            let sent = Sent {
                subscribe: true,
                channels,
                ticket,
                redirects: 0,
                error: None,
            };
            self.send(io, pool, sent);
        }
        if !self.homeless.is_empty() {
            self.arm_retry(io);
        }
        if ticket {
            sent
        } else {
            0
        }
    }

    /// Unsubscribes `channels` on the nodes. Returns the number of commands sent (each with a
    /// ticket).
    fn unsubscribe(&mut self, channels: Vec<Bytes>) -> usize {
        let mut groups: BTreeMap<(u32, Slot), Vec<Bytes>> = BTreeMap::new();
        for ch in channels {
            if self.homeless.remove(&ch) {
                continue;
            }
            let Some(id) = self.unplace(&ch) else {
                continue;
            };
            let slot = Slot::for_key(&ch);
            groups.entry((id, slot)).or_default().push(ch);
        }
        let mut n = 0;
        for ((id, _), channels) in groups {
            if let Some(i) = self.conns.iter().position(|c| c.id == id) {
                n += 1;
                let sent = Sent {
                    subscribe: false,
                    channels,
                    ticket: true,
                    redirects: 0,
                    error: None,
                };
                self.send_on(i, sent);
            }
        }
        n
    }

    /// Sets the retry timer, if it is not set, and asks for a fresh slot map.
    fn arm_retry(&mut self, io: &Io) {
        io.shared.topology.request_refresh();
        if self.retry_armed {
            return;
        }
        self.retry_armed = true;
        let delay = self.backoff.max(RETRY_MIN);
        self.backoff = (delay * 2).min(RETRY_MAX);
        io.replies.retry_after(delay, SUBSCRIBER_SEQ, RETRY_PART);
    }

    /// The retry timer fired: subscribes the homeless channels again.
    fn retry(&mut self, io: &Io) {
        self.retry_armed = false;
        let homeless: Vec<Bytes> = self.homeless.drain().collect();
        self.subscribe(io, homeless, false);
    }

    /// Connection `id`'s command is answered (its marker came). Returns true if it held a
    /// ticket that is now released.
    fn answered(&mut self, io: &Io, id: u32, sent: Sent) -> bool {
        let Some(err) = sent.error.filter(|_| sent.subscribe) else {
            if sent.subscribe {
                self.backoff = Duration::ZERO;
            }
            return sent.ticket;
        };
        // The channels of the failed command that are still meant to be there.
        let channels: Vec<Bytes> = sent
            .channels
            .into_iter()
            .filter(|ch| self.placed.get(ch) == Some(&id))
            .collect();
        channels.iter().for_each(|ch| {
            self.unplace(ch);
        });
        if channels.is_empty() {
            return sent.ticket;
        }
        let text = err.strip_prefix(b"-").unwrap_or(&err);
        let text = text.strip_suffix(b"\r\n").unwrap_or(text);
        // The node that answered, to fill in a redirect's unknown host.
        let sender = self
            .conns
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.addr.clone())
            .unwrap_or_default();
        match Redirect::parse(text).map(|r| r.filled_from(&sender)) {
            Some(Redirect::Moved { slot, addr })
                if sent.redirects < io.shared.config.max_redirects =>
            {
                let topology = &io.shared.topology;
                topology.moved(slot, &addr);
                let pool = topology.pool(&addr);
                let again = Sent {
                    subscribe: true,
                    channels,
                    ticket: sent.ticket,
                    redirects: sent.redirects + 1,
                    error: None,
                };
                self.send(io, &pool, again);
                // The ticket moved with the command.
                false
            }
            redirect => {
                let transient = redirect.is_some()
                    || [&b"CLUSTERDOWN"[..], b"TRYAGAIN", b"LOADING", b"MASTERDOWN"]
                        .iter()
                        .any(|p| text.starts_with(p));
                if transient {
                    tracing::debug!(error = %String::from_utf8_lossy(text), "shard subscription retried");
                    self.homeless.extend(channels);
                    self.arm_retry(io);
                } else {
                    tracing::warn!(error = %String::from_utf8_lossy(text), "shard subscription refused by the node");
                }
                sent.ticket
            }
        }
    }
}

/// What the shard logic needs from the session besides its own state.
struct Io<'a> {
    shared: &'a Shared,
    replies: &'a Arc<ReplyQueue>,
    version: Version,
}

// === impl Op ===

impl Op {
    /// True once the nodes have answered every command of the request.
    fn is_answered(&self) -> bool {
        self.waiting == Some(0)
    }
}

// === impl Session: sharded pub/sub ===

impl Session {
    /// SSUBSCRIBE (`subscribe`) or SUNSUBSCRIBE, when read: updates the client's shard
    /// channels, makes the confirmations and queues the request.
    pub(super) fn shard_command(&mut self, subscribe: bool, req: &Request) {
        let version = self.client.version;
        let shard = &mut self.pubsub.get_or_insert_with(Default::default).shard;
        let before = shard.channels.len();
        let kind: &'static [u8] = if subscribe {
            b"ssubscribe"
        } else {
            b"sunsubscribe"
        };
        let mut channels: Vec<Bytes> = req.args().skip(1).map(Bytes::copy_from_slice).collect();
        let mut reply = BytesMut::new();
        let mut confirm = |channel: Option<&Bytes>, count: usize| {
            confirmation(kind, channel, count, version, &mut reply)
        };
        if !subscribe && channels.is_empty() {
            channels = shard.channels.iter().cloned().collect();
            if channels.is_empty() {
                confirm(None, 0);
            }
        }
        for ch in &channels {
            if subscribe {
                shard.channels.insert(ch.clone());
            } else {
                shard.channels.remove(ch);
            }
            confirm(Some(ch), shard.channels.len());
        }
        let after = shard.channels.len();
        self.shared
            .metrics
            .subscriptions_add(after as i64 - before as i64);
        self.queue.push_back(Entry::Shard(Box::new(Op {
            subscribe,
            channels,
            reply: reply.freeze(),
            waiting: None,
        })));
    }

    /// PING in RESP2 subscribed mode with shard channels only: the subscriber form of the
    /// reply, made here (there may be no subscriber connection to ask).
    pub(super) fn shard_pong(&mut self, req: &Request) {
        if req.len() > 2 {
            return self.fail_new(ProxyError::WrongArity("ping"));
        }
        let frame = Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"pong")),
            Frame::Bulk(req.arg_bytes(1).unwrap_or_default()),
        ]);
        self.push_done(encode(&frame, self.client.version));
    }

    /// The shard request at the head of the queue: sends its commands if not yet done.
    /// Returns true if it is answered; it is then `Entry::Done` at the head.
    pub(super) fn shard_at_head(&mut self) -> bool {
        let Some(Entry::Shard(op)) = self.queue.front_mut() else {
            return false;
        };
        if op.waiting.is_none() {
            let subscribe = op.subscribe;
            let channels = std::mem::take(&mut op.channels);
            let n = match self.shard_parts() {
                Some((shard, io)) if subscribe => shard.subscribe(&io, channels, true),
                Some((shard, _)) => shard.unsubscribe(channels),
                None => 0,
            };
            if let Some(Entry::Shard(op)) = self.queue.front_mut() {
                op.waiting = Some(n);
            }
        }
        let reply = match self.queue.front_mut() {
            Some(Entry::Shard(op)) if op.is_answered() => std::mem::take(&mut op.reply),
            _ => return false,
        };
        let held = self
            .pubsub
            .as_mut()
            .map(|p| std::mem::take(&mut p.shard.held))
            .unwrap_or_default();
        let reply = if held.is_empty() {
            reply
        } else {
            let mut out = BytesMut::from(&reply[..]);
            held.iter().for_each(|m| out.extend_from_slice(m));
            out.freeze()
        };
        self.queue[0] = Entry::Done(reply);
        true
    }

    /// Lets the shard request at the head of the queue go without its nodes' answers (its
    /// connections were dropped).
    pub(super) fn release_shard_head(&mut self) {
        if let Some(Entry::Shard(op)) = self.queue.front_mut() {
            if op.waiting.is_some() {
                op.waiting = Some(0);
            }
        }
    }

    /// A delivery from shard connection `part`, or the retry timer.
    pub(super) fn on_shard_delivery(&mut self, part: u32, reply: Reply) {
        if part == RETRY_PART {
            if let Some((shard, io)) = self.shard_parts() {
                shard.retry(&io);
            }
            return;
        }
        let frame = match reply {
            Reply::Frame(frame) => frame,
            Reply::Failed(_) | Reply::Retry => {
                let known = self
                    .pubsub
                    .as_mut()
                    .is_some_and(|p| p.shard.conn_mut(part).is_some());
                if known {
                    tracing::info!(client = self.client.id, "shard subscriber connection lost");
                    self.subscriber_lost();
                }
                return;
            }
        };
        let kind = kind(&frame);
        if let Kind::Message = kind {
            // Out of band, as a node writes it; but never before the confirmation of an
            // SSUBSCRIBE still waiting (the message may be for its channel).
            let subscribing = matches!(self.queue.front(), Some(Entry::Shard(op)) if op.subscribe && op.waiting.is_some());
            match self.pubsub.as_mut() {
                Some(ps) if subscribing => ps.shard.held.push(frame),
                _ => self.wbuf.extend_from_slice(&frame),
            }
            return;
        }
        let Some((shard, io)) = self.shard_parts() else {
            return;
        };
        if shard.conn_mut(part).is_none() {
            // A connection already closed.
            return;
        }
        let released = match kind {
            Kind::Message | Kind::Confirmed => false,
            Kind::Error(text) => {
                if let Some(sent) = shard.conn_mut(part).and_then(|c| c.sent.front_mut()) {
                    sent.error.get_or_insert(text);
                }
                false
            }
            Kind::Unsubscribed(ch) => {
                // Asked for (then it is no longer placed), or the slot left the node: subscribe
                // it again where the slot is now.
                if shard.placed.get(&ch) == Some(&part) {
                    shard.unplace(&ch);
                    io.shared.topology.request_refresh();
                    shard.subscribe(&io, vec![ch], false);
                }
                false
            }
            Kind::Mark => match shard.conn_mut(part).and_then(|c| c.sent.pop_front()) {
                Some(sent) => shard.answered(&io, part, sent),
                None => false,
            },
            Kind::Other(frame) => {
                tracing::debug!(frame = %String::from_utf8_lossy(frame), "unexpected frame on a shard connection");
                false
            }
        };
        shard.prune(part);
        if released {
            if let Some(Entry::Shard(op)) = self.queue.front_mut() {
                if let Some(n) = &mut op.waiting {
                    *n = n.saturating_sub(1);
                }
            }
            self.flush_ready();
        }
    }

    /// The client's shard state and what its logic needs, if the client has used pub/sub.
    fn shard_parts(&mut self) -> Option<(&mut Shard, Io<'_>)> {
        let Session {
            shared,
            replies,
            client,
            pubsub,
            ..
        } = self;
        let PubSub { shard, .. } = &mut **pubsub.as_mut()?;
        Some((
            shard,
            Io {
                shared,
                replies,
                version: client.version,
            },
        ))
    }
}

/// Appends one confirmation, as a node writes it: `[kind, channel or nil, count]`, a push in
/// RESP3.
fn confirmation(
    kind: &'static [u8],
    channel: Option<&Bytes>,
    count: usize,
    version: Version,
    out: &mut BytesMut,
) {
    let frame = Frame::Push(vec![
        Frame::Bulk(Bytes::from_static(kind)),
        channel.map_or(Frame::Null, |c| Frame::Bulk(c.clone())),
        Frame::Integer(count as i64),
    ]);
    protocol::encode(&frame, version, out);
}

/// Classifies a frame from a shard connection.
fn kind(frame: &Bytes) -> Kind<'_> {
    // The common case, without decoding: `*3` (RESP2) or `>3` (RESP3) `smessage`.
    if frame
        .get(1..)
        .is_some_and(|f| f.starts_with(b"3\r\n$8\r\nsmessage\r\n"))
    {
        return Kind::Message;
    }
    let mut buf = BytesMut::from(&frame[..]);
    let decoded = protocol::decode(
        &mut buf,
        &Limits {
            max_depth: 128,
            ..Limits::default()
        },
    );
    match decoded {
        Ok(Some(Frame::Error(_))) => Kind::Error(frame.clone()),
        Ok(Some(Frame::Bulk(arg))) if arg.as_ref() == MARK_ARG => Kind::Mark,
        Ok(Some(Frame::Array(items) | Frame::Push(items))) => match items.as_slice() {
            [Frame::Bulk(k), Frame::Bulk(arg)]
                if k.as_ref() == b"pong" && arg.as_ref() == MARK_ARG =>
            {
                Kind::Mark
            }
            [Frame::Bulk(k), Frame::Bulk(ch), _] if k.as_ref() == b"sunsubscribe" => {
                Kind::Unsubscribed(ch.clone())
            }
            [Frame::Bulk(k), ..] if k.as_ref() == b"smessage" => Kind::Message,
            [Frame::Bulk(k), ..] if k.as_ref() == b"ssubscribe" => Kind::Confirmed,
            _ => Kind::Other(frame),
        },
        _ => Kind::Other(frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(raw: &'static [u8]) -> &'static str {
        match kind(&Bytes::from_static(raw)) {
            Kind::Message => "message",
            Kind::Confirmed => "confirmed",
            Kind::Error(_) => "error",
            Kind::Unsubscribed(ch) if ch.as_ref() == b"ch" => "unsubscribed ch",
            Kind::Unsubscribed(_) => "unsubscribed ?",
            Kind::Mark => "mark",
            Kind::Other(_) => "other",
        }
    }

    #[test]
    fn frames_are_classified() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
                "message",
            ),
            (
                b">3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
                "message",
            ),
            (
                b"*3\r\n$10\r\nssubscribe\r\n$2\r\nch\r\n:1\r\n",
                "confirmed",
            ),
            (
                b">3\r\n$12\r\nsunsubscribe\r\n$2\r\nch\r\n:0\r\n",
                "unsubscribed ch",
            ),
            (b"-MOVED 12 127.0.0.1:7001\r\n", "error"),
            (b"$13\r\nslotway:shard\r\n", "mark"),
            (b"*2\r\n$4\r\npong\r\n$13\r\nslotway:shard\r\n", "mark"),
            (b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", "other"),
            (b"+PONG\r\n", "other"),
        ];
        for (raw, expected) in cases {
            assert_eq!(kind_of(raw), *expected, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn confirmations_are_shaped_like_a_nodes() {
        let mut out = BytesMut::new();
        let ch = Bytes::from_static(b"ch");
        confirmation(b"ssubscribe", Some(&ch), 2, Version::Resp2, &mut out);
        assert_eq!(&out[..], b"*3\r\n$10\r\nssubscribe\r\n$2\r\nch\r\n:2\r\n");
        out.clear();
        confirmation(b"sunsubscribe", None, 0, Version::Resp2, &mut out);
        assert_eq!(&out[..], b"*3\r\n$12\r\nsunsubscribe\r\n$-1\r\n:0\r\n");
        out.clear();
        confirmation(b"sunsubscribe", None, 0, Version::Resp3, &mut out);
        assert_eq!(&out[..], b">3\r\n$12\r\nsunsubscribe\r\n_\r\n:0\r\n");
    }
}
