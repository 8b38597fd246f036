"""The plugin's state for one host: stores, accounts, the enqueue path and the worker.

``plugin.py`` creates one ``SyncRuntime`` per host in ``tsl_startup`` and hands every
hook over to it. The save path (``record_saved``) only reads the subscription list
and writes the queue in one short transaction; it never talks to Exchange.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from tsl_hostapi import serialize
from tsl_hostapi.types import Appointment, Deadline, Host, Record, RecordEvent, RecordRef, Reminder, User

from .. import PLUGIN_ID, logfile, signals
from ..backends.base import ExchangeBackend, MailboxAccount
from ..credentials import Vault
from ..mapping.context import MappingContext
from ..outbox import snapshot
from ..outbox.base import PRIORITY_BULK, PRIORITY_INTERACTIVE, Change, Outbox
from ..outbox.factory import open_outbox
from ..outbox.journal import Journal, JournalRecordUnusable
from ..worker.dispatch import make_mapper
from ..worker.runner import Worker, WorkerConfig
from . import shared_state, subscriptions
from .accounts import AccountStore, ExchangeSettings, backend_of

try:  # subscription changes of host instances on one data directory (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

QUEUE_URL_ENV = "TSL_EXCHANGE_QUEUE_URL"
FIRM_KEY = "firm"
SYNCED_KINDS = ("contact", "appointment", "deadline", "reminder")
FIRM_KEYS_SHOWN = (
    "done_deadline",
    "appointment_reminder_minutes",
    "deadline_reminder_minutes",
    "pre_deadline_reminder_minutes",
)


def _shown(s: ExchangeSettings) -> tuple:
    """The user settings that change how items look in the mailbox."""
    return (
        s.timezone,
        s.appointment_reminder_minutes,
        s.deadline_reminder_minutes,
        s.pre_deadline_reminder_minutes,
    )


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


class SyncRuntime:
    def __init__(
        self,
        host: Host,
        *,
        backend: ExchangeBackend | None = None,
        outbox: Outbox | None = None,
        worker_config: WorkerConfig | None = None,
        start_worker: bool = True,
    ):
        self.host = host
        self.data_dir = host.data_dir(PLUGIN_ID)
        logfile.attach(self.data_dir)  # exchange-sync.log, rotated, credentials scrubbed
        # Where a change waits when the queue cannot take it, and a subscription change's intent.
        self.journal = Journal.at(self.data_dir)
        self.journal_waiting: Callable[[], None] = lambda: None  # the plugin wakes its replay here
        self.recovery_lock = threading.RLock()  # subscription changes vs. journal replay and sweep
        self.vault = Vault.open(self.data_dir)
        self.accounts = AccountStore(host.settings, self.vault)
        self.outbox = outbox or open_outbox(self.queue_url(), self.data_dir)
        if backend is None:
            from ..backends.routing import RoutingBackend  # EWS or Graph per mailbox, each imported on use

            backend = RoutingBackend()
        self.backend = backend
        self.worker = Worker(
            self.outbox, backend, self.resolve_account, make_mapper(self.mapping_context), worker_config
        )
        self._enabled_cache: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._cache_lock = threading.Lock()
        self._init_admin()
        self._init_shared(publisher=start_worker)
        if start_worker and self.worker_mode() == "host":
            self.worker.start()
        self._init_reconcile(start_worker)

    # ------------------------------------------------------------------ configuration
    def firm_settings(self) -> dict:
        raw = self.host.settings.get(PLUGIN_ID, FIRM_KEY, {})
        return raw if isinstance(raw, dict) else {}

    def worker_mode(self) -> str:
        """Where pushing runs: "host" (default) in worker threads of this process, or
        "external" (firm setting ``worker``): this process only enqueues and separate
        ``tsl-exchange worker`` processes push. An unknown value counts as "host", so a
        typo never leaves the queue without a worker."""
        mode = self.firm_settings().get("worker", "host")
        if mode in ("host", "external"):
            return mode
        log.warning("Exchange-Sync: unbekannte Worker-Einstellung %r, es gilt 'host'.", mode)
        return "host"

    def queue_url(self) -> str | None:
        return os.environ.get(QUEUE_URL_ENV) or self.firm_settings().get("queue_url") or None

    def mapping_context(self, mailbox: str, snap: snapshot.Snapshot) -> MappingContext:
        """How a record looks in one user's mailbox: their time zone and lead times, the firm's rules.
        (Worker processes without a host build the same from the store: ``shared_state``.)"""
        recipient = snap.users.get(mailbox) or self.host.get_user(mailbox) or User(id=mailbox, name=mailbox)
        return shared_state.mapping_context(
            self.firm_settings(), self.accounts.load(mailbox), recipient, snap
        )

    def resolve_account(self, mailbox: str) -> MailboxAccount:
        return shared_state.resolve_account(
            mailbox,
            self.host.get_user(mailbox),
            self.accounts.load(mailbox),
            self.firm_settings(),
            self.vault,
        )

    def enabled_users(self) -> frozenset[str]:
        """Active users with Exchange Sync switched on (cached briefly: read on every save)."""
        with self._cache_lock:
            at, users = self._enabled_cache
            if time.monotonic() - at < 5.0:
                return users
        enabled = set(self.accounts.enabled_user_ids())
        users = frozenset(u.id for u in self.host.list_users() if u.active and u.id in enabled)
        with self._cache_lock:
            self._enabled_cache = (time.monotonic(), users)
        return users

    def _invalidate(self) -> None:
        with self._cache_lock:
            self._enabled_cache = (0.0, frozenset())

    def save_account(
        self, user_id: str, settings: ExchangeSettings, *, password: str | None = None
    ) -> ExchangeSettings:
        before = self.accounts.load(user_id)
        saved = self.accounts.save(user_id, settings, password=password)
        self._invalidate()
        self.publish_worker_state()  # before the unpark below wakes a worker in another process
        looks_different = _shown(saved) != _shown(before)
        if (
            saved.credentials_version != before.credentials_version
            or saved.enabled != before.enabled
            or looks_different
        ):
            # New credentials, a new account or a corrected time zone: a parked mailbox gets another chance.
            self.outbox.unpark(user_id)
            signals.mailbox_status_changed.send(self, mailbox=user_id, status="unparked", reason="")
        moved = saved.enabled and before.enabled and backend_of(saved) != backend_of(before)
        if moved:
            self._adopt_on_move(user_id)
        if saved.enabled and (not before.enabled or looks_different or moved):
            # A new zone or lead time changes how every item looks; unchanged ones are not rewritten.
            self.resync(user_id)
        if saved.enabled and not before.enabled and self.reconcile_auto():
            # A mailbox set up (again) may hold our items from before: compare once it is pushed.
            self.sweeper.request([user_id])
        self.worker.wake()
        return saved

    # ------------------------------------------------------------------ enqueue path
    def _snapshot_payload(self, record: Record) -> str:
        kind = record.ref.kind
        case = None
        users: dict[str, User] = {}
        if isinstance(record, (Appointment, Deadline, Reminder)):
            if record.case_id:
                case = self.host.get_record(RecordRef("case", record.case_id))
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
            payload = self._snapshot_payload(record)
            changes = [Change(u, key, "upsert", payload, version, priority) for u in wanted]
        for u in dict.fromkeys(also):
            if u not in wanted:
                changes.append(Change(u, key, "delete", "", version, priority))
        return changes

    def _enqueue(self, changes: list[Change]) -> None:
        changes = self._reachable(changes)
        if not changes:
            return
        self.outbox.enqueue(changes)
        signals.emit(signals.enqueued, self, changes=changes)  # a failing receiver must not undo a save
        self.worker.wake()

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

    def record_saved(self, event: RecordEvent) -> None:
        record = event.record
        if record is None or event.ref.kind not in SYNCED_KINDS:
            if event.ref.kind == "case" and record is not None:
                self.case_changed(event.ref.id)
            return
        holders = () if event.ref.kind == "contact" else self.outbox.holders(event.ref.key)
        changes = self.changes_for(record, also=holders, version=source_version(event))
        self._enqueue(changes)
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
        self._enqueue([Change(u, key, "delete", "", version) for u in sorted(targets)])

    def case_changed(self, case_id: str) -> None:
        """A renamed case re-pushes every item that shows it."""
        changes: list[Change] = []
        for kind in ("appointment", "deadline", "reminder"):
            for record in self.host.iter_records(kind):
                if getattr(record, "case_id", "") == case_id:
                    changes += self.changes_for(record)
        self._enqueue(changes)

    # ------------------------------------------------------------------ subscriptions
    def change_subscriptions(
        self, contact_ids: Iterable[str], *, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """Subscribe/unsubscribe users; enqueue the pushes and removals in one transaction."""
        return self.change_subscriptions_bulk(list(contact_ids), add=add, remove=remove)

    def resync(self, user_id: str) -> int:
        """Queue everything that concerns one user again; unchanged items are not rewritten."""
        return self._resync({user_id})

    def _resync(self, user_ids: set[str]) -> int:
        # One pass over the host's records for all users: each snapshot is built once.
        changes: list[Change] = []
        for kind in SYNCED_KINDS:
            for record in self.host.iter_records(kind):
                if user_ids.intersection(subscriptions.intended_recipients(self.host.settings, record)):
                    changes += [
                        c for c in self.changes_for(record, priority=PRIORITY_BULK) if c.mailbox in user_ids
                    ]
        self._enqueue(changes)
        return len(changes)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._stop_publisher()
        if getattr(self, "sweeper", None) is not None:
            self.sweeper.stop()
        self.worker.stop()
        self._close_admin()
        self.outbox.close()
        logfile.detach(self.data_dir)

    # Administration: the licence at run time, the firm's settings, the audit log, holding all pushes.
    def _init_admin(self) -> None:
        from ..audit import DEFAULT_RETENTION_DAYS, AuditLog
        from ..licence.gate import LicenceState

        self.licensing = LicenceState(self.host)
        self.admin_hold = ""  # German reason while an administrator holds all pushes (cleanup before disable)
        self.worker.gate = self.push_gate
        self.audit = AuditLog(
            self.data_dir,
            senders=lambda: (self.worker, self.worker.pusher),
            retention_days=lambda: self.firm_settings().get("audit_retention_days", DEFAULT_RETENTION_DAYS),
        ).listen()
        self.audit.purge()
        targets = self.firm_target_folders()
        folders = getattr(self.backend, "target_folders", None)
        if targets and isinstance(folders, dict) and not folders:
            folders.update(targets)  # read when a session opens its folders; takes effect from the start

    def push_gate(self) -> str | None:
        """For the worker: why every push is held now (licence ended, administrator's hold), or None.
        The hold is also read from the store: another host instance may have set it."""
        return self.admin_hold or self._stored_hold() or self.licensing.gate()

    def seat_problem(self, user_id: str) -> str | None:
        """Why switching Exchange Sync on for ``user_id`` would exceed the licence, or None."""
        active = {u.id for u in self.host.list_users() if u.active}
        return self.licensing.seat_problem(user_id, set(self.accounts.enabled_user_ids()) & active)

    def firm_target_folders(self) -> dict[str, str]:
        firm = self.firm_settings()
        name = str(firm.get("subfolder") or "").strip()
        if firm.get("target") == "subfolder" and name:
            return {"contact": name, "calendar": name, "task": name}
        return {}

    def save_firm_settings(self, values: dict) -> dict:
        before = self.firm_settings()
        merged = {**before, **values}
        self.host.settings.set(PLUGIN_ID, FIRM_KEY, merged)
        self.publish_worker_state()
        if any(before.get(k) != merged.get(k) for k in FIRM_KEYS_SHOWN):
            # How done deadlines and reminders look changed for everyone; the hash skips the rest.
            self._resync(set(self.enabled_users()))
        self.worker.wake()
        return merged

    def hold(self, reason: str) -> None:
        self.admin_hold = reason
        self._write_hold(reason)  # worker processes elsewhere read it before every claim
        signals.mailbox_status_changed.send(self, mailbox="*", status="held", reason=reason)

    def release_hold(self) -> None:
        if self._write_hold("") or self.admin_hold:
            self.admin_hold = ""
            self.licensing.invalidate()
            signals.mailbox_status_changed.send(self, mailbox="*", status="resumed", reason="")
        self.worker.wake()

    def change_subscriptions_bulk(
        self,
        contact_ids: list[str],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        records: dict[str, Record] | None = None,
        progress: Callable[[int], None] | None = None,
        chunk: int = 1000,
    ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        # The journal replay and the recovery sweep judge by the lists as they are: no list may
        # change between their reading and their queueing, or their pushes would overwrite these.
        with self.recovery_lock:
            return self._change_subscriptions_bulk(
                contact_ids, add=add, remove=remove, records=records, progress=progress, chunk=chunk
            )

    def _change_subscriptions_bulk(
        self,
        contact_ids: list[str],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        records: dict[str, Record] | None = None,
        progress: Callable[[int], None] | None = None,
        chunk: int = 1000,
    ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """``change_subscriptions`` for thousands of contacts (the bulk menu actions).

        The subscription lists are written in ONE host transaction; then the contacts are read
        and every snapshot built, outside any transaction, and the pushes queued in ONE outbox
        transaction, so the host's own saves are never queued behind a long write. The
        snapshots come after the write (``records``, read earlier by the caller, are not used
        for them): a save of another host instance that committed before the write saw the old
        list, so only a snapshot from after the write carries it to the new subscribers.

        The two stores cannot share a transaction, so the change is recorded first: an intent
        in the journal (on disk) before the lists are written, closed once the pushes are
        queued. A crash in between, or a queue that cannot be written, leaves the intent open
        and the replay completes it (``QueueDeferred`` is raised for the latter; the lists stay).
        Without a writable journal it falls back to putting the lists back on a queue error.

        Every selected user who is (now) subscribed gets a push, also where nothing changed:
        pressing "Exchange-Sync setzen" again repairs a missing item, and an unchanged content
        hash writes nothing in the mailbox. Removed users get a removal."""
        with self._subscription_lock():
            return self._change_subscriptions_locked(
                contact_ids, add=add, remove=remove, progress=progress, chunk=chunk
            )

    def _change_subscriptions_locked(
        self,
        contact_ids: list[str],
        *,
        add: Iterable[str],
        remove: Iterable[str],
        progress: Callable[[int], None] | None,
        chunk: int,
    ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        changed = subscriptions.plan_subscriptions(self.host.settings, contact_ids, add=add, remove=remove)
        enabled = self.enabled_users()
        pushed = sorted((set(add) - set(remove)) & enabled)
        intent = self._open_subscription_intent(list(dict.fromkeys(contact_ids)), pushed, remove)
        try:
            subscriptions.write_subscriptions(self.host.settings, changed)
        except Exception:
            if intent is not None:
                self.journal.close_intent(intent)  # nothing was written
            raise
        try:
            # Snapshots only now, after the write (see above).
            self._enqueue_subscription_changes(contact_ids, changed, pushed, progress, chunk)
        except Exception as exc:
            if intent is None:
                subscriptions.write_subscriptions(self.host.settings, changed, undo=True)
                raise
            self.journal.abandon_intent(intent)
            self.journal_waiting()
            raise QueueDeferred(changed, str(exc)) from exc
        if intent is not None:
            self.journal.close_intent(intent)
        return changed

    def _close_admin(self) -> None:
        self.audit.close()

    # --- host-less workers
    # What worker processes without a host read (shared_state.py): the host writes it at
    # startup, on every account, firm or hold change, and now and then in "external" mode.
    def _init_shared(self, *, publisher: bool) -> None:
        self._publish_lock = threading.Lock()
        self._publisher: tuple[threading.Thread, threading.Event] | None = None
        from ..outbox.sqlite import SQLiteOutbox

        if self.worker_mode() == "external" or not isinstance(self.outbox, SQLiteOutbox):
            # Several processes may push: each request also takes a slot in the store, so the
            # per-server limit holds for all of them together.
            if getattr(self.backend, "shared_slots", False) is None:
                self.backend.shared_slots = self.outbox  # type: ignore[attr-defined]
        try:
            self.publish_worker_state(full=True)
        except Exception:  # a store hiccup must not stop the host; the publisher tries again
            log.warning("Exchange-Sync: Einstellungen für die Worker nicht geschrieben", exc_info=True)
        if publisher and self.worker_mode() == "external":
            stop = threading.Event()
            thread = threading.Thread(
                target=self._publish_loop, args=(stop,), name="tsl-exchange-publisher", daemon=True
            )
            self._publisher = (thread, stop)
            thread.start()

    def publish_worker_state(self, *, full: bool = False) -> int:
        """Write the firm's rules, the licence and every user's account row into the store;
        with ``full``, also remove rows of users who no longer have settings. Unchanged rows
        are not rewritten. Returns how many rows changed."""
        with self._publish_lock:
            profiles: dict[str, shared_state.MailboxProfile] = {}
            for user in self.host.list_users():
                if isinstance(self.host.settings.get(PLUGIN_ID, f"user:{user.id}"), dict):
                    profiles[user.id] = shared_state.MailboxProfile(user, self.accounts.load(user.id))
            lic = self.host.licence(PLUGIN_ID)
            rows = shared_state.host_rows(self.firm_settings(), profiles, lic.document if lic else None)
            if full:
                for key in self.outbox.worker_rows(shared_state.MAILBOX_PREFIX):
                    rows.setdefault(key, None)
            return self.outbox.put_worker_rows(rows)

    def _publish_loop(self, stop: threading.Event) -> None:
        while not stop.wait(shared_state.PUBLISH_EVERY):
            try:
                self.publish_worker_state(full=True)
            except Exception:
                log.warning("Exchange-Sync: Einstellungen für die Worker nicht geschrieben", exc_info=True)

    def _stop_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher[1].set()
            publisher[0].join(5.0)

    def _write_hold(self, reason: str) -> int:
        return self.outbox.put_worker_rows(shared_state.hold_row(reason))

    def _stored_hold(self) -> str:
        try:
            return shared_state.hold_reason(self.outbox)
        except Exception:  # the store is unreachable: the claim that follows fails the same way
            log.debug("reading the hold failed", exc_info=True)
            return ""

    # --- journal: no silent drop, subscription intents, recovery after an unclean stop
    def _open_subscription_intent(
        self, contact_ids: list[str], pushed: list[str], remove: Iterable[str]
    ) -> str | None:
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

    def apply_journal(self, rec: dict) -> None:
        """Replay one journal record (see ``outbox/journal.py``) into the queue."""
        with self.recovery_lock:
            self._apply_journal(rec)

    def _apply_journal(self, rec: dict) -> None:
        kind = rec.get("t")
        if kind == "intent":
            self._complete_intent(rec)
            return
        event = event_from_journal(self.host, rec)
        if kind == "saved":
            self.record_saved(event)
        elif kind == "deleted":
            self.record_deleted(event)

    def _complete_intent(self, rec: dict) -> None:
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
                payload = self._snapshot_payload(record)
                changes += [Change(u, key, "upsert", payload) for u in users]
            changes += [Change(u, key, "delete") for u in gone]
        self._enqueue(changes)

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
        self._enqueue(changes)
        return len(changes)

    # --- Microsoft Graph
    def _adopt_on_move(self, user_id: str) -> None:
        """The mailbox moved between EWS and Graph: every item is written once more through the new
        backend. Clearing the content hashes makes the resync rewrite them; the stored ids belong to
        the old backend, so the new one finds each item by its record key and updates it in place."""
        keys = self.outbox.sync_keys(user_id)
        if keys:
            entries = self.outbox.get_sync(user_id, keys)
            self.outbox.put_sync_many([replace(e, content_hash="") for e in entries.values()])

    def graph_credentials_changed(self) -> None:
        """New app credentials for Microsoft 365: every parked Graph mailbox gets another chance."""
        for user_id in self.accounts.enabled_user_ids():
            if self.accounts.load(user_id).uses_graph:
                self.outbox.unpark(user_id)
                signals.mailbox_status_changed.send(self, mailbox=user_id, status="unparked", reason="")
        self.worker.wake()

    def _recheck_subscribers(self, record: Record, queued: list[Change], version: int) -> None:
        """A contact save queued its pushes for the subscription list as it read it. Another
        instance may have changed the list since and queued its own pushes or removals before
        this save's: read the list again and queue, with this save's version, a removal for
        each user no longer on it (it replaces this save's push) and a push for each new one."""
        pushed = {c.mailbox for c in queued if c.op == "upsert"}
        now = set(subscriptions.subscribers(self.host.settings, record.id)) & self.enabled_users()
        if pushed != now:
            self._enqueue(self.changes_for(record, also=sorted(pushed - now), version=version))

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

    def _enqueue_subscription_changes(
        self,
        contact_ids: list[str],
        changed: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
        pushed: list[str],
        progress: Callable[[int], None] | None,
        chunk: int,
    ) -> None:
        """Queue the pushes and removals of a subscription change whose lists are written, each
        contact read from the host now (records read before the write may be older, or deleted).

        These pushes carry no source version (a read has none), so they replace whatever is
        queued. A save of another instance that commits after the read and queues (it sees the
        new list) before this does would be overwritten by the older state; so the contacts are
        read again after queueing, and any that changed or vanished meanwhile are queued again
        (a vanished one as a removal), until a read finds what was queued: a save committed
        after that read queues after this, with its version."""
        wanted = [cid for cid in dict.fromkeys(contact_ids) if cid in changed or pushed]
        current = self._read_contacts(wanted)
        self._enqueue(self._subscription_changes(wanted, current, changed, pushed, progress, chunk))
        for _ in range(SUBSCRIPTION_REREADS):
            again = self._read_contacts(wanted)
            moved = [cid for cid in wanted if again.get(cid) != current.get(cid)]
            if not moved:
                return
            gone = {cid: current[cid] for cid in moved if cid not in again and cid in current}
            changes = self._subscription_changes(moved, again, changed, pushed, None, chunk)
            changes += [
                Change(u, record.ref.key, "delete", priority=PRIORITY_BULK)
                for record in gone.values()
                for u in pushed
            ]
            self._enqueue(changes)
            current = again
        log.warning("Exchange-Sync: Kontakte ändern sich laufend; die Abonnements werden nachgeholt.")

    def _subscription_changes(
        self,
        contact_ids: list[str],
        current: dict[str, Record],
        changed: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
        pushed: list[str],
        progress: Callable[[int], None] | None,
        chunk: int,
    ) -> list[Change]:
        changes: list[Change] = []
        for n, cid in enumerate(contact_ids, start=1):
            # ``pushed`` users are on every selected contact's list afterwards, changed or not.
            record = current.get(cid)
            if record is not None:
                key = record.ref.key
                if pushed:
                    payload = self._snapshot_payload(record)
                    changes += [Change(u, key, "upsert", payload, priority=PRIORITY_BULK) for u in pushed]
                before, after = changed.get(cid, ((), ()))
                changes += [
                    Change(u, key, "delete", priority=PRIORITY_BULK) for u in before if u not in after
                ]
            if progress is not None and n % chunk == 0:
                progress(n)
        return changes

    # --- reconcile sweep
    def _init_reconcile(self, start: bool) -> None:
        from .fidelity import FidelityBackend
        from .reconcile import Reconciler, Sweeper

        # Pushes work around what the server fidelity probe found (recreate instead of update).
        self.worker.backend = FidelityBackend(self.backend, self)

        self.reconciler = Reconciler(self)
        self.sweeper = Sweeper(self)
        if start:  # also with external workers: the sweep only reads and queues
            self.sweeper.start()
            if self.reconcile_auto():
                # Started or enabled (again): what changed while the plugin was off arrives now.
                self.sweeper.request(None)

    def reconcile_auto(self) -> bool:
        """Firm setting ``reconcile_auto`` (default on): sweep after enabling and after an account is set up."""
        return self.firm_settings().get("reconcile_auto", True) is not False


SUBSCRIPTION_LOCK_FILE = "subscriptions.lock"
SUBSCRIPTION_REREADS = 5
"""How often a subscription change reads its contacts again when saves keep changing them."""


class QueueDeferred(Exception):
    """A subscription change was saved, but its pushes could not be queued yet; the journal
    holds the intent and the replay queues them when the queue is back."""

    def __init__(self, changed: dict, reason: str) -> None:
        super().__init__(reason)
        self.changed = changed


def event_to_journal(event: RecordEvent, hook: str) -> dict:
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


def event_from_journal(host: Host, rec: dict) -> RecordEvent:
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
