"""Termin -> CalendarEntry.

Timed appointments keep the host's wall-clock time and the appointment's own zone
name; the backend localises them (exchangelib sends local time with an offset and
the Windows zone id). So a 10:00 hearing stays 10:00 whatever DST does later. A
wall-clock time that does not exist in its zone (02:30 on the spring-forward
Sunday in Europe/Berlin) is refused rather than shifted: the plugin never moves a
time the host set, and a court date silently shown an hour later is worse than a
clear error the office can fix. An ambiguous time (the repeated hour in autumn)
is kept as written and means its first occurrence, as zoneinfo reads it (fold=0);
an input that explicitly names the second occurrence (fold=1, or an aware time
that lands there) is refused, because a naive output cannot express it.

All-day appointments use the recipient's zone, so the day is the same day on the
phone, and keep the host's dates exactly (end inclusive).

Formats (shared with deadline.py and reminder.py):
- Subject: ``Az. 123/26: Mündliche Verhandlung``; without a case just the subject;
  an empty subject falls back to the appointment type, then to "Termin". Single
  line, at most 255 characters (Exchange's subject limit), so the stored value and
  our content hash agree.
- Categories: the appointment type only. No fixed brand category by default: the
  extended property already marks our items, and a constant category would colour
  every entry the same on the phone. ``ctx.source_category`` adds one if the firm
  wants it.
- Body (plain text): facts (Terminart, Akte with file number and Rubrum, the
  case's lawyer as Sachbearbeiter, Teilnehmer), the host's notes, the link back
  ``tsl://appointment/<id>`` (id percent-encoded), then the user-notes marker.
- Reminder: the appointment's own minutes; otherwise ``ctx.appointment_reminder_minutes``
  for timed and ``ctx.all_day_reminder_minutes`` for all-day appointments.
- A missing end means a point in time (end = start); no duration is invented.
- A case the host did not supply still maps; the body says "Aktenzeichen nicht
  übermittelt" instead of dropping the entry.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

from tsl_hostapi.types import Appointment

from .common import MAX_REMINDER_MINUTES, SHORT_TEXT_LIMIT, MappingError, clean_text, compose_body, short
from .context import (
    MappingContext,
    case_refs,
    categories,
    check_all_day,
    check_date,
    check_offset,
    german_date,
    is_known_zone,
    record_link,
    user_names,
)
from .items import CalendarEntry

DEFAULT_SUBJECT = "Termin"


def _zone(name: str) -> zoneinfo.ZoneInfo:
    if not is_known_zone(name):
        raise MappingError(f"Unbekannte Zeitzone {name!r} im Termin")
    return zoneinfo.ZoneInfo(name)


def _exists(naive: dt.datetime, zone: zoneinfo.ZoneInfo) -> bool:
    # A wall-clock time in a DST gap does not survive the round trip through UTC.
    back = naive.replace(tzinfo=zone).astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
    return back == naive


def _ambiguous(naive: dt.datetime, zone: zoneinfo.ZoneInfo) -> bool:
    # In the repeated autumn hour the two folds have different offsets.
    first = naive.replace(tzinfo=zone, fold=0).utcoffset()
    return first != naive.replace(tzinfo=zone, fold=1).utcoffset()


def _wall_clock(value: dt.datetime, zone: zoneinfo.ZoneInfo, zone_name: str, what: str) -> dt.datetime:
    """The naive wall-clock time in ``zone``; an aware value is converted into the zone first."""
    check_date(value, what)
    if value.tzinfo is not None and value.utcoffset() is not None:
        value = value.astimezone(zone)
    check_date(value, what)
    naive = value.replace(tzinfo=None, fold=0)
    if not _exists(naive, zone):
        raise MappingError(
            f"{what} {german_date(naive.date())} {naive:%H:%M} Uhr gibt es in der Zeitzone {zone_name} "
            "nicht (Umstellung auf Sommerzeit); bitte die Uhrzeit im Termin korrigieren"
        )
    if value.fold == 1 and _ambiguous(naive, zone):
        # The output is naive and is read as the first occurrence; the second one cannot be said.
        raise MappingError(
            f"{what} {german_date(naive.date())} {naive:%H:%M} Uhr ist in der Zeitzone {zone_name} "
            "mehrdeutig (Umstellung auf Winterzeit, zweites Auftreten); bitte die Uhrzeit im Termin korrigieren"
        )
    check_offset(naive, zone, zone_name, what)
    value = naive
    return value


def _reminder(appt: Appointment, ctx: MappingContext) -> int | None:
    minutes = appt.reminder_minutes
    if minutes is None:
        return ctx.all_day_reminder_minutes if appt.all_day else ctx.appointment_reminder_minutes
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0:
        raise MappingError(f"Ungültige Erinnerungszeit im Termin: {minutes!r} Minuten")
    if minutes > MAX_REMINDER_MINUTES:
        # Not clamped: a reminder that rings at another time than the one set is worse than none
        # the office knows about.
        raise MappingError(
            f"Die Erinnerung {minutes} Minuten vor dem Termin ist zu früh: Exchange erlaubt höchstens "
            f"{MAX_REMINDER_MINUTES} Minuten (etwa fünf Jahre); bitte die Erinnerung im Termin korrigieren"
        )
    return minutes


def _subject(appt: Appointment, az: str) -> str:
    title = short(appt.subject) or short(appt.appointment_type) or DEFAULT_SUBJECT
    return short(f"{az}: {title}" if az else title, SHORT_TEXT_LIMIT)


def _body(appt: Appointment, ctx: MappingContext, case_body: str) -> str:
    facts = []
    if short(appt.appointment_type):
        facts.append(f"Terminart: {short(appt.appointment_type)}")
    if case_body:
        facts.append(case_body)
    case = ctx.case(appt.case_id)
    if case is not None and case.lawyer_id:
        facts.append(f"Sachbearbeiter: {user_names(ctx, [case.lawyer_id])}")
    facts.append(f"Teilnehmer: {user_names(ctx, appt.participant_ids)}")
    return compose_body(
        ["\n".join(facts), clean_text(appt.notes), f"In timeSensor LEGAL: {record_link(appt.ref)}"]
    )


def map_appointment(appt: Appointment, ctx: MappingContext) -> CalendarEntry:
    """The calendar item for one Termin in ``ctx.recipient``'s mailbox.

    Raises MappingError (German reason) for: no participants, missing start, end before
    start, an unknown zone, a time that does not exist in its zone, a time whose offset in
    its zone has seconds (local mean time before zone time), dates outside 1900..2100, a
    reminder below 0 or above Exchange's limit.
    """
    if not [p for p in appt.participant_ids if p]:
        raise MappingError("Der Termin hat keine Teilnehmer; er würde in kein Postfach übertragen")
    az, case_body = case_refs(ctx, appt.case_id)
    entry = functools.partial(
        CalendarEntry,
        record_key=appt.ref.key,
        subject=_subject(appt, az),
        location=short(appt.location),
        body=_body(appt, ctx, case_body),
        categories=categories(ctx, appt.appointment_type),
        free_busy="Busy" if appt.busy else "Free",
        reminder_minutes=_reminder(appt, ctx),
    )
    if appt.all_day:
        # The host's dates; fall back to the date part of start/end if only those came.
        start_date = appt.start_date or (appt.start.date() if appt.start else None)
        if start_date is None:
            raise MappingError("Der ganztägige Termin hat kein Anfangsdatum")
        end_date = (
            appt.end_date or (appt.end.date() if appt.end and not appt.start_date else None) or start_date
        )
        check_date(start_date, "Der Terminbeginn")
        check_date(end_date, "Das Terminende")
        check_all_day(start_date, ctx, "Der Terminbeginn")
        check_all_day(end_date, ctx, "Das Terminende")
        if end_date < start_date:
            raise MappingError(
                f"Das Terminende {german_date(end_date)} liegt vor dem Beginn {german_date(start_date)}"
            )
        return entry(timezone=ctx.timezone, all_day=True, start_date=start_date, end_date=end_date)

    if appt.start is None:
        raise MappingError("Der Termin hat keinen Beginn")
    zone = _zone(appt.timezone)
    start = _wall_clock(appt.start, zone, appt.timezone, "Der Terminbeginn")
    # No end: a point in time (Exchange accepts Start == End); the plugin invents no duration.
    end = _wall_clock(appt.end, zone, appt.timezone, "Das Terminende") if appt.end is not None else start
    if end < start:
        raise MappingError(
            f"Das Terminende ({german_date(end.date())} {end:%H:%M}) liegt vor dem Beginn "
            f"({german_date(start.date())} {start:%H:%M})"
        )
    return entry(timezone=appt.timezone, start=start, end=end)
