"""Series over Graph in the sandbox: ``patternedRecurrence`` on the store's recurring masters.

The store keeps a series as the EWS sandbox does (``sandbox/series.py``): one master row with an
EWS-shaped ``Recurrence`` and its exceptions, so a series written over one protocol is read over
the other. This module translates Graph's JSON to that shape and back, and serves what Graph
shows of a series. What it follows (Microsoft Learn: event resource, recurrencePattern,
recurrenceRange, "Schedule repeating appointments as recurring events", event-list-instances,
event-update):

- A series is one ``seriesMaster`` event; ``/events`` lists it once. ``calendarView`` and
  ``/events/{id}/instances`` show its ``occurrence`` and ``exception`` instances in the window
  (cancelled ones not), each with an id of its own, ``seriesMasterId`` and ``originalStart``
  (the UTC instant the pattern gave it).
- Only the pattern properties a type uses count; a required one missing is refused. The
  range's ``startDate`` must be the date of the event's start; the first occurrence is the
  first date of the pattern on or after it (the master's start moves there, as over EWS).
- PATCH on an instance makes it an exception (moving it onto or past a neighbour's day is 400
  ``ErrorOccurrenceCrossingBoundary``); DELETE on an instance cancels it (a cancelled one is
  gone: 404). ``recurrence: null`` on a master makes it a single event.
- What a changed pattern does to existing exceptions Graph does not document, and Exchange keeps
  deleted occurrences when a series' range is extended over EWS (as reported against the EWS
  Managed API on GitHub). ``RECURRENCE_EDITS`` picks: "keep" (default) keeps the exceptions and cancellations
  whose original date is still a date of the new pattern, "reset" drops them all whenever a
  different recurrence is written. A PATCH that repeats the same recurrence keeps them in both.
- ``cancelledOccurrences`` (on ``$select``) and ``exceptionOccurrences`` (on ``$expand``) are
  answered for a master; the cancelled ones as ``OID.{master id}.{date}`` (the beta
  ``occurrenceId`` form; UNCONFIRMED for v1.0).
- A relative pattern on several days picks the n-th (or last) of the month's days among them;
  Monday to Friday, Saturday and Sunday, and all seven are EWS's day kinds Weekday, WeekendDay
  and Day, so a series on "the last weekday of the month" reads the same over both protocols.
- Not expanded here (refused with 400, never sent by the plugin): relative patterns on other
  sets of days, yearly patterns every n years whose month is not the start's.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from .. import series as ews
from .. import xmlio
from . import convert as cv
from .convert import GraphError, bad

RECURRENCE_EDITS = ("keep", "reset")

_PATTERNS = {
    "daily": "DailyRecurrence",
    "weekly": "WeeklyRecurrence",
    "absoluteMonthly": "AbsoluteMonthlyRecurrence",
    "relativeMonthly": "RelativeMonthlyRecurrence",
    "absoluteYearly": "AbsoluteYearlyRecurrence",
    "relativeYearly": "RelativeYearlyRecurrence",
}
_PATTERNS_OUT = {v: k for k, v in _PATTERNS.items()}
_RANGES = {"endDate": "EndDateRecurrence", "noEnd": "NoEndRecurrence", "numbered": "NumberedRecurrence"}
_RANGES_OUT = {v: k for k, v in _RANGES.items()}
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_INDEX = ("first", "second", "third", "fourth", "last")
_REQUIRED = {
    "daily": (),
    "weekly": ("daysOfWeek",),
    "absoluteMonthly": ("dayOfMonth",),
    "relativeMonthly": ("daysOfWeek",),
    "absoluteYearly": ("dayOfMonth", "month"),
    "relativeYearly": ("daysOfWeek", "month"),
}
CROSSING = "Modified occurrence is crossing or overlapping adjacent occurrence."
NOT_FOUND = "The specified object was not found in the store."


def is_master(row: dict[str, Any]) -> bool:
    return ews.is_master(row)


# ------------------------------------------------------------------ Graph JSON <-> the store


def _invalid(text: str) -> GraphError:
    return bad("ErrorInvalidRequest", text)


def _day(value: Any, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise _invalid(f"{what}: invalid date {value!r}.") from None


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise _invalid(f"{what} must be a whole number.")
    if not low <= int(value) <= high:
        raise _invalid(f"{what} is out of range ({low} to {high}).")
    return int(value)


def _day_kind(days: list[str]) -> str:
    """A relative pattern's days as EWS's one DaysOfWeek value: a weekday, or the day kind the
    set stands for (all days, Monday to Friday, the weekend: MS-OXOCAL's MonthNth day mask)."""
    wanted = tuple(sorted({_DAYS.index(d) for d in days}))
    if len(wanted) == 1:
        return _DAYS[wanted[0]].capitalize()
    for name, kind_days in ews.DAY_KINDS.items():
        if wanted == kind_days:
            return name
    raise _invalid(
        "The sandbox expands relative patterns on one weekday, every day, weekdays or weekend days only."
    )


def to_store(rec: Any, start_day: dt.date) -> dict[str, Any]:
    """A patternedRecurrence -> the store's Recurrence; ``start_day``: the event start's local date."""
    if (
        not isinstance(rec, dict)
        or not isinstance(rec.get("pattern"), dict)
        or not isinstance(rec.get("range"), dict)
    ):
        raise _invalid("A recurrence needs a pattern and a range.")
    p, r = rec["pattern"], rec["range"]
    kind = p.get("type")
    if kind not in _PATTERNS:
        raise _invalid(f"Invalid recurrence pattern type {kind!r}.")
    if "interval" not in p:
        raise _invalid("The recurrence pattern needs an interval.")
    interval = _int(p["interval"], "interval", 1, 999)
    for name in _REQUIRED[kind]:
        if p.get(name) in (None, []):
            raise _invalid(f"A {kind} recurrence pattern needs {name}.")
    days = p.get("daysOfWeek") or []
    if not isinstance(days, list) or any(d not in _DAYS for d in days):
        raise _invalid(f"Invalid daysOfWeek {days!r}.")
    out: dict[str, Any] = {"Interval": interval}
    if kind == "weekly":
        first = p.get("firstDayOfWeek") or "sunday"  # Graph's documented default
        if first not in _DAYS:
            raise _invalid(f"Invalid firstDayOfWeek {first!r}.")
        out["DaysOfWeek"] = " ".join(d.capitalize() for d in sorted(set(days), key=_DAYS.index))
        out["FirstDayOfWeek"] = first.capitalize()
    if kind in ("relativeMonthly", "relativeYearly"):
        index = p.get("index") or "first"
        if index not in _INDEX:
            raise _invalid(f"Invalid index {index!r}.")
        out["DaysOfWeek"] = _day_kind(days)
        out["DayOfWeekIndex"] = "Last" if index == "last" else index.capitalize()
    if kind in ("absoluteMonthly", "absoluteYearly"):
        out["DayOfMonth"] = _int(p["dayOfMonth"], "dayOfMonth", 1, 31)
    ews_kind = _PATTERNS[kind]
    if kind in ("absoluteYearly", "relativeYearly"):
        month = _int(p["month"], "month", 1, 12)
        out["Month"] = ews.MONTHS[month - 1]
        if interval > 1:
            # EWS's yearly patterns have no interval; every n years is every 12·n months when the
            # series starts in the pattern's month.
            if month != start_day.month:
                raise _invalid("The sandbox expands yearly patterns every n years only from their month.")
            out.pop("Month")
            out["Interval"] = 12 * interval
            ews_kind = ews_kind.replace("Yearly", "Monthly")
        else:
            out.pop("Interval")
    rng_kind = r.get("type")
    if rng_kind not in _RANGES:
        raise _invalid(f"Invalid recurrence range type {rng_kind!r}.")
    if not r.get("startDate"):
        raise _invalid("The recurrence range needs a startDate.")
    start = _day(r["startDate"], "startDate")
    if start != start_day:
        # "startDate MUST correspond to the date value of the start property" (recurrenceRange).
        raise _invalid("The recurrence range's startDate must be the date of the event's start.")
    if r.get("recurrenceTimeZone"):
        cv.zone_of(str(r["recurrenceTimeZone"]))  # a name Graph does not accept is refused
    rng: dict[str, Any] = {"StartDate": start.isoformat()}
    if rng_kind == "endDate":
        if not r.get("endDate"):
            raise _invalid("An endDate range needs an endDate.")
        end = _day(r["endDate"], "endDate")
        if end < start:
            raise _invalid("The recurrence range ends before it starts.")
        rng["EndDate"] = end.isoformat()
    if rng_kind == "numbered":
        rng["NumberOfOccurrences"] = _int(r.get("numberOfOccurrences"), "numberOfOccurrences", 1, 999_999)
    return {ews_kind: out, _RANGES[rng_kind]: rng}


def to_graph(data: dict[str, Any]) -> dict[str, Any]:
    """The store's Recurrence -> patternedRecurrence (a monthly pattern stays monthly)."""
    rec = data["Recurrence"]
    ews_kind = next(k for k in ews.PATTERNS if k in rec)
    rng_kind = next(k for k in ews.RANGES if k in rec)
    p, r = rec[ews_kind], rec[rng_kind]
    pattern: dict[str, Any] = {"type": _PATTERNS_OUT[ews_kind], "interval": int(p.get("Interval", 1))}
    names = str(p.get("DaysOfWeek", "")).split()
    if names:
        # A day kind is several days for Graph ("the first day that satisfies the pattern").
        days = [d for n in names for d in (ews.DAY_KINDS[n] if n in ews.DAY_KINDS else (ews.DAYS.index(n),))]
        pattern["daysOfWeek"] = [_DAYS[d] for d in days]
    if ews_kind == "WeeklyRecurrence":
        pattern["firstDayOfWeek"] = str(p.get("FirstDayOfWeek") or "Sunday").lower()
    if "DayOfWeekIndex" in p:
        pattern["index"] = str(p["DayOfWeekIndex"]).lower()
    if "DayOfMonth" in p:
        pattern["dayOfMonth"] = int(p["DayOfMonth"])
    if "Month" in p:
        pattern["month"] = ews.MONTHS.index(p["Month"]) + 1
    zone = (data.get("StartTimeZone") or {}).get("@Id") or "UTC"
    rng: dict[str, Any] = {
        "type": _RANGES_OUT[rng_kind],
        "startDate": str(r["StartDate"])[:10],
        "recurrenceTimeZone": zone,
    }
    if "EndDate" in r:
        rng["endDate"] = str(r["EndDate"])[:10]
    if "NumberOfOccurrences" in r:
        rng["numberOfOccurrences"] = int(r["NumberOfOccurrences"])
    return {"pattern": pattern, "range": rng}


# ------------------------------------------------------------------ expansion


def clock(data: dict[str, Any]) -> ews.Clock:
    """The master's wall-clock start and length, in its start zone as Graph names it."""
    zone = cv.zone_of((data.get("StartTimeZone") or {}).get("@Id") or "UTC")
    start = xmlio.parse_datetime(data["Start"]).astimezone(zone).replace(tzinfo=None)
    end = xmlio.parse_datetime(data.get("End") or data["Start"]).astimezone(zone).replace(tzinfo=None)
    return ews.Clock(zone, start.time(), end - start)


def _pattern(data: dict[str, Any]) -> ews.Pattern:
    try:
        return ews.parse(data["Recurrence"])
    except Exception:
        raise _invalid("The recurrence of this series cannot be expanded.") from None


_MASTER_ONLY = (
    "Recurrence",
    "FirstOccurrence",
    "LastOccurrence",
    "ModifiedOccurrences",
    "DeletedOccurrences",
)


def _occ(row: dict[str, Any], index: int, day: dt.date, c: ews.Clock, exc: dict[str, Any]) -> ews.Occ:
    data = {k: v for k, v in row["data"].items() if k not in _MASTER_ONLY and k != ews.SERIES_KEY}
    data["Start"], data["End"] = c.span(day)
    data["OriginalStart"] = data["Start"]
    changes = exc["modified"].get(str(index))
    for k, v in (changes or {}).items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    return ews.Occ(index, day, data, bool(changes))


def expand(row: dict[str, Any], lo: dt.datetime, hi: dt.datetime) -> Iterator[ews.Occ]:
    """Occurrences and exceptions (not cancelled ones) overlapping [lo, hi), in order."""
    data = row["data"]
    p = _pattern(data)
    c = clock(data)
    exc = ews.exceptions(data)
    deleted = set(exc["deleted"])
    last_day = hi.astimezone(c.zone).date() + dt.timedelta(days=1)
    beyond = 0
    for index, day in ews.dates(p):
        if day > last_day:
            # An exception cannot pass a neighbour: only the next occurrence can reach back.
            beyond += 1
            if beyond > 1:
                return
        if index in deleted:
            continue
        occ = _occ(row, index, day, c, exc)
        s = xmlio.parse_datetime(occ.data["Start"])
        e = xmlio.parse_datetime(occ.data.get("End") or occ.data["Start"])
        if (s < hi and e > lo) or (s == e == lo):
            yield occ


def occurrence(row: dict[str, Any], index: int) -> ews.Occ:
    """Occurrence ``index`` of a master; 404 for a cancelled one or one beyond the series."""
    data = row["data"]
    p = _pattern(data)
    day = ews.nth(p, index)
    exc = ews.exceptions(data)
    if day is None or index in exc["deleted"]:
        raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
    return _occ(row, index, day, clock(data), exc)


def occurrence_id(row: dict[str, Any], index: int) -> str:
    return cv.rest_id(ews.occurrence_id(row["id"], index))


def parse_instance_id(ews_id: str) -> tuple[str, int] | None:
    """(master id, index) for the id of an instance, None for the id of a stored item."""
    return ews.parse_occurrence_id(ews_id)


# ------------------------------------------------------------------ writes


def apply(row: dict[str, Any], body: dict[str, Any], before: dict[str, Any], mode: str) -> None:
    """After ``event_apply``: set, change or remove the recurrence of a master, and move its
    start to the first occurrence."""
    data = row["data"]
    if "recurrence" in body:
        rec = body["recurrence"]
        if rec is None:
            data.pop("Recurrence", None)
            data.pop(ews.SERIES_KEY, None)
        else:
            if not data.get("Start"):
                raise _invalid("A recurring event needs a start.")
            zone = cv.zone_of((data.get("StartTimeZone") or {}).get("@Id") or "UTC")
            start_day = xmlio.parse_datetime(data["Start"]).astimezone(zone).date()
            new = to_store(rec, start_day)
            old = before.get("Recurrence")
            data["Recurrence"] = new
            if old is not None and old != new:
                _carry_exceptions(data, old, new, mode)
    if "Recurrence" not in data:
        return
    p = _pattern(data)
    first = next(ews.dates(p), None)
    if first is None:
        raise _invalid("The recurrence has no occurrence.")
    data["Start"], data["End"] = clock(data).span(first[1])


def _carry_exceptions(data: dict[str, Any], old: dict[str, Any], new: dict[str, Any], mode: str) -> None:
    exc = ews.exceptions(data)
    data.pop(ews.SERIES_KEY, None)
    if mode == "reset" or not (exc["modified"] or exc["deleted"]):
        return
    needed = max([int(k) for k in exc["modified"]] + list(exc["deleted"]))
    try:
        old_dates = {}
        for i, day in ews.dates(ews.parse(old)):
            if i > needed:
                break
            old_dates[i] = day
        last = max(old_dates.values(), default=None)
        new_index = {day: i for i, day in ews.dates(ews.parse(new), until=last)} if last else {}
    except Exception:
        return
    kept: dict[str, Any] = {"modified": {}, "deleted": []}
    for key, changes in exc["modified"].items():
        old_day = old_dates.get(int(key))
        if old_day in new_index:
            kept["modified"][str(new_index[old_day])] = changes
    for index in exc["deleted"]:
        old_day = old_dates.get(index)
        if old_day in new_index:
            kept["deleted"].append(new_index[old_day])
    if kept["modified"] or kept["deleted"]:
        kept["deleted"].sort()
        data[ews.SERIES_KEY] = kept


# Fields an instance may change (what a user may change on one occurrence).
INSTANCE_FIELDS = frozenset(
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
        "StartTimeZone",
        "EndTimeZone",
    }
)


def update_instance(
    row: dict[str, Any],
    index: int,
    body: dict[str, Any],
    apply_event: Callable[[dict[str, Any], dict[str, Any]], object],
) -> ews.Occ:
    """PATCH on an instance: what differs from the pattern's occurrence becomes its exception."""
    if "recurrence" in body:
        raise _invalid("The recurrence can only be set on the series master.")
    if "singleValueExtendedProperties" in body:
        raise _invalid("Extended properties belong to the series master.")
    occ = occurrence(row, index)
    data = row["data"]
    work = {**row, "data": copy.deepcopy(occ.data), "ext": {}}
    apply_event(work, body)
    after = work["data"]
    for k in set(occ.data) | set(after):
        if occ.data.get(k) != after.get(k) and k not in INSTANCE_FIELDS and k != "OriginalStart":
            raise _invalid(f"The property {k} cannot be changed on one occurrence.")
    p = _pattern(data)
    c = clock(data)
    new_day = xmlio.parse_datetime(after["Start"]).astimezone(c.zone).date()
    prev_day = ews.nth(p, index - 1) if index > 1 else None
    next_day = ews.nth(p, index + 1)
    if (prev_day is not None and new_day <= prev_day) or (next_day is not None and new_day >= next_day):
        raise bad("ErrorOccurrenceCrossingBoundary", CROSSING)
    base = _occ(row, index, occ.original, c, {"modified": {}, "deleted": []}).data
    changes = {k: after.get(k) for k in set(base) | set(after) if base.get(k) != after.get(k)}
    changes.pop("OriginalStart", None)
    exc = ews.exceptions(data)
    if changes:
        exc["modified"][str(index)] = changes
    else:
        exc["modified"].pop(str(index), None)
    data[ews.SERIES_KEY] = exc
    return occurrence(row, index)


def cancel_instance(row: dict[str, Any], index: int) -> None:
    occurrence(row, index)  # 404 for one already cancelled or beyond the series
    exc = ews.exceptions(row["data"])
    exc["modified"].pop(str(index), None)
    exc["deleted"] = sorted({*exc["deleted"], index})
    row["data"][ews.SERIES_KEY] = exc


# ------------------------------------------------------------------ what a master shows


def cancelled_ids(row: dict[str, Any]) -> list[str]:
    data = row["data"]
    p = _pattern(data)
    master = cv.rest_id(row["id"])
    return [
        f"OID.{master}.{day.isoformat()}"
        for i in ews.exceptions(data)["deleted"]
        if (day := ews.nth(p, i)) is not None
    ]


def exception_occurrences(row: dict[str, Any]) -> list[ews.Occ]:
    data = row["data"]
    exc = ews.exceptions(data)
    return [occurrence(row, int(k)) for k in sorted(exc["modified"], key=int) if int(k) not in exc["deleted"]]


def event_view(
    row: dict[str, Any], occ: ews.Occ | None, zone: str, expand_ext: str | None, txn: str | None
) -> dict[str, Any]:
    """The Graph JSON of a single event, a series master, or one instance (``occ``) of a master."""
    if occ is None:
        out = cv.event_out(row, zone, expand_ext, txn)
        if is_master(row):
            out["type"] = "seriesMaster"
            out["recurrence"] = to_graph(row["data"])
        else:
            out["recurrence"] = None
        return out
    out = cv.event_out({**row, "data": occ.data}, zone, expand_ext, None)
    out.update(
        id=occurrence_id(row, occ.index),
        type="exception" if occ.modified else "occurrence",
        seriesMasterId=cv.rest_id(row["id"]),
        originalStart=occ.data["OriginalStart"],
        recurrence=None,
    )
    return out
