"""The enqueue path: from a host save or delete to rows in the queue.

It reads the subscription lists, freezes a snapshot and writes the queue in one short
transaction; it never talks to Exchange. Resyncs, the re-queue of the host's view after an
unclean stop and the journal replay go the same way.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tsl_hostapi import serialize
from tsl_hostapi.types import (
    Appointment,
    Case,
    Deadline,
    Host,
    Record,
    RecordEvent,
    RecordRef,
    Reminder,
    User,
)

from .. import signals
from ..outbox import snapshot
from ..outbox.base import PRIORITY_BULK, PRIORITY_INTERACTIVE, Change, Outbox
from ..outbox.journal import JournalRecordUnusable
from . import subscriptions

SYNCED_KINDS = ("contact", "appointment", "deadline", "reminder")
BULK_CHUNK = 5000  # changes per queue transaction of a bulk (see EnqueuePath.put)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(moment: dt.datetime | None) -> int:
    """A timestamp in whole microseconds since 1970 (naive: UTC); 0 for none."""
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0, (moment - _EPOCH) // dt.timedelta(microseconds=1))


def source_version(event: RecordEvent, *, deleted: bool = False) -> int:
    """The record's version for ordering its queued snapshots: the host's revision (host
    API 1.1), else the record's ``modified_at`` (a delete: the event's time) in microseconds."""
    version = getattr(event, "version", None)
    if version is not None:
        return int(version)
    if deleted or event.record is None:
        return _micros(event.at)
    return _micros(getattr(event.record, "modified_at", None)) or _micros(event.at)


class EnqueuePath:
    def __init__(
        self,
        host: Host,
        outbox: Outbox,
        *,
        enabled_users: Callable[[], frozenset[str]],
        wake: Callable[[], None],
        recovery_lock: threading.RLock,
    ) -> None:
        self.host = host
        self.outbox = outbox
        self.enabled_users = enabled_users
        self._wake = wake
        self.recovery_lock = recovery_lock  # subscription changes vs. journal replay and sweep

    # ------------------------------------------------------------------ building changes
    def snapshot_payload(self, record: Record) -> str:
        """The record frozen with what its mapping needs (case, people), as the queue stores it."""
        kind = record.ref.kind
        case: Case | None = None
        users: dict[str, User] = {}
        if isinstance(record, (Appointment, Deadline, Reminder)):
            if record.case_id:
                found = self.host.get_record(RecordRef("case", record.case_id))
                case = found if isinstance(found, Case) else None
            ids = set(getattr(record, "participant_ids", ())) | set(getattr(record, "responsible_ids", ()))
            if case is not None:
                ids |= {case.lawyer_id, case.clerk_id} - {""}
            for uid in ids:
                user = self.host.get_user(uid)
                if user is not None:
                    users[uid] = user
        return snapshot.dump(snapshot.Snapshot(kind=kind, record=record, case=case, users=users))

    def changes_for(
        self,
        record: Record,
        *,
        also: Iterable[str] = (),
        version: int = 0,
        priority: int = PRIORITY_INTERACTIVE,
    ) -> list[Change]:
        """Upserts for everyone the record concerns now; deletes for ``also`` users it no longer does.
        ``version``: the record's source version (0: unknown, e.g. a resync reading the host now)."""
        enabled = self.enabled_users()
        key = record.ref.key
        wanted = [u for u in subscriptions.intended_recipients(self.host.settings, record) if u in enabled]
        changes: list[Change] = []
        if wanted:
            payload = self.snapshot_payload(record)
            changes = [Change(u, key, "upsert", payload, version, priority) for u in wanted]
        for u in dict.fromkeys(also):
            if u not in wanted:
                changes.append(Change(u, key, "delete", "", version, priority))
        return changes

    def put(self, changes: Iterable[Change], *, bulk: bool = False) -> None:
        """Write changes to the queue in one transaction and wake the worker; with ``bulk`` in
        transactions of BULK_CHUNK each, taken from ``changes`` as they come (a generator need
        not hold 200,000 changes at once).

        ``bulk`` only for callers whose work survives a crash half-way by other means (a journal
        intent still open, the unclean-stop marker, or work that is simply repeated): a
        transaction of 200,000 changes holds the queue's write lock for many seconds, so the
        host's saves wait that long, and it grows the SQLite WAL to the size of the whole queue."""
        for part in _chunks(changes, BULK_CHUNK) if bulk else [list(changes)]:
            part = self._reachable(part)
            if not part:
                continue
            self.outbox.enqueue(part)
            signals.emit(signals.enqueued, self, changes=part)  # a failing receiver must not undo a save
            self._wake()

    def _reachable(self, changes: list[Change]) -> list[Change]:
        """Drop removals for mailboxes that have nothing of ours and no account: such a job
        could never run and would wait forever at a parked mailbox. A removal still goes to
        every enabled mailbox and to every mailbox that holds (or is about to get) the record."""
        enabled = self.enabled_users()
        holders: dict[str, set[str]] = {}
        kept = []
        for change in changes:
            if change.op == "delete" and change.mailbox not in enabled:
                if change.record_key not in holders:
                    holders[change.record_key] = set(self.outbox.holders(change.record_key))
                if change.mailbox not in holders[change.record_key]:
                    continue
            kept.append(change)
        return kept

    # ------------------------------------------------------------------ the save hooks
    def record_saved(self, event: RecordEvent) -> None:
        record = event.record
        if record is None or event.ref.kind not in SYNCED_KINDS:
            if event.ref.kind == "case" and record is not None:
                self.case_changed(event.ref.id)
            return
        holders = () if event.ref.kind == "contact" else self.outbox.holders(event.ref.key)
        changes = self.changes_for(record, also=holders, version=source_version(event))
        self.put(changes)
        if event.ref.kind == "contact":
            self._recheck_subscribers(record, changes, source_version(event))
        else:
            self._explain_unreached(record, event)

    def _explain_unreached(self, record: Record, event: RecordEvent) -> None:
        """Say why a calendar entry reaches nobody, or not everyone it concerns: no queue job
        exists for those, so the status view alone would stay silent."""
        intended = subscriptions.intended_recipients(self.host.settings, record)
        title = getattr(record, "subject", "") or getattr(record, "kind", "") or event.ref.key
        who = event.user.id if event.user else None
        if not intended:
            what = "Der Termin" if event.ref.kind == "appointment" else "Der Eintrag"
            self.host.notify(
                f"Exchange-Sync: {what} „{title}“ hat keine Teilnehmer oder Verantwortlichen "
                "und wird in kein Postfach übertragen.",
                user_id=who,
                level="warning",
            )
            return
        enabled = self.enabled_users()
        missing = [u for u in intended if u not in enabled]
        if missing:
            names = ", ".join(getattr(self.host.get_user(u), "name", u) for u in missing)
            self.host.notify(
                f"Exchange-Sync: {names} hat kein Exchange-Konto (oder es ist abgeschaltet); "
                f"„{title}“ wird dort nicht eingetragen.",
                user_id=who,
                level="info",
            )

    def _recheck_subscribers(self, record: Record, queued: list[Change], version: int) -> None:
        """A contact save queued its pushes for the subscription list as it read it. Another
        instance may have changed the list since and queued its own pushes or removals before
        this save's: read the list again and queue, with this save's version, a removal for
        each user no longer on it (it replaces this save's push) and a push for each new one."""
        pushed = {c.mailbox for c in queued if c.op == "upsert"}
        now = set(subscriptions.subscribers(self.host.settings, record.id)) & self.enabled_users()
        if pushed != now:
            self.put(self.changes_for(record, also=sorted(pushed - now), version=version))

    def record_deleted(self, event: RecordEvent) -> None:
        if event.ref.kind not in SYNCED_KINDS:
            return
        key = event.ref.key
        targets = set(self.outbox.holders(key))
        if event.record is not None:
            targets |= set(subscriptions.intended_recipients(self.host.settings, event.record))
        if event.ref.kind == "contact":
            subscriptions.set_subscribers(self.host.settings, event.ref.id, ())
        version = source_version(event, deleted=True)
        self.put([Change(u, key, "delete", "", version) for u in sorted(targets)])

    def case_changed(self, case_id: str) -> None:
        """A renamed case re-pushes every item that shows it."""
        changes: list[Change] = []
        for kind in ("appointment", "deadline", "reminder"):
            for record in self.host.iter_records(kind):
                if getattr(record, "case_id", "") == case_id:
                    changes += self.changes_for(record)
        self.put(changes)

    # ------------------------------------------------------------------ queueing again
    def resync(self, user_ids: Iterable[str]) -> int:
        """Queue everything that concerns these users again; unchanged items are not rewritten.
        One pass over the host's records for all of them: each snapshot is built once."""
        wanted = set(user_ids)
        changes: list[Change] = []
        for kind in SYNCED_KINDS:
            for record in self.host.iter_records(kind):
                if wanted.intersection(subscriptions.intended_recipients(self.host.settings, record)):
                    changes += [
                        c for c in self.changes_for(record, priority=PRIORITY_BULK) if c.mailbox in wanted
                    ]
        self.put(changes, bulk=True)  # a resync cut short is simply run again
        return len(changes)

    def requeue_host_view(self) -> int:
        """After an unclean stop: the host commits a record before it calls the save hook, so
        a crash in between leaves a change the queue never saw. Queue the host's whole view
        again (unchanged content hashes write nothing) and a removal for whatever an enabled
        mailbox holds or waits for that the host no longer gives it. Returns the job count."""
        with self.recovery_lock:
            return self._requeue_host_view()

    def _requeue_host_view(self) -> int:
        enabled = self.enabled_users()
        changes: list[Change] = []
        wanted: set[tuple[str, str]] = set()
        for kind in SYNCED_KINDS:
            for record in self.host.iter_records(kind):
                for change in self.changes_for(record):
                    changes.append(change)
                    wanted.add((change.mailbox, change.record_key))
        for mailbox in sorted(enabled):
            held = {key.split("#", 1)[0] for key in self.outbox.sync_keys(mailbox)}
            held |= {j.record_key.split("#", 1)[0] for j in self.outbox.jobs(mailbox) if j.op == "upsert"}
            changes += [
                Change(mailbox, key, "delete") for key in sorted(held) if (mailbox, key) not in wanted
            ]
        self.put(changes, bulk=True)  # the marker stays until a clean stop: a crash repeats it
        return len(changes)

    # ------------------------------------------------------------------ the journal's replay
    def apply_journal(self, rec: dict[str, Any]) -> None:
        """Replay one journal record (see ``outbox/journal.py``) into the queue."""
        with self.recovery_lock:
            kind = rec.get("t")
            if kind == "intent":
                self._complete_intent(rec)
                return
            event = event_from_journal(self.host, rec)
            if kind == "saved":
                self.record_saved(event)
            elif kind == "deleted":
                self.record_deleted(event)

    def _complete_intent(self, rec: dict[str, Any]) -> None:
        """Queue what an interrupted subscription change causes, judged by the lists as they
        are now: a push for each of its users still subscribed, a removal for each of its
        removed users no longer subscribed (both are harmless when already done)."""
        enabled = self.enabled_users()
        add = [str(u) for u in rec.get("add") or () if u in enabled]
        remove = [str(u) for u in rec.get("remove") or ()]
        changes: list[Change] = []
        for cid in rec.get("contacts") or ():
            current = set(subscriptions.subscribers(self.host.settings, str(cid)))
            users = [u for u in add if u in current]
            gone = [u for u in remove if u not in current]
            if not users and not gone:
                continue
            record = self.host.get_record(RecordRef("contact", str(cid)))
            key = RecordRef("contact", str(cid)).key
            if record is not None and users:
                payload = self.snapshot_payload(record)
                changes += [Change(u, key, "upsert", payload) for u in users]
            changes += [Change(u, key, "delete") for u in gone]
        self.put(changes, bulk=True)  # the intent stays open until the replay is through


def _chunks(items: Iterable[Change], size: int) -> Iterator[list[Change]]:
    """Lists of up to ``size`` items, taken from ``items`` as they come."""
    part: list[Change] = []
    for item in items:
        part.append(item)
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


def event_to_journal(event: RecordEvent, hook: str) -> dict[str, Any]:
    """A save (``hook`` "saved") or delete ("deleted") as a journal record."""
    return {
        "t": hook,
        "kind": event.ref.kind,
        "id": event.ref.id,
        "record": serialize.to_data(event.record) if event.record is not None else None,
        "user": event.user.id if event.user is not None else None,
        # The source version as the queue would have had it now: a replay hours later must
        # order the change the same way (and not by the time of the replay).
        "v": source_version(event, deleted=hook == "deleted"),
    }


def event_from_journal(host: Host, rec: dict[str, Any]) -> RecordEvent:
    try:
        ref = RecordRef(str(rec["kind"]), str(rec["id"]))
        cls = snapshot.RECORD_TYPES.get(ref.kind)
        data = rec.get("record")
        record = serialize.from_data(cls, data) if cls is not None and data is not None else None
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalRecordUnusable(f"Eintrag im Journal nicht lesbar: {exc}") from exc
    user = host.get_user(str(rec["user"])) if rec.get("user") else None
    # A record written before versions were journalled has none: 0, ordered by arrival.
    version = rec.get("v")
    return RecordEvent(ref=ref, record=record, user=user, version=version if isinstance(version, int) else 0)
