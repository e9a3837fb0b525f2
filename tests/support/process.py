"""Starting and stopping child processes without leaking them.

Every process is started in its own session (and so its own process group),
which lets us signal it and anything it spawned with one ``killpg``.  The
child normally also gets ``PR_SET_PDEATHSIG=SIGKILL``,
so even if pytest itself is SIGKILLed the servers it started die with it.
(That needs a ``preexec_fn``, which is only used while pytest runs a single
thread; processes started while a test runs load threads go without it.
PDEATHSIG fires when the forking *thread* exits, so a single thread also
means the signal cannot fire early.)

Every process started through :func:`spawn` is remembered and killed by an
``atexit`` hook as a last resort; fixtures still stop their processes
explicitly at teardown.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence

_PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
    _prctl = None

_live: list[subprocess.Popen] = []
_live_lock = threading.Lock()


class MissingExecutable(RuntimeError):
    """A required program (redis-server, redis-cli, slotway) was not found."""


def find_executable(name: str, env_var: str | None = None, hint: str = "") -> str:
    """Locate ``name`` on PATH (or at ``$env_var`` if that is set).

    Raises :class:`MissingExecutable` with ``hint`` appended when it is not
    there; callers turn that into a loud test failure, never a skip.
    """
    override = os.environ.get(env_var) if env_var else None
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise MissingExecutable(f"${env_var}={override} is not an executable file. {hint}")
    found = shutil.which(name)
    if not found:
        raise MissingExecutable(f"`{name}` was not found on PATH. {hint}")
    return found


def _child_setup_with_pdeathsig() -> None:  # runs in the forked child
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: Sequence[str],
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``argv`` in a new session with stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec = None
    # preexec_fn is only safe while no other thread runs (fork + locks).
    if _prctl is not None and threading.active_count() == 1:
        preexec = _child_setup_with_pdeathsig
    with open(log_path, "ab") as log:
        log.write(f"==== {time.strftime('%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
        )
    with _live_lock:
        _live.append(proc)
    return proc


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group of ``proc`` (ignored if already gone)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> int:
    """Send ``sig`` to ``proc``'s group, SIGKILL it after ``grace`` s; return its exit code.

    Once the process is gone, whatever it left behind in its process group
    (e.g. a forked redis-server child) is killed too.  A process that had
    already exited is only reaped: its group id may belong to someone else
    by now.
    """
    if proc.poll() is None:
        signal_group(proc, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    with _live_lock:
        if proc in _live:
            _live.remove(proc)
    return proc.returncode


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file (or a note if it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate()`` until it returns a truthy value; return that value.

    Exceptions raised by the predicate count as "not yet".  On timeout a
    TimeoutError names ``what`` and the last exception seen, if any.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "retry"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        signal_group(proc, signal.SIGKILL)
