"""Dramatiq through slotway: a real ``dramatiq`` worker consumes messages sent through the
proxy in front of the 3+3 cluster: results, a delayed message, a failing message that is
dead-lettered, and a window rate limiter.

Dramatiq's broker runs every operation as one Lua script that receives only the namespace
(``dramatiq``) as a key and builds the other names from it (``dramatiq:default.msgs``, ...).
On a cluster that script touches keys of other slots and the node refuses it; with
``--preset dramatiq`` the namespace is stored as ``{dramatiq}dramatiq`` and every name the
script builds lands in that one slot.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend as LimiterBackend
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from dramatiq_support import actors
from support import process

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent
#: Longest wait for one result (milliseconds, as Dramatiq counts).
RESULT_TIMEOUT_MS = 30_000


def url_of(endpoint) -> str:
    return f"redis://{endpoint.host}:{endpoint.port}/0"


def start_worker(endpoint, log_dir: Path):
    """``dramatiq dramatiq_support.actors:broker`` (one process, two threads) on ``endpoint``."""
    exe = Path(sys.executable).with_name("dramatiq")
    env = dict(os.environ, SLOTWAY_DRAMATIQ_URL=url_of(endpoint), PYTHONPATH=str(TESTS))
    return process.spawn(
        [str(exe), "dramatiq_support.actors:broker", "--processes", "1", "--threads", "2",
         "--path", str(TESTS)],
        log_dir / "dramatiq-worker.log", cwd=TESTS, env=env,
    )


def acquired(limiter: WindowRateLimiter) -> bool:
    with limiter.acquire(raise_on_failure=False) as ok:
        return ok


def test_dramatiq_worker_with_the_preset(proxy_factory, cluster, tmp_path):
    cluster.flushall()
    proxy = proxy_factory("--preset", "dramatiq")
    broker = actors.make_broker(url_of(proxy))
    mine = actors.declare(broker)
    backend = broker.get_results_backend()
    worker = start_worker(proxy, tmp_path)
    try:
        sent = [mine.add.send(i, i) for i in range(20)]
        later = mine.add.send_with_options(args=(40, 2), delay=300)
        failed = mine.boom.send()
        results = [backend.get_result(m, block=True, timeout=RESULT_TIMEOUT_MS) for m in sent]
        assert results == [2 * i for i in range(20)]
        assert backend.get_result(later, block=True, timeout=RESULT_TIMEOUT_MS) == 42
        client = proxy.client()
        # The failing message (no retries) is dead-lettered: moved to the queue's XQ set.
        process.wait_until(lambda: client.zcard("dramatiq:default.XQ") == 1, timeout=20,
                           what="the failed message in dramatiq:default.XQ")
        assert client.hexists("dramatiq:default.XQ.msgs", failed.options["redis_message_id"])
    finally:
        process.stop(worker)
    log = (tmp_path / "dramatiq-worker.log").read_text()
    assert "ValueError: boom" in log, log[-3000:]
    assert "non local key" not in log and "CROSSSLOT" not in log, log[-3000:]
    assert client.llen("dramatiq:default") == 0
    # On the cluster itself every broker key is stored in the slot of "dramatiq".
    stored = cluster.stored_keys("{dramatiq}dramatiq:*")
    assert "{dramatiq}dramatiq:default.XQ" in stored
    assert "{dramatiq}dramatiq:__heartbeats__" in stored

    # A window limiter watches one key per second of its window, a transaction over them
    # all: with names under the preset's prefix they share a slot.
    limiter = WindowRateLimiter(LimiterBackend(url=url_of(proxy)), "dramatiq-window",
                                limit=2, window=60)
    assert [acquired(limiter) for _ in range(3)] == [True, True, False]


def test_dramatiq_without_the_preset_is_refused_and_writes_nothing(proxy, cluster):
    cluster.flushall()
    broker = RedisBroker(url=url_of(proxy))
    broker.add_middleware(Results(backend=RedisBackend(url=url_of(proxy))))
    noop = dramatiq.actor(actors.add, broker=broker, actor_name="noop")
    # The node refuses the script: it builds names of other slots from its one key.
    with pytest.raises(redis.ResponseError, match="non local key|same slot"):
        noop.send(1, 2)
    limiter = WindowRateLimiter(LimiterBackend(url=url_of(proxy)), "window", limit=2,
                                window=60)
    with pytest.raises(redis.ResponseError, match="WATCH keys must all hash to one slot"):
        acquired(limiter)
    assert cluster.stored_keys() == []
