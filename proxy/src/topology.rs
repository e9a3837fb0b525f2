//! The cluster's shape as the proxy sees it: the slot map, a connection pool per node, and the
//! task that keeps them fresh.
//!
//! Readers call [`Topology::routes`] (an `ArcSwap` load: no lock) and get an immutable
//! [`Routes`] snapshot. The refresh task is the only writer, apart from [`Topology::moved`],
//! which patches one slot at once when a node answers `MOVED` so that the next request goes to
//! the right node even before the refresh completes. Each snapshot whose map or pools differ
//! from the last has a new [`Routes::generation`]; sessions compare it with the one they are
//! sending by ([`Topology::generation`]: one atomic load) to keep their requests in order across
//! a change.
//!
//! Refreshes happen on a timer, when a redirect says the map is stale, and when a backend
//! connection fails; at most one runs at a time, and requests for a refresh that arrive while
//! one runs are folded into the next. After a connection failure the task polls every 100 ms
//! until the failed node is no longer a master in the map (its replica was promoted) or it
//! comes back, so a promoted replica is served within a fraction of a second.
//!
//! Each node's reachability ([`NodeState`], kept in its [`NodeMetrics`]) is set by its
//! connections as they connect or fail, and by a prober task that PINGs every master that is not
//! known to be up (every second) and all masters every refresh interval. [`Topology::readiness`]
//! (`/readyz`) reads it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use protocol::{Frame, Limits, Version};
use routing::{Slot, SlotMap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendConn, ConnSettings};
use crate::config::Config;
use crate::metrics::{Metrics, NodeMetrics, NodeState};
use crate::motion::Motion;
use crate::transport::Connector;

/// Fast polling after a node failure lasts at most this long.
const FAST_POLL_WINDOW: Duration = Duration::from_secs(60);
/// Interval of fast polling.
const FAST_POLL: Duration = Duration::from_millis(100);
/// Probe interval while a master is not known to be up.
const PROBE_DOWN: Duration = Duration::from_secs(1);

/// Pooled connections to one node, one small pool per protocol version (created on first use:
/// replies are forwarded raw, so a RESP3 client needs a RESP3 connection).
#[derive(Debug)]
pub struct NodePool {
    addr: Arc<str>,
    settings: ConnSettings,
    size: usize,
    by_version: [OnceLock<Box<[BackendConn]>>; 2],
}

/// An immutable snapshot: the slot map and the pool of each shard's master.
#[derive(Debug)]
pub struct Routes {
    map: SlotMap,
    /// `masters[i]` is the pool of `map.shards()[i].master`.
    masters: Vec<Arc<NodePool>>,
    /// Every replica's pool, shard by shard.
    replicas: Vec<Arc<NodePool>>,
    /// When this map was fetched from the cluster.
    fetched_at: Instant,
    /// Changes when the map or the pools do (not when a refresh finds the same map).
    generation: u64,
}

/// Shared topology state. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Topology {
    routes: ArcSwap<Routes>,
    pools: Mutex<HashMap<Arc<str>, Arc<NodePool>>>,
    /// Replaced by [`Topology::reconfigure`]; read when a pool is created or a refresh starts.
    settings: Mutex<Settings>,
    metrics: Arc<Metrics>,
    wake: Notify,
    /// Wakes the prober (the masters changed).
    probe_now: Notify,
    failures_tx: mpsc::UnboundedSender<Arc<str>>,
    failures_rx: Mutex<Option<mpsc::UnboundedReceiver<Arc<str>>>>,
    refreshes: AtomicU64,
    /// The newest [`Routes::generation`].
    generation: AtomicU64,
    /// Held while a snapshot is stored (see [`Topology::store`]).
    store_lock: Mutex<()>,
    /// The slots seen migrating (`ASK`, `TRYAGAIN`) until their `MOVED`.
    motion: Motion,
}

/// The reloadable part of the topology's configuration.
#[derive(Debug, Clone)]
struct Settings {
    seeds: Vec<String>,
    base: ConnSettings,
    pool_size: usize,
    refresh_interval: Duration,
}

// === impl NodePool ===

impl NodePool {
    fn new(addr: Arc<str>, base: &ConnSettings, size: usize, node: Arc<NodeMetrics>) -> NodePool {
        let settings = ConnSettings {
            addr: addr.clone(),
            node,
            ..base.clone()
        };
        NodePool {
            addr,
            settings,
            size,
            by_version: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// `host:port` of the node.
    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// The node's metrics and reachability.
    pub fn health(&self) -> &Arc<NodeMetrics> {
        &self.settings.node
    }

    /// The pooled connection for a client: always the same one for the same `client_id`, so
    /// that one client's requests to one node stay in order.
    pub fn conn(&self, version: Version, client_id: u64) -> &BackendConn {
        let i = match version {
            Version::Resp2 => 0,
            Version::Resp3 => 1,
        };
        let conns = self.by_version[i].get_or_init(|| {
            (0..self.size)
                .map(|_| {
                    BackendConn::spawn(ConnSettings {
                        version,
                        ..self.settings.clone()
                    })
                })
                .collect()
        });
        &conns[(client_id % conns.len() as u64) as usize]
    }

    /// A client's subscriber connection to this node: every frame goes to `queue`, delivered
    /// with [`crate::backend::SUBSCRIBER_SEQ`] and `part`.
    pub fn subscriber(
        &self,
        version: Version,
        queue: Arc<crate::reply::ReplyQueue>,
        part: u32,
    ) -> BackendConn {
        BackendConn::spawn(ConnSettings {
            version,
            read_timeout: None,
            kind: crate::backend::ConnKind::Subscriber { queue, part },
            ..self.settings.clone()
        })
    }

    /// A connection of this node's own, not shared with anyone (for blocking commands).
    pub fn dedicated(&self, version: Version) -> BackendConn {
        BackendConn::spawn(ConnSettings {
            version,
            read_timeout: None,
            kind: crate::backend::ConnKind::Dedicated,
            ..self.settings.clone()
        })
    }
}

// === impl Routes ===

impl Routes {
    fn empty() -> Routes {
        Routes {
            map: SlotMap::empty(),
            masters: Vec::new(),
            replicas: Vec::new(),
            fetched_at: Instant::now(),
            generation: 0,
        }
    }

    /// Which snapshot this is: a newer map or new pools have a larger number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The slot map.
    pub fn map(&self) -> &SlotMap {
        &self.map
    }

    /// The pool of the master that owns `slot`.
    pub fn master_for(&self, slot: Slot) -> Option<&Arc<NodePool>> {
        self.masters.get(self.map.shard_for(slot)?)
    }

    /// Every master's pool, in shard order.
    pub fn masters(&self) -> &[Arc<NodePool>] {
        &self.masters
    }

    /// The node at `addr`, master or replica.
    pub fn pool_by_addr(&self, addr: &str) -> Option<&Arc<NodePool>> {
        self.masters
            .iter()
            .chain(&self.replicas)
            .find(|p| &**p.addr() == addr)
    }

    /// Number of nodes, masters and replicas.
    pub fn node_count(&self) -> usize {
        self.masters.len() + self.replicas.len()
    }

    /// Node `i`: the masters first, then the replicas.
    pub fn node(&self, i: usize) -> Option<&Arc<NodePool>> {
        self.masters
            .get(i)
            .or_else(|| self.replicas.get(i.checked_sub(self.masters.len())?))
    }

    /// Some master, chosen by `hint` so that keyless traffic spreads over the masters.
    pub fn any_master(&self, hint: u64) -> Option<&Arc<NodePool>> {
        if self.masters.is_empty() {
            return None;
        }
        self.masters
            .get((hint % self.masters.len() as u64) as usize)
    }

    /// How long ago this map was fetched.
    pub fn age(&self) -> Duration {
        self.fetched_at.elapsed()
    }
}

// === impl Topology ===

impl Topology {
    /// Creates the topology with an empty map. Call [`Topology::run`] to fill and refresh it.
    /// Node metrics are registered in `metrics`.
    pub fn new(config: &Config, connector: Connector, metrics: Arc<Metrics>) -> Arc<Topology> {
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        let settings = Settings::new(config, connector, &failures_tx);
        Arc::new(Topology {
            routes: ArcSwap::from_pointee(Routes::empty()),
            pools: Mutex::new(HashMap::new()),
            settings: Mutex::new(settings),
            metrics,
            wake: Notify::new(),
            probe_now: Notify::new(),
            failures_tx,
            failures_rx: Mutex::new(Some(failures_rx)),
            refreshes: Default::default(),
            generation: AtomicU64::new(0),
            store_lock: Mutex::new(()),
            motion: Motion::new(),
        })
    }

    /// The slots seen migrating.
    pub fn motion(&self) -> &Motion {
        &self.motion
    }

    /// The current snapshot. Lock-free.
    pub fn routes(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.routes.load()
    }

    /// The current snapshot's [`Routes::generation`] (it may lag `routes()` for an instant
    /// while a new snapshot is stored).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Stores a snapshot, under a new generation if `changed`. One store at a time, so that
    /// the published generation is always the stored snapshot's (two concurrent stores could
    /// otherwise leave an older snapshot behind a newer number, and sessions would keep
    /// waiting for a map they can never load).
    fn store(&self, mut routes: Routes, changed: bool) {
        let _one_at_a_time = self.store_lock.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.generation.load(Ordering::Acquire) + u64::from(changed);
        routes.generation = generation;
        self.routes.store(Arc::new(routes));
        self.generation.store(generation, Ordering::Release);
    }

    /// Number of slot map refreshes that succeeded so far.
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Asks for a refresh soon. Never blocks; requests coalesce.
    pub fn request_refresh(&self) {
        self.wake.notify_one();
    }

    /// Reports that a node failed (connection refused or lost).
    pub fn report_failure(&self, addr: Arc<str>) {
        let _ = self.failures_tx.send(addr);
    }

    /// Applies a `MOVED`: from now on `slot` goes to `addr`, and a full refresh is requested.
    pub fn moved(&self, slot: Slot, addr: &str) {
        self.motion.settled(slot);
        let current = self.routes.load();
        let already = current.master_for(slot).is_some_and(|p| &*p.addr == addr);
        if !already {
            let map = current.map.with_moved(slot, addr);
            self.store(self.build(map, current.fetched_at), true);
        }
        self.request_refresh();
    }

    /// The pool for `addr`, created if new (for `ASK` targets and new masters).
    pub fn pool(&self, addr: &str) -> Arc<NodePool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(addr) {
            return p.clone();
        }
        let addr: Arc<str> = Arc::from(addr);
        let settings = self.settings();
        let node = self.metrics.node(&addr);
        let pool = Arc::new(NodePool::new(
            addr.clone(),
            &settings.base,
            settings.pool_size,
            node,
        ));
        pools.insert(addr, pool.clone());
        pool
    }

    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies a reloaded configuration: seeds and refresh interval at once; if the connection
    /// settings (timeouts, credentials, pool size) changed, every pool is replaced: new
    /// requests use new connections, and the old ones close once their requests are answered.
    /// Returns true if the pools were replaced.
    pub fn reconfigure(&self, config: &Config, connector: Connector) -> bool {
        let replace = {
            let mut current = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            let new = Settings::new(config, connector, &self.failures_tx);
            let replace = !new.same_connections(&current);
            *current = new;
            replace
        };
        if replace {
            self.pools.lock().unwrap_or_else(|p| p.into_inner()).clear();
            let current = self.routes.load_full();
            self.store(self.build(current.map.clone(), current.fetched_at), true);
        }
        // The refresh interval may have changed.
        self.wake.notify_one();
        replace
    }

    /// Why the proxy should not receive traffic (`/readyz`), or `Ok` if the slot map covers all
    /// 16384 slots and every master is reachable.
    pub fn readiness(&self) -> Result<(), String> {
        let routes = self.routes.load();
        if routes.masters.is_empty() {
            return Err("no slot map yet: no cluster node has answered".to_string());
        }
        if !routes.map.is_complete() {
            return Err(format!(
                "the slot map covers {} of 16384 slots",
                crate::metrics::slots_covered(&routes.map)
            ));
        }
        let down: Vec<String> = routes
            .masters
            .iter()
            .filter(|p| p.health().state() != NodeState::Up)
            .map(|p| format!("{} ({})", p.addr, p.health().state().label()))
            .collect();
        if !down.is_empty() {
            return Err(format!("masters not reachable: {}", down.join(", ")));
        }
        Ok(())
    }

    /// (masters known to be up, masters in the slot map).
    pub fn masters_up(&self) -> (usize, usize) {
        let routes = self.routes.load();
        let up = routes
            .masters
            .iter()
            .filter(|p| p.health().state() == NodeState::Up)
            .count();
        (up, routes.masters.len())
    }

    /// The replicas' pools, shard by shard (for `/topology`).
    pub fn replica_pools(&self) -> Vec<Arc<NodePool>> {
        self.routes.load().replicas.clone()
    }

    /// PINGs masters until `shutdown`: those not known to be up every second, all of them every
    /// refresh interval, and new ones as soon as they appear in the map.
    async fn probe_masters(self: Arc<Topology>, shutdown: CancellationToken) {
        let mut last_full: Option<Instant> = None;
        loop {
            let settings = self.settings();
            let full = last_full.is_none_or(|t| t.elapsed() >= settings.refresh_interval);
            if full {
                last_full = Some(Instant::now());
            }
            let routes = self.routes.load_full();
            let mut probes = tokio::task::JoinSet::new();
            for pool in routes.masters.iter() {
                if full || pool.health().state() != NodeState::Up {
                    let (pool, base) = (pool.clone(), settings.base.clone());
                    probes.spawn(async move {
                        let result = ping(&pool.addr, &base).await;
                        (pool, result)
                    });
                }
            }
            while let Some(done) = probes.join_next().await {
                let Ok((pool, result)) = done else { continue };
                let before = pool.health().state();
                match result {
                    Ok(()) => {
                        if before == NodeState::Down {
                            tracing::info!(node = %pool.addr, "master reachable again");
                        }
                        pool.health().set_state(NodeState::Up);
                    }
                    Err(why) => {
                        if before != NodeState::Down {
                            tracing::warn!(node = %pool.addr, %why, "master unreachable");
                        }
                        pool.health().set_state(NodeState::Down);
                    }
                }
            }
            let all_up = routes
                .masters
                .iter()
                .all(|p| p.health().state() == NodeState::Up);
            let wait = if all_up {
                settings.refresh_interval
            } else {
                PROBE_DOWN
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.probe_now.notified() => {}
            }
        }
    }

    fn build(&self, map: SlotMap, fetched_at: Instant) -> Routes {
        let masters = map.shards().iter().map(|s| self.pool(&s.master)).collect();
        let replicas = map
            .shards()
            .iter()
            .flat_map(|s| s.replicas.iter())
            .map(|r| self.pool(r))
            .collect();
        Routes {
            map,
            masters,
            replicas,
            fetched_at,
            generation: 0,
        }
    }

    /// Fetches the slot map once, trying every known node. Returns true on success.
    pub async fn refresh(&self) -> bool {
        let current = self.routes.load_full();
        let mut candidates: Vec<String> = Vec::new();
        for shard in current.map.shards() {
            candidates.push(shard.master.clone());
        }
        for shard in current.map.shards() {
            candidates.extend(shard.replicas.iter().cloned());
        }
        let settings = self.settings();
        candidates.extend(settings.seeds.iter().cloned());
        let mut seen = HashSet::new();
        candidates.retain(|c| seen.insert(c.clone()));
        let mut failures = Vec::new();
        for addr in candidates {
            match fetch_slot_map(&addr, &settings.base).await {
                Ok(map) => {
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    self.metrics.refreshed(true);
                    if map != current.map || current.masters.is_empty() {
                        tracing::info!(
                            from = %addr,
                            masters = map.shards().len(),
                            complete = map.is_complete(),
                            "slot map updated"
                        );
                        self.store(self.build(map, Instant::now()), true);
                        self.probe_now.notify_one();
                    } else {
                        let routes = Routes {
                            map,
                            masters: current.masters.clone(),
                            replicas: current.replicas.clone(),
                            fetched_at: Instant::now(),
                            generation: 0,
                        };
                        self.store(routes, false);
                    }
                    return true;
                }
                Err(why) => {
                    tracing::debug!(node = %addr, %why, "slot map fetch failed");
                    failures.push(format!("{addr}: {why}"));
                }
            }
        }
        tracing::warn!(
            tried = %failures.join("; "),
            "no cluster node gave a usable slot map"
        );
        self.metrics.refreshed(false);
        false
    }

    /// Keeps the map fresh until `shutdown`: on a timer, on request, and at 100 ms intervals
    /// while a failed node is still a master in the map.
    pub async fn run(self: Arc<Topology>, shutdown: CancellationToken) {
        let Some(mut failures) = self
            .failures_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        tokio::spawn(self.clone().probe_masters(shutdown.clone()));
        let mut failed: HashMap<Arc<str>, Instant> = HashMap::new();
        let mut last = Instant::now();
        loop {
            let fast = !failed.is_empty();
            let wait = if fast {
                FAST_POLL
            } else if self.routes.load().masters.is_empty() {
                Duration::from_millis(200)
            } else {
                self.settings().refresh_interval
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                Some(addr) = failures.recv() => {
                    failed.entry(addr).or_insert_with(Instant::now);
                }
            }
            while let Ok(addr) = failures.try_recv() {
                failed.entry(addr).or_insert_with(Instant::now);
            }
            // Debounce: a storm of MOVED or failures costs one refresh per 50 ms at most.
            let since = last.elapsed();
            if since < Duration::from_millis(50) {
                tokio::time::sleep(Duration::from_millis(50) - since).await;
            }
            last = Instant::now();
            self.refresh().await;
            let routes = self.routes.load();
            failed.retain(|addr, since| {
                let still_master = routes.masters.iter().any(|p| p.addr == *addr);
                still_master && since.elapsed() < FAST_POLL_WINDOW
            });
        }
    }
}

// === impl Settings ===

impl Settings {
    fn new(
        config: &Config,
        connector: Connector,
        failures: &mpsc::UnboundedSender<Arc<str>>,
    ) -> Settings {
        let auth = config
            .backend_password
            .clone()
            .map(|p| (config.backend_username.clone(), p));
        let base = ConnSettings {
            addr: Arc::from(""),
            connector,
            version: Version::Resp2,
            connect_timeout: config.connect_timeout(),
            read_timeout: config.read_timeout(),
            auth,
            on_failure: Some(failures.clone()),
            kind: crate::backend::ConnKind::Pooled,
            node: NodeMetrics::detached(""),
        };
        Settings {
            seeds: config.seeds.clone(),
            base,
            pool_size: config.backend_connections,
            refresh_interval: config.refresh_interval(),
        }
    }

    /// True if connections made with `self` and `other` would be the same.
    fn same_connections(&self, other: &Settings) -> bool {
        self.pool_size == other.pool_size
            && self.base.connect_timeout == other.base.connect_timeout
            && self.base.read_timeout == other.base.read_timeout
            && self.base.auth == other.base.auth
            && self.base.connector == other.base.connector
    }
}

/// Connects to `addr`, authenticates if configured, and expects `PONG` to `PING`.
async fn ping(addr: &str, base: &ConnSettings) -> Result<(), String> {
    let io = async {
        let mut stream = base
            .connector
            .connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut expect = 1;
        if let Some(auth) = base.auth_request() {
            out.extend_from_slice(auth.raw());
            expect += 1;
        }
        out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(256);
        let limits = Limits::default();
        while expect > 0 {
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".to_string());
            }
            while let Some(f) = protocol::decode(&mut buf, &limits).map_err(|e| e.to_string())? {
                if let Frame::Error(e) = f {
                    return Err(String::from_utf8_lossy(&e).into_owned());
                }
                expect -= 1;
            }
        }
        Ok::<_, String>(())
    };
    tokio::time::timeout(base.connect_timeout * 2, io)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// Asks one node for the slot map on a short-lived connection: `CLUSTER SHARDS`, or
/// `CLUSTER SLOTS` where SHARDS is unknown (before Redis 7).
async fn fetch_slot_map(addr: &str, base: &ConnSettings) -> Result<SlotMap, String> {
    let io = async {
        let mut stream = base
            .connector
            .connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut expect = 0;
        if let Some(auth) = base.auth_request() {
            out.extend_from_slice(auth.raw());
            expect += 1;
        }
        out.extend_from_slice(b"*2\r\n$7\r\nCLUSTER\r\n$6\r\nSHARDS\r\n");
        out.extend_from_slice(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n");
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut frames = Vec::new();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let limits = Limits {
            max_depth: 16,
            ..Limits::default()
        };
        while frames.len() < expect + 2 {
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".to_string());
            }
            while let Some(f) = protocol::decode(&mut buf, &limits).map_err(|e| e.to_string())? {
                frames.push(f);
            }
        }
        Ok::<_, String>(frames)
    };
    let frames = tokio::time::timeout(base.connect_timeout * 2, io)
        .await
        .map_err(|_| "timeout".to_string())??;
    let mut frames = frames.into_iter().skip_while(|_| false);
    if base.auth.is_some() {
        if let Some(Frame::Error(e)) = frames.next() {
            return Err(format!("AUTH refused: {}", String::from_utf8_lossy(&e)));
        }
    }
    let shards = frames.next().ok_or("no reply")?;
    let slots = frames.next().ok_or("no reply")?;
    match shards {
        Frame::Error(_) => match slots {
            Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
            f => SlotMap::from_cluster_slots(&f, addr).map_err(|e| e.to_string()),
        },
        f => {
            // A node that serves TLS clients gives its TLS port as `tls-port` (and its plain
            // one, if any, as `port`); CLUSTER SLOTS and MOVED already name the port that
            // matches the connection.
            SlotMap::from_cluster_shards(&f, addr, base.connector.transport())
                .map_err(|e| e.to_string())
        }
    }
}
