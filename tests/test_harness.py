"""Self-tests of the test harness: the fixtures must work before the proxy tests mean anything.

These talk to the Redis Cluster directly (no proxy involved), plus a fake
slotway script to exercise the proxy fixture's plumbing.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from support import process
from support.cluster import NUM_SLOTS, Cluster
from support.proxy import ProxyLauncher, slotway_path

FAKE_SLOTWAY = Path(__file__).parent / "support" / "fake_slotway.py"


def test_topology_is_three_masters_with_one_replica_each(cluster: Cluster):
    masters = cluster.masters()
    replicas = cluster.replicas()
    assert len(masters) == 3
    assert len(replicas) == 3
    assert set(masters).isdisjoint(replicas)
    for master in masters:
        assert len(cluster.replicas_of(master)) == 1
    slot_map = cluster.slot_map()
    assert sum(r.count for r in slot_map) == NUM_SLOTS
    assert {r.master for r in slot_map} == set(masters)
    # Every node, masters and replicas, hands out the same map.
    for addr in cluster.addrs():
        assert cluster.slot_map(addr) == slot_map
        assert cluster.node(addr).cluster_info()["cluster_state"] == "ok"


def test_keys_written_via_cluster_client_live_on_owning_node(cluster: Cluster):
    client = cluster.client
    keys = [f"harness:key:{i}" for i in range(300)] + ["{user1}:a", "{user1}:b"]
    for key in keys:
        client.set(key, f"value-of-{key}")
    per_node: dict[str, int] = {}
    for key in keys:
        owner = cluster.node_for_key(key)
        per_node[owner] = per_node.get(owner, 0) + 1
        assert cluster.node(owner).admin.get(key) == f"value-of-{key}"
        assert cluster.keyslot(key) == client.keyslot(key)
    # 300 random keys spread over all three masters.
    assert set(per_node) == set(cluster.masters())
    # Hash tags put keys on the same node.
    assert cluster.node_for_key("{user1}:a") == cluster.node_for_key("{user1}:b")
    # A non-owner answers with a MOVED redirection.
    key = keys[0]
    other = next(m for m in cluster.masters() if m != cluster.node_for_key(key))
    with pytest.raises(redis.exceptions.MovedError) as excinfo:
        cluster.node_client(other).get(key)
    assert str(excinfo.value) == f"{cluster.keyslot(key)} {cluster.node_for_key(key)}"
    # Raw bytes on the wire, via redis-cli (no cluster mode, so no redirect following).
    host, port = other.split(":")
    reply = subprocess.run(["redis-cli", "-h", host, "-p", port, "GET", key],
                           capture_output=True, text=True, check=True).stdout
    assert reply.startswith("MOVED ") or reply.startswith("(error) MOVED ")


def test_flushall_empties_every_master(cluster: Cluster):
    for i in range(50):
        cluster.client.set(f"flush:{i}", i)
    cluster.flushall()
    for addr in cluster.masters():
        assert cluster.node(addr).admin.dbsize() == 0
    for addr in cluster.replicas():
        assert cluster.node(addr).admin.dbsize() == 0


def test_kill_master_promotes_replica_and_keeps_data(cluster: Cluster):
    victim = cluster.masters()[1]
    (replica,) = cluster.replicas_of(victim)
    node = cluster.node(victim)
    keys = [k for k in (f"failover:{i}" for i in range(200)) if cluster.node_for_key(k) == victim]
    assert keys
    with node.admin.client() as conn:
        for key in keys:
            conn.set(key, key.upper())
        assert conn.execute_command("WAIT", 1, 5000) == 1  # replicated before the crash

    started = time.monotonic()
    assert cluster.kill_master(victim) == victim
    assert not node.running
    new_master = cluster.wait_for_failover(victim)
    took = time.monotonic() - started

    assert new_master == replica
    assert victim not in cluster.masters()
    assert len(cluster.masters()) == 3
    for key in keys:
        assert cluster.node_for_key(key) == new_master
        assert cluster.client.get(key) == key.upper()
    assert took < 30

    # The old master comes back as a replica of the new one.
    cluster.restart(victim)
    assert cluster.node(victim).role() == "slave"
    assert cluster.replicas_of(new_master) == [victim]
    assert cluster.stability_problem() is None


def test_manual_failover_swaps_roles(cluster: Cluster):
    master = cluster.masters()[0]
    (replica,) = cluster.replicas_of(master)
    cluster.failover(replica)
    assert replica in cluster.masters()
    assert cluster.replicas_of(replica) == [master]


def test_reshard_moves_slots_and_keys(cluster: Cluster):
    source, target = cluster.masters()[0], cluster.masters()[2]
    source_slots = cluster.slots_of(source)
    target_before = len(cluster.slots_of(target))
    # Keys in the slots redis-cli will move first (the source's lowest ones).
    moved_candidates = set(source_slots[:10])
    keys = [k for k in (f"reshard:{i}" for i in range(20000)) if cluster.keyslot(k) in moved_candidates][:30]
    assert keys
    for key in keys:
        cluster.client.set(key, "v-" + key)

    cluster.reshard(source, target, 10)

    assert len(cluster.slots_of(source)) == len(source_slots) - 10
    assert len(cluster.slots_of(target)) == target_before + 10
    moved = set(source_slots) - set(cluster.slots_of(source))
    assert len(moved) == 10
    for key in keys:
        owner = cluster.node_for_key(key)
        assert cluster.node(owner).admin.get(key) == "v-" + key
        if cluster.keyslot(key) in moved:
            assert owner == target


def test_background_reshard_while_clients_write(cluster: Cluster):
    """Slots move while a RedisCluster client keeps writing and reading (MOVED/ASK)."""
    source, target = cluster.masters()[1], cluster.masters()[0]
    client = cluster.cluster_client()
    for i in range(2000):
        client.set(f"bg:{i}", i)
    errors: list[BaseException] = []
    stop = threading.Event()
    written = [0]

    def load():
        i = 0
        while not stop.is_set():
            try:
                client.set(f"bgload:{i}", i)
                assert client.get(f"bg:{i % 2000}") == str(i % 2000)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            i += 1
        written[0] = i

    thread = threading.Thread(target=load)
    thread.start()
    try:
        job = cluster.reshard(source, target, 100, background=True)
        assert job.running
        job.wait(timeout=120)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert written[0] > 0
    for i in range(written[0]):
        assert client.get(f"bgload:{i}") == str(i)


def test_a_master_that_lost_track_of_its_slot_claims_it_back(cluster: Cluster):
    """The harness's workaround for a Redis 7.0 race (see Cluster.claim_orphaned_slots): a
    master whose own view lacks a slot the others assign to it reports cluster_state:fail until
    wait_stable has it claim the slot again."""
    master = cluster.masters()[0]
    slot = cluster.slots_of(master)[-1]
    cluster.node(master).admin.execute_command("CLUSTER", "DELSLOTS", slot)
    assert cluster.stability_problem() is not None
    cluster.wait_stable(timeout=30)
    assert cluster.node_for_slot(slot) == master
    assert cluster.node(master).cluster_info()["cluster_state"] == "ok"


def test_standalone_server_is_not_a_cluster(standalone):
    client = standalone.client()
    assert client.ping() is True
    assert client.info("cluster")["cluster_enabled"] == 0
    assert standalone.raw(b"*1\r\n$4\r\nPING\r\n", expect=b"\r\n") == b"+PONG\r\n"
    assert standalone.cli("PING") == "PONG\n"
    # Malformed input: redis replies with a protocol error and closes the connection.
    assert standalone.raw(b"*1\r\n$x\r\n").startswith(b"-ERR Protocol error")
    resp3 = standalone.client(protocol=3)
    assert resp3.hset("h", mapping={"a": "1"}) == 1
    assert resp3.hgetall("h") == {"a": "1"}
    standalone.admin.flushall()


# -- the proxy fixture, exercised with a fake binary ------------------------------------------


def test_missing_proxy_binary_fails_loudly(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SLOTWAY_BIN", str(tmp_path / "no-such-slotway"))
    with pytest.raises(process.MissingExecutable, match="cargo build --release"):
        slotway_path()
    launcher = ProxyLauncher(cluster, tmp_path)
    with pytest.raises(pytest.fail.Exception, match="cargo build --release"):
        launcher()


def test_proxy_that_never_listens_fails_with_its_log(cluster, tmp_path, monkeypatch):
    fake = tmp_path / "slotway"
    fake.write_text("#!/bin/sh\necho 'error: cannot reach seeds' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SLOTWAY_BIN", str(fake))
    launcher = ProxyLauncher(cluster, tmp_path)
    with pytest.raises(pytest.fail.Exception, match="cannot reach seeds"):
        launcher()
    launcher.teardown()


def test_proxy_fixture_plumbing_with_fake_binary(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SLOTWAY_BIN", str(FAKE_SLOTWAY))
    launcher = ProxyLauncher(cluster, tmp_path)
    proxy = launcher("--some-extra-arg")
    assert proxy.seeds == [cluster.masters()[0]]
    assert "--some-extra-arg" in proxy.argv()
    assert proxy.client().ping() is True
    assert proxy.client(protocol=2).echo("hi") == "hi"
    assert proxy.raw(b"*1\r\n$4\r\nPING\r\n", expect=b"\r\n") == b"+PONG\r\n"
    assert proxy.cli("PING") == "PONG\n"
    launcher.teardown()  # clean shutdown: no failure
    assert proxy.exit_code == 0


def test_password_protected_proxy_counts_as_up(cluster, tmp_path, monkeypatch):
    """-NOAUTH in reply to the readiness PING means the proxy is up."""
    monkeypatch.setenv("SLOTWAY_BIN", str(FAKE_SLOTWAY))
    launcher = ProxyLauncher(cluster, tmp_path)
    proxy = launcher("--password", "s3cret")
    assert proxy.raw(b"PING\r\n", expect=b"\r\n").startswith(b"-NOAUTH")
    assert proxy.client(password="s3cret").ping() is True
    launcher.teardown()


def test_proxy_panic_is_reported_at_teardown(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SLOTWAY_BIN", str(FAKE_SLOTWAY))
    launcher = ProxyLauncher(cluster, tmp_path)
    proxy = launcher()
    assert proxy.raw(b"PANIC\r\n", expect=b"\r\n") == b"+OK\r\n"
    process.wait_until(lambda: not proxy.running, 5, what="fake proxy to exit")
    with pytest.raises(pytest.fail.Exception, match="panicked") as excinfo:
        launcher.teardown()
    assert "exited on its own" in str(excinfo.value)
