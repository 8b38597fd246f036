"""Wiedervorlage -> TaskEntry."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tsl_exchange_plugin.mapping.common import USER_NOTES_MARKER, MappingError
from tsl_exchange_plugin.mapping.reminder import map_reminder
from tsl_hostapi.types import Reminder

DUE = dt.date(2026, 5, 4)


def wv(**overrides) -> Reminder:
    values = dict(
        id="5",
        due_date=DUE,
        subject="Zahlungseingang prüfen",
        responsible_ids=("u2",),
        case_id="c1",
        notes="Mandant anrufen, falls nichts kam",
    )
    values.update(overrides)
    return Reminder(**values)


def test_task_fields(ctx):
    task = map_reminder(wv(), ctx)
    assert task.record_key == "reminder:5"
    assert task.subject == "WV: Zahlungseingang prüfen – Az. 123/26"
    assert task.due_date == task.start_date == DUE
    assert task.completed is False
    assert task.categories == ("Wiedervorlage",)
    assert task.timezone == "Europe/Berlin"
    assert task.reminder_at == dt.datetime(2026, 5, 4, 8, tzinfo=ZoneInfo("Europe/Berlin"))
    assert task.reminder_at.utcoffset() == dt.timedelta(hours=2)


def test_body(ctx):
    body = map_reminder(wv(), ctx).body
    assert "Akte: Az. 123/26 – Müller ./. Schmidt wegen Forderung" in body
    assert "Verantwortlich: Max Weber" in body
    assert "Mandant anrufen, falls nichts kam" in body
    assert "tsl://reminder/5" in body
    assert body.rstrip("\n").endswith(USER_NOTES_MARKER)


def test_winter_reminder_is_eight_local(ctx):
    task = map_reminder(wv(due_date=dt.date(2026, 1, 12)), ctx)
    assert task.reminder_at.astimezone(dt.UTC) == dt.datetime(2026, 1, 12, 7, tzinfo=dt.UTC)


def test_reminder_time_and_zone_from_context(ctx_factory):
    task = map_reminder(wv(), ctx_factory(timezone="America/New_York", reminder_time=dt.time(7, 30)))
    assert task.timezone == "America/New_York"
    assert task.reminder_at.astimezone(dt.UTC) == dt.datetime(2026, 5, 4, 11, 30, tzinfo=dt.UTC)
    assert map_reminder(wv(), ctx_factory(reminder_time=None)).reminder_at is None


def test_reminder_time_in_dst_gap_is_shifted_as_zoneinfo_reads_it(ctx_factory):
    task = map_reminder(wv(due_date=dt.date(2026, 3, 29)), ctx_factory(reminder_time=dt.time(2, 30)))
    assert task.reminder_at.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)
    assert (task.reminder_at.hour, task.reminder_at.minute) == (3, 30)


def test_done_and_reopened(ctx):
    done = map_reminder(wv(done=True), ctx)
    assert done.completed is True and done.reminder_at is None
    assert "Status: erledigt" in done.body
    reopened = map_reminder(wv(done=False), ctx)
    assert reopened == map_reminder(wv(), ctx)
    assert reopened.completed is False and reopened.reminder_at is not None


def test_subject_variants(ctx):
    assert map_reminder(wv(subject=""), ctx).subject == "WV – Az. 123/26"
    assert map_reminder(wv(case_id=""), ctx).subject == "WV: Zahlungseingang prüfen"
    assert map_reminder(wv(subject="", case_id=""), ctx).subject == "WV"
    assert (
        map_reminder(wv(subject="Zeile 1\nZeile 2\t!"), ctx).subject == "WV: Zeile 1 Zeile 2 ! – Az. 123/26"
    )


def test_missing_due_date_is_refused(ctx):
    with pytest.raises(MappingError, match="kein Datum"):
        map_reminder(wv(due_date=None), ctx)


@pytest.mark.parametrize("due", [dt.date(1899, 12, 31), dt.date(2101, 1, 1)])
def test_out_of_range_is_refused(ctx, due):
    with pytest.raises(MappingError, match="außerhalb"):
        map_reminder(wv(due_date=due), ctx)
