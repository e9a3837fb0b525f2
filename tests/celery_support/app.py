"""The Celery app of the acceptance test: configuration and tasks.

:func:`make_app` builds an app from a :class:`CelerySettings`.  The test
process builds its client apps that way, and ``celery -A
celery_support.worker_app`` builds the worker's app from the same settings
passed as ``SLOTWAY_CELERY_*`` environment variables
(:meth:`CelerySettings.env` / :meth:`CelerySettings.from_env`).

The configuration is a stock Redis broker + Redis result backend with the
options the scenarios need: ``priority_steps=range(10)`` (10 lists per
queue), a visibility timeout and unacked-restore period that can be made
short for the redelivery test, fail-fast connection settings, and the RESP
version:

* RESP3 (``protocol=3``) is redis-py 8's default: nothing is configured,
  kombu and celery run exactly as shipped.
* RESP2: the result backend URL gets ``?protocol=2`` (celery passes URL
  query arguments to redis-py), and the broker uses
  :class:`celery_support.transport.Transport` with the ``protocol`` transport
  option, because kombu has no setting for it.

Tasks record each execution by appending a line to a file in
``record_dir`` (not to Redis, so counting executions does not depend on the
system under test); :func:`read_records` reads them back.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from celery import Celery

#: Transport class used for RESP2 broker connections (see module docstring).
RESP2_TRANSPORT = "celery_support.transport:Transport"

_ENV_PREFIX = "SLOTWAY_CELERY_"


@dataclass(frozen=True)
class CelerySettings:
    """Everything that differs between the apps of one test run."""

    broker_url: str
    backend_url: str
    #: 3 = redis-py's default (RESP3); 2 = RESP2 for broker and backend.
    protocol: int
    #: Directory of the per-token execution records.
    record_dir: str
    #: kombu ``visibility_timeout``: an unacked message older than this is
    #: given back to its queue by the next restore sweep.
    visibility_timeout: float = 3600.0
    #: Seconds between restore sweeps (kombu ``unacked_restore_interval``,
    #: with ``unacked_restore_throttle=1``).
    restore_interval: int = 10
    #: How long the restore sweep's lock lives (kombu ``unacked_mutex_expire``).
    mutex_expire: int = 300
    extra: dict = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The settings as environment variables, for ``celery -A celery_support.worker_app``."""
        out = {}
        for key, value in asdict(self).items():
            if key == "extra":
                continue
            out[_ENV_PREFIX + key.upper()] = str(value)
        return out

    @classmethod
    def from_env(cls, environ=os.environ) -> "CelerySettings":
        """Inverse of :meth:`env`; a missing required variable raises KeyError naming it."""
        def get(name, default=None):
            value = environ.get(_ENV_PREFIX + name.upper())
            if value is None:
                if default is None:
                    raise KeyError(f"${_ENV_PREFIX}{name.upper()} is not set")
                return default
            return value

        return cls(
            broker_url=get("broker_url"),
            backend_url=get("backend_url"),
            protocol=int(get("protocol", "3")),
            record_dir=get("record_dir"),
            visibility_timeout=float(get("visibility_timeout", "3600")),
            restore_interval=int(get("restore_interval", "10")),
            mutex_expire=int(get("mutex_expire", "300")),
        )

    def replace(self, **changes) -> "CelerySettings":
        """A copy with ``changes`` applied."""
        return CelerySettings(**{**asdict(self), **changes})


def _with_query(url: str, **params) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in params.items())


def celery_config(settings: CelerySettings) -> dict:
    """The Celery configuration for ``settings``."""
    transport_options = {
        # 10 priority lists per queue: BRPOP over Q, Q\x06\x161, ..., Q\x06\x169.
        "priority_steps": list(range(10)),
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": settings.restore_interval,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": settings.mutex_expire,
        # Fail instead of hanging when the server stops answering.
        "socket_connect_timeout": 5,
        "socket_timeout": 15,
    }
    conf = {
        "broker_url": settings.broker_url,
        "result_backend": settings.backend_url,
        "broker_transport_options": transport_options,
        "task_queue_max_priority": 9,
        # A worker that cannot talk to the broker at startup exits (and the
        # test reports its log) instead of retrying for minutes.
        "broker_connection_retry_on_startup": False,
        "broker_connection_timeout": 5,
        "broker_connection_max_retries": 3,
        "redis_socket_connect_timeout": 5,
        "redis_socket_timeout": 15,
        "result_expires": 3600,
        "task_acks_late": False,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": True,
        # Keep the worker's log readable; the test reports its tail on failure.
        "worker_log_format": "[%(asctime)s %(levelname)s %(processName)s] %(message)s",
        "worker_task_log_format": "[%(asctime)s %(levelname)s %(task_name)s %(task_id)s] %(message)s",
    }
    if settings.protocol == 2:
        conf["result_backend"] = _with_query(settings.backend_url, protocol=2)
        conf["broker_transport"] = RESP2_TRANSPORT
        transport_options["protocol"] = 2
    elif settings.protocol != 3:
        raise ValueError(f"protocol must be 2 or 3, not {settings.protocol!r}")
    conf.update(settings.extra)
    return conf


# -- execution records ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One task execution, as written by :func:`record_execution`."""

    label: str
    task_id: str
    hostname: str
    at: float


def _record_path(record_dir: str, token: str) -> Path:
    return Path(record_dir) / f"{token}.log"


def record_execution(record_dir: str, token: str, label, request) -> int:
    """Append one execution line for ``token``; return how many there are now.

    One ``write`` on an ``O_APPEND`` descriptor per line, so concurrent
    writers (threads, or the processes of several workers) never interleave.
    """
    line = f"{label}\t{request.id}\t{request.hostname}\t{time.time():.6f}\n".encode()
    path = _record_path(record_dir, token)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return len(read_records(record_dir, token))


def read_records(record_dir: str, token: str) -> list[Record]:
    """Every execution recorded for ``token``, in the order they were written."""
    try:
        text = _record_path(record_dir, token).read_text()
    except FileNotFoundError:
        return []
    out = []
    # The last piece is "" when every line is complete; otherwise it is a line another writer
    # is still writing (a read can see part of a concurrent write): not a record yet.
    for line in text.split("\n")[:-1]:
        label, task_id, hostname, at = line.split("\t")
        out.append(Record(label, task_id, hostname, float(at)))
    return out


# -- the app -------------------------------------------------------------------------------


def make_app(settings: CelerySettings, set_as_current: bool = True) -> Celery:
    """A Celery app for ``settings`` with the test's tasks registered.

    The tasks are also reachable as attributes of ``app.slotway`` (``add``,
    ``tsum``, ``fail``, ``stamp``, ``record``, ``late_once``).
    """
    app = Celery("slotway_celery_test", set_as_current=set_as_current)
    app.conf.update(celery_config(settings))
    record_dir = settings.record_dir

    class Tasks:
        pass

    tasks = Tasks()

    @app.task(name="slotway.add")
    def add(x, y):
        return x + y

    @app.task(name="slotway.tsum")
    def tsum(values):
        """Chord callback."""
        return sum(values)

    @app.task(name="slotway.fail")
    def fail(message):
        raise ValueError(message)

    @app.task(name="slotway.stamp")
    def stamp():
        """When the task ran (for countdown/ETA checks)."""
        return time.time()

    @app.task(name="slotway.record", bind=True)
    def record(self, token, label):
        """Record this execution under ``token`` and return ``label``."""
        record_execution(record_dir, token, label, self.request)
        return label

    @app.task(name="slotway.late_once", bind=True, acks_late=True)
    def late_once(self, token, label, hang=120.0):
        """acks_late: record, and on the first execution of ``token`` hang for ``hang`` s.

        The redelivery test SIGKILLs the worker while it hangs; the message
        stays unacked, is restored after the visibility timeout, and the
        second execution returns at once.
        """
        if record_execution(record_dir, token, label, self.request) == 1:
            time.sleep(hang)
        return label

    for task in (add, tsum, fail, stamp, record, late_once):
        setattr(tasks, task.name.split(".", 1)[1], task)
    app.slotway = tasks
    return app
