"""Idle workers wake at once on new work; the firm's worker mode decides where pushing runs."""

from __future__ import annotations

import time

import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.core.firm import FIRM_KEY
from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.plugin import runtime_for
from tsl_exchange_plugin.testing import wait_for
from tsl_exchange_plugin.worker.dispatch import make_mapper
from tsl_exchange_plugin.worker.runner import IDLE_WAIT_ENV, Worker, WorkerConfig

SET_SYNC = f"{PLUGIN_ID}.set_sync"
IDLE = 120.0  # an idle thread's own timeout; every bound below is far under it
# A wake-up through the store arrives at once; polling would take IDLE. The bound sits far
# between the two, so a loaded machine cannot fail the test and polling cannot pass it.
BOUND = IDLE / 4


def push_latency(k, contact, user) -> float:
    """Subscribe one contact for one user; seconds until its item is in the mailbox."""
    started = time.monotonic()
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [user.id]}).ok
    wait_for(lambda: k.ours(user, contact.ref.key), timeout=IDLE + 5, what=contact.ref.key)
    return time.monotonic() - started


def own_worker(k, store) -> Worker:
    """A worker on its own store handle: it can learn of new work only through the store."""
    rt = k.runtime
    return Worker(
        store,
        rt.backend,
        rt.config.resolve_account,
        make_mapper(rt.config.mapping_context),
        WorkerConfig(idle_wait=IDLE),
    )


def test_sqlite_in_host_worker_wakes_at_once_on_enqueue(monkeypatch, request):
    monkeypatch.setenv(IDLE_WAIT_ENV, str(IDLE))
    k = request.getfixturevalue("kanzlei")  # built after the variable is set
    assert isinstance(k.runtime.outbox, SQLiteOutbox)
    assert k.runtime.worker.config.idle_wait == IDLE
    assert k.runtime.worker.running
    latencies = [push_latency(k, c, k.lawyers[0]) for c in k.firm.contacts[:3]]
    print("SQLite in-host wake-up latencies:", [f"{x:.3f}s" for x in latencies])
    assert max(latencies) < BOUND, latencies


def test_sqlite_worker_wakes_through_the_store_alone_and_stops_promptly(kanzlei):
    k = kanzlei
    k.runtime.worker.stop()  # the host's worker would be woken by wake(); this test has none
    store = SQLiteOutbox(k.runtime.outbox.path)
    worker = own_worker(k, store).start()
    try:
        wait_for(lambda: worker._idle_threads == worker.config.threads, what="all threads idle")
        latency = push_latency(k, k.firm.contacts[0], k.lawyers[1])
        assert latency < BOUND, latency
    finally:
        began = time.monotonic()
        worker.stop()
        stopped_in = time.monotonic() - began
        store.close()
    assert stopped_in < BOUND, f"stop() took {stopped_in:.2f}s while idle"


@pytest.mark.postgres
def test_postgres_notify_from_another_connection_wakes_a_worker(pg_kanzlei, pg_queue_url):
    k = pg_kanzlei
    assert not k.runtime.worker.running  # external mode: the host only enqueues
    store = PostgresOutbox(pg_queue_url)  # the schema comes from the URL
    assert store.schema == k.runtime.outbox.schema
    worker = own_worker(k, store).start()
    try:
        wait_for(lambda: worker._idle_threads == worker.config.threads, what="all threads idle")
        latencies = [push_latency(k, c, k.lawyers[2]) for c in k.contacts[:3]]
        print("PostgreSQL in-process NOTIFY latencies:", [f"{x:.3f}s" for x in latencies])
        assert max(latencies) < BOUND, latencies
    finally:
        began = time.monotonic()
        worker.stop()
        stopped_in = time.monotonic() - began
        store.close()
    assert stopped_in < BOUND, f"stop() took {stopped_in:.2f}s while idle"


def test_worker_mode_defaults_to_host_and_a_bad_value_falls_back(kanzlei):
    k = kanzlei
    assert k.runtime.config.worker_mode() == "host" and k.runtime.worker.running
    firm = k.host.settings.get(PLUGIN_ID, FIRM_KEY, {}) or {}
    k.host.settings.set(PLUGIN_ID, FIRM_KEY, {**firm, "worker": "extern"})  # a typo
    k.host.disable(PLUGIN_ID)
    assert k.host.enable(PLUGIN_ID).allowed
    runtime = runtime_for(k.host)
    assert runtime.config.worker_mode() == "host" and runtime.worker.running
    k.host.settings.set(PLUGIN_ID, FIRM_KEY, {**firm, "worker": "external"})
    k.host.disable(PLUGIN_ID)
    assert k.host.enable(PLUGIN_ID).allowed
    runtime = runtime_for(k.host)
    assert runtime.config.worker_mode() == "external" and not runtime.worker.running
    # The host still enqueues; a worker (here: one run in this thread) pushes it.
    assert k.host.press(k.admin, SET_SYNC, [k.firm.contacts[0].ref], {"users": [k.lawyers[0].id]}).ok
    assert runtime.outbox.pending_count(k.lawyers[0].id) == 1
    assert runtime.worker.drain(timeout=30)
    assert len(k.ours(k.lawyers[0], k.firm.contacts[0].ref.key)) == 1


@pytest.mark.parametrize(("raw", "expected"), [("", 2.0), ("7.5", 7.5), ("zehn", 2.0), ("-1", 2.0)])
def test_idle_wait_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv(IDLE_WAIT_ENV, raw)
    assert WorkerConfig().idle_wait == expected


def _tries_in_one_second(worker: Worker) -> int:
    wait_for(lambda: worker._idle_threads == worker.config.threads, what="all threads idle")
    before = worker._tries
    time.sleep(1.0)  # deliberate: a measuring window, not a wait for an event
    return worker._tries - before


def test_held_gate_does_not_spin_on_due_work(tmp_path):
    store = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    store.enqueue([Change("anna", "contact:1", "upsert", "{}")])
    # The gate holds everything, yet the job is due: the store's hint stays true.
    worker = Worker(store, None, None, None, WorkerConfig(threads=2, idle_wait=IDLE), gate=lambda: "gesperrt")
    worker.start()
    try:
        assert _tries_in_one_second(worker) <= 2
        assert worker.held_reason == "gesperrt"
        assert store.pending_count() == 1
    finally:
        worker.stop()
        store.close()


def test_mailbox_leased_elsewhere_does_not_make_an_idle_worker_spin(tmp_path):
    store = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    store.enqueue([Change("anna", "contact:1", "upsert", "{}")])
    assert store.claim("other-process", lease_seconds=30) is not None
    worker = Worker(store, None, None, None, WorkerConfig(threads=2, idle_wait=IDLE)).start()
    try:
        assert _tries_in_one_second(worker) <= 2
    finally:
        worker.stop()
        store.close()
