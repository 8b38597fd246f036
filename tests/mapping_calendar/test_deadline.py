"""Frist and Vorfristen -> all-day CalendarEntry items; keys for cleanup."""

from __future__ import annotations

import datetime as dt

import pytest

from tsl_exchange_plugin.mapping.common import USER_NOTES_MARKER, MappingError
from tsl_exchange_plugin.mapping.deadline import keys_for, map_deadline, ref_for_key
from tsl_hostapi.types import Appointment, Deadline, RecordRef, Reminder

DUE = dt.date(2026, 4, 14)
PRE1 = dt.date(2026, 3, 31)
PRE2 = dt.date(2026, 4, 7)


def frist(**overrides) -> Deadline:
    values = dict(
        id="9",
        due_date=DUE,
        kind="Berufungsbegründungsfrist",
        pre_deadline_dates=(PRE2, PRE1),  # unsorted on purpose
        responsible_ids=("u1", "u3"),
        case_id="c1",
        notes="Fristverlängerung beantragt?",
    )
    values.update(overrides)
    return Deadline(**values)


def by_key(items):
    return {item.record_key: item for item in items}


def test_frist_item(ctx):
    items = map_deadline(frist(pre_deadline_dates=()), ctx)
    assert len(items) == 1
    item = items[0]
    assert item.record_key == "deadline:9"
    assert item.subject == "Frist: Berufungsbegründungsfrist – Az. 123/26"
    assert item.all_day is True and item.start is None and item.end is None
    assert item.start_date == item.end_date == DUE
    assert item.free_busy == "Free"
    assert item.categories == ("Frist", "Berufungsbegründungsfrist")
    assert item.reminder_minutes == 1440
    assert item.timezone == "Europe/Berlin"


def test_frist_body_in_german(ctx):
    body = map_deadline(frist(), ctx)[0].body
    assert "Fällig am: 14.04.2026" in body
    assert "Vorfristen: 31.03.2026, 07.04.2026" in body
    assert "Akte: Az. 123/26 – Müller ./. Schmidt wegen Forderung" in body
    assert "Verantwortlich: Dr. Anna Berg, Julia Özdemir" in body
    assert "Fristverlängerung beantragt?" in body
    assert "tsl://deadline/9" in body
    assert body.rstrip("\n").endswith(USER_NOTES_MARKER) and body.count(USER_NOTES_MARKER) == 1
    assert "erledigt" not in body


def test_without_kind_or_case(ctx):
    item = map_deadline(frist(kind="", pre_deadline_dates=()), ctx)[0]
    assert item.subject == "Frist – Az. 123/26"
    assert item.categories == ("Frist",)
    bare = map_deadline(frist(case_id="", pre_deadline_dates=()), ctx)[0]
    assert bare.subject == "Frist: Berufungsbegründungsfrist"
    assert "Akte:" not in bare.body


def test_vorfristen_are_own_all_day_items_with_positional_keys(ctx_factory):
    ctx = ctx_factory(pre_deadline_reminder_minutes=480)
    items = map_deadline(frist(), ctx)
    assert [i.record_key for i in items] == ["deadline:9", "deadline:9#vorfrist1", "deadline:9#vorfrist2"]
    keyed = by_key(items)
    first, second = keyed["deadline:9#vorfrist1"], keyed["deadline:9#vorfrist2"]
    assert first.start_date == first.end_date == PRE1
    assert second.start_date == second.end_date == PRE2
    for item in (first, second):
        assert item.all_day and item.free_busy == "Free"
        assert item.subject == "Vorfrist: Berufungsbegründungsfrist (Fristende 14.04.2026) – Az. 123/26"
        assert item.categories == ("Vorfrist", "Berufungsbegründungsfrist")
        assert item.reminder_minutes == 480
        # The Vorfrist names its deadline and the due date, and links to the deadline record.
        assert "Frist: Berufungsbegründungsfrist" in item.body
        assert "Fristende: 14.04.2026" in item.body
        assert "tsl://deadline/9" in item.body
    assert "Vorfrist 1 von 2" in first.body and "Vorfrist 2 von 2" in second.body
    assert keyed["deadline:9"].reminder_minutes == 1440


def test_moving_a_vorfrist_moves_the_item_with_the_same_key(ctx):
    before = by_key(map_deadline(frist(), ctx))
    moved = by_key(map_deadline(frist(pre_deadline_dates=(dt.date(2026, 4, 1), PRE2)), ctx))
    assert before.keys() == moved.keys()
    assert before["deadline:9#vorfrist1"].start_date == PRE1
    assert moved["deadline:9#vorfrist1"].start_date == dt.date(2026, 4, 1)
    assert moved["deadline:9#vorfrist2"] == before["deadline:9#vorfrist2"]


def test_dropping_a_vorfrist_drops_the_last_key(ctx):
    keys = [i.record_key for i in map_deadline(frist(pre_deadline_dates=(PRE2,)), ctx)]
    assert keys == ["deadline:9", "deadline:9#vorfrist1"]


def test_duplicate_vorfrist_dates_are_one_item(ctx):
    items = map_deadline(frist(pre_deadline_dates=(PRE1, PRE1, PRE2)), ctx)
    assert [i.start_date for i in items[1:]] == [PRE1, PRE2]


def test_vorfrist_on_the_due_date_is_allowed_after_it_is_not(ctx):
    items = map_deadline(frist(pre_deadline_dates=(DUE,)), ctx)
    assert items[1].start_date == DUE
    with pytest.raises(MappingError) as err:
        map_deadline(frist(pre_deadline_dates=(PRE1, dt.date(2026, 4, 15))), ctx)
    assert "15.04.2026" in str(err.value) and "14.04.2026" in str(err.value)


def test_dates_are_exactly_the_hosts_even_on_a_weekend(ctx):
    saturday = dt.date(2026, 4, 18)
    items = map_deadline(frist(due_date=saturday, pre_deadline_dates=(dt.date(2026, 4, 12),)), ctx)
    assert [i.start_date for i in items] == [saturday, dt.date(2026, 4, 12)]
    assert all(i.start_date == i.end_date for i in items)


def test_done_marked(ctx):
    items = map_deadline(frist(done=True), ctx)
    assert [i.record_key for i in items] == ["deadline:9", "deadline:9#vorfrist1", "deadline:9#vorfrist2"]
    assert items[0].subject == "Erledigt: Frist: Berufungsbegründungsfrist – Az. 123/26"
    assert items[1].subject.startswith("Erledigt: Vorfrist: ")
    for item in items:
        assert "Erledigt" in item.categories
        assert item.reminder_minutes is None
        assert "Status: erledigt" in item.body
    assert items[0].categories == ("Frist", "Berufungsbegründungsfrist", "Erledigt")


def test_reopened_deadline_looks_as_before(ctx):
    open_items = map_deadline(frist(), ctx)
    assert map_deadline(frist(done=True), ctx) != open_items
    assert map_deadline(frist(done=False), ctx) == open_items


def test_done_removed_gives_no_items_even_with_broken_dates(ctx_factory):
    ctx = ctx_factory(done_deadline="remove")
    assert map_deadline(frist(done=True), ctx) == []
    assert map_deadline(frist(done=True, due_date=None), ctx) == []
    assert len(map_deadline(frist(done=False), ctx)) == 3


def test_missing_due_date_is_refused(ctx):
    with pytest.raises(MappingError, match="kein Fälligkeitsdatum"):
        map_deadline(frist(due_date=None), ctx)


@pytest.mark.parametrize(
    ("due", "pre"),
    [
        (dt.date(2101, 1, 1), ()),
        (dt.date(1899, 12, 31), ()),
        (DUE, (dt.date(1899, 12, 31),)),
        (dt.date(26, 4, 14), ()),  # a typo for 2026
    ],
)
def test_dates_out_of_range_are_refused(ctx, due, pre):
    with pytest.raises(MappingError, match="außerhalb"):
        map_deadline(frist(due_date=due, pre_deadline_dates=pre), ctx)


def test_context_zone_and_source_category(ctx_factory):
    items = map_deadline(frist(), ctx_factory(timezone="Europe/Zurich", source_category="timeSensor LEGAL"))
    assert all(i.timezone == "Europe/Zurich" for i in items)
    assert items[0].categories == ("Frist", "Berufungsbegründungsfrist", "timeSensor LEGAL")


def test_kind_equal_to_category_is_not_doubled(ctx):
    assert map_deadline(frist(kind="frist", pre_deadline_dates=()), ctx)[0].categories == ("Frist",)


# --------------------------------------------------------------------------- keys


def test_keys_for_deadline_equals_what_it_maps_to(ctx):
    deadline = frist()
    assert keys_for("deadline", deadline) == [i.record_key for i in map_deadline(deadline, ctx)]


def test_keys_for_a_done_removed_or_broken_deadline(ctx):
    broken = frist(due_date=None, done=True, pre_deadline_dates=(PRE1, PRE1, PRE2))
    assert keys_for("deadline", broken) == ["deadline:9", "deadline:9#vorfrist1", "deadline:9#vorfrist2"]


def test_keys_for_appointment_and_reminder():
    assert keys_for("appointment", Appointment("42", "x")) == ["appointment:42"]
    assert keys_for("reminder", Reminder("5", None)) == ["reminder:5"]


def test_keys_for_refuses_wrong_kind():
    with pytest.raises(ValueError):
        keys_for("reminder", Appointment("42", "x"))
    with pytest.raises(ValueError):
        keys_for("contact", Appointment("42", "x"))


@pytest.mark.parametrize(
    ("key", "ref"),
    [
        ("deadline:9", RecordRef("deadline", "9")),
        ("deadline:9#vorfrist12", RecordRef("deadline", "9")),
        ("appointment:a#vorfristx", RecordRef("appointment", "a#vorfristx")),
        ("deadline:x#vorfrist1#vorfrist2", RecordRef("deadline", "x#vorfrist1")),
    ],
)
def test_ref_for_key(key, ref):
    assert ref_for_key(key) == ref
