"""Exchange items as plain data: what the mapping functions produce and the backend writes.

These mirror the Exchange fields the plugin owns, with neutral Python values, so
mapping stays pure and testable without exchangelib or a server. Every field the
plugin owns is always present: an empty value means "clear it in Exchange".
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import ClassVar, Literal

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

    item_class: ClassVar[Literal["contact"]] = "contact"


@dataclass(frozen=True)
class SeriesPattern:
    """A recurrence as EWS spells it (RecurrenceType): one pattern and one range.

    ``kind``: "daily", "weekly", "absolute_monthly", "relative_monthly", "absolute_yearly",
    "relative_yearly". ``weekdays`` 0 = Monday … 6 = Sunday; ``week_index`` 1-4, 5 = last.
    The range starts on ``start_date`` and ends after ``count`` occurrences, on ``end_date``
    (inclusive), or never.
    """

    kind: str
    interval: int = 1
    weekdays: tuple[int, ...] = ()
    day_of_month: int | None = None
    week_index: int | None = None
    month: int | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    count: int | None = None


@dataclass(frozen=True)
class OccurrenceEdit:
    """One exception of a series: occurrence ``index`` (1-based, EWS InstanceIndex), which by the
    pattern starts on ``original_date``, is deleted or gets the values given (None/"" keep the
    series' value). Times as in CalendarEntry: naive wall-clock in the series' zone, or dates."""

    index: int
    original_date: dt.date
    deleted: bool = False
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    subject: str = ""
    location: str = ""


@dataclass(frozen=True)
class Series:
    """A recurring master: its pattern and its exceptions (ordered by index)."""

    pattern: SeriesPattern
    edits: tuple[OccurrenceEdit, ...] = ()


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
    # A series: start/end (or start_date/end_date) are then its first occurrence's. Kept out of
    # the repr (content_hash adds it when set), so that single entries keep the hash they had
    # before series existed and are not all rewritten once after an upgrade.
    recurrence: Series | None = field(default=None, repr=False)

    item_class: ClassVar[Literal["calendar"]] = "calendar"

    def day_span(self) -> tuple[dt.date, dt.date]:
        """(first, last day) of an all-day entry; a missing end is its first day."""
        if self.start_date is None:
            raise ValueError(f"{self.record_key}: all-day entry without a start date")
        return self.start_date, self.end_date or self.start_date

    def time_span(self) -> tuple[dt.datetime, dt.datetime]:
        """(start, end) of a timed entry."""
        if self.start is None or self.end is None:
            raise ValueError(f"{self.record_key}: timed entry without start or end")
        return self.start, self.end


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

    item_class: ClassVar[Literal["task"]] = "task"


ExchangeItem = ContactItem | CalendarEntry | TaskEntry


def content_hash(item: ExchangeItem) -> str:
    """Hash of everything the plugin writes: an unchanged hash means no write.

    The repr of these frozen dataclasses holds only text, numbers, dates and tuples, so it
    is stable and complete, and several times cheaper than canonical JSON on the push path.
    """
    text = f"{item.item_class}|{item!r}"
    series = getattr(item, "recurrence", None)
    if series is not None:
        text += f"|{series!r}"  # the whole series: pattern and every exception
    return hashlib.sha256(text.encode()).hexdigest()
