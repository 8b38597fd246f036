"""Exchange-Sync setzen on one host while another host of the same installation saves the contact.

Two instances share the records and the subscription lists. Whatever order the other
instance's commit, its hook and this instance's subscription change take, the newly
subscribed mailbox ends with the contact's last version. Each test puts the other
instance's save at one point inside "Exchange-Sync setzen" (the save runs through the
same host object: what matters is when it commits and when its hook reads the list).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.core import subscriptions
from tsl_exchange_plugin.plugin import recovery_for
from tsl_exchange_plugin.testing import wait_for
from tsl_hostapi.reference import ReferenceHost

from .test_external_workers import subscribe

pytestmark = pytest.mark.postgres

SET_SYNC = f"{PLUGIN_ID}.set_sync"
REMOVE_SYNC = f"{PLUGIN_ID}.remove_sync"


def body(k, user, contact) -> str:
    (item,) = k.ours(user, contact.ref.key)
    return item.get("body") or ""


def push_all(k, workers) -> None:
    """Start a worker process (one is enough, and it stays) and wait until the queue is empty."""
    if not workers.procs:
        workers.start(threads=1)
    wait_for(lambda: k.runtime.outbox.pending_count() == 0, timeout=60, what="the queue to drain")


def test_a_save_committed_before_the_list_is_written_reaches_the_new_subscriber(
    pg_kanzlei, workers, monkeypatch
):
    """The other instance saves after this one read the contact and before it wrote the list:
    the save's hook still sees the old list (Alice only), so Bob's push must carry that save."""
    k = pg_kanzlei
    alice, bob = k.lawyers[:2]
    contact = k.contacts[0]
    subscribe(k, [contact], [alice])
    original = subscriptions.write_subscriptions
    saved = []

    def other_instance_saves_first(settings, changed, *, undo=False):
        if not undo and not saved:
            saved.append(k.host.save(dataclasses.replace(contact, notes="Stand der anderen Instanz")))
        return original(settings, changed, undo=undo)

    monkeypatch.setattr(subscriptions, "write_subscriptions", other_instance_saves_first)
    subscribe(k, [contact], [bob])
    assert saved
    push_all(k, workers)
    assert "Stand der anderen Instanz" in body(k, alice, contact)
    assert "Stand der anderen Instanz" in body(k, bob, contact), "Bob got the version before the save"


def on_first_enqueue(k, monkeypatch, wanted, action) -> list:
    """Run ``action`` once, when the queue is first asked to take a change ``wanted`` accepts,
    just before that change goes in (calls made by ``action`` itself pass straight through)."""
    outbox = k.runtime.outbox
    original = outbox.enqueue
    ran: list = []

    def enqueue(changes, *args, **kwargs):
        if not ran and any(wanted(c) for c in changes):
            ran.append(action())
        return original(changes, *args, **kwargs)

    monkeypatch.setattr(outbox, "enqueue", enqueue)
    return ran


def test_a_save_queued_while_the_new_subscriber_is_queued_is_not_overwritten(
    pg_kanzlei, workers, monkeypatch
):
    """The other instance saves after this one wrote the list and read the contact, and its
    hook (which sees Bob on the list) queues before this instance's push to Bob does: that push
    carries the older state and must not be the last word in Bob's mailbox."""
    k = pg_kanzlei
    alice, bob = k.lawyers[:2]
    contact = k.contacts[0]
    subscribe(k, [contact], [alice])
    ran = on_first_enqueue(
        k,
        monkeypatch,
        lambda c: c.mailbox == bob.id and c.op == "upsert",
        lambda: k.host.save(dataclasses.replace(contact, notes="Stand der anderen Instanz")),
    )
    subscribe(k, [contact], [bob])
    assert ran
    push_all(k, workers)
    assert "Stand der anderen Instanz" in body(k, alice, contact)
    assert "Stand der anderen Instanz" in body(k, bob, contact), "Bob's push put the older state back"


def test_a_save_that_read_the_old_list_does_not_bring_back_a_removed_subscription(
    pg_kanzlei, workers, monkeypatch
):
    """The other instance's save hook read the list while Bob was still on it; Exchange-Sync
    entfernen for Bob runs to its end before that hook queues its push to Bob. Bob's mailbox
    must end without the contact, as the list says."""
    k = pg_kanzlei
    alice, bob = k.lawyers[:2]
    contact = k.contacts[0]
    subscribe(k, [contact], [alice, bob])
    push_all(k, workers)
    assert len(k.ours(bob, contact.ref.key)) == 1

    def remove_bob():
        result = k.host.press(k.admin, REMOVE_SYNC, [contact.ref], {"users": [bob.id]})
        assert result.ok, result
        return result

    ran = on_first_enqueue(k, monkeypatch, lambda c: c.mailbox == bob.id and c.op == "upsert", remove_bob)
    k.host.save(dataclasses.replace(contact, notes="Stand der anderen Instanz"))
    assert ran
    assert bob.id not in subscriptions.subscribers(k.host.settings, contact.id)
    wait_for(lambda: k.runtime.outbox.pending_count() == 0, timeout=60, what="the queue to drain")
    assert "Stand der anderen Instanz" in body(k, alice, contact)
    assert k.ours(bob, contact.ref.key) == [], "Bob still has a contact he is no longer subscribed to"


def test_two_instances_changing_one_contacts_list_at_once_lose_neither_change(
    pg_kanzlei, workers, monkeypatch
):
    """Alice's Exchange-Sync is set on one instance while Bob's is set on the other, for the
    same contact. Each reads the list, changes it and writes it back whole; the second instance
    is let in once the first has read the list. Both subscriptions must survive, and both
    mailboxes get the contact."""
    k = pg_kanzlei
    alice, bob = k.lawyers[:2]
    contact = k.contacts[0]
    other = ReferenceHost(k.host.root)  # a second instance of the installation, same directory
    other.startup()
    try:
        recovery = recovery_for(other)
        assert recovery is not None and recovery.wait_idle(60)
        original = subscriptions.plan_subscriptions
        planned = threading.Event()
        calls = []

        def plan(*args, **kwargs):
            result = original(*args, **kwargs)
            calls.append(threading.current_thread().name)
            if threading.current_thread().name == "other-instance":
                planned.set()
            return result

        monkeypatch.setattr(subscriptions, "plan_subscriptions", plan)
        original_write = subscriptions.write_subscriptions
        other_press = threading.Thread(
            target=lambda: other.press(k.admin, SET_SYNC, [contact.ref], {"users": [bob.id]}),
            name="other-instance",
        )

        def write(settings, changed, *, undo=False):
            if not other_press.is_alive() and not planned.is_set() and not undo:
                other_press.start()
                # Let the other instance read the list now, if it may (it reads the list this
                # one is about to replace); while this change holds the lock, it waits instead.
                planned.wait(3)
            return original_write(settings, changed, undo=undo)

        monkeypatch.setattr(subscriptions, "write_subscriptions", write)
        subscribe(k, [contact], [alice])
        other_press.join(60)
        assert not other_press.is_alive()
        assert len(calls) == 2
        assert set(subscriptions.subscribers(k.host.settings, contact.id)) == {alice.id, bob.id}
        push_all(k, workers)
        assert len(k.ours(alice, contact.ref.key)) == 1
        assert len(k.ours(bob, contact.ref.key)) == 1
    finally:
        other.close()
