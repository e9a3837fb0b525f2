"""Actors for the Dramatiq acceptance test (``tests/test_dramatiq.py``).

The worker runs ``dramatiq dramatiq_support.actors:broker`` with ``SLOTWAY_DRAMATIQ_URL`` set;
the test declares the same actors on a broker of its own with :func:`declare`.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend


def make_broker(url: str) -> RedisBroker:
    """A Redis broker at ``url`` that stores results on the same server."""
    broker = RedisBroker(url=url)
    broker.add_middleware(Results(backend=RedisBackend(url=url)))
    return broker


def add(x: int, y: int) -> int:
    return x + y


def boom() -> None:
    raise ValueError("boom")


def declare(broker: RedisBroker) -> SimpleNamespace:
    """The test's actors, declared on ``broker``."""
    return SimpleNamespace(
        add=dramatiq.actor(add, broker=broker, store_results=True, max_retries=0),
        boom=dramatiq.actor(boom, broker=broker, max_retries=0),
    )


_url = os.environ.get("SLOTWAY_DRAMATIQ_URL")
#: The worker's broker (``dramatiq dramatiq_support.actors:broker``).
broker = make_broker(_url) if _url else None
if broker is not None:
    declare(broker)
