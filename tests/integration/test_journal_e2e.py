"""No silent drop: a queue that cannot be opened or written, and a host killed between a
subscription change and its pushes. Every change arrives, in order, once the queue is back."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.cli.commands import main as cli_main
from tsl_exchange_plugin.core import subscriptions
from tsl_exchange_plugin.core.firm import QUEUE_URL_ENV
from tsl_exchange_plugin.plugin import recovery_for, runtime_for
from tsl_hostapi.reference import ReferenceHost

SET_SYNC = f"{PLUGIN_ID}.set_sync"
CHILD = Path(__file__).with_name("host_child.py")
PG_URL = os.environ.get("TSL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def subscribe(k, contacts, user):
    result = k.host.press(k.admin, SET_SYNC, [c.ref for c in contacts], {"users": [user.id]})
    assert result.ok, result.message
    return result


def journal_notes(host):
    return [n for n in host.notifications if "Journal" in n.message]


def restart(k) -> ReferenceHost:
    """Stop the host and start it again on the same data directory (what a reboot does)."""
    k.host.close()
    host = ReferenceHost(k.host.root)
    host.startup()
    k.host = host
    return host


def back_and_replayed(host) -> None:
    recovery = recovery_for(host)
    assert recovery is not None
    recovery.wake()  # the queue is back: no need to wait for the next back-off round
    assert recovery.wait_idle(60), "the journal was not replayed"
    assert runtime_for(host) is not None
    assert recovery.journal.info().waiting == 0


def assert_order_kept(k, alice, edited, deleted):
    """``edited`` was saved twice (the second version must win), ``deleted`` saved, then
    deleted (it must be gone): both hold only if the journal replayed in order."""
    k.drain()
    items = k.ours(alice, edited.ref.key)
    assert len(items) == 1 and "zweite Fassung" in items[0]["body"], items
    assert k.ours(alice, deleted.ref.key) == []


def save_three(host, edited, deleted):
    host.save(dataclasses.replace(edited, notes="erste Fassung"))
    host.save(dataclasses.replace(edited, notes="zweite Fassung"))
    host.save(dataclasses.replace(deleted, notes="gleich weg"))
    host.delete(deleted.ref)


def test_start_with_an_unopenable_sqlite_queue_journals_saves_and_replays_them(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    edited, deleted = k.firm.contacts[0], k.firm.contacts[1]
    subscribe(k, [edited, deleted], alice)
    k.drain()
    data = Path(k.host.data_dir(PLUGIN_ID))
    k.host.close()
    queue = data / "outbox.sqlite3"
    aside = data / "outbox.aside"
    queue.rename(aside)
    queue.mkdir()  # a directory where the queue file belongs: SQLite cannot open it

    host = ReferenceHost(k.host.root)
    host.startup()  # never raises into the host
    k.host = host
    assert runtime_for(host) is None
    save_three(host, edited, deleted)
    notes = journal_notes(host)
    assert len(notes) == 1, notes  # told once, not once per save
    assert notes[0].level == "error" and "konnte nicht starten" in notes[0].message
    assert "Bitte" in notes[0].message
    assert recovery_for(host).journal.info().waiting == 4
    refused = host.press(k.admin, SET_SYNC, [k.firm.contacts[20].ref], {"users": [alice.id]})
    assert not refused.ok and "nicht bereit" in refused.message and "Nichts wurde geändert" in refused.message
    assert cli_main(["status", "--data", str(host.root)]) == 1  # the operator's view says so too
    out = capsys.readouterr().out
    assert "Warteschlange ist nicht verfügbar" in out and "Journal: 4 Änderungen warten" in out

    queue.rmdir()
    aside.rename(queue)
    back_and_replayed(host)
    assert_order_kept(k, alice, edited, deleted)
    assert any("wieder erreichbar" in n.message for n in host.notifications)


class Forwarder:
    """A TCP port that forwards to PostgreSQL while it is "up": the database seen through it
    can be down at boot and come back, without touching the shared server."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server: socket.socket | None = None
        self._socks: list[socket.socket] = []

    def up(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            server.close()
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._socks = []

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", 5432))
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture
def pg_through_forwarder(monkeypatch):
    forwarder = Forwarder()
    forwarder.up()
    schema = f"t_journal_{uuid.uuid4().hex[:12]}"
    url = f"postgresql://postgres@127.0.0.1:{forwarder.port}/test?schema={schema}"
    monkeypatch.setenv(QUEUE_URL_ENV, url)
    yield forwarder
    forwarder.down()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.postgres
def test_postgresql_down_at_boot_journals_saves_until_it_is_back(pg_through_forwarder, kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    edited, deleted = k.firm.contacts[2], k.firm.contacts[3]
    assert type(k.runtime.outbox).__name__ == "PostgresOutbox"
    subscribe(k, [edited, deleted], alice)
    k.drain()
    k.host.close()
    pg_through_forwarder.down()  # the queue URL now points to a closed port

    host = ReferenceHost(k.host.root)
    host.startup()
    k.host = host
    assert runtime_for(host) is None
    save_three(host, edited, deleted)
    notes = journal_notes(host)
    assert len(notes) == 1 and "PostgreSQL" in notes[0].message, notes
    assert recovery_for(host).journal.info().waiting == 4

    pg_through_forwarder.up()
    back_and_replayed(host)
    assert_order_kept(k, alice, edited, deleted)


class Unwritable:
    """The running runtime's queue, with its writes failing (a full disk, a lost database)."""

    def __init__(self, outbox):
        self._outbox = outbox

    def __getattr__(self, name):
        if name in ("enqueue", "holders"):
            raise RuntimeError("Datenträger voll")
        return getattr(self._outbox, name)


def test_saves_the_running_queue_cannot_take_are_journaled_and_replayed_in_order(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    edited, deleted = k.firm.contacts[4], k.firm.contacts[5]
    subscribe(k, [edited, deleted], alice)
    k.drain()
    runtime = k.runtime
    good = runtime.enqueue.outbox
    runtime.enqueue.outbox = Unwritable(good)
    try:
        save_three(k.host, edited, deleted)
        notes = journal_notes(k.host)
        assert len(notes) == 1 and "Datenträger voll" in notes[0].message, notes
        assert recovery_for(k.host).journal.info().waiting == 4
    finally:
        runtime.enqueue.outbox = good
    back_and_replayed(k.host)
    assert_order_kept(k, alice, edited, deleted)


def test_a_subscription_change_the_queue_cannot_take_is_kept_and_completed(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[8]
    runtime = k.runtime
    good = runtime.enqueue.outbox
    runtime.enqueue.outbox = Unwritable(good)
    try:
        result = subscribe(k, [contact], alice)
        assert "nachgeholt" in result.message
        assert subscriptions.subscribers(k.host.settings, contact.id) == (alice.id,)
        assert len(journal_notes(k.host)) == 1
    finally:
        runtime.enqueue.outbox = good
    back_and_replayed(k.host)
    k.drain()
    assert len(k.ours(alice, contact.ref.key)) == 1


def test_host_killed_between_subscription_commit_and_enqueue_pushes_after_restart(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[9]
    root = k.host.root
    k.host.close()  # the child process is the host now
    proc = subprocess.run(
        [
            sys.executable,
            str(CHILD),
            "--data",
            str(root),
            "--mode",
            "kill-after-subscribe",
            "--contact",
            contact.id,
            "--user",
            alice.id,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr  # killed at exactly that point
    host = ReferenceHost(root)
    k.host = host
    assert subscriptions.subscribers(host.settings, contact.id) == (alice.id,)  # committed ...
    host.startup()
    recovery = recovery_for(host)
    assert recovery.wait_idle(60)
    k.drain()
    assert len(k.ours(alice, contact.ref.key)) == 1  # ... and its push arrived
