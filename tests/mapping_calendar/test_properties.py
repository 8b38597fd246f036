"""Hypothesis: any record either maps or raises MappingError, and never moves a date."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsl_exchange_plugin.mapping.appointment import map_appointment
from tsl_exchange_plugin.mapping.common import USER_NOTES_MARKER, MappingError
from tsl_exchange_plugin.mapping.context import MappingContext
from tsl_exchange_plugin.mapping.deadline import keys_for, map_deadline
from tsl_exchange_plugin.mapping.items import content_hash
from tsl_exchange_plugin.mapping.reminder import map_reminder
from tsl_hostapi.types import Appointment, Case, Deadline, Reminder, User

USERS = {u.id: u for u in (User("u1", "Dr. Anna Berg"), User("u2", "Max Weber"))}
CASES = {"c1": Case("c1", "123/26", "Müller ./. Schmidt wegen Forderung", lawyer_id="u1")}
ZONES = ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata", "Australia/Lord_Howe", "Nope/Zone", ""]

# 150 examples keep the file at a few seconds; TSL_MAPPING_EXAMPLES=5000 for a long local run.
FAST = settings(
    max_examples=int(os.environ.get("TSL_MAPPING_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

texts = st.text(max_size=40)
dates = st.dates(min_value=dt.date(1850, 1, 1), max_value=dt.date(2150, 12, 31))
# Mostly near today so DST gaps and real-life values are hit, sometimes anywhere.
near_dates = st.dates(min_value=dt.date(2025, 1, 1), max_value=dt.date(2027, 12, 31))
naive_times = st.one_of(
    st.datetimes(min_value=dt.datetime(1850, 1, 1), max_value=dt.datetime(2150, 12, 31)),
    st.builds(
        dt.datetime.combine,
        near_dates,
        st.times(),
    ),
)
aware_times = st.builds(
    lambda d, offset: d.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset))),
    st.datetimes(min_value=dt.datetime(1890, 1, 1), max_value=dt.datetime(2110, 12, 31)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
times = st.one_of(naive_times, naive_times, aware_times)
ids = st.text(min_size=1, max_size=8)
people = st.lists(st.sampled_from(["u1", "u2", "u77", ""]), max_size=3).map(tuple)
case_ids = st.sampled_from(["", "c1", "c404"])

contexts = st.builds(
    MappingContext,
    recipient=st.just(USERS["u1"]),
    timezone=st.sampled_from(["Europe/Berlin", "America/New_York", "Pacific/Chatham"]),
    appointment_reminder_minutes=st.one_of(st.none(), st.integers(0, 20000)),
    all_day_reminder_minutes=st.one_of(st.none(), st.integers(0, 20000)),
    deadline_reminder_minutes=st.one_of(st.none(), st.integers(0, 20000)),
    pre_deadline_reminder_minutes=st.one_of(st.none(), st.integers(0, 20000)),
    reminder_time=st.one_of(st.none(), st.times()),
    done_deadline=st.sampled_from(["mark", "remove"]),
    source_category=st.sampled_from(["", "timeSensor LEGAL"]),
    cases=st.just(CASES),
    users=st.just(USERS),
)

appointments = st.builds(
    Appointment,
    id=ids,
    subject=texts,
    start=st.one_of(st.none(), times),
    end=st.one_of(st.none(), times),
    all_day=st.booleans(),
    start_date=st.one_of(st.none(), dates),
    end_date=st.one_of(st.none(), dates),
    timezone=st.one_of(st.sampled_from(ZONES), st.text(max_size=12)),
    location=texts,
    participant_ids=people,
    case_id=case_ids,
    appointment_type=texts,
    busy=st.booleans(),
    reminder_minutes=st.one_of(st.none(), st.integers(-100, 50000)),
    notes=st.text(max_size=200),
)

deadlines = st.builds(
    Deadline,
    id=ids,
    due_date=st.one_of(st.none(), dates, near_dates),
    kind=texts,
    pre_deadline_dates=st.lists(st.one_of(dates, near_dates), max_size=4).map(tuple),
    responsible_ids=people,
    case_id=case_ids,
    done=st.booleans(),
    notes=texts,
)

reminders = st.builds(
    Reminder,
    id=ids,
    due_date=st.one_of(st.none(), dates, near_dates),
    subject=texts,
    responsible_ids=people,
    case_id=case_ids,
    done=st.booleans(),
    notes=texts,
)


def assert_well_formed(item) -> None:
    assert "\n" not in item.subject and len(item.subject) <= 255
    assert item.body.rstrip("\n").endswith(USER_NOTES_MARKER)
    assert item.body.count(USER_NOTES_MARKER) == 1
    # The hash is stable for an equal item and sees a change in what the plugin writes.
    assert content_hash(item) == content_hash(dataclasses.replace(item))
    assert content_hash(dataclasses.replace(item, subject=item.subject + "x")) != content_hash(item)


@FAST
@given(appointments, contexts)
def test_any_appointment_maps_or_raises_mapping_error(appt, ctx):
    try:
        entry = map_appointment(appt, ctx)
    except MappingError as err:
        assert str(err)
        return
    assert_well_formed(entry)
    assert entry.record_key == f"appointment:{appt.id}"
    if appt.all_day:
        assert entry.all_day and entry.start is None and entry.end is None
        if appt.start_date is not None:
            assert entry.start_date == appt.start_date
        if appt.end_date is not None:
            assert entry.end_date == appt.end_date
        assert entry.start_date <= entry.end_date
    else:
        assert entry.timezone == appt.timezone
        assert entry.start.tzinfo is None and entry.end.tzinfo is None
        assert entry.start <= entry.end
        zone = ZoneInfo(appt.timezone)
        for given_time, out in ((appt.start, entry.start), (appt.end, entry.end)):
            if given_time is None:
                continue
            if given_time.tzinfo is None:
                assert out == given_time  # wall clock kept exactly
            else:
                assert out.replace(tzinfo=zone) == given_time  # the same instant


@FAST
@given(deadlines, contexts)
def test_any_deadline_maps_or_raises_and_keeps_the_hosts_dates(deadline, ctx):
    try:
        items = map_deadline(deadline, ctx)
    except MappingError as err:
        assert str(err)
        return
    if deadline.done and ctx.done_deadline == "remove":
        assert items == []
        return
    assert items[0].start_date == items[0].end_date == deadline.due_date
    assert [i.start_date for i in items[1:]] == sorted(set(deadline.pre_deadline_dates))
    keys = [i.record_key for i in items]
    assert keys == keys_for("deadline", deadline) and len(set(keys)) == len(keys)
    for item in items:
        assert_well_formed(item)
        assert item.all_day and item.start_date == item.end_date and item.free_busy == "Free"
        assert item.start_date <= deadline.due_date
        assert (item.reminder_minutes is None) == (deadline.done or item.reminder_minutes is None)
        assert item.subject.startswith("Erledigt: ") == deadline.done


@FAST
@given(reminders, contexts)
def test_any_reminder_maps_or_raises_and_keeps_the_hosts_date(reminder, ctx):
    try:
        task = map_reminder(reminder, ctx)
    except MappingError as err:
        assert str(err)
        return
    assert_well_formed(task)
    assert task.due_date == task.start_date == reminder.due_date
    assert task.completed == reminder.done
    if task.reminder_at is not None:
        assert not reminder.done
        assert task.reminder_at.tzinfo is not None
        assert task.reminder_at.astimezone(ctx.zone).date() == reminder.due_date
