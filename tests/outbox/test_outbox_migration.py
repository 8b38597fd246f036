"""Queues written by schema 1 are migrated in place; a SQLite queue gives its space back
after a drain; the sync state moves into its own file (schema 3)."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import psycopg
import pytest
from psycopg import sql

from tsl_exchange_plugin.outbox.base import Change, SyncEntry
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.rows import payload_hash
from tsl_exchange_plugin.outbox.sqlite import WAL_LIMIT, SQLiteOutbox

# Schema 1 as the previous release created it (only what the migration reads).
V1_JOBS = """CREATE TABLE jobs (
    id {id},
    mailbox text NOT NULL,
    record_key text NOT NULL,
    op text NOT NULL CHECK (op IN ('upsert', 'delete')),
    payload text NOT NULL DEFAULT '',
    version integer NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    status text NOT NULL CHECK (status IN ('pending', 'failed')),
    last_error text NOT NULL DEFAULT '',
    due_at {real} NOT NULL,
    enqueued_at {real} NOT NULL,
    claims integer NOT NULL DEFAULT 0,
    UNIQUE (mailbox, record_key)
)"""
V1_REST = [
    "CREATE INDEX jobs_status_due ON jobs (status, due_at)",
    "CREATE TABLE leases (mailbox text PRIMARY KEY, worker_id text NOT NULL, lease_until {real} NOT NULL)",
    """CREATE TABLE sync_state (mailbox text NOT NULL, record_key text NOT NULL, item_id text NOT NULL,
        change_key text NOT NULL, content_hash text NOT NULL, item_class text NOT NULL DEFAULT '',
        updated_at {real} NOT NULL, PRIMARY KEY (mailbox, record_key))""",
    """CREATE TABLE mailboxes (mailbox text PRIMARY KEY, parked {bool} NOT NULL DEFAULT {false},
        parked_reason text NOT NULL DEFAULT '', last_success_at {real}, last_error text NOT NULL DEFAULT '',
        last_error_at {real})""",
]
SNAPSHOT = json.dumps({"kind": "contact", "name": "Müller"})


def _v1_rows(execute) -> None:
    for n, mailbox in enumerate(["anna", "bernd", "carla"], start=1):
        execute(
            "INSERT INTO jobs (mailbox, record_key, op, payload, version, status, due_at, enqueued_at) "
            "VALUES (%s, 'contact:1', 'upsert', %s, %s, 'pending', 1.0, 1.0)",
            (mailbox, SNAPSHOT, n),
        )
    execute(
        "INSERT INTO jobs (mailbox, record_key, op, payload, version, status, due_at, enqueued_at) "
        "VALUES ('anna', 'contact:2', 'delete', '', 1, 'pending', 1.0, 1.0)",
        (),
    )
    execute("INSERT INTO leases VALUES ('bernd', 'old-worker', 1.0)", ())
    execute("INSERT INTO sync_state VALUES ('anna', 'contact:2', 'AAMk', 'CK', 'h', 'contact', 1.0)", ())
    execute("INSERT INTO mailboxes (mailbox) VALUES ('anna'), ('bernd'), ('carla')", ())


def _check_migrated(store) -> None:
    jobs = store.jobs()
    assert sorted((j.mailbox, j.record_key, j.op) for j in jobs) == [
        ("anna", "contact:1", "upsert"),
        ("anna", "contact:2", "delete"),
        ("bernd", "contact:1", "upsert"),
        ("carla", "contact:1", "upsert"),
    ]
    assert all(j.payload == SNAPSHOT for j in jobs if j.op == "upsert")
    assert all((j.source_version, j.priority, j.verify) == (0, 0, False) for j in jobs)
    assert store.get_sync("anna", ["contact:2"])["contact:2"].source_version == 0
    # New work, claims with tokens and fenced acks run on the migrated tables.
    store.enqueue([Change("dora", "contact:1", "upsert", SNAPSHOT, 5, 1)])
    claimed = []
    while (claim := store.claim("w1", limit=10)) is not None:
        assert claim.token >= 1
        claimed.append(claim.mailbox)
        store.complete_many(list(claim.jobs), fence=claim)
        store.release(claim)
    assert sorted(claimed) == ["anna", "bernd", "carla", "dora"]
    assert store.jobs() == []


def test_sqlite_schema_1_is_migrated_in_place(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    fmt = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "bool": "INTEGER", "false": "0"}
    conn.execute(V1_JOBS.format(**fmt))
    for statement in V1_REST:
        conn.execute(statement.format(**fmt))
    _v1_rows(lambda q, p: conn.execute(q.replace("%s", "?"), p))
    # A job created and acked earlier: its id must never come back.
    conn.execute(
        "INSERT INTO jobs (id, mailbox, record_key, op, version, status, due_at, enqueued_at) "
        "VALUES (1000, 'x', 'contact:9', 'delete', 1, 'pending', 1, 1)"
    )
    conn.execute("DELETE FROM jobs WHERE id = 1000")
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    store = SQLiteOutbox(path)
    try:
        raw = store._conn()
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
        assert raw.execute("SELECT count(*) FROM payloads").fetchone()[0] == 1
        assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # the one VACUUM of a small file
        _check_migrated(store)
        store.enqueue([Change("eva", "contact:1", "delete")])
        assert store.jobs("eva")[0].id > 1000
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_schema_1_is_migrated_in_place(pg_url, pg_schema):
    fmt = {"id": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "real": "double precision"}
    fmt |= {"bool": "boolean", "false": "false"}
    ident = sql.Identifier(pg_schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        conn.execute(sql.SQL("SET search_path TO {}").format(ident))
        conn.execute(V1_JOBS.format(**fmt))
        for statement in V1_REST:
            conn.execute(statement.format(**fmt))
        _v1_rows(conn.execute)
        conn.execute("CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")

    store = PostgresOutbox(pg_url, schema=pg_schema)
    try:
        raw = store._conn()
        version = raw.execute(sql.SQL("SELECT value FROM {}.meta").format(ident)).fetchone()[0]
        assert version == "2"
        assert raw.execute(sql.SQL("SELECT count(*) FROM {}.payloads").format(ident)).fetchone()[0] == 1
        _check_migrated(store)
    finally:
        store.close()


def test_sqlite_gives_space_back_after_a_drain(tmp_path):
    store = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    try:
        raw = store._conn()
        assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL on a new file
        big = "x" * 4000
        store.enqueue(
            [Change(f"user{i % 10}", f"contact:{i}", "upsert", json.dumps([i, big])) for i in range(1500)]
        )
        full = raw.execute("PRAGMA page_count").fetchone()[0]
        while (claim := store.claim("w1", limit=500)) is not None:
            store.complete_many(list(claim.jobs), fence=claim)
            store.release(claim)
        assert store.jobs() == []
        drained = raw.execute("PRAGMA page_count").fetchone()[0]
        assert raw.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert drained < full / 10, (full, drained)
    finally:
        store.close()


# Schema 2 as the previous release created it: snapshots by hash, the sync state and the
# tombstones in the queue file.
V2_SCHEMA = [
    "PRAGMA auto_vacuum = INCREMENTAL",
    """CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL,
        record_key TEXT NOT NULL, op TEXT NOT NULL CHECK (op IN ('upsert', 'delete', 'verify')),
        payload_hash TEXT NOT NULL DEFAULT '', version INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL CHECK (status IN ('pending', 'failed')), last_error TEXT NOT NULL DEFAULT '',
        due_at REAL NOT NULL, enqueued_at REAL NOT NULL, claims INTEGER NOT NULL DEFAULT 0,
        source_version INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL DEFAULT 0,
        verify INTEGER NOT NULL DEFAULT 0, UNIQUE (mailbox, record_key))""",
    "CREATE TABLE payloads (hash TEXT PRIMARY KEY, body TEXT NOT NULL)",
    """CREATE TABLE leases (mailbox TEXT PRIMARY KEY, worker_id TEXT NOT NULL, lease_until REAL NOT NULL,
        token INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
    """CREATE TABLE sync_state (mailbox TEXT NOT NULL, record_key TEXT NOT NULL, item_id TEXT NOT NULL,
        change_key TEXT NOT NULL, content_hash TEXT NOT NULL, item_class TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL, source_version INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (mailbox, record_key)) WITHOUT ROWID""",
    """CREATE TABLE tombstones (mailbox TEXT NOT NULL, record_key TEXT NOT NULL,
        source_version INTEGER NOT NULL, deleted_at REAL NOT NULL, PRIMARY KEY (mailbox, record_key))
        WITHOUT ROWID""",
    """CREATE TABLE mailboxes (mailbox TEXT PRIMARY KEY, parked INTEGER NOT NULL DEFAULT 0,
        parked_reason TEXT NOT NULL DEFAULT '', last_success_at REAL, last_error TEXT NOT NULL DEFAULT '',
        last_error_at REAL, superseded INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
    "CREATE INDEX jobs_claim ON jobs (status, priority, due_at, id)",
    "CREATE INDEX jobs_mailbox_claim ON jobs (mailbox, status, priority, due_at, id)",
    "CREATE INDEX jobs_record ON jobs (record_key)",
    "CREATE INDEX jobs_payload ON jobs (payload_hash)",
    "CREATE INDEX sync_state_record ON sync_state (record_key)",
    "CREATE INDEX tombstones_age ON tombstones (deleted_at)",
]


def _v2_queue(path, sync_rows: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in V2_SCHEMA:
        conn.execute(statement)
    conn.execute("PRAGMA journal_mode = WAL")
    digest = payload_hash(SNAPSHOT)
    conn.execute("INSERT INTO payloads VALUES (?, ?)", (digest, SNAPSHOT))
    for n, mailbox in enumerate(["anna", "bernd"], start=1):
        conn.execute(
            "INSERT INTO jobs (mailbox, record_key, op, payload_hash, version, status, due_at, enqueued_at, "
            "source_version, priority) VALUES (?, 'contact:1', 'upsert', ?, 1, 'pending', 1, 1, ?, 1)",
            (mailbox, digest, 10 + n),
        )
    # A job created and acked earlier: its id must never come back.
    conn.execute(
        "INSERT INTO jobs (id, mailbox, record_key, op, version, status, due_at, enqueued_at) "
        "VALUES (1000, 'x', 'contact:9', 'delete', 1, 'pending', 1, 1)"
    )
    conn.execute("DELETE FROM jobs WHERE id = 1000")
    conn.executemany(
        "INSERT INTO sync_state VALUES ('anna', ?, ?, 'CK', 'h', 'contact', 1.0, 7)",
        [(f"contact:{100 + i}", f"AAMk{i:04d}" + "x" * 150) for i in range(sync_rows)],
    )
    conn.execute("INSERT INTO tombstones VALUES ('anna', 'contact:5', 50, ?)", (time.time(),))
    conn.execute("INSERT INTO mailboxes (mailbox) VALUES ('anna'), ('bernd')")
    conn.execute("PRAGMA user_version = 2")
    conn.close()


def test_sqlite_schema_2_moves_the_sync_state_into_its_own_file(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    _v2_queue(path, sync_rows=3000)
    before = os.path.getsize(path)
    store = SQLiteOutbox(path)
    try:
        raw = store._conn()
        assert raw.execute("PRAGMA main.user_version").fetchone()[0] == 3
        tables = {r[0] for r in raw.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}
        assert not tables & {"sync_state", "tombstones"}  # gone from the queue file
        assert store.sync_path == str(tmp_path / "syncstate.sqlite3")
        # Every entry arrived, with its version; the tombstone still drops an older save.
        keys = store.sync_keys("anna")
        assert len(keys) == 3000 and keys[0] == "contact:100"
        assert store.get_sync("anna", ["contact:100"])["contact:100"].source_version == 7
        store.enqueue([Change("anna", "contact:5", "upsert", SNAPSHOT, 49)])
        assert store.superseded_count("anna") == 1
        # The queued jobs keep their snapshot, order and version; ids are never reused.
        jobs = store.jobs()
        assert [(j.mailbox, j.payload, j.source_version, j.priority) for j in jobs] == [
            ("anna", SNAPSHOT, 11, 1),
            ("bernd", SNAPSHOT, 12, 1),
        ]
        store.enqueue([Change("carla", "contact:1", "upsert", SNAPSHOT)])
        assert store.jobs("carla")[0].id > 1000
        claim = store.claim("w1")
        assert claim is not None
        store.complete_many(list(claim.jobs), [entry_for(claim.mailbox)], fence=claim)
        assert store.get_sync(claim.mailbox, ["contact:1"])["contact:1"].item_id == "AAMk-new"
    finally:
        store.close()
    # The sync state's pages went back to the file system (the file had auto_vacuum on).
    assert os.path.getsize(path) < before / 2, (before, os.path.getsize(path))


def test_a_migration_interrupted_after_the_copy_keeps_what_was_written_since(tmp_path):
    """Killed between copying the sync state and dropping the old tables: the next start copies
    again, and an entry a worker wrote into the sync-state file in between is not put back."""
    path = tmp_path / "outbox.sqlite3"
    _v2_queue(path, sync_rows=2)
    newer = sqlite3.connect(tmp_path / "syncstate.sqlite3", isolation_level=None)
    newer.execute(
        """CREATE TABLE sync_state (mailbox TEXT NOT NULL, record_key TEXT NOT NULL, item_id TEXT NOT NULL,
        change_key TEXT NOT NULL, content_hash TEXT NOT NULL, item_class TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL, source_version INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (mailbox, record_key)) WITHOUT ROWID"""
    )
    newer.execute(
        "INSERT INTO sync_state VALUES ('anna', 'contact:100', 'AAMk-later', 'CK2', 'h2', 'contact', 2, 9)"
    )
    newer.close()
    store = SQLiteOutbox(path)
    try:
        got = store.get_sync("anna", ["contact:100", "contact:101"])
        assert got["contact:100"].item_id == "AAMk-later" and got["contact:100"].source_version == 9
        assert got["contact:101"].source_version == 7
    finally:
        store.close()


def entry_for(mailbox: str) -> SyncEntry:
    return SyncEntry(mailbox, "contact:1", "AAMk-new", "CK", "h", "contact", source_version=11)


def test_the_queue_file_runs_empty_after_a_drain_and_the_sync_state_stays_beside_it(tmp_path):
    store = SQLiteOutbox(tmp_path / "q.sqlite3")
    try:
        assert store.sync_path == str(tmp_path / "q.syncstate.sqlite3")
        raw = store._conn()
        big = "x" * 2000
        # One transaction far larger than the WAL limit, as a bulk without chunks would be.
        store.enqueue(
            [Change(f"user{i % 10}", f"contact:{i}", "upsert", json.dumps([i, big])) for i in range(3000)]
        )
        assert os.path.getsize(store.path + "-wal") > WAL_LIMIT
        while (claim := store.claim("w1", limit=500)) is not None:
            written = [
                SyncEntry(j.mailbox, j.record_key, "AAMk" + "i" * 150, "CK" * 20, "h" * 64, "contact")
                for j in claim.jobs
            ]
            store.complete_many(list(claim.jobs), written, fence=claim)
            store.release(claim)
        assert store.jobs() == []
        # What was written where stays (in its own file) ...
        assert len(store.sync_keys("user3")) == 300
        # ... and the queue file holds next to nothing: no sync state, no free pages, a short WAL.
        assert raw.execute("PRAGMA main.freelist_count").fetchone()[0] == 0
        assert raw.execute("PRAGMA main.page_count").fetchone()[0] < 40
        assert os.path.getsize(store.path + "-wal") <= WAL_LIMIT
    finally:
        store.close()
