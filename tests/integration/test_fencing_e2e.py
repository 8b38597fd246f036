"""A worker that lost its mailbox lease must not write on after another worker took over.

Two real Worker instances share the plugin's queue and push through exchangelib to the
sandbox. Worker A's request is held at the sandbox (a fault gated by an event, so no test
waits on the clock); meanwhile the user saves again and worker B, whose clock is moved
past A's lease (an injected ``now``), claims the mailbox and pushes the newer version.
Then A's request goes on.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.testing import wait_for
from tsl_exchange_plugin.worker.dispatch import make_mapper
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig

SET_SYNC = f"{PLUGIN_ID}.set_sync"


def _worker(k, name: str) -> Worker:
    rt = k.runtime
    config = WorkerConfig(threads=1, lanes=1, slices_per_claim=1, lease_seconds=60.0)
    return Worker(
        rt.outbox,
        rt.backend,
        rt.config.resolve_account,
        make_mapper(rt.config.mapping_context),
        config,
        worker_id=name,
    )


def _held_request(k, mailbox: str, operation: str):
    hold = threading.Event()
    fault = k.server.inject("delay", operation=operation, mailbox=mailbox, hold=hold)
    return fault, hold


def _run_in_thread(worker: Worker) -> tuple[threading.Thread, list]:
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(worker.run_once()), daemon=True)
    thread.start()
    return thread, outcome


def _later() -> float:
    """B's clock: past A's lease (60 s), as if A's request had hung that long."""
    return time.time() + 3600


def test_lost_lease_update_does_not_overwrite_the_newer_version(kanzlei):
    k = kanzlei
    k.runtime.worker.stop()
    alice = k.lawyers[0]
    mailbox = k.mailbox_of[alice.id]
    contact = k.firm.contacts[3]
    a, b = _worker(k, "worker-a"), _worker(k, "worker-b")
    try:
        assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
        assert a.drain(30)
        (item,) = k.ours(alice, contact.ref.key)

        fault, hold = _held_request(k, mailbox, "UpdateItem")
        k.host.save(dataclasses.replace(contact, notes="Fassung eins"))
        thread, _ = _run_in_thread(a)
        wait_for(lambda: fault.fired, 30, "A's UpdateItem at the server")

        k.host.save(dataclasses.replace(contact, notes="Fassung zwei"))
        assert b.run_once(now=_later())
        (item,) = k.ours(alice, contact.ref.key)
        assert "Fassung zwei" in item["body"]

        hold.set()
        thread.join(30)
        assert not thread.is_alive()
        assert b.drain(30)
        (item,) = k.ours(alice, contact.ref.key)
        assert "Fassung zwei" in item["body"], "the worker that lost its lease wrote an old version"
        assert k.runtime.outbox.jobs(alice.id) == []
        sync = k.runtime.outbox.get_sync(alice.id, [contact.ref.key])[contact.ref.key]
        assert sync.item_id == item["item_id"]
    finally:
        hold_all(k)
        a.stop(5)
        b.stop(5)


def test_lost_lease_create_leaves_no_duplicate(kanzlei):
    k = kanzlei
    k.runtime.worker.stop()
    alice = k.lawyers[0]
    mailbox = k.mailbox_of[alice.id]
    contact = k.firm.contacts[4]
    a, b = _worker(k, "worker-a"), _worker(k, "worker-b")
    try:
        fault, hold = _held_request(k, mailbox, "CreateItem")
        assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
        thread, _ = _run_in_thread(a)
        wait_for(lambda: fault.fired, 30, "A's CreateItem at the server")

        k.host.save(dataclasses.replace(contact, notes="Fassung zwei"))
        assert b.run_once(now=_later())
        assert len(k.ours(alice, contact.ref.key)) == 1

        hold.set()  # A's create lands now, after B's
        thread.join(30)
        assert not thread.is_alive()
        assert b.drain(30)
        items = k.ours(alice, contact.ref.key)
        assert len(items) == 1, f"{len(items)} copies of the contact in the mailbox"
        assert "Fassung zwei" in items[0]["body"]
        assert k.runtime.outbox.jobs(alice.id) == []
        sync = k.runtime.outbox.get_sync(alice.id, [contact.ref.key])[contact.ref.key]
        assert sync.item_id == items[0]["item_id"]
    finally:
        hold_all(k)
        a.stop(5)
        b.stop(5)


def hold_all(k) -> None:
    """Let every held request go on, so no sandbox thread waits past the test."""
    for fault in k.server.faults.armed() + list(getattr(k.server.faults, "_faults", [])):
        if fault.hold is not None:
            fault.hold.set()
