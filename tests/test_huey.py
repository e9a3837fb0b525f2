"""Huey through slotway: a real ``huey_consumer`` runs tasks sent through the proxy in front
of the 3+3 cluster, with no co-location rules: Huey sends single-key commands, single-key
transactions, one single-key script (the schedule), and SCAN plus MGET over result keys.

The Huey is a ``PriorityRedisExpireHuey``: its queue is a sorted set read with BZPOPMIN, and
results are keys with an expiry.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from huey.exceptions import TaskException

from huey_support import tasks
from support import process

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent
#: Longest wait for one result (seconds).
RESULT_TIMEOUT = 30


def start_consumer(endpoint, log_dir: Path):
    """``huey_consumer huey_support.tasks.huey`` with two worker threads on ``endpoint``."""
    exe = Path(sys.executable).with_name("huey_consumer")
    url = f"redis://{endpoint.host}:{endpoint.port}/0"
    env = dict(os.environ, SLOTWAY_HUEY_URL=url, PYTHONPATH=str(TESTS))
    return process.spawn(
        [str(exe), "huey_support.tasks.huey", "--workers", "2", "--delay", "0.05"],
        log_dir / "huey-consumer.log", cwd=TESTS, env=env,
    )


def test_huey_consumer_runs_tasks_schedules_and_locks(proxy, cluster, tmp_path):
    cluster.flushall()
    huey = tasks.make_huey(f"redis://{proxy.host}:{proxy.port}/0")
    mine = tasks.register(huey)
    consumer = start_consumer(proxy, tmp_path)
    try:
        results = [mine.add(i, i, priority=i % 3) for i in range(20)]
        assert [r.get(blocking=True, timeout=RESULT_TIMEOUT) for r in results] == [
            2 * i for i in range(20)
        ]
        later = mine.add.schedule((40, 2), delay=1)
        assert later.get(blocking=True, timeout=RESULT_TIMEOUT) == 42
        failing = mine.boom()
        with pytest.raises(TaskException, match="boom"):
            failing.get(blocking=True, timeout=RESULT_TIMEOUT)
        assert mine.locked().get(blocking=True, timeout=RESULT_TIMEOUT) == "ran"
        # While the test holds the lock, the task finds it taken.
        with huey.lock_task("slotway-lock"):
            with pytest.raises(TaskException, match="TaskLockedException"):
                mine.locked().get(blocking=True, timeout=RESULT_TIMEOUT)
        more = [mine.add(i, 1) for i in range(5)]
        assert [r.get(blocking=True, timeout=RESULT_TIMEOUT) for r in more] == [
            i + 1 for i in range(5)
        ]
        # Results stay stored until they expire (this storage does not delete what was
        # read): 20 + 1 scheduled + 1 failure + 2 locked + 5, found with SCAN over every
        # master and read with one MGET across slots.
        stored = huey.all_results()
        assert len(stored) == huey.result_count() == 29
        assert [huey.serializer.deserialize(stored[r.id]) for r in more] == [
            i + 1 for i in range(5)
        ]
        assert len(cluster.stored_keys(huey.storage.result_prefix.decode() + "*")) == 29
    finally:
        process.stop(consumer)
    log = (tmp_path / "huey-consumer.log").read_text()
    assert log.count("ValueError: boom") == 2, log[-3000:]  # the first run and one retry
    assert huey.pending_count() == 0 and huey.scheduled_count() == 0
    assert cluster.cluster_client().exists(huey.storage.queue_key) == 0
