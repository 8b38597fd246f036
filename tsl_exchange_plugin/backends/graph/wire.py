"""Plain items (``mapping/items.py``) as Microsoft Graph JSON, and Graph answers back as plain facts.

Pure functions, no HTTP: the same mapping feeds EWS and Graph, only this wire format differs.

- **Identity.** Contacts and events carry our record key in the same named property as over EWS
  (PS_PUBLIC_STRINGS, ``tslRecordId``), written as Graph's single-value extended property id
  ``String {00020329-0000-0000-C000-000000000046} Name tslRecordId``, so an item written over EWS is
  found over Graph and the other way round. A To Do task cannot carry extended properties
  (todoTask has none in Graph's model); it carries the key as ``linkedResources[].externalId``
  instead, which also gives the user a link back to the record.
- **Contacts.** Graph v1.0 has two business and two home numbers and one mobile number, and no
  fax or "other" number: those go into the notes above the marker line, as EWS does with what
  finds no field. The body is ``personalNotes``.
- **Events.** Times go out as wall-clock time with a Windows zone id (Graph accepts only some
  IANA ids). All-day items are midnight to the following midnight in the user's zone (the end is
  exclusive). ``transactionId`` is derived from the record key and the content, so a create that
  is repeated after a lost answer is dropped by Graph instead of duplicated.
- **Series.** One ``seriesMaster`` event with a ``patternedRecurrence``: the pattern as the mapping
  made it for EWS (Graph's pattern types are EWS's), the range from the first occurrence's date
  (Graph wants ``range.startDate`` equal to the start's date) with ``recurrenceTimeZone`` the
  series' Windows zone, so occurrences keep their wall-clock time across DST. A series in a zone
  the table does not know is refused: in UTC wall-clock time it would drift by an hour twice a
  year. Exceptions are written per occurrence afterwards (``graph/series.py``).
- **Tasks.** ``dueDateTime`` keeps only the date: midnight of the due date in the user's zone.
  The reminder is the mapping's moment (08:00 local by default) in the same zone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zoneinfo
from typing import Any

from tsl_hostapi.types import RecordRef

from ...mapping.common import compose_body, split_body
from ...mapping.context import record_link
from ...mapping.items import CalendarEntry, ContactItem, ExchangeItem, Series, TaskEntry
from ...mapping.reminder import TODO_LIST_NAME as TODO_LIST_NAME  # noqa: F401 - the list name, re-exported
from ...mapping.reminder import linked_record_key
from ..base import ItemNotFound
from .zones import windows_zone

PS_PUBLIC_STRINGS = "{00020329-0000-0000-C000-000000000046}"
RECORD_ID_PROPERTY = f"String {PS_PUBLIC_STRINGS} Name tslRecordId"
APPLICATION_NAME = "timeSensor LEGAL"

FREE_BUSY = {
    "Free": "free",
    "Busy": "busy",
    "Tentative": "tentative",
    "OOF": "oof",
    "WorkingElsewhere": "workingElsewhere",
}
# Phone labels without a Graph field, with the words the notes show for them.
PHONES_IN_NOTES = {"BusinessFax": "Fax geschäftlich", "HomeFax": "Fax privat", "OtherTelephone": "Weitere"}
ADDRESS_FIELDS = {"Business": "businessAddress", "Home": "homeAddress", "Other": "otherAddress"}

CONTACT_FIELDS = (
    "displayName",
    "fileAs",
    "givenName",
    "middleName",
    "surname",
    "nickName",
    "initials",
    "generation",
    "companyName",
    "department",
    "jobTitle",
    "emailAddresses",
    "businessPhones",
    "homePhones",
    "mobilePhone",
    "businessAddress",
    "homeAddress",
    "otherAddress",
    "birthday",
    "businessHomePage",
    "personalNotes",
    "categories",
)


def _text(value: str) -> str | None:
    # null clears a field in a PATCH; on create it is simply absent from the stored item.
    return value or None


def _contact(item: ContactItem) -> dict[str, Any]:
    phones = {p.label: p.number for p in item.phone_numbers}
    extra = [f"{PHONES_IN_NOTES[label]}: {phones[label]}" for label in PHONES_IN_NOTES if phones.get(label)]
    notes = item.body
    if extra:
        head, user = split_body(notes)
        notes = compose_body([head, "\n".join(extra)]) + user
    addresses: dict[str, Any] = {name: None for name in ADDRESS_FIELDS.values()}
    for a in item.physical_addresses:
        field = ADDRESS_FIELDS.get(a.label)
        if field:
            addresses[field] = {
                "street": a.street,
                "city": a.city,
                "state": a.state,
                "countryOrRegion": a.country,
                "postalCode": a.zipcode,
            }
    return {
        "displayName": item.display_name,
        "fileAs": _text(item.file_as),
        "givenName": _text(item.given_name),
        "middleName": _text(item.middle_name),
        "surname": _text(item.surname),
        "nickName": _text(item.nickname),
        "initials": _text(item.initials),
        "generation": _text(item.generation),
        "companyName": _text(item.company_name),
        "department": _text(item.department),
        "jobTitle": _text(item.job_title),
        "emailAddresses": [{"address": e.address, "name": e.address} for e in item.email_addresses],
        "businessPhones": [phones[k] for k in ("BusinessPhone", "BusinessPhone2") if phones.get(k)],
        "homePhones": [phones[k] for k in ("HomePhone", "HomePhone2") if phones.get(k)],
        "mobilePhone": _text(phones.get("MobilePhone", "")),
        **addresses,
        # Noon UTC, as exchangelib writes it: the date reads the same in every zone.
        "birthday": f"{item.birthday.isoformat()}T11:59:00Z" if item.birthday else None,
        "businessHomePage": _text(item.business_homepage),
        "personalNotes": _text(notes),
        "categories": list(item.categories),
    }


def zone_for(iana: str) -> str:
    return windows_zone(iana) or iana


def _wall(value: dt.datetime, iana: str) -> dict[str, str]:
    """A dateTimeTimeZone for a naive wall-clock time in ``iana`` (an aware one is converted)."""
    win = windows_zone(iana)
    if value.tzinfo is not None:
        value = value.astimezone(zoneinfo.ZoneInfo(iana)).replace(tzinfo=None)
    if win is None:
        # Unknown to the table: send the instant in UTC rather than risk Graph's IANA list.
        utc = value.replace(tzinfo=zoneinfo.ZoneInfo(iana)).astimezone(dt.UTC).replace(tzinfo=None)
        return {"dateTime": utc.isoformat(timespec="seconds"), "timeZone": "UTC"}
    return {"dateTime": value.isoformat(timespec="seconds"), "timeZone": win}


def _midnight(day: dt.date, iana: str) -> dict[str, str]:
    return {"dateTime": f"{day.isoformat()}T00:00:00", "timeZone": zone_for(iana)}


DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEK_INDEX = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "last"}
PATTERN_TYPES = {
    "daily": "daily",
    "weekly": "weekly",
    "absolute_monthly": "absoluteMonthly",
    "relative_monthly": "relativeMonthly",
    "absolute_yearly": "absoluteYearly",
    "relative_yearly": "relativeYearly",
}


def recurrence(series: Series, iana: str) -> dict[str, Any]:
    """Graph's patternedRecurrence for a mapped series.

    Only the properties each pattern type uses are sent: Graph validates even the ones it
    ignores, and refuses a value it does not support (recurrencePattern resource page).
    """
    p = series.pattern
    kind = PATTERN_TYPES.get(p.kind)
    if kind is None or p.start_date is None:
        raise ValueError(f"Unbekanntes Serienmuster {p.kind!r}")
    win = windows_zone(iana)
    if win is None:
        raise ValueError(
            f"Serientermine in der Zeitzone {iana} können über Microsoft Graph nicht übertragen werden "
            "(Microsoft 365 kennt die Zone nicht unter diesem Namen); bitte eine andere Zeitzone wählen"
        )
    pattern: dict[str, Any] = {"type": kind, "interval": p.interval}
    if p.kind == "weekly":
        pattern["daysOfWeek"] = [DAYS[d] for d in p.weekdays]
        pattern["firstDayOfWeek"] = "monday"  # the host's weeks begin on Monday (Recurrence docs)
    if p.kind in ("relative_monthly", "relative_yearly"):
        pattern["daysOfWeek"] = [DAYS[p.weekdays[0]]]
        pattern["index"] = WEEK_INDEX[p.week_index or 1]
    if p.kind in ("absolute_monthly", "absolute_yearly"):
        pattern["dayOfMonth"] = p.day_of_month
    if p.kind in ("absolute_yearly", "relative_yearly"):
        pattern["month"] = p.month
    rng: dict[str, Any] = {"startDate": p.start_date.isoformat(), "recurrenceTimeZone": win}
    if p.count is not None:
        rng.update(type="numbered", numberOfOccurrences=p.count)
    elif p.end_date is not None:
        rng.update(type="endDate", endDate=p.end_date.isoformat())
    else:
        rng["type"] = "noEnd"
    return {"pattern": pattern, "range": rng}


def _event(entry: CalendarEntry) -> dict[str, Any]:
    if entry.all_day:
        start_date = entry.start_date or (entry.start.date() if entry.start else None)
        if start_date is None:
            raise ValueError("Ganztägiger Eintrag ohne Datum")
        end_date = entry.end_date or start_date
        start = _midnight(start_date, entry.timezone)
        end = _midnight(end_date + dt.timedelta(days=1), entry.timezone)
    else:
        if entry.start is None:
            raise ValueError("Termin ohne Beginn")
        start = _wall(entry.start, entry.timezone)
        end = _wall(entry.end or entry.start, entry.timezone)
    reminder = entry.reminder_minutes
    return {
        "subject": entry.subject,
        "body": {"contentType": "text", "content": entry.body},
        "categories": list(entry.categories),
        "start": start,
        "end": end,
        "isAllDay": bool(entry.all_day),
        "showAs": FREE_BUSY.get(entry.free_busy or "Busy", "busy"),
        "location": {"displayName": entry.location},
        "isReminderOn": reminder is not None,
        "reminderMinutesBeforeStart": reminder if reminder is not None else 0,
        # null turns a series back into a single appointment (event-update example); on a create
        # the empty value is left out.
        "recurrence": recurrence(entry.recurrence, entry.timezone) if entry.recurrence else None,
    }


def occurrence_span(entry: CalendarEntry, start: Any, end: Any) -> dict[str, Any]:
    """start/end (and isAllDay) of one occurrence of ``entry``'s series, as a PATCH body part:
    naive wall-clock datetimes, or dates (inclusive end) for an all-day series."""
    if entry.all_day:
        return {
            "isAllDay": True,
            "start": _midnight(start, entry.timezone),
            "end": _midnight(end + dt.timedelta(days=1), entry.timezone),
        }
    return {"start": _wall(start, entry.timezone), "end": _wall(end, entry.timezone)}


def _task(entry: TaskEntry) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": entry.subject,
        "body": {"contentType": "text", "content": entry.body},
        "categories": list(entry.categories),
        "dueDateTime": _midnight(entry.due_date, entry.timezone) if entry.due_date else None,
        "startDateTime": _midnight(entry.start_date, entry.timezone) if entry.start_date else None,
        "status": "completed" if entry.completed else "notStarted",
        "isReminderOn": entry.reminder_at is not None,
    }
    if entry.reminder_at is not None:
        body["reminderDateTime"] = _wall(entry.reminder_at, entry.timezone)
    return body


def fields(item: ExchangeItem) -> dict[str, Any]:
    """Every field the plugin owns, as a PATCH body (empty values are null or [])."""
    if isinstance(item, ContactItem):
        return _contact(item)
    if isinstance(item, CalendarEntry):
        return _event(item)
    if isinstance(item, TaskEntry):
        return _task(item)
    raise TypeError(f"Unbekannter Elementtyp: {type(item).__name__}")


def transaction_id(item: CalendarEntry, salt: str = "") -> str:
    """Same record and content, same id: a repeated create is recognised by Graph.

    The series is part of the content (the item's repr leaves it out). ``salt`` makes the id of a
    deliberate second create (a series written anew) differ from the first one's."""
    text = f"{item.record_key}|{item!r}"
    if item.recurrence is not None:
        text += f"|{item.recurrence!r}"
    if salt:
        text += f"|{salt}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return f"tsl-{digest}"


def linked_resource(record_key: str) -> dict[str, str]:
    kind, _, rid = record_key.partition(":")
    return {
        "applicationName": APPLICATION_NAME,
        "displayName": f"In {APPLICATION_NAME} öffnen",
        "externalId": record_key,
        "webUrl": record_link(RecordRef(kind, rid.split("#", 1)[0])),
    }


def create_body(item: ExchangeItem, salt: str = "") -> dict[str, Any]:
    """A create body: the owned fields without the empty ones, plus our key (``salt``: see
    ``transaction_id``)."""
    body = {k: v for k, v in fields(item).items() if v is not None and v != []}
    if isinstance(item, TaskEntry):
        body["linkedResources"] = [linked_resource(item.record_key)]
        return body
    body["singleValueExtendedProperties"] = [{"id": RECORD_ID_PROPERTY, "value": item.record_key}]
    if isinstance(item, CalendarEntry):
        body["transactionId"] = transaction_id(item, salt)
    return body


def body_text(item_class: str, data: dict[str, Any]) -> str:
    """The current body of a Graph item as plain text (a phone may have made it HTML)."""
    if item_class == "contact":
        return str(data.get("personalNotes") or "")
    body = data.get("body") or {}
    content = str(body.get("content") or "")
    if str(body.get("contentType") or "text").lower() == "html":
        import html

        content = re.sub(r"<br\s*/?>|</p>|</div>", "\n", content, flags=re.IGNORECASE)
        content = html.unescape(re.sub(r"<[^>]+>", "", content))
    return content


def record_key_of(item_class: str, data: dict[str, Any]) -> str:
    """Our key on a Graph item read with the property expanded (tasks: the linked resource)."""
    if item_class == "task":
        for res in data.get("linkedResources") or ():
            if res.get("applicationName") == APPLICATION_NAME and res.get("externalId"):
                return str(res["externalId"])
        return ""
    for prop in data.get("singleValueExtendedProperties") or ():
        if str(prop.get("id", "")).lower() == RECORD_ID_PROPERTY.lower():
            return str(prop.get("value") or "")
    return ""


def record_key_from_link(data: dict[str, Any]) -> str:
    """The key of a Wiedervorlage the EWS backend wrote (a task in the default list, no linked
    resource): the record link line in the plugin's part of the body, above the marker."""
    return linked_record_key(body_text("task", data))


def odata_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def foreign_id() -> ItemNotFound:
    """The stored item id is not a Graph id (the mailbox moved from EWS): the caller looks the item
    up by its record key instead."""
    return ItemNotFound(
        "Die gespeicherte Element-ID stammt nicht aus Microsoft Graph; das Element wird gesucht."
    )
