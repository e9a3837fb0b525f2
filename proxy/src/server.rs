//! The accept loop, and the state every client session shares ([`Shared`]) or owns
//! ([`ClientState`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use protocol::Version;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::listener::{ClientAddr, ClientRead, ClientWrite, Listener};
use crate::metrics::Metrics;
use crate::reload::LiveConfig;
use crate::reply::ReplyQueue;
use crate::slowlog::SlowLog;
use crate::topology::Topology;

/// What a client over `max_clients` is told before its connection is closed (Redis's words).
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Counters shown by INFO and /metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections open now.
    pub clients_open: AtomicU64,
    /// Client connections accepted since start.
    pub clients_accepted: AtomicU64,
    /// Clients waiting in a blocking command (`slotway_blocked_clients`): a client counts from
    /// sending its blocking request until its reply is ready or it disconnects.
    pub blocked: AtomicU64,
    /// Requests sent again (TRYAGAIN, CLUSTERDOWN, unreachable node).
    pub retries: AtomicU64,
}

/// State shared by all sessions.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force (replaced by a SIGHUP reload; see [`LiveConfig`]).
    pub config: LiveConfig,
    /// Slot map and node pools.
    pub topology: Arc<Topology>,
    /// Counters.
    pub stats: Stats,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// SLOWLOG entries.
    pub slowlog: SlowLog,
    /// Every connected client's CLIENT LIST line, by client id.
    pub clients: ClientRegistry,
    /// Scripts seen in SCRIPT LOAD.
    pub scripts: ScriptCache,
    /// How client key names map to stored names (co-location rules, database prefixes).
    pub names: routing::names::KeyNames,
    /// The TLS listener's configuration, replaced by a reload (with `tls.listen`).
    pub client_tls: Option<Arc<crate::tls::Acceptor>>,
    /// The clients in MONITOR mode.
    pub monitors: crate::monitor::Monitors,
    /// When the proxy started.
    pub started: Instant,
    /// A random 40-hex-digit id, as INFO's `run_id`.
    pub run_id: String,
    next_client_id: AtomicU64,
    redis_version: Mutex<Option<String>>,
}

/// Script bodies by SHA1, as seen in SCRIPT LOAD and EVAL, so that a node that answers
/// NOSCRIPT (another master than the one that ran the EVAL, or one that joined or was promoted
/// after the load) can be given the script: one node would know it.
#[derive(Debug, Default)]
pub struct ScriptCache {
    bodies: Mutex<HashMap<Bytes, Bytes>>,
}

impl ScriptCache {
    /// Most scripts remembered; past it the cache is cleared (scripts are reloaded on demand).
    const MAX: usize = 10_000;

    /// The body of the script with this SHA1 (40 hex digits, any case).
    pub fn get(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = Bytes::from(sha.to_ascii_lowercase());
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sha)
            .cloned()
    }

    /// Remembers the body of an EVAL under its SHA1, as a node caches what it evaluates.
    pub fn remember(&self, body: Bytes) {
        let sha = sha1_smol::Sha1::from(&body[..]).digest().to_string();
        self.insert(Bytes::from(sha), body);
    }

    /// Forgets every script (SCRIPT FLUSH).
    pub fn clear(&self) {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Remembers a script.
    pub fn insert(&self, sha: Bytes, body: Bytes) {
        let mut bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        if bodies.len() >= ScriptCache::MAX {
            bodies.clear();
        }
        bodies.insert(Bytes::from(sha.to_ascii_lowercase()), body);
    }
}

/// The CLIENT LIST view of all sessions: what each client's line is made of, formatted only
/// when someone asks (a formatted line per idle client would cost more than the client).
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Mutex<HashMap<u64, ClientInfo>>,
}

/// What CLIENT LIST and CLIENT INFO show of one client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// CLIENT ID.
    pub id: u64,
    /// The client's address.
    pub peer: ClientAddr,
    /// The proxy's address on this connection.
    pub local: ClientAddr,
    /// When the connection was accepted.
    pub connected: Instant,
    /// The negotiated protocol.
    pub version: Version,
    /// The SELECTed database.
    pub db: u32,
    /// CLIENT SETNAME, CLIENT SETINFO LIB-NAME and LIB-VER, when set.
    pub names: Option<Box<[Option<Bytes>; 3]>>,
    /// How other clients reach its session (CLIENT KILL, CLIENT UNBLOCK).
    pub remote: Remote,
}

/// A session's handles for other clients: its inbox, and what it publishes about itself.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The session's reply queue, which also takes [`crate::reply::Control`] orders.
    pub inbox: Arc<ReplyQueue>,
    /// What CLIENT UNBLOCK and CLIENT KILL TYPE look at.
    pub status: Arc<ClientStatus>,
}

/// What a session keeps up to date about itself for other clients.
#[derive(Debug, Default)]
pub struct ClientStatus {
    /// Its requests now blocked in a blocking command on a node (kept by its
    /// `metrics::Meter`).
    pub blocked: AtomicU32,
    /// True while it has subscriptions (CLIENT KILL TYPE pubsub); kept by its session.
    pub subscriber: AtomicBool,
    /// Its latest request's command, as `Metrics::command_index` + 1 (0: none yet); CLIENT
    /// LIST's `cmd`.
    pub last_command: AtomicU16,
    /// When its latest request came, in seconds since the proxy started; CLIENT LIST's `idle`.
    pub last_active: AtomicU32,
    /// CLIENT LIST's `sub`, `psub` and `ssub`, each in 21 bits (kept by its session).
    pub subscriptions: std::sync::atomic::AtomicU64,
    /// CLIENT LIST's `multi` + 1: 0 outside MULTI, else one more than the commands queued.
    pub multi: AtomicU32,
}

impl ClientStatus {
    /// Packs `sub`, `psub`, `ssub` for [`ClientStatus::subscriptions`].
    pub fn pack_subscriptions(sub: usize, psub: usize, ssub: usize) -> u64 {
        let field = |n: usize| (n as u64).min((1 << 21) - 1);
        field(sub) | field(psub) << 21 | field(ssub) << 42
    }

    /// `sub`, `psub`, `ssub`.
    pub fn subscription_counts(&self) -> (u64, u64, u64) {
        let v = self.subscriptions.load(Ordering::Relaxed);
        let mask = (1 << 21) - 1;
        (v & mask, (v >> 21) & mask, (v >> 42) & mask)
    }
}

/// What one client session knows about its client.
#[derive(Debug)]
pub struct ClientState {
    /// CLIENT ID.
    pub id: u64,
    /// The negotiated protocol.
    pub version: Version,
    /// True once AUTH succeeded, or if no password is configured.
    pub authenticated: bool,
    /// The SELECTed database (always 0 unless `databases: namespaced`).
    pub db: u32,
    // Addresses, connection time and names live only in `shared.clients`: a session keeps
    // what it needs on every request, and no copy of what CLIENT LIST alone shows.
    shared: Arc<Shared>,
}

// === impl Shared ===

impl Shared {
    /// Creates the shared state. `metrics` should be the one `topology` was created with.
    pub fn new(
        config: Config,
        topology: Arc<Topology>,
        metrics: Arc<Metrics>,
        client_tls: Option<Arc<crate::tls::Acceptor>>,
    ) -> Arc<Shared> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let run_id = format!("{:040x}", seed ^ (u128::from(std::process::id()) << 64));
        let names = config.key_names();
        Arc::new(Shared {
            slowlog: SlowLog::new(&config.slowlog),
            config: LiveConfig::new(config),
            topology,
            stats: Stats::default(),
            metrics,
            clients: ClientRegistry::default(),
            scripts: ScriptCache::default(),
            names,
            client_tls,
            monitors: crate::monitor::Monitors::default(),
            started: Instant::now(),
            run_id: run_id[run_id.len() - 40..].to_string(),
            next_client_id: AtomicU64::new(1),
            redis_version: Mutex::new(None),
        })
    }

    /// The Redis version the cluster runs, as last learned, or a default.
    pub fn redis_version(&self) -> String {
        self.redis_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| crate::local::DEFAULT_REDIS_VERSION.to_string())
    }

    /// Records the cluster's Redis version.
    pub fn set_redis_version(&self, v: String) {
        *self.redis_version.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }
}

// === impl ClientRegistry ===

impl ClientRegistry {
    /// Every client, ordered by id.
    pub fn snapshot(&self) -> Vec<ClientInfo> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<ClientInfo> = clients.values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// One client's entry.
    pub fn get(&self, id: u64) -> Option<ClientInfo> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// One client's address.
    pub fn peer(&self, id: u64) -> Option<ClientAddr> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|c| c.peer.clone())
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut ClientInfo)) {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            f(c);
        }
    }

    fn set(&self, info: ClientInfo) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.id, info);
    }

    fn remove(&self, id: u64) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

// === impl ClientState ===

impl ClientState {
    /// A new client, registered in `shared.clients`.
    pub fn new(
        shared: Arc<Shared>,
        peer: ClientAddr,
        local: ClientAddr,
        remote: Remote,
    ) -> ClientState {
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        shared.clients.set(ClientInfo {
            id,
            peer,
            local,
            connected: Instant::now(),
            version: Version::Resp2,
            db: 0,
            names: None,
            remote,
        });
        ClientState {
            id,
            version: Version::Resp2,
            authenticated: shared.config.password.is_none(),
            db: 0,
            shared,
        }
    }

    /// Updates this client's CLIENT LIST entry with its protocol and database.
    pub fn publish(&self) {
        let (version, db) = (self.version, self.db);
        self.shared.clients.update(self.id, |c| {
            c.version = version;
            c.db = db;
        });
    }

    /// What CLIENT LIST shows of this client.
    pub fn info(&self) -> ClientInfo {
        let mut info = self.shared.clients.get(self.id).unwrap_or(ClientInfo {
            id: self.id,
            peer: ClientAddr::UNKNOWN,
            local: ClientAddr::UNKNOWN,
            connected: Instant::now(),
            version: self.version,
            db: self.db,
            names: None,
            remote: Remote {
                inbox: Arc::default(),
                status: Arc::default(),
            },
        });
        info.version = self.version;
        info.db = self.db;
        info
    }

    /// The client's address.
    pub fn peer(&self) -> Option<ClientAddr> {
        self.shared.clients.get(self.id).map(|c| c.peer)
    }

    /// CLIENT SETNAME's name.
    pub fn name(&self) -> Option<Bytes> {
        self.shared
            .clients
            .get(self.id)
            .and_then(|c| c.names.and_then(|n| n[0].clone()))
    }

    /// Sets the name (0), library name (1) or library version (2).
    pub fn set_name(&mut self, which: usize, value: Option<Bytes>) {
        self.shared.clients.update(self.id, |c| {
            if value.is_none() && c.names.is_none() {
                return;
            }
            if let Some(slot) = c.names.get_or_insert_with(Default::default).get_mut(which) {
                *slot = value;
            }
        });
    }

    /// RESET: back to a fresh connection's state (the id stays).
    pub fn reset(&mut self) {
        self.version = Version::Resp2;
        self.set_name(0, None);
        self.db = 0;
        self.authenticated = self.shared.config.password.is_none();
        self.publish();
    }
}

impl Drop for ClientState {
    fn drop(&mut self) {
        self.shared.clients.remove(self.id);
        self.shared.monitors.remove(self.id);
        // Counted up by the accept loop just before this state was made.
        self.shared
            .stats
            .clients_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts clients until `shutdown`, one session task each, tracked by `tasks`.
pub async fn accept_loop(
    listener: &Listener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let max_clients = shared.config.max_clients;
        // Counted here, not in the session task, so that a burst cannot overshoot the limit.
        let open = shared.stats.clients_open.fetch_add(1, Ordering::Relaxed);
        if max_clients > 0 && open >= max_clients as u64 {
            shared.stats.clients_open.fetch_sub(1, Ordering::Relaxed);
            shared.metrics.client_rejected();
            tracing::debug!(client = %accepted.peer, max_clients, "max_clients reached: connection refused");
            tokio::spawn(reject(accepted.rd, accepted.wr));
            continue;
        }
        shared
            .stats
            .clients_accepted
            .fetch_add(1, Ordering::Relaxed);
        // The session's own future, not wrapped in another: a wrapper would hold a second copy
        // of what it captures, for every idle client (`clients_open` is decremented when the
        // session's `ClientState` is dropped).
        let session = crate::session::run(accepted, shared.clone(), shutdown.clone());
        tasks.spawn(session);
    }
}

/// Tells a client over `max_clients` why, and closes its connection gracefully.
async fn reject(mut rd: ClientRead, mut wr: ClientWrite) {
    if tokio::io::AsyncWriteExt::write_all(&mut wr, MAX_CLIENTS_REPLY)
        .await
        .is_ok()
    {
        crate::shutdown::close(&mut rd, &mut wr).await;
    }
}
