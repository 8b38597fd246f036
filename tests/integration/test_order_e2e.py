"""Hooks of two changes may run in the opposite order of their commits; the mailbox must
still end with the newest state. The hooks are called through the host's real plugin
manager, in the order a busy host could call them."""

from __future__ import annotations

import dataclasses
import datetime as dt

from tsl_exchange_plugin import PLUGIN_ID
from tsl_hostapi.types import RecordEvent

SET_SYNC = f"{PLUGIN_ID}.set_sync"
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def _hook(k, name: str, event: RecordEvent) -> None:
    getattr(k.host.pm.hook, name)(host=k.host, event=event)


def _drain(k) -> None:
    assert k.runtime.worker.drain(30)


def _subscribed_contact(k, index: int):
    alice = k.lawyers[0]
    contact = k.firm.contacts[index]
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
    _drain(k)
    assert len(k.ours(alice, contact.ref.key)) == 1
    return alice, contact


def test_reversed_save_hooks_leave_the_newer_state_by_modification_time(kanzlei):
    # A host without revision numbers (host API 1.0): the record's modified_at orders.
    k = kanzlei
    k.runtime.worker.stop()
    alice, contact = _subscribed_contact(k, 5)
    older = dataclasses.replace(contact, notes="ältere Fassung", modified_at=T0)
    newer = dataclasses.replace(contact, notes="neuere Fassung", modified_at=T0 + dt.timedelta(seconds=1))
    _hook(k, "tsl_record_saved", RecordEvent(ref=contact.ref, record=newer))
    _hook(k, "tsl_record_saved", RecordEvent(ref=contact.ref, record=older))
    _drain(k)
    (item,) = k.ours(alice, contact.ref.key)
    assert "neuere Fassung" in item["body"]
    assert k.runtime.outbox.superseded_count(alice.id) == 1


def test_reversed_save_hooks_leave_the_newer_state_by_host_revision(kanzlei):
    k = kanzlei
    k.runtime.worker.stop()
    alice, contact = _subscribed_contact(k, 6)
    # The host's own saves number the record's revisions; the next two follow them.
    saved = k.host.save(dataclasses.replace(contact, notes="gespeichert"))
    _drain(k)
    synced = k.runtime.outbox.get_sync(alice.id, [contact.ref.key])[contact.ref.key]
    assert synced.source_version > 0
    v = synced.source_version
    # Same modification time on both: only the revision tells them apart.
    older = dataclasses.replace(saved, notes="Revision eins")
    newer = dataclasses.replace(saved, notes="Revision zwei")
    _hook(k, "tsl_record_saved", RecordEvent(ref=contact.ref, record=newer, version=v + 2))
    _hook(k, "tsl_record_saved", RecordEvent(ref=contact.ref, record=older, version=v + 1))
    _drain(k)
    (item,) = k.ours(alice, contact.ref.key)
    assert "Revision zwei" in item["body"]
    # A late hook of a version the mailbox already has behind it is dropped too.
    _hook(k, "tsl_record_saved", RecordEvent(ref=contact.ref, record=older, version=v + 1))
    assert k.runtime.outbox.jobs(alice.id) == []


def test_a_save_whose_hook_runs_after_the_delete_does_not_bring_the_item_back(kanzlei):
    k = kanzlei
    k.runtime.worker.stop()
    alice = k.lawyers[0]
    appt = k.host.iter_records("appointment")[0]
    appt = k.host.save(dataclasses.replace(appt, participant_ids=(alice.id,), modified_at=T0))
    _drain(k)
    assert len(k.ours(alice, appt.ref.key, "calendar")) == 1

    edited = dataclasses.replace(
        appt, subject="kurz vor dem Löschen", modified_at=T0 + dt.timedelta(seconds=1)
    )
    deleted_at = T0 + dt.timedelta(seconds=2)
    _hook(k, "tsl_record_deleted", RecordEvent(ref=appt.ref, record=edited, at=deleted_at))
    _hook(k, "tsl_record_saved", RecordEvent(ref=appt.ref, record=edited))  # committed before the delete
    _drain(k)
    assert k.ours(alice, appt.ref.key, "calendar") == []
    assert k.runtime.outbox.jobs(alice.id) == []


def test_a_save_whose_hook_runs_after_the_delete_was_pushed_does_not_bring_the_item_back(kanzlei):
    k = kanzlei
    k.runtime.worker.stop()
    alice = k.lawyers[0]
    appt = k.host.iter_records("appointment")[1]
    appt = k.host.save(dataclasses.replace(appt, participant_ids=(alice.id,), modified_at=T0))
    _drain(k)
    assert len(k.ours(alice, appt.ref.key, "calendar")) == 1

    edited = dataclasses.replace(
        appt, subject="kurz vor dem Löschen", modified_at=T0 + dt.timedelta(seconds=1)
    )
    _hook(k, "tsl_record_deleted", RecordEvent(ref=appt.ref, record=edited, at=T0 + dt.timedelta(seconds=2)))
    _drain(k)  # the delete is pushed before the save's hook runs
    assert k.ours(alice, appt.ref.key, "calendar") == []
    _hook(k, "tsl_record_saved", RecordEvent(ref=appt.ref, record=edited))
    _drain(k)
    assert k.ours(alice, appt.ref.key, "calendar") == []
