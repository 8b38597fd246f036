"""A mailbox as a phone shows it: what the demo reads back through the real protocols.

Both backends fill the same plain dataclasses (``ews/phone.py`` over EWS with exchangelib,
``graph/phone.py`` over Microsoft Graph), so the demo prints one view whichever wrote the items,
and a test can compare two runs. Times are the mailbox owner's local wall-clock times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class PhoneEntry:
    """One calendar entry in the owner's zone; ``start`` None: all-day (``last_day`` inclusive)."""

    day: dt.date
    subject: str
    start: dt.time | None = None
    end: dt.time | None = None
    last_day: dt.date | None = None
    categories: tuple[str, ...] = ()

    @property
    def all_day(self) -> bool:
        return self.start is None


@dataclass(frozen=True)
class PhoneTask:
    subject: str
    due: dt.date | None = None
    done: bool = False


@dataclass(frozen=True)
class PhoneView:
    via: str  # how it was read, e.g. "EWS (exchangelib)"
    contacts: tuple[str, ...]  # "Speichern unter" names, sorted as a phone sorts them
    entries: tuple[PhoneEntry, ...]  # by local date, all-day first, then by time
    tasks: tuple[PhoneTask, ...]  # by due date


_BASE_LETTERS = str.maketrans({"ä": "a", "ö": "o", "ü": "u", "ß": "ss"})


def sort_name(text: str) -> str:
    """Umlauts sort with their base letter, as a German phone list does."""
    return text.casefold().translate(_BASE_LETTERS)


def timed_entry(
    subject: str, start: dt.datetime, end: dt.datetime, zone: str, categories: Iterable[str] = ()
) -> PhoneEntry:
    """An entry from two aware instants, shown in ``zone``."""
    tz = ZoneInfo(zone)
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    last = local_end.date() if local_end.date() != local_start.date() else None
    return PhoneEntry(
        local_start.date(),
        subject,
        local_start.time().replace(tzinfo=None),
        local_end.time().replace(tzinfo=None),
        last,
        tuple(categories or ()),
    )


def all_day_entry(
    subject: str, first: dt.date, end_exclusive: dt.date, categories: Iterable[str] = ()
) -> PhoneEntry:
    """An all-day entry from its calendar dates (Exchange's end is the next midnight)."""
    last = max(first, end_exclusive - dt.timedelta(days=1))
    return PhoneEntry(first, subject, None, None, last if last != first else None, tuple(categories or ()))


def entry_order(entry: PhoneEntry) -> tuple[Any, ...]:
    return (entry.day, not entry.all_day, entry.start or dt.time(0), sort_name(entry.subject), entry.subject)


def task_order(task: PhoneTask) -> tuple[Any, ...]:
    return (task.due or dt.date.max, sort_name(task.subject), task.subject)


def view(
    via: str, contacts: Iterable[str | None], entries: Iterable[PhoneEntry], tasks: Iterable[PhoneTask]
) -> PhoneView:
    return PhoneView(
        via,
        tuple(sorted((c for c in contacts if c), key=lambda c: (sort_name(c), c))),
        tuple(sorted(entries, key=entry_order)),
        tuple(sorted(tasks, key=task_order)),
    )
