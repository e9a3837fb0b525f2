"""RQ (python-rq) through slotway: a real ``rq worker`` in burst mode runs jobs of three
queues, a job that depends on another, and a failing job with retries, all through the proxy
in front of the 3+3 cluster.

RQ's ``depends_on`` watches the dependency's key and the new job's dependency set (two keys
of different slots) before a transaction; one node's WATCH cannot span cluster nodes, so
slotway refuses it unless a co-location rule puts RQ's keys in one slot (README, "Refused").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from rq_support import jobs

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent
#: Every RQ key (`rq:job:<id>`, `rq:queue:<name>`, registries) in the slot of "rq".
RQ_COLOCATION = 'colocate:\n  - prefix: "rq:"\n    tag: "rq"\n'


def run_worker(endpoint, *queues: str) -> str:
    """Runs ``rq worker --burst`` until the queues are empty; returns its output."""
    rq = Path(sys.executable).with_name("rq")
    done = subprocess.run(
        [str(rq), "worker", "--burst", "--url", f"redis://{endpoint.host}:{endpoint.port}",
         "--path", str(TESTS), *queues],
        capture_output=True, text=True, timeout=90,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def connect(endpoint) -> redis.Redis:
    return endpoint.client(decode_responses=False)


def test_rq_worker_runs_jobs_dependencies_and_retries(proxy_factory, cluster, tmp_path):
    cluster.flushall()
    config = tmp_path / "rq.yaml"
    config.write_text(RQ_COLOCATION)
    proxy = proxy_factory("--config", str(config))
    conn = connect(proxy)
    queues = [Queue(name, connection=conn) for name in ("high", "default", "low")]
    added = [queues[i % 3].enqueue(jobs.add, i, 1) for i in range(30)]
    parent = queues[0].enqueue(jobs.add, 100, 1)
    child = queues[2].enqueue(jobs.add, 5, 5, depends_on=parent)
    failing = queues[1].enqueue(jobs.boom, retry=Retry(max=2))
    assert child.get_status() == JobStatus.DEFERRED

    output = run_worker(proxy, "high", "default", "low")

    assert [j.return_value(refresh=True) for j in added] == [i + 1 for i in range(30)]
    assert parent.return_value(refresh=True) == 101
    assert child.get_status(refresh=True) == JobStatus.FINISHED
    assert child.return_value(refresh=True) == 10
    assert Job.fetch(failing.id, connection=conn).get_status() == JobStatus.FAILED
    assert failing.id in FailedJobRegistry(queue=queues[1]).get_job_ids()
    assert output.count("ValueError: boom") == 3, output  # the first run and two retries
    assert all(q.count == 0 for q in queues)
    # Stored in one slot, as the rule says, on the cluster itself.
    stored = cluster.stored_keys("{rq}rq:job:*")
    assert len(stored) >= len(added) + 3


def test_rq_dependencies_without_colocation_are_refused_whole(proxy, cluster):
    cluster.flushall()
    conn = connect(proxy)
    queue = Queue("default", connection=conn)
    parent = queue.enqueue(jobs.add, 1, 1)
    with pytest.raises(redis.ResponseError, match="WATCH keys must all hash to one slot"):
        queue.enqueue(jobs.add, 2, 2, depends_on=parent)
    # Nothing of the refused job was written: the parent is the only job.
    assert queue.job_ids == [parent.id]
    assert [k for k in conn.keys("rq:job:*") if not k.endswith(parent.id.encode())] == []
