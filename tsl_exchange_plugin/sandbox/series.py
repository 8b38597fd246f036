"""Recurring masters in the sandbox: expansion, occurrences, exceptions, as Exchange has them.

Documented behaviour this follows (Microsoft Learn, "Recurrence patterns and time zones in
EWS", "Access a recurring series by using EWS", "Update a recurring series by using EWS",
"Delete appointments in a recurring series by using EWS"):

- A series is one item, the recurring master (CalendarItemType ``RecurringMaster``). Its
  occurrences and exceptions are not stored items: FindItem without a CalendarView returns
  the master only; a CalendarView expands the master into ``Occurrence`` and ``Exception``
  items, each with an ItemId of its own.
- An occurrence is addressed by its ItemId or by OccurrenceItemId (RecurringMasterId plus the
  1-based InstanceIndex); RecurringMasterItemId (OccurrenceId) leads back to the master. A
  master and its occurrences carry the same ChangeKey (RecurringMasterItemId reference).
- Updating an occurrence makes it an exception, listed in the master's ModifiedOccurrences
  (ItemId, Start, End, OriginalStart); deleting one lists it in DeletedOccurrences (Start).
  Both change the master's ChangeKey. A deleted occurrence cannot be deleted or updated again
  (ErrorCalendarOccurrenceIsDeletedFromRecurrence); an index beyond the series is
  ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange; an occurrence moved onto or past a
  neighbour's day is ErrorOccurrenceCrossingBoundary.
- The master shows FirstOccurrence, and LastOccurrence when the series ends. The master's own
  Start/End are its first occurrence's (Exchange moves a start that does not fit the pattern).
- The range's StartDate/EndDate are xs:date; Exchange returns them with the zone offset of the
  series, e.g. ``2026-01-05+01:00`` (exchangelib reads exactly that form back as a date; a bare
  date would be read as a UTC datetime).
- Occurrences keep the master's wall-clock time and length in the master's StartTimeZone, so a
  09:00 Berlin series stays at 09:00 local across DST.
- Saving a recurrence (set or removed) drops the series' exceptions, as Outlook warns ("any
  exceptions associated with this recurring appointment will be lost").
- A relative pattern's DaysOfWeek may be a day kind instead of a weekday: ``Day`` (any day),
  ``Weekday`` (Monday to Friday) or ``WeekendDay`` (Saturday, Sunday); DayOfWeekIndex then picks
  the first to fourth or the last of those days in the month ("the last weekday of the month").
  This is the MonthNth pattern of the stored recurrence blob ([MS-OXOCAL] 2.2.1.44.1.6
  PatternTypeSpecific MonthNth: a day mask and N, "the Nth occurrence of the days specified",
  with "Nth Weekday" = bits M-F and "Nth Weekend" = bits Sa, Su), and iCalendar's
  ``BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1`` ([MS-OXCICAL] 2.1.3.2.2.4). A weekly pattern cannot use a
  day kind: ErrorCalendarInvalidDayForWeeklyRecurrence ("invalid values of Day, WeekDay, and
  WeekendDay are used to specify the weekly recurrence", ResponseCode reference).
- A range in which the pattern has no date at all is ErrorRecurrenceHasNoOccurrence ("the
  specified recurrence does not have any occurrence instances in the specified range").

Expansion here walks the pattern period by period; the test suite checks it against
dateutil's rrule, an independent implementation.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

from . import ids, xmlio
from .engine_ctx import Ctx, MsgError

OCC_TAG = b"TSLO"
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEK_INDEX = {"First": 1, "Second": 2, "Third": 3, "Fourth": 4, "Last": 5}
# DayOfWeekType's day kinds: the weekdays (0 = Monday) each one stands for.
DAY_KINDS = {"Day": (0, 1, 2, 3, 4, 5, 6), "Weekday": (0, 1, 2, 3, 4), "WeekendDay": (5, 6)}
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
PATTERNS = (
    "DailyRecurrence",
    "WeeklyRecurrence",
    "AbsoluteMonthlyRecurrence",
    "RelativeMonthlyRecurrence",
    "AbsoluteYearlyRecurrence",
    "RelativeYearlyRecurrence",
)
RANGES = ("NoEndRecurrence", "EndDateRecurrence", "NumberedRecurrence")
HORIZON = dt.date(2200, 1, 1)  # a no-end series is expanded at most this far
SERIES_KEY = "$series"  # exceptions, kept in the master's stored data (never written out)
MESSAGES = {
    "ErrorCalendarOccurrenceIsDeletedFromRecurrence": "Occurrence is deleted from the recurrence.",
    "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange": "Occurrence index is out of recurrence range.",
    "ErrorOccurrenceCrossingBoundary": "The occurrence can't be moved past an adjacent occurrence.",
    "ErrorCalendarInvalidRecurrence": "The recurrence pattern is invalid.",
    "ErrorCalendarInvalidDayForWeeklyRecurrence": "Day, Weekday and WeekendDay are not valid in a weekly "
    "recurrence.",
    "ErrorRecurrenceHasNoOccurrence": "The recurrence has no occurrence in its range.",
}


def _err(code: str) -> MsgError:
    return MsgError(code, MESSAGES.get(code))


# ---------------------------------------------------------------------------------------------
# ids


def occurrence_id(master_id: str, index: int) -> str:
    raw = base64.b64decode(master_id)
    return base64.b64encode(OCC_TAG + raw[4:] + index.to_bytes(4, "big")).decode("ascii")


def parse_occurrence_id(value: str) -> tuple[str, int] | None:
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if len(raw) != 24 or raw[:4] != OCC_TAG:
        return None
    master = base64.b64encode(ids.ITEM_TAG + raw[4:20]).decode("ascii")
    return master, int.from_bytes(raw[20:], "big")


# ---------------------------------------------------------------------------------------------
# the pattern


@dataclass(frozen=True)
class Pattern:
    kind: str
    interval: int
    days: tuple[int, ...]  # 0 = Monday; a relative pattern's day kind stands for several
    day_of_month: int
    week_index: int
    month: int
    first_day_of_week: int
    start: dt.date
    end: dt.date | None
    count: int | None


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(str(text)[:10])


def parse(rec: dict[str, Any]) -> Pattern:
    kind = next((k for k in PATTERNS if k in rec), None)
    rng_kind = next((k for k in RANGES if k in rec), None)
    if kind is None or rng_kind is None:
        raise _err("ErrorCalendarInvalidRecurrence")
    p, r = rec[kind], rec[rng_kind]
    day_names = str(p.get("DaysOfWeek", "")).split()
    if kind == "WeeklyRecurrence" and any(d in DAY_KINDS for d in day_names):
        raise _err("ErrorCalendarInvalidDayForWeeklyRecurrence")
    if kind.startswith("Relative") and len(day_names) != 1:
        raise _err("ErrorCalendarInvalidRecurrence")
    try:
        days = tuple(sorted({i for d in day_names for i in DAY_KINDS.get(d) or (DAYS.index(d),)}))
    except ValueError:
        raise _err("ErrorCalendarInvalidRecurrence") from None
    month = p.get("Month")
    pattern = Pattern(
        kind=kind,
        interval=int(p.get("Interval", 1)),
        days=days,
        day_of_month=int(p.get("DayOfMonth", 1)),
        week_index=WEEK_INDEX.get(p.get("DayOfWeekIndex", "First"), 1),
        month=MONTHS.index(month) + 1 if month in MONTHS else 1,
        first_day_of_week=DAYS.index(p["FirstDayOfWeek"]) if p.get("FirstDayOfWeek") in DAYS else 6,
        start=_date(r["StartDate"]),
        end=_date(r["EndDate"]) if "EndDate" in r else None,
        count=int(r["NumberOfOccurrences"]) if "NumberOfOccurrences" in r else None,
    )
    if pattern.interval < 1 or (kind in ("WeeklyRecurrence",) and not days):
        raise _err("ErrorCalendarInvalidRecurrence")
    if pattern.end is not None and pattern.end < pattern.start:
        raise _err("ErrorCalendarEndDateIsEarlierThanStartDate")
    if pattern.count is not None and pattern.count < 1:
        raise _err("ErrorCalendarInvalidRecurrence")
    return pattern


def _month_day(year: int, month: int, p: Pattern) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    if p.kind in ("AbsoluteMonthlyRecurrence", "AbsoluteYearlyRecurrence"):
        # A day beyond the month's end means its last day (Outlook: "day 31 of every month").
        return last.replace(day=min(p.day_of_month, last.day))
    # The Nth (or the last) of the month's days whose weekday is among p.days: one weekday, or a
    # day kind (any day, weekdays, weekend days). Every month has at least four of each.
    first = dt.date(year, month, 1)
    matching = [day for n in range(last.day) if (day := first + dt.timedelta(days=n)).weekday() in p.days]
    return matching[-1] if p.week_index == 5 else matching[p.week_index - 1]


def _candidates(p: Pattern) -> Iterator[dt.date]:
    """Pattern dates from the range start on, in order, without the range's end."""
    if p.kind == "DailyRecurrence":
        day = p.start
        while day < HORIZON:
            yield day
            day += dt.timedelta(days=p.interval)
        return
    if p.kind == "WeeklyRecurrence":
        week = p.start - dt.timedelta(days=(p.start.weekday() - p.first_day_of_week) % 7)
        offsets = sorted((d - p.first_day_of_week) % 7 for d in p.days)
        while week < HORIZON:
            for off in offsets:
                day = week + dt.timedelta(days=off)
                if day >= p.start:
                    yield day
            week += dt.timedelta(days=7 * p.interval)
        return
    if p.kind in ("AbsoluteYearlyRecurrence", "RelativeYearlyRecurrence"):
        for year in range(p.start.year, HORIZON.year):
            day = _month_day(year, p.month, p)
            if day >= p.start:
                yield day
        return
    month0 = p.start.year * 12 + p.start.month - 1
    while month0 // 12 < HORIZON.year:
        day = _month_day(month0 // 12, month0 % 12 + 1, p)
        if day >= p.start:
            yield day
        month0 += p.interval


def dates(p: Pattern, until: dt.date | None = None) -> Iterator[tuple[int, dt.date]]:
    """(InstanceIndex, date) of every occurrence by the pattern, up to ``until`` if given."""
    for index, day in enumerate(_candidates(p), start=1):
        if p.count is not None and index > p.count:
            return
        if p.end is not None and day > p.end:
            return
        if until is not None and day > until:
            return
        yield index, day


def nth(p: Pattern, index: int) -> dt.date | None:
    for i, day in dates(p):
        if i == index:
            return day
        if i > index:
            break
    return None


# ---------------------------------------------------------------------------------------------
# times


def zone_of(data: dict[str, Any], fallback: str | None) -> ZoneInfo:
    tz = (data.get("StartTimeZone") or {}).get("@Id") or fallback or "UTC"
    return ZoneInfo(xmlio.WINDOWS_ZONES.get(tz, ("UTC", ""))[0])


@dataclass(frozen=True)
class Clock:
    """The master's wall-clock start and length, to place each occurrence."""

    zone: ZoneInfo
    time: dt.time
    length: dt.timedelta  # wall-clock length (an all-day item spans whole local days)

    def span(self, day: dt.date) -> tuple[str, str]:
        start = dt.datetime.combine(day, self.time)
        end = start + self.length
        return (
            xmlio.format_datetime(start.replace(tzinfo=self.zone)),
            xmlio.format_datetime(end.replace(tzinfo=self.zone)),
        )

    def local_date(self, utc_text: str) -> dt.date:
        return xmlio.parse_datetime(utc_text).astimezone(self.zone).date()


def clock(data: dict[str, Any], fallback: str | None) -> Clock:
    zone = zone_of(data, fallback)
    start = xmlio.parse_datetime(data["Start"]).astimezone(zone).replace(tzinfo=None)
    end = xmlio.parse_datetime(data.get("End") or data["Start"]).astimezone(zone).replace(tzinfo=None)
    return Clock(zone, start.time(), end - start)


def _offset_date(day: dt.date, zone: ZoneInfo) -> str:
    # xs:date with the series' offset, as Exchange writes the range dates.
    off = dt.datetime.combine(day, dt.time(0), tzinfo=zone).utcoffset() or dt.timedelta(0)
    if not off:
        return f"{day.isoformat()}Z"
    sign = "+" if off >= dt.timedelta(0) else "-"
    minutes = abs(int(off.total_seconds())) // 60
    return f"{day.isoformat()}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# ---------------------------------------------------------------------------------------------
# masters


def is_master(row: dict[str, Any]) -> bool:
    return row["kind"] == "CalendarItem" and "Recurrence" in row["data"]


def exceptions(data: dict[str, Any]) -> dict[str, Any]:
    box = data.get(SERIES_KEY) or {}
    return {"modified": dict(box.get("modified", {})), "deleted": list(box.get("deleted", []))}


def normalize_master(data: dict[str, Any], changed: set[str], tz: str | None) -> None:
    """After a create or update: a new or removed recurrence drops the exceptions, and the
    master's Start/End move to the first occurrence of the pattern."""
    if "Recurrence" in changed:
        data.pop(SERIES_KEY, None)
    if "Recurrence" not in data:
        data.pop(SERIES_KEY, None)
        return
    if not data.get("Start"):
        raise _err("ErrorCalendarInvalidRecurrence")
    p = parse(data["Recurrence"])
    first = next(dates(p), None)
    if first is None:
        raise _err("ErrorRecurrenceHasNoOccurrence")
    c = clock(data, tz)
    data["Start"], data["End"] = c.span(first[1])
    # Store the range dates bare; the offset is added when they are written out.
    for rng in RANGES:
        r = data["Recurrence"].get(rng)
        if r is None:
            continue
        for k in ("StartDate", "EndDate"):
            if k in r:
                r[k] = str(r[k])[:10]


@dataclass(frozen=True)
class Occ:
    index: int
    original: dt.date
    data: dict[str, Any]  # the occurrence's fields (master's plus its changes)
    modified: bool


def occurrence(row: dict[str, Any], index: int, tz: str | None, p: Pattern | None = None) -> Occ:
    data = row["data"]
    p = p or parse(data["Recurrence"])
    day = nth(p, index)
    if day is None:
        raise _err("ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange")
    exc = exceptions(data)
    if index in exc["deleted"]:
        raise _err("ErrorCalendarOccurrenceIsDeletedFromRecurrence")
    return _occ(row, index, day, clock(data, tz), exc)


def _occ(row: dict[str, Any], index: int, day: dt.date, c: Clock, exc: dict[str, Any]) -> Occ:
    data = {k: v for k, v in row["data"].items() if k not in _MASTER_ONLY}
    data["Start"], data["End"] = c.span(day)
    data["OriginalStart"] = data["Start"]
    changes = exc["modified"].get(str(index))
    if changes:
        for k, v in changes.items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = v
    return Occ(index, day, data, bool(changes))


_MASTER_ONLY = frozenset(
    {
        "Recurrence",
        "FirstOccurrence",
        "LastOccurrence",
        "ModifiedOccurrences",
        "DeletedOccurrences",
        SERIES_KEY,
    }
)


def expand(row: dict[str, Any], tz: str | None, lo: str, hi: str) -> Iterator[Occ]:
    """The occurrences (exceptions included, deleted ones not) that overlap [lo, hi)."""
    data = row["data"]
    p = parse(data["Recurrence"])
    c = clock(data, tz)
    exc = exceptions(data)
    deleted = set(exc["deleted"])
    hi_day = xmlio.parse_datetime(hi).date() + dt.timedelta(days=1)
    beyond = 0
    for index, day in dates(p):
        if day > hi_day:
            # An exception cannot cross a neighbour, so only the first occurrence after the
            # window can have been moved into it.
            beyond += 1
            if beyond > 1:
                return
        if index in deleted:
            continue
        occ = _occ(row, index, day, c, exc)
        s, e = occ.data["Start"], occ.data.get("End") or occ.data["Start"]
        if s < hi and e > lo or s == e == lo:
            yield occ


def occurrence_view(base_view: dict[str, Any], row: dict[str, Any], occ: Occ) -> dict[str, Any]:
    view = {k: v for k, v in base_view.items() if k not in _MASTER_ONLY}
    view.update(occ.data)
    view["ItemId"] = {"@Id": occurrence_id(row["id"], occ.index), "@ChangeKey": row["change_key"]}
    view["CalendarItemType"] = "Exception" if occ.modified else "Occurrence"
    view["IsRecurring"] = True
    return view


def master_view(view: dict[str, Any], row: dict[str, Any], tz: str | None) -> None:
    """Add what Exchange computes for a recurring master to its view."""
    data = row["data"]
    p = parse(data["Recurrence"])
    c = clock(data, tz)
    exc = exceptions(data)
    view["CalendarItemType"] = "RecurringMaster"
    # Documented (IsRecurring element reference): FALSE on the organizer's own recurring
    # master, TRUE on its occurrences and exceptions; the type says what the item is.
    view["IsRecurring"] = False
    view["Recurrence"] = recurrence_view(data["Recurrence"], c.zone)
    deleted = set(exc["deleted"])
    first = next(((i, d) for i, d in dates(p) if i not in deleted), None)
    if first is not None:
        view["FirstOccurrence"] = _info(row, _occ(row, *first, c, exc))
    if p.end is not None or p.count is not None:
        last = None
        for i, d in dates(p):
            if i not in deleted:
                last = (i, d)
        if last is not None:
            view["LastOccurrence"] = _info(row, _occ(row, *last, c, exc))
    modified = []
    for key in sorted(exc["modified"], key=int):
        day = nth(p, int(key))
        if day is not None and int(key) not in deleted:
            modified.append(_info(row, _occ(row, int(key), day, c, exc)))
    if modified:
        view["ModifiedOccurrences"] = {"Occurrence": modified}
    starts = [{"Start": c.span(day)[0]} for i in sorted(deleted) if (day := nth(p, i)) is not None]
    if starts:
        view["DeletedOccurrences"] = {"DeletedOccurrence": starts}


def recurrence_view(rec: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """A stored Recurrence as Exchange writes it: the range dates with the zone's offset."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in rec.items()}
    for rng in RANGES:
        for k in ("StartDate", "EndDate"):
            if k in out.get(rng, {}):
                out[rng][k] = _offset_date(_date(out[rng][k]), zone)
    return out


def _info(row: dict[str, Any], occ: Occ) -> dict[str, Any]:
    return {
        "ItemId": {"@Id": occurrence_id(row["id"], occ.index), "@ChangeKey": row["change_key"]},
        "Start": occ.data["Start"],
        "End": occ.data.get("End") or occ.data["Start"],
        "OriginalStart": occ.data["OriginalStart"],
    }


# ---------------------------------------------------------------------------------------------
# addressing


def resolve(ctx: Ctx, el: etree._Element) -> tuple[str, int | None] | None:
    """(master id, instance index or None for the master) for an occurrence or master reference;
    None when ``el`` is a plain ItemId of a stored item."""
    local = etree.QName(el).localname
    if local == "OccurrenceItemId":
        try:
            index = int(el.get("InstanceIndex", ""))
        except ValueError:
            raise MsgError("ErrorInvalidIdMalformed") from None
        if index < 1:
            raise _err("ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange")
        return el.get("RecurringMasterId", ""), index
    if local == "RecurringMasterItemId":
        parsed = parse_occurrence_id(el.get("OccurrenceId", ""))
        if parsed is None:
            raise MsgError("ErrorInvalidIdMalformed")
        return parsed[0], None
    parsed = parse_occurrence_id(el.get("Id", ""))
    return parsed


def master_row(ctx: Ctx, master_id: str) -> dict[str, Any]:
    if not ids.is_well_formed(master_id, ids.ITEM_TAG):
        raise MsgError("ErrorInvalidIdMalformed")
    row = ctx.store.item(ctx.mailbox, master_id)
    if row is None:
        raise MsgError("ErrorItemNotFound")
    if not is_master(row):
        # Exchange: an OccurrenceItemId on a single item.
        raise _err("ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange")
    return row


def delete_occurrence(ctx: Ctx, row: dict[str, Any], index: int) -> None:
    occurrence(row, index, ctx.tz)  # raises for deleted / out of range
    exc = exceptions(row["data"])
    exc["modified"].pop(str(index), None)
    exc["deleted"] = sorted({*exc["deleted"], index})
    row["data"][SERIES_KEY] = exc


# Fields an exception may carry (what Outlook lets a user change on one occurrence).
EXCEPTION_FIELDS = frozenset(
    {
        "Subject",
        "Body",
        "Location",
        "Start",
        "End",
        "IsAllDayEvent",
        "LegacyFreeBusyStatus",
        "ReminderIsSet",
        "ReminderMinutesBeforeStart",
        "Categories",
        "Sensitivity",
        "Importance",
        "StartTimeZone",
        "EndTimeZone",
    }
)


def store_exception(
    ctx: Ctx, row: dict[str, Any], index: int, before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Keep what an update changed on occurrence ``index`` as its exception."""
    data = row["data"]
    p = parse(data["Recurrence"])
    c = clock(data, ctx.tz)
    for k in set(before) | set(after):
        if before.get(k) != after.get(k) and k not in EXCEPTION_FIELDS:
            raise MsgError("ErrorInvalidPropertySet", f"The property {k} cannot be set on an occurrence.")
    new_day = c.local_date(after["Start"])
    prev_day = nth(p, index - 1) if index > 1 else None
    next_day = nth(p, index + 1)
    if (prev_day is not None and new_day <= prev_day) or (next_day is not None and new_day >= next_day):
        raise _err("ErrorOccurrenceCrossingBoundary")
    day = nth(p, index)
    if day is None:  # the caller found the occurrence; a pattern that lost it is out of range
        raise _err("ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange")
    base = _occ(row, index, day, c, {"modified": {}, "deleted": []}).data
    changes = {k: after.get(k) for k in set(base) | set(after) if base.get(k) != after.get(k)}
    changes.pop("OriginalStart", None)
    exc = exceptions(data)
    if changes:
        exc["modified"][str(index)] = changes
    else:
        exc["modified"].pop(str(index), None)
    data[SERIES_KEY] = exc
