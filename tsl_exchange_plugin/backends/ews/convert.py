"""Plain items (``mapping/items.py``) as exchangelib objects, and exchangelib objects as the plain
values the reconcile sweep compares: the record-key extended property, the fields the plugin owns,
a body a phone turned into HTML. Pure conversion, no I/O.

- **Identity.** Every created item carries the extended property PublicStrings/``tslRecordId``
  (String) with the record key. It is stamped at create only, never in an update, so an
  item created by hand never becomes "ours".
- **Owned fields.** An update overwrites every field in ``OWNED_FIELDS``; empty values become
  DeleteItemField (exchangelib deletes a field whose value is None or an empty list).
"""

from __future__ import annotations

import datetime as dt
import html
import re
import threading
from decimal import Decimal
from typing import Any

from exchangelib import (
    Account,
    Body,
    CalendarItem,
    Contact,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    ExtendedProperty,
    HTMLBody,
    Task,
)
from exchangelib.fields import InvalidField
from exchangelib.indexed_properties import EmailAddress, PhoneNumber, PhysicalAddress

from ...mapping.common import split_body
from ...mapping.items import CalendarEntry, ContactItem, ExchangeItem, TaskEntry
from . import series as series_ews

RECORD_ID_FIELD = "tsl_record_id"

# --------------------------------------------------------------------------- extended property


class TslRecordId(ExtendedProperty):
    """The record key the plugin stamps on every item it creates."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "tslRecordId"
    property_type = "String"


_ITEM_CLASSES: dict[str, type[Any]] = {"contact": Contact, "calendar": CalendarItem, "task": Task}
_register_lock = threading.Lock()


def register_record_id_property() -> None:
    """Register ``tsl_record_id`` on Contact, CalendarItem and Task (process-global, idempotent)."""
    with _register_lock:
        for cls in _ITEM_CLASSES.values():
            try:
                cls.get_field_by_fieldname(RECORD_ID_FIELD)
            except InvalidField:
                cls.register(RECORD_ID_FIELD, TslRecordId)


# --------------------------------------------------------------------------- owned fields

CONTACT_FIELDS: tuple[str, ...] = (
    "display_name",
    "file_as",
    "given_name",
    "middle_name",
    "surname",
    "nickname",
    "initials",
    "generation",
    "company_name",
    "department",
    "job_title",
    "email_addresses",
    "phone_numbers",
    "physical_addresses",
    "birthday",
    "business_homepage",
    "body",
    "categories",
)
CALENDAR_FIELDS: tuple[str, ...] = (
    "subject",
    "body",
    "categories",
    "start",
    "end",
    "is_all_day",
    "legacy_free_busy_status",
    "location",
    "reminder_is_set",
    "reminder_minutes_before_start",
    "recurrence",  # None: DeleteItemField, a series turned back into a single appointment
)
TASK_FIELDS: tuple[str, ...] = (
    "subject",
    "body",
    "categories",
    "due_date",
    "start_date",
    "status",
    "percent_complete",
    "reminder_is_set",
    "reminder_due_by",
)
OWNED_FIELDS: dict[str, tuple[str, ...]] = {
    "contact": CONTACT_FIELDS,
    "calendar": CALENDAR_FIELDS,
    "task": TASK_FIELDS,
}


def update_fields(item: ExchangeItem) -> list[str]:
    """The fields an update sends: all owned ones. Exception: a task's ReminderDueBy cannot be
    deleted (exchangelib: required after save), so without a reminder only ReminderIsSet=false goes."""
    fields = list(OWNED_FIELDS[item.item_class])
    if isinstance(item, TaskEntry) and item.reminder_at is None:
        fields.remove("reminder_due_by")
    return fields


def _text(value: str) -> str | None:
    # None makes exchangelib send DeleteItemField (update) or leave the element out (create).
    return value if value else None


def _body(value: str) -> Body | None:
    return Body(value) if value else None


def _contact_fields(item: ContactItem) -> dict[str, Any]:
    return {
        "display_name": item.display_name,
        "file_as": _text(item.file_as),
        "given_name": _text(item.given_name),
        "middle_name": _text(item.middle_name),
        "surname": _text(item.surname),
        "nickname": _text(item.nickname),
        "initials": _text(item.initials),
        "generation": _text(item.generation),
        "company_name": _text(item.company_name),
        "department": _text(item.department),
        "job_title": _text(item.job_title),
        "email_addresses": [EmailAddress(label=e.label, email=e.address) for e in item.email_addresses]
        or None,
        "phone_numbers": [PhoneNumber(label=p.label, phone_number=p.number) for p in item.phone_numbers]
        or None,
        "physical_addresses": [
            PhysicalAddress(
                label=a.label,
                street=_text(a.street),
                city=_text(a.city),
                state=_text(a.state),
                country=_text(a.country),
                zipcode=_text(a.zipcode),
            )
            for a in item.physical_addresses
        ]
        or None,
        "birthday": EWSDate.from_date(item.birthday) if item.birthday else None,
        "business_homepage": _text(item.business_homepage),
        "body": _body(item.body),
        "categories": list(item.categories) or None,
    }


def _localise(value: dt.datetime, tz: EWSTimeZone) -> EWSDateTime:
    if value.tzinfo is not None:
        return EWSDateTime.from_datetime(value).astimezone(tz)
    return EWSDateTime.from_datetime(value.replace(tzinfo=tz))


def _calendar_fields(entry: CalendarEntry) -> dict[str, Any]:
    tz = EWSTimeZone(entry.timezone)
    if entry.all_day:
        start_date = entry.start_date or (entry.start.date() if entry.start else None)
        end_date = entry.end_date or start_date
        if start_date is None:
            raise ValueError("Ganztägiger Eintrag ohne Datum")
        # exchangelib sends an EWSDate start/end as local midnight and adds one day to the end
        # (the inclusive end date becomes the exclusive midnight after it), NOTES §2 all-day.
        start: Any = EWSDate.from_date(start_date)
        end: Any = EWSDate.from_date(end_date)
    else:
        if entry.start is None:
            raise ValueError("Termin ohne Beginn")
        start = _localise(entry.start, tz)
        end = _localise(entry.end or entry.start, tz)
    reminder = entry.reminder_minutes
    return {
        "subject": entry.subject,
        "body": _body(entry.body),
        "categories": list(entry.categories) or None,
        "start": start,
        "end": end,
        "is_all_day": bool(entry.all_day),
        "legacy_free_busy_status": entry.free_busy or "Busy",
        "location": _text(entry.location),
        "reminder_is_set": reminder is not None,
        "reminder_minutes_before_start": reminder if reminder is not None else 0,
        "_start_timezone": tz,
        "_end_timezone": tz,
        "recurrence": series_ews.to_recurrence(entry.recurrence),
    }


def _task_fields(entry: TaskEntry) -> dict[str, Any]:
    tz = EWSTimeZone(entry.timezone)
    return {
        "subject": entry.subject,
        "body": _body(entry.body),
        "categories": list(entry.categories) or None,
        "due_date": EWSDate.from_date(entry.due_date) if entry.due_date else None,
        "start_date": EWSDate.from_date(entry.start_date) if entry.start_date else None,
        "status": Task.COMPLETED if entry.completed else Task.NOT_STARTED,
        "percent_complete": Decimal(100) if entry.completed else Decimal(0),
        "reminder_is_set": entry.reminder_at is not None,
        "reminder_due_by": _localise(entry.reminder_at, tz) if entry.reminder_at else None,
    }


def to_exchangelib(item: ExchangeItem, *, account: Account | None = None, **extra: Any) -> Any:
    """Build the exchangelib item for one plain-data item (``extra``: id, changekey, folder, ...)."""
    if isinstance(item, ContactItem):
        return Contact(account=account, **_contact_fields(item), **extra)
    if isinstance(item, CalendarEntry):
        return CalendarItem(account=account, **_calendar_fields(item), **extra)
    if isinstance(item, TaskEntry):
        return Task(account=account, **_task_fields(item), **extra)
    raise TypeError(f"Unbekannter Elementtyp: {type(item).__name__}")


def _html_to_text(value: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", value)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    return html.unescape(text).replace("\r\n", "\n").replace("\xa0", " ")


def body_text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, HTMLBody):
        return _html_to_text(str(body))
    return str(body)


# --------------------------------------------------------------------------- reconcile sweep and fidelity
# Plain, comparable values of the fields the plugin owns, built the same way for what the plugin
# writes (from the exchangelib object ``to_exchangelib`` makes) and for what the mailbox holds
# (from GetItem), so that a difference means the mailbox really differs and not that one side
# spells a value differently.

_DATE_ONLY = frozenset({"birthday", "due_date", "start_date"})
_UTC = dt.UTC


def _plain_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        # Through the timestamp: EWSDateTime refuses a plain datetime.timezone in astimezone().
        stamp = value.timestamp() if value.tzinfo is not None else value.replace(tzinfo=_UTC).timestamp()
        utc = dt.datetime.fromtimestamp(int(stamp), _UTC)
        if name in _DATE_ONLY:
            # exchangelib sends a task's date as UTC midnight and may read it back as a datetime.
            return utc.date().isoformat()
        return utc.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list | tuple):
        out: list[tuple[str, ...] | str] = []
        for v in value:
            if isinstance(v, EmailAddress):
                out.append((v.label, (v.email or "").strip().lower()))
            elif isinstance(v, PhoneNumber):
                out.append((v.label, (v.phone_number or "").strip()))
            elif isinstance(v, PhysicalAddress):
                out.append(
                    (v.label,)
                    + tuple(
                        (getattr(v, f) or "").strip()
                        for f in ("street", "city", "state", "country", "zipcode")
                    )
                )
            else:
                out.append(str(v).strip())
        out = sorted(o for o in out if o)
        return out or None
    return str(value)


def plain_owned(obj: Any, item_class: str) -> dict[str, Any]:
    """The owned fields of an exchangelib item as plain values (see above)."""
    values: dict[str, Any] = {}
    for name in OWNED_FIELDS[item_class]:
        raw = getattr(obj, name, None)
        if name == "body":
            head, _ = split_body(body_text(raw))
            text = "\n".join(line.rstrip() for line in head.strip().splitlines())
            values[name] = text or None
        else:
            values[name] = _plain_value(name, raw)
    if not values.get("reminder_is_set"):
        # Without a reminder its time means nothing (and a task's ReminderDueBy cannot be cleared).
        values["reminder_is_set"] = False
        values.pop("reminder_minutes_before_start", None)
        values.pop("reminder_due_by", None)
    return values


def read_only_fields(item_class: str) -> list[str]:
    fields = list(OWNED_FIELDS[item_class])
    if item_class == "calendar":
        # exchangelib turns an all-day start/end into dates in the item's own zone: read the zone too.
        fields += ["_start_timezone", "_end_timezone"]
    return fields
