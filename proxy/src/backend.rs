//! One task per backend connection: pipelined writes, replies matched in FIFO order.
//!
//! A [`BackendConn`] is a cheap handle (an unbounded sender). Its task owns the socket. Jobs that
//! arrive while a write is pending are appended to the same buffer, so requests of many clients
//! leave in one `write`. Replies are found with `protocol::Scanner` and forwarded as raw bytes,
//! never decoded.
//!
//! State machine of the task:
//!
//! | state        | on job                     | on socket error / EOF                        |
//! |--------------|----------------------------|----------------------------------------------|
//! | connecting   | queued in the channel      | fail queued jobs `NotSent`, back off          |
//! | backing off  | failed at once `NotSent`   | -                                             |
//! | connected    | appended to the write buf  | written jobs `Lost`, unwritten `NotSent`      |
//!
//! A job is failed `NotSent` only when none of its bytes reached the socket, so the caller may
//! send it elsewhere without risk of applying a write twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Scanner, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::either::Either;

use crate::reply::{Delivery, Reply, ReplyTo};
use crate::transport::{Connector, NodeStream};

/// Commands that precede a command sent after an `ASK` redirect.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// Stop taking new jobs while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 1 << 20;

/// Why a backend request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// None of the request reached the node: safe to send again, elsewhere.
    NotSent,
    /// The request was (at least partly) written, then the connection died: it may have run.
    Lost,
    /// The node did not answer within the read timeout; the connection was closed.
    Timeout,
}

/// What a connection needs to know to set itself up.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// `host:port`.
    pub addr: Arc<str>,
    /// Plain TCP or TLS.
    pub connector: Connector,
    /// The protocol version to speak (`HELLO 3` is sent on connect for RESP3).
    pub version: Version,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Close the connection when requests are in flight and nothing arrives for this long.
    pub read_timeout: Option<Duration>,
    /// `AUTH` sent on connect, if any: (username, password).
    pub auth: Option<(Option<String>, String)>,
    /// Called (through this sender) when the connection fails, so the topology can refresh.
    pub on_failure: Option<mpsc::UnboundedSender<Arc<str>>>,
    /// Pooled, a client's own, or a client's subscriber connection.
    pub kind: ConnKind,
    /// The node's metrics and reachability, updated as the connection connects, fails and
    /// answers.
    pub node: Arc<crate::metrics::NodeMetrics>,
}

impl ConnSettings {
    /// The `AUTH [username] password` request for the nodes, if credentials are set.
    pub fn auth_request(&self) -> Option<protocol::Request> {
        let (user, pass) = self.auth.as_ref()?;
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = user {
            args.push(user.as_bytes());
        }
        args.push(pass.as_bytes());
        Some(protocol::Request::from_args(args))
    }
}

/// What a connection is used for.
#[derive(Debug, Clone)]
pub enum ConnKind {
    /// Shared by many clients; reconnects for as long as a handle exists.
    Pooled,
    /// A client's own connection (blocking commands, WATCH): when its handle is dropped the
    /// socket closes at once, even with a request in flight, so that a blocked pop cannot take
    /// an element for a client that is gone.
    Dedicated,
    /// A client's subscriber connection: every frame the node sends (subscribe confirmations,
    /// messages, pongs) goes to `queue` with [`SUBSCRIBER_SEQ`] and `part`, in order (a client
    /// with several subscriber connections tells them apart by `part`). It does not
    /// reconnect: when it fails, a `Failed` delivery says so and the client is disconnected, as
    /// a subscriber of a failed Redis would be.
    Subscriber {
        /// The session's reply queue.
        queue: Arc<crate::reply::ReplyQueue>,
        /// The `part` of every delivery from this connection.
        part: u32,
    },
}

/// The sequence number of every delivery from a subscriber connection.
pub const SUBSCRIBER_SEQ: u64 = u64::MAX;

/// A request for the backend task.
#[derive(Debug)]
pub struct Job {
    /// One or more complete RESP requests, as raw bytes.
    pub payload: Bytes,
    /// Send `ASKING` first and drop its reply.
    pub asking: bool,
    /// How many reply frames the payload produces (`MULTI ... EXEC` sent as one job: all of
    /// them). They are delivered together, as the raw bytes of all the frames.
    pub frames: u32,
    /// Where the reply goes.
    pub reply: ReplyTo,
}

impl Job {
    /// A job for one request with one reply.
    pub fn new(payload: Bytes, reply: ReplyTo) -> Job {
        Job {
            payload,
            asking: false,
            frames: 1,
            reply,
        }
    }
}

/// Handle to one backend connection's task. Dropping every handle ends the task.
#[derive(Debug, Clone)]
pub struct BackendConn {
    tx: mpsc::UnboundedSender<Job>,
    /// The node's CLIENT ID for this connection (0 until known; only asked on connections
    /// that are not pooled, for `CLIENT UNBLOCK`).
    node_client_id: Arc<std::sync::atomic::AtomicU64>,
}

struct InFlight {
    /// Stream offset (bytes written over the connection's life) where this request ends.
    end: u64,
    /// Where its bytes start.
    start: u64,
    /// `None`: the reply to an `ASKING`, dropped.
    reply: Option<ReplyTo>,
    /// Reply frames still expected.
    frames: u32,
    /// Bytes of this request's reply frames already found in the read buffer.
    scanned: usize,
}

// === impl BackendConn ===

impl BackendConn {
    /// Spawns the connection task and returns its handle. The task connects at once and
    /// reconnects with back-off for as long as a handle exists.
    pub fn spawn(settings: ConnSettings) -> BackendConn {
        let (tx, rx) = mpsc::unbounded_channel();
        let node_client_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(run(settings, rx, node_client_id.clone()));
        BackendConn { tx, node_client_id }
    }

    /// The node's CLIENT ID of this connection, once connected (dedicated connections only).
    pub fn node_client_id(&self) -> Option<u64> {
        match self
            .node_client_id
            .load(std::sync::atomic::Ordering::Acquire)
        {
            0 => None,
            id => Some(id),
        }
    }

    /// Queues a job. If the task is gone the job's reply is failed `NotSent` at once.
    pub fn send(&self, job: Job) {
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            job.reply.send(Reply::Failed(BackendError::NotSent));
        }
    }

    /// True if the task has exited.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

async fn run(
    settings: ConnSettings,
    mut rx: mpsc::UnboundedReceiver<Job>,
    node_client_id: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut backoff = Duration::from_millis(10);
    let mut track = settings.node.tracker();
    loop {
        match connect(&settings).await {
            Ok((stream, id)) => {
                node_client_id.store(id.unwrap_or(0), std::sync::atomic::Ordering::Release);
                backoff = Duration::from_millis(10);
                let _open = track.connected();
                tracing::debug!(addr = %settings.addr, "backend connected");
                match serve(&settings, stream, &mut rx).await {
                    Served::HandlesDropped => return,
                    Served::Failed(why) => {
                        track.lost();
                        tracing::warn!(addr = %settings.addr, %why, "backend connection lost");
                    }
                }
            }
            Err(why) => {
                track.connect_failed();
                tracing::debug!(addr = %settings.addr, %why, "backend connect failed");
            }
        }
        if let Some(tx) = &settings.on_failure {
            let _ = tx.send(settings.addr.clone());
        }
        if let ConnKind::Subscriber { queue, part } = &settings.kind {
            queue.push(Delivery {
                seq: SUBSCRIBER_SEQ,
                part: *part,
                reply: Reply::Failed(BackendError::Lost),
            });
            return;
        }
        // Back off, failing whatever arrives meanwhile: it was never sent, so the caller may
        // route it again once the topology has been refreshed.
        let until = Instant::now() + backoff;
        backoff = (backoff * 2).min(Duration::from_millis(500));
        loop {
            while let Ok(job) = rx.try_recv() {
                job.reply.send(Reply::Failed(BackendError::NotSent));
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                job = rx.recv() => match job {
                    Some(job) => job.reply.send(Reply::Failed(BackendError::NotSent)),
                    None => return,
                },
            }
        }
    }
}

/// Connects and runs the handshake (AUTH; HELLO 3 on RESP3 connections, and HELLO 2 on RESP2
/// ones that are not pooled, for their id). Returns the stream and the node's id for it, if
/// asked.
async fn connect(settings: &ConnSettings) -> std::io::Result<(NodeStream, Option<u64>)> {
    let timeout = settings.connect_timeout;
    let mut stream = tokio::time::timeout(timeout, settings.connector.connect(&settings.addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    let mut hello = Vec::new();
    let mut expected = 0;
    if let Some(auth) = settings.auth_request() {
        hello.extend_from_slice(auth.raw());
        expected += 1;
    }
    // HELLO's reply holds the connection's id. Unlike CLIENT ID, HELLO is answered while a
    // script keeps the node busy, so a client's own connection can still be opened then (to
    // send it SCRIPT KILL).
    let ask_id = matches!(settings.kind, ConnKind::Dedicated);
    if settings.version == Version::Resp3 || ask_id {
        hello.extend_from_slice(hello_request(settings.version));
        expected += 1;
    }
    let mut id = None;
    if expected > 0 {
        let last = tokio::time::timeout(timeout, handshake(&mut stream, &hello, expected))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timeout")
            })??;
        if ask_id {
            id = hello_id(last);
        }
    }
    Ok((stream, id))
}

/// How deeply a node's reply may nest. Replies are only scanned here (their bytes are forwarded
/// as they came; the scanner keeps one counter per level), so depth costs nothing but that
/// counter. A Lua script that returns a table holding itself gets a reply about 8,000 levels
/// deep (`-ERR reached lua stack limit` innermost), which one node sends to its client and so
/// must the proxy; a reply beyond any limit would close the connection and fail the requests
/// of every client waiting on it.
const REPLY_MAX_DEPTH: usize = 1 << 20;

/// Writes `out` and reads `expected` replies; any error reply fails. Returns the last reply.
async fn handshake(
    stream: &mut NodeStream,
    out: &[u8],
    mut expected: usize,
) -> std::io::Result<BytesMut> {
    stream.write_all(out).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    let limits = Limits::default();
    let mut last = BytesMut::new();
    while expected > 0 {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        while let Some(n) = protocol::frame_len(&buf, &limits).map_err(invalid_data)? {
            let frame = buf.split_to(n);
            if frame.first() == Some(&b'-') {
                let text = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
                return Err(std::io::Error::other(format!("handshake refused: {text}")));
            }
            last = frame;
            expected = expected.saturating_sub(1);
            if expected == 0 {
                break;
            }
        }
    }
    Ok(last)
}

/// `HELLO 2` or `HELLO 3`, encoded: switches a node connection to `version`.
pub fn hello_request(version: Version) -> &'static [u8] {
    match version {
        Version::Resp3 => b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
        Version::Resp2 => b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n",
    }
}

/// The `id` field of a HELLO reply (a map in RESP3, a flat array in RESP2).
fn hello_id(mut reply: BytesMut) -> Option<u64> {
    let fields = match protocol::decode(&mut reply, &Limits::default()) {
        Ok(Some(Frame::Map(pairs))) => pairs,
        Ok(Some(Frame::Array(items))) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        _ => return None,
    };
    fields.into_iter().find_map(|(k, v)| match (k, v) {
        (Frame::Bulk(k) | Frame::Simple(k), Frame::Integer(id)) if k.as_ref() == b"id" => {
            u64::try_from(id).ok()
        }
        _ => None,
    })
}

fn invalid_data(e: protocol::ProtocolError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

enum Served {
    HandlesDropped,
    Failed(String),
}

/// Runs a connected socket until it fails or every handle is dropped (with nothing in flight).
async fn serve(
    settings: &ConnSettings,
    stream: NodeStream,
    rx: &mut mpsc::UnboundedReceiver<Job>,
) -> Served {
    match stream {
        Either::Left(tcp) => {
            let (rd, wr) = tcp.into_split();
            serve_halves(settings, rd, wr, false, rx).await
        }
        Either::Right(tls) => {
            let (rd, wr) = tokio::io::split(*tls);
            serve_halves(settings, rd, wr, true, rx).await
        }
    }
}

/// [`serve`] over the two halves of the stream. `flush`: the writer buffers (TLS records are
/// sealed in rustls and sent as the socket takes them), so written bytes must be flushed once
/// nothing more is waiting to be written.
async fn serve_halves(
    settings: &ConnSettings,
    mut rd: impl AsyncRead + Unpin,
    mut wr: impl AsyncWrite + Unpin,
    flush: bool,
    rx: &mut mpsc::UnboundedReceiver<Job>,
) -> Served {
    let limits = Limits {
        max_depth: REPLY_MAX_DEPTH,
        ..Limits::default()
    };
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut wbuf = BytesMut::new();
    let mut scanner = Scanner::default();
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    // Bytes handed to the socket so far, and bytes appended to `wbuf` so far.
    let mut written: u64 = 0;
    let mut queued: u64 = 0;
    let mut rx_open = true;
    let mut unflushed = false;
    let mut last_read = Instant::now();
    let mut ticker = settings.read_timeout.map(|t| tokio::time::interval(t / 4));
    let mut meter = settings
        .node
        .meter(matches!(settings.kind, ConnKind::Pooled));

    let failure = loop {
        meter.in_flight(inflight.len());
        if !rx_open && (inflight.is_empty() || !matches!(settings.kind, ConnKind::Pooled)) {
            return Served::HandlesDropped;
        }
        tokio::select! {
            biased;
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) => break "connection closed by node".to_string(),
                Ok(_) => {
                    last_read = Instant::now();
                    if let Err(why) = deliver(&mut rbuf, &mut scanner, &limits, &mut inflight, &settings.kind) {
                        break why;
                    }
                    if rbuf.capacity() - rbuf.len() < 4096 {
                        rbuf.reserve(16 * 1024);
                    }
                }
                Err(e) => break e.to_string(),
            },
            r = write_or_flush(&mut wr, &mut wbuf), if !wbuf.is_empty() || unflushed => match r {
                Ok(Some(n)) => {
                    written += n as u64;
                    unflushed = flush;
                }
                Ok(None) => unflushed = false,
                Err(e) => break e.to_string(),
            },
            job = rx.recv(), if rx_open && wbuf.len() < WRITE_HIGH_WATER => match job {
                Some(job) => {
                    if inflight.is_empty() {
                        last_read = Instant::now();
                    }
                    enqueue(job, &mut wbuf, &mut inflight, &mut queued);
                    drain(rx, &mut wbuf, &mut inflight, &mut queued);
                    if matches!(settings.kind, ConnKind::Pooled) {
                        // Let the other client sessions that are ready run first, so that
                        // their requests join this write: one syscall for many clients.
                        tokio::task::yield_now().await;
                        drain(rx, &mut wbuf, &mut inflight, &mut queued);
                    }
                }
                None => rx_open = false,
            },
            _ = tick(&mut ticker) => {
                if let Some(t) = settings.read_timeout {
                    if !inflight.is_empty() && last_read.elapsed() >= t {
                        fail_inflight(&mut inflight, written, Some(BackendError::Timeout));
                        return Served::Failed("read timeout".to_string());
                    }
                }
            }
        }
    };
    fail_inflight(&mut inflight, written, None);
    Served::Failed(failure)
}

/// Writes from `wbuf` (`Some(bytes written)`), or flushes once it is empty (`None`). Cancel
/// safe: a write that did not complete wrote nothing.
async fn write_or_flush(
    wr: &mut (impl AsyncWrite + Unpin),
    wbuf: &mut BytesMut,
) -> std::io::Result<Option<usize>> {
    if wbuf.is_empty() {
        wr.flush().await.map(|()| None)
    } else {
        wr.write_buf(wbuf).await.map(Some)
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Appends every job already waiting in the channel (up to the high-water mark).
fn drain(
    rx: &mut mpsc::UnboundedReceiver<Job>,
    wbuf: &mut BytesMut,
    inflight: &mut VecDeque<InFlight>,
    queued: &mut u64,
) {
    while wbuf.len() < WRITE_HIGH_WATER {
        match rx.try_recv() {
            Ok(job) => enqueue(job, wbuf, inflight, queued),
            Err(_) => break,
        }
    }
}

fn enqueue(job: Job, wbuf: &mut BytesMut, inflight: &mut VecDeque<InFlight>, queued: &mut u64) {
    if let ReplyTo::Discard = job.reply {
        // Subscriber connections: replies are not matched to requests.
        wbuf.extend_from_slice(&job.payload);
        *queued += job.payload.len() as u64;
        return;
    }
    if job.asking {
        wbuf.extend_from_slice(ASKING);
        let start = *queued;
        *queued += ASKING.len() as u64;
        inflight.push_back(InFlight {
            start,
            end: *queued,
            reply: None,
            frames: 1,
            scanned: 0,
        });
    }
    let start = *queued;
    wbuf.extend_from_slice(&job.payload);
    *queued += job.payload.len() as u64;
    inflight.push_back(InFlight {
        start,
        end: *queued,
        reply: Some(job.reply),
        frames: job.frames.max(1),
        scanned: 0,
    });
}

/// Fails every request in flight: `NotSent` if none of its bytes were written, else `Lost`
/// (or `why` if given, for requests that were written).
fn fail_inflight(inflight: &mut VecDeque<InFlight>, written: u64, why: Option<BackendError>) {
    for f in inflight.drain(..) {
        let err = if f.start >= written {
            BackendError::NotSent
        } else {
            why.clone().unwrap_or(BackendError::Lost)
        };
        debug_assert!(f.end >= f.start);
        if let Some(to) = f.reply {
            to.send(Reply::Failed(err));
        }
    }
}

/// Splits every complete reply off `rbuf` and hands it to the request at the head of the queue
/// (a request expecting several frames gets them all at once). On a subscriber connection every
/// frame goes to the subscriber's queue instead.
fn deliver(
    rbuf: &mut BytesMut,
    scanner: &mut Scanner,
    limits: &Limits,
    inflight: &mut VecDeque<InFlight>,
    kind: &ConnKind,
) -> Result<(), String> {
    loop {
        let offset = inflight.front().map_or(0, |f| f.scanned);
        let Some(n) = scanner
            .scan(rbuf.get(offset..).unwrap_or_default(), limits)
            .map_err(|e| format!("invalid reply from node: {e}"))?
        else {
            return Ok(());
        };
        if let ConnKind::Subscriber { queue, part } = kind {
            let frame = rbuf.split_to(n).freeze();
            queue.push(Delivery {
                seq: SUBSCRIBER_SEQ,
                part: *part,
                reply: Reply::Frame(frame),
            });
            continue;
        }
        if offset == 0 && is_push(rbuf) {
            // RESP3 out-of-band data is never a command's reply; nothing on a pooled
            // connection subscribes, so there is nobody to give it to.
            let _ = rbuf.split_to(n);
            continue;
        }
        let Some(head) = inflight.front_mut() else {
            return Err("reply with no request in flight".to_string());
        };
        head.scanned += n;
        head.frames -= 1;
        if head.frames == 0 {
            let frame = rbuf.split_to(head.scanned).freeze();
            if let Some(InFlight {
                reply: Some(to), ..
            }) = inflight.pop_front()
            {
                to.send(Reply::Frame(frame));
            }
        }
    }
}

fn is_push(frame: &[u8]) -> bool {
    frame.first() == Some(&b'>')
}
