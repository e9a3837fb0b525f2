//! Slotway: a Redis Cluster proxy that makes a cluster look like one Redis node.
//!
//! Clients connect to one endpoint and speak plain RESP2 or RESP3; requests from all clients
//! are multiplexed over a few pipelined connections per cluster node. This crate is the daemon:
//! it is the only part of Slotway that does I/O or spawns tasks (`protocol` and `routing` are
//! pure).
//!
//! ```text
//! socket ─▶ session (decode_request, dispatch::plan) ─▶ NodePool conn ─▶ backend task
//!        ◀─ session (ordered queue, one write)       ◀─ ReplyQueue   ◀─ raw reply frame
//! topology task: CLUSTER SHARDS ─▶ SlotMap ─▶ ArcSwap<Routes> (read by every session)
//! admin (hyper, metrics_listen): /metrics /healthz /readyz /topology ◀─ Metrics, Topology
//! ```
//!
//! Start at [`run`]; a request's path is `listener` → `server` → `session` → `dispatch` → `backend`.

pub mod admin;
pub mod backend;
pub mod cli;
pub mod config;
pub mod copies;
pub mod dispatch;
pub mod error;
pub mod info;
pub mod listener;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod motion;
pub mod names;
pub mod reload;
pub mod reply;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod slowlog;
pub mod tls;
pub mod topology;
pub mod transaction;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// [`server::accept_loop`] on `listener`, if there is one.
async fn accept_on(
    listener: Option<&listener::Listener>,
    shared: Arc<server::Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    if let Some(l) = listener {
        server::accept_loop(l, shared, shutdown, tasks).await;
    }
}

/// How long to wait for the first slot map before accepting clients anyway.
const STARTUP_MAP_WAIT: Duration = Duration::from_secs(5);

/// Binds the listeners (TCP, and the Unix socket if configured) and serves until `shutdown` is
/// cancelled, then drains.
///
/// `on_bound` receives the bound address (useful with port 0 in tests). SIGHUP is not handled;
/// see [`run_with_reload`].
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    run_with_reload(config, shutdown, on_bound, None).await
}

/// [`run`], and on SIGHUP reloads the configuration from `reload` (see [`reload`]).
///
/// # Errors
/// If a client listener or the metrics endpoint cannot be bound.
pub async fn run_with_reload(
    config: Config,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(std::net::SocketAddr),
    reload: Option<reload::Source>,
) -> std::io::Result<()> {
    let metrics = metrics::Metrics::new();
    let connector = transport::Connector::from_config(&config.backend_tls)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let topology = topology::Topology::new(&config, connector, metrics.clone());
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("listen {}: {e}", config.listen)))?;
    let addr = listener.local_addr()?;
    let unix = match &config.unix_socket {
        Some(path) => Some(
            listener::Listener::bind_unix(path, config.unix_socket_perm).map_err(|e| {
                std::io::Error::new(e.kind(), format!("unix_socket {}: {e}", path.display()))
            })?,
        ),
        None => None,
    };
    let (tls, client_tls) = match config.tls.listen {
        Some(at) => {
            let server = tls::server_config(&config.tls).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?;
            let acceptor = tls::Acceptor::new(server);
            let l = listener::Listener::bind_tls(at, acceptor.clone())
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("tls.listen {at}: {e}")))?;
            (Some(l), Some(acceptor))
        }
        None => (None, None),
    };
    let admin = match config.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("metrics_listen {at}: {e}")))?,
        ),
        None => None,
    };
    let shared = server::Shared::new(config, topology.clone(), metrics, client_tls);
    // The endpoint and SIGHUP work from here on, while the first slot map is awaited (probes
    // see /healthz 200 and /readyz 503; an early SIGHUP must not hit the default action, exit).
    if let Some(admin) = admin {
        let at = admin.local_addr()?;
        tracing::info!(%at, "metrics endpoint listening (/metrics /healthz /readyz /topology)");
        tokio::spawn(admin::serve(admin, shared.clone(), shutdown.clone()));
    }
    if let Some(source) = reload {
        reload::watch(shared.clone(), source);
    }
    let started = tokio::time::Instant::now();
    while !topology.refresh().await && started.elapsed() < STARTUP_MAP_WAIT {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::spawn(topology.run(shutdown.clone()));
    tokio::spawn(learn_redis_version(shared.clone()));
    tracing::info!(%addr, unix_socket = ?shared.config.unix_socket, "slotway listening");
    on_bound(addr);
    let tasks = TaskTracker::new();
    let tcp = listener::Listener::Tcp(listener);
    let accept = |l| accept_on(l, shared.clone(), shutdown.clone(), tasks.clone());
    tokio::join!(
        accept(Some(&tcp)),
        accept(unix.as_ref()),
        accept(tls.as_ref())
    );
    if let Some(unix) = &unix {
        unix.remove_file();
    }
    // Closed now, not when the drain is over: a client connecting while the proxy drains is
    // refused instead of waiting in the backlog of a listener nobody accepts from.
    drop((tcp, tls));
    tasks.close();
    let drain = shared.config.drain_timeout();
    tracing::info!(
        clients = tasks.len(),
        timeout_ms = drain.as_millis() as u64,
        "stopped accepting; waiting for in-flight requests"
    );
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::warn!(
            clients = tasks.len(),
            "drain timeout: closing remaining client connections"
        );
    } else {
        tracing::info!("all client connections closed");
    }
    Ok(())
}

/// Asks a master for `INFO server` so that INFO and HELLO report the cluster's Redis version.
async fn learn_redis_version(shared: Arc<server::Shared>) {
    for _ in 0..50 {
        let pool = shared.topology.routes().any_master(0).cloned();
        if let Some(pool) = pool {
            let (tx, rx) = tokio::sync::oneshot::channel();
            pool.conn(protocol::Version::Resp2, 0).send(backend::Job {
                payload: protocol::Request::from_args(["INFO", "server"])
                    .raw()
                    .clone(),
                asking: false,
                frames: 1,
                reply: reply::ReplyTo::Oneshot(tx),
            });
            if let Ok(reply::Reply::Frame(frame)) = rx.await {
                let text = String::from_utf8_lossy(&frame);
                if let Some(v) = text.lines().find_map(|l| l.strip_prefix("redis_version:")) {
                    shared.set_redis_version(v.trim().to_string());
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
