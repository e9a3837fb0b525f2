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
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};
use routing::split::Merge;
use routing::Redirect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendConn, BackendError, Job};
use crate::dispatch::{self, Fan, Finish, Plan, Target};
use crate::error::{Close, ProxyError};
use crate::local::{self, After};
use crate::reply::{Delivery, Reply, ReplyQueue, ReplyTo};
use crate::server::{ClientState, Shared};
use crate::topology::{NodePool, Routes};

/// Stop reading from a client whose unwritten replies exceed this.
const OUTPUT_HIGH_WATER: usize = 4 << 20;
/// Requests decoded per wake-up before the session yields to replies and writes.
const DECODE_BATCH: usize = 512;
/// First read buffer size; it grows for large requests.
const READ_CHUNK: usize = 2048;

/// One request waiting for its reply, or its reply waiting for the ones before it.
#[derive(Debug)]
enum Entry {
    /// Sent to one node.
    Waiting(Pending),
    /// Sent in parts to several nodes.
    Gather(Box<Gather>),
    /// Answered, as bytes for the client.
    Done(Bytes),
}

/// One request (or part) on its way to a node.
#[derive(Debug)]
struct Pending {
    req: Request,
    target: Target,
    redirects: u32,
    /// Set at the first retry: when to give up.
    give_up_at: Option<Instant>,
    /// NOSCRIPT was already answered by loading the script once.
    script_loaded: bool,
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

struct Session {
    shared: Arc<Shared>,
    client: ClientState,
    limits: Limits,
    queue: VecDeque<Entry>,
    /// Sequence number of `queue[0]`.
    head_seq: u64,
    replies: Arc<ReplyQueue>,
    spare: VecDeque<Delivery>,
    wbuf: BytesMut,
    /// Stop reading; close once the queue is empty and written.
    closing: bool,
    /// Connections of this client's own, for blocking commands, by node.
    dedicated: Vec<(Arc<str>, BackendConn)>,
}

/// Serves one client until it disconnects, QUITs, sends invalid input, or `shutdown` fires
/// (then in-flight requests are answered first).
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let limits = shared.config.protocol_limits();
    let client = ClientState::new(shared.clone(), peer, local);
    let mut session = Session {
        shared,
        client,
        limits,
        queue: VecDeque::new(),
        head_seq: 0,
        replies: Arc::new(ReplyQueue::default()),
        spare: VecDeque::new(),
        wbuf: BytesMut::new(),
        closing: false,
        dedicated: Vec::new(),
    };
    if let Err(e) = session.serve(stream, shutdown).await {
        tracing::debug!(client = %peer, error = %e, "client connection closed");
    }
}

// === impl Pending ===

impl Pending {
    fn new(req: Request, target: Target) -> Pending {
        Pending {
            req,
            target,
            redirects: 0,
            give_up_at: None,
            script_loaded: false,
        }
    }
}

// === impl Session ===

impl Session {
    async fn serve(
        &mut self,
        stream: TcpStream,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let (mut rd, mut wr) = stream.into_split();
        let mut rbuf = BytesMut::new();
        let max_pipeline = self.shared.config.max_pipeline;
        // Created once: polling a fresh `cancelled()` future every turn would take the
        // token's lock, which every session shares.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        // True when decoding stopped at `max_pipeline` with complete requests possibly left in
        // `rbuf`: they must be decoded once there is room, not when the socket next has data.
        let mut held = false;
        loop {
            if held && !self.closing && self.queue.len() < max_pipeline {
                held = self.decode_all(&mut rbuf);
            }
            if self.closing && self.queue.is_empty() && self.wbuf.is_empty() {
                let _ = wr.shutdown().await;
                return Ok(());
            }
            let can_read = !self.closing
                && self.queue.len() < max_pipeline
                && self.wbuf.len() < OUTPUT_HIGH_WATER;
            if can_read && rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
                let more = if rbuf.is_empty() {
                    READ_CHUNK
                } else {
                    rbuf.len().max(16 * 1024)
                };
                rbuf.reserve(more);
            }
            tokio::select! {
                biased;
                () = self.replies.ready() => self.take_replies(),
                r = rd.read_buf(&mut rbuf), if can_read => {
                    if r? == 0 {
                        self.closing = true;
                    } else {
                        held = self.decode_all(&mut rbuf);
                    }
                }
                r = wr.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => {
                    r?;
                }
                () = &mut cancelled, if !self.closing => self.closing = true,
            }
            self.flush_ready();
            if self.queue.is_empty() && self.wbuf.is_empty() && rbuf.is_empty() {
                // Idle: hold no buffers, so that thousands of idle clients cost little.
                rbuf = BytesMut::new();
                self.wbuf = BytesMut::new();
            }
        }
    }

    /// Decodes and starts the complete requests in `rbuf`, up to a batch and the pipeline cap.
    /// Returns true if it stopped early (more complete requests may be waiting in `rbuf`).
    fn decode_all(&mut self, rbuf: &mut BytesMut) -> bool {
        for _ in 0..DECODE_BATCH {
            if self.closing {
                return false;
            }
            if self.queue.len() >= self.shared.config.max_pipeline {
                return true;
            }
            match protocol::decode_request(rbuf, &self.limits) {
                Ok(Some(req)) => self.start(req),
                Ok(None) => return false,
                Err(e) => {
                    self.fail_new(ProxyError::Protocol(e));
                    return false;
                }
            }
        }
        !rbuf.is_empty()
    }

    fn next_seq(&self) -> u64 {
        self.head_seq + self.queue.len() as u64
    }

    /// Takes a new request: answers it, refuses it, or sends it on.
    fn start(&mut self, req: Request) {
        self.shared.stats.commands.fetch_add(1, Ordering::Relaxed);
        let spec = routing::lookup(req.name(), req.arg(1));
        if !self.client.authenticated && !spec.is_some_and(|s| local::allowed_before_auth(s.name)) {
            return self.fail_new(ProxyError::NoAuth);
        }
        let masters = self.shared.topology.routes().masters().len();
        let plan = match dispatch::plan(&req, spec, &self.shared.config, masters) {
            Ok(plan) => plan,
            Err(e) => return self.fail_new(e),
        };
        match plan {
            Plan::Local(name) => {
                match local::answer(name, &req, &mut self.client, &self.shared) {
                    Ok((frame, after)) => {
                        self.push_done(encode(&frame, self.client.version));
                        if after == After::Close {
                            self.closing = true;
                        }
                    }
                    Err(e) => self.fail_new(e),
                }
                if name == "client|setinfo" || name == "hello" {
                    self.client.publish();
                }
            }
            Plan::Forward(target) => {
                let seq = self.next_seq();
                self.queue
                    .push_back(Entry::Waiting(Pending::new(req, target)));
                self.send(seq, 0, None);
            }
            Plan::Split(split) => {
                let parts = split
                    .parts
                    .into_iter()
                    .map(|(slot, r)| (Pending::new(r, Target::Slot(slot)), None))
                    .collect();
                self.start_gather(req, parts, split.merge, Finish::AsIs);
            }
            Plan::Fanout {
                fan,
                request,
                merge,
                finish,
            } => {
                let routes = self.shared.topology.routes();
                let n = match fan {
                    Fan::Masters => routes.masters().len(),
                    Fan::AllNodes => routes.node_count(),
                };
                if n == 0 {
                    return self.fail_new(ProxyError::SlotNotServed(0));
                }
                let sub = request.unwrap_or_else(|| req.clone());
                let parts = (0..n)
                    .map(|i| {
                        let target = match fan {
                            Fan::Masters => Target::Master(i),
                            Fan::AllNodes => Target::Node(i),
                        };
                        (Pending::new(sub.clone(), target), None)
                    })
                    .collect();
                self.start_gather(req, parts, merge, finish);
            }
            Plan::Scan { master, request } => {
                let parts = vec![(Pending::new(request, Target::Master(master)), None)];
                self.start_gather(req, parts, Merge::Concat, Finish::Scan { master });
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
        let seq = self.next_seq();
        let n = parts.len();
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
        let idx = usize::try_from(seq.checked_sub(self.head_seq)?).ok()?;
        match self.queue.get_mut(idx)? {
            Entry::Waiting(p) if part == 0 => Some(p),
            Entry::Gather(g) => match g.parts.get_mut(part as usize)? {
                (p, None) => Some(p),
                (_, Some(_)) => None,
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
        let payload = p.req.raw().clone();
        let reply = ReplyTo::Session {
            queue: self.replies.clone(),
            seq,
            part,
        };
        let (pool, asking) = match to {
            Some(to) => to,
            None => match self.resolve(target) {
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
            reply,
        };
        match target {
            Target::Blocking(_) => self.dedicated_conn(&pool).send(job),
            _ => pool.conn(self.client.version, self.client.id).send(job),
        }
    }

    fn resolve(&self, target: Target) -> Option<Arc<NodePool>> {
        let routes = self.shared.topology.routes();
        resolve(&routes, target, self.client.id).cloned()
    }

    fn dedicated_conn(&mut self, pool: &NodePool) -> &BackendConn {
        let pos = self
            .dedicated
            .iter()
            .position(|(addr, conn)| addr == pool.addr() && !conn.is_closed());
        let i = match pos {
            Some(i) => i,
            None => {
                self.dedicated.retain(|(addr, _)| addr != pool.addr());
                self.dedicated
                    .push((pool.addr().clone(), pool.dedicated(self.client.version)));
                self.dedicated.len() - 1
            }
        };
        &self.dedicated[i].1
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
        let Some(p) = self.pending_mut(seq, part) else {
            return;
        };
        let target = p.target;
        match reply {
            Reply::Frame(frame) => {
                if frame.first() == Some(&b'-') && self.on_error_reply(seq, part, &frame) {
                    return;
                }
                self.complete(seq, part, frame);
            }
            Reply::Retry => self.send(seq, part, None),
            Reply::Failed(BackendError::NotSent) => {
                // Never reached the node: safe to send again once the map has changed.
                self.shared.topology.request_refresh();
                let node = self.node_name(target);
                self.retry_later(seq, part, Duration::from_millis(50), move || {
                    ProxyError::Backend {
                        node,
                        failure: BackendError::NotSent,
                    }
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
        if let Some(redirect) = Redirect::parse(text) {
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
                    self.shared.stats.moved.fetch_add(1, Ordering::Relaxed);
                    topology.moved(slot, &addr);
                    (topology.pool(&addr), false)
                }
                Redirect::Ask { addr, .. } => {
                    self.shared.stats.ask.fetch_add(1, Ordering::Relaxed);
                    (topology.pool(&addr), true)
                }
            };
            self.send(seq, part, Some(to));
            return true;
        }
        if text.starts_with(b"NOSCRIPT") {
            return self.reload_script(seq, part);
        }
        let delay = if text.starts_with(b"TRYAGAIN") {
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
        let Some(pool) = self.resolve(target) else {
            return false;
        };
        let load = Request::from_args([&b"SCRIPT"[..], b"LOAD", &body]);
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let job = Job {
            payload: load.raw().clone(),
            asking: false,
            reply: ReplyTo::Oneshot(tx),
        };
        match target {
            Target::Blocking(_) => self.dedicated_conn(&pool).send(job),
            _ => pool.conn(self.client.version, self.client.id).send(job),
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
        if Instant::now() + delay > give_up_at {
            return self.fail_part(seq, part, err());
        }
        self.shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        let queue = self.replies.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push(Delivery {
                seq,
                part,
                reply: Reply::Retry,
            });
        });
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
        let Some(idx) = seq
            .checked_sub(self.head_seq)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(entry) = self.queue.get_mut(idx) else {
            return;
        };
        match entry {
            Entry::Waiting(_) => *entry = Entry::Done(reply),
            Entry::Gather(g) => {
                let Some(slot @ (_, None)) = g.parts.get_mut(part as usize) else {
                    return;
                };
                slot.1 = Some(reply);
                g.remaining -= 1;
                if g.remaining == 0 {
                    let bytes = self.finish_gather(idx);
                    self.queue[idx] = Entry::Done(bytes);
                }
            }
            Entry::Done(_) => {}
        }
    }

    /// Merges a gathered entry's parts into the client's reply.
    fn finish_gather(&mut self, idx: usize) -> Bytes {
        let Some(Entry::Gather(g)) = self.queue.get_mut(idx) else {
            return Bytes::new();
        };
        let limits = Limits {
            max_depth: 128,
            ..Limits::default()
        };
        let mut frames = Vec::with_capacity(g.parts.len());
        for (_, reply) in g.parts.iter_mut() {
            let mut buf = BytesMut::from(reply.take().unwrap_or_default().as_ref());
            match protocol::decode(&mut buf, &limits) {
                Ok(Some(f)) => frames.push(f),
                _ => frames.push(Frame::Error(Bytes::from_static(
                    b"ERR Slotway: unreadable reply from a cluster node",
                ))),
            }
        }
        let frame = match &g.finish {
            Finish::AsIs => g.merge.merge(frames),
            Finish::Scan { master } => {
                let masters = self.shared.topology.routes().masters().len();
                scan_reply(frames, *master, masters)
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
        };
        encode(&frame, self.client.version)
    }

    /// Answers a new request with an error (closing the connection if the error says so).
    fn fail_new(&mut self, e: ProxyError) {
        let (frame, close) = e.reply();
        self.push_done(encode(&frame, self.client.version));
        if close == Close::Yes {
            self.closing = true;
        }
    }

    fn push_done(&mut self, bytes: Bytes) {
        if self.queue.is_empty() {
            self.wbuf.extend_from_slice(&bytes);
            self.head_seq += 1;
        } else {
            self.queue.push_back(Entry::Done(bytes));
        }
    }

    /// Moves the answered prefix of the queue into the write buffer.
    fn flush_ready(&mut self) {
        while let Some(Entry::Done(_)) = self.queue.front() {
            if let Some(Entry::Done(bytes)) = self.queue.pop_front() {
                self.wbuf.extend_from_slice(&bytes);
            }
            self.head_seq += 1;
        }
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
fn scan_reply(mut frames: Vec<Frame>, master: usize, masters: usize) -> Frame {
    let Some(reply) = frames.pop() else {
        return Frame::Error(Bytes::from_static(b"ERR Slotway: no SCAN reply"));
    };
    match reply {
        Frame::Array(mut items) if items.len() == 2 => {
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

fn encode(frame: &Frame, version: protocol::Version) -> Bytes {
    let mut buf = BytesMut::new();
    protocol::encode(frame, version, &mut buf);
    buf.freeze()
}
