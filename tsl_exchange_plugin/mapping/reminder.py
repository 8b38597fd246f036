"""Wiedervorlage -> TaskEntry.

The task is due (and starts) on the host's date. Its reminder is an absolute
moment: ``ctx.reminder_time`` (08:00 by default) on the due date in the
recipient's zone. That time of day is a plugin setting, not a host date, so if it
falls into a DST gap it is read as zoneinfo does (02:30 becomes 03:30 CEST)
rather than refused. Done means completed, and a completed task has no reminder.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import unquote

from tsl_hostapi.types import Reminder

from .common import SHORT_TEXT_LIMIT, MappingError, clean_text, compose_body, short, split_body
from .context import (
    LINK_SCHEME,
    MappingContext,
    case_refs,
    categories,
    check_date,
    check_offset,
    record_link,
    user_names,
)
from .items import TaskEntry

REMINDER_CATEGORY = "Wiedervorlage"
SUBJECT_PREFIX = "WV"
LINK_LABEL = "In timeSensor LEGAL: "
# The Microsoft To Do list the Graph backend keeps Wiedervorlagen in; over EWS it is a task folder
# of that name, where the EWS backend finds them again after a mailbox moved back from Graph.
TODO_LIST_NAME = "timeSensor LEGAL"
# The record link line of a Wiedervorlage's body: how a task the other backend wrote is
# recognised where it cannot carry our extended property (a To Do task has none, NOTES §10).
_LINK_LINE = re.compile(rf"^{re.escape(LINK_LABEL)}{LINK_SCHEME}://(reminder)/(\S+)$", re.MULTILINE)


def linked_record_key(body: str) -> str:
    """The record key of the Wiedervorlage whose link stands in the plugin's part of ``body``
    (above the marker: a link the user pasted into their notes does not count), or ""."""
    head, _ = split_body(body)
    m = _LINK_LINE.search(head)
    return f"{m.group(1)}:{unquote(m.group(2))}" if m else ""


def reminder_moment(day: dt.date, ctx: MappingContext) -> dt.datetime | None:
    """The aware reminder time on ``day`` in the recipient's zone, or None if the firm sets none."""
    if ctx.reminder_time is None:
        return None
    zone = ctx.zone
    local = dt.datetime.combine(day, ctx.reminder_time, tzinfo=zone)
    # Normalise through UTC so the result is a time that exists on the wall clock.
    return local.astimezone(dt.UTC).astimezone(zone)


def map_reminder(reminder: Reminder, ctx: MappingContext) -> TaskEntry:
    """The task for one Wiedervorlage. Raises MappingError for no due date or one outside 1900..2100."""
    if reminder.due_date is None:
        raise MappingError("Die Wiedervorlage hat kein Datum")
    due = reminder.due_date
    check_date(due, "Die Wiedervorlage")
    moment = None if reminder.done else reminder_moment(due, ctx)
    if moment is not None:
        check_offset(
            moment.replace(tzinfo=None), ctx.zone, ctx.timezone, "Die Erinnerung der Wiedervorlage am"
        )
    az, case_body = case_refs(ctx, reminder.case_id)
    title = short(reminder.subject)
    head = f"{SUBJECT_PREFIX}: {title}" if title else SUBJECT_PREFIX
    subject = short(f"{head} – {az}" if az else head, SHORT_TEXT_LIMIT)

    responsible = user_names(ctx, reminder.responsible_ids)
    facts = [line for line in (case_body, f"Verantwortlich: {responsible}" if responsible else "") if line]
    if reminder.done:
        facts.append("Status: erledigt")
    return TaskEntry(
        record_key=reminder.ref.key,
        subject=subject,
        due_date=due,
        start_date=due,
        body=compose_body(
            [
                "\n".join(facts),
                clean_text(reminder.notes),
                f"{LINK_LABEL}{record_link(reminder.ref)}",
            ]
        ),
        categories=categories(ctx, REMINDER_CATEGORY),
        completed=bool(reminder.done),
        reminder_at=moment,
        timezone=ctx.timezone,
    )
