"""Contacts from a host save into the right Exchange mailboxes, end to end:
reference host -> hooks -> queue -> worker -> unmodified exchangelib over HTTP -> sandbox."""

from __future__ import annotations

import dataclasses
import time

from tsl_exchange_plugin import PLUGIN_ID
from tsl_hostapi.types import Contact, Phone, RecordRef, SettingsContext

SET_SYNC = f"{PLUGIN_ID}.set_sync"
REMOVE_SYNC = f"{PLUGIN_ID}.remove_sync"


def subscribe(k, contact_ids, users):
    result = k.host.press(
        k.admin, SET_SYNC, [RecordRef("contact", c) for c in contact_ids], {"users": [u.id for u in users]}
    )
    assert result.ok, result.message
    return result


def test_save_arrives_only_in_subscribed_mailboxes(kanzlei):
    k = kanzlei
    alice, bob, carol = k.lawyers
    contact = k.firm.contacts[0]
    subscribe(k, [contact.id], [alice, bob])
    k.drain()
    key = contact.ref.key
    assert len(k.ours(alice, key)) == 1
    assert len(k.ours(bob, key)) == 1
    assert k.ours(carol, key) == []
    item = k.ours(alice, key)[0]
    if contact.surname:
        assert item["surname"] == contact.surname
    else:
        assert item["company_name"] == contact.company


def test_update_updates_one_item_in_place(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = next(c for c in k.firm.contacts if c.kind == "person" and c.surname)
    subscribe(k, [contact.id], [alice])
    k.drain()
    (before,) = k.ours(alice, contact.ref.key)
    k.host.save(
        dataclasses.replace(contact, job_title="Notarin", phones=(Phone("mobile", "+49 170 1234567"),))
    )
    k.drain()
    (after,) = k.ours(alice, contact.ref.key)
    assert after["item_id"] == before["item_id"]
    assert after["change_key"] != before["change_key"]
    assert after["job_title"] == "Notarin"
    numbers = str(after.get("phone_numbers"))
    assert "+49 170 1234567" in numbers
    # Phones the host no longer sends are cleared, not left stale.
    for old in contact.phones:
        if old.number != "+49 170 1234567":
            assert old.number not in numbers


def test_unchanged_save_writes_nothing(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[1]
    subscribe(k, [contact.id], [alice])
    k.drain()
    updates_before = k.server.engine.request_counts(k.mailbox_of[alice.id]).get("UpdateItem", 0)
    k.host.save(contact)
    k.drain()
    assert k.server.engine.request_counts(k.mailbox_of[alice.id]).get("UpdateItem", 0) == updates_before
    assert len(k.ours(alice, contact.ref.key)) == 1


def test_delete_and_unsubscribe_remove_exactly_our_item(kanzlei):
    k = kanzlei
    alice, bob, _ = k.lawyers
    c1, c2 = k.firm.contacts[2], k.firm.contacts[3]
    subscribe(k, [c1.id, c2.id], [alice, bob])
    k.drain()
    alice_total = len(k.items(alice))
    k.host.delete(c1.ref)
    result = k.host.press(k.admin, REMOVE_SYNC, [c2.ref], {"users": [alice.id]})
    assert result.ok
    k.drain()
    assert k.ours(alice, c1.ref.key) == [] and k.ours(bob, c1.ref.key) == []
    assert k.ours(alice, c2.ref.key) == []
    assert len(k.ours(bob, c2.ref.key)) == 1
    assert len(k.items(alice)) == alice_total - 2


def test_item_not_created_by_plugin_is_never_touched(kanzlei):
    from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS, exchangelib_account

    k = kanzlei
    alice = k.lawyers[0]
    email = k.mailbox_of[alice.id]
    account = exchangelib_account(k.server, email, auth="basic")
    from exchangelib import Contact as EwsContact

    own = EwsContact(
        folder=account.contacts, display_name="Privat Eintrag", given_name="Privat", surname="Eintrag"
    )
    own.save()
    contact = k.firm.contacts[4]
    subscribe(k, [contact.id], [alice])
    k.drain()
    k.host.delete(contact.ref)
    k.drain()
    names = [i.get("surname") for i in k.items(alice)]
    assert "Eintrag" in names
    assert k.ours(alice, contact.ref.key) == []
    assert SANDBOX_PASSWORDS  # the fixture's mailboxes are the sandbox's


def test_contact_sync_tab_subscribes_and_unsubscribes(kanzlei):
    k = kanzlei
    alice, bob, _ = k.lawyers
    contact = k.firm.contacts[5]
    ctx = SettingsContext("contact", contact.id)
    tab = k.host.open_tab(k.admin, "contact", f"{PLUGIN_ID}.contact", ctx)
    offered = {u["id"] for u in tab.values.values["users"]}
    assert {alice.id, bob.id} <= offered
    assert k.host.save_tab(k.admin, "contact", f"{PLUGIN_ID}.contact", ctx, {"users": [bob.id]}).ok
    k.drain()
    assert len(k.ours(bob, contact.ref.key)) == 1 and k.ours(alice, contact.ref.key) == []
    assert k.host.save_tab(k.admin, "contact", f"{PLUGIN_ID}.contact", ctx, {"users": [alice.id]}).ok
    k.drain()
    assert len(k.ours(alice, contact.ref.key)) == 1 and k.ours(bob, contact.ref.key) == []


def test_odd_contacts_push_or_fail_with_reason(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    odd = [
        Contact(id="odd-company", kind="organisation", company="Nur Firma GmbH"),
        Contact(id="odd-notes", surname="Lang", notes="ä" * 5000),
        Contact(
            id="odd-emoji", given_name="Jürgen 😀", surname="Groß\u0007mann", emails=("kein-at-zeichen",)
        ),
        Contact(id="odd-birthday", surname="Schaltjahr", birthday=__import__("datetime").date(2028, 2, 29)),
        Contact(id="odd-noname"),
    ]
    for c in odd:
        k.host.save(c)
    subscribe(k, [c.id for c in odd], [alice])
    k.drain()
    assert k.ours(alice, "contact:odd-company")[0]["company_name"] == "Nur Firma GmbH"
    body = k.ours(alice, "contact:odd-notes")[0]["body"]
    assert "ä" * 5000 in body
    emoji = k.ours(alice, "contact:odd-emoji")[0]
    assert emoji["given_name"] == "Jürgen 😀" and emoji["surname"] == "Großmann"
    assert str(k.ours(alice, "contact:odd-birthday")[0]["birthday"]).startswith("2028-02-29")
    # A contact with neither name nor company cannot be pushed: kept, failed, with a reason.
    assert k.ours(alice, "contact:odd-noname") == []
    failed = k.runtime.outbox.jobs(status="failed")
    assert [j.record_key for j in failed] == ["contact:odd-noname"]
    assert "weder" in failed[0].last_error
    # Giving it a name later retries it.
    k.host.save(Contact(id="odd-noname", surname="Nachgetragen"))
    k.drain()
    assert k.ours(alice, "contact:odd-noname")[0]["surname"] == "Nachgetragen"
    assert k.runtime.outbox.jobs(status="failed") == []


def test_hook_never_raises_into_host(kanzlei):
    k = kanzlei
    runtime = k.runtime
    broken = runtime.enqueue.outbox

    class Exploding:
        def __getattr__(self, name):
            if name in ("enqueue", "holders"):
                raise RuntimeError("database on fire")
            return getattr(broken, name)

    subscribe(k, [k.firm.contacts[6].id], [k.lawyers[0]])
    k.drain()
    runtime.enqueue.outbox = Exploding()
    try:
        saved = k.host.save(dataclasses.replace(k.firm.contacts[6], notes="x"))
        assert saved is not None
        assert k.host.get_record(k.firm.contacts[6].ref).notes == "x"
        assert any("eingereiht" in n.message for n in k.host.notifications)
    finally:
        runtime.enqueue.outbox = broken


def test_wrong_password_parks_mailbox_without_retry_storm(kanzlei):
    k = kanzlei
    alice, bob, _ = k.lawyers
    k.configure(alice, password="falsch")
    contacts = k.firm.contacts[7:10]
    subscribe(k, [c.id for c in contacts], [alice, bob])
    # bob's mailbox still works while alice's is parked
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and k.runtime.outbox.pending_count(bob.id):
        time.sleep(0.05)
    assert all(len(k.ours(bob, c.ref.key)) == 1 for c in contacts)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = {s.mailbox: s for s in k.runtime.outbox.mailbox_states()}
        if states.get(alice.id) and states[alice.id].parked:
            break
        time.sleep(0.05)
    assert states[alice.id].parked
    assert "Passwort" in states[alice.id].parked_reason
    failures = k.server.stats()["http"].get("auth_failures", 0)
    assert failures >= 1
    # A window in which a retry storm would show (the worker's idle wake-ups come every
    # few hundred ms); parked means not one more login attempt.
    k.runtime.worker.wake()
    time.sleep(1.0)
    assert k.server.stats()["http"].get("auth_failures", 0) == failures
    assert k.runtime.outbox.pending_count(alice.id) == len(contacts)
    # Correct password: the mailbox resumes and everything arrives once.
    from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS

    k.configure(alice, password=SANDBOX_PASSWORDS[k.mailbox_of[alice.id]])
    k.drain()
    assert all(len(k.ours(alice, c.ref.key)) == 1 for c in contacts)
