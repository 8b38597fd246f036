"""Queues written by schema 1 are migrated in place; a SQLite queue gives its space back
after a drain."""

from __future__ import annotations

import json
import sqlite3

import psycopg
import pytest
from psycopg import sql

from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox

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
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
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
