"""Fixtures: every outbox test runs against both stores.

PostgreSQL runs on the real server (trust auth on 127.0.0.1:5432, database ``test``)
in a fresh schema per test, dropped afterwards. Deselect with ``-m "not postgres"``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox

PG_URL = os.environ.get("TSL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

OpenStore = Callable[[], "SQLiteOutbox | PostgresOutbox"]


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema))
        )


@pytest.fixture
def pg_url() -> str:
    return PG_URL


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"t_outbox_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_store(store_kind: str, tmp_path, request: pytest.FixtureRequest) -> Iterator[OpenStore]:
    """Opens another handle on the same backing store (a second process, as far as
    the database can tell: its own connections)."""
    opened: list = []
    if store_kind == "sqlite":
        path = tmp_path / "outbox.sqlite3"

        def factory():
            store = SQLiteOutbox(path)
            opened.append(store)
            return store
    else:
        schema = request.getfixturevalue("pg_schema")

        def factory():
            store = PostgresOutbox(PG_URL, schema=schema)
            opened.append(store)
            return store

    yield factory
    # Closed before pg_schema's teardown drops the schema (fixture order).
    for store in opened:
        store.close()


@pytest.fixture
def outbox(open_store: OpenStore):
    return open_store()
