"""Throughput lines measured by test_celery.py.

:func:`report_throughput` prints a line, appends it (time-stamped) to
``tests/.results/celery-throughput.txt`` and keeps it in :data:`THROUGHPUT`
for the terminal summary written by :mod:`celery_support.plugin`.
"""

from __future__ import annotations

import time
from pathlib import Path

RESULTS_FILE = Path(__file__).resolve().parents[1] / ".results" / "celery-throughput.txt"

#: Lines reported during this session.
THROUGHPUT: list[str] = []


def report_throughput(line: str) -> None:
    """Print ``line``, keep it for the terminal summary and append it to :data:`RESULTS_FILE`."""
    stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {line}"
    print(stamped)
    THROUGHPUT.append(line)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_FILE, "a") as out:
        out.write(stamped + "\n")
