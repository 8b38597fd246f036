"""The store's side of host-less workers: shared state rows and per-server request slots.

Both stores, real SQLite files and a real PostgreSQL schema; a dead holder is a closed
connection (PostgreSQL) or an expired lease under an injected clock (SQLite).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tsl_exchange_plugin.backends.slots import ServerLimit
from tsl_exchange_plugin.core.shared_state import (
    HOLD_ROW,
    LICENCE_ROW,
    NO_LICENCE_ROW,
    MailboxProfile,
    StoreContext,
    hold_row,
)
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.testing import wait_for

from .conftest import PG_URL

SERVER = "mail.kanzlei.test:443"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path: Path, pg_schema_name: str) -> Iterator:
    if request.param == "sqlite":
        outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    else:
        outbox = PostgresOutbox(PG_URL, schema=pg_schema_name)
    try:
        yield outbox
    finally:
        outbox.close()


def test_worker_rows_are_written_once_and_deleted_with_none(store):
    rows = {"firm": json.dumps({"done_deadline": "remove"}), "mailbox:u1": "{}"}
    assert store.put_worker_rows(rows) == 2
    assert store.put_worker_rows(rows) == 0  # idempotent: the host republishes at every start
    assert store.worker_rows("mailbox:") == {"mailbox:u1": "{}"}
    assert store.put_worker_rows({"mailbox:u1": None, "mailbox:gone": None}) == 1
    assert store.worker_rows("mailbox:") == {}
    assert store.worker_row("firm") == rows["firm"]


def test_gate_reads_hold_and_licence_from_the_store(store, tmp_path: Path):
    from cryptography.fernet import Fernet

    from tsl_exchange_plugin.credentials import open_worker_vault

    key = tmp_path / "k"
    key.write_bytes(Fernet.generate_key() + b"\n")
    context = StoreContext(store, open_worker_vault(key))
    assert context.gate() == NO_LICENCE_ROW  # nothing written by a host yet: fail closed
    store.put_worker_rows({LICENCE_ROW: json.dumps({"document": None})})
    assert "Keine Lizenz" in context.gate()
    store.put_worker_rows(hold_row("Aufräumen läuft."))
    assert context.gate() == "Aufräumen läuft."
    store.put_worker_rows(hold_row(""))
    assert store.worker_row(HOLD_ROW) is None


def test_a_profile_never_carries_the_plain_password(tmp_path: Path):
    from tsl_exchange_plugin.core.accounts import ExchangeSettings
    from tsl_exchange_plugin.credentials import Vault
    from tsl_hostapi.types import User

    vault = Vault.open(tmp_path)
    token = vault.encrypt("Geheim-123!")
    profile = MailboxProfile(User(id="u1", name="Anna"), ExchangeSettings(enabled=True, password_token=token))
    text = profile.dump()
    assert "Geheim-123!" not in text
    assert vault.decrypt(MailboxProfile.load(text).settings.password_token) == "Geheim-123!"


def test_sqlite_slots_up_to_the_limit_and_a_dead_holders_lease_expires(tmp_path: Path):
    a = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    b = SQLiteOutbox(tmp_path / "outbox.sqlite3")  # another process on the same file
    try:
        now = 1000.0
        got = [a.acquire_server_slot(SERVER, 2, "a", lease_seconds=60, now=now) for _ in range(2)]
        assert sorted(got) == [0, 1]
        assert b.acquire_server_slot(SERVER, 2, "b", lease_seconds=60, now=now + 59) is None
        assert b.acquire_server_slot("other:443", 2, "b", lease_seconds=60, now=now) == 0  # per server
        a.release_server_slot(SERVER, got[0], "b")  # not b's: nothing happens
        assert b.acquire_server_slot(SERVER, 2, "b", lease_seconds=60, now=now + 59) is None
        a.release_server_slot(SERVER, got[0], "a")
        assert b.acquire_server_slot(SERVER, 2, "b", lease_seconds=60, now=now + 59) == got[0]
        # "a" dies holding its other slot: the lease runs out and the slot is free again.
        assert b.acquire_server_slot(SERVER, 2, "b", lease_seconds=60, now=now + 61) == got[1]
    finally:
        a.close()
        b.close()


@pytest.mark.postgres
def test_postgres_slots_are_advisory_locks_that_die_with_the_session(pg_schema_name: str):
    # Each store object stands for one process (a thread's connection is its session).
    a, b, c, d = (PostgresOutbox(PG_URL, schema=pg_schema_name) for _ in range(4))
    try:
        assert a.acquire_server_slot(SERVER, 3, "a") == 0
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            held = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                (a._conn().info.backend_pid,),
            ).fetchone()[0]
        assert held == 1  # one lock per call, not the whole series
        assert b.acquire_server_slot(SERVER, 3, "b") == 1
        assert c.acquire_server_slot(SERVER, 3, "c") == 2
        assert d.acquire_server_slot(SERVER, 3, "d") is None
        assert d.acquire_server_slot("other:443", 3, "d") == 0  # per server
        d.release_server_slot("other:443", 0, "d")
        b.release_server_slot(SERVER, 1, "b")
        assert d.acquire_server_slot(SERVER, 3, "d") == 1
        a.close()  # the process dies: its session, and with it slot 0, is gone
        # The server ends the backend just after the client hung up: wait for that state.
        got = wait_for(
            lambda: [s for s in [b.acquire_server_slot(SERVER, 3, "b")] if s is not None],
            timeout=10,
            what="the dead session's slot",
        )
        assert got == [0]
    finally:
        for store in (a, b, c, d):
            store.close()


def test_server_limit_waits_for_a_slot_another_process_holds(tmp_path: Path):
    """The limiter's second gate: with every slot taken elsewhere, a request waits until one is free."""
    mine = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    other = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    try:
        taken = other.acquire_server_slot(SERVER, 1, "other")
        limit = ServerLimit(SERVER, 1, mine)
        entered = threading.Event()

        def request() -> None:
            with limit:
                entered.set()

        t = threading.Thread(target=request)
        t.start()
        assert not entered.wait(0.3)  # bounded look: it must still be waiting for the slot
        other.release_server_slot(SERVER, taken, "other")
        assert entered.wait(10)
        t.join(10)
        assert other.acquire_server_slot(SERVER, 1, "other") == 0  # released after the request
    finally:
        mine.close()
        other.close()


def test_the_host_publishes_idempotently_and_without_plain_passwords(kanzlei):
    """The SQLite store (the default) gets the same rows as PostgreSQL."""
    from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS

    k = kanzlei
    runtime = k.runtime
    assert isinstance(runtime.outbox, SQLiteOutbox)
    assert runtime.publisher.publish(full=True) == 0  # written at startup already
    rows = runtime.outbox.worker_rows()
    assert {f"mailbox:{u.id}" for u in k.lawyers} <= set(rows)
    assert {"firm", "licence"} <= set(rows)
    text = json.dumps(rows)
    assert not any(pw in text for pw in SANDBOX_PASSWORDS.values())
    runtime.admin.save_firm_settings({"done_deadline": "remove"})
    assert json.loads(runtime.outbox.worker_row("firm"))["done_deadline"] == "remove"
    alice = k.lawyers[0]
    k.configure(alice, timezone="Europe/Vienna")
    profile = MailboxProfile.load(runtime.outbox.worker_row(f"mailbox:{alice.id}"))
    assert profile.settings.timezone == "Europe/Vienna"
    runtime.admin.hold("Aufräumen läuft.")
    assert runtime.outbox.worker_row(HOLD_ROW) is not None
    runtime.admin.release_hold()
    assert runtime.outbox.worker_row(HOLD_ROW) is None
