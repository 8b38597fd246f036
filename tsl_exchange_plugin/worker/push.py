"""One batch for one mailbox: decide what to write, write it in bulk, record the outcome.

Rules (DESIGN.md, "Identity, exactly once"):
* An unchanged content hash writes nothing.
* A create whose earlier attempt may have reached the server (the job was claimed
  before, or failed with an unknown outcome) first looks its record key up in the
  mailbox; what it finds is updated instead of created, and surplus copies removed.
* ItemNotFound on update means the user deleted the item on the phone: create it again.
* A stale ChangeKey refreshes the ids by key and updates once more.
* Deletes remove the item we know plus anything else carrying the same key.
* An item answer that pauses the mailbox or the server (ErrorServerBusy or HTTP 429 for one
  request of a batch) stops the slice as a whole-request pause would: its job and the
  unfinished ones wait for the pause without counting an attempt.
* A request the server refuses as a whole for its content (``RequestRejected``: nothing of
  it was written) is split in halves and sent again until the item that causes it stands
  alone; that item is refused with the server's reason, the others are written.
* Any exception while planning or mapping one job fails that job (a mapping is pure, so the
  same snapshot fails the same way) or, for errors of the machine (a locked database), retries
  it; it never stops the other jobs of the batch.
* Fencing: the batch runs under its worker's claim. Before any re-write after a lookup or
  a conflict it checks that the lease is still held, and every outcome is recorded fenced.
  When the lease is gone, nothing is recorded; if a create or update was sent, the record
  is noted for verification, so the next holder looks it up and removes surplus copies.
* A "verify" job (or the flag on a job) looks the key up first: the copy the sync state
  names is kept, the others go.
The worker owns scheduling; this module raises nothing for per-item trouble and
lets whole-request errors (auth, transport) propagate after saving what was done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .. import signals
from ..backends import turns
from ..backends.base import (
    Conflict,
    ExchangeError,
    ItemClass,
    ItemNotFound,
    ItemRef,
    ItemRejected,
    MailboxSession,
    PerItem,
    RequestRejected,
    Resting,
    TransientError,
    Written,
)
from ..mapping.items import ExchangeItem, content_hash
from ..outbox.base import Claim, Job, LeaseLost, Outbox, SyncEntry
from ..outbox.snapshot import ITEM_CLASS_BY_KIND, Snapshot, SnapshotError, load

log = logging.getLogger(__name__)

Mapper = Callable[[Snapshot, str], list[ExchangeItem]]
"""(snapshot, mailbox) -> the Exchange items this record shows in that mailbox."""


@dataclass
class JobState:
    job: Job
    failed: str = ""  # permanent reason
    transient: str = ""  # try again later
    back_off: float | None = None
    pending: int = 0  # actions not yet confirmed
    # An item answer that asked the whole mailbox (or server) to rest, e.g. a throttled request
    # inside a batch: the job waits for that pause without counting an attempt.
    paused: TransientError | None = None


@dataclass
class _Action:
    state: JobState
    key: str
    item_class: str
    item: ExchangeItem | None = None
    sync: SyncEntry | None = None
    found: list[ItemRef] = field(default_factory=list)
    forget: bool = True  # a delete that also drops the sync entry (not so for surplus copies)
    lookup: bool = False  # a create that must first look for an earlier copy
    keep: str = ""  # a surplus sweep: the ItemId (named by the sync state) that stays

    def written_item(self) -> ExchangeItem:
        """What a create or an update writes (planning sets it for both)."""
        if self.item is None:
            raise ValueError(f"{self.key}: nothing to write")
        return self.item

    def target(self) -> ItemRef:
        """The item an update writes to (its sync entry, or the copy a lookup found)."""
        if self.sync is None:
            raise ValueError(f"{self.key}: update without a sync entry")
        return ItemRef(self.sync.item_id, self.sync.change_key)


# The folders a key can live in, from the names the queue stores.
_ITEM_CLASSES: dict[str, ItemClass] = {"contact": "contact", "calendar": "calendar", "task": "task"}


def item_class_of(key: str) -> str:
    kind = key.split(":", 1)[0]
    return ITEM_CLASS_BY_KIND.get(kind, "contact")


@dataclass
class BatchResult:
    done: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    retry: list[tuple[Job, str, float | None]] = field(default_factory=list)
    fatal: ExchangeError | None = None  # a whole-request error that stopped the batch
    lost: bool = False  # the lease was lost: nothing was recorded, the claim must stop
    # Not finished because the mailbox or its server was paused (``fatal.pause``): nothing
    # about these jobs themselves, so they wait for the pause without counting an attempt.
    interrupted: list[Job] = field(default_factory=list)


@dataclass
class _Fence:
    """One run's lease: the claim its writes are fenced with and the keeper's "lost" flag."""

    outbox: Outbox
    claim: Claim | None = None
    lost: threading.Event | None = None
    sent: list[str] = field(default_factory=list)  # record keys a create/update was sent for

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still held (before a re-write)."""
        if self.lost is not None and self.lost.is_set():
            raise LeaseLost("lease marked lost")
        if self.claim is not None and not self.outbox.check_lease(self.claim):
            raise LeaseLost(f"lease on {self.claim.mailbox!r} lost")


class Pusher:
    def __init__(self, outbox: Outbox, mapper: Mapper):
        self.outbox = outbox
        self.mapper = mapper

    # ------------------------------------------------------------------ planning
    def _plan(
        self, mailbox: str, jobs: Sequence[Job]
    ) -> tuple[list[JobState], list[_Action], list[_Action], list[_Action]]:
        states = [JobState(j) for j in jobs]
        known = self.outbox.get_sync(mailbox, [j.record_key for j in jobs])
        creates: list[_Action] = []
        updates: list[_Action] = []
        deletes: list[_Action] = []
        for st in states:
            try:
                planned = self._plan_job(mailbox, st, known)
            except Exception as exc:  # one job's trouble is that job's alone
                st.pending = 0
                if _may_pass(exc):
                    st.transient = f"Vorübergehender Fehler beim Vorbereiten ({type(exc).__name__}: {exc})"
                else:
                    log.exception("Exchange-Sync: Planung für %s fehlgeschlagen", st.job.record_key)
                    st.failed = _internal_reason(exc)
                continue
            if planned is None:
                continue
            creates.extend(planned[0])
            updates.extend(planned[1])
            deletes.extend(planned[2])
        return states, creates, updates, deletes

    def _plan_job(
        self, mailbox: str, st: JobState, known: dict[str, SyncEntry]
    ) -> tuple[list[_Action], list[_Action], list[_Action]] | None:
        """The actions of one job (creates, updates, deletes), or None if it failed in mapping."""
        creates: list[_Action] = []
        updates: list[_Action] = []
        deletes: list[_Action] = []
        job = st.job
        existing = {job.record_key: known[job.record_key]} if job.record_key in known else {}
        if job.record_key.startswith("deadline:"):
            # A deadline also owns its Vorfrist items ("deadline:4#vorfrist1", ...).
            extra = self.outbox.sync_keys(mailbox, job.record_key + "#")
            if extra:
                existing.update(self.outbox.get_sync(mailbox, extra))
        if job.op == "verify":
            # Nothing to write: find every copy of the record, keep the one the sync state names.
            for key in {job.record_key, *existing}:
                sync = existing.get(key)
                keep = sync.item_id if sync is not None else ""
                deletes.append(_Action(st, key, item_class_of(key), sync=sync, forget=False, keep=keep))
                st.pending += 1
            return creates, updates, deletes
        produced: dict[str, ExchangeItem] = {}
        if job.op == "upsert":
            try:
                snap = load(job.payload)
                for item in self.mapper(snap, mailbox):
                    produced[item.record_key] = item
            except (SnapshotError, ValueError) as exc:  # MappingError, settings: a German reason
                st.failed = str(exc)
                return None
            except Exception as exc:
                if _may_pass(exc):
                    raise
                # Mapping is pure: the same snapshot fails the same way on every attempt.
                log.exception("Exchange-Sync: Umwandlung von %s fehlgeschlagen", job.record_key)
                st.failed = _internal_reason(exc)
                return None
        maybe_written = job.claims > 1 or job.attempts > 0 or job.verify
        for key, item in produced.items():
            sync = existing.get(key)
            act = _Action(st, key, item.item_class, item=item, sync=sync)
            if sync is not None and job.verify:
                # A late write of a worker that lost its lease may have left a second copy.
                deletes.append(_Action(st, key, item.item_class, sync=sync, forget=False, keep=sync.item_id))
                st.pending += 1
            if sync is None:
                creates.append(act)
                act.lookup = maybe_written
            elif sync.content_hash != content_hash(item):
                updates.append(act)
            else:
                continue
            st.pending += 1
        for key, sync in existing.items():
            if key not in produced:
                deletes.append(_Action(st, key, sync.item_class or item_class_of(key), sync=sync))
                st.pending += 1
        if job.op == "delete" and job.record_key not in existing:
            # Unknown to us, yet an earlier create may have landed: look it up and remove it.
            deletes.append(_Action(st, job.record_key, item_class_of(job.record_key)))
            st.pending += 1
        return creates, updates, deletes

    # ------------------------------------------------------------------ running
    def run(
        self,
        mailbox: str,
        jobs: Sequence[Job],
        session: MailboxSession,
        *,
        fence: Claim | None = None,
        lost: threading.Event | None = None,
    ) -> BatchResult:
        """Push one slice. With ``fence`` (the worker's claim) every outcome is recorded only
        while that lease holds; ``lost`` is the keeper's flag for a lease it could not renew."""
        guard = _Fence(self.outbox, fence, lost)
        states, creates, updates, deletes = self._plan(mailbox, jobs)
        result = BatchResult()
        # Written ahead: if this process dies after Exchange applied an update or a delete and
        # before the outcome is recorded, the sync entry must not claim that the old item is
        # still there unchanged (a later upsert with that hash would write nothing, and the
        # item would stay missing or stale). An empty hash makes the next upsert write.
        doubtful = [
            replace(a.sync, content_hash="")
            for a in (*updates, *deletes)
            if a.sync is not None and not a.keep
        ]
        if doubtful:
            try:
                self.outbox.put_sync_many(doubtful, fence=fence)
            except LeaseLost:
                result.lost = True  # nothing was sent: nothing to note
                return result
        new_sync: list[SyncEntry] = []
        removed: list[tuple[str, str]] = []
        try:
            try:
                if self._lookups(session, creates, deletes, updates):
                    guard.check()
                self._do_deletes(mailbox, session, deletes, removed)
                self._do_updates(mailbox, session, updates, creates, new_sync, guard)
                self._do_creates(mailbox, session, creates, new_sync, guard)
            except ExchangeError as exc:
                result.fatal = exc
            paused = next((st.paused for st in states if st.paused is not None), None)
            if paused is not None and (result.fatal is None or isinstance(result.fatal, Resting)):
                # An item's answer paused the mailbox: that pause stops the claim, not a Resting
                # met by a later request of this slice (which says only that it was not sent).
                result.fatal = paused
        except LeaseLost:
            result.lost = True
        finally:
            # Whatever happened, what we know was written is recorded before anything else.
            done_jobs = [st.job for st in states if not st.failed and not st.transient and st.pending == 0]
            if not result.lost and (new_sync or removed or done_jobs):
                try:
                    with turns.waiting():  # the disk, not the CPU: another lane may build meanwhile
                        acked = self.outbox.complete_many(done_jobs, new_sync, removed, fence=fence)
                except LeaseLost:
                    result.lost = True
                else:
                    result.done = [j for j, ok in zip(done_jobs, acked, strict=True) if ok]
            if result.lost:
                self._lost(mailbox, guard)
        if result.lost:
            return result
        for st in states:
            if st.failed:
                result.failed.append((st.job, st.failed))
            elif st.transient:
                result.retry.append((st.job, st.transient, st.back_off))
        for st in states:
            if st.pending and not st.failed and not st.transient:
                if getattr(result.fatal, "pause", ""):
                    result.interrupted.append(st.job)
                    continue
                # Interrupted by a whole-request error: the worker reschedules these.
                back_off = getattr(result.fatal, "back_off", None)
                result.retry.append((st.job, str(result.fatal or "Übertragung unterbrochen"), back_off))
        return result

    def _lost(self, mailbox: str, guard: _Fence) -> None:
        """The lease is gone: record nothing, but if a create or update went out, leave a note
        so the next holder looks those records up (a late write may have left a copy)."""
        keys = sorted(set(guard.sent))
        log.warning(
            "Exchange-Sync: Postfach %s: Sperre verloren, %d Einträge werden vom nächsten Durchlauf geprüft",
            mailbox,
            len(keys),
        )
        if keys:
            self.outbox.note_verify(mailbox, keys)

    def _lookups(
        self, session: MailboxSession, creates: list[_Action], deletes: list[_Action], updates: list[_Action]
    ) -> bool:
        """Look keys up where needed; True if the mailbox was asked (so a re-write must check the lease)."""
        by_class: dict[str, list[_Action]] = defaultdict(list)
        for act in creates:
            if act.lookup:
                by_class[act.item_class].append(act)
        for act in deletes:
            by_class[act.item_class].append(act)
        for item_class, acts in by_class.items():
            found = session.find_by_keys(_ITEM_CLASSES[item_class], sorted({a.key for a in acts}))
            for act in acts:
                act.found = list(found.get(act.key, []))
        self._sweep_deleted_deadlines(session, deletes)
        # A create that finds its item becomes an update of the first copy; surplus copies go.
        for act in list(creates):
            if act.found:
                first, *rest = act.found
                creates.remove(act)
                act.sync = SyncEntry(
                    act.state.job.mailbox, act.key, first.item_id, first.change_key, "", act.item_class
                )
                updates.append(act)
                for ref in rest:
                    act.state.pending += 1
                    deletes.append(_Action(act.state, act.key, act.item_class, found=[ref], forget=False))
        return bool(by_class)

    @staticmethod
    def _sweep_deleted_deadlines(session: MailboxSession, deletes: list[_Action]) -> None:
        """A deleted deadline takes every Vorfrist item with it, also those whose create never
        answered (no sync entry, so their keys are unknown here): find them by key prefix."""
        jobs = {a.state.job.record_key: a.state for a in deletes if a.state.job.op == "delete"}
        prefixes = {key + "#": state for key, state in jobs.items() if key.startswith("deadline:")}
        if not prefixes:
            return
        covered = {a.key for a in deletes}
        for key, refs in session.find_all_ours("calendar").items():
            state = next((st for prefix, st in prefixes.items() if key.startswith(prefix)), None)
            if state is not None and key not in covered and refs:
                state.pending += 1
                deletes.append(_Action(state, key, "calendar", found=list(refs)))

    def _do_deletes(
        self, mailbox: str, session: MailboxSession, deletes: list[_Action], removed: list[tuple[str, str]]
    ) -> None:
        if not deletes:
            return
        refs: list[ItemRef] = []
        owners: list[_Action] = []
        for act in deletes:
            targets = {r.item_id: r for r in act.found if not act.keep or r.item_id != act.keep}
            if act.sync is not None and not act.keep and act.sync.item_id not in targets:
                targets[act.sync.item_id] = ItemRef(act.sync.item_id, act.sync.change_key)
            for ref in targets.values():
                refs.append(ref)
                owners.append(act)
            if not targets:
                act.state.pending -= 1
                if act.forget:
                    removed.append((mailbox, act.key))
        outcomes = session.delete(refs) if refs else []
        per_action: dict[int, list[ExchangeError | None]] = defaultdict(list)
        for act, outcome in zip(owners, outcomes, strict=True):
            per_action[id(act)].append(outcome)
        for act in deletes:
            outs = per_action.get(id(act))
            if outs is None:
                continue
            errors = [e for e in outs if e is not None and not isinstance(e, ItemNotFound)]
            if errors:
                self._item_error(act.state, errors[0])
            else:
                act.state.pending -= 1
                if act.forget:
                    removed.append((mailbox, act.key))
                signals.emit(
                    signals.push_succeeded, self, mailbox=mailbox, record_key=act.key, op="delete", item_id=""
                )

    def _do_updates(
        self,
        mailbox: str,
        session: MailboxSession,
        updates: list[_Action],
        creates: list[_Action],
        new_sync: list[SyncEntry],
        guard: _Fence,
        *,
        refreshed: bool = False,
    ) -> None:
        if not updates:
            return
        guard.sent.extend(a.state.job.record_key for a in updates)
        outcomes = self._isolating(
            updates,
            lambda acts: session.update([(a.target(), a.written_item()) for a in acts]),
        )
        conflicts: list[_Action] = []
        for act, outcome in outcomes:
            if isinstance(outcome, Written):
                self._written(mailbox, act, outcome, new_sync)
            elif isinstance(outcome, (Conflict, ItemNotFound)) and not refreshed:
                # A stale ChangeKey, or an item deleted on the phone: look the key up first, because
                # an earlier create of ours may have landed without its answer; recreate only if not.
                conflicts.append(act)
            elif isinstance(outcome, ItemNotFound):
                act.sync = None
                creates.append(act)
            else:
                self._item_error(act.state, outcome)
        if conflicts:
            by_class: dict[str, list[_Action]] = defaultdict(list)
            for act in conflicts:
                by_class[act.item_class].append(act)
            retry: list[_Action] = []
            for item_class, acts in by_class.items():
                found = session.find_by_keys(_ITEM_CLASSES[item_class], [a.key for a in acts])
                for act in acts:
                    refs = found.get(act.key) or []
                    match = next(
                        (r for r in refs if r.item_id == act.target().item_id), refs[0] if refs else None
                    )
                    if match is None:
                        act.sync = None
                        creates.append(act)
                    else:
                        act.sync = SyncEntry(
                            mailbox, act.key, match.item_id, match.change_key, "", act.item_class
                        )
                        retry.append(act)
            # The conflict may be the next holder's write: re-write only while the lease holds.
            guard.check()
            self._do_updates(mailbox, session, retry, creates, new_sync, guard, refreshed=True)

    def _do_creates(
        self,
        mailbox: str,
        session: MailboxSession,
        creates: list[_Action],
        new_sync: list[SyncEntry],
        guard: _Fence,
    ) -> None:
        if not creates:
            return
        guard.sent.extend(a.state.job.record_key for a in creates)
        outcomes = self._isolating(creates, lambda acts: session.create([a.written_item() for a in acts]))
        for act, outcome in outcomes:
            if isinstance(outcome, Written):
                self._written(mailbox, act, outcome, new_sync)
            else:
                self._item_error(act.state, outcome)

    def _written(self, mailbox: str, act: _Action, w: Written, new_sync: list[SyncEntry]) -> None:
        new_sync.append(
            SyncEntry(
                mailbox,
                act.key,
                w.item_id,
                w.change_key,
                content_hash(act.written_item()),
                act.item_class,
                time.time(),
                act.state.job.source_version,
            )
        )
        act.state.pending -= 1
        signals.emit(
            signals.push_succeeded, self, mailbox=mailbox, record_key=act.key, op="upsert", item_id=w.item_id
        )

    @staticmethod
    def _item_error(state: JobState, err: ExchangeError) -> None:
        if isinstance(err, TransientError) and err.pause:
            # Not this item's trouble: it stays pending and waits for the pause (see ``run``).
            if state.paused is None:
                state.paused = err
            return
        if isinstance(err, (TransientError, Conflict)):
            state.transient = str(err) or type(err).__name__
            state.back_off = getattr(err, "back_off", None)
        else:
            state.failed = str(err) or type(err).__name__

    def _isolating(
        self, acts: list[_Action], send: Callable[[list[_Action]], Sequence[PerItem]]
    ) -> list[tuple[_Action, PerItem]]:
        """``send`` the actions; (action, outcome) pairs, with requests refused as a whole split.

        Exchange validates a request before it processes any of it, so a request refused for
        its content (``RequestRejected``, raised, or reported for the members of one refused
        chunk) wrote nothing, and sending its halves again is safe. Halving goes on until the
        refused item stands alone: about 2·log2(n) more requests for one bad item in n, and the
        other items of the batch are written in the same claim instead of waiting with it.
        """
        try:
            outcomes = list(send(acts))
        except RequestRejected as err:
            outcomes = [err] * len(acts)
        pairs: list[tuple[_Action, PerItem]] = []
        refused: list[tuple[_Action, RequestRejected]] = []
        for act, outcome in zip(acts, outcomes, strict=True):
            if isinstance(outcome, RequestRejected):
                refused.append((act, outcome))
            else:
                pairs.append((act, outcome))
        if len(refused) == 1:
            act, rejected = refused[0]
            pairs.append(
                (
                    act,
                    ItemRejected(
                        f"{rejected} Nur dieser Eintrag ist betroffen: bitte die Angaben im Datensatz prüfen "
                        "und korrigieren; nach der Änderung wird er erneut übertragen."
                    ),
                )
            )
        elif refused:
            rest = [act for act, _ in refused]
            half = len(rest) // 2
            pairs += self._isolating(rest[:half], send)
            pairs += self._isolating(rest[half:], send)
        return pairs


def _may_pass(exc: BaseException) -> bool:
    """An error of the machine rather than of the record (a locked or unreachable database,
    I/O): trying the same job again later can succeed."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    return (type(exc).__module__ or "").split(".")[0] in ("sqlite3", "psycopg", "psycopg2")


def _internal_reason(exc: BaseException) -> str:
    return (
        f"Interner Fehler beim Umwandeln des Datensatzes ({type(exc).__name__}: {exc}). Der Eintrag "
        "wird nach der nächsten Änderung am Datensatz erneut versucht; bleibt der Fehler, bitte den "
        "Hersteller des Exchange-Sync informieren."
    )
