"""Series (recurring masters) as exchangelib objects: the recurrence and one occurrence's changes.

Part of the EWS backend (it imports exchangelib); convert.py and backend.py call it. Pure conversion, no I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from exchangelib import EWSDate, EWSDateTime, EWSTimeZone
from exchangelib import errors as exl_errors
from exchangelib.recurrence import (
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    EndDatePattern,
    NoEndPattern,
    NumberedPattern,
    Recurrence,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)

from ...mapping.items import CalendarEntry, OccurrenceEdit, Series, SeriesPattern

MONDAY = 1  # exchangelib numbers weekdays 1 (Monday) .. 7, months 1 .. 12, week numbers 1 .. 5 (Last)


def _pattern(p: SeriesPattern) -> Any:
    days = [d + 1 for d in p.weekdays]
    if p.kind == "daily":
        return DailyPattern(interval=p.interval)
    if p.kind == "weekly":
        return WeeklyPattern(interval=p.interval, weekdays=days, first_day_of_week=MONDAY)
    if p.kind == "absolute_monthly":
        return AbsoluteMonthlyPattern(interval=p.interval, day_of_month=p.day_of_month)
    if p.kind == "relative_monthly":
        return RelativeMonthlyPattern(interval=p.interval, weekday=days[0], week_number=p.week_index)
    if p.kind == "absolute_yearly":
        return AbsoluteYearlyPattern(day_of_month=p.day_of_month, month=p.month)
    if p.kind == "relative_yearly":
        return RelativeYearlyPattern(weekday=days[0], week_number=p.week_index, month=p.month)
    raise ValueError(f"Unbekanntes Serienmuster {p.kind!r}")


def _boundary(p: SeriesPattern) -> Any:
    assert p.start_date is not None
    start = EWSDate.from_date(p.start_date)
    if p.count is not None:
        return NumberedPattern(start=start, number=p.count)
    if p.end_date is not None:
        return EndDatePattern(start=start, end=EWSDate.from_date(p.end_date))
    return NoEndPattern(start=start)


def to_recurrence(series: Series | None) -> Recurrence | None:
    """The EWS Recurrence of a series; None for a single appointment."""
    if series is None:
        return None
    return Recurrence(pattern=_pattern(series.pattern), boundary=_boundary(series.pattern))


def occurrence_fields(entry: CalendarEntry, edit: OccurrenceEdit) -> tuple[dict[str, Any], list[str]]:
    """(constructor values, update field names) for one modified occurrence: only what differs."""
    tz = EWSTimeZone(entry.timezone)
    values: dict[str, Any] = {}
    fields: list[str] = []
    if edit.subject:
        values["subject"] = edit.subject
        fields.append("subject")
    if edit.location:
        values["location"] = edit.location
        fields.append("location")
    if entry.all_day and edit.start_date is not None:
        values.update(
            start=EWSDate.from_date(edit.start_date), end=EWSDate.from_date(edit.end_date or edit.start_date)
        )
        values.update(is_all_day=True, _start_timezone=tz, _end_timezone=tz)
        fields += ["start", "end"]
    elif not entry.all_day and edit.start is not None:
        values.update(start=_local(edit.start, tz), end=_local(edit.end or edit.start, tz))
        values.update(_start_timezone=tz, _end_timezone=tz)
        fields += ["start", "end"]
    return values, fields


def _local(value: dt.datetime, tz: EWSTimeZone) -> EWSDateTime:
    return EWSDateTime.from_datetime(value.replace(tzinfo=tz))


def already_deleted(result: Any) -> bool:
    """An occurrence deleted once more: the wanted state, not an error."""
    return isinstance(
        result, (exl_errors.ErrorCalendarOccurrenceIsDeletedFromRecurrence, exl_errors.ErrorItemNotFound)
    )
