"""The slotway proxy binary under test.

:class:`SlotwayProxy` starts ``$SLOTWAY_BIN``, by default
``target/release/slotway`` (``$CARGO_TARGET_DIR/release/slotway`` if set),
in front of a cluster, waits until it answers PING, and on :meth:`stop`
terminates it and checks its log for Rust panics.
"""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pytest

from . import process
from .endpoint import PONG_REPLY, Endpoint
from .ports import allocate_port

if TYPE_CHECKING:
    from .cluster import Cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target") / "release" / "slotway"
STARTUP_TIMEOUT = 15.0
PANIC_MARKER = "panicked at"

#: Proxies currently running, so failure reports can include their logs.
RUNNING_PROXIES: list["SlotwayProxy"] = []


def slotway_path() -> str:
    """Path of the proxy binary; raises :class:`process.MissingExecutable` if absent."""
    path = Path(os.environ.get("SLOTWAY_BIN") or DEFAULT_BIN)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise process.MissingExecutable(
            f"slotway binary not found at {path}: run `cargo build --release` in {REPO_ROOT} "
            "(or set $SLOTWAY_BIN to the binary to test)"
        )
    return str(path)


class SlotwayProxy(Endpoint):
    """One running slotway process listening on ``self.addr``."""

    #: A proxy started with a password answers an unauthenticated PING with
    #: -NOAUTH; that still means it is up.
    ready_replies = (PONG_REPLY, b"-NOAUTH")

    def __init__(self, seeds: Sequence[str], log_dir: Path, extra_args: Sequence[str] = (),
                 metrics: bool = False, env: dict[str, str] | None = None, name: str = "slotway",
                 binary: str | None = None) -> None:
        super().__init__()
        self.binary = binary or slotway_path()
        self.seeds = list(seeds)
        self.extra_args = list(extra_args)
        self.port = allocate_port()
        # Every proxy gets its own metrics port: the default (9121) would collide between
        # proxies running side by side. ``metrics`` is kept for callers that say they need it.
        self.metrics_port = allocate_port()
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.env = {**os.environ, "RUST_BACKTRACE": "1", "NO_COLOR": "1", **(env or {})}
        self.proc = None
        self.exit_code: int | None = None

    def argv(self) -> list[str]:
        """The full command line."""
        args = [self.binary, "--listen", self.addr]
        for seed in self.seeds:
            args += ["--seed", seed]
        if self.metrics_port:
            args += ["--metrics-listen", f"{self.host}:{self.metrics_port}"]
        else:
            # The default endpoint (127.0.0.1:9121) would clash between proxies running at once.
            args += ["--metrics-listen", "off"]
        return args + self.extra_args

    @property
    def pid(self) -> int:
        """Process id (for /proc inspection)."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = STARTUP_TIMEOUT) -> "SlotwayProxy":
        """Start the proxy and wait until it answers PING; raise with its log if not."""
        self.proc = process.spawn(self.argv(), self.log_path, env=self.env)
        try:
            self.wait_for_ping(timeout, alive=lambda: self.running)
        except (RuntimeError, TimeoutError) as exc:
            self.exit_code = process.stop(self.proc, signal.SIGKILL)
            raise RuntimeError(
                f"slotway did not come up on {self.addr}: {exc} (exit status {self.exit_code})\n"
                f"command: {' '.join(self.argv())}\n"
                f"--- {self.log_path} (tail) ---\n{process.tail(self.log_path)}"
            ) from None
        return self

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM the proxy, SIGKILL it after ``grace`` s; return its exit status."""
        self.close_clients()
        if self.proc is not None and self.exit_code is None:
            self.exit_code = process.stop(self.proc, signal.SIGTERM, grace)
        return self.exit_code

    def log(self) -> str:
        """Everything the proxy wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def panics(self) -> list[str]:
        """Log lines reporting a Rust panic."""
        return [line for line in self.log().splitlines() if PANIC_MARKER in line]

    def metrics(self) -> str:
        """The Prometheus text from ``--metrics-listen`` (start with ``metrics=True``)."""
        status, body = self.http("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}: {body}")
        return body

    def http(self, path: str, method: str = "GET") -> tuple[int, str]:
        """``(status, body)`` of a request to the metrics endpoint (``metrics=True``)."""
        if not self.metrics_port:
            raise RuntimeError("proxy was started without metrics=True")
        url = f"http://{self.host}:{self.metrics_port}{path}"
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


class ProxyLauncher:
    """Starts slotway processes and checks them when they are torn down."""

    def __init__(self, cluster: "Cluster", log_dir: Path) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self.started: list[SlotwayProxy] = []

    def __call__(self, *extra_args: str, seeds=None, metrics: bool = False,
                 env: dict[str, str] | None = None, name: str = "slotway") -> SlotwayProxy:
        """Start one proxy (default seed: the cluster's first master) and return it."""
        try:
            binary = slotway_path()
        except process.MissingExecutable as exc:
            missing = str(exc)
        else:
            missing = None
        if missing:
            pytest.fail(missing, pytrace=False)
        proxy = SlotwayProxy(
            seeds=seeds or [self.cluster.masters()[0]],
            log_dir=self.log_dir,
            extra_args=extra_args,
            metrics=metrics,
            env=env,
            name=name,
            binary=binary,
        )
        self.started.append(proxy)
        try:
            proxy.start()
        except RuntimeError as exc:
            startup_error = str(exc)
        else:
            startup_error = None
        if startup_error:
            pytest.fail(startup_error, pytrace=False)
        RUNNING_PROXIES.append(proxy)
        return proxy

    def teardown(self) -> None:
        """Stop every proxy; fail if one panicked or died on its own."""
        problems = []
        for proxy in self.started:
            if proxy.proc is None:  # never started (startup failure already reported)
                continue
            crashed = proxy.exit_code is None and not proxy.running
            code = proxy.stop()
            if proxy in RUNNING_PROXIES:
                RUNNING_PROXIES.remove(proxy)
            mine = []
            if crashed:
                mine.append(f"slotway {proxy.addr} exited on its own during the test (status {code})")
            if proxy.panics():
                mine.append(f"slotway {proxy.addr} panicked: {proxy.panics()[0]}")
            if mine:
                mine.append(f"--- {proxy.log_path} (tail) ---\n{process.tail(proxy.log_path, 60)}")
            problems += mine
        self.started.clear()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
