"""Reading a Microsoft 365 mailbox back as a phone shows it (the demo's last step), over Graph.

It goes through a ``GraphSession``: the same token, client, CA bundle and ``$batch`` requests as
the pushes. The calendar is read with ``calendarView`` (occurrences in the window), times come in
UTC (the session's ``Prefer`` header) and are shown in the owner's zone; the Wiedervorlagen are
the tasks of the plugin's To Do list. With the firm's named subfolder, its folders are read.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from ..phone_view import PhoneEntry, PhoneTask, PhoneView, all_day_entry, timed_entry, view
from .backend import PAGE

VIA = "Microsoft Graph"


def read_phone_view(session: Any, zone: str, first_day: dt.date, days: int) -> PhoneView:
    """Contacts, the calendar of ``days`` days from ``first_day`` (local dates in ``zone``) and the
    Wiedervorlagen of the mailbox behind ``session`` (a ``GraphSession``)."""
    tz = ZoneInfo(zone)
    start = dt.datetime.combine(first_day, dt.time(0), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(first_day + dt.timedelta(days=days), dt.time(0), tz).astimezone(dt.UTC)
    window = f"startDateTime={_utc(start)}&endDateTime={_utc(end)}"
    contacts, events, tasks = session._pages(
        [
            f"{session._collection('contact')}?$select=fileAs,displayName&$top={PAGE}",
            f"{session.calendar_view_url()}?{window}&$select=subject,start,end,isAllDay,categories&$top={PAGE}",
            f"{session._tasks_of(session._todo_lists()[0])}?$top={PAGE}",
        ]
    )
    return view(
        VIA,
        [str(c.get("fileAs") or c.get("displayName") or "") for c in contacts],
        [_entry(e, zone) for e in events],
        [_task(t) for t in tasks],
    )


def _utc(moment: dt.datetime) -> str:
    return quote(moment.strftime("%Y-%m-%dT%H:%M:%SZ"), safe="")


def _when(value: Any) -> dt.datetime:
    """A Graph dateTimeTimeZone in UTC (what the session's Prefer header asks for)."""
    text = str((value or {}).get("dateTime") or "")[:19]
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _entry(event: dict[str, Any], zone: str) -> PhoneEntry:
    subject = str(event.get("subject") or "")
    categories = tuple(event.get("categories") or ())
    if event.get("isAllDay"):
        # All-day events come as midnight to midnight of their calendar dates.
        return all_day_entry(subject, _when(event["start"]).date(), _when(event["end"]).date(), categories)
    return timed_entry(subject, _when(event["start"]), _when(event["end"]), zone, categories)


def _task(task: dict[str, Any]) -> PhoneTask:
    due = task.get("dueDateTime")
    return PhoneTask(
        str(task.get("title") or ""),
        _when(due).date() if due else None,
        task.get("status") == "completed",
    )
