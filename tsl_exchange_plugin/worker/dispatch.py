"""Pick the mapping for a queued snapshot and the mailbox it goes to."""

from __future__ import annotations

from collections.abc import Callable

from tsl_hostapi.types import Appointment, Contact, Deadline, Reminder, User

from ..mapping.common import MappingError
from ..mapping.contact import map_contact
from ..mapping.context import MappingContext
from ..mapping.deadline import map_deadline
from ..mapping.items import ExchangeItem
from ..mapping.recurrence import map_appointment_series
from ..mapping.reminder import map_reminder
from ..outbox.snapshot import Snapshot

ContextFactory = Callable[[str, Snapshot], MappingContext]
"""(mailbox, snapshot) -> the recipient's mapping context."""


def default_context(mailbox: str, snapshot: Snapshot) -> MappingContext:
    recipient = snapshot.users.get(mailbox) or User(id=mailbox, name=f"Benutzer {mailbox}")
    cases = {snapshot.case.id: snapshot.case} if snapshot.case else {}
    return MappingContext(recipient=recipient, cases=cases, users=snapshot.users)


def make_mapper(
    context_for: ContextFactory = default_context,
) -> Callable[[Snapshot, str], list[ExchangeItem]]:
    def mapper(snapshot: Snapshot, mailbox: str) -> list[ExchangeItem]:
        record = snapshot.record
        if isinstance(record, Contact):
            return [map_contact(record, record_key=record.ref.key)]
        ctx = context_for(mailbox, snapshot)
        if isinstance(record, Appointment):
            return [map_appointment_series(record, ctx)]
        if isinstance(record, Deadline):
            return list(map_deadline(record, ctx))
        if isinstance(record, Reminder):
            return [map_reminder(record, ctx)]
        raise MappingError(f"Datensatzart {snapshot.kind!r} wird nicht nach Exchange übertragen.")

    return mapper
