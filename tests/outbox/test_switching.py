"""While a worker runs, the interpreter hands the CPU between threads every millisecond, so the
host's threads are not starved by the lanes; afterwards the interval is what it was."""

from __future__ import annotations

import sys

import pytest

from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.worker import switching
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig


@pytest.fixture
def interval():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def _worker(tmp_path, name: str) -> Worker:
    store = SQLiteOutbox(tmp_path / f"{name}.sqlite3")
    return Worker(
        store, backend=None, resolve=lambda m: None, mapper=lambda s, m: [], config=WorkerConfig(threads=1)
    )


def test_the_interval_is_short_while_any_worker_runs_and_restored_after_the_last(tmp_path, interval):
    first, second = _worker(tmp_path, "a"), _worker(tmp_path, "b")
    try:
        first.start()
        assert sys.getswitchinterval() == pytest.approx(switching.INTERVAL)
        second.start()
        first.stop(5)
        assert sys.getswitchinterval() == pytest.approx(switching.INTERVAL)  # the other still runs
        first.stop(5)  # a second stop changes nothing
        assert sys.getswitchinterval() == pytest.approx(switching.INTERVAL)
    finally:
        first.stop(5)
        second.stop(5)
        first.outbox.close()
        second.outbox.close()
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_shorter_interval_or_one_changed_meanwhile_is_left_alone(tmp_path, interval):
    worker = _worker(tmp_path, "a")
    sys.setswitchinterval(0.0005)
    worker.start()
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    worker.stop(5)
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    sys.setswitchinterval(0.005)
    worker.start()
    sys.setswitchinterval(0.002)  # someone else's choice while the worker runs
    worker.stop(5)
    worker.outbox.close()
    assert sys.getswitchinterval() == pytest.approx(0.002)
