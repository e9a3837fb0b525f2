"""Real ``celery worker`` processes for the acceptance test.

:class:`CeleryWorker` runs ``python -m celery -A celery_support.worker_app
worker`` (threads pool) in its own process group via
:func:`support.process.spawn`, with the app settings in its environment and
its output in a log file.  :meth:`CeleryWorker.start` returns once the worker
answers ``app.control.ping`` (so the broker, the result backend and the
pub/sub control channel all work), and fails quickly, with the log, if the
process exits or does not answer within the startup timeout.
:meth:`CeleryWorker.kill` is the SIGKILL used by the redelivery test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from support import process

from .app import CelerySettings

TESTS_DIR = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 30.0
READY_MARKER = " ready."
#: A log line naming an exception (the last line of a traceback, or a logged error).
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)\b.*|.*\b(ERROR|CRITICAL)\b.*)$")

#: Workers currently running, so failure reports can include their logs.
RUNNING_WORKERS: list["CeleryWorker"] = []


def celery_env(settings: CelerySettings) -> dict[str, str]:
    """Environment for a ``celery`` command using the test app with ``settings``."""
    pythonpath = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **settings.env(), "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}


def celery_command(*args: str) -> list[str]:
    """``python -m celery -A celery_support.worker_app ARGS...`` with the venv's python."""
    return [sys.executable, "-m", "celery", "-A", "celery_support.worker_app", *args]


def run_celery(settings: CelerySettings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a one-shot ``celery`` command (e.g. ``inspect ping``) and return its result."""
    return subprocess.run(
        celery_command(*args),
        env=celery_env(settings),
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class WorkerError(RuntimeError):
    """A worker did not start, or died."""


class CeleryWorker:
    """One ``celery worker`` process.

    ``name`` becomes the node name ``<name>@slotway-test``; it must be unique
    among the workers sharing a broker.
    """

    def __init__(self, settings: CelerySettings, log_dir: Path, name: str,
                 queues: Sequence[str] = ("celery",), concurrency: int = 4,
                 prefetch_multiplier: int = 4, extra_args: Sequence[str] = ()) -> None:
        self.settings = settings
        self.hostname = f"{name}@slotway-test"
        self.queues = list(queues)
        self.concurrency = concurrency
        self.prefetch_multiplier = prefetch_multiplier
        self.extra_args = list(extra_args)
        self.log_path = Path(log_dir) / f"celery-worker-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.stopped_on_purpose = False

    def argv(self) -> list[str]:
        """The full command line."""
        return celery_command(
            "worker",
            "--pool=threads",
            f"--concurrency={self.concurrency}",
            f"--prefetch-multiplier={self.prefetch_multiplier}",
            "--queues", ",".join(self.queues),
            "--hostname", self.hostname,
            "--loglevel=INFO",
            *self.extra_args,
        )

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        """Process id of the worker (also its process group id)."""
        return self.proc.pid

    def log(self) -> str:
        """Everything the worker wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log."""
        return process.tail(self.log_path, lines)

    def last_error(self) -> str | None:
        """The last log line that names an exception or is logged at ERROR/CRITICAL."""
        for line in reversed(self.log().splitlines()):
            if _ERROR_LINE.match(line.strip()):
                return line.strip()
        return None

    def describe(self, lines: int = 40) -> str:
        """Command, state and log tail, for error messages."""
        state = "running" if self.running else f"exited with status {self.proc and self.proc.returncode}"
        return (f"worker {self.hostname} ({state})\ncommand: {' '.join(self.argv())}\n"
                f"--- {self.log_path} (tail) ---\n{self.tail(lines)}")

    def is_ready_in_log(self) -> bool:
        """True once the worker logged ``<hostname> ready.``."""
        return f"{self.hostname}{READY_MARKER}" in self.log()

    def start(self, client_app, timeout: float = STARTUP_TIMEOUT) -> "CeleryWorker":
        """Start the worker and wait until it answers ``client_app.control.ping``.

        Raises :class:`WorkerError` (with the log tail) if the process exits
        or does not answer within ``timeout`` seconds.
        """
        env = celery_env(self.settings)
        self.proc = process.spawn(self.argv(), self.log_path, cwd=TESTS_DIR, env=env)
        RUNNING_WORKERS.append(self)
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.running:
                self.kill()
                raise WorkerError(f"celery worker {self.hostname} exited during startup: "
                                  f"{self.last_error()}\n{self.describe(60)}")
            try:
                replies = client_app.control.ping(destination=[self.hostname], timeout=0.5)
            except Exception as exc:  # noqa: BLE001 - reported if it never works
                last_error = exc
                time.sleep(0.5)
                continue
            if any(self.hostname in reply for reply in replies or ()):
                return self
        ready = self.is_ready_in_log()
        self.kill()
        raise WorkerError(
            f"celery worker {self.hostname} did not answer app.control.ping within {timeout:.0f}s "
            f"({'it logged ready, so the control broadcast (pub/sub) or its reply is not getting through' if ready else 'it never logged ready'}"
            f"; last client error: {last_error!r}; last error in its log: {self.last_error()})\n"
            f"{self.describe(60)}"
        )

    def stop(self, grace: float = 10.0) -> int:
        """Warm shutdown (SIGTERM), SIGKILL after ``grace`` s; return the exit status."""
        if self.proc is not None and self.exit_code is None:
            self.stopped_on_purpose = True
            self.exit_code = process.stop(self.proc, signal.SIGTERM, grace)
        self._forget()
        return self.exit_code

    def kill(self) -> int:
        """SIGKILL the worker and everything in its process group; return the exit status."""
        if self.proc is not None and self.exit_code is None:
            self.stopped_on_purpose = True
            self.exit_code = process.stop(self.proc, signal.SIGKILL, 5.0)
        self._forget()
        return self.exit_code

    def died_on_its_own(self) -> bool:
        """True if the process exited without :meth:`stop`/:meth:`kill`."""
        return self.proc is not None and not self.stopped_on_purpose and self.proc.poll() is not None

    def _forget(self) -> None:
        if self in RUNNING_WORKERS:
            RUNNING_WORKERS.remove(self)
