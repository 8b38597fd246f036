"""Round trips of the boundary dataclasses through JSON, generated from their own type hints."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import types
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsl_hostapi.serialize import from_json, to_json
from tsl_hostapi.types import (
    ActionResult,
    Appointment,
    Case,
    Contact,
    Deadline,
    Phone,
    PostalAddress,
    RecordEvent,
    RecordRef,
    Reminder,
    SettingsTab,
    User,
)

RECORD_TYPES = (Contact, Case, Appointment, Deadline, Reminder)

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["Müller", "Weiß & Groß GbR", "Prof. Dr.", "Straße 1\nHinterhaus", "", "ẞ", "a\x00b"]
)
_tz = st.sampled_from(
    [None, dt.UTC, dt.timezone(dt.timedelta(hours=1)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]
)
_datetimes = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=_tz)
_dates = st.dates(min_value=dt.date(1, 1, 1)) | st.just(dt.date(2024, 2, 29))


def strategy_for(hint: Any) -> st.SearchStrategy:
    """A strategy for a type hint as used in types.py."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is str:
        return _text
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(-(2**53), 2**53)
    if hint is dt.datetime:
        return _datetimes
    if hint is dt.date:
        return _dates
    if hint is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(a) for a in args])
    if origin is tuple:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if dataclasses.is_dataclass(hint):
        return dataclass_strategy(hint)
    raise NotImplementedError(hint)


def dataclass_strategy(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)})


@pytest.mark.parametrize("cls", [*RECORD_TYPES, User, RecordRef, RecordEvent, Phone, PostalAddress])
def test_round_trip_every_record_type(cls):
    @settings(max_examples=60, deadline=None)
    @given(dataclass_strategy(cls))
    def check(obj):
        text = to_json(obj)
        assert from_json(cls, text) == obj
        assert to_json(from_json(cls, text)) == text  # stable: usable for content hashes

    check()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of([dataclass_strategy(c) for c in RECORD_TYPES]), max_size=4))
def test_event_with_any_record_kind(records):
    for record in records:
        event = RecordEvent(ref=record.ref, record=record)
        back = from_json(RecordEvent, to_json(event))
        assert back == event and type(back.record) is type(record)


def test_tuple_of_records_and_nested():
    contacts = (
        Contact("1", phones=(Phone("mobile", "+49 171 1"),)),
        Contact("2", birthday=dt.date(1956, 2, 29)),
    )
    assert from_json(tuple[Contact, ...], to_json(contacts)) == contacts
    tab = SettingsTab("p", "t", "Titel", "user")
    assert from_json(SettingsTab, to_json(tab)) == tab
    result = ActionResult(ok=True, status_icon="green")
    assert from_json(ActionResult, to_json(result)) == result


def test_format_is_plain_json():
    c = Contact(
        "1",
        surname="Weiß",
        birthday=dt.date(2000, 2, 29),
        modified_at=dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC),
    )
    data = json.loads(to_json(c))
    assert data["surname"] == "Weiß"  # not \u-escaped
    assert "Weiß" in to_json(c)
    assert data["birthday"] == "2000-02-29"
    assert data["modified_at"] == "2026-03-02T08:00:00+00:00"
    assert "__type__" not in data  # only where a field could hold several classes


def test_old_and_new_snapshots_still_load():
    # a snapshot from a newer version with an extra key, and one lacking optional fields
    newer = '{"id":"1","surname":"Kühn","shoe_size":44}'
    assert from_json(Contact, newer) == Contact("1", surname="Kühn")
    assert from_json(Deadline, '{"id":"9","due_date":"2026-03-05"}') == Deadline(
        "9", due_date=dt.date(2026, 3, 5)
    )


@pytest.mark.parametrize(
    ("cls", "text", "match"),
    [
        (Contact, "{kaputt", "Kein gültiges JSON"),
        (Contact, '{"surname":"x"}', "unvollständig"),
        (Contact, '{"id":"1","birthday":"29.02.2000"}', "birthday"),
        (Contact, '{"id":"1","kind":"robot"}', "kind"),
        (Contact, '{"id":1}', "Text"),
        (Deadline, '{"id":"1","due_date":null,"done":"ja"}', "done"),
        (RecordEvent, '{"ref":{"kind":"c","id":"1"},"record":{"__type__":"Spaceship"}}', "Spaceship"),
    ],
)
def test_bad_input_gets_a_clear_error(cls, text, match):
    with pytest.raises(ValueError, match=match):
        from_json(cls, text)
