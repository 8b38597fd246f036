"""The plugin pushes through the worker into Microsoft 365 mailboxes (Graph sandbox), end to end."""

from __future__ import annotations

import dataclasses

from tsl_exchange_plugin import PLUGIN_ID
from tsl_hostapi.types import Phone, RecordRef

SET_SYNC = f"{PLUGIN_ID}.set_sync"


def subscribe(k, contact_ids, users):
    result = k.host.press(
        k.admin, SET_SYNC, [RecordRef("contact", c) for c in contact_ids], {"users": [u.id for u in users]}
    )
    assert result.ok, result.message


def test_contacts_through_the_worker(gkanzlei):
    k = gkanzlei
    alice, bob, carol = k.lawyers
    person = next(c for c in k.firm.contacts if c.kind == "person" and c.surname)
    subscribe(k, [person.id], [alice, bob])
    k.drain()
    (item,) = k.ours(alice, person.ref.key)
    assert item["surname"] == person.surname
    assert len(k.ours(bob, person.ref.key)) == 1
    assert k.ours(carol, person.ref.key) == []
    # Only Graph wrote them: the EWS endpoint saw no write.
    assert not k.server.engine.request_counts(k.mailbox_of[alice.id]).get("CreateItem")

    k.host.save(
        dataclasses.replace(person, job_title="Notarin", phones=(Phone("mobile", "+49 170 1234567"),))
    )
    k.drain()
    (after,) = k.ours(alice, person.ref.key)
    assert after["item_id"] == item["item_id"]
    assert after["job_title"] == "Notarin"
    assert after["phone_numbers"] == {"MobilePhone": "+49 170 1234567"}

    k.host.delete(person.ref)
    k.drain()
    assert k.ours(alice, person.ref.key) == []
    assert k.ours(bob, person.ref.key) == []
