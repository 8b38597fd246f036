"""Serientermin -> CalendarEntry with a Series: every rule of mapping/recurrence.py, bad input
refused with a German reason, and the pattern's dates checked against dateutil.rrule."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from dateutil import rrule
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tsl_exchange_plugin.mapping.common import MappingError
from tsl_exchange_plugin.mapping.items import content_hash
from tsl_exchange_plugin.mapping.recurrence import map_appointment_series, occurrence_dates
from tsl_hostapi.types import Appointment, OccurrenceChange, Recurrence

MON = dt.datetime(2026, 1, 5, 9, 0)


def series(rec: Recurrence, **kw) -> Appointment:
    values = dict(
        id="s1",
        subject="Kanzleibesprechung",
        start=MON,
        end=MON + dt.timedelta(hours=1),
        participant_ids=("u1",),
        case_id="c1",
        recurrence=rec,
    )
    values.update(kw)
    return Appointment(**values)


def test_weekly_series_fields(ctx):
    entry = map_appointment_series(series(Recurrence("weekly", interval=2, weekdays=(0, 3), count=10)), ctx)
    p = entry.recurrence.pattern
    assert (p.kind, p.interval, p.weekdays, p.count, p.start_date) == ("weekly", 2, (0, 3), 10, MON.date())
    assert entry.start == MON and entry.timezone == "Europe/Berlin"
    assert entry.recurrence.edits == ()


def test_a_single_appointment_keeps_its_hash_and_a_series_change_changes_it(ctx):
    single = map_appointment_series(series(None), ctx)
    assert single.recurrence is None
    # No "recurrence=None" in the repr: entries from before series existed keep their hash.
    assert "recurrence" not in repr(single)
    a = map_appointment_series(series(Recurrence("weekly", weekdays=(0,))), ctx)
    b = map_appointment_series(
        series(
            Recurrence(
                "weekly", weekdays=(0,), exceptions=(OccurrenceChange(dt.date(2026, 1, 12), cancelled=True),)
            )
        ),
        ctx,
    )
    assert len({content_hash(single), content_hash(a), content_hash(b)}) == 3


def test_the_first_occurrence_is_the_first_pattern_date_on_or_after_the_start(ctx):
    # Starts on a Monday, repeats on Wednesdays: the master shows Wednesday 7 January.
    entry = map_appointment_series(series(Recurrence("weekly", weekdays=(2,))), ctx)
    assert entry.start == dt.datetime(2026, 1, 7, 9) and entry.recurrence.pattern.start_date == dt.date(
        2026, 1, 7
    )


def test_monthly_yearly_and_all_day_kinds(ctx):
    rel = map_appointment_series(series(Recurrence("monthly", week_of_month=5, weekdays=(1,))), ctx)
    assert (rel.recurrence.pattern.kind, rel.recurrence.pattern.week_index) == ("relative_monthly", 5)
    assert rel.start == dt.datetime(2026, 1, 27, 9)  # last Tuesday of January
    absolute = map_appointment_series(series(Recurrence("monthly", day_of_month=31)), ctx)
    assert absolute.recurrence.pattern.kind == "absolute_monthly"
    assert list(occurrence_dates(dataclasses.replace(absolute.recurrence.pattern, count=3))) == [
        dt.date(2026, 1, 31),
        dt.date(2026, 2, 28),
        dt.date(2026, 3, 31),
    ]
    yearly = Appointment(
        id="fk",
        subject="Fristenkontrolle",
        all_day=True,
        start_date=dt.date(2026, 12, 1),
        end_date=dt.date(2026, 12, 1),
        participant_ids=("u1",),
        recurrence=Recurrence("yearly", until=dt.date(2030, 12, 31)),
    )
    entry = map_appointment_series(yearly, ctx)
    assert entry.all_day and entry.recurrence.pattern.kind == "absolute_yearly"
    assert (entry.recurrence.pattern.month, entry.recurrence.pattern.day_of_month) == (12, 1)
    every_second = map_appointment_series(
        dataclasses.replace(yearly, recurrence=Recurrence("yearly", interval=2)), ctx
    )
    # EWS yearly patterns have no interval: every 24 months instead.
    assert (every_second.recurrence.pattern.kind, every_second.recurrence.pattern.interval) == (
        "absolute_monthly",
        24,
    )


def test_exceptions_become_indexed_edits(ctx):
    rec = Recurrence(
        "weekly",
        weekdays=(0,),
        exceptions=(
            OccurrenceChange(dt.date(2026, 1, 19), cancelled=True),
            OccurrenceChange(
                dt.date(2026, 1, 12), start=dt.datetime(2026, 1, 13, 15), end=dt.datetime(2026, 1, 13, 16)
            ),
            OccurrenceChange(dt.date(2026, 2, 2), subject="Sondersitzung", location="Raum 1"),
        ),
    )
    edits = map_appointment_series(series(rec), ctx).recurrence.edits
    assert [(e.index, e.deleted) for e in edits] == [(2, False), (3, True), (5, False)]
    assert edits[0].start == dt.datetime(2026, 1, 13, 15) and edits[0].end == dt.datetime(2026, 1, 13, 16)
    assert edits[2].subject == "Az. 123/26: Sondersitzung" and edits[2].location == "Raum 1"
    assert edits[2].start is None  # not moved


BAD = {
    "weekly without days": (Recurrence("weekly"), "keinen Wochentag"),
    "interval 0": (Recurrence("daily", interval=0), "mindestens 1"),
    "end before start": (
        Recurrence("weekly", weekdays=(0,), until=dt.date(2025, 12, 1)),
        "liegt vor dem Beginn",
    ),
    "10000 occurrences": (Recurrence("daily", count=10_000), "höchstens 999"),
    "10000 occurrences by date": (Recurrence("daily", until=dt.date(2053, 6, 1)), "mehr als 999"),
    "exception outside the series": (
        Recurrence(
            "weekly", weekdays=(0,), exceptions=(OccurrenceChange(dt.date(2026, 1, 6), cancelled=True),)
        ),
        "Die Ausnahme vom 06.01.2026 ist kein Termin dieser Serie",
    ),
    "exception after the end": (
        Recurrence(
            "weekly",
            weekdays=(0,),
            count=2,
            exceptions=(OccurrenceChange(dt.date(2026, 1, 19), cancelled=True),),
        ),
        "kein Termin dieser Serie",
    ),
    "moved into the DST gap": (
        Recurrence(
            "weekly",
            weekdays=(0,),
            exceptions=(
                OccurrenceChange(
                    dt.date(2026, 3, 30),
                    start=dt.datetime(2026, 3, 29, 2, 30),
                    end=dt.datetime(2026, 3, 29, 3, 30),
                ),
            ),
        ),
        "29.03.2026 02:30 Uhr gibt es in der Zeitzone Europe/Berlin nicht",
    ),
    "moved past a neighbour": (
        Recurrence(
            "weekly",
            weekdays=(0,),
            exceptions=(
                OccurrenceChange(
                    dt.date(2026, 1, 12), start=dt.datetime(2026, 1, 20, 9), end=dt.datetime(2026, 1, 20, 10)
                ),
            ),
        ),
        "würde einen anderen Termin der Serie überholen",
    ),
    "duplicate exception": (
        Recurrence(
            "weekly",
            weekdays=(0,),
            exceptions=(
                OccurrenceChange(dt.date(2026, 1, 12), cancelled=True),
                OccurrenceChange(dt.date(2026, 1, 12), subject="x"),
            ),
        ),
        "doppelt",
    ),
    "unknown frequency": (Recurrence("hourly"), "Unbekannte Wiederholung"),  # type: ignore[arg-type]
    "weekday out of range": (Recurrence("weekly", weekdays=(7,)), "Wochentag 7 ist ungültig"),
    "count and until": (Recurrence("daily", count=3, until=dt.date(2026, 2, 1)), "nur eines von beiden"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_series_are_refused_with_a_german_reason(ctx, name):
    rec, reason = BAD[name]
    with pytest.raises(MappingError) as err:
        map_appointment_series(series(rec), ctx)
    assert reason in str(err.value)


# ------------------------------------------------------------------ the pattern against dateutil

_RR = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)


def rrule_dates(rec: Recurrence, start: dt.date, limit: int) -> list[dt.date]:
    kw: dict = dict(dtstart=dt.datetime.combine(start, dt.time()), wkst=rrule.MO)
    # The plugin's dates end with 2100 (check_date's range), dateutil's do not.
    kw["until"] = dt.datetime.combine(
        min(rec.until or dt.date(2100, 12, 31), dt.date(2100, 12, 31)), dt.time()
    )
    if rec.count:
        kw["count"], kw["until"] = rec.count, None
    freq = rec.frequency
    if freq == "weekly":
        kw["byweekday"] = [_RR[d] for d in rec.weekdays]
    if freq in ("monthly", "yearly"):
        if freq == "yearly":
            kw["bymonth"] = rec.month or start.month
        if rec.week_of_month:
            n = -1 if rec.week_of_month == 5 else rec.week_of_month
            kw["byweekday"] = _RR[rec.weekdays[0]](n)
        else:
            # A day beyond the month's end means its last day: the last of the candidate days.
            d = rec.day_of_month or start.day
            kw["bymonthday"] = tuple(range(min(d, 28), d + 1))
            kw["bysetpos"] = -1
    freqs = {"daily": rrule.DAILY, "weekly": rrule.WEEKLY, "monthly": rrule.MONTHLY, "yearly": rrule.YEARLY}
    if freq == "yearly" and rec.interval > 1:
        # The first occurrence is the first match on or after the start; then every n years.
        first = next(iter(rrule.rrule(rrule.YEARLY, **{**kw, "count": 1, "until": None})), None)
        if first is None:
            return []
        kw["dtstart"] = first
    out = []
    for x in rrule.rrule(freqs[freq], interval=rec.interval, **kw):
        if len(out) >= limit or x.date() > dt.date(2100, 12, 31):
            break
        out.append(x.date())
    return out


recurrences = st.one_of(
    st.builds(Recurrence, st.just("daily"), interval=st.integers(1, 40)),
    st.builds(
        Recurrence,
        st.just("weekly"),
        interval=st.integers(1, 5),
        weekdays=st.sets(st.integers(0, 6), min_size=1).map(lambda s: tuple(sorted(s))),
    ),
    st.builds(Recurrence, st.just("monthly"), interval=st.integers(1, 14), day_of_month=st.integers(1, 31)),
    st.builds(
        Recurrence,
        st.just("monthly"),
        interval=st.integers(1, 14),
        week_of_month=st.integers(1, 5),
        weekdays=st.integers(0, 6).map(lambda d: (d,)),
    ),
    st.builds(Recurrence, st.just("yearly"), month=st.integers(1, 12), day_of_month=st.integers(1, 31)),
    st.builds(
        Recurrence,
        st.just("yearly"),
        interval=st.integers(1, 3),
        month=st.integers(1, 12),
        week_of_month=st.integers(1, 5),
        weekdays=st.integers(0, 6).map(lambda d: (d,)),
    ),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rec=recurrences,
    start=st.dates(dt.date(2026, 1, 1), dt.date(2028, 12, 31)),
    end=st.one_of(st.none(), st.integers(1, 40), st.dates(dt.date(2029, 1, 1), dt.date(2031, 12, 31))),
)
@example(  # every second year: the first occurrence is the first match after the start
    rec=Recurrence("yearly", interval=2, month=1, week_of_month=1, weekdays=(0,)),
    start=dt.date(2026, 1, 6),
    end=None,
)
@example(  # no occurrence before the end: refused
    rec=Recurrence("monthly", interval=2, day_of_month=1), start=dt.date(2028, 12, 2), end=dt.date(2029, 1, 1)
)
def test_the_mappings_pattern_dates_equal_dateutils(ctx, rec, start, end):  # ctx is read-only
    if isinstance(end, int):
        rec = dataclasses.replace(rec, count=end)
    elif end is not None:
        rec = dataclasses.replace(rec, until=end)
    appt = series(
        rec, start=dt.datetime.combine(start, dt.time(9)), end=dt.datetime.combine(start, dt.time(10))
    )
    try:
        entry = map_appointment_series(appt, ctx)
    except MappingError as err:
        # Refused only for being too long for Exchange, or for having no occurrence at all.
        if "keinen einzigen Termin" in str(err):
            assert rrule_dates(rec, start, 1) == []
        else:
            assert "999" in str(err) and len(rrule_dates(rec, start, 1000)) > 999
        return
    ours = []
    for day in occurrence_dates(entry.recurrence.pattern):
        ours.append(day)
        if len(ours) >= 30:
            break
    assert ours == rrule_dates(rec, start, 30)
