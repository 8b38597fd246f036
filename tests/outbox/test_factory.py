"""open_outbox: the queue URL picks the store; bad URLs and dead servers get a German error."""

from __future__ import annotations

import socket

import pytest

from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.factory import open_outbox
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox


@pytest.mark.parametrize("url", [None, "", "  ", "sqlite://"])
def test_default_is_sqlite_in_the_data_dir(tmp_path, url):
    box = open_outbox(url, str(tmp_path))
    try:
        assert isinstance(box, SQLiteOutbox)
        assert box.path == str(tmp_path / "outbox.sqlite3")
        box.enqueue([Change("anna", "contact:1", "upsert", "{}")])
    finally:
        box.close()
    assert (tmp_path / "outbox.sqlite3").exists()


def test_sqlite_relative_and_absolute_paths(tmp_path):
    rel = open_outbox("sqlite:///queue/q.sqlite3", str(tmp_path))
    absolute = open_outbox(f"sqlite:///{tmp_path}/abs.sqlite3", "/nonexistent-data-dir")
    try:
        assert rel.path == str(tmp_path / "queue" / "q.sqlite3")
        assert absolute.path == str(tmp_path / "abs.sqlite3")
    finally:
        rel.close()
        absolute.close()


@pytest.mark.parametrize("url", ["mysql://db/x", "redis://localhost", "outbox.sqlite3", "sqlite:relative"])
def test_unknown_scheme_is_a_clear_german_error(tmp_path, url):
    with pytest.raises(ValueError, match="Unbekannter Warteschlangen-Typ"):
        open_outbox(url, str(tmp_path))


def test_sqlite_url_with_host_part_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="ungültig"):
        open_outbox("sqlite://server/file.db", str(tmp_path))


def test_sqlite_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "outbox.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="kann nicht geöffnet werden"):
        open_outbox(None, str(tmp_path))
    assert bad.read_bytes() == b"this is not a database" * 100  # nothing overwritten


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_postgres_says_what_to_check_and_hides_the_password(tmp_path):
    url = f"postgresql://tsl:Geheim%2199@127.0.0.1:{_closed_port()}/kanzlei"
    with pytest.raises(ValueError) as info:
        open_outbox(url, str(tmp_path))
    message = str(info.value)
    assert "nicht erreichbar" in message and "läuft der Server" in message
    assert "kanzlei" in message and "tsl" in message
    assert "Geheim" not in message and "Geheim" not in repr(info.value.__cause__)


@pytest.mark.postgres
def test_postgres_url_opens_the_postgres_store(tmp_path, pg_schema, pg_url):
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        box = open_outbox(url, str(tmp_path), pg_schema=pg_schema)
        try:
            assert isinstance(box, PostgresOutbox)
            box.enqueue([Change("anna", "contact:1", "upsert", "{}")])
            assert box.pending_count() == 1
        finally:
            box.close()


@pytest.mark.postgres
def test_missing_postgres_database_is_reported(tmp_path, pg_url):
    url = pg_url.rsplit("/", 1)[0] + "/no_such_db_tsl"
    with pytest.raises(ValueError, match="no_such_db_tsl"):
        open_outbox(url, str(tmp_path))
