"""The lease keeper marks a claim lost when its lease is gone or cannot be renewed in time,
so the claim's lanes stop before another worker may take the mailbox."""

from __future__ import annotations

import json
import time

from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.testing import wait_for
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig, _Held

LEASE = 0.6  # the keeper looks every lease/6 and renews after lease/3


def _holding(store, worker: Worker) -> _Held:
    store.enqueue([Change("anna", "contact:1", "upsert", json.dumps({"n": 1}))])
    claim = store.claim(worker.worker_id, lease_seconds=LEASE)
    held = _Held(claim, time.monotonic())
    with worker._lock:
        worker._held[claim.mailbox] = held
    worker._ensure_keeper()
    return held


def _worker(store) -> Worker:
    config = WorkerConfig(threads=1, lease_seconds=LEASE)
    return Worker(store, backend=None, resolve=lambda m: None, mapper=lambda s, m: [], config=config)


def test_a_lease_taken_over_is_marked_lost(tmp_path):
    store = SQLiteOutbox(tmp_path / "q.sqlite3")
    worker = _worker(store)
    try:
        held = _holding(store, worker)
        first = held.claim.lease_until
        wait_for(lambda: held.claim.lease_until > first, 10, "a renewal")
        assert not held.lost.is_set()
        # Another worker takes the mailbox (its clock past our lease).
        assert store.claim("other", now=time.time() + 60) is not None
        wait_for(held.lost.is_set, 10, "the keeper to mark the lease lost")
        assert "anna" not in worker._held
    finally:
        worker.stop(5)
        store.close()


def test_a_lease_that_cannot_be_renewed_is_given_up_before_it_runs_out(tmp_path):
    store = SQLiteOutbox(tmp_path / "q.sqlite3")
    worker = _worker(store)
    try:
        held = _holding(store, worker)
        store.close()  # every renewal fails from now on (not a LeaseLost: the store is gone)
        wait_for(held.lost.is_set, 10, "the keeper to give the lease up")
        assert "anna" not in worker._held
    finally:
        worker.stop(5)
