"""Reading an EWS mailbox back as a phone shows it (the demo's last step), with exchangelib.

It goes through an ``EwsSession``, so the connection is the one the worker uses (TLS choice,
credentials masked in the log, German errors) and the folders are the plugin's target folders.
A calendar view expands series into their occurrences, as a phone's calendar does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from exchangelib import EWSDate, EWSDateTime, EWSTimeZone

from ..phone_view import PhoneTask, PhoneView, all_day_entry, timed_entry, view

VIA = "EWS (exchangelib)"


def read_phone_view(session: Any, zone: str, first_day: dt.date, days: int) -> PhoneView:
    """Contacts, the calendar of ``days`` days from ``first_day`` (local dates in ``zone``) and the
    tasks of the mailbox behind ``session`` (an ``EwsSession``)."""
    tz = EWSTimeZone(zone)
    start = EWSDateTime(first_day.year, first_day.month, first_day.day, tzinfo=tz)
    last = first_day + dt.timedelta(days=days)
    end = EWSDateTime(last.year, last.month, last.day, tzinfo=tz)

    def contacts() -> list[str]:
        found = session.folder("contact").all().only("file_as", "display_name")
        return [str(c.file_as or c.display_name or "") for c in found if not isinstance(c, Exception)]

    def calendar() -> list[Any]:
        found = session.folder("calendar").view(start=start, end=end)
        found = found.only("subject", "start", "end", "is_all_day", "categories")
        out = []
        for item in found:
            if isinstance(item, Exception):
                continue
            categories = tuple(item.categories or ())
            if item.is_all_day:
                # exchangelib gives an all-day item's dates, the end as the last day itself.
                first, final = _date(item.start), _date(item.end)
                out.append(
                    all_day_entry(
                        item.subject or "", first, max(first, final) + dt.timedelta(days=1), categories
                    )
                )
            else:
                out.append(timed_entry(item.subject or "", item.start, item.end, zone, categories))
        return out

    def tasks() -> list[PhoneTask]:
        found = session.folder("task").all().only("subject", "due_date", "status")
        return [
            PhoneTask(t.subject or "", _date(t.due_date) if t.due_date else None, t.status == "Completed")
            for t in found
            if not isinstance(t, Exception)
        ]

    return view(VIA, session._call(contacts), session._call(calendar), session._call(tasks))


def _date(value: Any) -> dt.date:
    if isinstance(value, EWSDate | dt.date) and not isinstance(value, dt.datetime):
        return dt.date(value.year, value.month, value.day)
    day: dt.date = value.date()  # an EWSDateTime
    return day
