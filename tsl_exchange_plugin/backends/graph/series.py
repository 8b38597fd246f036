"""Series over Graph: what a recurring master's instances must look like, and what to send.

Pure planning, no HTTP (``backend.py`` sends). After a master is written with its whole
recurrence, its instances are read back over the span of the series (``window``) and compared
with the host's series (``plan``): an instance the host cancelled is deleted, one the host
moved or renamed is patched (it becomes an exception), and one that differs from the host
without the host asking for it (a phone edit, an exception of an earlier state of the series)
is patched back to the series' values. What Graph does to existing exceptions when a
recurrence is written again is not documented, so nothing here relies on it either way. An
occurrence the host wants but the mailbox no longer has (cancelled on a phone, or earlier by
the host) cannot be brought back one by one in Graph: then the plan asks for the series to be
written anew (``Plan.rewrite``).

The span: the whole series for one that ends (at most 999 occurrences, the mapping's limit),
the first 999 occurrences for one without end, in both cases widened to every exception the
host names. Beyond that a phone edit to a series without end is not seen.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from ...mapping.items import CalendarEntry
from ...mapping.recurrence import MAX_OCCURRENCES, occurrence_dates
from . import wire

# The properties an instance is compared on; everything the plan patches.
SELECT = "id,type,start,end,originalStart,isAllDay,subject,location"


@dataclass(frozen=True)
class Wanted:
    """One occurrence as the host wants it: cancelled, or at ``start``-``end`` with a subject
    and location. Timed: aware datetimes; all-day: dates (inclusive end)."""

    original: dt.date
    cancelled: bool = False
    start: Any = None
    end: Any = None
    subject: str = ""
    location: str = ""


@dataclass
class Plan:
    deletes: list[str] = field(default_factory=list)  # instance ids
    patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (instance id, PATCH body)
    rewrite: bool = False  # an occurrence is missing: the series must be written anew


def _zone(entry: CalendarEntry) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(entry.timezone)


def wanted(entry: CalendarEntry) -> dict[dt.date, Wanted]:
    """Every occurrence in the span, by its date in the pattern."""
    series = entry.recurrence
    assert series is not None
    edits = {e.original_date: e for e in series.edits}
    last_edit = max(edits, default=None)
    zone = _zone(entry)
    out: dict[dt.date, Wanted] = {}
    for n, day in enumerate(occurrence_dates(series.pattern), start=1):
        if n > MAX_OCCURRENCES and (last_edit is None or day > last_edit):
            break
        edit = edits.get(day)
        if edit is not None and edit.deleted:
            out[day] = Wanted(day, cancelled=True)
            continue
        subject = (edit.subject if edit else "") or entry.subject
        location = (edit.location if edit else "") or entry.location
        if entry.all_day:
            first_day, last_day = entry.day_span()
            length = last_day - first_day
            start, end = day, day + length
            if edit is not None and edit.start_date is not None:
                start, end = edit.start_date, edit.end_date or edit.start_date
        else:
            entry_start, entry_end = entry.time_span()
            length = entry_end - entry_start
            start = dt.datetime.combine(day, entry_start.time())
            end = start + length
            if edit is not None and edit.start is not None:
                start, end = edit.start, edit.end or edit.start + length
            # Wall-clock time in the series' zone, as the server places it.
            start, end = start.replace(tzinfo=zone), end.replace(tzinfo=zone)
        out[day] = Wanted(day, start=start, end=end, subject=subject, location=location)
    return out


def window(entry: CalendarEntry, want: dict[dt.date, Wanted]) -> tuple[str, str]:
    """startDateTime/endDateTime (UTC) that hold every wanted occurrence, moved ones included."""
    zone = _zone(entry)
    days = list(want)
    for w in want.values():
        if w.start is not None:
            days += [_local_day(w.start, zone), _local_day(w.end, zone)]
    lo = dt.datetime.combine(min(days) - dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    hi = dt.datetime.combine(max(days) + dt.timedelta(days=2), dt.time(0), tzinfo=zone)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return lo.astimezone(dt.UTC).strftime(fmt), hi.astimezone(dt.UTC).strftime(fmt)


def _local_day(value: dt.date, zone: zoneinfo.ZoneInfo) -> dt.date:
    return value.astimezone(zone).date() if isinstance(value, dt.datetime) else value


def _instant(value: dict[str, Any] | None) -> dt.datetime | None:
    """A dateTimeTimeZone read with ``Prefer: outlook.timezone="UTC"``, or an ISO string."""
    if not value:
        return None
    text = value["dateTime"] if isinstance(value, dict) else str(value)
    text = text.rstrip("Z")[:19]
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def original_date(entry: CalendarEntry, inst: dict[str, Any]) -> dt.date:
    """The date in the pattern of an instance: its originalStart in the series' zone."""
    when = _instant(inst.get("originalStart")) or _instant(inst.get("start"))
    assert when is not None
    if entry.all_day and not inst.get("originalStart"):
        return when.date()
    return when.astimezone(_zone(entry)).date()


def _matches(entry: CalendarEntry, inst: dict[str, Any], w: Wanted) -> bool:
    if (inst.get("subject") or "") != w.subject:
        return False
    if ((inst.get("location") or {}).get("displayName") or "") != w.location:
        return False
    if entry.all_day:
        # All-day instances come back as midnight dates whatever the zone; the end is exclusive.
        start = (inst.get("start") or {}).get("dateTime", "")[:10]
        end = (inst.get("end") or {}).get("dateTime", "")[:10]
        return bool(inst.get("isAllDay")) and (start, end) == (
            w.start.isoformat(),
            (w.end + dt.timedelta(days=1)).isoformat(),
        )
    return _instant(inst.get("start")) == w.start and bool(_instant(inst.get("end")) == w.end)


def patch_body(entry: CalendarEntry, w: Wanted) -> dict[str, Any]:
    """Everything the plan owns on one instance, so a patch also undoes a phone's edit."""
    zone = _zone(entry)
    if entry.all_day:
        span = wire.occurrence_span(entry, w.start, w.end)
    else:
        span = wire.occurrence_span(
            entry,
            w.start.astimezone(zone).replace(tzinfo=None),
            w.end.astimezone(zone).replace(tzinfo=None),
        )
    return {"subject": w.subject, "location": {"displayName": w.location}, **span}


def plan(entry: CalendarEntry, want: dict[dt.date, Wanted], instances: list[dict[str, Any]]) -> Plan:
    """What to send so that the instances equal ``want``."""
    out = Plan()
    seen: set[dt.date] = set()
    for inst in instances:
        day = original_date(entry, inst)
        w = want.get(day)
        if w is None or w.cancelled or day in seen:
            # Cancelled by the host, or an instance the host's series does not have at all
            # (an exception left from an earlier pattern).
            out.deletes.append(str(inst["id"]))
            continue
        seen.add(day)
        if not _matches(entry, inst, w):
            out.patches.append((str(inst["id"]), patch_body(entry, w)))
    out.rewrite = any(not w.cancelled and day not in seen for day, w in want.items())
    return out
