"""Serientermine: a host Recurrence -> the series of a CalendarEntry (pattern plus exceptions).

Rules (the host's ``tsl_hostapi.types.Recurrence`` documents the meaning):

- The series keeps the appointment's wall-clock time in the appointment's own zone: a weekly
  09:00 Berlin meeting is 09:00 local in summer and in winter. All-day series use the
  recipient's zone, like single all-day appointments.
- The series starts on the appointment's start date; its first occurrence is the first date
  of the pattern on or after it, and the calendar item's start/end are that occurrence's (as
  Exchange shows a recurring master).
- Yearly series with an interval above 1 become monthly ones every 12·n months, because EWS's
  yearly patterns have no interval (types.xsd, AbsoluteYearlyRecurrencePatternType).
- Limits, so that nothing is sent that Exchange or exchangelib refuses: interval 1-999 days,
  1-99 weeks or months (exchangelib's IntegerField bounds for the EWS patterns), at most
  ``MAX_OCCURRENCES`` occurrences in a series that ends (exchangelib caps NumberOfOccurrences
  at 999; Outlook offers no more either).
- Exceptions name their occurrence by its date in the pattern; one that is not an occurrence
  of the series, a duplicate, a moved time that does not exist (DST gap) or a moved
  occurrence that would reach another occurrence's day (Exchange refuses that with
  ErrorOccurrenceCrossingBoundary) is refused with a German reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

from tsl_hostapi.types import FREQUENCIES, Appointment, OccurrenceChange, Recurrence

from .appointment import _subject, _wall_clock, _zone, map_appointment
from .common import MappingError, short
from .context import MappingContext, case_refs, check_date, german_date
from .items import CalendarEntry, OccurrenceEdit, Series, SeriesPattern

MAX_OCCURRENCES = 999
_FREQ_GERMAN = {"daily": "tägliche", "weekly": "wöchentliche", "monthly": "monatliche", "yearly": "jährliche"}


# --------------------------------------------------------------------------- expansion


def _last_day(year: int, month: int) -> int:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    return (nxt - dt.timedelta(days=1)).day


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> dt.date:
    """The ``nth`` (1-4, 5 = last) ``weekday`` of a month."""
    if nth >= 5:
        day = dt.date(year, month, _last_day(year, month))
        return day - dt.timedelta(days=(day.weekday() - weekday) % 7)
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))


def _matches(p: SeriesPattern, start: dt.date, day: dt.date) -> bool:
    if p.kind == "daily":
        return (day - start).days % p.interval == 0
    if p.kind == "weekly":
        weeks = ((day - dt.timedelta(days=day.weekday())) - (start - dt.timedelta(days=start.weekday()))).days
        return (weeks // 7) % p.interval == 0 and day.weekday() in p.weekdays
    months = (day.year - start.year) * 12 + day.month - start.month
    if p.kind in ("absolute_yearly", "relative_yearly"):
        if day.month != p.month:
            return False
    elif months % p.interval:
        return False
    if p.kind in ("absolute_monthly", "absolute_yearly"):
        return day.day == min(p.day_of_month or 1, _last_day(day.year, day.month))
    return day == _nth_weekday(day.year, day.month, p.weekdays[0], p.week_index or 1)


def occurrence_dates(p: SeriesPattern, *, until: dt.date | None = None) -> Iterator[dt.date]:
    """The dates of the series' occurrences in order, up to ``until`` (inclusive) if given.

    Walks day by day: slow for decades, but obviously right, and a series that ends has at
    most MAX_OCCURRENCES occurrences (checked while walking).
    """
    assert p.start_date is not None
    day = p.start_date
    found = 0
    limit = min(d for d in (until, p.end_date, dt.date(2100, 12, 31)) if d is not None)
    while day <= limit:
        if _matches(p, p.start_date, day):
            yield day
            found += 1
            if p.count is not None and found >= p.count:
                return
        day += dt.timedelta(days=1)


# --------------------------------------------------------------------------- host -> pattern


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MappingError(
            f"{what} {value!r} ist ungültig (erlaubt: {low} bis {high}); bitte die Serie korrigieren"
        )
    return value


def _weekdays(rec: Recurrence) -> tuple[int, ...]:
    days = tuple(rec.weekdays or ())
    for d in days:
        _int(d, "Wochentag", 0, 6)
    return tuple(sorted(set(days)))


def pattern_of(rec: Recurrence, start: dt.date) -> SeriesPattern:
    """The EWS pattern for a host recurrence whose series starts on ``start`` (not yet its range)."""
    if rec.frequency not in FREQUENCIES:
        raise MappingError(f"Unbekannte Wiederholung {rec.frequency!r} im Serientermin")
    freq_de = _FREQ_GERMAN[rec.frequency]
    interval = rec.interval
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise MappingError(
            f"Das Intervall der {freq_de}n Serie ist {interval!r}; es muss mindestens 1 sein "
            "(z. B. 1 = jede Woche, 2 = jede zweite Woche)"
        )
    weekdays = _weekdays(rec)
    if rec.frequency == "daily":
        return SeriesPattern("daily", _int(interval, "Das Intervall in Tagen", 1, 999))
    if rec.frequency == "weekly":
        if not weekdays:
            raise MappingError(
                "Die wöchentliche Serie nennt keinen Wochentag; bitte mindestens einen Wochentag wählen"
            )
        return SeriesPattern("weekly", _int(interval, "Das Intervall in Wochen", 1, 99), weekdays=weekdays)
    months = interval if rec.frequency == "monthly" else 12 * interval
    yearly_as_is = rec.frequency == "yearly" and interval == 1
    if not yearly_as_is:
        _int(months, "Das Intervall in Monaten", 1, 99)
    month = _int(rec.month, "Der Monat", 1, 12) if rec.month is not None else start.month
    if rec.frequency == "monthly" and rec.month is not None:
        raise MappingError("Eine monatliche Serie nennt keinen Monat; bitte den Monat entfernen")
    if rec.week_of_month is not None:
        nth = _int(rec.week_of_month, "Die Woche im Monat", 1, 5)
        if len(weekdays) != 1:
            raise MappingError(
                f"Die {freq_de} Serie am {nth}. Wochentag des Monats braucht genau einen Wochentag"
            )
        kind = "relative_yearly" if yearly_as_is else "relative_monthly"
        return SeriesPattern(
            kind, 1 if yearly_as_is else months, weekdays=weekdays, week_index=nth, month=month
        )
    if weekdays:
        raise MappingError(f"Die {freq_de} Serie nennt Wochentage, aber keine Woche im Monat")
    dom = _int(rec.day_of_month, "Der Tag im Monat", 1, 31) if rec.day_of_month is not None else start.day
    kind = "absolute_yearly" if yearly_as_is else "absolute_monthly"
    return SeriesPattern(kind, 1 if yearly_as_is else months, day_of_month=dom, month=month)


def _range(rec: Recurrence, pattern: SeriesPattern, start: dt.date) -> SeriesPattern:
    if rec.count is not None and rec.until is not None:
        raise MappingError("Die Serie nennt eine Anzahl und ein Enddatum; bitte nur eines von beiden angeben")
    if rec.count is not None:
        if isinstance(rec.count, bool) or not isinstance(rec.count, int) or rec.count < 1:
            raise MappingError(
                f"Die Anzahl der Termine der Serie ist {rec.count!r}; sie muss mindestens 1 sein"
            )
        if rec.count > MAX_OCCURRENCES:
            raise MappingError(
                f"Die Serie hat {rec.count} Termine; Exchange nimmt höchstens {MAX_OCCURRENCES}. "
                "Bitte die Serie kürzen oder ohne Ende anlegen"
            )
    if rec.until is not None:
        check_date(rec.until, "Das Serienende")
        if rec.until < start:
            raise MappingError(
                f"Das Serienende {german_date(rec.until)} liegt vor dem Beginn {german_date(start)}; "
                "bitte das Enddatum der Serie korrigieren"
            )
    begin = start
    if pattern.kind in ("absolute_monthly", "relative_monthly") and rec.frequency == "yearly":
        # Every n years as every 12·n months: the months count from the series' first
        # occurrence, which is (as for every series) the first date of the yearly pattern on or
        # after the start; the next ones follow n years apart.
        yearly = dataclasses.replace(
            pattern, kind=pattern.kind.replace("monthly", "yearly"), interval=1, start_date=start
        )
        begin = next(occurrence_dates(yearly), start)
    probe = dataclasses.replace(pattern, start_date=begin, count=rec.count, end_date=rec.until)
    first = next(occurrence_dates(probe), None)
    if first is None:
        raise MappingError(
            "Die Serie hat keinen einzigen Termin zwischen Beginn und Serienende; bitte Muster oder Ende korrigieren"
        )
    ranged = dataclasses.replace(probe, start_date=first)
    if rec.until is not None:
        n = 0
        for _ in occurrence_dates(ranged):
            n += 1
            if n > MAX_OCCURRENCES:
                raise MappingError(
                    f"Die Serie hat bis {german_date(rec.until)} mehr als {MAX_OCCURRENCES} Termine; "
                    "Exchange nimmt höchstens so viele. Bitte die Serie kürzen oder ohne Ende anlegen"
                )
    return ranged


# --------------------------------------------------------------------------- exceptions


def _edits(
    appt: Appointment, entry: CalendarEntry, pattern: SeriesPattern, ctx: MappingContext
) -> tuple[OccurrenceEdit, ...]:
    changes: tuple[OccurrenceChange, ...] = tuple(appt.recurrence.exceptions or ()) if appt.recurrence else ()
    if not changes:
        return ()
    wanted = {c.original_date for c in changes}
    if len(wanted) != len(changes):
        raise MappingError("Die Serie nennt eine Ausnahme doppelt; bitte jede Ausnahme nur einmal angeben")
    last_wanted = max(wanted)
    index_of: dict[dt.date, int] = {}
    dates: list[dt.date] = []
    for i, day in enumerate(occurrence_dates(pattern), start=1):
        dates.append(day)
        if day <= last_wanted:
            index_of[day] = i
        elif len(dates) > len(index_of) + 1:
            break
    az = case_refs(ctx, appt.case_id)[0]
    out = []
    for chg in sorted(changes, key=lambda c: c.original_date):
        index = index_of.get(chg.original_date)
        if index is None:
            raise MappingError(
                f"Die Ausnahme vom {german_date(chg.original_date)} ist kein Termin dieser Serie; "
                "bitte das Datum der Ausnahme prüfen"
            )
        if chg.cancelled:
            out.append(OccurrenceEdit(index, chg.original_date, deleted=True))
            continue
        fields: dict[str, Any] = {
            "subject": _subject(dataclasses.replace(appt, subject=chg.subject), az)
            if short(chg.subject)
            else "",
            "location": short(chg.location),
        }
        prev_day = dates[index - 2] if index >= 2 else None
        next_day = dates[index] if index < len(dates) else None
        if entry.all_day:
            if chg.start_date is not None or chg.end_date is not None:
                first_day, last_day = entry.day_span()
                s = chg.start_date or chg.original_date
                e = chg.end_date or s + (last_day - first_day)
                check_date(s, "Der verschobene Termin")
                check_date(e, "Das Ende des verschobenen Termins")
                if e < s:
                    raise MappingError(
                        f"Der verschobene Termin vom {german_date(chg.original_date)} endet vor seinem Beginn"
                    )
                fields.update(start_date=s, end_date=e)
                _no_crossing(chg.original_date, s, prev_day, next_day)
        elif chg.start is not None or chg.end is not None:
            zone = _zone(appt.timezone)
            what = f"Der verschobene Termin vom {german_date(chg.original_date)}:"
            entry_start, entry_end = entry.time_span()
            length = entry_end - entry_start
            new_start = _wall_clock(chg.start, zone, appt.timezone, what + " Beginn") if chg.start else None
            new_end = _wall_clock(chg.end, zone, appt.timezone, what + " Ende") if chg.end else None
            if new_start is None:
                assert new_end is not None  # this branch has a new start or a new end
                new_start = new_end - length
            new_end = new_end or (new_start + length)
            if new_end < new_start:
                raise MappingError(f"{what} das Ende liegt vor dem Beginn; bitte die Uhrzeiten korrigieren")
            fields.update(start=new_start, end=new_end)
            _no_crossing(chg.original_date, new_start.date(), prev_day, next_day)
        out.append(OccurrenceEdit(index, chg.original_date, **fields))
    return tuple(out)


def _no_crossing(original: dt.date, new: dt.date, prev_day: dt.date | None, next_day: dt.date | None) -> None:
    # Exchange keeps occurrences in their order: one cannot be moved onto or past a neighbour's
    # day (EWS ErrorOccurrenceCrossingBoundary; Outlook says the same when dragging).
    if (prev_day is not None and new <= prev_day) or (next_day is not None and new >= next_day):
        raise MappingError(
            f"Der Termin vom {german_date(original)} kann nicht auf den {german_date(new)} verschoben werden: "
            "er würde einen anderen Termin der Serie überholen. Bitte die Serie anders aufteilen"
        )


# --------------------------------------------------------------------------- entry point


def map_appointment_series(appt: Appointment, ctx: MappingContext) -> CalendarEntry:
    """``map_appointment``, plus the series when the appointment has a recurrence.

    Raises MappingError (German reason) for everything ``map_appointment`` refuses and for
    a series Exchange cannot hold (see the module docstring).
    """
    rec = appt.recurrence
    entry = map_appointment(appt if rec is None else dataclasses.replace(appt, recurrence=None), ctx)
    if rec is None:
        return entry
    start = entry.day_span()[0] if entry.all_day else entry.time_span()[0].date()
    pattern = _range(rec, pattern_of(rec, start), start)
    first = pattern.start_date
    assert first is not None  # _range starts the pattern on its first occurrence
    shift = first - start
    if entry.all_day:
        first_day, last_day = entry.day_span()
        entry = dataclasses.replace(entry, start_date=first_day + shift, end_date=last_day + shift)
    elif shift:
        zone = _zone(appt.timezone)
        what = f"Der erste Termin der Serie am {german_date(first)}:"
        entry_start, entry_end = entry.time_span()
        entry = dataclasses.replace(
            entry,
            start=_wall_clock(entry_start + shift, zone, appt.timezone, what + " Beginn"),
            end=_wall_clock(entry_end + shift, zone, appt.timezone, what + " Ende"),
        )
    return dataclasses.replace(entry, recurrence=Series(pattern, _edits(appt, entry, pattern, ctx)))
