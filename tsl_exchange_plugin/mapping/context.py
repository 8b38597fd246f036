"""What the calendar mappings need besides the record: recipient, zone, lead times, lookups.

One ``MappingContext`` is built per mailbox (recipient) by the worker from the
firm's settings and the host's snapshot of cases and users. The mapping
functions read it and never call back into the host, so they stay pure.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote

from tsl_hostapi.types import Case, RecordRef, User

from .common import MAX_REMINDER_MINUTES, MappingError, case_line, clean_categories, clean_line

DoneDeadlineMode = Literal["mark", "remove"]
DONE_DEADLINE_MODES: tuple[str, ...] = ("mark", "remove")

DEFAULT_TIMEZONE = "Europe/Berlin"


@functools.lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    # Checked against the full list rather than by opening the file: ZoneInfo() would
    # accept "europe/berlin" on a case-insensitive file system and reject it on Linux,
    # and it opens directories such as "America". The list gives one answer everywhere.
    return frozenset(zoneinfo.available_timezones())


def is_known_zone(name: str) -> bool:
    """True if ``name`` is an IANA zone name this Python knows (exact spelling)."""
    return isinstance(name, str) and name in _known_zones()


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class MappingContext:
    """Everything besides the record that decides how it looks in one user's mailbox.

    Lead times are minutes before the item's start; for all-day items (deadlines,
    pre-deadlines) the start is midnight of the day in ``timezone``, so 1440 means
    "at 00:00 on the day before". ``None`` means "no reminder".
    """

    recipient: User
    timezone: str = DEFAULT_TIMEZONE  # the recipient's zone: all-day items and task reminders
    appointment_reminder_minutes: int | None = 15  # used when the appointment has none of its own
    # All-day appointments start at midnight: 15 minutes would ring at 23:45 the evening before,
    # so they get their own default, counted like deadlines (1440 = on the day before).
    all_day_reminder_minutes: int | None = 1440
    deadline_reminder_minutes: int | None = 1440
    pre_deadline_reminder_minutes: int | None = 1440
    reminder_time: dt.time | None = dt.time(8, 0)  # Wiedervorlage reminder on the due date; None: none
    done_deadline: DoneDeadlineMode = "mark"
    # Extra category put on every item, e.g. "timeSensor LEGAL"; empty by default (see README).
    source_category: str = ""
    # Lookups for names; hash=False keeps the context hashable although mappings are not.
    cases: Mapping[str, Case] = field(default_factory=dict, hash=False)
    users: Mapping[str, User] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # A broken context would make every record fail the same way; refuse it where it is built.
        if not is_known_zone(self.timezone):
            raise ValueError(f"Unbekannte Zeitzone für den Empfänger: {self.timezone!r}")
        if self.done_deadline not in DONE_DEADLINE_MODES:
            raise ValueError(
                f"Ungültige Einstellung für erledigte Fristen: {self.done_deadline!r} "
                f"(erlaubt: {', '.join(DONE_DEADLINE_MODES)})"
            )
        for name in (
            "appointment_reminder_minutes",
            "all_day_reminder_minutes",
            "deadline_reminder_minutes",
            "pre_deadline_reminder_minutes",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"Ungültige Erinnerungszeit {name}={value!r}: erwartet ganze Minuten ab 0")
            if value is not None and value > MAX_REMINDER_MINUTES:
                raise ValueError(
                    f"Ungültige Erinnerungszeit {name}={value!r}: Exchange erlaubt höchstens "
                    f"{MAX_REMINDER_MINUTES} Minuten (etwa fünf Jahre)"
                )
        if self.reminder_time is not None and (
            not isinstance(self.reminder_time, dt.time) or self.reminder_time.tzinfo is not None
        ):
            raise ValueError("Die Erinnerungsuhrzeit für Wiedervorlagen muss eine Uhrzeit ohne Zeitzone sein")
        # Read-only copies: the context is shared by every mapping call for a mailbox.
        object.__setattr__(self, "cases", _frozen(self.cases))
        object.__setattr__(self, "users", _frozen(self.users))

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def case(self, case_id: str) -> Case | None:
        """The case for ``case_id``, or None when no case is set or the host did not supply it."""
        if not case_id:
            return None
        return self.cases.get(case_id)

    def user_name(self, user_id: str) -> str:
        """A user's display name; an unknown id still shows something a person can follow up."""
        user = self.users.get(user_id)
        if user is None and self.recipient.id == user_id:
            user = self.recipient
        if user is not None and user.name.strip():
            return user.name.strip()
        return f"Benutzer {user_id}"


# --------------------------------------------------------------------------- shared by the calendar mappings

# Exchange and phones handle these years safely, and a date outside them is a typo in the host
# (0226 for 2026), not a real deadline; refusing it beats a Frist that nobody ever sees.
MIN_DATE = dt.date(1900, 1, 1)
MAX_DATE = dt.date(2100, 12, 31)

LINK_SCHEME = "tsl"


def check_date(value: dt.date, what: str) -> None:
    """Refuse a date (or date-time) outside MIN_DATE..MAX_DATE with a German reason naming ``what``."""
    day = value.date() if isinstance(value, dt.datetime) else value
    if not MIN_DATE <= day <= MAX_DATE:
        raise MappingError(
            f"{what} {german_date(day)} liegt außerhalb des erlaubten Bereichs "
            f"{german_date(MIN_DATE)} bis {german_date(MAX_DATE)}"
        )


def check_offset(local: dt.datetime, zone: dt.tzinfo, zone_name: str, what: str) -> None:
    """Refuse a wall-clock time whose UTC offset in ``zone`` is not whole minutes.

    Before a place adopted zone time its clocks ran on local mean time, e.g. -03:30:52 in
    St. John's until 1935 or +00:19:32 in Amsterdam until 1937. exchangelib writes such a time
    with that offset ("1900-03-01T10:00:00-03:30:52"), which is no xs:dateTime: Exchange refuses
    the whole request. Shifting the time to a whole-minute offset would move the entry; a date
    that old in the host is almost always a typo, so the office is asked to check it.
    """
    offset = local.replace(tzinfo=zone).utcoffset()
    if offset is None or not offset % dt.timedelta(minutes=1):
        return
    sign = "-" if offset < dt.timedelta(0) else "+"
    seconds = int(abs(offset).total_seconds())
    shown = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    raise MappingError(
        f"{what} {german_date(local.date())} {local:%H:%M} Uhr liegt in der Zeitzone {zone_name} vor "
        f"Einführung der Zonenzeit (Ortszeit, UTC{shown}); Exchange kann diese Zeit nicht speichern; "
        "bitte das Datum prüfen und korrigieren"
    )


def check_all_day(day: dt.date, ctx: MappingContext, what: str) -> None:
    """``check_offset`` for an all-day item: exchangelib sends it as local midnight of its first
    day and of the day after its last one, in the recipient's zone."""
    midnight = dt.datetime.combine(day, dt.time(0))
    check_offset(midnight, ctx.zone, ctx.timezone, what)
    if day < dt.date.max:
        check_offset(midnight + dt.timedelta(days=1), ctx.zone, ctx.timezone, what)


def german_date(value: dt.date) -> str:
    """14.04.2026 (zero-padded, four-digit year even for years below 1000)."""
    return f"{value.day:02d}.{value.month:02d}.{value.year:04d}"


def record_link(ref: RecordRef) -> str:
    """Link back to the host record: ``tsl://<kind>/<id>``, the id percent-encoded."""
    return f"{LINK_SCHEME}://{ref.kind}/{quote(ref.id, safe='')}"


def case_refs(ctx: MappingContext, case_id: str) -> tuple[str, str]:
    """(short reference for subjects, line for bodies) for a record's case.

    A case the host did not supply still shows its id, so nothing is silently dropped:
    the item is pushed (a Frist without its file number beats no Frist) and says so.
    """
    if not case_id:
        return "", ""
    case = ctx.case(case_id)
    if case is None:
        return "", f"Akte: {clean_line(case_id)} (Aktenzeichen nicht übermittelt)"
    number = clean_line(case.file_number)
    line = case_line(case.file_number, case.rubrum)
    return (f"Az. {number}" if number else ""), (f"Akte: {line}" if line else "")


def user_names(ctx: MappingContext, user_ids: tuple[str, ...] | list[str]) -> str:
    """Comma-separated display names in the host's order, each id once."""
    seen: list[str] = []
    for uid in user_ids:
        if uid and uid not in seen:
            seen.append(uid)
    return ", ".join(clean_line(ctx.user_name(uid)) for uid in seen)


def categories(ctx: MappingContext, *names: str) -> tuple[str, ...]:
    """The item's categories plus the firm's source category, cleaned and without duplicates."""
    return clean_categories((*names, ctx.source_category))
