"""Exchange items as plain data: what the mapping functions produce and the backend writes.

These mirror the Exchange fields the plugin owns, with neutral Python values, so
mapping stays pure and testable without exchangelib or a server. Every field the
plugin owns is always present: an empty value means "clear it in Exchange".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Exchange labels, as EWS spells them (EmailAddressKeyType, PhoneNumberKeyType, PhysicalAddressKeyType).
EMAIL_LABELS = ("EmailAddress1", "EmailAddress2", "EmailAddress3")


@dataclass(frozen=True)
class EmailEntry:
    label: str  # EmailAddress1..3
    address: str


@dataclass(frozen=True)
class PhoneEntry:
    label: str  # BusinessPhone, BusinessPhone2, MobilePhone, HomePhone, BusinessFax, HomeFax, OtherTelephone
    number: str


@dataclass(frozen=True)
class AddressEntry:
    label: str  # Business, Home, Other
    street: str = ""
    city: str = ""
    state: str = ""
    country: str = ""
    zipcode: str = ""


@dataclass(frozen=True)
class ContactItem:
    """A Contact in the user's Contacts folder."""

    record_key: str
    display_name: str
    file_as: str
    given_name: str = ""
    middle_name: str = ""
    surname: str = ""
    nickname: str = ""
    initials: str = ""
    generation: str = ""
    title: str = ""  # not an EWS contact field: folded into display name / body by the mapping
    company_name: str = ""
    department: str = ""
    job_title: str = ""
    email_addresses: tuple[EmailEntry, ...] = ()
    phone_numbers: tuple[PhoneEntry, ...] = ()
    physical_addresses: tuple[AddressEntry, ...] = ()
    birthday: dt.date | None = None
    business_homepage: str = ""
    body: str = ""
    categories: tuple[str, ...] = ()

    item_class = "contact"


@dataclass(frozen=True)
class CalendarEntry:
    """A CalendarItem: an appointment, a deadline or a pre-deadline.

    Timed: ``start``/``end`` are naive wall-clock times in ``timezone``.
    All-day: ``start_date``/``end_date`` (inclusive) and ``all_day`` True.
    """

    record_key: str
    subject: str
    timezone: str = "Europe/Berlin"
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    all_day: bool = False
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    location: str = ""
    body: str = ""
    categories: tuple[str, ...] = ()
    free_busy: str = "Busy"  # Free, Tentative, Busy, OOF
    reminder_minutes: int | None = None  # None: no reminder

    item_class = "calendar"


@dataclass(frozen=True)
class TaskEntry:
    """A Task in the user's Tasks folder (a Wiedervorlage)."""

    record_key: str
    subject: str
    due_date: dt.date | None = None
    start_date: dt.date | None = None
    body: str = ""
    categories: tuple[str, ...] = ()
    completed: bool = False
    reminder_at: dt.datetime | None = None  # aware datetime, or None for no reminder
    timezone: str = "Europe/Berlin"

    item_class = "task"


ExchangeItem = ContactItem | CalendarEntry | TaskEntry


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def to_json(item: ExchangeItem) -> str:
    """Canonical JSON of an item (sorted keys), used for hashing and for the queue."""
    data = _plain(item)
    data["item_class"] = item.item_class
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(item: ExchangeItem) -> str:
    """Hash of everything the plugin writes: an unchanged hash means no write."""
    return hashlib.sha256(to_json(item).encode("utf-8")).hexdigest()
