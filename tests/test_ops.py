"""Operating Slotway (issue 5): metrics, health, configuration, lifecycle, deployment.

Scrapes ``/metrics`` while real clients run load against a real cluster and checks that the
counters move as they should (commands by name, a MOVED during a reshard, a backend error when
a node is killed); ``/readyz`` while a master without a replica is down and back; SIGHUP
reload; SIGTERM drain; the connection, idle and output buffer limits; SLOWLOG; and every
configuration example in ``deploy/``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
import yaml
from redis.crc import key_slot

from support import process
from support.proxy import REPO_ROOT, slotway_path
from test_core import spread_keys

DEPLOY = REPO_ROOT / "deploy"


# -- helpers ------------------------------------------------------------------------------------


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Parse the Prometheus text format into ``(name, labels, value)``."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, l, v in samples(text) if n == name and labels.items() <= l.items())


def families(text: str) -> set[str]:
    """Metric family names announced by ``# TYPE`` lines."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def wait_ready(proxy, timeout: float = 15.0) -> None:
    process.wait_until(lambda: proxy.http("/readyz")[0] == 200, timeout, 0.1, "/readyz to answer 200")


def key_in_slot(slot: int, prefix: str = "ops") -> str:
    """A key that hashes to ``slot``."""
    i = 0
    while True:
        key = f"{prefix}:{slot}:{i}"
        if key_slot(key.encode()) == slot:
            return key
        i += 1


def clean_env() -> dict[str, str]:
    """The environment without SLOTWAY_* variables (they would override the file)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLOTWAY_")}


def check_config(path: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [slotway_path(), *flags, "--check-config", str(path)],
        capture_output=True, text=True, env={**clean_env(), **(env or {})}, timeout=30,
    )


def log_after(proxy, mark: int) -> str:
    """The proxy's log written after byte offset ``mark``."""
    return proxy.log()[mark:]


# -- endpoints ----------------------------------------------------------------------------------


def test_health_readiness_and_topology_endpoints(proxy_factory, cluster):
    proxy = proxy_factory(metrics=True)
    assert proxy.http("/healthz") == (200, "ok\n")
    wait_ready(proxy)
    assert proxy.http("/readyz") == (200, "ready\n")
    status, body = proxy.http("/topology")
    assert status == 200
    topo = json.loads(body)
    assert topo["ready"] is True and topo["slots_covered"] == 16384
    masters = sorted(s["master"]["addr"] for s in topo["shards"])
    assert masters == sorted(cluster.masters())
    assert all(s["master"]["state"] == "up" for s in topo["shards"])
    assert sum(s["slot_count"] for s in topo["shards"]) == 16384
    for shard in topo["shards"]:
        assert [r["addr"] for r in shard["replicas"]] == sorted(cluster.replicas_of(shard["master"]["addr"]))
    assert proxy.http("/nope")[0] == 404
    assert proxy.http("/metrics", method="POST")[0] == 405
    text = proxy.metrics()
    assert value(text, "slotway_ready") == 1
    assert value(text, "slotway_slot_map_slots_covered") == 16384
    assert value(text, "slotway_cluster_masters") == 3
    assert value(text, "slotway_cluster_masters_reachable") == 3
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds"):
        assert value(text, name) > 0, name
    assert "process_cpu_seconds_total" in families(text)
    assert value(text, "slotway_build_info") == 1


def test_metrics_count_commands_by_name_during_load(proxy_factory, cluster):
    proxy = proxy_factory(metrics=True)
    stop = threading.Event()
    errors: list[BaseException] = []
    done = {"n": 0}

    # Keys on every master (earlier tests may have moved slots around), cycled by each thread.
    keys = spread_keys(cluster, "ops:load", per_master=2)

    def load(i: int) -> None:
        c = proxy.client()
        n = i
        try:
            while not stop.is_set():
                key = keys[n % len(keys)]
                n += 1
                c.set(key, "v")
                assert c.get(key) == "v"
                done["n"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        process.wait_until(lambda: done["n"] > 200, 10, what="load to start")
        first = proxy.metrics()
        process.wait_until(lambda: done["n"] > 600, 10, what="more load")
        second = proxy.metrics()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    # Counters move while the load runs.
    assert value(second, "slotway_commands_total", command="get") > value(first, "slotway_commands_total", command="get") > 0
    assert value(second, "slotway_clients_connected") >= 4

    c = proxy.client()
    c.mget(keys[:4] + ["ops:missing"])  # split across slots
    c.lpush("ops:list", "x")
    with pytest.raises(redis.ResponseError):
        c.get("ops:list")  # WRONGTYPE: an error reply
    with pytest.raises(redis.ResponseError):
        c.execute_command("NOSUCHCOMMAND", "k")  # unknown name: one folded label
    with pytest.raises(redis.ResponseError):
        c.execute_command("NOSUCHCOMMAND2", "k")
    c.close()
    text = proxy.metrics()
    gets, sets = value(text, "slotway_commands_total", command="get"), value(text, "slotway_commands_total", command="set")
    assert gets >= done["n"] and sets >= done["n"]
    assert value(text, "slotway_command_errors_total", command="get") == 1
    assert value(text, "slotway_commands_total", command="unknown") == 2
    assert value(text, "slotway_command_errors_total", command="unknown") == 2
    assert not [l for n, l, _ in samples(text) if n == "slotway_commands_total" and "nosuch" in l["command"]]
    # Latency histogram: every GET observed, in buckets from 50 µs to 5 s.
    assert value(text, "slotway_command_duration_seconds_count", command="get") == gets
    les = {l["le"] for n, l, _ in samples(text) if n == "slotway_command_duration_seconds_bucket" and l["command"] == "get"}
    assert {"0.00005", "5", "+Inf"} <= les, les
    # MGET of 5 keys over several slots: one observation of its sub-request count.
    assert value(text, "slotway_command_subrequests_count", command="mget") == 1
    assert value(text, "slotway_command_subrequests_sum", command="mget") >= 3
    # Bytes, connections, backend nodes.
    assert value(text, "slotway_client_received_bytes_total") > 0
    assert value(text, "slotway_client_sent_bytes_total") > 0
    assert value(text, "slotway_clients_accepted_total") >= 5
    for master in cluster.masters():
        assert value(text, "slotway_backend_requests_total", node=master) > 0, master
        assert value(text, "slotway_backend_connections", node=master) >= 1, master
        assert value(text, "slotway_backend_request_duration_seconds_count", node=master) > 0, master
    assert value(text, "slotway_backend_requests_in_flight") == 0
    # INFO through the proxy shows the same figures.
    info = proxy.client().info("proxy")
    assert info["commands_answered"] >= gets + sets
    assert info["masters_reachable"] == "3/3"


def test_moved_is_counted_during_a_reshard(proxy_factory, cluster):
    # No timer refresh during the test: the proxy learns the new owners from MOVED only.
    proxy = proxy_factory("--refresh-interval-ms", "600000", metrics=True)
    source, dest = cluster.masters()[0], cluster.masters()[1]
    slots = cluster.slots_of(source)[:40]
    keys = [key_in_slot(s) for s in slots]
    c = proxy.client()
    for k in keys:
        c.set(k, k)
    before = proxy.metrics()
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        lc = proxy.client()
        try:
            while not stop.is_set():
                for k in keys:
                    assert lc.get(k) == k
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=load)
    t.start()
    try:
        cluster.reshard(source, dest, len(slots), background=True).wait()
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    for k in keys:  # every key is read at least once after its slot moved
        assert c.get(k) == k
    text = proxy.metrics()
    moved = value(text, "slotway_redirects_total", kind="moved") - value(before, "slotway_redirects_total", kind="moved")
    assert moved >= 1
    assert value(text, "slotway_redirects_total", kind="moved", node=source) >= 1
    assert value(text, "slotway_commands_total", command="get") >= len(keys)


def test_killed_master_counts_backend_errors_and_readyz_follows_it(proxy_factory, cluster):
    proxy = proxy_factory(metrics=True)
    wait_ready(proxy)
    master = cluster.masters()[0]
    key = key_in_slot(cluster.slots_of(master)[0])
    c = proxy.client()
    c.set(key, "v")  # opens the pooled connection to that master
    for replica in cluster.replicas_of(master):
        cluster.kill(replica)  # nobody can take over
    cluster.kill(master)

    def not_ready():
        status, body = proxy.http("/readyz")
        return status == 503 and master in body and body

    body = process.wait_until(not_ready, 10, 0.1, "/readyz to answer 503 naming the dead master")
    assert "not reachable" in body
    text = proxy.metrics()
    assert value(text, "slotway_backend_errors_total", node=master) >= 1
    assert value(text, "slotway_backend_up", node=master) == 0
    assert value(text, "slotway_ready") == 0
    assert proxy.client().info("proxy")["ready"].startswith("no (masters not reachable")
    with pytest.raises(redis.RedisError):
        redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=10).get(key)

    cluster.node(master).start()  # back as the master of its slots
    wait_ready(proxy, timeout=20)
    assert value(proxy.metrics(), "slotway_backend_up", node=master) == 1


# -- configuration and lifecycle ----------------------------------------------------------------


def test_sighup_reloads_log_level_and_limits_and_reports_restart_only_changes(proxy_factory, tmp_path):
    config = tmp_path / "slotway.yaml"
    config.write_text("log_level: info\nmax_clients: 100\n")
    proxy = proxy_factory("--config", str(config), metrics=True)
    client = proxy.client()
    client.set("ops:reload", "v")
    client_id = client.client_id()
    mark = len(proxy.log())
    proxy.http("/healthz")
    time.sleep(0.2)
    assert "admin request" not in log_after(proxy, mark)  # a debug line

    # Also a backend setting: the node connections are replaced, no client is dropped.
    config.write_text("log_level: debug\nmax_clients: 50\nworker_threads: 3\nread_timeout_ms: 20000\n")
    proxy.proc.send_signal(signal.SIGHUP)
    process.wait_until(lambda: "configuration reloaded" in log_after(proxy, mark), 5, what="reload")
    log = log_after(proxy, mark)
    assert "log_level: \"info\" → \"debug\"" in log
    assert "max_clients: 100 → 50" in log
    assert "read_timeout_ms: 10000 → 20000" in log and "backend_pools_replaced=true" in log
    assert "need a restart" in log and "worker_threads: 0 → 3" in log
    assert client.get("ops:reload") == "v"
    assert client.client_id() == client_id  # the same connection
    mark = len(proxy.log())
    assert proxy.http("/healthz")[0] == 200
    process.wait_until(lambda: "admin request" in log_after(proxy, mark), 5, what="a debug line")
    assert proxy.client().info("clients")["maxclients"] == 50

    # An invalid file is refused; the running configuration stays.
    config.write_text("max_clients: [not a number]\n")
    proxy.proc.send_signal(signal.SIGHUP)
    process.wait_until(lambda: "configuration reload failed" in proxy.log(), 5, what="refused reload")
    assert proxy.running
    assert proxy.client().info("clients")["maxclients"] == 50
    text = proxy.metrics()
    assert value(text, "slotway_config_reloads_total", result="success") == 1
    assert value(text, "slotway_config_reloads_total", result="failure") == 1


def test_sigterm_drains_in_flight_requests(proxy_factory):
    proxy = proxy_factory(metrics=True)
    wait_ready(proxy)
    # One client blocked in BLPOP for 2 s when the signal arrives: it must get its nil.
    blocked = socket.create_connection((proxy.host, proxy.port), timeout=10)
    blocked.sendall(b"*3\r\n$5\r\nBLPOP\r\n$14\r\nops:drain:none\r\n$1\r\n2\r\n")
    batch = 50
    results: dict[int, dict] = {}
    started = threading.Barrier(5)

    def pipeliner(i: int) -> None:
        r = results[i] = {"batches": 0, "end": None}
        sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
        request = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(k), k)
                           for k in (f"ops:drain:{i}:{j}".encode() for j in range(batch)))
        started.wait()
        try:
            while True:
                try:
                    sock.sendall(request)
                except BrokenPipeError:
                    r["end"] = "closed before sending"
                    return
                got = b""
                while got.count(b"\r\n") < batch:
                    chunk = sock.recv(65536)
                    if not chunk:
                        r["end"] = "eof" if not got else f"eof after {len(got.split(b'+OK'))} replies"
                        return
                    got += chunk
                assert got == b"+OK\r\n" * batch, got[:200]
                r["batches"] += 1
        except ConnectionResetError:
            r["end"] = "reset"
        finally:
            sock.close()

    threads = [threading.Thread(target=pipeliner, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.3)
    assert value(proxy.metrics(), "slotway_blocked_clients") == 1  # still waiting
    proxy.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=15)
    # No new connections once draining, and probes see it.
    process.wait_until(lambda: not _connects(proxy), 5, what="the listener to close")
    assert proxy.http("/readyz") == (503, "not ready: shutting down\n")
    assert blocked.recv(100) == b"*-1\r\n"  # BLPOP timed out normally, after the signal
    assert blocked.recv(100) == b""  # then a clean close
    blocked.close()
    code = proxy.proc.wait(timeout=15)
    proxy.exit_code = code
    assert code == 0
    for i, r in results.items():
        assert r["batches"] > 0, (i, r)
        # Every batch it sent was answered in full, or it found the connection closed
        # cleanly: never a reset, never half a batch.
        assert r["end"] in ("eof", "closed before sending"), (i, r)
    log = proxy.log()
    assert "SIGTERM: draining" in log and "all client connections closed" in log


def _connects(proxy) -> bool:
    try:
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
        return True
    except OSError:
        return False


# -- Unix socket ---------------------------------------------------------------------------------


def _unix_exchange(path: Path, data: bytes, timeout: float = 2.0) -> bytes:
    """Send ``data`` on a new Unix socket connection; what comes back until EOF or ``timeout``."""
    got = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except socket.timeout:
            pass
    return got


def test_unix_socket_serves_clients_like_tcp(proxy_factory, cluster, tmp_path):
    path = tmp_path / "slotway.sock"
    # A socket file left by an earlier run (nobody listening) is replaced.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.is_socket()
    proxy = proxy_factory("--unix-socket", str(path), "--unix-socket-perm", "770")
    assert path.stat().st_mode & 0o777 == 0o770

    out = subprocess.run(["redis-cli", "-s", str(path), "PING"], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "PONG", out

    keys = spread_keys(cluster, "ops:unix", per_master=3)
    for protocol in (2, 3):
        c = redis.Redis(unix_socket_path=str(path), protocol=protocol)
        value = b"\r\n\x00 binary %d" % protocol
        c.mset({k: value + k.encode() for k in keys})
        assert c.mget(keys) == [value + k.encode() for k in keys]
        pipe = c.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(keys[i % len(keys)], i)
            pipe.get(keys[i % len(keys)])
        replies = pipe.execute()
        assert replies[1::2] == [str(i).encode() for i in range(1000)]
        c.close()
    # The writes are on the cluster, not only visible through the proxy.
    direct = cluster.cluster_client()
    last = {keys[i % len(keys)]: str(i) for i in range(1000)}
    assert {k: direct.get(k) for k in keys} == last

    # CLIENT LIST shows a Unix client as Redis does: the socket's path, port 0, flag U.
    c = redis.Redis(unix_socket_path=str(path), decode_responses=True)
    c.client_setname("viaunix")
    listed = proxy.client().execute_command("CLIENT", "LIST")
    mine = [line for line in listed.splitlines() if "name=viaunix" in line]
    assert len(mine) == 1 and f"addr={path}:0 laddr={path}:0 " in mine[0] and " flags=U " in mine[0], listed
    assert " flags=N " in proxy.client().execute_command("CLIENT", "INFO")

    # Bad input costs that connection only.
    assert _unix_exchange(path, b"*1\r\n$-5\r\n").startswith(b"-ERR Protocol error")
    assert c.ping() and proxy.client().ping()
    c.close()

    # The socket file is removed at exit.
    assert proxy.stop() == 0
    assert not path.exists()


def test_unix_socket_refused_at_start_when_the_path_is_not_a_socket_or_perm_is_bad(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("keep me")
    r = subprocess.run([slotway_path(), "--listen", "127.0.0.1:0", "--metrics-listen", "off",
                        "--seed", "127.0.0.1:1", "--unix-socket", str(path)],
                       capture_output=True, text=True, timeout=30, env=clean_env())
    assert r.returncode != 0 and f"unix_socket {path}: the path exists and is not a socket" in r.stderr, r.stderr
    assert path.read_text() == "keep me"
    r = subprocess.run([slotway_path(), "--seed", "127.0.0.1:1", "--unix-socket", str(tmp_path / "s"),
                        "--unix-socket-perm", "778"], capture_output=True, text=True, timeout=30, env=clean_env())
    assert r.returncode != 0 and "unix_socket_perm" in r.stderr, r.stderr


# -- limits ------------------------------------------------------------------------------------


def test_connection_limit(proxy_factory):
    proxy = proxy_factory("--max-clients", "3", metrics=True)
    # The harness's start-up PING connection must be gone first.
    process.wait_until(lambda: value(proxy.metrics(), "slotway_clients_connected") == 0, 5,
                       what="no client connected")
    held = [socket.create_connection((proxy.host, proxy.port), timeout=5) for _ in range(3)]
    for s in held:
        s.sendall(b"PING\r\n")
        assert s.recv(100) == b"+PONG\r\n"
    reply = proxy.raw(b"PING\r\n", timeout=3)
    assert reply == b"-ERR max number of clients reached\r\n"
    assert value(proxy.metrics(), "slotway_clients_rejected_total") == 1
    held[0].sendall(b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n")
    time.sleep(0.1)
    assert b"rejected_connections:1" in held[0].recv(65536)
    held.pop().close()
    process.wait_until(lambda: proxy.raw(b"PING\r\n", expect=b"\r\n") == b"+PONG\r\n", 5,
                       what="a free connection slot")
    for s in held:
        s.close()


def test_output_buffer_limit_disconnects_a_slow_reader(proxy_factory):
    proxy = proxy_factory("--client-output-buffer-limit", str(1 << 20), metrics=True)
    c = proxy.client()
    c.set("ops:big", "x" * (256 << 10))
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before connect: a small window
    slow.connect((proxy.host, proxy.port))
    slow.sendall(b"*2\r\n$3\r\nGET\r\n$7\r\nops:big\r\n" * 200)  # 50 MiB of replies, never read
    process.wait_until(
        lambda: value(proxy.metrics(), "slotway_clients_disconnected_total", reason="output_buffer_limit") == 1,
        10, 0.1, "the slow reader to be disconnected",
    )
    assert "client output buffer limit reached" in proxy.log()
    slow.settimeout(10)
    received = 0
    try:
        while chunk := slow.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    slow.close()
    assert received < 200 * (256 << 10)
    # Everyone else is served as before.
    assert len(c.get("ops:big")) == 256 << 10
    assert proxy.client().info("proxy")["disconnected_output_buffer_limit"] == 1


def test_blocked_clients_are_counted_until_answered_or_gone(proxy_factory):
    proxy = proxy_factory(metrics=True)
    blocked = lambda: value(proxy.metrics(), "slotway_blocked_clients")  # noqa: E731
    a = socket.create_connection((proxy.host, proxy.port), timeout=5)
    a.sendall(b"*3\r\n$5\r\nBLPOP\r\n$11\r\nops:blocked\r\n$1\r\n0\r\n")
    b = socket.create_connection((proxy.host, proxy.port), timeout=5)
    b.sendall(b"*3\r\n$5\r\nBLPOP\r\n$11\r\nops:blocked\r\n$1\r\n0\r\n")
    process.wait_until(lambda: blocked() == 2, 5, what="two blocked clients")
    assert proxy.client().info("clients")["blocked_clients"] == 2
    proxy.client().rpush("ops:blocked", "x")  # answers one of them
    process.wait_until(lambda: blocked() == 1, 5, what="one blocked client")
    a.close()
    b.close()  # the other one goes away while blocked
    process.wait_until(lambda: blocked() == 0, 5, what="no blocked client")


def test_idle_clients_are_disconnected(proxy_factory):
    proxy = proxy_factory("--client-idle-timeout-ms", "300", metrics=True)
    idle = socket.create_connection((proxy.host, proxy.port), timeout=5)
    idle.sendall(b"PING\r\n")
    assert idle.recv(100) == b"+PONG\r\n"
    busy = proxy.client()
    # A client in a blocking command longer than the timeout is not idle.
    assert busy.blpop(["ops:idle:none"], timeout=1) is None
    for _ in range(6):
        busy.ping()  # active: stays connected
        time.sleep(0.1)
    idle.settimeout(5)
    assert idle.recv(100) == b""
    assert busy.ping() is True
    assert value(proxy.metrics(), "slotway_clients_disconnected_total", reason="idle_timeout") >= 1


def test_slowlog_is_answered_by_the_proxy(proxy_factory):
    proxy = proxy_factory("--slowlog-slower-than-us", "0", metrics=True)
    c = proxy.client()
    c.client_setname("ops-slowlog")
    c.set("ops:slow", "1")
    c.get("ops:slow")
    entries = c.slowlog_get(2)
    assert len(entries) == 2
    for entry in entries:  # redis-py leaves these undecoded
        for field in ("command", "client_address", "client_name"):
            if isinstance(entry[field], bytes):
                entry[field] = entry[field].decode()
    newest, older = entries
    assert newest["command"] == "GET ops:slow"
    assert older["command"] == "SET ops:slow 1"
    assert newest["id"] > older["id"] and abs(newest["start_time"] - time.time()) < 60
    assert newest["duration"] >= 0
    assert newest["client_address"].startswith("127.0.0.1:")
    assert newest["client_name"] == "ops-slowlog"
    assert c.slowlog_len() >= 3
    assert c.slowlog_reset() is True
    assert c.slowlog_len() <= 1  # RESET itself may be recorded
    # No password configured: an error, still recorded, without the password.
    assert proxy.raw(b"AUTH hunter2\r\n", expect=b"\r\n").startswith(b"-ERR AUTH")
    assert "hunter2" not in str(c.slowlog_get(1))
    assert value(proxy.metrics(), "slotway_slow_requests_total") >= 3
    assert "slow request" in proxy.log()


def test_an_address_in_use_is_named_in_the_start_up_error(cluster):
    """Started on an address another process listens on, slotway exits at once and says
    which of its addresses it could not take."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = "127.0.0.1:%d" % taken.getsockname()[1]
        seed = cluster.masters()[0]
        for flags, name in (
            (["--listen", addr, "--metrics-listen", "off"], "listen"),
            (["--listen", "127.0.0.1:0", "--metrics-listen", addr], "metrics_listen"),
        ):
            done = subprocess.run(
                [slotway_path(), *flags, "--seed", seed], capture_output=True, text=True,
                env={**clean_env(), "RUST_BACKTRACE": "0"}, timeout=30,
            )
            assert done.returncode != 0
            assert f"{name} {addr}: Address already in use" in done.stderr, done.stderr


# -- deploy/ -----------------------------------------------------------------------------------


def test_every_example_config_in_deploy_is_valid():
    """Each configuration in deploy/ loads with the same binary, as the deployment uses it."""
    assert check_config(DEPLOY / "slotway.yaml").returncode == 0
    assert check_config(DEPLOY / "compose" / "slotway.yaml").returncode == 0
    # The image's own file: the nodes come from SLOTWAY_SEEDS.
    r = check_config(DEPLOY / "container.yaml")
    assert r.returncode != 0 and "seeds" in r.stderr
    r = check_config(DEPLOY / "container.yaml", env={"SLOTWAY_SEEDS": "redis-1:6379"})
    assert r.returncode == 0, r.stderr

    # The systemd unit's command line, with its file checked in place of the installed one.
    unit = (DEPLOY / "systemd" / "slotway.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    assert exec_start[0] == "/usr/local/bin/slotway"
    r = check_config(DEPLOY / "slotway.yaml", *exec_start[1:])
    assert r.returncode == 0, r.stderr
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)

    # Kubernetes: the ConfigMap's file, with the container's arguments.
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar.yaml").read_text()))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    slotway = next(c for c in pod["spec"]["initContainers"] if c["name"] == "slotway")
    assert slotway["restartPolicy"] == "Always"
    mount = next(m for m in slotway["volumeMounts"] if m["name"] == "slotway-config")
    assert f"{mount['mountPath']}/slotway.yaml" in slotway["args"]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"slotway-k8s-{os.getpid()}.yaml"
    tmp.write_text(configmap["data"]["slotway.yaml"])
    try:
        r = check_config(tmp, *slotway["args"])
        assert r.returncode == 0, r.stderr
    finally:
        tmp.unlink()
    k8s_config = yaml.safe_load(configmap["data"]["slotway.yaml"])
    metrics_port = int(k8s_config["metrics_listen"].rsplit(":", 1)[1])
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    assert slotway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert slotway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert any(p["containerPort"] == metrics_port for p in slotway["ports"])
    assert slotway["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["terminationGracePeriodSeconds"] * 1000 > k8s_config["drain_timeout_ms"]
    # The Unix socket is in a volume the app container mounts at the same place.
    socket_dir = str(Path(k8s_config["unix_socket"]).parent)
    app = next(c for c in pod["spec"]["containers"] if c["name"] == "app")
    for container in (slotway, app):
        assert any(m["mountPath"] == socket_dir for m in container["volumeMounts"]), container["name"]
    assert k8s_config["unix_socket"] in app["env"][0]["value"]

    # docker compose: the files it mounts exist, Slotway's loads, Prometheus scrapes it.
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {f"redis-{i}" for i in range(1, 7)} <= services.keys()
    assert {"slotway", "prometheus", "demo-client", "cluster-init"} <= services.keys()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), volume
    build = services["slotway"]["build"]
    assert (DEPLOY / build["context"]).resolve() == REPO_ROOT
    assert (REPO_ROOT / build["dockerfile"]).exists()
    compose_config = yaml.safe_load((DEPLOY / "compose" / "slotway.yaml").read_text())
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"slotway:{compose_config['metrics_listen'].rsplit(':', 1)[1]}"]
    assert all(seed.split(":")[0] in services for seed in compose_config["seeds"])


def test_dockerfile_builds_the_binary_and_runs_unprivileged():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert len(stages) == 2, stages  # multi-stage: build, then a small runtime image
    assert "distroless" in stages[1]
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert user and not user[-1].startswith(("root", "0")), user
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", dockerfile, re.M):
        assert (REPO_ROOT / source).exists(), source
    assert "cargo build --release --locked -p slotway" in dockerfile
    exposed = set(re.search(r"^EXPOSE\s+(.*)$", dockerfile, re.M).group(1).split())
    assert exposed == {"6380", "9121"}
    image_config = yaml.safe_load((DEPLOY / "container.yaml").read_text())
    assert image_config["listen"].endswith(":6380") and image_config["metrics_listen"].endswith(":9121")
    assert '"/etc/slotway/slotway.yaml"' in dockerfile


def test_dashboard_and_readme_name_only_exported_metrics(proxy_factory):
    proxy = proxy_factory(metrics=True)
    c = proxy.client()
    c.mset({"ops:d:a": 1, "ops:d:b": 2, "ops:d:c": 3})
    c.mget(["ops:d:a", "ops:d:b", "ops:d:c"])
    exported = families(proxy.metrics())
    # Families that appear only after their event (a redirect) are listed here.
    exported |= {"slotway_redirects_total"}

    def base(name: str) -> str:
        return re.sub(r"_(bucket|sum|count)$", "", name) if name not in exported else name

    dashboard = json.loads((DEPLOY / "grafana" / "slotway-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    used = {base(n) for e in exprs for n in re.findall(r"\b((?:slotway|process)_[a-z_]+)", e)}
    assert used - exported == set()
    readme = (REPO_ROOT / "README.md").read_text()
    operating = readme.split("## Operating", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`((?:slotway|process)_[a-z_]+)`", operating))
    assert documented - exported == set()
    # And every exported Slotway family is documented.
    assert {f for f in exported if f.startswith("slotway_")} - documented == set()
