//! The HTTP endpoint on `metrics_listen` (hyper, HTTP/1.1), for Prometheus and container
//! probes:
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | every metric, Prometheus text format |
//! | `/healthz` | 200 `ok` while the process serves |
//! | `/readyz` | 200 `ready` if the slot map covers all 16384 slots and every master is reachable; 503 and the reason otherwise, and from the moment shutdown starts |
//! | `/topology` | the slot map and each node's state, as JSON |
//!
//! The endpoint keeps serving while clients drain after SIGTERM, so probes see the 503.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;

/// Requests must send their headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the endpoint on `listener` until the process ends. `shutdown` only turns `/readyz`
/// to 503.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = handle(&req, &shared, &shutdown);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics endpoint: connection error");
            }
        });
    }
}

/// Answers one request.
pub fn handle(
    req: &Request<Incoming>,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Response<Full<Bytes>> {
    tracing::debug!(method = %req.method(), path = req.uri().path(), "admin request");
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".to_string(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, shared.metrics.encode(shared));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_string()),
        "/readyz" => match readiness(shared, shutdown) {
            Ok(()) => text(StatusCode::OK, "ready\n".to_string()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/topology" => {
            let mut r = text(StatusCode::OK, topology_json(shared, shutdown).to_string());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz or /topology\n".to_string(),
        ),
    }
}

fn readiness(shared: &Shared, shutdown: &CancellationToken) -> Result<(), String> {
    if shutdown.is_cancelled() {
        return Err("shutting down".to_string());
    }
    shared.topology.readiness()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `/topology`: the slot map (slot ranges per shard) and each node's state.
pub fn topology_json(shared: &Shared, shutdown: &CancellationToken) -> serde_json::Value {
    use serde_json::json;
    let routes = shared.topology.routes();
    let map = routes.map();
    let mut ranges: Vec<Vec<[u16; 2]>> = vec![Vec::new(); map.shards().len()];
    let mut covered = 0;
    let mut run: Option<(usize, u16, u16)> = None;
    for slot in (0..routing::Slot::COUNT as u16).filter_map(routing::Slot::new) {
        let owner = map.shard_for(slot);
        covered += usize::from(owner.is_some());
        match (run, owner) {
            (Some((shard, start, _)), Some(o)) if shard == o => {
                run = Some((shard, start, slot.get()))
            }
            _ => {
                if let Some((shard, start, end)) = run.take() {
                    ranges[shard].push([start, end]);
                }
                run = owner.map(|o| (o, slot.get(), slot.get()));
            }
        }
    }
    if let Some((shard, start, end)) = run {
        ranges[shard].push([start, end]);
    }
    let node = |addr: &str| {
        let n = shared.metrics.node(addr);
        json!({
            "addr": addr,
            "state": n.state().label(),
            "connections": n.connections(),
            "requests_in_flight": n.in_flight(),
            "connection_errors": n.errors(),
        })
    };
    let shards: Vec<serde_json::Value> = map
        .shards()
        .iter()
        .zip(ranges)
        .map(|(shard, ranges)| {
            json!({
                "master": node(&shard.master),
                "master_id": shard.master_id,
                "replicas": shard.replicas.iter().map(|r| node(r)).collect::<Vec<_>>(),
                "slots": ranges,
                "slot_count": ranges.iter().map(|[a, b]| usize::from(b - a) + 1).sum::<usize>(),
            })
        })
        .collect();
    let ready = readiness(shared, shutdown);
    json!({
        "ready": ready.is_ok(),
        "not_ready_reason": ready.err(),
        "slots_covered": covered,
        "slot_map_age_seconds": routes.age().as_secs_f64(),
        "slot_map_refreshes": shared.topology.refresh_count(),
        "shards": shards,
    })
}
