//! Prometheus metrics: one [`Metrics`] struct of handles resolved ahead of use, so that counting
//! a request costs a few atomic operations, never a lock or an allocation.
//!
//! - Per command, [`CommandMetrics`]: one slot per command table entry (plus `unknown` for
//!   names the table does not know, so label cardinality stays bounded), filled the first time
//!   the command is seen; a lookup is a hash of the command's name.
//! - Per node, [`NodeMetrics`], labelled by address, created once per address and held by the
//!   node's connections ([`ConnTracker`] for connects and failures, [`ConnMeter`] for requests).
//!   It also holds the node's reachability, which `/readyz` reads.
//! - Per client session, [`Meter`]: times each request from decode to reply, feeds the slow
//!   log, counts bytes, and enforces the idle timeout and the output buffer limit.
//!
//! Gauges mirroring state kept elsewhere (open and blocked clients in `server::Stats`, slot map
//! age, readiness) are set when `/metrics` is scraped ([`Metrics::encode`]).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use routing::CommandSpec;
use tokio::time::{Instant, Sleep};

use crate::listener::ClientAddr;
use crate::server::{ClientState, ClientStatus, Shared};

/// Latency buckets, in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];
/// Sub-requests of one split or fanned-out command.
const FANOUT_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
];
/// The `command` label of names the command table does not know.
pub const UNKNOWN_COMMAND: &str = "unknown";

/// Why a client connection was closed by the proxy or by an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// A socket error (reset by the client, ...).
    IoError,
    /// The client sent something that is not RESP.
    ProtocolError,
    /// Its unwritten replies passed `client_output_buffer_limit`.
    OutputBufferLimit,
    /// It was idle for `client_idle_timeout_ms`.
    IdleTimeout,
    /// Another client's CLIENT KILL.
    Killed,
}

/// Replies that make the proxy redirect or retry a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `-MOVED`.
    Moved,
    /// `-ASK`.
    Ask,
    /// `-TRYAGAIN`.
    TryAgain,
    /// `-CLUSTERDOWN`.
    ClusterDown,
}

/// What the proxy knows about a node's reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Never connected nor probed yet.
    Unknown,
    /// The last connect or probe succeeded and no connection failed since.
    Up,
    /// The last connect or probe failed, or a connection to it was lost.
    Down,
}

/// Every metric the proxy exports. Shared behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    clients_connected: IntGauge,
    clients_accepted: IntCounter,
    clients_rejected: IntCounter,
    disconnected: [IntCounter; 5],
    blocked: IntGauge,
    subscriptions: IntGauge,
    received_bytes: IntCounter,
    sent_bytes: IntCounter,
    commands: CommandTable,
    redirects: IntCounterVec,
    node_vecs: NodeVecs,
    nodes: Mutex<HashMap<Arc<str>, Arc<NodeMetrics>>>,
    refreshes: IntCounter,
    refresh_errors: IntCounter,
    slot_map_age: Gauge,
    slots_covered: IntGauge,
    masters: IntGauge,
    masters_up: IntGauge,
    replicas: IntGauge,
    slow_requests: IntCounter,
    reloads: [IntCounter; 2],
    ready: IntGauge,
    /// Serialises scrapes: counters mirrored from elsewhere are advanced by a difference.
    scrape: Mutex<()>,
}

/// The handles of one command.
#[derive(Debug)]
pub struct CommandMetrics {
    name: &'static str,
    total: IntCounter,
    errors: IntCounter,
    duration: Histogram,
    fanout: OnceLock<Histogram>,
}

#[derive(Debug)]
struct CommandTable {
    /// Command table name → position in `slots`; `unknown` is the last position.
    index: HashMap<&'static str, u16, BuildHasherDefault<Fnv>>,
    names: Vec<&'static str>,
    slots: Vec<OnceLock<CommandMetrics>>,
    total: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    fanout: HistogramVec,
}

#[derive(Debug)]
struct NodeVecs {
    connections: IntGaugeVec,
    in_flight: IntGaugeVec,
    requests: IntCounterVec,
    errors: IntCounterVec,
    reconnects: IntCounterVec,
    duration: HistogramVec,
    up: IntGaugeVec,
}

/// The metrics and the reachability of one node.
#[derive(Debug)]
pub struct NodeMetrics {
    addr: Arc<str>,
    connections: IntGauge,
    in_flight: IntGauge,
    requests: IntCounter,
    connect_errors: IntCounter,
    lost: IntCounter,
    reconnects: IntCounter,
    duration: Histogram,
    up: IntGauge,
    state: AtomicU8,
}

/// One backend connection task's view of its node: connects, failures and reconnects.
#[derive(Debug)]
pub struct ConnTracker {
    node: Arc<NodeMetrics>,
    failed_before: bool,
}

/// Held while a backend connection is open; counts it in `slotway_backend_connections`.
#[derive(Debug)]
pub struct OpenConn(Arc<NodeMetrics>);

/// One open backend connection's requests: in flight and answered, with their latency.
///
/// The connection reports how many requests it has in flight once per turn of its loop; as a
/// turn either queues requests or takes replies (FIFO), the meter keeps a queue of the times
/// requests were seen queued and pops one per reply. This needs no timestamp per request in
/// the connection itself.
#[derive(Debug)]
pub struct ConnMeter {
    node: Arc<NodeMetrics>,
    reported: usize,
    timed: bool,
    queued_at: VecDeque<Instant>,
}

/// One client session's request timing, byte counts, idle timer and output buffer limit.
pub struct Meter {
    shared: Arc<Shared>,
    peer: ClientAddr,
    /// This client's status for other clients (its blocked requests, for CLIENT UNBLOCK).
    status: Arc<ClientStatus>,
    /// Requests not yet answered, in request order.
    pending: TimedQueue,
    idle_timeout: Option<Duration>,
    last_active: Instant,
    idle_sleep: Option<Pin<Box<Sleep>>>,
    output_limit: usize,
    /// The time of the session's current turn, read once when first needed (see `new_turn`).
    now: Option<Instant>,
}

/// Requests in flight, oldest first. The oldest is kept inline: a client that waits for each
/// reply before sending again never needs the queue's heap memory.
#[derive(Debug, Default)]
struct TimedQueue {
    head: Option<Timed>,
    rest: VecDeque<Timed>,
}

#[derive(Debug)]
struct Timed {
    seq: u64,
    command: u16,
    blocked: bool,
    started: Instant,
    raw: Bytes,
}

/// FNV-1a: command names are short; SipHash's DoS resistance buys nothing for a fixed table.
#[derive(Debug, Default)]
struct Fnv(u64);

// === impl Disconnect ===

impl Disconnect {
    const ALL: [Disconnect; 5] = [
        Disconnect::IoError,
        Disconnect::ProtocolError,
        Disconnect::OutputBufferLimit,
        Disconnect::IdleTimeout,
        Disconnect::Killed,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Disconnect::IoError => "io_error",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::OutputBufferLimit => "output_buffer_limit",
            Disconnect::IdleTimeout => "idle_timeout",
            Disconnect::Killed => "killed",
        }
    }
}

// === impl RedirectKind ===

impl RedirectKind {
    /// The kind of an error reply's text (without the leading `-`), if it is one.
    pub fn of(text: &[u8]) -> Option<RedirectKind> {
        if text.starts_with(b"MOVED ") {
            Some(RedirectKind::Moved)
        } else if text.starts_with(b"ASK ") {
            Some(RedirectKind::Ask)
        } else if text.starts_with(b"TRYAGAIN") {
            Some(RedirectKind::TryAgain)
        } else if text.starts_with(b"CLUSTERDOWN") {
            Some(RedirectKind::ClusterDown)
        } else {
            None
        }
    }

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            RedirectKind::Moved => "moved",
            RedirectKind::Ask => "ask",
            RedirectKind::TryAgain => "tryagain",
            RedirectKind::ClusterDown => "clusterdown",
        }
    }
}

// === impl NodeState ===

impl NodeState {
    /// `up`, `down` or `unknown`.
    pub fn label(self) -> &'static str {
        match self {
            NodeState::Unknown => "unknown",
            NodeState::Up => "up",
            NodeState::Down => "down",
        }
    }

    fn from_u8(v: u8) -> NodeState {
        match v {
            1 => NodeState::Up,
            2 => NodeState::Down,
            _ => NodeState::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            NodeState::Unknown => 0,
            NodeState::Up => 1,
            NodeState::Down => 2,
        }
    }
}

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every metric, including the process collector (resident memory,
    /// CPU time, open file descriptors).
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let r = &registry;
        let disconnected = counter_vec(
            r,
            "slotway_clients_disconnected_total",
            "Client connections closed by an error or a limit, by reason",
            &["reason"],
        );
        let reloads = counter_vec(
            r,
            "slotway_config_reloads_total",
            "Configuration reloads (SIGHUP), by result",
            &["result"],
        );
        let build = gauge_vec(
            r,
            "slotway_build_info",
            "Always 1; the label carries the version",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = registry.register(Box::new(process)) {
                tracing::warn!(error = %e, "process metrics unavailable");
            }
        }
        let commands = CommandTable::new(r);
        let node_vecs = NodeVecs::new(r);
        Arc::new(Metrics {
            clients_connected: gauge(r, "slotway_clients_connected", "Client connections open"),
            clients_accepted: counter(
                r,
                "slotway_clients_accepted_total",
                "Client connections accepted",
            ),
            clients_rejected: counter(
                r,
                "slotway_clients_rejected_total",
                "Client connections refused because max_clients were connected",
            ),
            disconnected: Disconnect::ALL.map(|d| disconnected.with_label_values(&[d.label()])),
            blocked: gauge(
                r,
                "slotway_blocked_clients",
                "Clients waiting in a blocking command",
            ),
            subscriptions: gauge(
                r,
                "slotway_pubsub_subscriptions",
                "Channels, patterns and shard channels subscribed to by clients",
            ),
            received_bytes: counter(
                r,
                "slotway_client_received_bytes_total",
                "Bytes read from clients",
            ),
            sent_bytes: counter(
                r,
                "slotway_client_sent_bytes_total",
                "Bytes written to clients",
            ),
            commands,
            redirects: counter_vec(
                r,
                "slotway_redirects_total",
                "MOVED, ASK, TRYAGAIN and CLUSTERDOWN replies handled by the proxy, by kind and by the node that sent them",
                &["kind", "node"],
            ),
            node_vecs,
            nodes: Mutex::new(HashMap::new()),
            refreshes: counter(
                r,
                "slotway_slot_map_refreshes_total",
                "Slot map fetches that succeeded",
            ),
            refresh_errors: counter(
                r,
                "slotway_slot_map_refresh_errors_total",
                "Slot map refreshes in which no node answered",
            ),
            slot_map_age: float_gauge(
                r,
                "slotway_slot_map_age_seconds",
                "Time since the slot map was last fetched",
            ),
            slots_covered: gauge(
                r,
                "slotway_slot_map_slots_covered",
                "Slots with an owner in the slot map (16384 when complete)",
            ),
            masters: gauge(r, "slotway_cluster_masters", "Masters in the slot map"),
            masters_up: gauge(
                r,
                "slotway_cluster_masters_reachable",
                "Masters of the slot map reachable at the last connect or probe",
            ),
            replicas: gauge(r, "slotway_cluster_replicas", "Replicas in the slot map"),
            slow_requests: counter(
                r,
                "slotway_slow_requests_total",
                "Requests slower than slowlog.slower_than_us",
            ),
            reloads: [
                reloads.with_label_values(&["success"]),
                reloads.with_label_values(&["failure"]),
            ],
            ready: gauge(
                r,
                "slotway_ready",
                "1 when /readyz answers 200: full slot map, every master reachable",
            ),
            scrape: Mutex::new(()),
            registry,
        })
    }

    /// A client connection was refused because `max_clients` were connected. (Accepted and
    /// open connections are counted in `server::Stats`.)
    pub fn client_rejected(&self) {
        self.clients_rejected.inc();
    }

    /// Client connections refused so far.
    pub fn clients_rejected(&self) -> u64 {
        self.clients_rejected.get()
    }

    /// Bytes read from clients so far.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes.get()
    }

    /// Bytes written to clients so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.get()
    }

    /// A client connection was closed for `why`.
    pub fn disconnected(&self, why: Disconnect) {
        if let Some(c) = self.disconnected.get(why as usize) {
            c.inc();
        }
    }

    /// Client connections closed for `why` so far.
    pub fn disconnects(&self, why: Disconnect) -> u64 {
        self.disconnected
            .get(why as usize)
            .map_or(0, IntCounter::get)
    }

    /// Adds `n` (negative: removes) channel, pattern or shard channel subscriptions.
    pub fn subscriptions_add(&self, n: i64) {
        self.subscriptions.add(n);
    }

    /// Subscriptions now.
    pub fn subscriptions(&self) -> i64 {
        self.subscriptions.get()
    }

    /// A redirect or retryable error from `node`.
    pub fn redirect(&self, kind: RedirectKind, node: &str) {
        // Rare (resharding, failover): the labelled lookup is fine here.
        self.redirects
            .with_label_values(&[kind.label(), node])
            .inc();
    }

    /// Redirects of `kind` handled so far, from every node (for INFO).
    pub fn redirects_of(&self, kind: RedirectKind) -> u64 {
        prometheus::core::Collector::collect(&self.redirects)
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.get_name() == "kind" && l.get_value() == kind.label())
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// A slot map refresh ended; `ok` if a node answered.
    pub fn refreshed(&self, ok: bool) {
        if ok {
            self.refreshes.inc();
        } else {
            self.refresh_errors.inc();
        }
    }

    /// A SIGHUP reload ended.
    pub fn reloaded(&self, ok: bool) {
        self.reloads[usize::from(!ok)].inc();
    }

    /// The metrics of the node at `addr`, created on first use.
    pub fn node(&self, addr: &str) -> Arc<NodeMetrics> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nodes.get(addr) {
            return n.clone();
        }
        let addr: Arc<str> = Arc::from(addr);
        let v = &self.node_vecs;
        let a = [&*addr];
        let node = Arc::new(NodeMetrics {
            connections: v.connections.with_label_values(&a),
            in_flight: v.in_flight.with_label_values(&a),
            requests: v.requests.with_label_values(&a),
            connect_errors: v.errors.with_label_values(&[&*addr, "connect"]),
            lost: v.errors.with_label_values(&[&*addr, "lost"]),
            reconnects: v.reconnects.with_label_values(&a),
            duration: v.duration.with_label_values(&a),
            up: v.up.with_label_values(&a),
            state: AtomicU8::new(0),
            addr: addr.clone(),
        });
        nodes.insert(addr, node.clone());
        node
    }

    /// The position of `spec` in the command table (`None`: unknown), for [`Metrics::command`].
    pub fn command_index(&self, spec: Option<&CommandSpec>) -> u16 {
        let unknown = (self.commands.names.len() - 1) as u16;
        spec.and_then(|s| self.commands.index.get(s.name).copied())
            .unwrap_or(unknown)
    }

    /// The handles of the command at `index` (from [`Metrics::command_index`]).
    pub fn command(&self, index: u16) -> &CommandMetrics {
        self.commands.get(index)
    }

    /// Per command answered so far, for INFO commandstats: `(name, calls, microseconds,
    /// error replies)`, in command table order.
    pub fn command_stats(&self) -> Vec<(&'static str, u64, u64, u64)> {
        self.commands
            .slots
            .iter()
            .filter_map(OnceLock::get)
            .filter(|c| c.total.get() > 0)
            .map(|c| {
                let usec = (c.duration.get_sample_sum() * 1e6) as u64;
                (c.name, c.total.get(), usec, c.errors.get())
            })
            .collect()
    }

    /// Commands answered and error replies among them, over every command.
    pub fn command_totals(&self) -> (u64, u64) {
        self.commands
            .slots
            .iter()
            .filter_map(OnceLock::get)
            .fold((0, 0), |(n, e), c| (n + c.total.get(), e + c.errors.get()))
    }

    /// The Prometheus text exposition of every metric, after bringing the mirrored gauges up
    /// to date.
    pub fn encode(&self, shared: &Shared) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let stats = &shared.stats;
        self.clients_connected
            .set(stats.clients_open.load(Ordering::Relaxed) as i64);
        self.blocked
            .set(stats.blocked.load(Ordering::Relaxed) as i64);
        advance(
            &self.clients_accepted,
            stats.clients_accepted.load(Ordering::Relaxed),
        );
        let routes = shared.topology.routes();
        let map = routes.map();
        self.slot_map_age.set(routes.age().as_secs_f64());
        self.slots_covered.set(slots_covered(map) as i64);
        self.masters.set(map.shards().len() as i64);
        self.replicas
            .set(map.shards().iter().map(|s| s.replicas.len()).sum::<usize>() as i64);
        drop(routes);
        self.masters_up.set(shared.topology.masters_up().0 as i64);
        self.ready
            .set(i64::from(shared.topology.readiness().is_ok()));
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Slots with an owner in `map`.
pub fn slots_covered(map: &routing::SlotMap) -> usize {
    (0..routing::Slot::COUNT as u16)
        .filter_map(routing::Slot::new)
        .filter(|s| map.shard_for(*s).is_some())
        .count()
}

/// Appends the proxy's own figures to INFO's `# Proxy` section.
pub fn write_info(out: &mut String, shared: &Shared) {
    let m = &shared.metrics;
    let config = &shared.config;
    let (commands, errors) = m.command_totals();
    let ready = match shared.topology.readiness() {
        Ok(()) => "yes".to_string(),
        Err(why) => format!("no ({why})"),
    };
    let (up, masters) = shared.topology.masters_up();
    let nodes: Vec<Arc<NodeMetrics>> = m
        .nodes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let backend_connections: i64 = nodes.iter().map(|n| n.connections.get()).sum();
    let in_flight: i64 = nodes.iter().map(|n| n.in_flight.get()).sum();
    let backend_errors: u64 = nodes
        .iter()
        .map(|n| n.connect_errors.get() + n.lost.get())
        .sum();
    let _ = write!(
        out,
        "ready:{ready}\r\nmasters_reachable:{up}/{masters}\r\nclient_idle_timeout_ms:{}\r\nclient_output_buffer_limit:{}\r\ndisconnected_output_buffer_limit:{}\r\ndisconnected_idle_timeout:{}\r\ndisconnected_protocol_error:{}\r\npubsub_subscriptions:{}\r\ncommands_answered:{commands}\r\ncommand_error_replies:{errors}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nbackend_connections:{backend_connections}\r\nbackend_requests_in_flight:{in_flight}\r\nbackend_connection_errors:{backend_errors}\r\nslot_map_refresh_errors:{}\r\nslowlog_len:{}\r\nslow_requests:{}\r\nconfig_reloads:{}\r\nconfig_reload_failures:{}\r\nmetrics_listen:{}\r\n",
        config.client_idle_timeout_ms,
        config.client_output_buffer_limit,
        m.disconnects(Disconnect::OutputBufferLimit),
        m.disconnects(Disconnect::IdleTimeout),
        m.disconnects(Disconnect::ProtocolError),
        m.subscriptions.get(),
        m.received_bytes.get(),
        m.sent_bytes.get(),
        m.refresh_errors.get(),
        shared.slowlog.len(),
        m.slow_requests.get(),
        m.reloads[0].get(),
        m.reloads[1].get(),
        config
            .metrics_listen
            .map_or_else(|| "off".to_string(), |a| a.to_string()),
    );
}

fn advance(counter: &IntCounter, to: u64) {
    let now = counter.get();
    if to > now {
        counter.inc_by(to - now);
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric names are valid");
    register(r, Box::new(c.clone()));
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric names are valid");
    register(r, Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric names are valid");
    register(r, Box::new(g.clone()));
    g
}

fn float_gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("metric names are valid");
    register(r, Box::new(g.clone()));
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric names are valid");
    register(r, Box::new(g.clone()));
    g
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let h = HistogramVec::new(opts, labels).expect("metric names are valid");
    register(r, Box::new(h.clone()));
    h
}

fn register(r: &Registry, c: Box<dyn prometheus::core::Collector>) {
    // Fails only for a duplicate name, which the unit tests would catch.
    if let Err(e) = r.register(c) {
        tracing::error!(error = %e, "metric registration failed");
    }
}

// === impl CommandTable ===

impl CommandTable {
    fn new(r: &Registry) -> CommandTable {
        let mut names: Vec<&'static str> = Vec::new();
        for spec in routing::command::all() {
            names.push(spec.name);
            names.extend(spec.subcommands.iter().map(|s| s.name));
        }
        names.push(UNKNOWN_COMMAND);
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i as u16))
            .collect();
        let slots = names.iter().map(|_| OnceLock::new()).collect();
        CommandTable {
            index,
            names,
            slots,
            total: counter_vec(
                r,
                "slotway_commands_total",
                "Client requests answered, by command",
                &["command"],
            ),
            errors: counter_vec(
                r,
                "slotway_command_errors_total",
                "Client requests answered with an error reply, by command",
                &["command"],
            ),
            duration: histogram_vec(
                r,
                "slotway_command_duration_seconds",
                "Time from reading a request to having its reply ready, by command",
                &["command"],
                LATENCY_BUCKETS,
            ),
            fanout: histogram_vec(
                r,
                "slotway_command_subrequests",
                "Node requests one client request was split or fanned out into, by command",
                &["command"],
                FANOUT_BUCKETS,
            ),
        }
    }

    fn get(&self, index: u16) -> &CommandMetrics {
        let i = usize::from(index).min(self.slots.len() - 1);
        self.slots[i].get_or_init(|| {
            let name = self.names[i];
            CommandMetrics {
                name,
                total: self.total.with_label_values(&[name]),
                errors: self.errors.with_label_values(&[name]),
                duration: self.duration.with_label_values(&[name]),
                fanout: OnceLock::new(),
            }
        })
    }
}

// === impl CommandMetrics ===

impl CommandMetrics {
    /// The command table name (`get`, `config|get`) or `unknown`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Records one answered request.
    pub fn answered(&self, elapsed: Duration, is_error: bool) {
        self.total.inc();
        if is_error {
            self.errors.inc();
        }
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Requests answered so far.
    pub fn count(&self) -> u64 {
        self.total.get()
    }
}

// === impl NodeVecs ===

impl NodeVecs {
    fn new(r: &Registry) -> NodeVecs {
        NodeVecs {
            connections: gauge_vec(
                r,
                "slotway_backend_connections",
                "Open connections to the node (pooled and clients' own)",
                &["node"],
            ),
            in_flight: gauge_vec(
                r,
                "slotway_backend_requests_in_flight",
                "Requests sent to the node and not answered yet",
                &["node"],
            ),
            requests: counter_vec(
                r,
                "slotway_backend_requests_total",
                "Replies received from the node",
                &["node"],
            ),
            errors: counter_vec(
                r,
                "slotway_backend_errors_total",
                "Connections to the node that could not be made (connect) or were lost or timed out (lost)",
                &["node", "kind"],
            ),
            reconnects: counter_vec(
                r,
                "slotway_backend_reconnects_total",
                "Connections to the node re-established after a failure",
                &["node"],
            ),
            duration: histogram_vec(
                r,
                "slotway_backend_request_duration_seconds",
                "Time from queueing a request for the node to its reply, pooled connections only",
                &["node"],
                LATENCY_BUCKETS,
            ),
            up: gauge_vec(
                r,
                "slotway_backend_up",
                "1 if the node was reachable at the last connect or probe",
                &["node"],
            ),
        }
    }
}

// === impl NodeMetrics ===

impl NodeMetrics {
    /// Handles registered nowhere, for connections made outside a [`Metrics`] (tests, tools).
    pub fn detached(addr: &str) -> Arc<NodeMetrics> {
        let c = |n: &str| IntCounter::new(n, n).expect("metric names are valid");
        let g = |n: &str| IntGauge::new(n, n).expect("metric names are valid");
        Arc::new(NodeMetrics {
            addr: Arc::from(addr),
            connections: g("connections"),
            in_flight: g("in_flight"),
            requests: c("requests"),
            connect_errors: c("connect_errors"),
            lost: c("lost"),
            reconnects: c("reconnects"),
            duration: Histogram::with_opts(HistogramOpts::new("duration", "duration"))
                .expect("metric names are valid"),
            up: g("up"),
            state: AtomicU8::new(0),
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// Reachability as last seen.
    pub fn state(&self) -> NodeState {
        NodeState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Records reachability (from a connection or a probe).
    pub fn set_state(&self, state: NodeState) {
        self.state.store(state.as_u8(), Ordering::Relaxed);
        self.up.set(i64::from(state == NodeState::Up));
    }

    /// Open connections now.
    pub fn connections(&self) -> i64 {
        self.connections.get()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Connection failures (connect and lost) so far.
    pub fn errors(&self) -> u64 {
        self.connect_errors.get() + self.lost.get()
    }

    /// A tracker for one connection task (call once per task, before the first connect).
    pub fn tracker(self: &Arc<Self>) -> ConnTracker {
        ConnTracker {
            node: self.clone(),
            failed_before: false,
        }
    }

    /// A meter for one open connection. `timed`: observe reply latency (pooled connections;
    /// a client's own connection may wait in a blocking command for minutes).
    pub fn meter(self: &Arc<Self>, timed: bool) -> ConnMeter {
        ConnMeter {
            node: self.clone(),
            reported: 0,
            timed,
            queued_at: VecDeque::new(),
        }
    }
}

// === impl ConnTracker ===

impl ConnTracker {
    /// The connection is up: the node is reachable. Keep the guard while it is open.
    pub fn connected(&mut self) -> OpenConn {
        if std::mem::take(&mut self.failed_before) {
            self.node.reconnects.inc();
        }
        self.node.connections.inc();
        self.node.set_state(NodeState::Up);
        OpenConn(self.node.clone())
    }

    /// Connecting (or the handshake) failed.
    pub fn connect_failed(&mut self) {
        self.failed_before = true;
        self.node.connect_errors.inc();
        self.node.set_state(NodeState::Down);
    }

    /// An open connection was lost (closed by the node, reset, read timeout).
    pub fn lost(&mut self) {
        self.failed_before = true;
        self.node.lost.inc();
        self.node.set_state(NodeState::Down);
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

// === impl ConnMeter ===

impl ConnMeter {
    /// Reports how many requests the connection has in flight now (call once per turn of the
    /// connection's loop). Cheap when unchanged.
    pub fn in_flight(&mut self, n: usize) {
        if n == self.reported {
            return;
        }
        if n > self.reported {
            let added = n - self.reported;
            self.node.in_flight.add(added as i64);
            if self.timed {
                let now = Instant::now();
                self.queued_at.extend(std::iter::repeat_n(now, added));
            }
        } else {
            let answered = self.reported - n;
            self.node.in_flight.sub(answered as i64);
            self.node.requests.inc_by(answered as u64);
            if self.timed {
                let now = Instant::now();
                for queued in self.queued_at.drain(..answered.min(self.queued_at.len())) {
                    self.node
                        .duration
                        .observe(now.saturating_duration_since(queued).as_secs_f64());
                }
                if self.queued_at.is_empty() && self.queued_at.capacity() > 256 {
                    self.queued_at = VecDeque::new();
                }
            }
        }
        self.reported = n;
    }
}

impl Drop for ConnMeter {
    fn drop(&mut self) {
        self.node.in_flight.sub(self.reported as i64);
    }
}

// === impl Meter ===

impl Meter {
    /// The meter of a new client session.
    pub fn new(shared: &Arc<Shared>, peer: ClientAddr, status: Arc<ClientStatus>) -> Meter {
        Meter {
            status,
            idle_timeout: shared.config.client_idle_timeout(),
            output_limit: shared.config.client_output_buffer_limit,
            shared: shared.clone(),
            peer,
            pending: TimedQueue::default(),
            last_active: Instant::now(),
            idle_sleep: None,
            now: None,
        }
    }

    /// The session is about to wait: the next time taken is read afresh. Everything a session
    /// does between two waits takes microseconds, so one clock read serves the whole turn
    /// (a pipeline of requests decoded together starts at one time, replies written together
    /// end at one time) instead of two per request. Call it before every wait.
    pub fn new_turn(&mut self) {
        self.now = None;
    }

    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    /// Request `seq` was decoded; `spec` is its command (`None`: unknown), `raw` its bytes
    /// (kept for the slow log; a reference count, not a copy).
    pub fn start(&mut self, seq: u64, spec: Option<&CommandSpec>, raw: &Bytes) {
        let started = self.now();
        let command = self.shared.metrics.command_index(spec);
        // For CLIENT LIST (two stores to a line only this session writes).
        self.status
            .last_command
            .store(command.saturating_add(1), Ordering::Relaxed);
        let since_start = started.saturating_duration_since(self.shared.started);
        self.status
            .last_active
            .store(since_start.as_secs() as u32, Ordering::Relaxed);
        self.pending.push(Timed {
            seq,
            command,
            blocked: false,
            started,
            raw: raw.clone(),
        });
    }

    /// Request `seq` was split or fanned out into `parts` node requests.
    pub fn fanout(&mut self, seq: u64, parts: usize) {
        if let Some(t) = self.pending.find_mut(seq) {
            let cmd = self.shared.metrics.command(t.command);
            let vec = &self.shared.metrics.commands.fanout;
            cmd.fanout
                .get_or_init(|| vec.with_label_values(&[cmd.name]))
                .observe(parts as f64);
        }
    }

    /// Request `seq` was sent as a blocking command: the client counts as blocked until its
    /// reply is ready (or it goes away).
    pub fn block(&mut self, seq: u64) {
        if let Some(t) = self.pending.find_mut(seq) {
            if !t.blocked {
                t.blocked = true;
                self.shared.stats.blocked.fetch_add(1, Ordering::Relaxed);
                self.status.blocked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The reply to request `seq` is ready (moved to the write buffer).
    pub fn done(&mut self, seq: u64, reply: &[u8], client: &ClientState) {
        while self.pending.front().is_some_and(|t| t.seq < seq) {
            // A request whose reply went out another way; nothing to time.
            if let Some(t) = self.pending.pop_front() {
                self.unblock(&t);
            }
        }
        if self.pending.front().is_none_or(|t| t.seq != seq) {
            return;
        }
        let Some(t) = self.pending.pop_front() else {
            return;
        };
        let elapsed = self.now().saturating_duration_since(t.started);
        let is_error = matches!(reply.first(), Some(b'-' | b'!'));
        self.shared
            .metrics
            .command(t.command)
            .answered(elapsed, is_error);
        if t.blocked {
            self.unblock(&t);
        } else if self.shared.slowlog.is_slow(elapsed) {
            self.shared.metrics.slow_requests.inc();
            self.shared.slowlog.record(&t.raw, elapsed, client);
        }
    }

    /// The requests now blocked in a blocking command, by sequence number.
    pub fn blocked_requests(&self) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|t| t.blocked)
            .map(|t| t.seq)
            .collect()
    }

    /// True if requests are in flight and every one is a blocking command: a client that
    /// closes its side now is gone, and its blocked requests can be dropped with it.
    pub fn only_blocked_pending(&self) -> bool {
        !self.pending.is_empty() && self.pending.iter().all(|t| t.blocked)
    }

    /// Gives back the request queue's memory (call when the client is idle).
    pub fn release(&mut self) {
        if self.pending.is_empty() {
            self.pending.rest = VecDeque::new();
        }
    }

    fn unblock(&self, t: &Timed) {
        if t.blocked {
            self.shared.stats.blocked.fetch_sub(1, Ordering::Relaxed);
            self.status.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `n` bytes were read from the client (0: end of stream). Returns `n`.
    pub fn read(&mut self, n: usize) -> usize {
        self.shared.metrics.received_bytes.inc_by(n as u64);
        if self.idle_timeout.is_some() {
            self.last_active = self.now();
        }
        n
    }

    /// `n` bytes were written to the client. Returns `n`.
    pub fn wrote(&mut self, n: usize) -> usize {
        self.shared.metrics.sent_bytes.inc_by(n as u64);
        if self.idle_timeout.is_some() {
            self.last_active = self.now();
        }
        n
    }

    /// Completes when the client has been idle for `client_idle_timeout_ms` (never if 0).
    /// Poll it only while nothing is in flight. Cancel safe: the timer is kept across calls.
    pub async fn idle(&mut self) {
        loop {
            let Some(timeout) = self.idle_timeout else {
                return std::future::pending().await;
            };
            let deadline = self.last_active + timeout;
            match &mut self.idle_sleep {
                // Activity only moves the deadline later: let the timer fire early and re-arm
                // then, instead of re-arming it on every read.
                Some(sleep) if !sleep.is_elapsed() && sleep.deadline() <= deadline => {}
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.idle_sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            if let Some(sleep) = &mut self.idle_sleep {
                sleep.as_mut().await;
            }
            if Instant::now() < self.last_active + timeout {
                continue;
            }
            // The timeout in force may have been changed by a reload since the session began.
            let live = self.shared.config.client_idle_timeout();
            if live == self.idle_timeout {
                tracing::debug!(client = %self.peer, "idle timeout: closing the client connection");
                self.shared.metrics.disconnected(Disconnect::IdleTimeout);
                return;
            }
            self.idle_timeout = live;
        }
    }

    /// True if `unwritten` bytes of replies pass `client_output_buffer_limit`: the client must
    /// be disconnected (this logs and counts it).
    pub fn output_exceeded(&mut self, unwritten: usize) -> bool {
        if self.output_limit == 0 || unwritten <= self.output_limit {
            return false;
        }
        // Raised by a reload since the session began?
        let live = self.shared.config.client_output_buffer_limit;
        if live == 0 || unwritten <= live {
            self.output_limit = live;
            return false;
        }
        tracing::warn!(
            client = %self.peer,
            unwritten,
            limit = live,
            "client output buffer limit reached (the client reads too slowly): disconnecting it"
        );
        self.shared
            .metrics
            .disconnected(Disconnect::OutputBufferLimit);
        true
    }

    /// The connection ends with a socket error.
    pub fn io_error(&self) {
        self.shared.metrics.disconnected(Disconnect::IoError);
    }

    /// The connection closes after a protocol error.
    pub fn protocol_error(&self) {
        self.shared.metrics.disconnected(Disconnect::ProtocolError);
    }

    /// The connection closes on another client's CLIENT KILL.
    pub fn killed(&self) {
        self.shared.metrics.disconnected(Disconnect::Killed);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        while let Some(t) = self.pending.pop_front() {
            self.unblock(&t);
        }
    }
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("peer", &self.peer)
            .field("pending", &self.pending.iter().count())
            .field("idle_timeout", &self.idle_timeout)
            .field("output_limit", &self.output_limit)
            .finish()
    }
}

// === impl TimedQueue ===

impl TimedQueue {
    fn push(&mut self, t: Timed) {
        if self.head.is_none() {
            self.head = Some(t);
        } else {
            self.rest.push_back(t);
        }
    }

    fn front(&self) -> Option<&Timed> {
        self.head.as_ref()
    }

    fn pop_front(&mut self) -> Option<Timed> {
        let t = self.head.take();
        self.head = self.rest.pop_front();
        t
    }

    fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn iter(&self) -> impl Iterator<Item = &Timed> {
        self.head.iter().chain(self.rest.iter())
    }

    /// Request `seq`, searched from the newest (the one usually asked for).
    fn find_mut(&mut self, seq: u64) -> Option<&mut Timed> {
        match self.rest.iter().rposition(|t| t.seq == seq) {
            Some(i) => self.rest.get_mut(i),
            None => self.head.as_mut().filter(|t| t.seq == seq),
        }
    }
}

// === impl Fnv ===

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

#[cfg(test)]
mod tests;
