"""What the EWS backend makes of refused content: never "outcome unknown".

A request refused as a whole (ErrorSchemaValidation) is RequestRejected for the items of that
request only; a per-item refusal is that item's ItemRejected while the others are written.
"""

from __future__ import annotations

import datetime as dt

import pytest
from exchangelib import errors as e

from tsl_exchange_plugin.backends.base import ItemRef, ItemRejected, RequestRejected, Written
from tsl_exchange_plugin.backends.ews.backend import EwsBackend
from tsl_exchange_plugin.backends.ews.errors import translate_error
from tsl_exchange_plugin.mapping.items import ContactItem

from .conftest import mailbox_account

BAD_WEBSITE = "http://www.kanzlei müller.de"


@pytest.mark.parametrize("creating", [False, True])
def test_a_schema_error_is_a_refused_request_never_unknown(creating):
    err = translate_error(e.ErrorSchemaValidation("The request failed schema validation"), creating=creating)
    assert type(err) is RequestRejected
    assert "abgelehnt" in str(err) and "ErrorSchemaValidation" in str(err)


@pytest.mark.parametrize(
    "exc",
    [
        e.ErrorValueOutOfRange("x"),
        e.ErrorInvalidPropertySet("x"),
        e.ErrorCalendarEndDateIsEarlierThanStartDate("x"),
    ],
)
def test_an_invalid_value_is_the_items_rejection_even_in_a_create(exc):
    err = translate_error(exc, creating=True)
    assert type(err) is ItemRejected
    assert "bitte" in str(err).lower()


def contact(key: str, **kw) -> ContactItem:
    return ContactItem(key, "Muster", "Muster", surname="Muster", **kw)


def test_a_per_item_refusal_leaves_the_other_answers_of_the_request(session, new_key, sandbox):
    keys = [new_key() for _ in range(3)]
    results = session.create(
        [contact(keys[0]), contact(keys[1], birthday=dt.date(9999, 12, 31)), contact(keys[2])]
    )
    assert [type(r) for r in results] == [Written, ItemRejected, Written]
    assert "ErrorValueOutOfRange" in str(results[1])
    stored = {
        i["extended_properties"].get("tslRecordId") for i in sandbox.engine.list_items("alice@kanzlei.test")
    }
    assert {keys[0], keys[2]} <= stored and keys[1] not in stored


def test_a_refused_chunk_is_reported_for_its_items_only(sandbox, new_key):
    session = EwsBackend(chunk_size=2).session(mailbox_account(sandbox))
    try:
        keys = [new_key() for _ in range(4)]
        items = [contact(k) for k in keys]
        items[2] = contact(keys[2], business_homepage=BAD_WEBSITE)
        results = session.create(items)
    finally:
        session.close()
    assert [type(r) for r in results] == [Written, Written, RequestRejected, RequestRejected]


def test_an_update_refused_as_a_whole_is_request_rejected(session, new_key):
    key = new_key()
    (written,) = session.create([contact(key)])
    assert isinstance(written, Written)
    (result,) = session.update(
        [(ItemRef(written.item_id, written.change_key), contact(key, business_homepage=BAD_WEBSITE))]
    )
    assert type(result) is RequestRejected
