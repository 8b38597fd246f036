"""A long-running worker holds a bounded number of threads and outbox connections.

Every claim larger than one slice runs on two lanes. The lanes are long-lived helpers of
the claiming thread, and every thread's connection is the store's to give back, so after
a thousand claims the process holds exactly what it held after the first few: no thread
and no connection per claim (which, on PostgreSQL, ran into ``max_connections`` and made
the host's saves fail).

The claims are real ones (real worker, real EWS backend, both stores): the records are
already in the mailbox as they are (sync state with the same content hash), so each claim
plans, acknowledges and records its slices on both lanes without a request to Exchange.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from tsl_exchange_plugin.backends.base import MailboxAccount
from tsl_exchange_plugin.backends.ews.backend import EwsBackend
from tsl_exchange_plugin.mapping.items import content_hash
from tsl_exchange_plugin.outbox.base import Change, SyncEntry
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.snapshot import Snapshot, dump
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.worker.dispatch import make_mapper
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig
from tsl_hostapi.types import Contact

from .conftest import PG_URL

CLAIMS = 1000
MAILBOXES = ["anna", "bernd", "clara", "dora"]
JOBS = 4  # per claim: two slices of two, so both lanes work
# Connections a thread may hold: PostgreSQL gives a worker's bookkeeping its own (no WAL wait).
PER_THREAD = 2


def _changes_and_state(mapper) -> tuple[list[Change], list[SyncEntry]]:
    changes, entries = [], []
    for i in range(JOBS):
        snap = Snapshot(kind="contact", record=Contact(id=str(i), given_name="Eva", surname=f"Müller {i}"))
        (item,) = mapper(snap, "anna")
        for mailbox in MAILBOXES:
            changes.append(Change(mailbox, item.record_key, "upsert", dump(snap)))
            entries.append(
                SyncEntry(mailbox, item.record_key, f"id-{i}", "ck", content_hash(item), "contact")
            )
    return changes, entries


def _pg_connections(store: PostgresOutbox) -> int:
    with psycopg.connect(store._url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (f"tsl-exchange:{store.schema}",),
        ).fetchone()
    return int(row[0])


def _held(store) -> tuple[int, int, int | None]:
    """(live threads, connections the store lists, server-side connections on PostgreSQL)."""
    server = _pg_connections(store) if isinstance(store, PostgresOutbox) else None
    return threading.active_count(), len(store._conns), server


@pytest.fixture
def store(store_kind, tmp_path, request):
    if store_kind == "sqlite":
        box = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    else:
        # Commits need not wait for the disk here: what is counted is connections, not durability,
        # and a thousand claims' worth of flushes would cost the suite half a minute.
        url = PG_URL + ("&" if "?" in PG_URL else "?") + "options=-c%20synchronous_commit%3Doff"
        box = PostgresOutbox(url, schema=request.getfixturevalue("pg_schema"))
    yield box
    box.close()


@pytest.mark.timeout(300)
def test_threads_and_connections_stay_bounded_over_a_thousand_claims(store, sandbox):
    mapper = make_mapper()
    backend = EwsBackend(version=(15, 1, 2507, 6))

    def resolve(mailbox: str) -> MailboxAccount:
        email = f"{mailbox}@kanzlei.test"
        return MailboxAccount(mailbox, email, sandbox.url, email, "Geheim-123", auth_type="basic")

    config = WorkerConfig(threads=1, batch_size=2, lanes=2, slices_per_claim=2, lease_seconds=3600)
    worker = Worker(store, backend, resolve, mapper, config, worker_id="bounded")
    changes, entries = _changes_and_state(mapper)
    store.put_sync_many(entries)
    baseline = None
    try:
        for n in range(CLAIMS):
            if n % len(MAILBOXES) == 0:
                store.enqueue(changes)  # every mailbox has its four jobs again
            assert worker.run_once(), f"claim {n} found nothing"
            if n == 2 * len(MAILBOXES) - 1:
                baseline = threading.active_count()
            elif baseline is not None and n % 50 == 49:
                # Threads: exactly those of the first claims. Connections: at most one per thread
                # that claims or runs a lane (whether the lane helper got a slice is up to the
                # scheduler, so it may hold one or none).
                threads, listed, server = _held(store)
                assert threads == baseline, f"after {n + 1} claims"
                assert 1 <= listed <= PER_THREAD * config.lanes, f"after {n + 1} claims"
                assert server is None or 1 <= server <= PER_THREAD * config.lanes, f"after {n + 1} claims"
        assert store.pending_count() == 0
    finally:
        worker.stop()
    # Stopped: the lane helper and the lease keeper have ended and given their connections back;
    # what is left in use is this (claiming) thread's own (PostgreSQL's pool may keep those given
    # back open, idle, for the next thread that asks).
    assert not [t.name for t in threading.enumerate() if t.name.startswith("MainThread-lane")]
    threads, listed, server = _held(store)
    assert threads <= baseline - 2 and 1 <= listed <= PER_THREAD
    if server is not None:
        idle = store._pool.get_stats().get("pool_available", 0)
        assert 1 <= server - idle <= PER_THREAD and server <= PER_THREAD * config.lanes
