//! Unit tests of `metrics`.

use super::*;

#[test]
fn commands_are_labelled_by_table_name_and_unknown_ones_fold() {
    let m = Metrics::new();
    let get = m.command_index(routing::lookup(b"GET", None));
    let config_get = m.command_index(routing::lookup(b"config", Some(b"get")));
    let unknown = m.command_index(None);
    assert_eq!(m.command(get).name(), "get");
    assert_eq!(m.command(config_get).name(), "config|get");
    assert_eq!(m.command(unknown).name(), UNKNOWN_COMMAND);
    m.command(get).answered(Duration::from_micros(70), false);
    m.command(get).answered(Duration::from_millis(2), true);
    assert_eq!(m.command(get).count(), 2);
    assert_eq!(m.command_totals(), (2, 1));
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&m.registry.gather())
        .unwrap();
    assert!(
        text.contains("slotway_commands_total{command=\"get\"} 2"),
        "{text}"
    );
    assert!(text.contains("slotway_command_errors_total{command=\"get\"} 1"));
    assert!(
        text.contains("slotway_command_duration_seconds_bucket{command=\"get\",le=\"0.0001\"} 1")
    );
    // Only commands seen are exported.
    assert!(!text.contains("command=\"set\""));
}

#[test]
fn redirect_kinds() {
    assert_eq!(RedirectKind::of(b"MOVED 12 a:1"), Some(RedirectKind::Moved));
    assert_eq!(RedirectKind::of(b"ASK 12 a:1"), Some(RedirectKind::Ask));
    assert_eq!(
        RedirectKind::of(b"TRYAGAIN x"),
        Some(RedirectKind::TryAgain)
    );
    assert_eq!(
        RedirectKind::of(b"CLUSTERDOWN x"),
        Some(RedirectKind::ClusterDown)
    );
    assert_eq!(RedirectKind::of(b"ERR x"), None);
}

#[test]
fn node_connections_and_requests_in_flight_add_up_over_connections() {
    let m = Metrics::new();
    let node = m.node("127.0.0.1:7000");
    assert!(Arc::ptr_eq(&node, &m.node("127.0.0.1:7000")));
    assert_eq!(node.state(), NodeState::Unknown);
    let mut t = node.tracker();
    let open = t.connected();
    assert_eq!((node.connections(), node.state()), (1, NodeState::Up));
    let mut a = node.meter(true);
    let mut b = node.meter(false);
    a.in_flight(3);
    b.in_flight(2);
    assert_eq!(node.in_flight(), 5);
    a.in_flight(1);
    assert_eq!(node.in_flight(), 3);
    assert_eq!(node.requests.get(), 2);
    assert_eq!(node.duration.get_sample_count(), 2);
    drop(b);
    assert_eq!(node.in_flight(), 1);
    drop(open);
    t.lost();
    assert_eq!((node.connections(), node.state()), (0, NodeState::Down));
    let _open = t.connected();
    assert_eq!(node.reconnects.get(), 1);
    assert_eq!(node.errors(), 1);
}

fn new_shared(idle_ms: u64) -> Arc<Shared> {
    let config = crate::Config {
        seeds: vec!["127.0.0.1:1".into()],
        client_idle_timeout_ms: idle_ms,
        ..crate::Config::default()
    };
    let metrics = Metrics::new();
    let topology = crate::topology::Topology::new(
        &config,
        crate::transport::Connector::plain(),
        metrics.clone(),
    );
    Shared::new(config, topology, metrics, None)
}

#[tokio::test(start_paused = true)]
async fn idle_timer_fires_after_the_timeout_and_activity_moves_it() {
    let shared = new_shared(1_000);
    let mut meter = Meter::new(
        &shared,
        ClientAddr::Tcp("127.0.0.1:9".parse().unwrap()),
        Default::default(),
    );
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    meter.read(5);
    meter.idle().await;
    assert_eq!(start.elapsed(), Duration::from_millis(1_600));
    assert_eq!(shared.metrics.disconnects(Disconnect::IdleTimeout), 1);
    // Disabled: never fires.
    let shared = new_shared(0);
    let mut meter = Meter::new(
        &shared,
        ClientAddr::Tcp("127.0.0.1:9".parse().unwrap()),
        Default::default(),
    );
    let never = tokio::time::timeout(Duration::from_secs(3_600), meter.idle()).await;
    assert!(never.is_err());
}

#[test]
fn requests_are_timed_in_order_and_blocked_ones_counted_until_done() {
    let shared = new_shared(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut meter = Meter::new(
        &shared,
        ClientAddr::Tcp("127.0.0.1:9".parse().unwrap()),
        Default::default(),
    );
    let client = crate::server::ClientState::new(
        shared.clone(),
        ClientAddr::Tcp("127.0.0.1:9".parse().unwrap()),
        ClientAddr::Tcp("127.0.0.1:6380".parse().unwrap()),
        crate::server::Remote {
            inbox: Default::default(),
            status: Default::default(),
        },
    );
    let get = routing::lookup(b"get", None);
    let blpop = routing::lookup(b"blpop", None);
    let raw = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    meter.start(0, get, &raw);
    meter.start(1, blpop, &raw);
    meter.start(2, get, &raw);
    meter.block(1);
    assert_eq!(shared.stats.blocked.load(Ordering::Relaxed), 1);
    assert!(!meter.only_blocked_pending());
    meter.done(0, b"$1\r\nv\r\n", &client);
    assert!(!meter.only_blocked_pending());
    meter.done(1, b"*-1\r\n", &client);
    assert_eq!(shared.stats.blocked.load(Ordering::Relaxed), 0);
    meter.done(2, b"-ERR x\r\n", &client);
    let m = &shared.metrics;
    let get = m.command(m.command_index(get));
    assert_eq!((get.count(), get.errors.get()), (2, 1));
    // A session that ends while blocked stops counting as blocked.
    meter.start(3, blpop, &raw);
    meter.block(3);
    assert!(meter.only_blocked_pending());
    drop(meter);
    assert_eq!(shared.stats.blocked.load(Ordering::Relaxed), 0);
}

#[test]
fn disconnect_reasons_are_counted_apart() {
    let m = Metrics::new();
    m.disconnected(Disconnect::OutputBufferLimit);
    m.disconnected(Disconnect::OutputBufferLimit);
    m.disconnected(Disconnect::IdleTimeout);
    assert_eq!(m.disconnects(Disconnect::OutputBufferLimit), 2);
    assert_eq!(m.disconnects(Disconnect::IdleTimeout), 1);
    assert_eq!(m.disconnects(Disconnect::IoError), 0);
}
