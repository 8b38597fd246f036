"""Regressions found in review: each reproduced a duplicate or a stuck job before its fix."""

from __future__ import annotations

import dataclasses

from tsl_exchange_plugin import PLUGIN_ID

SET_SYNC = f"{PLUGIN_ID}.set_sync"


def _short_timeout(k, seconds: int = 2) -> None:
    settings = k.host.settings.get(PLUGIN_ID, "firm", {}) or {}
    k.host.settings.set(PLUGIN_ID, "firm", {**settings, "request_timeout": seconds})


def test_edit_during_back_off_after_unknown_create_leaves_one_item(kanzlei):
    # The create lands but its answer is lost; the user saves again before the retry.
    # Coalescing the new version must not forget that a write may already have happened.
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[2]
    worker = k.runtime.worker
    worker.stop()
    _short_timeout(k)
    k.server.inject("commit_then_hang", operation="CreateItem", seconds=4, mailbox=k.mailbox_of[alice.id])
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
    assert worker.run_once()  # the create commits on the server, the answer never comes
    assert len(k.ours(alice, contact.ref.key)) == 1
    k.host.save(dataclasses.replace(contact, notes="zweite Änderung"))
    assert worker.drain(30)
    (item,) = k.ours(alice, contact.ref.key)
    assert "zweite Änderung" in item["body"]


def test_phone_delete_then_unknown_recreate_leaves_one_item(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[0]
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
    k.drain()
    k.server.engine.phone_delete(k.mailbox_of[alice.id], k.ours(alice, contact.ref.key)[0]["item_id"])
    _short_timeout(k)
    k.server.inject("commit_then_hang", operation="CreateItem", seconds=4, mailbox=k.mailbox_of[alice.id])
    k.host.save(dataclasses.replace(contact, notes="geändert"))
    k.drain(timeout=40)
    assert len(k.ours(alice, contact.ref.key)) == 1


def _user_without_exchange(k):
    return next(u for u in k.firm.users if u.id not in k.mailbox_of and u.active)


def test_unsubscribing_a_user_without_exchange_leaves_no_stuck_job(kanzlei):
    k = kanzlei
    other = _user_without_exchange(k)
    contact = k.firm.contacts[1]
    k.runtime.subscriptions.change([contact.id], add=[other.id])
    k.runtime.subscriptions.change([contact.id], remove=[other.id])
    k.drain(timeout=10)
    assert k.runtime.outbox.jobs(other.id) == []
    assert not any(s.parked for s in k.runtime.outbox.mailbox_states() if s.mailbox == other.id)


def test_deleting_an_appointment_with_a_participant_without_exchange_drains(kanzlei):
    k = kanzlei
    other = _user_without_exchange(k)
    alice = k.lawyers[0]
    appt = k.host.iter_records("appointment")[0]
    appt = k.host.save(dataclasses.replace(appt, participant_ids=(alice.id, other.id)))
    k.drain()
    assert len(k.ours(alice, appt.ref.key, "calendar")) == 1
    k.host.delete(appt.ref)
    k.drain(timeout=10)
    assert k.ours(alice, appt.ref.key, "calendar") == []
    assert k.runtime.outbox.jobs(other.id) == []
    assert not any(s.parked for s in k.runtime.outbox.mailbox_states() if s.mailbox == other.id)


def test_deleting_a_deadline_whose_create_never_answered_removes_every_vorfrist(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = next(d for d in k.host.iter_records("deadline") if d.pre_deadline_dates and not d.done)
    worker = k.runtime.worker
    worker.stop()
    _short_timeout(k)
    moved = dataclasses.replace(deadline, id="neu-1", responsible_ids=(alice.id,))
    k.host.save(moved)
    k.server.inject("commit_then_hang", operation="CreateItem", seconds=4, mailbox=k.mailbox_of[alice.id])
    assert worker.run_once()  # Frist and Vorfristen land; the answer never comes
    mine = [
        i
        for i in k.items(alice, "calendar")
        if str((i.get("extended_properties") or {}).get("tslRecordId", "")).startswith(moved.ref.key)
    ]
    assert len(mine) == 1 + len(set(moved.pre_deadline_dates))
    k.host.delete(moved.ref)
    assert worker.drain(30)
    left = [
        i
        for i in k.items(alice, "calendar")
        if str((i.get("extended_properties") or {}).get("tslRecordId", "")).startswith(moved.ref.key)
    ]
    assert left == []
