"""The Graph backend against the Graph sandbox: token, contacts create/update/delete/lookup."""

from __future__ import annotations

import datetime as dt

from tsl_exchange_plugin.backends.base import ItemNotFound, ItemRef, Written
from tsl_exchange_plugin.mapping.common import USER_NOTES_MARKER
from tsl_exchange_plugin.mapping.items import ContactItem, EmailEntry, PhoneEntry


def contact(key: str, **kw) -> ContactItem:
    values = dict(
        display_name="Dr. Anna Müller",
        file_as="Müller, Anna",
        given_name="Anna",
        surname="Müller",
        email_addresses=(EmailEntry("EmailAddress1", "anna@mueller.de"),),
        phone_numbers=(PhoneEntry("BusinessPhone", "+49 30 1"), PhoneEntry("BusinessFax", "+49 30 9")),
        birthday=dt.date(1980, 2, 3),
        body=f"Anrede: Frau\n\n{USER_NOTES_MARKER}\n",
        categories=("Mandant",),
    )
    values.update(kw)
    return ContactItem(key, **values)


def test_create_find_update_delete(gsession, graph_sandbox, sandbox):
    (w,) = gsession.create([contact("contact:1")])
    assert isinstance(w, Written) and w.item_id.startswith("contact:")
    # The EWS side of the same store sees the item with our key, where EWS would have put it.
    (ews,) = sandbox.engine.list_items("alice@kanzlei.test", "contacts")
    assert ews["extended_properties"] == {"tslRecordId": "contact:1"}
    assert ews["surname"] == "Müller"
    assert ews["email_addresses"] == {"EmailAddress1": "anna@mueller.de"}
    assert "Fax geschäftlich: +49 30 9" in ews["body"]

    found = gsession.find_by_keys("contact", ["contact:1", "contact:2"])
    assert found == {"contact:1": [ItemRef(w.item_id, w.change_key)], "contact:2": []}
    assert list(gsession.find_all_ours("contact")) == ["contact:1"]

    # A note the user wrote on the phone below the marker survives an update.
    (graph_item,) = graph_sandbox.items("alice@kanzlei.test", "contacts")
    graph_sandbox.phone_edit(
        "alice@kanzlei.test", graph_item["id"], {"personalNotes": graph_item["personalNotes"] + "privat\n"}
    )
    (u,) = gsession.update([(ItemRef(w.item_id, w.change_key), contact("contact:1", surname="Schmidt"))])
    assert isinstance(u, Written) and u.item_id == w.item_id and u.change_key != w.change_key
    (ews,) = sandbox.engine.list_items("alice@kanzlei.test", "contacts")
    assert ews["surname"] == "Schmidt"
    assert ews["body"].endswith(f"{USER_NOTES_MARKER}\nprivat\n")

    assert gsession.delete([ItemRef(w.item_id, "")]) == [None]
    assert sandbox.engine.list_items("alice@kanzlei.test", "contacts") == []
    (gone,) = gsession.delete([ItemRef(w.item_id, "")])
    assert isinstance(gone, ItemNotFound)
    # Everything went out as $batch requests, each carrying a token msal fetched once.
    assert {r.path for r in graph_sandbox.log()} == {"/$batch"}
    assert graph_sandbox.token_requests == 1


def test_many_contacts_go_in_batches_of_twenty(gsession, graph_sandbox):
    items = [contact(f"contact:{n}") for n in range(45)]
    results = gsession.create(items)
    assert all(isinstance(r, Written) for r in results)
    assert [r.inner for r in graph_sandbox.log()] == [20, 20, 5]
    found = gsession.find_all_ours("contact")
    assert sorted(found) == sorted(i.record_key for i in items)
