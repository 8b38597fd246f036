"""Worker processes on a PostgreSQL queue: exactly once, one writer per mailbox, crash takeover, NOTIFY."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict

import psycopg
import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.testing import wait_for

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("TSL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SET_SYNC = f"{PLUGIN_ID}.set_sync"


def pg_query(query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def subscribe(k, contacts, users) -> None:
    result = k.host.press(k.admin, SET_SYNC, [c.ref for c in contacts], {"users": [u.id for u in users]})
    assert result.ok, result


def counts(k, user) -> Counter:
    return Counter((i.get("extended_properties") or {}).get("tslRecordId") for i in k.items(user))


def assert_exactly_once(k, contacts) -> None:
    for user in k.lawyers:
        found = counts(k, user)
        missing = [c.ref.key for c in contacts if found[c.ref.key] == 0]
        doubled = {key: n for key, n in found.items() if key and n > 1}
        assert not missing, f"{user.id}: {len(missing)} contacts missing, e.g. {missing[:3]}"
        assert not doubled, f"{user.id}: duplicates {doubled}"


def all_arrived(k, contacts) -> bool:
    keys = {c.ref.key for c in contacts}
    return all(keys <= {key for key, n in counts(k, u).items() if n} for u in k.lawyers)


def listeners(k) -> int:
    """Worker connections LISTENing on the queue's channel (one per worker process)."""
    channel = f"{k.runtime.outbox.schema}_work"
    return len(pg_query("SELECT 1 FROM pg_stat_activity WHERE query = %s", (f'LISTEN "{channel}"',)))


class RequestTimeline:
    """Records, per mailbox, when each EWS request to the sandbox started and ended.

    Observes only: it wraps the sandbox's fault lookup (called first for every
    authenticated request, before a ``delay`` fault sleeps) and the engine's handler
    (the request's end), in the test process where the sandbox runs."""

    def __init__(self, server) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.in_flight = 0
        self.max_in_flight = 0
        take, handle = server.faults.take, server.engine.handle

        def timed_take(mailbox, operation, layer):
            if layer == "transport":
                self.local.start = time.monotonic()
                with self.lock:
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return take(mailbox, operation, layer)

        def timed_handle(mailbox, body):
            try:
                return handle(mailbox, body)
            finally:
                start = getattr(self.local, "start", None)
                self.local.start = None
                if start is not None:
                    with self.lock:
                        self.in_flight -= 1
                        self.spans[(mailbox or "").lower()].append((start, time.monotonic()))

        server.faults.take = timed_take
        server.engine.handle = timed_handle

    def overlaps(self) -> dict[str, int]:
        """Per mailbox: how many requests began before the previous one had ended."""
        out = {}
        with self.lock:
            for mailbox, spans in self.spans.items():
                ordered = sorted(spans)
                out[mailbox] = sum(1 for a, b in zip(ordered, ordered[1:], strict=False) if b[0] < a[1])
        return out


def test_two_worker_processes_push_300_items_exactly_once_one_writer_per_mailbox(pg_kanzlei, workers):
    k = pg_kanzlei
    assert k.runtime.config.worker_mode() == "external"
    assert not k.runtime.worker.running  # the host only enqueues
    timeline = RequestTimeline(k.server)
    # Every request takes at least 50 ms: two writers on one mailbox could not slip
    # between each other's requests unnoticed.
    k.server.inject("delay", seconds=0.05, count=None)
    # One thread each: two requests in flight at once can only come from two processes.
    first, second = workers.start(threads=1), workers.start(threads=1)
    wait_for(lambda: listeners(k) == 2, timeout=30, what="both workers to listen")
    subscribe(k, k.contacts, k.lawyers)  # one NOTIFY wakes both
    wait_for(lambda: k.runtime.outbox.pending_count() == 0, timeout=60, what="the queue to drain")
    wait_for(lambda: all_arrived(k, k.contacts), timeout=10, what="all items")
    assert timeline.overlaps() == {m: 0 for m in timeline.spans}, "a mailbox was written by two at once"
    assert_exactly_once(k, k.contacts)
    assert k.runtime.outbox.jobs(status="failed") == []
    assert timeline.max_in_flight >= 2, "the two worker processes never worked side by side"
    assert set(timeline.spans) >= {k.mailbox_of[u.id] for u in k.lawyers}
    for proc in (first, second):
        assert proc.poll() is None, workers.output(proc)


def test_killed_worker_process_loses_and_duplicates_nothing(pg_kanzlei, workers):
    k = pg_kanzlei
    alice = k.lawyers[0]
    schema = k.runtime.outbox.schema
    alice_box = k.mailbox_of[alice.id]
    # Alice's first batch is written and then never answered: its worker hangs mid-batch.
    k.server.inject("commit_then_hang", operation="CreateItem", seconds=60, mailbox=alice_box)
    subscribe(k, k.contacts, k.lawyers)
    workers.start(threads=2, lease=2)
    workers.start(threads=2, lease=2)
    wait_for(lambda: len(k.ours_any(alice)) >= 1, timeout=30, what="alice's first batch to land")

    def alice_holder() -> str | None:
        rows = pg_query(f'SELECT worker_id FROM "{schema}".leases WHERE mailbox = %s', (alice.id,))
        return rows[0][0] if rows else None

    holder = alice_holder()
    assert holder is not None  # the hanging worker keeps its lease alive while it lives
    pid = int(holder.split(":")[1])
    hung = next(p for p in workers.procs if p.pid == pid)
    survivor = next(p for p in workers.procs if p.pid != pid)
    # The lease keeper renews while the batch hangs: after 1.5 lease times the
    # mailbox still belongs to the hanging worker, and nothing was acknowledged.
    # Deliberate wait (not for luck): 1.5 lease times, after which an unrenewed lease is gone.
    time.sleep(3)
    assert alice_holder() == holder
    assert k.runtime.outbox.pending_count(alice.id) == 100
    killed_at = time.monotonic()
    workers.kill(hung)
    k.server.faults.clear()
    wait_for(lambda: k.runtime.outbox.pending_count() == 0, timeout=60, what="the survivor to finish")
    takeover = time.monotonic() - killed_at
    wait_for(lambda: all_arrived(k, k.contacts), timeout=10, what="all items")
    assert_exactly_once(k, k.contacts)
    assert k.runtime.outbox.jobs(status="failed") == []
    assert survivor.poll() is None, workers.output(survivor)
    print(f"takeover after SIGKILL: queue empty {takeover:.2f}s later")


def test_notify_wakes_an_idle_worker_process_at_once(pg_kanzlei, workers):
    k = pg_kanzlei
    alice = k.lawyers[0]
    workers.start(threads=2, idle_wait=10.0)
    # The worker's watcher LISTENs from inside wait_for_work; once that connection
    # exists the process is up and idle (the queue is empty), waiting up to 10 s.
    wait_for(lambda: listeners(k) == 1, timeout=30, what="the worker to listen")
    assert k.runtime.outbox.pending_count() == 0
    latencies = []
    for contact in k.contacts[:3]:
        started = time.monotonic()
        subscribe(k, [contact], [alice])
        wait_for(lambda c=contact: k.ours(alice, c.ref.key), timeout=12, what=f"{contact.ref.key}")
        latencies.append(time.monotonic() - started)
    print("NOTIFY wake-up latencies (enqueue -> item in mailbox):", [f"{x:.3f}s" for x in latencies])
    assert max(latencies) < 1.5, latencies
