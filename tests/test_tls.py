"""TLS towards the nodes (``backend_tls``), against a real 3+3 cluster serving TLS.

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
import threading
import time

import pytest
import redis

from support import process
from support.cluster import Cluster
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

    # A new certificate from the same CA, written over the old files.
    fresh = make_certs(tmp_path / "fresh", name="rotated", ca=certs)
    shutil.copy(fresh.cert, live / certs.cert.name)
    shutil.copy(fresh.key, live / certs.key.name)
    mark = len(proxy.log())
    proxy.proc.send_signal(signal.SIGHUP)
    process.wait_until(lambda: "configuration reloaded" in proxy.log()[mark:], 5, what="reload")
    log = proxy.log()[mark:]
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
