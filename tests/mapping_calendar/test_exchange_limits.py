"""Calendar and task values Exchange refuses are refused here, with a reason, never shifted."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest

from tsl_exchange_plugin.mapping.appointment import map_appointment
from tsl_exchange_plugin.mapping.common import MAX_REMINDER_MINUTES, MappingError
from tsl_exchange_plugin.mapping.deadline import map_deadline
from tsl_exchange_plugin.mapping.reminder import map_reminder
from tsl_hostapi.types import Appointment, Deadline, Reminder


def appt(**kw) -> Appointment:
    values = dict(
        id="a1",
        subject="Verhandlung",
        start=dt.datetime(2026, 5, 4, 10, 0),
        end=dt.datetime(2026, 5, 4, 11, 0),
        participant_ids=("u1",),
    )
    values.update(kw)
    return Appointment(**values)


# ----------------------------------------------------------------------------- reminders


def test_the_longest_reminder_exchange_allows_is_kept(ctx):
    assert map_appointment(appt(reminder_minutes=MAX_REMINDER_MINUTES), ctx).reminder_minutes == 2_629_800


@pytest.mark.parametrize("minutes", [MAX_REMINDER_MINUTES + 1, 10_000_000])
def test_a_longer_reminder_is_refused_not_clamped(ctx, minutes):
    with pytest.raises(
        MappingError, match=f"Die Erinnerung {minutes} Minuten.*höchstens 2629800.*korrigieren"
    ):
        map_appointment(appt(reminder_minutes=minutes), ctx)


def test_a_firm_lead_time_beyond_the_limit_is_refused_where_the_context_is_built(ctx_factory):
    with pytest.raises(ValueError, match="höchstens"):
        ctx_factory(deadline_reminder_minutes=MAX_REMINDER_MINUTES + 1)


# ----------------------------------------------------------------------------- local mean time


@pytest.mark.parametrize(
    ("zone", "shown"),
    [("America/St_Johns", "UTC-03:30:52"), ("Europe/Amsterdam", "UTC+00:19:32")],
)
def test_a_time_in_local_mean_time_is_refused_with_its_offset(ctx, zone, shown):
    old = appt(timezone=zone, start=dt.datetime(1900, 3, 1, 10, 0), end=dt.datetime(1900, 3, 1, 11, 0))
    with pytest.raises(
        MappingError, match=f"Der Terminbeginn 01.03.1900 10:00 Uhr.*{zone}.*{re.escape(shown)}"
    ):
        map_appointment(old, ctx)


def test_the_same_zone_after_zone_time_was_adopted_maps(ctx):
    later = appt(
        timezone="America/St_Johns", start=dt.datetime(1936, 3, 1, 10), end=dt.datetime(1936, 3, 1, 11)
    )
    assert map_appointment(later, ctx).start == dt.datetime(1936, 3, 1, 10)


def test_an_all_day_deadline_in_local_mean_time_of_the_recipient_is_refused(ctx_factory):
    ctx = ctx_factory(timezone="Europe/Amsterdam")
    deadline = Deadline(id="d1", due_date=dt.date(1910, 6, 1), responsible_ids=("u1",))
    with pytest.raises(MappingError, match="Das Fristende 01.06.1910.*Europe/Amsterdam.*UTC\\+00:19:32"):
        map_deadline(deadline, ctx)
    assert map_deadline(dataclasses.replace(deadline, due_date=dt.date(1950, 6, 1)), ctx)


def test_a_wiedervorlage_whose_reminder_falls_in_local_mean_time_is_refused(ctx_factory):
    ctx = ctx_factory(timezone="America/St_Johns")
    with pytest.raises(MappingError, match="Erinnerung der Wiedervorlage.*UTC-03:30:52"):
        map_reminder(Reminder(id="r1", due_date=dt.date(1905, 1, 2), responsible_ids=("u1",)), ctx)
    # Done: no reminder is sent, so nothing stands in the way.
    done = map_reminder(Reminder(id="r1", due_date=dt.date(1905, 1, 2), done=True), ctx)
    assert done.reminder_at is None
