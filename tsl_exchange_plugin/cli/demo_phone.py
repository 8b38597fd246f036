"""The demo's last picture: each mailbox as the lawyer's phone shows it.

The items are read back through the real protocols (exchangelib for an EWS mailbox, the Graph
client for a Microsoft 365 one), not from the sandbox's store: contacts (how many, the first
names), the calendar of the next three weeks in the lawyer's zone (times, all-day deadlines and
Vorfristen marked) and the Wiedervorlagen with their due dates. "Today" is the sample firm's
fixed date, so every run prints the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..backends.phone_view import PhoneEntry, PhoneView
from ..ui.status import Column

if TYPE_CHECKING:
    from ..core.runtime import SyncRuntime

DAYS = 21
CONTACT_NAMES = 5
WEEKDAYS = ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So")


def read(runtime: SyncRuntime, user_id: str, first_day: dt.date, days: int = DAYS) -> PhoneView:
    """Read one lawyer's mailbox with a backend of its own (the worker keeps its sessions)."""
    from ..backends.routing import RoutingBackend

    account = runtime.config.resolve_account(user_id)
    session = RoutingBackend().session(account)
    inner = getattr(session, "inner", session)
    try:
        if account.backend == "graph":
            from ..backends.graph.phone import read_phone_view
        else:
            from ..backends.ews.phone import read_phone_view
        return read_phone_view(inner, account.timezone, first_day, days)
    finally:
        session.close()


def kind_of(entry: PhoneEntry) -> str:
    """What the entry is, as the plugin's categories say."""
    categories = set(entry.categories)
    if "Vorfrist" in categories:
        return "Vorfrist"
    if "Frist" in categories:
        return "Frist"
    return "Termin"


def when_of(entry: PhoneEntry) -> str:
    if entry.all_day:
        return "ganztägig" + (f" bis {entry.last_day:%d.%m.}" if entry.last_day else "")
    span = f"{entry.start:%H:%M}–{entry.end:%H:%M}"
    return span + (f" (bis {entry.last_day:%d.%m.})" if entry.last_day else "")


def day_of(day: dt.date) -> str:
    return f"{WEEKDAYS[day.weekday()]} {day:%d.%m.%Y}"


def show(
    say: Callable[[str], None],
    print_table: Callable[..., None],
    mailbox: str,
    name: str,
    phone: PhoneView,
    first_day: dt.date,
    days: int = DAYS,
) -> None:
    last = first_day + dt.timedelta(days=days - 1)
    say(f"\nTelefon von {name} ({mailbox}), gelesen über {phone.via}:")
    names = "; ".join(phone.contacts[:CONTACT_NAMES])
    more = (
        f"; … und {len(phone.contacts) - CONTACT_NAMES} weitere"
        if len(phone.contacts) > CONTACT_NAMES
        else ""
    )
    say(f"  Kontakte: {len(phone.contacts)}" + (f" – {names}{more}" if names else ""))
    deadlines = sum(1 for e in phone.entries if kind_of(e) != "Termin")
    say(
        f"  Kalender {first_day:%d.%m.} bis {last:%d.%m.%Y}: {len(phone.entries)} Einträge, "
        f"davon {deadlines} Fristen und Vorfristen (ganztägig)"
    )
    if phone.entries:
        print_table(
            [
                Column("Tag", 13, cut=False),
                Column("Zeit", 11, cut=False),
                Column("Art", 8),
                Column("Betreff", 0),
            ],
            [[day_of(e.day), when_of(e), kind_of(e), e.subject] for e in phone.entries],
            indent=4,
        )
    open_tasks = [t for t in phone.tasks if not t.done]
    say(f"  Aufgaben (Wiedervorlagen): {len(phone.tasks)}, davon {len(open_tasks)} offen")
    if phone.tasks:
        print_table(
            [Column("fällig", 13, cut=False), Column("Stand", 8), Column("Betreff", 0)],
            [
                [day_of(t.due) if t.due else "ohne Datum", "erledigt" if t.done else "offen", t.subject]
                for t in phone.tasks
            ],
            indent=4,
        )
