//! The per-client loop: read and decode requests, plan each one, send it on, and write replies
//! back in request order.
//!
//! Every request takes one entry in an ordered queue. Its reply fills the entry; the answered
//! prefix of the queue is moved to the write buffer, which is written when the socket is
//! writable, while reading goes on. The session stops reading when `max_pipeline` requests are
//! waiting, and stops for good after a protocol error or QUIT once everything before it has been
//! answered.
//!
//! A request sent to several nodes (a split MGET, a fanned-out DBSIZE) is one entry with several
//! parts; it is answered when the last part is, by its [`Merge`].
//!
//! Backend replies arrive through the session's [`ReplyQueue`] as `(seq, part, reply)`. An error
//! reply is looked at before it is accepted: `MOVED` and `ASK` are followed, `TRYAGAIN`,
//! `CLUSTERDOWN` and an unreachable node are retried after a short pause, all within
//! `retry_timeout`; `NOSCRIPT` is answered by loading the script on that node, if the proxy has
//! seen it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};
use routing::split::Merge;
use routing::{slot_in_motion, Redirect, Slot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendConn, BackendError, Job, SUBSCRIBER_SEQ};
use crate::config::{Config, CrossSlotTransactions, Databases};
use crate::dispatch::{self, Fan, Finish, Plan, Target};
use crate::error::{Close, ProxyError};
use crate::listener::{Accepted, ClientRead, ClientWrite};
use crate::local::{self, After};
use crate::names;
use crate::reply::{Control, Delivery, Reply, ReplyQueue, ReplyTo, CONTROL_SEQ};
use crate::server::{ClientState, ClientStatus, Remote, Shared};
use crate::topology::{NodePool, Routes};
use crate::transaction::{self, GroupOutcome};
use buffers::Buffers;

mod buffers;
mod lmove;
mod notify;
mod pop;
mod rename;
mod shard;
mod smove;
mod store;
mod wait;
mod xread;

/// Stop reading from a client whose unwritten replies exceed this.
const OUTPUT_HIGH_WATER: usize = 4 << 20;
/// Requests decoded per wake-up before the session yields to replies and writes.
const DECODE_BATCH: usize = 512;
/// Requests buffered, at most, behind a blocking command (beyond one request that is larger).
const HELD_READ_LIMIT: usize = 1 << 20;
/// First read buffer size; it grows for large requests.
const READ_CHUNK: usize = 2048;

/// One request waiting for its reply, or its reply waiting for the ones before it.
#[derive(Debug)]
enum Entry {
    /// Sent to one node.
    Waiting(Pending),
    /// Sent in parts to several nodes.
    Gather(Box<Gather>),
    /// EXEC of a transaction: one `MULTI ... EXEC` per slot group.
    Exec(Box<Exec>),
    /// A pop over keys of several slots.
    Pop(Box<pop::Pop>),
    /// A list move between keys of two slots.
    Move(Box<lmove::Move>),
    /// A rename or copy between keys of two slots.
    Rename(Box<rename::Rename>),
    /// An SMOVE between sets of two slots.
    SetMove(Box<smove::SetMove>),
    /// XREAD with BLOCK, or XREADGROUP, over streams of several slots.
    Read(Box<xread::Read>),
    /// A request that must wait for everything before it (see [`Entry::holds_pipeline`]):
    /// started when it reaches the head of the queue.
    Later(Box<Later>),
    /// Answered, as bytes for the client.
    Done(Bytes),
    /// A pub/sub command: sent on the subscriber connection when it reaches the head of the
    /// queue, so that its confirmations follow the replies to everything before it; then it
    /// waits there for that many confirmations (so that what follows comes after them).
    Subscribe(Request, usize),
    /// A pub/sub command sent, waiting for this many more confirmations.
    Confirming(usize),
    /// A pub/sub command run first on the keyspace notification mirrors (`session/notify.rs`),
    /// waiting for them before it is sent like a `Subscribe`.
    Mirroring(Request, usize),
    /// SSUBSCRIBE or SUNSUBSCRIBE (`session/shard.rs`): sent on the shard connections when it
    /// reaches the head of the queue, answered when the nodes have.
    Shard(Box<shard::Op>),
}

/// One request (or part) on its way to a node.
#[derive(Debug)]
struct Pending {
    req: Request,
    /// What to send instead of `req` (a `MULTI ... EXEC` group), and how many reply frames it
    /// produces.
    payload: Option<(Bytes, u32)>,
    /// `None`: a pooled connection; `Some(n)`: the client's own connection number `n` to the
    /// node (blocking commands, WATCH).
    lane: Option<u32>,
    target: Target,
    redirects: u32,
    /// Set at the first retry: when to give up.
    give_up_at: Option<Instant>,
    /// NOSCRIPT was already answered by loading the script once.
    script_loaded: bool,
    /// The reply carries key names to map back to the client's names.
    restore: bool,
    /// The node a redirect last sent it to; `None`: its target's node. A redirect's unknown
    /// host is filled in from the node that sent the redirect.
    redirected_to: Option<Arc<str>>,
    /// Sent to a slot seen migrating, and refusable for it: the client's next requests wait
    /// for its answer (`Entry::holds_pipeline`).
    holds: bool,
}

#[derive(Debug)]
struct Gather {
    /// The client's request, for finishing (INFO, SCAN).
    req: Request,
    parts: Vec<(Pending, Option<Bytes>)>,
    remaining: usize,
    merge: Merge,
    finish: Finish,
}

/// A transaction's EXEC in progress.
#[derive(Debug)]
struct Exec {
    /// Each group, its request state, and whether it is answered.
    groups: Vec<(transaction::Group, Pending, bool)>,
    /// One reply per queued command, filled group by group.
    results: Vec<Option<Frame>>,
    /// Groups sent and not yet answered.
    waiting: usize,
    /// The first error that ends the transaction, if any.
    failed: Option<Frame>,
    /// With key names rewritten (`names.rs`): each queued command's table name, so that key
    /// names in its reply are mapped back. Empty otherwise.
    commands: Vec<&'static str>,
}

/// A client's subscriptions.
#[derive(Debug, Default)]
struct PubSub {
    /// The client's subscriber connection.
    conn: Option<BackendConn>,
    /// The channels and patterns the client is subscribed to, tracked as Redis tracks them,
    /// so that RESP2 subscribed mode starts and ends exactly where it would on one node.
    channels: std::collections::HashSet<Bytes>,
    /// See `channels`.
    patterns: std::collections::HashSet<Bytes>,
    /// Shard channels and the connections they are subscribed on.
    shard: shard::Shard,
    /// The node of `conn`.
    conn_node: Option<Arc<str>>,
    /// Subscriber connections to the other masters, for keyspace notifications
    /// (`session/notify.rs`); opened on first use.
    mirrors: Option<Vec<BackendConn>>,
    /// Mirrors that have not yet run the command waiting at the head ([`Entry::Mirroring`]).
    mirror_wait: usize,
}

/// What a client that uses transactions, blocking commands or CLIENT REPLY holds.
#[derive(Debug, Default)]
struct Stateful {
    /// Connections of this client's own (blocking commands, WATCH), by node and lane.
    dedicated: Vec<(Arc<str>, u32, BackendConn)>,
    /// Commands queued since MULTI.
    tx: Option<transaction::Queued>,
    /// The slot of the keys this client WATCHes (on its own connection 0 to their node).
    watch: Option<Slot>,
    /// CLIENT REPLY: whether the replies of the next requests are written.
    reply_mode: ReplyMode,
    /// Requests (by sequence number, ascending) whose replies are not written.
    silenced: VecDeque<u64>,
    /// CLIENT UNBLOCK from another client: the blocked requests it ends, and how (TIMEOUT or
    /// ERROR), until they have answered.
    unblocking: Option<(Vec<u64>, &'static [u8])>,
}

/// CLIENT REPLY ON / OFF / SKIP.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    #[default]
    On,
    Off,
    /// The next request's reply only.
    SkipNext,
}

struct Session {
    shared: Arc<Shared>,
    /// Request timing, byte counts, idle timeout, output buffer limit (`metrics::Meter`).
    meter: crate::metrics::Meter,
    client: ClientState,
    queue: VecDeque<Entry>,
    /// Sequence number of `queue[0]`.
    head_seq: u64,
    replies: Arc<ReplyQueue>,
    /// What other clients see of this one (`server::ClientStatus`).
    status: Arc<ClientStatus>,
    spare: VecDeque<Delivery>,
    wbuf: BytesMut,
    /// Stop reading; close once the queue is empty and written.
    closing: bool,
    /// Another client's CLIENT KILL: write nothing more, drop the connection once nothing is
    /// under way.
    killed: bool,
    /// Decode nothing more, not even requests already read (QUIT, a protocol error, a lost
    /// subscriber connection). Without it, requests read before `closing` held behind a
    /// blocking command are still decoded and answered.
    quitting: bool,
    /// Transaction state and the client's own connections, for clients that use them (boxed:
    /// most clients never do).
    stateful: Option<Box<Stateful>>,
    /// Pub/sub state, for clients that use it (boxed: most clients never do).
    pubsub: Option<Box<PubSub>>,
    /// The slot map this client's requests are sent by. It is taken when nothing is in flight
    /// and kept while anything is, so that a later request never reaches a key's new owner
    /// ahead of an earlier one still on its way to the old owner (which will redirect it).
    /// Dropped when the client is idle.
    routes: Option<Arc<Routes>>,
    /// Decode nothing more until everything before is answered: the map changed while
    /// requests were in flight, or one of them waits to be sent again.
    drain: bool,
}

/// Serves one client until it disconnects, QUITs, sends invalid input, or `shutdown` fires
/// (then in-flight requests are answered first).
///
/// The session is built here, outside the returned future, and boxed: the future (the client's
/// task, which the runtime rounds up to its alignment) then holds a pointer and the serve
/// future, and no slots for what building the session needed.
pub fn run(
    conn: Accepted,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> {
    let Accepted {
        rd,
        wr,
        peer,
        local,
    } = conn;
    let remote = Remote {
        inbox: Arc::new(ReplyQueue::default()),
        status: Arc::default(),
    };
    let meter = crate::metrics::Meter::new(&shared, peer.clone(), remote.status.clone());
    let replies = remote.inbox.clone();
    let status = remote.status.clone();
    let client = ClientState::new(shared.clone(), peer, local, remote);
    let session = Box::new(Session {
        meter,
        shared,
        client,
        queue: VecDeque::new(),
        head_seq: 0,
        replies,
        status,
        spare: VecDeque::new(),
        wbuf: BytesMut::new(),
        closing: false,
        killed: false,
        quitting: false,
        stateful: None,
        pubsub: None,
        routes: None,
        drain: false,
    });
    session.serve_client(rd, wr, shutdown)
}

/// A request started only once every request before it is answered, as one node would run
/// it: blocking commands, commands the proxy carries out in several steps, and what runs on
/// the client's own connection to a node while its earlier requests went on the shared one
/// (WATCH, and EXEC after WATCH), which could otherwise run before them.
#[derive(Debug)]
enum Later {
    /// A blocking command on one slot.
    Blocking(Pending),
    /// WATCH, on the client's own connection.
    Watch(Pending),
    /// EXEC after WATCH: the watched group goes on the client's own connection.
    Exec(Box<Exec>),
    /// HELLO, RESET, SELECT: the replies before them keep the protocol and database they
    /// were asked in, and the requests before them (on the connections of that protocol) run
    /// before those after them.
    Local(&'static str, Request),
    Pop(pop::Pop),
    Move(lmove::Move),
    Rename(rename::Rename),
    SetMove(smove::SetMove),
    Read(xread::Read),
    /// WAIT: the client's writes before it are done by then.
    Wait(Request),
}

// === impl Entry ===

impl Entry {
    /// True for a request the client's later requests must wait for: a blocking command, or a
    /// command the proxy carries out in several steps (a cross-slot pop, move or stream read,
    /// WAIT), until its last step is sent: the other groups of a transaction after its watched
    /// group. A store command's write, a run over copies, and a multi-key request or
    /// transaction group sent to a slot seen migrating (`motion`) hold until answered: a node
    /// may refuse them while the slot migrates, they are sent again, and the client's later
    /// requests must not run in between. One node runs a client's commands one at a time;
    /// these are the ones whose execution could otherwise overlap the next ones (a later write
    /// to the destination would run before the store's own).
    fn holds_pipeline(&self) -> bool {
        match self {
            Entry::Waiting(p) => p.holds || matches!(p.target, Target::Blocking(_)),
            Entry::Gather(g) => {
                matches!(
                    g.finish,
                    Finish::Store(_) | Finish::Stored(_) | Finish::Copies(_) | Finish::CopiesRan(_)
                ) || g.parts.iter().any(|(p, reply)| p.holds && reply.is_none())
            }
            Entry::Exec(x) => {
                let watched_first = x.groups.len() > 1
                    && x.groups
                        .first()
                        .is_some_and(|(g, _, done)| g.watched && !done);
                watched_first || x.groups.iter().any(|(_, p, done)| p.holds && !done)
            }
            Entry::Pop(_)
            | Entry::Move(_)
            | Entry::Rename(_)
            | Entry::SetMove(_)
            | Entry::Read(_)
            | Entry::Later(_) => true,
            _ => false,
        }
    }
}

// === impl Pending ===

impl Pending {
    fn new(req: Request, target: Target) -> Pending {
        Pending {
            req,
            payload: None,
            lane: matches!(target, Target::Blocking(_)).then_some(0),
            target,
            redirects: 0,
            give_up_at: None,
            script_loaded: false,
            restore: false,
            redirected_to: None,
            holds: false,
        }
    }
}

// === impl Session ===

impl Session {
    /// The client's task. Its arguments are all it keeps besides the serve loop's future:
    /// arguments of an async fn stay in its future, so nothing is passed by value twice.
    async fn serve_client(
        mut self: Box<Self>,
        mut rd: ClientRead,
        mut wr: ClientWrite,
        shutdown: CancellationToken,
    ) {
        if let Err(e) = self.serve(&mut rd, &mut wr, &shutdown).await {
            self.meter.io_error();
            tracing::debug!(client = self.client.id, error = %e, "client connection closed");
        }
        self.drop_subscriptions();
    }

    async fn serve(
        &mut self,
        rd: &mut ClientRead,
        wr: &mut ClientWrite,
        shutdown: &CancellationToken,
    ) -> std::io::Result<()> {
        let mut rbuf = BytesMut::new();
        let max_pipeline = self.shared.config.max_pipeline;
        // Created once: polling a fresh `cancelled()` future every turn would take the
        // token's lock, which every session shares. Boxed: inline, it would push the client's
        // task past a size class of the runtime's (measured: 1.72 instead of 1.82 KB per idle
        // client).
        let mut cancelled = Box::pin(shutdown.cancelled());
        // Polled here once, which registers the task's waker with the token; after that only
        // once the token is cancelled (each poll takes the token's lock). The registration
        // stays, so cancelling still wakes the task.
        std::future::poll_fn(|cx| {
            let _ = cancelled.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        // True when decoding stopped at `max_pipeline` with complete requests possibly left in
        // `rbuf`: they must be decoded once there is room, not when the socket next has data.
        let mut held = false;
        // The client closed its side.
        let mut peer_gone = false;
        // Yielded once since the last write (see below).
        let mut yielded = false;
        loop {
            if (peer_gone || self.killed) && self.meter.only_blocked_pending() {
                // Gone while blocked: nobody to answer (Redis drops it too). Dropping the
                // session closes its own connections, so a blocked pop takes nothing more.
                return Ok(());
            }
            if self.killed {
                // CLIENT KILL: nothing more is written. What is in flight is let finish (a
                // cross-slot move half done must push what it popped), then the connection
                // is dropped, unanswered.
                self.wbuf.clear();
                if self.queue.is_empty() {
                    return Ok(());
                }
            }
            if held && !self.quitting && self.queue.len() < max_pipeline {
                held = self.decode_all(&mut rbuf);
                // A request decoded now may be at the head of the queue, to be started there.
                self.flush_ready();
            }
            if !self.wbuf.is_empty() && !self.queue.is_empty() && !yielded {
                // Some replies are ready, others are on their way (a pipeline spread over
                // several nodes): let the other node connections deliver first, so that one
                // write carries them all.
                yielded = true;
                self.meter.new_turn();
                tokio::task::yield_now().await;
                self.take_replies();
                self.flush_ready();
                continue;
            }
            if self.closing && self.queue.is_empty() && self.wbuf.is_empty() {
                // Boxed: its drain buffer would otherwise sit in every idle session's state.
                Box::pin(crate::shutdown::close(rd, wr)).await;
                return Ok(());
            }
            // While held behind a blocking command, read on only to notice the client leaving.
            let can_read = !self.closing
                && self.queue.len() < max_pipeline
                && self.wbuf.len() < OUTPUT_HIGH_WATER
                && !(held && rbuf.len() >= HELD_READ_LIMIT);
            self.meter.new_turn();
            tokio::select! {
                biased;
                () = self.replies.ready() => self.take_replies(),
                // Wait for data before taking a buffer, so that an idle client holds none.
                r = rd.readable(), if can_read => {
                    r?;
                    if rbuf.capacity() == 0 && self.queue.capacity() == 0 {
                        self.take_buffers(&mut rbuf);
                    }
                    if rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
                        let more = if rbuf.is_empty() {
                            READ_CHUNK
                        } else {
                            rbuf.len().max(16 * 1024)
                        };
                        rbuf.reserve(more);
                    }
                    // One poll of `read_buf`, not `try_read_buf`: a short read then clears the
                    // socket's readiness, which saves a `recv` that would only say EAGAIN.
                    let read = std::pin::pin!(rd.read_buf(&mut rbuf));
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    if let std::task::Poll::Ready(r) = read.poll(&mut cx) {
                        if self.meter.read(r?) == 0 {
                            peer_gone = true;
                            self.closing = true;
                        } else {
                            held = self.decode_all(&mut rbuf);
                        }
                    }
                }
                r = wr.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => {
                    self.meter.wrote(r?);
                    yielded = false;
                }
                () = &mut cancelled, if !self.closing && shutdown.is_cancelled() => {
                    // Answer what the client has already sent before closing (shutdown.rs).
                    crate::shutdown::read_buffered(rd, &mut rbuf);
                    held = self.decode_all(&mut rbuf);
                    self.closing = true;
                }
                () = self.meter.idle(), if self.queue.is_empty() && !self.is_subscriber() && !self.closing && !self.shared.monitors.has(self.client.id) => self.closing = true,
            }
            self.flush_ready();
            if self.killed {
                self.wbuf.clear();
            }
            self.publish_status();
            if !self.wbuf.is_empty() && (self.queue.is_empty() || yielded) && self.write_now(wr)? {
                yielded = false;
            }
            if self.meter.output_exceeded(self.wbuf.len()) {
                return Ok(());
            }
            if self.queue.is_empty() && self.wbuf.is_empty() && rbuf.is_empty() {
                // Idle: hold no buffers, so that thousands of idle clients cost little. They
                // wait for the next session to wake on this thread (`buffers.rs`).
                Buffers {
                    rbuf: std::mem::take(&mut rbuf),
                    wbuf: std::mem::take(&mut self.wbuf),
                    queue: std::mem::take(&mut self.queue),
                    spare: std::mem::take(&mut self.spare),
                    replies: self.replies.release(),
                }
                .keep();
                self.meter.release();
                self.routes = None;
            }
        }
    }

    /// Writes the ready replies now if the socket takes them, rather than in the next turn's
    /// `select!`: one poll, with a waker that does nothing (if the socket is full, that turn
    /// waits for it). Returns true if anything was written.
    fn write_now(&mut self, wr: &mut ClientWrite) -> std::io::Result<bool> {
        let write = std::pin::pin!(wr.write_buf(&mut self.wbuf));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match write.poll(&mut cx) {
            std::task::Poll::Ready(n) => Ok(self.meter.wrote(n?) > 0),
            std::task::Poll::Pending => Ok(false),
        }
    }

    /// Takes the buffers an idle session left on this thread, if any, for those this session
    /// has none of.
    fn take_buffers(&mut self, rbuf: &mut BytesMut) {
        let Some(b) = Buffers::take() else {
            return;
        };
        if rbuf.capacity() == 0 {
            *rbuf = b.rbuf;
        }
        if self.wbuf.capacity() == 0 {
            self.wbuf = b.wbuf;
        }
        if self.queue.capacity() == 0 {
            self.queue = b.queue;
        }
        if self.spare.capacity() == 0 {
            self.spare = b.spare;
        }
        self.replies.install(b.replies);
    }

    /// Decodes and starts the complete requests in `rbuf`, up to a batch and the pipeline cap.
    /// Returns true if it stopped early (more complete requests may be waiting in `rbuf`).
    fn decode_all(&mut self, rbuf: &mut BytesMut) -> bool {
        // Read per batch, not kept per session: SIGHUP may change the limits.
        let config = self.shared.config.get();
        let limits = config.protocol_limits();
        for _ in 0..DECODE_BATCH {
            if self.quitting {
                return false;
            }
            if self.queue.len() >= config.max_pipeline {
                return true;
            }
            if self.queue.back().is_some_and(Entry::holds_pipeline) {
                // One node runs nothing after a blocking or multi-step command until it is
                // done: neither does the proxy.
                return true;
            }
            if self.must_drain() {
                return true;
            }
            match protocol::decode_request(rbuf, &limits) {
                Ok(Some(req)) => self.start(req, config),
                Ok(None) => return false,
                Err(e) => {
                    self.fail_new(ProxyError::Protocol(e));
                    return false;
                }
            }
        }
        !rbuf.is_empty()
    }

    /// Before a new request: true if it must wait for the ones in flight (see `drain`). With
    /// nothing in flight, takes the current slot map to send by.
    fn must_drain(&mut self) -> bool {
        if !self.queue.is_empty() {
            return self.drain || (self.routes.is_some() && self.routes_stale());
        }
        self.drain = false;
        if self.routes_stale() {
            self.routes = Some(self.shared.topology.routes().clone());
        }
        false
    }

    /// True if the session has no slot map to send by, or an older one than the current.
    fn routes_stale(&self) -> bool {
        let current = self.shared.topology.generation();
        self.routes
            .as_ref()
            .is_none_or(|r| r.generation() != current)
    }

    /// The slot map for sending request `seq`: the session's own, or the current one if `seq`
    /// is the oldest request (nothing sent earlier can be overtaken). Sending by a newer map
    /// while others are in flight makes the next requests wait for them.
    fn routes_for(&mut self, seq: u64) -> &Routes {
        if self.routes_stale() && (seq == self.head_seq || self.routes.is_none()) {
            self.routes = Some(self.shared.topology.routes().clone());
            if self.queue.len() > 1 {
                self.drain = true;
            }
        }
        self.routes.as_deref().expect("set above")
    }

    /// Runs `f` on the slot map this session sends by (the current one if it has none).
    fn with_routes<R>(&self, f: impl FnOnce(&Routes) -> R) -> R {
        with_routes(&self.routes, &self.shared, f)
    }

    fn next_seq(&self) -> u64 {
        self.head_seq + self.queue.len() as u64
    }

    /// The queue position of request `seq`, if it is still queued.
    fn index_of(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq.checked_sub(self.head_seq)?).ok()
    }

    /// Answers a command the proxy answers itself.
    fn answer_local(&mut self, name: &'static str, req: &Request) {
        let version = self.client.version;
        if name == "reset" {
            self.drop_subscriptions();
            self.shared.monitors.remove(self.client.id);
        }
        match local::answer(name, req, &mut self.client, &self.shared) {
            Ok((frame, after)) => {
                self.push_done(encode(&frame, self.client.version));
                if after == After::Close {
                    self.closing = true;
                    self.quitting = true;
                }
            }
            Err(e) => self.fail_new(e),
        }
        if self.client.version != version {
            self.protocol_changed();
        }
        if name == "client|setinfo" || name == "hello" {
            self.client.publish();
        }
    }

    /// After HELLO or RESET changed the client's protocol. The client's own connections
    /// forward replies as their node encodes them, in the protocol they were opened with:
    /// close them, so that the next blocking command opens one that speaks the new protocol.
    /// Nothing is in flight on them (HELLO and RESET wait for the requests before them).
    /// Under a WATCH, its connection (lane 0 to the watched slot's node), which EXEC needs,
    /// is kept and switched with HELLO, which leaves the watch in place.
    fn protocol_changed(&mut self) {
        let watched = self.stateful.as_ref().and_then(|st| st.watch);
        let keep = watched
            .and_then(|slot| self.resolve(Target::Slot(slot)))
            .map(|pool| pool.addr().clone());
        let version = self.client.version;
        let Some(st) = self.stateful.as_mut() else {
            return;
        };
        st.dedicated
            .retain(|(addr, lane, _)| *lane == 0 && keep.as_ref() == Some(addr));
        if let Some((_, _, conn)) = st.dedicated.first() {
            let hello = crate::backend::hello_request(version);
            let (tx, _rx) = tokio::sync::oneshot::channel();
            conn.send(Job::new(Bytes::from_static(hello), ReplyTo::Oneshot(tx)));
        }
    }

    /// Takes a new request: answers it, refuses it, or sends it on.
    fn start(&mut self, req: Request, config: &Config) {
        let spec = routing::lookup(req.name(), req.arg(1));
        self.meter.start(self.next_seq(), spec, req.raw());
        if !self.client.authenticated && !spec.is_some_and(|s| local::allowed_before_auth(s.name)) {
            return self.fail_new(ProxyError::NoAuth);
        }
        if self.shared.monitors.active() {
            if spec.is_some_and(|s| s.name == "reset") {
                // A monitor's RESET ends its monitoring before it is shown (Redis shows a
                // command once run).
                self.shared.monitors.remove(self.client.id);
            }
            self.feed_monitors(spec, &req);
        }
        if spec.is_some_and(|s| s.name == "client|reply") && req.len() == 3 {
            return self.client_reply(&req);
        }
        let seq = self.next_seq();
        if let Some(st) = self.stateful.as_mut() {
            if st.reply_mode != ReplyMode::On {
                st.silenced.push_back(seq);
                if st.reply_mode == ReplyMode::SkipNext {
                    st.reply_mode = ReplyMode::On;
                }
            }
        }
        match spec.map(|s| s.name) {
            // A node caches the scripts it evaluates; EVALSHA may then go to another master.
            Some("eval" | "eval_ro") => {
                if let Some(body) = req.arg_bytes(1) {
                    self.shared.scripts.remember(body);
                }
            }
            Some("script|flush") => self.shared.scripts.clear(),
            _ => {}
        }
        let renaming = self.renaming(config);
        let req = if renaming {
            self.rename_keys(req, spec)
        } else {
            req
        };
        if let Some(spec) = spec {
            if self.transaction_command(spec.name, &req) {
                return;
            }
        }
        if self.in_transaction() {
            return self.queue_in_transaction(req, spec);
        }
        if spec.is_some_and(|s| s.name == "monitor") {
            // From now on this client gets a line for every command (`monitor.rs`).
            self.shared
                .monitors
                .add(self.client.id, self.replies.clone());
            return self.push_done(Bytes::from_static(b"+OK\r\n"));
        }
        if let Some(spec) = spec {
            if self.pubsub_command(spec, &req) {
                return;
            }
        }
        let masters = || self.with_routes(|r| r.masters().len());
        let namespaced = config.databases == Databases::Namespaced;
        let plan = match spec.filter(|_| renaming).and_then(|spec| {
            names::keyspace_plan(spec.name, &req, self.client.db, masters(), namespaced)
        }) {
            Some(plan) => plan,
            None => dispatch::plan(&req, spec, config, &masters),
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => return self.fail_new(e),
        };
        match plan {
            // HELLO, RESET and SELECT change how later replies are encoded or named, and which
            // node connections later requests take: they wait for everything before them.
            Plan::Local(name @ ("hello" | "reset" | "select")) if !self.queue.is_empty() => {
                self.later(Later::Local(name, req))
            }
            Plan::Local(name) => self.answer_local(name, &req),
            Plan::Forward(target) => {
                let seq = self.next_seq();
                let mut pending = Pending::new(req, target);
                pending.restore = renaming && spec.is_some_and(|s| names::reply_has_keys(s.name));
                if matches!(target, Target::Blocking(_)) {
                    return self.later(Later::Blocking(pending));
                }
                self.queue.push_back(Entry::Waiting(pending));
                self.send(seq, 0, None);
            }
            Plan::Split(split) => {
                let parts = split
                    .parts
                    .into_iter()
                    .map(|(slot, r)| (Pending::new(r, Target::Slot(slot)), None))
                    .collect();
                let finish = match split.store {
                    Some(dst) => Finish::Store(dst),
                    None => Finish::AsIs,
                };
                self.start_gather(req, parts, split.merge, finish);
            }
            Plan::Fanout {
                fan,
                request,
                merge,
                finish,
            } => {
                let n = self.with_routes(|routes| match fan {
                    Fan::Masters | Fan::MastersOwnConnection => routes.masters().len(),
                    Fan::AllNodes => routes.node_count(),
                });
                if n == 0 {
                    return self.fail_new(ProxyError::NoSlotMap);
                }
                let sub = request.unwrap_or_else(|| req.clone());
                let parts = (0..n)
                    .map(|i| {
                        let target = match fan {
                            Fan::Masters | Fan::MastersOwnConnection => Target::Master(i),
                            Fan::AllNodes => Target::Node(i),
                        };
                        let mut part = Pending::new(sub.clone(), target);
                        if fan == Fan::MastersOwnConnection {
                            part.lane = Some(0);
                        }
                        (part, None)
                    })
                    .collect();
                self.start_gather(req, parts, merge, finish);
            }
            Plan::Wait => self.later(Later::Wait(req)),
            Plan::Publish => {
                let nodes = self.with_routes(Routes::node_count);
                let numsub = Request::from_args([
                    b"PUBSUB".as_slice(),
                    b"NUMSUB",
                    req.arg(1).unwrap_or_default(),
                ]);
                let parts = (0..nodes.max(1))
                    .map(|i| match i {
                        0 => (Pending::new(req.clone(), Target::Master(0)), None),
                        i => (Pending::new(numsub.clone(), Target::Node(i)), None),
                    })
                    .collect();
                self.start_gather(req, parts, Merge::Sum, Finish::Publish);
            }
            Plan::StreamRead => match xread::Read::parse(spec.map_or("xread", |s| s.name), &req) {
                Ok(read) => self.later(Later::Read(read)),
                Err(e) => self.fail_new(e),
            },
            Plan::Move => match lmove::Move::parse(spec.map_or("", |s| s.name), &req) {
                Ok(m) => self.later(Later::Move(m)),
                Err(e) => self.fail_new(e),
            },
            Plan::SetMove => self.later(Later::SetMove(smove::SetMove::parse(&req))),
            Plan::OnCopies(copies) => {
                let parts = copies
                    .reads()
                    .into_iter()
                    .map(|(read, slot)| (Pending::new(read, Target::Slot(slot)), None))
                    .collect();
                self.start_gather(req, parts, Merge::Same, Finish::Copies(Box::new(copies)));
            }
            Plan::Rename => {
                match rename::Rename::parse(spec.map_or("", |s| s.name), &req, self.client.db) {
                    Ok(r) => self.later(Later::Rename(r)),
                    Err(e) => self.fail_new(e),
                }
            }
            Plan::MultiPop => match pop::Pop::parse(spec.map_or("", |s| s.name), &req) {
                Ok(pop) => self.later(Later::Pop(pop)),
                Err(e) => self.fail_new(e),
            },
            Plan::Scan {
                master,
                request,
                pattern,
            } => {
                let parts = vec![(Pending::new(request, Target::Master(master)), None)];
                let finish = Finish::Scan {
                    master,
                    pattern,
                    carried: Vec::new(),
                };
                self.start_gather(req, parts, Merge::Concat, finish);
            }
        }
    }

    /// Queues a request that starts once everything before it is answered (`flush_ready`).
    fn later(&mut self, later: Later) {
        self.queue.push_back(Entry::Later(Box::new(later)));
    }

    /// Starts the `Later` request at the head of the queue.
    fn start_later(&mut self) {
        let Some(Entry::Later(later)) = self.queue.pop_front() else {
            return;
        };
        let seq = self.head_seq;
        match *later {
            Later::Blocking(pending) | Later::Watch(pending) => {
                self.queue.push_front(Entry::Waiting(pending));
                self.send(seq, 0, None);
            }
            Later::Exec(x) => {
                self.queue.push_front(Entry::Exec(x));
                self.send(seq, 0, None);
            }
            Later::Pop(pop) => {
                self.queue.push_front(Entry::Pop(Box::new(pop)));
                self.pop_begin(seq);
            }
            Later::Move(m) => {
                self.queue.push_front(Entry::Move(Box::new(m)));
                self.send(seq, 0, None);
            }
            Later::Rename(r) => {
                self.queue.push_front(Entry::Rename(Box::new(r)));
                self.send(seq, 0, None);
            }
            Later::SetMove(m) => {
                self.queue.push_front(Entry::SetMove(Box::new(m)));
                self.send(seq, 0, None);
            }
            Later::Read(read) => {
                self.queue.push_front(Entry::Read(Box::new(read)));
                self.read_begin(seq);
            }
            Later::Wait(req) => self.start_wait(req),
            // Nothing after it has been decoded: the queue is empty, the answer goes out now.
            Later::Local(name, req) => {
                debug_assert!(self.queue.is_empty());
                self.answer_local(name, &req)
            }
        }
    }

    fn start_gather(
        &mut self,
        req: Request,
        parts: Vec<(Pending, Option<Bytes>)>,
        merge: Merge,
        finish: Finish,
    ) {
        if parts.is_empty() {
            // Nothing to ask (an argument error found while splitting): merge nothing.
            let frame = merge.merge(Vec::new());
            return self.push_done(encode(&frame, self.client.version));
        }
        let seq = self.next_seq();
        let n = parts.len();
        self.meter.fanout(seq, n);
        self.queue.push_back(Entry::Gather(Box::new(Gather {
            req,
            parts,
            remaining: n,
            merge,
            finish,
        })));
        for part in 0..n {
            self.send(seq, part as u32, None);
        }
    }

    fn pending_mut(&mut self, seq: u64, part: u32) -> Option<&mut Pending> {
        let idx = self.index_of(seq)?;
        if matches!(self.queue.get(idx)?, Entry::Pop(_)) {
            return self.pop_pending(seq, part);
        }
        match self.queue.get_mut(idx)? {
            Entry::Waiting(p) if part == 0 => Some(p),
            Entry::Move(m) if part == 0 => Some(m.pending()),
            Entry::Rename(r) if part == 0 => Some(r.pending()),
            Entry::SetMove(m) if part == 0 => Some(m.pending()),
            Entry::Read(r) => r.pending(part),
            Entry::Gather(g) => match g.parts.get_mut(part as usize)? {
                (p, None) => Some(p),
                (_, Some(_)) => None,
            },
            Entry::Exec(x) => match x.groups.get_mut(part as usize)? {
                (_, p, false) => Some(p),
                (_, _, true) => None,
            },
            _ => None,
        }
    }

    /// Sends (or sends again) request `seq`, part `part`; `to` overrides the node (for
    /// redirects): `(node, asking)`.
    fn send(&mut self, seq: u64, part: u32, to: Option<(Arc<NodePool>, bool)>) {
        let Some(p) = self.pending_mut(seq, part) else {
            return;
        };
        let target = p.target;
        let lane = p.lane;
        p.redirected_to = to.as_ref().map(|(pool, _)| pool.addr().clone());
        let (payload, frames) = match &p.payload {
            Some((payload, frames)) => (payload.clone(), *frames),
            None => (p.req.raw().clone(), 1),
        };
        if matches!(target, Target::Blocking(_)) {
            self.meter.block(seq);
        }
        let reply = ReplyTo::Session {
            queue: self.replies.clone(),
            seq,
            part,
        };
        let client = self.client.id;
        let (pool, asking) = match to {
            Some(to) => to,
            None => match resolve(self.routes_for(seq), target, client).cloned() {
                Some(pool) => (pool, false),
                None => {
                    // No owner yet: wait for the map as for an unreachable node.
                    return reply.send(Reply::Failed(BackendError::NotSent));
                }
            },
        };
        let job = Job {
            payload,
            asking,
            frames,
            reply,
        };
        match lane {
            Some(lane) => self.dedicated_conn(&pool, lane).send(job),
            None => pool.conn(self.client.version, self.client.id).send(job),
        }
        if let Some(slot) = target.slot() {
            if self.shared.topology.motion().migrating(slot) {
                self.hold_if_refusable(seq, part);
            }
        }
    }

    /// Part `part` of request `seq` was sent to a slot seen migrating (`motion`): if the node
    /// may refuse it for keys in motion (several keys, or a transaction group) and have it sent
    /// again, the client's next requests wait for its answer.
    fn hold_if_refusable(&mut self, seq: u64, part: u32) {
        if let Some(p) = self.pending_mut(seq, part) {
            p.holds = p.payload.is_some()
                || routing::lookup(p.req.name(), p.req.arg(1))
                    .is_some_and(|spec| spec.may_name_several_keys());
        }
    }

    fn resolve(&self, target: Target) -> Option<Arc<NodePool>> {
        self.with_routes(|routes| resolve(routes, target, self.client.id).cloned())
    }

    /// The client's own connection number `lane` to the node, opened on first use.
    fn dedicated_conn(&mut self, pool: &NodePool, lane: u32) -> &BackendConn {
        let version = self.client.version;
        let st = self.stateful();
        let pos = st
            .dedicated
            .iter()
            .position(|(addr, l, conn)| addr == pool.addr() && *l == lane && !conn.is_closed());
        let i = match pos {
            Some(i) => i,
            None => {
                st.dedicated
                    .retain(|(addr, l, _)| !(addr == pool.addr() && *l == lane));
                st.dedicated
                    .push((pool.addr().clone(), lane, pool.dedicated(version)));
                st.dedicated.len() - 1
            }
        };
        &st.dedicated[i].2
    }

    /// The transaction and own-connection state, created on first use.
    fn stateful(&mut self) -> &mut Stateful {
        self.stateful.get_or_insert_with(Default::default)
    }

    /// True between MULTI and EXEC/DISCARD.
    fn in_transaction(&self) -> bool {
        self.stateful.as_ref().is_some_and(|s| s.tx.is_some())
    }

    /// Takes the queued transaction, if any.
    fn take_transaction(&mut self) -> Option<transaction::Queued> {
        self.stateful.as_mut().and_then(|s| s.tx.take())
    }

    /// Takes the watched slot, if any.
    fn take_watch(&mut self) -> Option<Slot> {
        self.stateful.as_mut().and_then(|s| s.watch.take())
    }

    fn take_replies(&mut self) {
        let mut batch = std::mem::take(&mut self.spare);
        self.replies.take(&mut batch);
        for d in batch.drain(..) {
            self.on_reply(d);
        }
        self.spare = batch;
    }

    fn on_reply(&mut self, d: Delivery) {
        let Delivery { seq, part, reply } = d;
        if seq == CONTROL_SEQ {
            return self.on_control(part);
        }
        if seq == crate::monitor::MONITOR_SEQ {
            if let Reply::Frame(line) = reply {
                self.wbuf.extend_from_slice(&line);
            }
            return;
        }
        if seq == SUBSCRIBER_SEQ {
            return match part {
                0 => self.on_subscriber_frame(reply),
                p if notify::is_mirror_part(p) => self.on_mirror_frame(reply),
                _ => self.on_shard_delivery(part, reply),
            };
        }
        if matches!(reply, Reply::Retry) && self.cancelling(seq, part).is_some() {
            return self.unblock(seq, part);
        }
        let Some(p) = self.pending_mut(seq, part) else {
            return;
        };
        let target = p.target;
        match reply {
            Reply::Frame(frame) => {
                if frame.first() == Some(&b'-') {
                    // A payload of several commands for one key (an SMOVE's take) is
                    // redirected as a whole when its first reply says so.
                    let first = frame
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(&frame[..], |end| &frame[..=end]);
                    if self.on_error_reply(seq, part, first) {
                        return;
                    }
                }
                self.complete(seq, part, frame);
            }
            Reply::Retry => self.send(seq, part, None),
            Reply::Failed(BackendError::NotSent) => {
                // Never reached the node: safe to send again once the map has changed.
                self.shared.topology.request_refresh();
                let node = self.resolve(target).map(|p| p.addr().to_string());
                let no_map = self.with_routes(|routes| routes.masters().is_empty());
                self.retry_later(seq, part, Duration::from_millis(50), move || match node {
                    Some(node) => ProxyError::Backend {
                        node,
                        failure: BackendError::NotSent,
                    },
                    None if no_map => ProxyError::NoSlotMap,
                    None => match target {
                        Target::Slot(slot) | Target::Blocking(slot) => {
                            ProxyError::SlotNotServed(slot.get())
                        }
                        _ => ProxyError::NoSlotMap,
                    },
                });
            }
            Reply::Failed(failure) => {
                let node = self.node_name(target);
                self.fail_part(seq, part, ProxyError::Backend { node, failure });
            }
        }
    }

    /// Handles redirects and retryable errors. Returns true if the reply was consumed.
    fn on_error_reply(&mut self, seq: u64, part: u32, frame: &[u8]) -> bool {
        let Some(text) = frame.get(1..).and_then(|t| t.strip_suffix(b"\r\n")) else {
            return false;
        };
        let max_redirects = self.shared.config.max_redirects;
        if let Some(kind) = crate::metrics::RedirectKind::of(text) {
            let target = self.pending_mut(seq, part).map(|p| p.target);
            let node = target.map_or_else(String::new, |t| self.node_name(t));
            self.shared.metrics.redirect(kind, &node);
        }
        if let Some(redirect) = Redirect::parse(text) {
            if !redirect.is_moved() {
                self.shared.topology.motion().seen(redirect.slot());
            }
            let Some(p) = self.pending_mut(seq, part) else {
                return false;
            };
            let (target, redirected_to) = (p.target, p.redirected_to.clone());
            let sender = redirected_to.map_or_else(|| self.node_name(target), |a| a.to_string());
            let redirect = redirect.filled_from(&sender);
            let Some(p) = self.pending_mut(seq, part) else {
                return false;
            };
            p.redirects += 1;
            if p.redirects > max_redirects {
                self.fail_part(seq, part, ProxyError::TooManyRedirects);
                return true;
            }
            let topology = &self.shared.topology;
            let to = match redirect {
                Redirect::Moved { slot, addr } => {
                    topology.moved(slot, &addr);
                    (topology.pool(&addr), false)
                }
                Redirect::Ask { addr, .. } => (topology.pool(&addr), true),
            };
            self.send(seq, part, Some(to));
            return true;
        }
        if text.starts_with(b"NOSCRIPT") {
            return self.reload_script(seq, part);
        }
        let delay = if text.starts_with(b"TRYAGAIN") || self.own_script_met_moving_slot(seq, text) {
            if let Some(slot) = self.pending_mut(seq, part).and_then(|p| p.target.slot()) {
                self.shared.topology.motion().seen(slot);
            }
            Duration::from_millis(20)
        } else if text.starts_with(b"CLUSTERDOWN") || text.starts_with(b"LOADING") {
            self.shared.topology.request_refresh();
            Duration::from_millis(100)
        } else {
            return false;
        };
        let original = String::from_utf8_lossy(text).into_owned();
        self.retry_later(seq, part, delay, move || ProxyError::Other(original));
        true
    }

    /// True if `text` says that one of the proxy's own scripts met a key of a slot in
    /// migration (a write to a key missing on the slot's old node): it runs again once the
    /// slot has settled, or is asked on the new node. A run over copies (`copies.rs`) wrote
    /// nothing (each step checks first, and the copies are deleted again). A store's write
    /// (`session/store.rs`) had deleted the destination when its first write was refused; run
    /// again, it writes the whole result.
    fn own_script_met_moving_slot(&self, seq: u64, text: &[u8]) -> bool {
        text.starts_with(b"ERR Script attempted to access a non local key")
            && matches!(
                self.index_of(seq).and_then(|i| self.queue.get(i)),
                Some(Entry::Gather(g))
                    if matches!(g.finish, Finish::CopiesRan(_) | Finish::Stored(_))
            )
    }

    /// NOSCRIPT for an EVALSHA whose script the proxy has seen: load it on that node, then send
    /// the EVALSHA again on the same connection (so the load runs first).
    fn reload_script(&mut self, seq: u64, part: u32) -> bool {
        let shared = self.shared.clone();
        let Some(p) = self.pending_mut(seq, part) else {
            return false;
        };
        let name = p.req.name();
        if p.script_loaded
            || !(name.eq_ignore_ascii_case(b"evalsha") || name.eq_ignore_ascii_case(b"evalsha_ro"))
        {
            return false;
        }
        let Some(body) = p.req.arg(1).and_then(|sha| shared.scripts.get(sha)) else {
            return false;
        };
        p.script_loaded = true;
        let target = p.target;
        let lane = p.lane;
        let Some(pool) = self.resolve(target) else {
            return false;
        };
        let load = Request::from_args([&b"SCRIPT"[..], b"LOAD", &body]);
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let job = Job {
            payload: load.raw().clone(),
            asking: false,
            frames: 1,
            reply: ReplyTo::Oneshot(tx),
        };
        match lane {
            Some(lane) => self.dedicated_conn(&pool, lane).send(job),
            None => pool.conn(self.client.version, self.client.id).send(job),
        }
        self.send(seq, part, Some((pool, false)));
        true
    }

    /// Schedules part `part` of request `seq` to be sent again after `delay`, or fails it with
    /// `err()` if its retry budget is spent.
    fn retry_later(
        &mut self,
        seq: u64,
        part: u32,
        delay: Duration,
        err: impl FnOnce() -> ProxyError,
    ) {
        let budget = self.shared.config.retry_timeout();
        let Some(p) = self.pending_mut(seq, part) else {
            return;
        };
        let give_up_at = *p.give_up_at.get_or_insert_with(|| Instant::now() + budget);
        // Retries are bounded by time: a redirect before each (ASK, then TRYAGAIN from the
        // importing node, while a slot migrates) is not a redirect loop.
        p.redirects = 0;
        if Instant::now() + delay > give_up_at {
            return self.fail_part(seq, part, err());
        }
        self.shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        // The client's later requests must not run before this one.
        self.drain = true;
        self.replies.retry_after(delay, seq, part);
    }

    fn node_name(&self, target: Target) -> String {
        self.resolve(target)
            .map_or_else(|| "(none)".to_string(), |p| p.addr().to_string())
    }

    fn fail_part(&mut self, seq: u64, part: u32, e: ProxyError) {
        let (frame, _) = e.reply();
        self.complete(seq, part, encode(&frame, self.client.version));
    }

    /// Records the final reply of part `part` of request `seq`; answers the request once all
    /// its parts are in.
    fn complete(&mut self, seq: u64, part: u32, reply: Bytes) {
        let Some(idx) = self.index_of(seq) else {
            return;
        };
        let Some(entry) = self.queue.get_mut(idx) else {
            return;
        };
        match entry {
            Entry::Waiting(p) if p.restore && reply.first() != Some(&b'-') => {
                let name = routing::lookup(p.req.name(), None).map_or("", |s| s.name);
                let mut buf = BytesMut::from(&reply[..]);
                let restored = match protocol::decode(&mut buf, &Limits::default()) {
                    Ok(Some(frame)) => {
                        let frame =
                            names::restore_reply(&self.shared.names, self.client.db, name, frame);
                        encode(&frame, self.client.version)
                    }
                    _ => reply,
                };
                *entry = Entry::Done(restored);
            }
            Entry::Waiting(_) => *entry = Entry::Done(reply),
            Entry::Gather(g) => {
                let Some(slot @ (_, None)) = g.parts.get_mut(part as usize) else {
                    return;
                };
                slot.1 = Some(reply);
                g.remaining -= 1;
                if g.remaining == 0 {
                    self.gather_done(seq, idx);
                }
            }
            Entry::Exec(_) => self.exec_group_done(seq, idx, part, reply),
            Entry::Pop(_) => self.pop_part_done(seq, idx, part, reply),
            Entry::Move(_) => self.move_done(seq, idx, reply),
            Entry::Rename(_) => self.rename_done(seq, idx, reply),
            Entry::SetMove(_) => self.smove_done(seq, idx, reply),
            Entry::Read(_) => self.read_part_done(seq, idx, part, reply),
            Entry::Done(_)
            | Entry::Subscribe(..)
            | Entry::Confirming(_)
            | Entry::Mirroring(..)
            | Entry::Later(_)
            | Entry::Shard(_) => {}
        }
    }

    /// Every part of the gathered entry `seq` (at queue index `idx`) has answered: answer the
    /// client or, for a store command whose sources merged into a set, write it.
    fn gather_done(&mut self, seq: u64, idx: usize) {
        if self.scan_goes_on(seq, idx) {
            return;
        }
        let (store, copies) = match self.queue.get(idx) {
            Some(Entry::Gather(g)) => match &g.finish {
                Finish::Store(dst) => (Some(dst.clone()), false),
                Finish::Copies(_) => (None, true),
                _ => (None, false),
            },
            _ => (None, false),
        };
        let frame = self.gathered_reply(idx);
        match (store, frame) {
            (_, Frame::Array(dumps)) if copies => self.run_on_copies(seq, idx, dumps),
            (Some(dst), frame) if !matches!(frame, Frame::Error(_)) => {
                self.store_merged(seq, idx, frame, dst)
            }
            (_, frame) => self.queue[idx] = Entry::Done(encode(&frame, self.client.version)),
        }
    }

    /// SCAN entry `seq` (queue index `idx`): if its master's scan has ended and the keys so far
    /// are fewer than the client's COUNT (10 by default), the next master's scan starts in the
    /// same call (its keys are added to these). One node's SCAN returns about COUNT keys per
    /// call, so a small keyspace comes back whole, with cursor 0. True if it went on.
    fn scan_goes_on(&mut self, seq: u64, idx: usize) -> bool {
        let masters = self.with_routes(|r| r.masters().len());
        let Some(Entry::Gather(g)) = self.queue.get_mut(idx) else {
            return false;
        };
        let Finish::Scan {
            master, carried, ..
        } = &mut g.finish
        else {
            return false;
        };
        let Some((p, Some(raw))) = g.parts.first() else {
            return false;
        };
        let Frame::Array(items) = pop::decode(raw) else {
            return false;
        };
        let [Frame::Bulk(cursor), Frame::Array(keys)] = items.as_slice() else {
            return false;
        };
        let count = scan_count(&p.req);
        if cursor.as_ref() != b"0" || *master + 1 >= masters || carried.len() + keys.len() >= count
        {
            return false;
        }
        carried.extend(keys.iter().filter_map(|k| match k {
            Frame::Bulk(k) => Some(k.clone()),
            _ => None,
        }));
        *master += 1;
        let mut args: Vec<&[u8]> = p.req.args().collect();
        args[1] = b"0";
        let next = Pending::new(Request::from_args(args), Target::Master(*master));
        g.parts = vec![(next, None)];
        g.remaining = 1;
        self.send(seq, 0, None);
        true
    }

    /// The keys outside the home slot of entry `seq` (queue index `idx`) have been read
    /// (`dumps`, one reply per read): run the command over copies of them (`copies`), or
    /// answer a failed read.
    fn run_on_copies(&mut self, seq: u64, idx: usize, dumps: Vec<Frame>) {
        let prefix = format!(
            "{}:{}:{seq}",
            self.shared.run_id.get(..12).unwrap_or_default(),
            self.client.id
        );
        let version = self.client.version;
        let Some(Entry::Gather(g)) = self.queue.get_mut(idx) else {
            return;
        };
        let Finish::Copies(copies) = std::mem::replace(&mut g.finish, Finish::AsIs) else {
            return;
        };
        match copies.run(dumps, &prefix, version) {
            Ok((run, home)) => {
                g.parts = vec![(Pending::new(run, Target::Slot(home)), None)];
                g.remaining = 1;
                g.finish = Finish::CopiesRan(copies);
                self.send(seq, 0, None);
            }
            Err(frame) => self.queue[idx] = Entry::Done(encode(&frame, version)),
        }
    }

    /// Merges a gathered entry's parts into the client's reply.
    fn gathered_reply(&mut self, idx: usize) -> Frame {
        let renaming = self.renaming(&self.shared.config);
        let Some(Entry::Gather(g)) = self.queue.get_mut(idx) else {
            return Frame::Null;
        };
        let limits = Limits {
            max_depth: 128,
            ..Limits::default()
        };
        let mut frames = Vec::with_capacity(g.parts.len());
        for (_, reply) in g.parts.iter_mut() {
            if g.finish == Finish::Wait {
                frames.push(wait::node_reply(&reply.take().unwrap_or_default()));
                continue;
            }
            let mut buf = BytesMut::from(reply.take().unwrap_or_default().as_ref());
            match protocol::decode(&mut buf, &limits) {
                Ok(Some(f)) => frames.push(f),
                _ => frames.push(Frame::Error(Bytes::from_static(
                    b"ERR Slotway: unreadable reply from a cluster node",
                ))),
            }
        }
        match &g.finish {
            Finish::AsIs if renaming => {
                // XREAD, LMPOP... split by slot name their keys.
                let merged = g.merge.merge(frames);
                let name = routing::lookup(g.req.name(), g.req.arg(1)).map_or("", |s| s.name);
                names::restore_in_reply(&self.shared.names, self.client.db, name, merged)
            }
            Finish::AsIs | Finish::Wait | Finish::Store(..) => g.merge.merge(frames),
            Finish::Stored(size) => store::stored_answer(frames.pop(), *size),
            // Each read's reply, in order: `gather_done` runs the command over them.
            Finish::Copies(_) => Frame::Array(frames),
            Finish::CopiesRan(copies) => copies.answer(frames.pop().unwrap_or(Frame::Null)),
            Finish::Publish => publish_count(frames),
            Finish::Scan {
                master,
                pattern,
                carried,
            } => {
                let masters = with_routes(&self.routes, &self.shared, |r| r.masters().len());
                let reply = scan_reply(frames, *master, masters, carried.clone());
                if renaming {
                    let reply =
                        names::restore_reply(&self.shared.names, self.client.db, "scan", reply);
                    names::keep_matching(reply, "scan", pattern.as_deref())
                } else {
                    reply
                }
            }
            Finish::Names(pattern) => {
                let merged = g.merge.merge(frames);
                let name = routing::lookup(g.req.name(), None).map_or("", |s| s.name);
                let restored =
                    names::restore_reply(&self.shared.names, self.client.db, name, merged);
                names::keep_matching(restored, name, pattern.as_deref())
            }
            Finish::Info => {
                let req = g.req.clone();
                local::info(&req, &self.client, &self.shared, &frames)
            }
            Finish::ScriptLoad(body) => {
                let merged = g.merge.merge(frames);
                if let Frame::Bulk(sha) = &merged {
                    self.shared.scripts.insert(sha.clone(), body.clone());
                }
                merged
            }
        }
    }

    /// Answers a new request with an error (closing the connection if the error says so).
    fn fail_new(&mut self, e: ProxyError) {
        let (frame, close) = e.reply();
        self.push_done(encode(&frame, self.client.version));
        if close == Close::Yes {
            self.meter.protocol_error();
            self.closing = true;
            self.quitting = true;
        }
    }

    /// CLIENT REPLY ON | OFF | SKIP. OFF and SKIP have no reply themselves; SKIP under OFF
    /// changes nothing, as in Redis.
    fn client_reply(&mut self, req: &Request) {
        let seq = self.next_seq();
        let arg = req.arg(2).unwrap_or_default();
        let st = self.stateful();
        let silent = st.reply_mode == ReplyMode::Off;
        if arg.eq_ignore_ascii_case(b"on") {
            st.reply_mode = ReplyMode::On;
        } else if arg.eq_ignore_ascii_case(b"off") {
            st.reply_mode = ReplyMode::Off;
            st.silenced.push_back(seq);
        } else if arg.eq_ignore_ascii_case(b"skip") {
            if !silent {
                st.reply_mode = ReplyMode::SkipNext;
            }
            st.silenced.push_back(seq);
        } else {
            if silent {
                st.silenced.push_back(seq);
            }
            return self.fail_new(ProxyError::Other("ERR syntax error".to_string()));
        }
        self.push_done(Bytes::from_static(b"+OK\r\n"));
    }

    /// True if the reply to request `seq` (the next one written) is not to be written, after
    /// CLIENT REPLY OFF or SKIP.
    fn silenced(&mut self, seq: u64) -> bool {
        let Some(silenced) = self.stateful.as_mut().map(|st| &mut st.silenced) else {
            return false;
        };
        // Requests answered another way (pub/sub confirmations) are passed over.
        while silenced.front().is_some_and(|&s| s < seq) {
            silenced.pop_front();
        }
        silenced.front() == Some(&seq) && silenced.pop_front().is_some()
    }

    fn push_done(&mut self, bytes: Bytes) {
        if self.queue.is_empty() {
            if !self.silenced(self.head_seq) {
                self.wbuf.extend_from_slice(&bytes);
            }
            self.meter.done(self.head_seq, &bytes, &self.client);
            self.head_seq += 1;
        } else {
            self.queue.push_back(Entry::Done(bytes));
        }
    }

    /// Moves the answered prefix of the queue into the write buffer.
    fn flush_ready(&mut self) {
        loop {
            match self.queue.front() {
                Some(Entry::Done(_)) => {
                    if let Some(Entry::Done(mut bytes)) = self.queue.pop_front() {
                        if bytes.first() == Some(&b'-')
                            && (self.client.db > 0 || self.shared.names.has_rules())
                        {
                            bytes = names::restore_error(&self.shared.names, self.client.db, bytes);
                        }
                        if !self.silenced(self.head_seq) {
                            self.wbuf.extend_from_slice(&bytes);
                        }
                        self.meter.done(self.head_seq, &bytes, &self.client);
                    }
                }
                Some(Entry::Later(_)) => return self.start_later(),
                Some(Entry::Subscribe(..)) => {
                    if let Some(Entry::Subscribe(req, n)) = self.queue.pop_front() {
                        match self.notification_part(&req) {
                            Some(part) if self.send_mirrors(&part) => {
                                self.queue.push_front(Entry::Mirroring(req, n));
                            }
                            _ => {
                                self.queue.push_front(Entry::Confirming(n));
                                self.send_subscriber(req);
                            }
                        }
                    }
                    return;
                }
                Some(Entry::Shard(_)) => {
                    if self.shard_at_head() {
                        // Now `Done` at the head.
                        continue;
                    }
                    return;
                }
                _ => return,
            }
            self.head_seq += 1;
        }
    }
}

// === impl Session: key names ===

impl Session {
    /// True if client key names differ from stored names (co-location rules, or a database
    /// other than 0).
    fn renaming(&self, config: &Config) -> bool {
        self.shared.names.has_rules()
            || self.client.db > 0
            || config.databases == Databases::Namespaced
    }

    /// The request with every key replaced by its stored name.
    fn rename_keys(&self, req: Request, spec: Option<&'static routing::CommandSpec>) -> Request {
        names::rename_request(&self.shared.names, self.client.db, req, spec)
    }
}

// === impl Session: pub/sub ===

impl Session {
    /// Is the client in RESP2 subscribed mode (only pub/sub commands, PING, QUIT, RESET)?
    /// Any channel, pattern or shard channel puts it there.
    fn is_subscribed_resp2(&self) -> bool {
        self.client.version == protocol::Version::Resp2
            && self.pubsub.as_ref().is_some_and(|p| {
                !(p.channels.is_empty() && p.patterns.is_empty()) || p.shard.is_subscribed()
            })
    }

    /// True while the client has subscriptions or subscriber connections (Redis does not time
    /// out subscribers).
    fn is_subscriber(&self) -> bool {
        self.pubsub
            .as_ref()
            .is_some_and(|p| p.conn.is_some() || !p.shard.is_idle())
    }

    /// SUBSCRIBE and friends, and the RESP2 subscribed-mode rules. Returns true if handled.
    fn pubsub_command(&mut self, spec: &routing::CommandSpec, req: &Request) -> bool {
        let name = spec.name;
        let args = || req.args().skip(1).map(Bytes::copy_from_slice);
        let is_sub = matches!(
            name,
            "subscribe"
                | "psubscribe"
                | "unsubscribe"
                | "punsubscribe"
                | "ssubscribe"
                | "sunsubscribe"
        );
        if is_sub && !spec.arity_ok(req.len()) {
            self.fail_new(ProxyError::WrongArity(name));
            return true;
        }
        // Keyspace notifications name keys as stored (`session/notify.rs`).
        if name == "subscribe" && self.names_rewritten() {
            if let Some(channel) = req
                .args()
                .skip(1)
                .find(|c| notify::is_notification_channel(c))
            {
                self.fail_new(ProxyError::Other(format!(
                    "ERR Slotway cannot subscribe to keyspace notifications ('{}') while it rewrites key names (colocate rules, presets or namespaced databases): they carry the stored names",
                    String::from_utf8_lossy(channel)
                )));
                return true;
            }
        }
        let subscribed_resp2 = self.is_subscribed_resp2();
        let ps = if is_sub {
            if let "ssubscribe" | "sunsubscribe" = name {
                self.shard_command(name == "ssubscribe", req);
                return true;
            }
            self.pubsub.get_or_insert_with(Default::default)
        } else {
            match name {
                "ping" if subscribed_resp2 => {
                    let regular = self
                        .pubsub
                        .as_ref()
                        .is_some_and(|p| !(p.channels.is_empty() && p.patterns.is_empty()));
                    if regular {
                        self.queue.push_back(Entry::Subscribe(req.clone(), 1));
                    } else {
                        self.shard_pong(req);
                    }
                    return true;
                }
                // RESET ends the subscriptions when it runs (`answer_local`), after the pub/sub
                // commands before it have been confirmed.
                "quit" | "reset" => return false,
                _ if subscribed_resp2 => {
                    self.fail_new(ProxyError::Other(format!(
                        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                    )));
                    return true;
                }
                _ => return false,
            }
        };
        let before = ps.channels.len() + ps.patterns.len();
        let confirmations = match name {
            "subscribe" => {
                ps.channels.extend(args());
                req.len() - 1
            }
            "psubscribe" => {
                ps.patterns.extend(args());
                req.len() - 1
            }
            "unsubscribe" if req.len() > 1 => {
                args().for_each(|c| {
                    ps.channels.remove(&c);
                });
                req.len() - 1
            }
            "unsubscribe" => std::mem::take(&mut ps.channels).len().max(1),
            "punsubscribe" if req.len() > 1 => {
                args().for_each(|p| {
                    ps.patterns.remove(&p);
                });
                req.len() - 1
            }
            "punsubscribe" => std::mem::take(&mut ps.patterns).len().max(1),
            _ => return false,
        };
        let after = ps.channels.len() + ps.patterns.len();
        self.shared
            .metrics
            .subscriptions_add(after as i64 - before as i64);
        self.queue
            .push_back(Entry::Subscribe(req.clone(), confirmations));
        true
    }

    /// Forgets every subscription and closes the subscriber connections (RESET, subscriber
    /// connection lost, client gone).
    fn drop_subscriptions(&mut self) {
        if let Some(ps) = self.pubsub.take() {
            let n = ps.channels.len() + ps.patterns.len() + ps.shard.count();
            self.shared.metrics.subscriptions_add(-(n as i64));
        }
        // Its shard connections are gone: nothing will answer it.
        self.release_shard_head();
    }

    /// A subscriber connection failed: the client is disconnected, as a subscriber of a failed
    /// Redis would be.
    /// An order from another client (`reply::Control`, as a number).
    fn on_control(&mut self, control: u32) {
        if control == Control::Kill as u32 {
            // The serve loop closes the connection: at once if nothing but blocked commands
            // is in flight, else once the steps already under way have finished, unanswered.
            self.meter.killed();
            self.killed = true;
            self.closing = true;
            self.quitting = true;
            self.wbuf.clear();
            return;
        }
        let blocked = self.meter.blocked_requests();
        let Some(st) = self.stateful.as_mut() else {
            return;
        };
        if control == Control::UnblockAgain as u32 {
            // Still waiting for the ones it was told to end?
            let Some((seqs, how)) = st.unblocking.as_mut() else {
                return;
            };
            seqs.retain(|s| blocked.contains(s));
            if seqs.is_empty() {
                st.unblocking = None;
                return;
            }
            let how = *how;
            return self.unblock_own_connections(how);
        }
        if blocked.is_empty() {
            return;
        }
        let how: &'static [u8] = if control == Control::UnblockError as u32 {
            b"ERROR"
        } else {
            b"TIMEOUT"
        };
        st.unblocking = Some((blocked, how));
        self.unblock_own_connections(how);
    }

    /// Tells the node of each of this client's own connections to end the command blocked
    /// there (a connection not blocked is left as it is), and to check again shortly: the
    /// order may reach a node before the blocking command, or before the connection is open.
    fn unblock_own_connections(&mut self, how: &'static [u8]) {
        let Some(st) = self.stateful.as_ref() else {
            return;
        };
        let targets: Vec<(Arc<str>, u64)> = st
            .dedicated
            .iter()
            .filter_map(|(addr, _, conn)| Some((addr.clone(), conn.node_client_id()?)))
            .collect();
        for (addr, id) in targets {
            let pool = self.with_routes(|routes| routes.pool_by_addr(&addr).cloned());
            if let Some(pool) = pool {
                pop::unblock_on_node(&pool, self.client.version, self.client.id, id, how);
            }
        }
        self.replies.retry_after(
            Duration::from_millis(20),
            CONTROL_SEQ,
            Control::UnblockAgain as u32,
        );
    }

    fn subscriber_lost(&mut self) {
        self.drop_subscriptions();
        self.closing = true;
        self.quitting = true;
        self.queue.clear();
    }

    /// Sends a pub/sub command on the subscriber connection (opened on first use, to the
    /// master every Slotway instance picks: the first by address). Its confirmations and every
    /// message come back as subscriber deliveries.
    fn send_subscriber(&mut self, req: Request) {
        if self.pubsub.as_ref().is_none_or(|p| p.conn.is_none()) {
            let routes = self.shared.topology.routes();
            let Some(pool) = routes.masters().first().cloned() else {
                let (frame, _) = ProxyError::NoSlotMap.reply();
                self.wbuf
                    .extend_from_slice(&encode(&frame, self.client.version));
                // Nothing will confirm it: the error is its answer.
                self.queue.pop_front();
                self.head_seq += 1;
                return;
            };
            let conn = pool.subscriber(self.client.version, self.replies.clone(), 0);
            let ps = self.pubsub.get_or_insert_with(Default::default);
            ps.conn = Some(conn);
            ps.conn_node = Some(pool.addr().clone());
        }
        if let Some(conn) = self.pubsub.as_ref().and_then(|p| p.conn.as_ref()) {
            conn.send(Job::new(req.raw().clone(), ReplyTo::Discard));
        }
    }

    /// Publishes what CLIENT LIST and CLIENT KILL TYPE read of this client's pub/sub and
    /// MULTI state (once per turn of the serve loop; a store only when something changed).
    fn publish_status(&self) {
        let subscriber = self.is_subscriber();
        if subscriber != self.status.subscriber.load(Ordering::Relaxed) {
            self.status.subscriber.store(subscriber, Ordering::Relaxed);
        }
        let subscriptions = self.pubsub.as_ref().map_or(0, |p| {
            ClientStatus::pack_subscriptions(p.channels.len(), p.patterns.len(), p.shard.count())
        });
        if subscriptions != self.status.subscriptions.load(Ordering::Relaxed) {
            self.status
                .subscriptions
                .store(subscriptions, Ordering::Relaxed);
        }
        let multi = self
            .stateful
            .as_ref()
            .and_then(|st| st.tx.as_ref())
            .map_or(0, |q| {
                u32::try_from(q.commands.len() + 1).unwrap_or(u32::MAX)
            });
        if multi != self.status.multi.load(Ordering::Relaxed) {
            self.status.multi.store(multi, Ordering::Relaxed);
        }
    }

    /// Shows `req` to the clients in MONITOR mode, as one node would (`monitor.rs`).
    fn feed_monitors(&self, spec: Option<&'static routing::CommandSpec>, req: &Request) {
        let Some(spec) = spec.filter(|s| crate::monitor::shown(s) && s.arity_ok(req.len())) else {
            return;
        };
        let Some(peer) = self.shared.clients.peer(self.client.id) else {
            return;
        };
        let line = crate::monitor::line(
            std::time::SystemTime::now(),
            self.client.db,
            &peer,
            spec.name,
            req,
        );
        self.shared.monitors.feed(line);
    }

    /// True if key names are stored under other names (co-location rules, namespaced databases).
    fn names_rewritten(&self) -> bool {
        self.shared.names.has_rules() || self.shared.config.databases == Databases::Namespaced
    }

    /// What of the pub/sub command `req` the keyspace notification mirrors must run, if
    /// anything (`session/notify.rs`).
    fn notification_part(&self, req: &Request) -> Option<Request> {
        if self.names_rewritten() {
            return None;
        }
        let name = routing::lookup(req.name(), None)?.name;
        let open = self.pubsub.as_ref().is_some_and(|p| p.mirrors.is_some());
        notify::mirrored(name, req, open)
    }

    /// A frame from the subscriber connection: forwarded as is (messages are out of band in
    /// RESP3; in RESP2 nothing else is pending in subscribed mode). Subscription counts are
    /// read from confirmations to know when RESP2 subscribed mode ends.
    fn on_subscriber_frame(&mut self, reply: Reply) {
        let frame = match reply {
            Reply::Frame(frame) => frame,
            _ => {
                // The node went away: a subscriber of a failed Redis is disconnected too.
                tracing::info!(client = self.client.id, "subscriber connection lost");
                self.subscriber_lost();
                return;
            }
        };
        let mut buf = BytesMut::from(&frame[..]);
        let (confirmation, pong) = match protocol::decode(&mut buf, &Limits::default()) {
            Ok(Some(Frame::Array(items) | Frame::Push(items))) => match items.first() {
                Some(Frame::Bulk(kind)) if kind.ends_with(b"subscribe") => (true, false),
                Some(Frame::Bulk(kind)) if kind.as_ref() == b"pong" => (true, true),
                _ => (false, false),
            },
            _ => (false, false),
        };
        // Messages are written at once (out of band); a confirmation answers the pub/sub
        // command waiting at the head of the queue. A PING's answer is a reply like any other
        // (CLIENT REPLY may silence it); confirmations and messages are always written.
        if !(pong && self.silenced(self.head_seq)) {
            self.wbuf.extend_from_slice(&frame);
        }
        if confirmation {
            if let Some(Entry::Confirming(n)) = self.queue.front_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.queue.pop_front();
                    self.head_seq += 1;
                    self.flush_ready();
                }
            }
        }
    }
}

// === impl Session: transactions ===

impl Session {
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH and RESET's effect on them. Returns true if the
    /// request was handled here.
    fn transaction_command(&mut self, name: &str, req: &Request) -> bool {
        match name {
            "multi" => {
                if self.in_transaction() {
                    self.fail_new(ProxyError::Other(
                        "ERR MULTI calls can not be nested".to_string(),
                    ));
                } else {
                    self.stateful().tx = Some(transaction::Queued::default());
                    self.push_done(Bytes::from_static(b"+OK\r\n"));
                }
                true
            }
            "exec" => {
                match self.take_transaction() {
                    None => self.fail_new(ProxyError::Other("ERR EXEC without MULTI".to_string())),
                    Some(queued) => self.exec(queued),
                }
                true
            }
            "discard" => {
                match self.take_transaction() {
                    None => {
                        self.fail_new(ProxyError::Other("ERR DISCARD without MULTI".to_string()))
                    }
                    Some(_) => {
                        self.unwatch();
                        self.push_done(Bytes::from_static(b"+OK\r\n"));
                    }
                }
                true
            }
            // Without keys: the arity error of the usual path (which aborts a transaction).
            "watch" if req.len() < 2 => false,
            "watch" => {
                // Refused, but unlike a command refused at queue time it does not abort the
                // transaction: Redis's own WATCH answers this error and leaves MULTI as it was.
                if self.in_transaction() {
                    self.fail_new(ProxyError::Other(
                        "ERR WATCH inside MULTI is not allowed".to_string(),
                    ));
                    return true;
                }
                self.watch(req);
                true
            }
            "unwatch" if !self.in_transaction() => {
                self.unwatch();
                self.push_done(Bytes::from_static(b"+OK\r\n"));
                true
            }
            "reset" => {
                self.take_transaction();
                self.unwatch();
                false
            }
            _ => false,
        }
    }

    /// WATCH: sent on the client's own connection to the node that owns the keys' slot.
    fn watch(&mut self, req: &Request) {
        let Some(spec) = routing::lookup(req.name(), None) else {
            return;
        };
        let mut slots = Vec::new();
        if let Err(e) = routing::keys::for_each_key(spec, req, |i| {
            slots.push(Slot::for_key(req.arg(i).unwrap_or_default()))
        }) {
            return self.fail_new(ProxyError::Keys(e));
        }
        let Some(&slot) = slots.first() else {
            return self.fail_new(ProxyError::WrongArity("watch"));
        };
        if slots.iter().any(|s| *s != slot)
            || self
                .stateful
                .as_ref()
                .and_then(|s| s.watch)
                .is_some_and(|w| w != slot)
        {
            return self.fail_new(ProxyError::Other(
                "CROSSSLOT WATCH keys must all hash to one slot through Slotway (use hash tags such as {user1}:a)".to_string(),
            ));
        }
        self.stateful().watch = Some(slot);
        let mut pending = Pending::new(req.clone(), Target::Slot(slot));
        pending.lane = Some(0);
        self.later(Later::Watch(pending));
    }

    /// Drops the client's watch on its node, if any (the reply is not needed).
    fn unwatch(&mut self) {
        let Some(slot) = self.take_watch() else {
            return;
        };
        if let Some(pool) = self.resolve(Target::Slot(slot)) {
            let (tx, _rx) = tokio::sync::oneshot::channel();
            let job = Job::new(
                Bytes::from_static(b"*1\r\n$7\r\nUNWATCH\r\n"),
                ReplyTo::Oneshot(tx),
            );
            self.dedicated_conn(&pool, 0).send(job);
        }
    }

    /// A command between MULTI and EXEC: checked and queued (`+QUEUED`), or refused, which
    /// makes EXEC answer EXECABORT as Redis does.
    fn queue_in_transaction(&mut self, req: Request, spec: Option<&'static routing::CommandSpec>) {
        let masters = || self.with_routes(|r| r.masters().len());
        let plan = match spec.map(|s| s.name) {
            // Redis refuses them at EXEC ("isn't allowed for a DENY BLOCKING client").
            Some(
                name @ ("subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ssubscribe"
                | "sunsubscribe"),
            ) => Ok(Plan::Local(name)),
            _ => dispatch::plan(&req, spec, &self.shared.config, &masters),
        };
        let slot = match plan {
            Ok(Plan::Forward(Target::Slot(s) | Target::Blocking(s))) => Ok(Some(s)),
            // PUBLISH joins a group; its count is then that node's own subscribers.
            Ok(Plan::Forward(_) | Plan::Publish) => Ok(None),
            Ok(Plan::Local("ping" | "echo" | "time")) => Ok(None),
            Ok(Plan::Local(name)) => Err(ProxyError::Other(format!(
                "ERR Slotway cannot queue '{name}' inside a transaction"
            ))),
            Ok(Plan::Split(_) | Plan::MultiPop | Plan::Move | Plan::Rename | Plan::SetMove | Plan::OnCopies(_) | Plan::StreamRead) => Err(ProxyError::Other(format!(
                "CROSSSLOT Keys in request don't hash to the same slot ('{}' inside MULTI must keep its keys in one slot)",
                spec.map_or("?", |s| s.name)
            ))),
            Ok(Plan::Fanout { .. } | Plan::Scan { .. } | Plan::Wait) => Err(ProxyError::Other(format!(
                "ERR Slotway cannot run '{}' inside a transaction: it needs every node",
                spec.map_or("?", |s| s.name)
            ))),
            Err(e) => Err(e),
        };
        let Some(tx) = self.stateful.as_mut().and_then(|s| s.tx.as_mut()) else {
            return;
        };
        match slot {
            Ok(slot) => {
                tx.commands.push((slot, req));
                self.push_done(Bytes::from_static(b"+QUEUED\r\n"));
            }
            Err(e) => {
                tx.dirty = true;
                self.fail_new(e);
            }
        }
    }

    /// EXEC: one `MULTI ... EXEC` per slot group; the watched group first.
    fn exec(&mut self, queued: transaction::Queued) {
        let watched = self.take_watch();
        if queued.dirty {
            self.stateful().watch = watched;
            self.unwatch();
            return self.fail_new(ProxyError::Other(
                "EXECABORT Transaction discarded because of previous errors.".to_string(),
            ));
        }
        let routes = self.shared.topology.routes();
        let publish_node = routes.masters().first().map(|p| p.addr().clone());
        let groups = transaction::group(&queued, watched, |slot| {
            routes.master_for(slot).map(|p| p.addr()) == publish_node.as_ref()
        });
        drop(routes);
        let keyed = groups.iter().filter(|g| g.slot.is_some()).count();
        if keyed > 1 && self.shared.config.cross_slot_transactions == CrossSlotTransactions::Refuse
        {
            self.stateful().watch = watched;
            self.unwatch();
            return self.fail_new(ProxyError::Other(
                "CROSSSLOT Keys in the transaction don't hash to the same slot and cross_slot_transactions is refuse; nothing was applied".to_string(),
            ));
        }
        let total = queued.commands.len();
        let commands = if self.renaming(&self.shared.config) {
            let name = |r: &Request| routing::lookup(r.name(), r.arg(1)).map_or("", |s| s.name);
            queued.commands.iter().map(|(_, r)| name(r)).collect()
        } else {
            Vec::new()
        };
        let groups: Vec<_> = groups
            .into_iter()
            .map(|g| {
                let target = g.slot.map_or(Target::AnyMaster, Target::Slot);
                let label = Request::from_args(["EXEC"]);
                let mut p = Pending::new(label, target);
                p.payload = Some((g.payload.clone(), g.positions.len() as u32 + 2));
                p.lane = g.watched.then_some(0);
                (g, p, false)
            })
            .collect();
        let first_only = groups.first().is_some_and(|(g, _, _)| g.watched);
        let n = groups.len();
        let seq = self.next_seq();
        let x = Box::new(Exec {
            groups,
            results: vec![None; total],
            waiting: if first_only { 1 } else { n },
            failed: None,
            commands,
        });
        if first_only {
            // The watched group goes first, on the client's own connection.
            return self.later(Later::Exec(x));
        }
        self.queue.push_back(Entry::Exec(x));
        for part in 0..n {
            self.send(seq, part as u32, None);
        }
    }

    /// One group's `MULTI ... EXEC` answered.
    fn exec_group_done(&mut self, seq: u64, idx: usize, part: u32, raw: Bytes) {
        let Some(Entry::Exec(x)) = self.queue.get_mut(idx) else {
            return;
        };
        let Some((group, pending, done)) = x.groups.get_mut(part as usize) else {
            return;
        };
        // Groups are sent to their target's node again after a redirect (below): that node
        // answered, and fills in a redirect's unknown host.
        let target = pending.target;
        let outcome = if raw.first() == Some(&b'-') {
            // The proxy's own error for the whole group (node lost, ...).
            let mut buf = BytesMut::from(&raw[..]);
            match protocol::decode(&mut buf, &Limits::default()) {
                Ok(Some(f)) => GroupOutcome::Error(f),
                _ => GroupOutcome::Error(Frame::Error(Bytes::from_static(
                    b"ERR Slotway: EXEC failed",
                ))),
            }
        } else {
            transaction::outcome(&raw, group.positions.len())
        };
        let watched = group.watched;
        // The watched key changed, or its slot moved: the migration took the key off the node
        // that watched it, which is a change to it as far as WATCH is concerned (a cluster
        // aborts such a transaction too). Nothing ran: EXEC answers nil, the client may try
        // again.
        let aborted = match &outcome {
            GroupOutcome::Aborted => true,
            GroupOutcome::Refused(err) => slot_in_motion(err),
            _ => false,
        };
        if watched && aborted {
            self.queue[idx] = Entry::Done(encode(&Frame::NullArray, self.client.version));
            return;
        }
        match outcome {
            GroupOutcome::Replies(items) => {
                for (pos, item) in group.positions.iter().zip(items) {
                    if let Some(r) = x.results.get_mut(*pos) {
                        *r = Some(item);
                    }
                }
                *done = true;
            }
            GroupOutcome::Refused(err) if !watched => {
                // Nothing of this group ran: follow a redirect or wait out a migration.
                let text = err.clone();
                let client = self.client.id;
                let sender = with_routes(&self.routes, &self.shared, |r| {
                    resolve(r, target, client).map_or_else(String::new, |p| p.addr().to_string())
                });
                // Redirects back and forth (a migration given up) wait like TRYAGAIN.
                let max_redirects = self.shared.config.max_redirects;
                let redirect = Redirect::parse(&text).filter(|_| {
                    pending.redirects += 1;
                    pending.redirects <= max_redirects
                });
                let topology = &self.shared.topology;
                match redirect.map(|r| r.filled_from(&sender)) {
                    Some(Redirect::Moved { slot, addr }) => {
                        topology.moved(slot, &addr);
                        let to = topology.pool(&addr);
                        return self.send(seq, part, Some((to, false)));
                    }
                    // Followed at once, as the client's later requests that meet the same
                    // ASK are (waiting would let them run first). ASKING before MULTI holds
                    // for the whole transaction.
                    Some(Redirect::Ask { slot, addr }) => {
                        topology.motion().seen(slot);
                        let to = topology.pool(&addr);
                        return self.send(seq, part, Some((to, true)));
                    }
                    None => {}
                }
                if slot_in_motion(&text) {
                    if let Some(slot) = group.slot.filter(|_| text.starts_with(b"TRYAGAIN")) {
                        topology.motion().seen(slot);
                    }
                    let msg = String::from_utf8_lossy(&text).into_owned();
                    self.retry_later(seq, part, Duration::from_millis(50), move || {
                        ProxyError::Other(msg)
                    });
                    return;
                }
                *done = true;
                x.failed.get_or_insert(Frame::Error(Bytes::from(format!(
                    "EXECABORT Transaction discarded because of previous errors: {}",
                    String::from_utf8_lossy(&err)
                ))));
            }
            GroupOutcome::Aborted | GroupOutcome::Refused(_) => {
                *done = true;
                x.failed.get_or_insert(Frame::Error(Bytes::from_static(
                    b"EXECABORT Transaction discarded: the watched slot moved during the transaction",
                )));
            }
            GroupOutcome::Error(f) => {
                *done = true;
                x.failed.get_or_insert(f);
            }
        }
        x.waiting -= 1;
        if watched && x.failed.is_none() && x.groups.len() > 1 {
            // The watched group committed: now the others, in parallel.
            let n = x.groups.len();
            x.waiting = n - 1;
            for part in 1..n {
                self.send(seq, part as u32, None);
            }
            return;
        }
        if x.waiting > 0 {
            return;
        }
        let (names, db) = (&self.shared.names, self.client.db);
        let frame = match x.failed.take() {
            Some(f) => f,
            None => Frame::Array(
                x.results
                    .iter_mut()
                    .enumerate()
                    .map(|(i, r)| {
                        let reply = r.take().unwrap_or(Frame::Null);
                        match x.commands.get(i) {
                            Some(name) => names::restore_in_reply(names, db, name, reply),
                            None => reply,
                        }
                    })
                    .collect(),
            ),
        };
        self.queue[idx] = Entry::Done(encode(&frame, self.client.version));
    }
}

/// Runs `f` on `pinned`, a session's own slot map, or on the current one if it has none.
fn with_routes<R>(
    pinned: &Option<Arc<Routes>>,
    shared: &Shared,
    f: impl FnOnce(&Routes) -> R,
) -> R {
    match pinned {
        Some(routes) => f(routes),
        None => f(&shared.topology.routes()),
    }
}

/// The node a target resolves to in `routes`.
fn resolve(routes: &Routes, target: Target, client_id: u64) -> Option<&Arc<NodePool>> {
    match target {
        Target::Slot(s) | Target::Blocking(s) => routes.master_for(s),
        Target::AnyMaster => routes.any_master(client_id),
        Target::Master(i) => routes.masters().get(i),
        Target::Node(i) => routes.node(i),
    }
}

/// Rewrites a node's SCAN reply `[cursor, keys]` with the proxy's cursor.
fn scan_reply(mut frames: Vec<Frame>, master: usize, masters: usize, carried: Vec<Bytes>) -> Frame {
    let Some(reply) = frames.pop() else {
        return Frame::Error(Bytes::from_static(b"ERR Slotway: no SCAN reply"));
    };
    match reply {
        Frame::Array(mut items) if items.len() == 2 => {
            if let (false, Some(Frame::Array(keys))) = (carried.is_empty(), items.get_mut(1)) {
                let mine = std::mem::take(keys);
                keys.extend(carried.into_iter().map(Frame::Bulk));
                keys.extend(mine);
            }
            let cursor = match &items[0] {
                Frame::Bulk(c) => std::str::from_utf8(c).ok().and_then(|c| c.parse().ok()),
                _ => None,
            };
            let Some(cursor) = cursor else {
                return Frame::Error(Bytes::from_static(b"ERR Slotway: bad SCAN cursor"));
            };
            let next = dispatch::scan_cursor(master, cursor, masters);
            items[0] = Frame::Bulk(Bytes::from(next.to_string()));
            Frame::Array(items)
        }
        other => other,
    }
}

/// The COUNT of a SCAN request (Redis's default, 10, without one).
fn scan_count(req: &Request) -> usize {
    let args: Vec<&[u8]> = req.args().collect();
    args.iter()
        .skip(2)
        .step_by(2)
        .zip(args.iter().skip(3).step_by(2))
        .filter(|(option, _)| option.eq_ignore_ascii_case(b"count"))
        .filter_map(|(_, n)| std::str::from_utf8(n).ok()?.parse().ok())
        .next_back()
        .unwrap_or(10)
}

/// PUBLISH's count: the first master's reply plus the channel's subscribers on the other
/// nodes (`PUBSUB NUMSUB` replies, `[channel, n]` or a map); a node that failed counts nothing.
fn publish_count(mut frames: Vec<Frame>) -> Frame {
    if frames.is_empty() {
        return Frame::Integer(0);
    }
    let published = frames.remove(0);
    let Frame::Integer(mut count) = published else {
        return published;
    };
    for frame in frames {
        count += match frame {
            Frame::Array(items) => match items.get(1) {
                Some(Frame::Integer(n)) => *n,
                _ => 0,
            },
            Frame::Map(pairs) => match pairs.first() {
                Some((_, Frame::Integer(n))) => *n,
                _ => 0,
            },
            _ => 0,
        };
    }
    Frame::Integer(count)
}

fn encode(frame: &Frame, version: protocol::Version) -> Bytes {
    let mut buf = BytesMut::new();
    protocol::encode(frame, version, &mut buf);
    buf.freeze()
}
