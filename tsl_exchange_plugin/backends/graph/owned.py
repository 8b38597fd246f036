"""Plain, comparable values of the fields the plugin owns, for the reconcile sweep over Graph.

Built the same way for what the plugin writes (an ``ExchangeItem``) and for what a Microsoft
365 mailbox holds (Graph JSON read with ``Prefer: outlook.timezone="UTC"``), so that a
difference means the mailbox really differs, not that one side spells a value differently
(Graph answers times in UTC, all-day events as midnight dates, task dates as dates). The keys
are the EWS backend's field names, so the sweep's German labels serve both backends.

Pure functions: no HTTP, no client library.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from ...mapping.common import split_body
from ...mapping.items import CalendarEntry, ContactItem, ExchangeItem, TaskEntry
from . import wire
from .zones import WINDOWS_BY_IANA

_IANA_BY_WINDOWS = {win: iana for iana, win in reversed(list(WINDOWS_BY_IANA.items()))}
_SHOW_AS = {v: k for k, v in wire.FREE_BUSY.items()}  # Graph's showAs -> EWS LegacyFreeBusyStatus
_STATUS = {
    "notStarted": "NotStarted",
    "inProgress": "InProgress",
    "completed": "Completed",
    "waitingOnOthers": "WaitingOnOthers",
    "deferred": "Deferred",
}
_PHONE_LABELS = {
    "businessPhones": ("BusinessPhone", "BusinessPhone2"),
    "homePhones": ("HomePhone", "HomePhone2"),
}
_ADDRESS_LABELS = {field: label for label, field in wire.ADDRESS_FIELDS.items()}

# What a read asks for, per item class ($select).
SELECT = {
    "contact": ",".join(wire.CONTACT_FIELDS),
    "calendar": "subject,body,categories,start,end,isAllDay,showAs,location,isReminderOn,"
    "reminderMinutesBeforeStart",
    "task": "title,body,categories,dueDateTime,startDateTime,status,isReminderOn,reminderDateTime",
}

OwnedValues = dict[str, object]


def _text(value: Any) -> str | None:
    text = str(value or "").strip()
    return text or None


def _head(body: str) -> str | None:
    """The plugin's part of a body (above the marker), lines without trailing blanks."""
    head, _ = split_body(body)
    text = "\n".join(line.rstrip() for line in head.strip().splitlines())
    return text or None


def _sorted(values: list[Any]) -> list[Any] | None:
    out = sorted(v for v in values if v)
    return out or None


def _zone(name: str) -> dt.tzinfo:
    iana = _IANA_BY_WINDOWS.get(name, name)
    try:
        return zoneinfo.ZoneInfo(iana)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def instant(value: Any) -> str | None:
    """A Graph dateTimeTimeZone as the UTC instant it names (seconds), ISO text."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    text = str(value["dateTime"]).replace("Z", "")
    local = dt.datetime.fromisoformat(text[:19])
    aware = local.replace(tzinfo=_zone(str(value.get("timeZone") or "UTC")))
    return aware.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def day(value: Any) -> str | None:
    """The date a dateTimeTimeZone names as it is written (all-day events, To Do dates)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    return str(value["dateTime"])[:10]


def _utc_of(value: dt.datetime, zone: str) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    return aware.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _reminder_rule(values: OwnedValues, *fields: str) -> OwnedValues:
    if not values.get("reminder_is_set"):
        # Without a reminder its time means nothing (as over EWS).
        values["reminder_is_set"] = False
        for name in fields:
            values.pop(name, None)
    return values


# ------------------------------------------------------------------ from a Graph read


def _contact_read(data: dict[str, Any]) -> OwnedValues:
    phones: list[tuple[str, str]] = []
    for field, labels in _PHONE_LABELS.items():
        phones += [
            (label, str(n).strip()) for label, n in zip(labels, data.get(field) or (), strict=False) if n
        ]
    if _text(data.get("mobilePhone")):
        phones.append(("MobilePhone", str(data["mobilePhone"]).strip()))
    addresses = []
    for field, label in _ADDRESS_LABELS.items():
        a = data.get(field) or {}
        parts = tuple(
            str(a.get(k) or "").strip() for k in ("street", "city", "state", "countryOrRegion", "postalCode")
        )
        if any(parts):
            addresses.append((label, *parts))
    birthday = data.get("birthday")
    return {
        "display_name": _text(data.get("displayName")),
        "file_as": _text(data.get("fileAs")),
        "given_name": _text(data.get("givenName")),
        "middle_name": _text(data.get("middleName")),
        "surname": _text(data.get("surname")),
        "nickname": _text(data.get("nickName")),
        "initials": _text(data.get("initials")),
        "generation": _text(data.get("generation")),
        "company_name": _text(data.get("companyName")),
        "department": _text(data.get("department")),
        "job_title": _text(data.get("jobTitle")),
        "email_addresses": _sorted(
            [str(e.get("address") or "").strip().lower() for e in data.get("emailAddresses") or ()]
        ),
        "phone_numbers": _sorted(phones),
        "physical_addresses": _sorted(addresses),
        "birthday": str(birthday)[:10] if birthday else None,
        "business_homepage": _text(data.get("businessHomePage")),
        "body": _head(str(data.get("personalNotes") or "")),
        "categories": _sorted([str(c).strip() for c in data.get("categories") or ()]),
    }


def _event_read(data: dict[str, Any]) -> OwnedValues:
    all_day = bool(data.get("isAllDay"))
    when = day if all_day else instant
    values: OwnedValues = {
        "subject": _text(data.get("subject")),
        "body": _head(wire.body_text("calendar", data)),
        "categories": _sorted([str(c).strip() for c in data.get("categories") or ()]),
        "start": when(data.get("start")),
        "end": when(data.get("end")),
        "is_all_day": all_day,
        "legacy_free_busy_status": _SHOW_AS.get(str(data.get("showAs") or "busy"), "Busy"),
        "location": _text((data.get("location") or {}).get("displayName")),
        "reminder_is_set": bool(data.get("isReminderOn")),
        "reminder_minutes_before_start": int(data.get("reminderMinutesBeforeStart") or 0),
    }
    return _reminder_rule(values, "reminder_minutes_before_start")


def _task_read(data: dict[str, Any]) -> OwnedValues:
    values: OwnedValues = {
        "subject": _text(data.get("title")),
        "body": _head(wire.body_text("task", data)),
        "categories": _sorted([str(c).strip() for c in data.get("categories") or ()]),
        "due_date": day(data.get("dueDateTime")),
        "start_date": day(data.get("startDateTime")),
        "status": _STATUS.get(str(data.get("status") or "notStarted"), "NotStarted"),
        "reminder_is_set": bool(data.get("isReminderOn")),
        "reminder_due_by": instant(data.get("reminderDateTime")),
    }
    return _reminder_rule(values, "reminder_due_by")


def from_graph(item_class: str, data: dict[str, Any]) -> OwnedValues:
    """The owned fields of a Graph item as plain values."""
    if item_class == "contact":
        return _contact_read(data)
    if item_class == "calendar":
        return _event_read(data)
    return _task_read(data)


# ------------------------------------------------------------------ from what the plugin writes


def _event_item(entry: CalendarEntry) -> OwnedValues:
    if entry.all_day:
        start_date = entry.start_date or (entry.start.date() if entry.start else None)
        end_date = entry.end_date or start_date
        start = start_date.isoformat() if start_date else None
        end = (end_date + dt.timedelta(days=1)).isoformat() if end_date else None
    else:
        start = _utc_of(entry.start, entry.timezone) if entry.start else None
        end = _utc_of(entry.end or entry.start, entry.timezone) if entry.start else None
    values: OwnedValues = {
        "subject": _text(entry.subject),
        "body": _head(entry.body),
        "categories": _sorted([c.strip() for c in entry.categories]),
        "start": start,
        "end": end,
        "is_all_day": bool(entry.all_day),
        "legacy_free_busy_status": entry.free_busy if entry.free_busy in wire.FREE_BUSY else "Busy",
        "location": _text(entry.location),
        "reminder_is_set": entry.reminder_minutes is not None,
        "reminder_minutes_before_start": entry.reminder_minutes or 0,
    }
    return _reminder_rule(values, "reminder_minutes_before_start")


def _task_item(entry: TaskEntry) -> OwnedValues:
    values: OwnedValues = {
        "subject": _text(entry.subject),
        "body": _head(entry.body),
        "categories": _sorted([c.strip() for c in entry.categories]),
        "due_date": entry.due_date.isoformat() if entry.due_date else None,
        "start_date": entry.start_date.isoformat() if entry.start_date else None,
        "status": "Completed" if entry.completed else "NotStarted",
        "reminder_is_set": entry.reminder_at is not None,
        "reminder_due_by": _utc_of(entry.reminder_at, entry.timezone) if entry.reminder_at else None,
    }
    return _reminder_rule(values, "reminder_due_by")


def from_item(item: ExchangeItem) -> OwnedValues:
    """The same plain values for what the plugin would write."""
    if isinstance(item, ContactItem):
        # Through the wire format: what finds no Graph field goes into the notes there.
        return _contact_read(wire.fields(item))
    if isinstance(item, CalendarEntry):
        return _event_item(item)
    return _task_item(item)
