"""pytest hooks for test_celery.py (loaded through its ``pytest_plugins``).

* A failed test's report gets the log tail of every running Celery worker
  (the proxy logs are added by ``conftest.py``).
* The tasks/s lines measured by the bulk test (:mod:`celery_support.report`)
  are repeated in the terminal summary, so they show without ``-s``.
"""

from __future__ import annotations

import pytest

from .report import RESULTS_FILE, THROUGHPUT
from .worker import RUNNING_WORKERS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of every running worker's log to a failed test's report."""
    report = yield
    if report.when == "call" and report.failed:
        for worker in RUNNING_WORKERS:
            report.sections.append(
                (f"celery worker {worker.hostname} ({worker.log_path})", worker.tail(40))
            )
    return report


def pytest_terminal_summary(terminalreporter):
    """Repeat the throughput measurements at the end of the run."""
    if THROUGHPUT:
        terminalreporter.section("Celery throughput")
        for line in THROUGHPUT:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(also appended to {RESULTS_FILE})")
