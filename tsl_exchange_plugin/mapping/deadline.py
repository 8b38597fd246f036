"""Frist (with its Vorfristen) -> all-day CalendarEntry items.

One Frist gives one item keyed ``deadline:<id>`` on its due date and one item per
pre-deadline keyed ``deadline:<id>#vorfrist<n>``, n the 1-based position in the
sorted list of distinct pre-deadline dates. The keys are positional on purpose:
when the host moves a Vorfrist, the item with the same position is updated (moved)
instead of a new item being created next to a stale one; the host's Vorfristen
carry no ids of their own, so position is the only stable handle.

The plugin never recomputes a date: every output date is exactly the host's.

A done deadline is either marked ("Erledigt: " subject prefix, category
"Erledigt", no reminder) or, with the firm setting ``done_deadline="remove"``,
mapped to no items at all. The caller removes what exists by comparing the keys it
holds in sync state for the record (``ref_for_key``) with the keys returned here;
the same comparison deletes ``#vorfrist3`` when a deadline goes from three
Vorfristen to two.
"""

from __future__ import annotations

import datetime as dt
import re

from tsl_hostapi.types import Appointment, Deadline, RecordRef, Reminder

from .common import SHORT_TEXT_LIMIT, MappingError, clean_text, compose_body, short
from .context import (
    MappingContext,
    case_refs,
    categories,
    check_all_day,
    check_date,
    german_date,
    record_link,
    user_names,
)
from .items import CalendarEntry

FRIST_CATEGORY = "Frist"
VORFRIST_CATEGORY = "Vorfrist"
DONE_CATEGORY = "Erledigt"
DONE_PREFIX = "Erledigt: "
VORFRIST_SUFFIX = "#vorfrist"
_VORFRIST_KEY = re.compile(r"(.+)" + re.escape(VORFRIST_SUFFIX) + r"([1-9][0-9]*)", re.DOTALL)


def vorfrist_key(deadline_key: str, position: int) -> str:
    """Record key of the ``position``-th (1-based) Vorfrist of the deadline keyed ``deadline_key``."""
    return f"{deadline_key}{VORFRIST_SUFFIX}{position}"


def pre_deadline_dates(deadline: Deadline) -> list[dt.date]:
    """The distinct pre-deadline dates in order; position i+1 is the Vorfrist's key number.

    Duplicates are folded: two reminders on one day for one Frist are one entry to read.
    """
    return sorted({d for d in deadline.pre_deadline_dates if d is not None})


def _title(deadline: Deadline) -> str:
    kind = short(deadline.kind)
    return f"Frist: {kind}" if kind else "Frist"


def _subject(prefix: str, az: str, done: bool) -> str:
    text = f"{prefix} – {az}" if az else prefix
    return short(f"{DONE_PREFIX}{text}" if done else text, SHORT_TEXT_LIMIT)


def map_deadline(deadline: Deadline, ctx: MappingContext) -> list[CalendarEntry]:
    """The Frist and its Vorfristen as all-day items, Frist first, Vorfristen by date.

    Returns [] for a done deadline when the firm removes done deadlines. Raises
    MappingError for a missing due date, dates outside 1900..2100 and a Vorfrist
    after its Frist.
    """
    done_mode = ctx.done_deadline if deadline.done else ""
    if done_mode == "remove":
        # Checked before validation: removing a done deadline must work even if its dates are broken.
        return []
    if deadline.due_date is None:
        raise MappingError("Die Frist hat kein Fälligkeitsdatum")
    due = deadline.due_date
    check_date(due, "Das Fristende")
    check_all_day(due, ctx, "Das Fristende")
    pre_dates = pre_deadline_dates(deadline)
    for pre in pre_dates:
        check_date(pre, "Die Vorfrist")
        check_all_day(pre, ctx, "Die Vorfrist")
        if pre > due:
            raise MappingError(f"Die Vorfrist {german_date(pre)} liegt nach dem Fristende {german_date(due)}")

    done = done_mode == "mark"
    az, case_body = case_refs(ctx, deadline.case_id)
    title = _title(deadline)
    responsible = user_names(ctx, deadline.responsible_ids)
    notes = clean_text(deadline.notes)
    link = f"In timeSensor LEGAL: {record_link(deadline.ref)}"
    status = "Status: erledigt" if done else ""

    facts = [title, f"Fällig am: {german_date(due)}"]
    if pre_dates:
        facts.append("Vorfristen: " + ", ".join(german_date(d) for d in pre_dates))
    facts += [
        line for line in (case_body, f"Verantwortlich: {responsible}" if responsible else "", status) if line
    ]
    items = [
        CalendarEntry(
            record_key=deadline.ref.key,
            subject=_subject(title, az, done),
            timezone=ctx.timezone,
            all_day=True,
            start_date=due,
            end_date=due,
            body=compose_body(["\n".join(facts), notes, link]),
            categories=categories(ctx, FRIST_CATEGORY, deadline.kind, *([DONE_CATEGORY] if done else [])),
            free_busy="Free",
            reminder_minutes=None if done else ctx.deadline_reminder_minutes,
        )
    ]

    for position, pre in enumerate(pre_dates, start=1):
        kind = short(deadline.kind)
        prefix = f"Vorfrist: {kind}" if kind else "Vorfrist"
        facts = [
            f"Vorfrist {position} von {len(pre_dates)}",
            title,
            f"Fristende: {german_date(due)}",
        ]
        facts += [
            line
            for line in (case_body, f"Verantwortlich: {responsible}" if responsible else "", status)
            if line
        ]
        items.append(
            CalendarEntry(
                record_key=vorfrist_key(deadline.ref.key, position),
                subject=_subject(f"{prefix} (Fristende {german_date(due)})", az, done),
                timezone=ctx.timezone,
                all_day=True,
                start_date=pre,
                end_date=pre,
                body=compose_body(["\n".join(facts), notes, link]),
                categories=categories(
                    ctx, VORFRIST_CATEGORY, deadline.kind, *([DONE_CATEGORY] if done else [])
                ),
                free_busy="Free",
                reminder_minutes=None if done else ctx.pre_deadline_reminder_minutes,
            )
        )
    return items


# --------------------------------------------------------------------------- keys for cleanup

CALENDAR_KINDS: tuple[str, ...] = ("appointment", "deadline", "reminder")


def keys_for(kind: str, record: Appointment | Deadline | Reminder) -> list[str]:
    """Every record key ``record`` can produce in a mailbox, whatever its state (done or not).

    For cleanup when a user stops being a participant or responsible, or a done deadline
    is removed. Never raises on a record that would fail to map: cleanup must work for it.
    Vorfrist keys cover the record's current pre-deadlines; keys left from an earlier
    state with more Vorfristen are found with ``ref_for_key`` over the sync state.
    """
    if kind not in CALENDAR_KINDS:
        raise ValueError(f"Unbekannte Datensatzart für Kalender und Aufgaben: {kind!r}")
    if record.ref.kind != kind:
        raise ValueError(f"Datensatz {record.ref.key} ist keine Art {kind!r}")
    key = record.ref.key
    if isinstance(record, Deadline):
        return [key] + [vorfrist_key(key, n) for n in range(1, len(pre_deadline_dates(record)) + 1)]
    return [key]


def ref_for_key(record_key: str) -> RecordRef:
    """The host record an item key belongs to: ``deadline:9#vorfrist2`` -> deadline 9."""
    match = _VORFRIST_KEY.fullmatch(record_key)
    return RecordRef.parse(match.group(1) if match else record_key)
