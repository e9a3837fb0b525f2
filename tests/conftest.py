"""pytest fixtures for Slotway's integration tests.

Fixtures
--------
``cluster`` (session)
    A 3-master/3-replica Redis Cluster of real redis-server processes on free
    loopback ports (:class:`support.cluster.Cluster`).  After every test that
    used it, it is healed: stopped nodes are restarted, aborted migrations are
    fixed, and the test after sees a stable cluster (roles and slot owners
    may have moved, so look them up with ``cluster.masters()`` etc.).
``standalone`` (session)
    One plain (non-cluster) redis-server, for comparing replies with the proxy.
``proxy_factory`` (function)
    ``proxy_factory(*extra_args, seeds=None, metrics=False, env=None)`` starts a
    slotway process in front of ``cluster`` and returns a
    :class:`support.proxy.SlotwayProxy`.  Stopped at the end of the test.
``proxy`` (function) / ``module_proxy`` (module)
    A default slotway (``--seed <first master>``), per test or shared by a module.

Every proxy is checked at teardown: the test errors if slotway panicked
("panicked at" in its log) or exited while the test was running.  If a test
fails, the tail of each running proxy's log is attached to the report.

Missing redis-server/redis-cli/slotway binaries make the tests fail (never
skip) with a message saying how to get them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import process
from support.cluster import Cluster, RedisServer, redis_server_path
from support.proxy import DEFAULT_BIN, RUNNING_PROXIES, ProxyLauncher, SlotwayProxy, slotway_path

def pytest_report_header(config):
    """Show which redis-server and slotway binaries the run uses."""
    try:
        version = subprocess.run(
            [redis_server_path(), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except process.MissingExecutable as exc:
        version = f"MISSING ({exc})"
    try:
        binary = slotway_path()
    except process.MissingExecutable:
        binary = f"{DEFAULT_BIN} (not built yet)"
    return [f"redis-server: {version}", f"slotway: {binary}"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of every running proxy's log to a failed test's report."""
    report = yield
    if report.when == "call" and report.failed:
        for proxy in RUNNING_PROXIES:
            report.sections.append(
                (f"slotway log {proxy.addr} ({proxy.log_path})", process.tail(proxy.log_path, 60))
            )
    return report


# -- redis fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    """A running 3+3 Redis Cluster shared by the whole session."""
    cl = Cluster(tmp_path_factory.mktemp("cluster"))
    missing = None
    try:
        cl.start()
    except process.MissingExecutable as exc:
        missing = str(exc)
    except BaseException:
        cl.stop()
        raise
    if missing:
        pytest.fail(missing, pytrace=False)
    try:
        yield cl
    finally:
        cl.stop()


@pytest.fixture(autouse=True)
def _heal_cluster_after_test(request):
    """Restore a stable cluster after each test that used ``cluster``."""
    if "cluster" not in request.fixturenames:
        yield
        return
    cl = request.getfixturevalue("cluster")
    yield
    cl.heal()


@pytest.fixture(scope="session")
def standalone(tmp_path_factory) -> RedisServer:
    """A plain, non-cluster redis-server for reference replies."""
    server = RedisServer(tmp_path_factory.mktemp("standalone"), cluster=False)
    missing = None
    try:
        server.start()
    except process.MissingExecutable as exc:
        missing = str(exc)
    if missing:
        pytest.fail(missing, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


# -- proxy fixtures ------------------------------------------------------------------------


@pytest.fixture
def proxy_factory(cluster, tmp_path_factory):
    """Factory: ``proxy_factory(*extra_args, seeds=None, metrics=False, env=None)``."""
    launcher = ProxyLauncher(cluster, tmp_path_factory.mktemp("proxy"))
    yield launcher
    launcher.teardown()


@pytest.fixture
def proxy(proxy_factory) -> SlotwayProxy:
    """A default slotway in front of ``cluster``, for one test."""
    return proxy_factory()


@pytest.fixture(scope="module")
def module_proxy(cluster, tmp_path_factory) -> SlotwayProxy:
    """A default slotway in front of ``cluster``, shared by the tests of one module."""
    launcher = ProxyLauncher(cluster, tmp_path_factory.mktemp("proxy"))
    try:
        yield launcher()
    finally:
        launcher.teardown()
