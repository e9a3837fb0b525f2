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
//! ```
//!
//! Start at [`run`]; a request's path is `server` → `session` → `dispatch` → `backend`.

pub mod backend;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod local;
pub mod logging;
pub mod names;
pub mod reply;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod topology;
pub mod transaction;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// How long to wait for the first slot map before accepting clients anyway.
const STARTUP_MAP_WAIT: Duration = Duration::from_secs(5);
/// How long in-flight requests get to finish after shutdown is signalled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the listener and serves until `shutdown` is cancelled, then drains.
///
/// `on_bound` receives the bound address (useful with port 0 in tests).
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    let topology = topology::Topology::new(&config);
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let started = tokio::time::Instant::now();
    while !topology.refresh().await && started.elapsed() < STARTUP_MAP_WAIT {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::spawn(topology.clone().run(shutdown.clone()));
    let shared = server::Shared::new(config, topology);
    tokio::spawn(learn_redis_version(shared.clone()));
    tracing::info!(%addr, "slotway listening");
    on_bound(addr);
    let tasks = TaskTracker::new();
    server::accept_loop(listener, shared, shutdown, tasks.clone()).await;
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining client connections");
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
