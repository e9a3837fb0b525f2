"""Celery acceptance test: a real Celery app, broker and result backend on Redis.

Every scenario runs four times: against a plain standalone redis-server (the
reference, which must always pass) and through slotway started with
``--preset celery --databases namespaced`` in front of the 3+3 cluster, each
with redis-py's default RESP3 and again with RESP2 (``protocol=2``).

Per (target, protocol) one worker (threads pool, 4 threads, queue
``celery``) serves most tests; the priority, redelivery and database-1
tests start their own workers.  Scenarios: a task and its result, a group of
20, a chord, priority queues (``priority_steps=range(10)``: priority 0 before
9), countdown and ETA, ``celery inspect ping`` and ``app.control.ping``
(broadcast), revoking a pending task, an ``acks_late`` task redelivered after
its worker is SIGKILLed (visibility timeout), 1,000 tasks with none lost or
duplicated (tasks/s reported), and a second app on database 1.

Task executions are recorded in files (``celery_support.app.record_execution``),
not in Redis, so losses and duplicates are counted independently of the
system under test.  The app and the worker launcher are in
``celery_support/``; the measured tasks/s are printed in the terminal summary
and appended to ``tests/.results/celery-throughput.txt``.

Run only these tests with::

    tests/.venv/bin/python -m pytest tests/test_celery.py -v
    tests/.venv/bin/python -m pytest tests/test_celery.py -k standalone   # reference only
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from celery import Celery, chord, group
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import ResultSet

from celery_support.app import CelerySettings, make_app, read_records
from celery_support.report import report_throughput
from celery_support.worker import CeleryWorker, WorkerError, run_celery
from support import process
from support.proxy import ProxyLauncher

pytest_plugins = ["celery_support.plugin"]

#: Per-test limit, including the start of the shared proxy and worker.
pytestmark = pytest.mark.timeout(120)

#: How slotway is started for Celery.
SLOTWAY_ARGS = ("--preset", "celery", "--databases", "namespaced")

#: Limit for one ``AsyncResult.get``.
GET_TIMEOUT = 20.0
#: Visibility timeout of the redelivery test's workers (seconds).
VISIBILITY_TIMEOUT = 5
BULK_TASKS = 1000

COMBOS = [("standalone", 3), ("standalone", 2), ("slotway", 3), ("slotway", 2)]


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def wait(result, timeout: float = GET_TIMEOUT):
    """``result.get(timeout)``; on timeout, fail saying where the result got stuck.

    Task errors (and TaskRevokedError) propagate unchanged.
    """
    try:
        return result.get(timeout=timeout)
    except CeleryTimeoutError:
        pass
    pytest.fail(f"no result within {timeout:.0f}s: {_stuck(result)}", pytrace=False)


def _stuck(result) -> str:
    """What the result backend holds for ``result`` (read with GET, not pub/sub)."""
    backend = result.backend
    leaves = list(result.results) if hasattr(result, "results") else [result]
    states = Counter(backend.get_task_meta(r.id, cache=False)["status"] for r in leaves)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    if states and set(states) <= {"SUCCESS", "FAILURE", "REVOKED"}:
        return (f"the backend has every result ({summary}) but the client was not told: "
                "the celery-task-meta-<id> pub/sub message did not arrive")
    return f"task states in the backend: {summary} (see the worker logs below)"


@dataclass
class Combo:
    """One (target, protocol) pair: where Redis is, the settings, and a client app."""

    target: str
    protocol: int
    host: str
    port: int
    settings: CelerySettings
    app: Celery
    log_dir: Path
    #: Plain clients on the servers that hold the data (the standalone server,
    #: or every cluster master), bypassing slotway.
    storage: list = field(default_factory=list)
    clients: list = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.target}-resp{self.protocol}"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def redis(self, db: int = 0) -> redis.Redis:
        """A plain redis-py client on the target (same protocol), closed at teardown."""
        client = redis.Redis(host=self.host, port=self.port, db=db, protocol=self.protocol,
                             decode_responses=True, socket_timeout=10, socket_connect_timeout=5)
        self.clients.append(client)
        return client

    def records(self, token: str) -> list:
        return read_records(self.settings.record_dir, token)

    def stored_keys(self, match: str) -> list[str]:
        """Keys matching the glob ``match`` on the servers themselves (not through slotway)."""
        return sorted(key for client in self.storage for key in client.scan_iter(match=match, count=1000))


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{t}-resp{p}" for t, p in COMBOS])
def combo(request, tmp_path_factory):
    """The target (standalone redis-server or slotway), emptied, and a client app on it."""
    target, protocol = request.param
    launcher = None
    if target == "standalone":
        server = request.getfixturevalue("standalone")
        host, port = server.host, server.port
        flushall = server.client().flushall
        storage = [server.client()]
    else:
        cluster = request.getfixturevalue("cluster")
        flushall = cluster.flushall
        storage = [cluster.node_client(addr) for addr in cluster.masters()]
    flushall()
    if target == "slotway":
        launcher = ProxyLauncher(cluster, tmp_path_factory.mktemp("celery-proxy"))
        proxy = launcher(*SLOTWAY_ARGS)  # fails the tests with slotway's log if it does not start
        host, port = proxy.host, proxy.port
    log_dir = tmp_path_factory.mktemp(f"celery-{target}-resp{protocol}")
    record_dir = log_dir / "records"
    record_dir.mkdir()
    base = f"redis://{host}:{port}/0"
    settings = CelerySettings(broker_url=base, backend_url=base, protocol=protocol,
                              record_dir=str(record_dir))
    app = make_app(settings, set_as_current=False)
    c = Combo(target, protocol, host, port, settings, app, log_dir, storage)
    try:
        yield c
    finally:
        try:
            app.close()
        finally:
            for client in c.clients:
                client.close()
            try:
                if launcher is not None:
                    launcher.teardown()
            finally:
                flushall()  # leave the shared server/cluster empty for the other test modules


def _start(worker: CeleryWorker, client_app: Celery) -> CeleryWorker:
    try:
        return worker.start(client_app)
    except WorkerError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def _check_stopped(workers: list[CeleryWorker]) -> None:
    """Stop ``workers``; fail if one of them had died on its own."""
    problems = []
    for worker in workers:
        if worker.died_on_its_own():
            problems.append(f"celery worker {worker.hostname} died during the test "
                            f"(status {worker.proc.returncode}): {worker.last_error()}\n{worker.describe(60)}")
        worker.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def worker(combo):
    """The shared worker of this (target, protocol): queue ``celery``, 4 threads."""
    w = CeleryWorker(combo.settings, combo.log_dir, f"main-{combo.id}", queues=["celery"],
                     concurrency=4, prefetch_multiplier=4)
    _start(w, combo.app)
    yield w
    _check_stopped([w])


@pytest.fixture
def worker_factory(combo):
    """``worker_factory(name, settings=None, client_app=None, **CeleryWorker kwargs)``: a started worker.

    Stopped at the end of the test; the test errors if one died on its own.
    """
    started: list[CeleryWorker] = []

    def start(name, settings=None, client_app=None, **kwargs) -> CeleryWorker:
        w = CeleryWorker(settings or combo.settings, combo.log_dir, f"{name}-{combo.id}", **kwargs)
        started.append(w)
        return _start(w, client_app or combo.app)

    yield start
    _check_stopped(started)


# -- the scenarios -------------------------------------------------------------------------


def _check_protocol(conn, protocol: int, what: str) -> None:
    conn.connect()
    assert conn.protocol == protocol, f"{what}: redis-py connection uses RESP{conn.protocol}"
    meta = conn.handshake_metadata
    if protocol == 3:
        assert meta, f"{what}: no HELLO 3 handshake recorded"
        proto = meta.get(b"proto", meta.get("proto"))
        assert proto == 3, f"{what}: HELLO answered proto={proto!r}"
    else:
        assert meta is None, f"{what}: sent HELLO although RESP2 was asked for: {meta!r}"


def test_clients_speak_the_requested_resp_version(combo):
    # Result backend (celery.backends.redis): URL query ?protocol=2 for RESP2.
    pool = combo.app.backend.client.connection_pool
    conn = pool.get_connection()
    try:
        _check_protocol(conn, combo.protocol, "result backend")
    finally:
        pool.release(conn)
    # Broker (kombu): celery_support.transport for RESP2, stock kombu for RESP3.
    with combo.app.connection_for_write() as connection:
        client = connection.default_channel.client
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            _check_protocol(conn, combo.protocol, "broker")
        finally:
            pool.release(conn)


def test_task_and_result(combo, worker):
    t = combo.app.slotway
    res = t.add.delay(2, 3)
    assert wait(res) == 5
    assert res.state == "SUCCESS"
    stored = combo.app.backend.get_task_meta(res.id, cache=False)
    assert (stored["status"], stored["result"]) == ("SUCCESS", 5)
    # The result really is in the servers behind the target (whatever name slotway gives it).
    assert combo.stored_keys(f"*{res.id}*"), f"no key containing {res.id} on the servers"

    bad = t.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        wait(bad)
    assert bad.state == "FAILURE"


def test_group_of_20(combo, worker):
    t = combo.app.slotway
    res = group((t.add.s(i, i) for i in range(20)), app=combo.app).apply_async()
    assert wait(res) == [2 * i for i in range(20)]
    assert res.completed_count() == 20


def test_chord(combo, worker):
    t = combo.app.slotway
    res = chord((t.add.s(i, i) for i in range(10)), t.tsum.s(), app=combo.app).apply_async()
    assert wait(res) == sum(2 * i for i in range(10))
    assert wait(res.parent) == [2 * i for i in range(10)]


def test_priority_queue_runs_priority_0_before_9(combo, worker_factory):
    """With ``priority_steps=range(10)`` a worker takes priority 0 first, FIFO within a priority."""
    t = combo.app.slotway
    token = new_token()
    published = [5, 9, 0, 3, 7, 1, 8, 2, 6, 4, 9, 0]
    results = [t.record.apply_async((token, f"p{p}-{seq}"), queue="prio", priority=p)
               for seq, p in enumerate(published)]
    # The messages wait in prio, prio\x06\x161 ... prio\x06\x169 before anyone consumes them;
    # one thread and prefetch 1 make execution order = delivery order.
    worker_factory("prio", queues=["prio"], concurrency=1, prefetch_multiplier=1)
    wait(ResultSet(results, app=combo.app))
    got = [r.label for r in combo.records(token)]
    expected = [f"p{p}-{seq}" for seq, p in sorted(enumerate(published), key=lambda sp: (sp[1], sp[0]))]
    assert got == expected


def test_countdown_and_eta(combo, worker):
    t = combo.app.slotway
    sent = time.time()
    by_countdown = t.stamp.apply_async(countdown=2)
    eta = datetime.now(timezone.utc) + timedelta(seconds=3)
    by_eta = t.stamp.apply_async(eta=eta)
    ran_countdown = wait(by_countdown)
    ran_eta = wait(by_eta)
    assert sent + 2 - 0.1 <= ran_countdown < sent + 2 + 10, f"countdown=2 ran after {ran_countdown - sent:.2f}s"
    assert eta.timestamp() - 0.1 <= ran_eta < eta.timestamp() + 10, \
        f"eta ran {ran_eta - eta.timestamp():+.2f}s from its ETA"


def test_celery_inspect_ping_command(combo, worker):
    out = run_celery(combo.settings, "inspect", "ping", "--destination", worker.hostname, "--timeout", "5")
    assert out.returncode == 0, f"celery inspect ping exited {out.returncode}\n{out.stdout}\n{out.stderr}"
    assert worker.hostname in out.stdout and "pong" in out.stdout, out.stdout


def test_control_ping_broadcast(combo, worker):
    replies = combo.app.control.ping(timeout=2)
    by_host = {host: reply for r in replies for host, reply in r.items()}
    assert by_host.get(worker.hostname) == {"ok": "pong"}, replies
    # A broadcast whose reply carries data: the worker's queues.
    queues = combo.app.control.inspect(destination=[worker.hostname], timeout=2).active_queues()
    assert queues and [q["name"] for q in queues[worker.hostname]] == ["celery"], queues


def test_revoke_pending_task(combo, worker):
    """A task revoked while it waits in its queue is never executed, and ends REVOKED."""
    t = combo.app.slotway
    control = combo.app.control
    token = new_token()
    res = t.record.apply_async((token, "revoked"), queue="held")  # nobody consumes 'held' yet
    assert res.state == "PENDING"
    replies = control.revoke(res.id, destination=[worker.hostname], reply=True, timeout=5)
    assert any(worker.hostname in r for r in replies), f"no reply to revoke: {replies}"
    replies = control.add_consumer("held", destination=[worker.hostname], reply=True, timeout=5)
    assert any(worker.hostname in r for r in replies), f"no reply to add_consumer: {replies}"
    try:
        with pytest.raises(TaskRevokedError):
            wait(res)
        assert res.state == "REVOKED"
        after = t.record.apply_async((token, "after"), queue="held")
        assert wait(after) == "after"
    finally:
        control.cancel_consumer("held", destination=[worker.hostname], reply=True, timeout=5)
    assert [r.label for r in combo.records(token)] == ["after"]


def test_acks_late_task_redelivered_after_sigkill(combo, worker_factory):
    """An acks_late task whose worker is SIGKILLed runs again on a restarted worker."""
    t = combo.app.slotway
    settings = combo.settings.replace(visibility_timeout=VISIBILITY_TIMEOUT, restore_interval=1,
                                      mutex_expire=10)
    token = new_token()
    a = worker_factory("late-a", settings=settings, queues=["late"], concurrency=1, prefetch_multiplier=1)
    res = t.late_once.apply_async((token, "redelivered"), queue="late")
    process.wait_until(lambda: combo.records(token), 20, what=f"the task to start on {a.hostname}")
    a.kill()
    r = combo.redis()
    assert r.zcard("unacked_index") >= 1 and r.hlen("unacked") >= 1, \
        "the killed worker's message is not in unacked/unacked_index"

    b = worker_factory("late-b", settings=settings, queues=["late"], concurrency=1, prefetch_multiplier=1)
    assert wait(res, VISIBILITY_TIMEOUT + 30) == "redelivered"
    runs = combo.records(token)
    assert [(x.hostname, x.task_id) for x in runs] == [(a.hostname, res.id), (b.hostname, res.id)]
    waited = runs[1].at - runs[0].at
    assert waited >= VISIBILITY_TIMEOUT - 0.5, f"redelivered after {waited:.1f}s, before the visibility timeout"
    # Acked on b: nothing left to restore.
    process.wait_until(lambda: r.zcard("unacked_index") == 0 and r.hlen("unacked") == 0, 10,
                       what="the redelivered message to be acked")
    assert len(combo.records(token)) == 2


@pytest.mark.timeout(180)
def test_1000_tasks_none_lost_or_duplicated(combo, worker):
    t = combo.app.slotway
    token = new_token()
    start = time.perf_counter()
    results = [t.record.apply_async((token, i)) for i in range(BULK_TASKS)]
    published = time.perf_counter() - start
    values = wait(ResultSet(results, app=combo.app), 90)
    elapsed = time.perf_counter() - start
    assert values == list(range(BULK_TASKS))

    time.sleep(0.5)  # a late duplicate would show up here
    runs = combo.records(token)
    counts = Counter(int(x.label) for x in runs)
    lost = sorted(set(range(BULK_TASKS)) - set(counts))
    duplicated = {label: n for label, n in counts.items() if n > 1}
    assert not lost and not duplicated and len(runs) == BULK_TASKS, \
        f"{len(runs)} executions; lost: {lost[:20]}; duplicated: {dict(list(duplicated.items())[:20])}"
    assert len({x.task_id for x in runs}) == BULK_TASKS

    rate = BULK_TASKS / elapsed
    where = f"slotway {' '.join(SLOTWAY_ARGS)}" if combo.target == "slotway" else "standalone redis-server"
    report_throughput(
        f"celery {combo.target:<10} RESP{combo.protocol}: {BULK_TASKS} tasks in {elapsed:5.2f}s "
        f"= {rate:6.0f} tasks/s (publishing took {published:.2f}s; 1 worker, 4 threads; {where})"
    )


@pytest.mark.timeout(150)
def test_second_app_on_database_1(combo, worker, worker_factory):
    """An app on db 1 works and sees nothing of db 0 (queues, results, keys, broadcasts)."""
    settings1 = combo.settings.replace(broker_url=combo.url(1), backend_url=combo.url(1))
    app1 = make_app(settings1, set_as_current=False)
    try:
        r0, r1 = combo.redis(0), combo.redis(1)
        token = new_token()
        marker = f"db0-marker-{token}"
        r0.set(marker, "db0")
        # A message for queue 'iso' in db 0, where nobody consumes 'iso'.
        stray = combo.app.slotway.record.apply_async((token, "db0"), queue="iso")
        w1 = worker_factory("db1", settings=settings1, client_app=app1, queues=["iso"])

        assert wait(app1.slotway.add.apply_async((20, 22), queue="iso")) == 42
        res = app1.slotway.record.apply_async((token, "db1"), queue="iso")
        assert wait(res) == "db1"
        group_res = group((app1.slotway.add.s(i, 1) for i in range(5)), app=app1).apply_async(queue="iso")
        assert wait(group_res) == [i + 1 for i in range(5)]

        assert [x.label for x in combo.records(token)] == ["db1"], "the db-1 worker ran a db-0 message"
        assert (r0.llen("iso"), r1.llen("iso")) == (1, 0)
        assert (r0.exists(f"celery-task-meta-{res.id}"), r1.exists(f"celery-task-meta-{res.id}")) == (0, 1)
        assert r0.exists(f"celery-task-meta-{stray.id}") == 0
        assert (r0.get(marker), r1.exists(marker)) == ("db0", 0)

        # kombu names fanout channels /<db>.celery.pidbox: broadcasts stay in their database.
        hosts1 = {h for r in app1.control.ping(timeout=2) for h in r}
        hosts0 = {h for r in combo.app.control.ping(timeout=2) for h in r}
        assert hosts1 == {w1.hostname}
        assert worker.hostname in hosts0 and w1.hostname not in hosts0
    finally:
        app1.close()


def _fifty_tasks(settings: CelerySettings, log_dir, name: str, launcher: ProxyLauncher,
                 check_clients) -> None:
    """A worker and an app with ``settings`` run 50 tasks on a queue of their own (a worker of
    another test module's proxy on the same cluster must not take them); ``check_clients()``
    then checks how they connected. Stops the worker and the proxies of ``launcher``."""
    app = make_app(settings, set_as_current=False)
    queue = f"{name}q"
    w = CeleryWorker(settings, log_dir, name, queues=[queue], concurrency=4)
    try:
        _start(w, app)
        token = new_token()
        results = [app.slotway.record.apply_async((token, i), queue=queue) for i in range(50)]
        assert wait(ResultSet(results, app=app), 60) == list(range(50))
        assert sorted(int(r.label) for r in read_records(settings.record_dir, token)) == list(range(50))
        check_clients()
    finally:
        try:
            _check_stopped([w])
        finally:
            app.close()
            launcher.teardown()


@pytest.mark.timeout(150)
def test_app_and_worker_on_the_unix_socket(cluster, tmp_path_factory):
    """A sidecar's Celery app on Slotway's Unix socket: kombu's stock ``redis+socket://`` URLs."""
    launcher = ProxyLauncher(cluster, tmp_path_factory.mktemp("celery-unix-proxy"))
    sock = tmp_path_factory.mktemp("celery-unix-socket") / "slotway.sock"
    launcher(*SLOTWAY_ARGS, "--unix-socket", str(sock))
    log_dir = tmp_path_factory.mktemp("celery-unix")
    record_dir = log_dir / "records"
    record_dir.mkdir()
    url = f"redis+socket://{sock}"
    settings = CelerySettings(broker_url=url, backend_url=f"{url}?virtual_host=0", protocol=3,
                              record_dir=str(record_dir))

    def unix_clients():
        # Really through the socket: the worker's and the app's connections are Unix clients.
        listed = redis.Redis(unix_socket_path=str(sock), decode_responses=True).execute_command("CLIENT", "LIST")
        assert sum(" flags=U " in line for line in listed.splitlines()) >= 3, listed

    _fifty_tasks(settings, log_dir, "unix", launcher, unix_clients)


@pytest.mark.timeout(150)
def test_app_and_worker_over_tls(cluster, tmp_path_factory):
    """An app that spoke TLS to its Redis keeps its ``rediss://`` URLs, pointed at Slotway's
    TLS listener."""
    from support.ports import allocate_port
    from support.tls import make_certs

    certs = make_certs(tmp_path_factory.mktemp("celery-tls-certs"))
    port = allocate_port()
    launcher = ProxyLauncher(cluster, tmp_path_factory.mktemp("celery-tls-proxy"))
    proxy = launcher(*SLOTWAY_ARGS, "--tls-listen", f"127.0.0.1:{port}", "--tls-cert-file",
                     str(certs.cert), "--tls-key-file", str(certs.key))
    log_dir = tmp_path_factory.mktemp("celery-tls")
    record_dir = log_dir / "records"
    record_dir.mkdir()
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={certs.ca}"
    settings = CelerySettings(broker_url=url, backend_url=url, protocol=3, record_dir=str(record_dir))

    def tls_clients():
        # Really over TLS: the worker's and the app's connections came in on the TLS listener.
        listed = proxy.client().execute_command("CLIENT", "LIST")
        assert sum(f" laddr=127.0.0.1:{port} " in line for line in listed.splitlines()) >= 3, listed

    _fifty_tasks(settings, log_dir, "tls", launcher, tls_clients)
