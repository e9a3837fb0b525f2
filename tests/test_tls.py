"""TLS towards the nodes (``backend_tls``), against a real 3+3 cluster serving TLS; and TLS
towards clients (``tls.listen``), with real clients (redis-py, redis-cli) in front of the plain
test cluster.

The cluster's nodes have a plain port (used by the test harness to check data and move
slots) and a TLS port, with ``tls-cluster yes`` and ``tls-replication yes``, as
ElastiCache with encryption in transit runs them; they ask clients for a certificate
(``tls-auth-clients yes``, redis-server's default).  The proxy is seeded with a TLS
address only: the slot map must give it the nodes' TLS ports, MOVED must keep it on
them, and every kind of connection (pooled, a client's own for blocking commands and
WATCH, a subscriber's) must speak TLS.  A node's TLS port closes a connection that
speaks plain RESP, and its plain port closes one that starts a TLS handshake, so a
command that works shows the connection was TLS.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import redis

from support import process
from support.cluster import Cluster, redis_cli_path
from support.ports import allocate_port
from support.proxy import ProxyLauncher
from support.tls import TlsFiles, make_certs
from test_core import spread_keys


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TlsFiles:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory, certs) -> Cluster:
    cl = Cluster(tmp_path_factory.mktemp("tls-cluster"), tls=certs)
    try:
        cl.start()
        yield cl
    finally:
        cl.stop()


@pytest.fixture
def launch(tls_cluster, tmp_path_factory):
    launcher = ProxyLauncher(tls_cluster, tmp_path_factory.mktemp("tls-proxy"))
    yield launcher
    launcher.teardown()


def tls_seed(cluster: Cluster) -> str:
    return cluster.node(cluster.masters()[0]).tls_addr


def tls_addr_of(cluster: Cluster, addr: str) -> str:
    return cluster.node(addr).tls_addr


def proxy_masters(client) -> dict[str, str]:
    """``masterN: addr`` of the proxy's INFO (the slot map it routes by)."""
    info = client.info("proxy")
    return {
        name: fields["addr"]
        for name, fields in info.items()
        if name.startswith("master") and isinstance(fields, dict)
    }


def test_commands_reach_every_master_over_tls(tls_cluster, certs, launch):
    proxy = launch(*certs.proxy_args(), seeds=[tls_seed(tls_cluster)])
    client = proxy.client(decode_responses=False)
    # The map names the TLS ports (CLUSTER SHARDS' tls-port), not the plain ones.
    routed = set(proxy_masters(client).values())
    assert routed == {tls_addr_of(tls_cluster, m) for m in tls_cluster.masters()}

    keys = spread_keys(tls_cluster, "tls:k")
    for i, key in enumerate(keys):
        assert client.set(key, f"v{i}") is True
    assert client.mget(keys) == [f"v{i}".encode() for i in range(len(keys))]
    # Stored on the owning node, read back on its plain port.
    for i, key in enumerate(keys):
        node = tls_cluster.node_client(tls_cluster.node_for_key(key))
        assert node.get(key) == f"v{i}"

    # A 1 MiB binary value, and a 10,000-command pipeline in order: TLS records are sealed
    # and flushed as the socket takes them, whatever their size.
    big = bytes(range(256)) * 4096
    big = big[:-3] + b"\r\n\0"
    client.set("tls:big", big)
    assert client.get("tls:big") == big
    assert tls_cluster.node_client(tls_cluster.node_for_key("tls:big"), decode_responses=False).get("tls:big") == big
    pipe = client.pipeline(transaction=False)
    for i in range(10_000):
        pipe.set(f"tls:p:{i}", i)
        pipe.get(f"tls:p:{i}")
    replies = pipe.execute()
    assert replies[1::2] == [str(i).encode() for i in range(10_000)]
    assert all(r is True for r in replies[0::2])
    assert client.delete(*keys, "tls:big") == len(keys) + 1


def test_blocking_pubsub_and_transactions_over_tls(tls_cluster, certs, launch):
    proxy = launch(*certs.proxy_args(), seeds=[tls_seed(tls_cluster)])
    client = proxy.client()
    other = proxy.client()
    queues = spread_keys(tls_cluster, "tls:q", per_master=1)
    client.delete(*queues)

    # A cross-slot BLPOP blocks on the client's own connections to each node.
    got = {}
    waiter = threading.Thread(target=lambda: got.setdefault("r", client.blpop(queues, timeout=10)))
    waiter.start()
    time.sleep(0.3)
    assert other.rpush(queues[-1], "job") == 1
    waiter.join(10)
    assert got["r"] == (queues[-1], "job")

    # Pub/sub on the client's subscriber connection.
    sub = proxy.client().pubsub()
    sub.subscribe("tls:chan")
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    assert other.publish("tls:chan", "hello") >= 1
    msg = sub.get_message(timeout=5)
    assert msg is not None and msg["data"] == "hello"
    sub.close()

    # WATCH runs on the client's own connection; MULTI/EXEC on the pooled one.
    with client.pipeline() as pipe:
        pipe.watch("tls:counter")
        pipe.multi()
        pipe.incr("tls:counter")
        pipe.incr("tls:counter")
        assert pipe.execute() == [1, 2]
    with client.pipeline() as pipe:
        pipe.watch("tls:counter")
        other.incr("tls:counter")
        pipe.multi()
        pipe.incr("tls:counter")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get("tls:counter") == "3"
    client.delete("tls:counter")


def test_moved_keeps_the_proxy_on_tls_ports(tls_cluster, certs, launch):
    proxy = launch(*certs.proxy_args(), seeds=[tls_seed(tls_cluster)])
    client = proxy.client()
    key = "tls:moving"
    client.set(key, "before")
    slot = tls_cluster.keyslot(key)
    source = tls_cluster.node_for_slot(slot)
    target = next(m for m in tls_cluster.masters() if m != source)
    tls_cluster.move_slot(slot, target)
    try:
        # The node answers MOVED with the TLS port of the new owner (the connection is TLS).
        assert client.get(key) == "before"
        assert client.set(key, "after") is True
        assert tls_cluster.node_client(target).get(key) == "after"
        assert proxy_masters(client)  # still a full map
        assert set(proxy_masters(client).values()) == {
            tls_addr_of(tls_cluster, m) for m in tls_cluster.masters()
        }
    finally:
        tls_cluster.move_slot(slot, source)
    assert client.get(key) == "after"
    client.delete(key)


def test_failover_moves_the_proxy_to_the_promoted_replicas_tls_port(tls_cluster, certs, launch):
    proxy = launch(*certs.proxy_args(), seeds=[tls_seed(tls_cluster)])
    client = proxy.client()
    victim = tls_cluster.masters()[1]
    key = next(f"tls:fo:{i}" for i in range(10_000) if tls_cluster.node_for_key(f"tls:fo:{i}") == victim)
    client.set(key, "before")
    assert client.execute_command("WAIT", 1, 5000) == 1  # on the replica too
    tls_cluster.kill_master(victim)
    try:
        promoted = tls_cluster.wait_for_failover(victim)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client.get(key) == "before"
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "the promoted replica was not served"
                time.sleep(0.1)
        assert tls_addr_of(tls_cluster, promoted) in proxy_masters(client).values()
        assert client.set(key, "after") is True
        assert tls_cluster.node_client(promoted).get(key) == "after"
    finally:
        tls_cluster.restart(victim)
    client.delete(key)


def test_a_node_the_proxy_cannot_trust_is_an_error_never_data(tls_cluster, certs, launch, tmp_path):
    seed = tls_seed(tls_cluster)
    other_ca = make_certs(tmp_path / "other")
    cases = {
        # The node's certificate is signed by a CA the proxy does not trust.
        "unknown CA": [
            "--backend-tls", "--backend-tls-ca-file", str(other_ca.ca),
            "--backend-tls-cert-file", str(certs.cert), "--backend-tls-key-file", str(certs.key),
        ],
        # The certificate does not name the host the proxy expects.
        "wrong name": [*certs.proxy_args(), "--backend-tls-server-name", "cache.example.com"],
        # The node asks for a client certificate and the proxy has none.
        "no client certificate": ["--backend-tls", "--backend-tls-ca-file", str(certs.ca)],
    }
    for name, args in cases.items():
        proxy = launch(*args, seeds=[seed], metrics=True)
        client = proxy.client()
        with pytest.raises(redis.ResponseError) as err:
            client.get("tls:anything")
        assert str(err.value).startswith("The cluster is down: the proxy has no slot map yet"), (name, err.value)
        status, body = proxy.http("/readyz")
        assert status == 503, (name, body)
        log = proxy.log().lower()
        assert "certificate" in log, (name, proxy.log()[-2000:])


def test_server_name_checks_every_node_against_one_name(tls_cluster, certs, launch):
    # The certificate names 127.0.0.1 and localhost; the nodes announce 127.0.0.1.
    proxy = launch(*certs.proxy_args(), "--backend-tls-server-name", "localhost",
                   seeds=[tls_seed(tls_cluster)])
    client = proxy.client()
    assert client.set("tls:named", "ok") is True
    assert client.get("tls:named") == "ok"
    client.delete("tls:named")


def rotate_certificate(proxy, certs: TlsFiles, live, tmp_path) -> str:
    """Writes a new certificate from the same CA over ``live``'s copies of ``certs``' files and
    reloads; returns what the proxy logged meanwhile."""
    fresh = make_certs(tmp_path / "fresh", name="rotated", ca=certs)
    shutil.copy(fresh.cert, live / certs.cert.name)
    shutil.copy(fresh.key, live / certs.key.name)
    mark = len(proxy.log())
    proxy.proc.send_signal(signal.SIGHUP)
    process.wait_until(lambda: "configuration reloaded" in proxy.log()[mark:], 5, what="reload")
    return proxy.log()[mark:]


def test_sighup_reads_rotated_certificates(tls_cluster, certs, launch, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    for f in (certs.ca, certs.cert, certs.key):
        shutil.copy(f, live / f.name)
    config = tmp_path / "slotway.yaml"
    config.write_text(
        "backend_tls:\n"
        "  enabled: true\n"
        f"  ca_file: {live / certs.ca.name}\n"
        f"  cert_file: {live / certs.cert.name}\n"
        f"  key_file: {live / certs.key.name}\n"
    )
    proxy = launch("--config", str(config), seeds=[tls_seed(tls_cluster)])
    client = proxy.client()
    client.set("tls:rotate", "1")
    client_id = client.client_id()

    log = rotate_certificate(proxy, certs, live, tmp_path)
    assert "certificate files changed" in log and "backend_pools_replaced=true" in log, log
    assert client.get("tls:rotate") == "1"  # new node connections, same client connection
    assert client.client_id() == client_id

    # A key file that is not a key: the reload is refused, the running settings stay.
    (live / certs.key.name).write_text("garbage\n")
    mark = len(proxy.log())
    proxy.proc.send_signal(signal.SIGHUP)
    process.wait_until(lambda: "reload failed" in proxy.log()[mark:], 5, what="refused reload")
    assert "backend_tls.key_file" in proxy.log()[mark:]
    assert client.incr("tls:rotate") == 2
    assert proxy.client().get("tls:rotate") == "2"
    client.delete("tls:rotate")


# -- TLS towards clients -----------------------------------------------------------------------


def tls_listen_args(certs: TlsFiles, port: int, *, client_ca: bool = False) -> list[str]:
    args = ["--tls-listen", f"127.0.0.1:{port}", "--tls-cert-file", str(certs.cert),
            "--tls-key-file", str(certs.key)]
    if client_ca:
        args += ["--tls-ca-file", str(certs.ca)]
    return args


def tls_client(certs: TlsFiles, port: int, with_cert: bool = False, **kwargs) -> redis.Redis:
    extra = {"ssl_certfile": str(certs.cert), "ssl_keyfile": str(certs.key)} if with_cert else {}
    return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs.ca),
                       socket_timeout=10, decode_responses=True, **extra, **kwargs)


def peer_certificate_serial(port: int, ca: str) -> str:
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert()["serialNumber"]


@pytest.mark.parametrize("protocol", [2, 3])
def test_tls_clients_are_served_like_plain_ones(proxy_factory, cluster, certs, protocol):
    port = allocate_port()
    proxy = proxy_factory(*tls_listen_args(certs, port))
    c = tls_client(certs, port, protocol=protocol)
    keys = spread_keys(cluster, f"tlsc{protocol}")
    c.mset({k: k.upper() for k in keys})
    assert c.mget(keys) == [k.upper() for k in keys]
    # The same data through the plain listener and on the nodes.
    assert proxy.client().mget(keys) == [k.upper() for k in keys]
    assert cluster.node_client(cluster.node_for_key(keys[-1])).get(keys[-1]) == keys[-1].upper()
    big = "x\r\n\0" * (256 * 1024)
    c.set("tlsc:big", big)
    assert c.get("tlsc:big") == big
    pipe = c.pipeline(transaction=False)
    for i in range(10_000):
        pipe.incr("tlsc:n")
    assert pipe.execute() == list(range(1, 10_001))
    # A blocking pop and pub/sub over TLS.
    got = {}
    waiter = threading.Thread(target=lambda: got.setdefault("r", c.blpop(["tlsc:q1", "tlsc:q2"], 10)))
    waiter.start()
    time.sleep(0.3)
    proxy.client().rpush("tlsc:q2", "job")
    waiter.join(10)
    assert tuple(got["r"]) == ("tlsc:q2", "job")
    sub = tls_client(certs, port, protocol=protocol).pubsub()
    sub.subscribe("tlsc:chan")
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    assert proxy.client().publish("tlsc:chan", "hi") == 1
    m = sub.get_message(timeout=5)
    assert m is not None and m["data"] == "hi"
    sub.close()
    # CLIENT LIST names the TLS client's own address and the TLS listener.
    me = c.client_info()
    assert me["laddr"] == f"127.0.0.1:{port}"
    assert me["addr"].startswith("127.0.0.1:") and not me["addr"].endswith(":0")
    c.delete(*keys, "tlsc:big", "tlsc:n")


def test_redis_cli_over_tls_and_plain_bytes_on_the_tls_port(proxy_factory, certs):
    port = allocate_port()
    proxy = proxy_factory(*tls_listen_args(certs, port))
    cli = [redis_cli_path(), "-h", "127.0.0.1", "-p", str(port), "--tls", "--cacert", str(certs.ca)]
    out = subprocess.run([*cli, "SET", "tlsc:cli", "v"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "OK", out.stderr
    out = subprocess.run([*cli, "GET", "tlsc:cli"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "v"
    # Plain RESP on the TLS port is not a handshake: that connection closes, nothing else.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        s.settimeout(5)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert b"PONG" not in data
    process.wait_until(lambda: "TLS handshake failed" in proxy.log(), 5, what="the handshake failure logged")
    assert proxy.client().get("tlsc:cli") == "v"
    proxy.client().delete("tlsc:cli")


def test_tls_ca_file_requires_a_client_certificate(proxy_factory, certs, tmp_path):
    port = allocate_port()
    proxy_factory(*tls_listen_args(certs, port, client_ca=True))
    assert tls_client(certs, port, with_cert=True).ping() is True
    with pytest.raises(redis.ConnectionError):
        tls_client(certs, port).ping()
    # A certificate from another CA is refused too.
    other = make_certs(tmp_path / "other")
    stranger = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs.ca),
                           ssl_certfile=str(other.cert), ssl_keyfile=str(other.key), socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        stranger.ping()


def test_sighup_reads_the_tls_listeners_certificate_again(proxy_factory, certs, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    for f in (certs.cert, certs.key):
        shutil.copy(f, live / f.name)
    port = allocate_port()
    config = tmp_path / "slotway.yaml"
    config.write_text(
        "tls:\n"
        f"  listen: 127.0.0.1:{port}\n"
        f"  cert_file: {live / certs.cert.name}\n"
        f"  key_file: {live / certs.key.name}\n"
    )
    proxy = proxy_factory("--config", str(config))
    before = peer_certificate_serial(port, str(certs.ca))
    connected = tls_client(certs, port)
    connected.set("tlsc:rot", "1")

    rotate_certificate(proxy, certs, live, tmp_path)
    after = peer_certificate_serial(port, str(certs.ca))
    assert after != before  # new clients see the new certificate
    assert connected.incr("tlsc:rot") == 2  # a client already connected keeps its session
    assert tls_client(certs, port).get("tlsc:rot") == "2"

    # Moving the listener needs a restart; it is said, and the listener stays.
    config.write_text(config.read_text().replace(f"127.0.0.1:{port}", "127.0.0.1:1"))
    mark = len(proxy.log())
    proxy.proc.send_signal(signal.SIGHUP)
    process.wait_until(lambda: "need a restart" in proxy.log()[mark:], 5, what="restart notice")
    assert "tls.listen" in proxy.log()[mark:]
    assert tls_client(certs, port).get("tlsc:rot") == "2"
    connected.delete("tlsc:rot")


def test_check_config_names_the_tls_field(tmp_path, certs):
    from support.proxy import slotway_path

    config = tmp_path / "slotway.yaml"
    cases = {
        "tls:\n  listen: 127.0.0.1:6390\n": "tls.cert_file",
        f"tls:\n  listen: 127.0.0.1:6390\n  cert_file: {certs.cert}\n  key_file: /nonexistent\n": "tls.key_file",
        "backend_tls:\n  enabled: true\n  ca_file: /nonexistent\n": "backend_tls.ca_file",
        f"backend_tls:\n  enabled: true\n  ca_file: {certs.ca}\n  cert_file: {certs.cert}\n": "backend_tls.key_file",
    }
    for text, field in cases.items():
        config.write_text("seeds: [\"127.0.0.1:7000\"]\n" + text)
        r = subprocess.run([slotway_path(), "--check-config", str(config)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and field in r.stderr, (text, r.stderr)
    config.write_text("seeds: [\"127.0.0.1:7000\"]\n"
                      f"tls:\n  listen: 127.0.0.1:6390\n  cert_file: {certs.cert}\n  key_file: {certs.key}\n")
    r = subprocess.run([slotway_path(), "--check-config", str(config)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
