"""Termin -> CalendarEntry: every rule of mapping/appointment.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tsl_exchange_plugin.mapping.appointment import map_appointment
from tsl_exchange_plugin.mapping.common import USER_NOTES_MARKER, MappingError
from tsl_exchange_plugin.mapping.items import content_hash
from tsl_hostapi.types import Appointment, Case

START = dt.datetime(2026, 3, 10, 14, 0)
END = dt.datetime(2026, 3, 10, 15, 30)


def hearing(**overrides) -> Appointment:
    values = dict(
        id="42",
        subject="Mündliche Verhandlung",
        start=START,
        end=END,
        location="Landgericht Berlin, Saal 3",
        participant_ids=("u1", "u2"),
        case_id="c1",
        appointment_type="Gerichtstermin",
        notes="Akte und Vollmacht mitnehmen",
    )
    values.update(overrides)
    return Appointment(**values)


def test_timed_appointment_fields(ctx):
    entry = map_appointment(hearing(), ctx)
    assert entry.record_key == "appointment:42"
    assert entry.subject == "Az. 123/26: Mündliche Verhandlung"
    assert entry.location == "Landgericht Berlin, Saal 3"
    assert (entry.start, entry.end, entry.timezone) == (START, END, "Europe/Berlin")
    assert entry.all_day is False and entry.start_date is None and entry.end_date is None
    assert entry.categories == ("Gerichtstermin",)
    assert entry.free_busy == "Busy"
    assert entry.reminder_minutes == 15


def test_body_names_case_people_link_and_ends_with_marker(ctx):
    body = map_appointment(hearing(), ctx).body
    assert "Akte: Az. 123/26 – Müller ./. Schmidt wegen Forderung" in body
    assert "Sachbearbeiter: Dr. Anna Berg" in body
    assert "Teilnehmer: Dr. Anna Berg, Max Weber" in body
    assert "Terminart: Gerichtstermin" in body
    assert "Akte und Vollmacht mitnehmen" in body
    assert "tsl://appointment/42" in body
    assert body.rstrip("\n").endswith(USER_NOTES_MARKER)
    assert body.count(USER_NOTES_MARKER) == 1


def test_marker_in_host_notes_is_neutralised(ctx):
    body = map_appointment(hearing(notes=f"vorher\n{USER_NOTES_MARKER}\nnachher"), ctx).body
    assert body.count(USER_NOTES_MARKER) == 1
    assert body.rstrip("\n").endswith(USER_NOTES_MARKER)
    assert "nachher" in body.split(USER_NOTES_MARKER)[0]


def test_link_percent_encodes_the_id(ctx):
    entry = map_appointment(hearing(id="a/b c"), ctx)
    assert entry.record_key == "appointment:a/b c"
    assert "tsl://appointment/a%2Fb%20c" in entry.body


def test_no_case_means_plain_subject_and_no_case_line(ctx):
    entry = map_appointment(hearing(case_id=""), ctx)
    assert entry.subject == "Mündliche Verhandlung"
    assert "Akte:" not in entry.body
    assert "Sachbearbeiter" not in entry.body


def test_case_the_host_did_not_supply_still_maps_and_says_so(ctx):
    entry = map_appointment(hearing(case_id="c99"), ctx)
    assert entry.subject == "Mündliche Verhandlung"
    assert "Akte: c99 (Aktenzeichen nicht übermittelt)" in entry.body


def test_renamed_case_changes_the_item(ctx_factory, firm):
    before = map_appointment(hearing(), ctx_factory())
    renamed = Case("c1", "123/26", "Müller ./. Schmidt GmbH wegen Forderung", lawyer_id="u1")
    after = map_appointment(hearing(), ctx_factory(cases={"c1": renamed}))
    assert "Müller ./. Schmidt GmbH wegen Forderung" in after.body
    assert content_hash(before) != content_hash(after)


def test_unknown_participant_is_named_by_id(ctx):
    entry = map_appointment(hearing(participant_ids=("u1", "u77", "u1")), ctx)
    assert "Teilnehmer: Dr. Anna Berg, Benutzer u77" in entry.body


@pytest.mark.parametrize(
    ("subject", "kind", "expected"),
    [
        ("", "Besprechung", "Az. 123/26: Besprechung"),
        ("", "", "Az. 123/26: Termin"),
        ("  Güteverhandlung\r\n(Raum 2)\x00 ", "", "Az. 123/26: Güteverhandlung (Raum 2)"),
    ],
)
def test_subject_fallbacks_and_cleaning(ctx, subject, kind, expected):
    assert map_appointment(hearing(subject=subject, appointment_type=kind), ctx).subject == expected


def test_long_subject_is_cut_to_exchange_limit(ctx):
    entry = map_appointment(hearing(subject="Ä" * 400), ctx)
    assert len(entry.subject) == 255 and entry.subject.startswith("Az. 123/26: ÄÄ")


def test_reminder_own_value_zero_and_context_default(ctx_factory):
    assert map_appointment(hearing(reminder_minutes=60), ctx_factory()).reminder_minutes == 60
    assert map_appointment(hearing(reminder_minutes=0), ctx_factory()).reminder_minutes == 0
    assert map_appointment(hearing(), ctx_factory(appointment_reminder_minutes=30)).reminder_minutes == 30
    assert map_appointment(hearing(), ctx_factory(appointment_reminder_minutes=None)).reminder_minutes is None


def test_negative_reminder_is_refused(ctx):
    with pytest.raises(MappingError, match="Erinnerungszeit"):
        map_appointment(hearing(reminder_minutes=-5), ctx)


def test_free_busy_and_categories(ctx_factory):
    entry = map_appointment(hearing(busy=False, appointment_type=""), ctx_factory())
    assert entry.free_busy == "Free"
    assert entry.categories == ()
    tagged = map_appointment(hearing(), ctx_factory(source_category="timeSensor LEGAL"))
    assert tagged.categories == ("Gerichtstermin", "timeSensor LEGAL")


def test_own_zone_and_wall_clock_are_kept(ctx):
    entry = map_appointment(
        hearing(
            timezone="America/New_York", start=dt.datetime(2026, 7, 1, 9), end=dt.datetime(2026, 7, 1, 10)
        ),
        ctx,
    )
    assert entry.timezone == "America/New_York"
    assert (entry.start, entry.end) == (dt.datetime(2026, 7, 1, 9), dt.datetime(2026, 7, 1, 10))


@pytest.mark.parametrize("day", [dt.date(2026, 1, 15), dt.date(2026, 7, 15), dt.date(2026, 10, 25)])
def test_ten_o_clock_stays_ten_o_clock_in_winter_and_summer(ctx, day):
    ten = dt.datetime.combine(day, dt.time(10))
    entry = map_appointment(hearing(start=ten, end=ten + dt.timedelta(hours=1)), ctx)
    assert entry.start == ten and entry.start.tzinfo is None


def test_aware_times_become_wall_clock_in_the_appointments_zone(ctx):
    utc_start = dt.datetime(2026, 7, 1, 8, tzinfo=dt.UTC)
    entry = map_appointment(hearing(start=utc_start, end=utc_start + dt.timedelta(hours=1)), ctx)
    assert entry.start == dt.datetime(2026, 7, 1, 10) and entry.start.tzinfo is None
    assert entry.end == dt.datetime(2026, 7, 1, 11)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "europe/berlin", "America", "", "../etc/passwd"])
def test_unknown_zone_is_refused(ctx, zone):
    with pytest.raises(MappingError, match="Unbekannte Zeitzone"):
        map_appointment(hearing(timezone=zone), ctx)


def test_spring_forward_gap_is_refused_with_reason(ctx):
    gap = dt.datetime(2026, 3, 29, 2, 30)
    with pytest.raises(MappingError) as err:
        map_appointment(hearing(start=gap, end=gap + dt.timedelta(hours=2)), ctx)
    assert "29.03.2026 02:30" in str(err.value) and "Sommerzeit" in str(err.value)
    # The end in the gap is refused as well.
    with pytest.raises(MappingError, match="Terminende"):
        map_appointment(hearing(start=gap - dt.timedelta(hours=1), end=gap), ctx)


def test_times_around_the_gap_and_the_repeated_autumn_hour_are_kept(ctx):
    before = dt.datetime(2026, 3, 29, 1, 59)
    after = dt.datetime(2026, 3, 29, 3, 0)
    assert map_appointment(hearing(start=before, end=after), ctx).start == before
    repeated = dt.datetime(2026, 10, 25, 2, 30)
    entry = map_appointment(hearing(start=repeated, end=repeated + dt.timedelta(minutes=20)), ctx)
    assert entry.start == repeated and entry.start.fold == 0
    # The same wall-clock time is fine in a zone without DST that day.
    assert map_appointment(hearing(start=dt.datetime(2026, 3, 29, 2, 30), end=None, timezone="UTC"), ctx)


def test_gap_check_uses_the_appointments_own_zone(ctx):
    # 2026-03-08 02:30 does not exist in New York, but does in Berlin.
    gap_ny = dt.datetime(2026, 3, 8, 2, 30)
    assert map_appointment(hearing(start=gap_ny, end=None), ctx).start == gap_ny
    with pytest.raises(MappingError, match="America/New_York"):
        map_appointment(hearing(start=gap_ny, end=None, timezone="America/New_York"), ctx)


def test_missing_end_means_a_point_in_time(ctx):
    entry = map_appointment(hearing(end=None), ctx)
    assert entry.start == entry.end == START


def test_end_equal_to_start_is_fine_end_before_start_is_not(ctx):
    assert map_appointment(hearing(end=START), ctx).end == START
    with pytest.raises(MappingError, match="liegt vor dem Beginn"):
        map_appointment(hearing(end=START - dt.timedelta(minutes=1)), ctx)


def test_missing_start_is_refused(ctx):
    with pytest.raises(MappingError, match="keinen Beginn"):
        map_appointment(hearing(start=None), ctx)


@pytest.mark.parametrize("participants", [(), ("",)])
def test_no_participants_is_refused(ctx, participants):
    with pytest.raises(MappingError, match="keine Teilnehmer.*kein Postfach"):
        map_appointment(hearing(participant_ids=participants), ctx)


@pytest.mark.parametrize(
    "start",
    [
        dt.datetime(1899, 12, 31, 23, 0),
        dt.datetime(2101, 1, 1, 10, 0),
        dt.datetime(2100, 12, 31, 23, 30, tzinfo=ZoneInfo("America/New_York")),  # 2101 in Berlin
    ],
)
def test_dates_outside_1900_2100_are_refused(ctx, start):
    with pytest.raises(MappingError, match="außerhalb"):
        map_appointment(hearing(start=start, end=None), ctx)


def test_range_edges_are_accepted(ctx):
    first = dt.datetime(1900, 1, 1, 9)
    last = dt.datetime(2100, 12, 31, 22)
    assert map_appointment(hearing(start=first, end=None), ctx).start == first
    assert map_appointment(hearing(start=last, end=None), ctx).start == last


# --------------------------------------------------------------------------- all-day


def test_all_day_keeps_inclusive_dates_in_recipients_zone(ctx_factory):
    ctx = ctx_factory(timezone="Europe/Vienna")
    appt = hearing(
        all_day=True,
        start=None,
        end=None,
        start_date=dt.date(2026, 4, 15),
        end_date=dt.date(2026, 4, 17),
        timezone="America/New_York",
    )
    entry = map_appointment(appt, ctx)
    assert entry.all_day is True
    assert (entry.start_date, entry.end_date) == (dt.date(2026, 4, 15), dt.date(2026, 4, 17))
    assert entry.start is None and entry.end is None
    assert entry.timezone == "Europe/Vienna"


def test_all_day_single_day_and_fallback_to_start(ctx):
    one = map_appointment(hearing(all_day=True, start_date=dt.date(2026, 4, 15), start=None, end=None), ctx)
    assert one.start_date == one.end_date == dt.date(2026, 4, 15)
    from_start = map_appointment(hearing(all_day=True), ctx)
    assert from_start.start_date == from_start.end_date == START.date()


def test_all_day_does_not_need_a_valid_appointment_zone(ctx):
    entry = map_appointment(hearing(all_day=True, start_date=dt.date(2026, 4, 15), timezone="Nope/Nope"), ctx)
    assert entry.timezone == "Europe/Berlin"


def test_all_day_errors(ctx):
    with pytest.raises(MappingError, match="Anfangsdatum"):
        map_appointment(hearing(all_day=True, start=None, end=None), ctx)
    with pytest.raises(MappingError, match="liegt vor dem Beginn"):
        map_appointment(
            hearing(all_day=True, start_date=dt.date(2026, 4, 15), end_date=dt.date(2026, 4, 14)), ctx
        )
    with pytest.raises(MappingError, match="außerhalb"):
        map_appointment(
            hearing(all_day=True, start_date=dt.date(2026, 4, 15), end_date=dt.date(2101, 1, 1)), ctx
        )


def test_mapping_is_pure(ctx):
    appt = hearing()
    snapshot = dataclasses.replace(appt)
    assert map_appointment(appt, ctx) == map_appointment(appt, ctx)
    assert appt == snapshot


def test_second_occurrence_of_the_repeated_hour_is_refused(ctx):
    # 01:45 UTC on 2026-10-25 is 02:45 CET, the second 02:45 that night; a naive 02:45 would mean CEST.
    second = dt.datetime(2026, 10, 25, 1, 45, tzinfo=dt.UTC)
    with pytest.raises(MappingError, match="mehrdeutig"):
        map_appointment(hearing(start=second, end=None), ctx)
    with pytest.raises(MappingError, match="mehrdeutig"):
        map_appointment(hearing(start=dt.datetime(2026, 10, 25, 2, 45, fold=1), end=None), ctx)
    # The first occurrence (00:45 UTC = 02:45 CEST) is fine.
    first = map_appointment(hearing(start=dt.datetime(2026, 10, 25, 0, 45, tzinfo=dt.UTC), end=None), ctx)
    assert first.start == dt.datetime(2026, 10, 25, 2, 45)
    # fold=1 in the spring gap is still reported as the gap.
    with pytest.raises(MappingError, match="Sommerzeit"):
        map_appointment(hearing(start=dt.datetime(2026, 3, 29, 2, 30, fold=1), end=None), ctx)


def test_all_day_reminder_has_its_own_default(ctx_factory):
    day = dict(all_day=True, start_date=dt.date(2026, 4, 15), start=None, end=None)
    assert map_appointment(hearing(**day), ctx_factory()).reminder_minutes == 1440
    assert (
        map_appointment(hearing(**day), ctx_factory(all_day_reminder_minutes=None)).reminder_minutes is None
    )
    assert map_appointment(hearing(**day, reminder_minutes=30), ctx_factory()).reminder_minutes == 30
