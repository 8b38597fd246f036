"""Recurring tasks in the sandbox: the recurrence stored on the task, and what completing it does.

A recurring task is one item that stands for its current instance; there are no occurrences to
expand. What this follows, by source:

- TaskRecurrenceType ([MS-OXWSTASK] 2.2.4.4, types.xsd): the fixed patterns of a calendar item
  plus the regenerating ones (DailyRegeneration, WeeklyRegeneration, MonthlyRegeneration,
  YearlyRegeneration), each with an Interval, and one of the three ranges. A regenerating
  pattern is only in the task's type, so a calendar item carrying one fails schema validation
  (ErrorSchemaValidation) before it reaches this module. DailyRegeneration's Interval "must be in
  the range of 1 to 999" (DailyRegeneration element reference); a value outside is
  ErrorCalendarOutOfRange, which Exchange reports "for calendar items or task recurrence
  properties when the property value is out of range" (ResponseCode reference).
- CreateItem operation (task), Comments: only the date of the range's StartDate is kept; the
  StartDate moves to the pattern's first date on or after it (every Monday, 26 Oct 2006 becomes
  30 Oct 2006); a task StartDate is set to that date and its DueDate follows at the same
  distance (1 Jan / 3 Jan become 30 Oct / 1 Nov); without a StartDate only the DueDate is set
  to it.
- UpdateItem operation (task), "Updating the Current Occurrence of a Recurring Task": setting
  the Status of a recurring task (regenerating or not) to Completed, or changing the start or due
  date of a non-regenerating one, generates a one-off task. The response carries the new one-off
  task's Id and ChangeKey; the Id sent stays valid and that recurring task now stands for the
  next occurrence (its ChangeKey changes). For the last occurrence the response carries the same
  Id, with a new ChangeKey.
- [MS-OXOTASK] 3.1.4.6.2 New Instance Dates: a regenerating (sliding) pattern counts from the
  completion date of the prior instance; the new start date is the new instance's date and the
  new due date keeps the old distance (new due = new start + (old due - old start)); without a
  start date the new due date is the instance's date. PidLidTaskDeadOccurrence: the copy made
  for a new instance is the completed one.
- [MS-OXORMDR] 3.1.4.8 Generating Instances for Recurring Task Objects: with an active reminder,
  the next instance keeps ReminderIsSet and its reminder moves with the due date; the completed
  instance has ReminderIsSet false.

Task dates are compared by their UTC calendar date (exchangelib sends them as UTC midnight and
reads back the date of the UTC value); the range dates are written with the request zone's
offset, the form exchangelib reads as a date ("2006-01-09+01:00" or "2006-01-09Z").
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from . import series, xmlio
from .engine_ctx import MsgError

REGENERATING = ("DailyRegeneration", "WeeklyRegeneration", "MonthlyRegeneration", "YearlyRegeneration")
DAILY_REGENERATION_MAX = 999
TASK_KEY = "$task"  # the instance counter, kept in the task's stored data (never written out)
MESSAGES = {
    "ErrorCalendarOutOfRange": "A recurrence value is out of range.",
}


def _err(code: str) -> MsgError:
    return MsgError(code, MESSAGES.get(code) or series.MESSAGES.get(code))


@dataclass(frozen=True)
class Regeneration:
    """A sliding pattern: the next instance is ``interval`` units after the last completion."""

    kind: str
    interval: int
    start: dt.date
    end: dt.date | None
    count: int | None


def parse(rec: dict[str, Any]) -> series.Pattern | Regeneration:
    kind = next((k for k in REGENERATING if k in rec), None)
    if kind is None:
        return series.parse(rec)
    rng_kind = next((k for k in series.RANGES if k in rec), None)
    if rng_kind is None:
        raise _err("ErrorCalendarInvalidRecurrence")
    r = rec[rng_kind]
    interval = int(rec[kind].get("Interval", 1))
    if interval < 1 or (kind == "DailyRegeneration" and interval > DAILY_REGENERATION_MAX):
        raise _err("ErrorCalendarOutOfRange")
    pattern = Regeneration(
        kind=kind,
        interval=interval,
        start=_range_date(r["StartDate"]),
        end=_range_date(r["EndDate"]) if "EndDate" in r else None,
        count=int(r["NumberOfOccurrences"]) if "NumberOfOccurrences" in r else None,
    )
    if pattern.end is not None and pattern.end < pattern.start:
        raise _err("ErrorCalendarEndDateIsEarlierThanStartDate")
    if pattern.count is not None and pattern.count < 1:
        raise _err("ErrorCalendarInvalidRecurrence")
    return pattern


def _range_date(text: str) -> dt.date:
    return dt.date.fromisoformat(str(text)[:10])  # only the date counts, whatever offset it carries


def is_recurring(data: dict[str, Any]) -> bool:
    return "Recurrence" in data


def _canon(rec: dict[str, Any]) -> dict[str, Any]:
    """A recurrence with its range dates reduced to the date, to compare what a client sends back."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in rec.items()}
    for rng in series.RANGES:
        for k in ("StartDate", "EndDate"):
            if k in out.get(rng, {}):
                out[rng][k] = str(out[rng][k])[:10]
    return out


def same_recurrence(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return _canon(a) == _canon(b)


# ---------------------------------------------------------------------------------------------
# task dates


def _day(value: str | None) -> dt.date | None:
    return xmlio.parse_datetime(value).date() if value else None


def _on(value: str, day: dt.date) -> str:
    """``value`` (a stored UTC dateTime) moved to ``day``, keeping its time of day."""
    old = xmlio.parse_datetime(value)
    return xmlio.format_datetime(old + dt.timedelta(days=(day - old.date()).days))


def _anchor(data: dict[str, Any]) -> dt.date | None:
    """The current instance's date: the task's start date, else its due date."""
    return _day(data.get("StartDate")) or _day(data.get("DueDate"))


def _place(data: dict[str, Any], day: dt.date, *, move_reminder: bool) -> None:
    """Move the task to the instance on ``day``: start on it, due at the old distance (or due on
    it without a start), and for a generated instance the reminder along with the due date."""
    old_due = _day(data.get("DueDate"))
    if data.get("StartDate"):
        start = _day(data["StartDate"])
        span = (old_due - start) if old_due is not None and start is not None else dt.timedelta(0)
        data["StartDate"] = _on(data["StartDate"], day)
        due = day + span
        data["DueDate"] = _on(data.get("DueDate") or data["StartDate"], due)
    else:
        due = day
        data["DueDate"] = _on(data.get("DueDate") or _midnight(day), due)
    if move_reminder and data.get("ReminderDueBy") and old_due is not None:
        shift = dt.timedelta(days=(due - old_due).days)
        data["ReminderDueBy"] = xmlio.format_datetime(xmlio.parse_datetime(data["ReminderDueBy"]) + shift)


def _midnight(day: dt.date) -> str:
    return xmlio.format_datetime(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))


# ---------------------------------------------------------------------------------------------
# create and update


def normalize(data: dict[str, Any], changed: set[str], before: dict[str, Any] | None = None) -> None:
    """After a create or update of a task: a new recurrence starts on its pattern's first date
    and places the task there (CreateItem operation (task), Comments)."""
    if "Recurrence" not in data:
        data.pop(TASK_KEY, None)
        return
    unchanged = before is not None and same_recurrence(before.get("Recurrence"), data["Recurrence"])
    if "Recurrence" not in changed or unchanged:
        # A client that saves every field sends the recurrence back unchanged: nothing restarts.
        if before is not None and TASK_KEY in before:
            data[TASK_KEY] = before[TASK_KEY]
        data["Recurrence"] = _canon(data["Recurrence"])
        return
    rec = _canon(data["Recurrence"])
    data["Recurrence"] = rec
    p = parse(rec)
    if isinstance(p, Regeneration):
        first = p.start
    else:
        hit = next(series.dates(p), None)
        if hit is None:
            raise _err("ErrorRecurrenceHasNoOccurrence")
        first = hit[1]
    rng = next(k for k in series.RANGES if k in rec)
    rec[rng]["StartDate"] = first.isoformat()
    # Where a new recurrence puts the reminder is not documented: it stays where it was set.
    _place(data, first, move_reminder=False)
    data[TASK_KEY] = {"instance": 1}


def _next_instance(
    data: dict[str, Any], p: series.Pattern | Regeneration, completed: dt.date
) -> dt.date | None:
    """The next instance's date after the current one, or None when the current one is the last."""
    if isinstance(p, Regeneration):
        done = int((data.get(TASK_KEY) or {}).get("instance", 1))
        if p.count is not None and done >= p.count:
            return None
        nxt = _add(completed, p.kind, p.interval)
        if p.end is not None and nxt > p.end:
            return None
        return nxt
    current = _anchor(data)
    for _, day in series.dates(p):
        if current is None or day > current:
            return day
    return None


def _add(day: dt.date, kind: str, n: int) -> dt.date:
    if kind == "DailyRegeneration":
        return day + dt.timedelta(days=n)
    if kind == "WeeklyRegeneration":
        return day + dt.timedelta(weeks=n)
    months = n if kind == "MonthlyRegeneration" else 12 * n
    month0 = day.year * 12 + day.month - 1 + months
    year, month = divmod(month0, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def split(
    before: dict[str, Any], data: dict[str, Any], changed: set[str], zone: ZoneInfo
) -> dict[str, Any] | None:
    """What an update of a recurring task generates. Returns the one-off task's data (this
    instance, completed or moved) and turns ``data`` into the next instance; returns None when
    the update stays on the task itself (not recurring, nothing that splits, or the last
    instance)."""
    if not is_recurring(before) or not is_recurring(data):
        return None
    if "Recurrence" in changed and not same_recurrence(before["Recurrence"], data["Recurrence"]):
        return None  # a new pattern: the task restarts on it (normalize), nothing splits off
    p = parse(data["Recurrence"])
    completing = data.get("Status") == "Completed" and before.get("Status") != "Completed"
    moved = not isinstance(p, Regeneration) and any(
        _day(data.get(k)) != _day(before.get(k)) for k in ("StartDate", "DueDate")
    )
    if not completing and not moved:
        return None
    # A sliding pattern counts from the day of completion, in the request's zone.
    done = xmlio.parse_datetime(data.get("CompleteDate") or xmlio.utc_now()).astimezone(zone).date()
    nxt = _next_instance(before, p, done)
    if nxt is None:
        return None  # the last instance: the task itself is completed or moved
    one_off = {k: v for k, v in data.items() if k not in ("Recurrence", TASK_KEY)}
    if completing and one_off.get("ReminderIsSet"):
        one_off["ReminderIsSet"] = False
    # The recurring task goes on from the instance it stood for, with this update's other
    # changes (subject, body, ...) but not its completion or its moved dates.
    for k in ("StartDate", "DueDate", "ReminderDueBy", "ReminderIsSet"):
        if k in before:
            data[k] = before[k]
        else:
            data.pop(k, None)
    _place(data, nxt, move_reminder=True)
    data["Status"] = "NotStarted"
    data["PercentComplete"] = 0
    data.pop("CompleteDate", None)
    counter = dict(before.get(TASK_KEY) or {"instance": 1})
    counter["instance"] = int(counter.get("instance", 1)) + 1
    data[TASK_KEY] = counter
    return one_off


# ---------------------------------------------------------------------------------------------
# reading


def view(out: dict[str, Any], data: dict[str, Any], tz: str | None) -> None:
    """Add what Exchange shows for a task's recurrence to its view ``out``."""
    out["IsRecurring"] = is_recurring(data)
    if is_recurring(data):
        out["Recurrence"] = series.recurrence_view(data["Recurrence"], series.zone_of({}, tz))
