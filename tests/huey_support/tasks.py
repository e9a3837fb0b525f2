"""Tasks for the Huey acceptance test (``tests/test_huey.py``).

The consumer runs ``huey_consumer huey_support.tasks.huey`` with ``SLOTWAY_HUEY_URL`` set; the
test registers the same tasks on a Huey of its own with :func:`register`.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from huey import PriorityRedisExpireHuey

#: The queue's name (Huey's keys are ``huey.redis.<name>``, ``huey.r.<name>.<task id>``, ...,
#: with the name's punctuation removed).
NAME = "slotway-test"


def make_huey(url: str) -> PriorityRedisExpireHuey:
    """A Huey at ``url``: a priority queue (sorted set, BZPOPMIN) and results as keys with
    an expiry."""
    return PriorityRedisExpireHuey(NAME, url=url, blocking=True, read_timeout=1)


def add(x: int, y: int) -> int:
    return x + y


def boom() -> None:
    raise ValueError("boom")


def register(huey: PriorityRedisExpireHuey) -> SimpleNamespace:
    """The test's tasks, registered on ``huey``."""
    return SimpleNamespace(
        add=huey.task()(add),
        boom=huey.task(retries=1)(boom),
        locked=huey.task()(locked),
    )


def locked() -> str:
    """Runs under Huey's task lock ``slotway-lock`` (in the consumer)."""
    with huey.lock_task("slotway-lock"):
        return "ran"


_url = os.environ.get("SLOTWAY_HUEY_URL")
#: The consumer's Huey (``huey_consumer huey_support.tasks.huey``).
huey = make_huey(_url) if _url else None
if huey is not None:
    register(huey)
