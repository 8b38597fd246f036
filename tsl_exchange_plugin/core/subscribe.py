"""Subscription changes: who receives which contact, written to the host's settings and
queued as pushes and removals, with an intent in the journal so that neither half is lost."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tsl_hostapi.types import Host, Record, RecordRef

from ..outbox.base import PRIORITY_BULK, Change
from ..outbox.journal import Journal
from . import subscriptions
from .enqueue import EnqueuePath

try:  # subscription changes of host instances on one data directory (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SUBSCRIPTION_LOCK_FILE = "subscriptions.lock"
SUBSCRIPTION_REREADS = 5
"""How often a subscription change reads its contacts again when saves keep changing them."""

Changed = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
"""Per contact id: its subscriber list before and after."""


class QueueDeferred(Exception):
    """A subscription change was saved, but its pushes could not be queued yet; the journal
    holds the intent and the replay queues them when the queue is back."""

    def __init__(self, changed: dict[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.changed = changed


class SubscriptionChanges:
    def __init__(
        self,
        host: Host,
        enqueue: EnqueuePath,
        journal: Journal,
        *,
        data_dir: str,
        journal_waiting: Callable[[], None],
    ) -> None:
        self.host = host
        self.enqueue = enqueue
        self.journal = journal
        self.data_dir = data_dir
        self._journal_waiting = journal_waiting  # wakes the replay when an intent stays open

    def change(
        self, contact_ids: Iterable[str], *, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> Changed:
        """Subscribe/unsubscribe users; enqueue the pushes and removals in one transaction."""
        return self.change_bulk(list(contact_ids), add=add, remove=remove)

    def change_bulk(
        self,
        contact_ids: list[str],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        records: dict[str, Record] | None = None,
        progress: Callable[[int], None] | None = None,
        chunk: int = 1000,
    ) -> Changed:
        """``change`` for thousands of contacts (the bulk menu actions).

        The subscription lists are written in ONE host transaction; then the contacts are read
        and every snapshot built, outside any transaction, and the pushes queued in outbox
        transactions of BULK_CHUNK changes each, so the host's own saves are never queued behind
        a long write (in ONE transaction without a journal, see below). The
        snapshots come after the write (``records``, read earlier by the caller, are not used
        for them): a save of another host instance that committed before the write saw the old
        list, so only a snapshot from after the write carries it to the new subscribers.

        The two stores cannot share a transaction, so the change is recorded first: an intent
        in the journal (on disk) before the lists are written, closed once all pushes are
        queued. A crash in between, or a queue that cannot be written, leaves the intent open
        and the replay completes it (``QueueDeferred`` is raised for the latter; the lists stay).
        Without a writable journal it queues in one transaction and falls back to putting the
        lists back on a queue error.

        Every selected user who is (now) subscribed gets a push, also where nothing changed:
        pressing "Exchange-Sync setzen" again repairs a missing item, and an unchanged content
        hash writes nothing in the mailbox. Removed users get a removal."""
        # The journal replay and the recovery sweep judge by the lists as they are: no list may
        # change between their reading and their queueing, or their pushes would overwrite these.
        with self.enqueue.recovery_lock, self._subscription_lock():
            return self._change_locked(contact_ids, add=add, remove=remove, progress=progress, chunk=chunk)

    def _change_locked(
        self,
        contact_ids: list[str],
        *,
        add: Iterable[str],
        remove: Iterable[str],
        progress: Callable[[int], None] | None,
        chunk: int,
    ) -> Changed:
        changed = subscriptions.plan_subscriptions(self.host.settings, contact_ids, add=add, remove=remove)
        enabled = self.enqueue.enabled_users()
        pushed = sorted((set(add) - set(remove)) & enabled)
        intent = self._open_intent(list(dict.fromkeys(contact_ids)), pushed, remove)
        try:
            subscriptions.write_subscriptions(self.host.settings, changed)
        except Exception:
            if intent is not None:
                self.journal.close_intent(intent)  # nothing was written
            raise
        try:
            # Snapshots only now, after the write (see above).
            self._enqueue_changes(contact_ids, changed, pushed, progress, chunk, bulk=intent is not None)
        except Exception as exc:
            if intent is None:
                subscriptions.write_subscriptions(self.host.settings, changed, undo=True)
                raise
            self.journal.abandon_intent(intent)
            self._journal_waiting()
            raise QueueDeferred(changed, str(exc)) from exc
        if intent is not None:
            self.journal.close_intent(intent)
        return changed

    def _open_intent(self, contact_ids: list[str], pushed: list[str], remove: Iterable[str]) -> str | None:
        """Record a subscription change before it is written (None: the journal cannot be
        written; the caller then keeps the old all-or-nothing behaviour)."""
        if not contact_ids:
            return None
        try:
            return self.journal.open_intent(
                {"contacts": contact_ids, "add": pushed, "remove": sorted(remove)}
            )
        except OSError:
            log.exception("Exchange-Sync: Journal nicht beschreibbar (%s)", self.journal.path)
            return None

    @contextlib.contextmanager
    def _subscription_lock(self) -> Iterator[None]:
        """Serialise subscription changes across the host instances that share this data
        directory. The lists are read, changed and written back whole (the settings store has
        no compare-and-set), so two instances changing one contact's list at once would lose
        one change; and the pushes must reach the queue in the order the lists were written,
        or a push queued late replaces the removal that followed it."""
        path = os.path.join(self.data_dir, SUBSCRIPTION_LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # also drops the flock

    def _read_contacts(self, contact_ids: list[str]) -> dict[str, Record]:
        if len(contact_ids) > 50:  # one scan beats thousands of single look-ups
            ids = set(contact_ids)
            return {r.id: r for r in self.host.iter_records("contact") if r.id in ids}
        found = {cid: self.host.get_record(RecordRef("contact", cid)) for cid in contact_ids}
        return {cid: r for cid, r in found.items() if r is not None}

    def _enqueue_changes(
        self,
        contact_ids: list[str],
        changed: Changed,
        pushed: list[str],
        progress: Callable[[int], None] | None,
        chunk: int,
        *,
        bulk: bool = False,
    ) -> None:
        """Queue the pushes and removals of a subscription change whose lists are written, each
        contact read from the host now (records read before the write may be older, or deleted).
        With ``bulk`` (an intent is open in the journal) in several transactions (EnqueuePath.put).

        These pushes carry no source version (a read has none), so they replace whatever is
        queued. A save of another instance that commits after the read and queues (it sees the
        new list) before this does would be overwritten by the older state; so the contacts are
        read again after queueing, and any that changed or vanished meanwhile are queued again
        (a vanished one as a removal), until a read finds what was queued: a save committed
        after that read queues after this, with its version."""
        wanted = [cid for cid in dict.fromkeys(contact_ids) if cid in changed or pushed]
        current = self._read_contacts(wanted)
        self.enqueue.put(self._changes(wanted, current, changed, pushed, progress, chunk), bulk=bulk)
        for _ in range(SUBSCRIPTION_REREADS):
            again = self._read_contacts(wanted)
            moved = [cid for cid in wanted if again.get(cid) != current.get(cid)]
            if not moved:
                return
            gone = {cid: current[cid] for cid in moved if cid not in again and cid in current}
            changes = list(self._changes(moved, again, changed, pushed, None, chunk))
            changes += [
                Change(u, record.ref.key, "delete", priority=PRIORITY_BULK)
                for record in gone.values()
                for u in pushed
            ]
            self.enqueue.put(changes, bulk=bulk)
            current = again
        log.warning("Exchange-Sync: Kontakte ändern sich laufend; die Abonnements werden nachgeholt.")

    def _changes(
        self,
        contact_ids: list[str],
        current: dict[str, Record],
        changed: Changed,
        pushed: list[str],
        progress: Callable[[int], None] | None,
        chunk: int,
    ) -> Iterator[Change]:
        """The changes contact by contact, as they are consumed (see ``EnqueuePath.put``)."""
        for n, cid in enumerate(contact_ids, start=1):
            # ``pushed`` users are on every selected contact's list afterwards, changed or not.
            record = current.get(cid)
            if record is not None:
                key = record.ref.key
                if pushed:
                    payload = self.enqueue.snapshot_payload(record)
                    yield from (Change(u, key, "upsert", payload, priority=PRIORITY_BULK) for u in pushed)
                before, after = changed.get(cid, ((), ()))
                yield from (
                    Change(u, key, "delete", priority=PRIORITY_BULK) for u in before if u not in after
                )
            if progress is not None and n % chunk == 0:
                progress(n)
