"""The reconcile sweep: make each mailbox hold what the host says it should, and keep it so.

The queue makes a change arrive once; this sweep makes the mailbox stay right. Per mailbox:

1. What the host says the mailbox should hold: every record that concerns the user, mapped
   exactly as the worker maps it, with its content hash.
2. What the mailbox holds of ours: a paged FindItem restricted to our extended property
   (Graph: the same property as a ``$filter``; To Do tasks by their linked resource), reading
   only the record key and ChangeKey (and the all-day date of calendar items for the parity
   report). Items without our key are never listed, so never touched. EWS and Graph mailboxes
   are swept alike (``SweepSession`` of each backend).
3. Compare with the sync state:
   - no item and no sync entry: missing, pushed;
   - a sync entry but no item: deleted on the phone, recreated or reported (firm setting
     ``phone_edits``: "restore" = wiederherstellen, "report" = nur melden);
   - a different content hash: the host changed while nothing pushed (plugin disabled), pushed;
   - an item but no (or another) sync entry: adopted, then pushed;
   - the same hash but another ChangeKey: something changed the item. Only these are read in
     full (the fields we own); if an owned field differs it was changed on the phone: restored
     (the sync entry's hash is cleared so the pusher rewrites it) or reported; if not, the new
     ChangeKey is stored so the next sweep does not read it again;
   - our items whose record no longer concerns the mailbox: orphans, removed; surplus copies of
     one key (only one is what the sync state points to) are removed too.
4. Repairs go through the same queue and worker with priority 2 (lowest); removals honour the
   cleanup guard (no more than ``cleanup_max_percent`` of a folder without confirmation).
5. Progress per mailbox lives in the host's settings store: a sweep that crashed resumes with
   the folders it had not finished.

Runs: on a schedule (firm setting ``reconcile_time``, default 02:30 local time; empty = off),
on demand (``tsl-exchange reconcile``, the Interfaces tab's button), and once after the
plugin is enabled or a user's account is switched on (firm setting ``reconcile_auto``).
After each run the deadline parity report (``parity.py``) is published.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tsl_hostapi.types import Deadline, Record

from .. import PLUGIN_ID, signals
from ..backends.base import ExchangeError, ItemRef, OwnedRef
from ..mapping.items import CalendarEntry, ExchangeItem, content_hash
from ..outbox import snapshot
from ..outbox.base import PRIORITY_RECONCILE, Change, SyncEntry
from ..worker.push import item_class_of
from . import subscriptions
from .cleanup import FOLDER_LABELS, max_percent
from .parity import ParityDiff, ParityReport, publish

if TYPE_CHECKING:
    from .parts import CoreParts

log = logging.getLogger(__name__)

SWEEP_PRIORITY = PRIORITY_RECONCILE  # the lowest: a user's own save goes first
PROBE_EVERY = 20 * 3600.0  # seconds: the nightly sweep probes each server about once a day
PROGRESS_KEY = "reconcile:{}"
ITEM_CLASSES = ("contact", "calendar", "task")
READ_CHUNK = 100
DEFAULT_TIME = "02:30"
NEXT_KEY = "reconcile:next"  # {"time": the setting it was planned for, "next": ISO local time}
PHONE_EDIT_MODES = ("restore", "report")
SYNCED_KINDS = ("contact", "appointment", "deadline", "reminder")

FIELD_LABELS = {
    "subject": "Betreff",
    "body": "Text",
    "categories": "Kategorien",
    "start": "Beginn",
    "end": "Ende",
    "is_all_day": "ganztägig",
    "legacy_free_busy_status": "Frei/Gebucht",
    "location": "Ort",
    "reminder_is_set": "Erinnerung",
    "reminder_minutes_before_start": "Erinnerungszeit",
    "reminder_due_by": "Erinnerungszeit",
    "due_date": "Fälligkeit",
    "start_date": "Beginn",
    "status": "Status",
    "percent_complete": "Erledigt-Anteil",
    "display_name": "Anzeigename",
    "file_as": "Speichern unter",
    "given_name": "Vorname",
    "middle_name": "zweiter Vorname",
    "surname": "Nachname",
    "company_name": "Firma",
    "email_addresses": "E-Mail-Adressen",
    "phone_numbers": "Telefonnummern",
    "physical_addresses": "Anschriften",
    "birthday": "Geburtstag",
}


@dataclass(frozen=True)
class Finding:
    """One thing the sweep found in a mailbox."""

    kind: str  # missing, changed, adopted, phone_edit, phone_delete, orphan, surplus, refused
    record_key: str
    detail: str = ""  # German
    repaired: bool = False  # False: only reported (or a dry run)


@dataclass(frozen=True)
class SweepReport:
    mailbox: str
    user_name: str
    outcome: str  # "done", "failed", "skipped"
    started_at: float
    finished_at: float
    dry_run: bool = False
    checked: int = 0  # items of ours compared
    full_reads: int = 0  # items read in full because their ChangeKey differed
    findings: tuple[Finding, ...] = ()
    message: str = ""  # German
    deadlines_checked: int = 0
    parity: tuple[ParityDiff, ...] = ()

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    def summary(self) -> str:
        if self.outcome != "done":
            return f"{self.user_name}: {self.message}"
        parts = []
        labels = {
            "missing": "fehlten",
            "changed": "veraltet",
            "adopted": "ohne Zuordnung",
            "phone_edit": "am Telefon geändert",
            "phone_delete": "am Telefon gelöscht",
            "orphan": "überzählig",
            "surplus": "doppelt",
            "refused": "nicht entfernt (Grenzwert)",
        }
        for kind, label in labels.items():
            n = self.count(kind)
            if n:
                parts.append(f"{n} {label}")
        what = ", ".join(parts) if parts else "alles stimmt"
        verb = " (Probelauf, nichts geändert)" if self.dry_run else ""
        return f"{self.user_name}: {self.checked} Elemente geprüft, {what}{verb}."


@dataclass
class _Expected:
    record: Record
    item: ExchangeItem
    hash: str


@dataclass
class _Plan:
    upserts: dict[str, Record] = field(default_factory=dict)  # record key -> record
    deletes: list[str] = field(default_factory=list)  # item keys
    sync_puts: list[SyncEntry] = field(default_factory=list)
    sync_drops: list[str] = field(default_factory=list)
    surplus: list[ItemRef] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    parity: list[ParityDiff] = field(default_factory=list)
    deadlines: int = 0
    checked: int = 0
    full_reads: int = 0


def base_key(item_key: str) -> str:
    """The host record an item key belongs to: ``deadline:9#vorfrist2`` -> ``deadline:9``."""
    return item_key.split("#", 1)[0]


def phone_edit_mode(runtime: CoreParts) -> str:
    mode = runtime.config.firm_settings().get("phone_edits", "restore")
    return mode if mode in PHONE_EDIT_MODES else "restore"


def differing_fields(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Owned fields whose value in the mailbox is not what the plugin writes. Categories the
    user added are theirs (only a missing category of ours counts)."""
    out = []
    for name, want in expected.items():
        have = actual.get(name)
        if name == "categories":
            if set(want or ()) - set(have or ()):
                out.append(name)
        elif want != have:
            out.append(name)
    return out


def _labels(fields: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(FIELD_LABELS.get(f, f) for f in fields))


class Reconciler:
    """Runs sweeps for one runtime; one at a time per process."""

    def __init__(self, runtime: CoreParts):
        self.runtime = runtime
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ expected state
    def _expected(self, user_id: str) -> dict[str, _Expected]:
        return self.expected_view(user_id)[0]

    def expected_view(self, user_id: str) -> tuple[dict[str, _Expected], set[str]]:
        """(item key -> what the mailbox should hold, record keys that cannot be mapped now).

        A record the host holds with invalid data (a Vorfrist after its Frist, an unknown zone)
        fails in the queue with its reason; its items stay as they were: the sweep never removes
        a deadline because its newest version cannot be shown."""
        runtime = self.runtime
        mapper = runtime.worker.pusher.mapper
        out: dict[str, _Expected] = {}
        unmappable: set[str] = set()
        for kind in SYNCED_KINDS:
            for record in runtime.host.iter_records(kind):
                if user_id not in subscriptions.intended_recipients(runtime.host.settings, record):
                    continue
                try:
                    snap = snapshot.load(runtime.enqueue.snapshot_payload(record))
                    items = mapper(snap, user_id)
                except (snapshot.SnapshotError, ValueError):
                    unmappable.add(record.ref.key)
                    continue
                for item in items:
                    out[item.record_key] = _Expected(record, item, content_hash(item))
        return out, unmappable

    # ------------------------------------------------------------------ one mailbox
    def sweep_mailbox(self, user_id: str, *, dry_run: bool = False, confirmed: bool = False) -> SweepReport:
        runtime = self.runtime
        started = time.time()
        user = runtime.host.get_user(user_id)
        name = user.name if user else user_id
        if user_id not in runtime.config.enabled_users():
            return SweepReport(
                user_id,
                name,
                "skipped",
                started,
                time.time(),
                dry_run,
                message="Exchange-Sync ist nicht aktiviert.",
            )
        try:
            account = runtime.config.resolve_account(user_id)
        except Exception as exc:  # noqa: BLE001 - German reason from the account store
            return SweepReport(user_id, name, "failed", started, time.time(), dry_run, message=str(exc))
        progress = self._progress(user_id)
        if dry_run or progress.get("finished_at") or not progress.get("run"):
            progress = {"run": uuid.uuid4().hex, "started_at": started, "done": []}
        if not dry_run:
            self._save_progress(user_id, progress)
        plan = _Plan()
        mode = phone_edit_mode(runtime)
        busy = {base_key(j.record_key) for j in runtime.outbox.jobs(user_id)}
        expected, unmappable = self.expected_view(user_id)
        busy |= unmappable
        session = runtime.backend.session(account)
        if not hasattr(session, "iter_ours"):
            session.close()
            return SweepReport(
                user_id,
                name,
                "skipped",
                started,
                time.time(),
                dry_run,
                message="Der Abgleich ist für diese Schnittstelle nicht verfügbar.",
            )
        try:
            for item_class in ITEM_CLASSES:
                if item_class in progress["done"]:
                    continue
                cls_plan = _Plan()
                self._sweep_class(session, user_id, item_class, expected, busy, mode, confirmed, cls_plan)
                if not dry_run:
                    self._apply(session, user_id, cls_plan)
                    progress["done"].append(item_class)
                    self._save_progress(user_id, progress)
                _merge(plan, cls_plan)
        except ExchangeError as exc:
            report = SweepReport(
                user_id,
                name,
                "failed",
                started,
                time.time(),
                dry_run,
                plan.checked,
                plan.full_reads,
                tuple(plan.findings),
                f"Abgleich unterbrochen, Exchange meldet: {exc} Er wird beim nächsten Lauf fortgesetzt.",
            )
            if not dry_run:
                runtime.outbox.record_error(user_id, str(exc))
            return report
        finally:
            session.close()
        finished = time.time()
        if not dry_run:
            progress["finished_at"] = finished
            self._save_progress(user_id, progress)
            runtime.outbox.record_success(user_id)  # the server answered every request of the sweep
        report = SweepReport(
            user_id,
            name,
            "done",
            started,
            finished,
            dry_run,
            plan.checked,
            plan.full_reads,
            tuple(plan.findings),
            deadlines_checked=plan.deadlines,
            parity=tuple(plan.parity),
        )
        if not dry_run:
            runtime.host.settings.set(
                PLUGIN_ID,
                PROGRESS_KEY.format(user_id),
                {**progress, "summary": report.summary(), "findings": len(report.findings)},
            )
        signals.sweep_done.send(self, report=report)
        return report

    def _sweep_class(
        self,
        session: Any,
        user_id: str,
        item_class: str,
        expected: dict[str, _Expected],
        busy: set[str],
        mode: str,
        confirmed: bool,
        plan: _Plan,
    ) -> None:
        outbox = self.runtime.outbox
        found: dict[str, list[OwnedRef]] = {}
        for page in session.iter_ours(item_class):
            for ref in page:
                found.setdefault(ref.record_key, []).append(ref)
        keys = [k for k in outbox.sync_keys(user_id) if item_class_of(k) == item_class]
        syncs = outbox.get_sync(user_id, keys) if keys else {}
        wanted = {k: e for k, e in expected.items() if e.item.item_class == item_class}
        restore = mode == "restore"
        candidates: list[tuple[str, OwnedRef, SyncEntry]] = []
        for key, exp in wanted.items():
            refs = found.get(key, [])
            sync = syncs.get(key)
            if base_key(key) in busy:
                continue  # a queued change for this record is on its way; it decides
            plan.checked += 1
            primary = None
            if refs:
                primary = next((r for r in refs if sync and r.item_id == sync.item_id), refs[0])
                for ref in refs:
                    if ref is not primary:
                        plan.surplus.append(ItemRef(ref.item_id, ref.change_key))
                        plan.findings.append(Finding("surplus", key, "doppeltes Element entfernt", True))
            parity_at = len(plan.parity)
            self._parity(user_id, key, exp, primary, plan)
            if primary is None:
                if sync is None:
                    plan.upserts[base_key(key)] = exp.record
                    plan.findings.append(Finding("missing", key, "fehlte im Postfach", True))
                else:
                    plan.findings.append(Finding("phone_delete", key, "am Telefon gelöscht", restore))
                    if restore:
                        plan.sync_drops.append(key)
                        plan.upserts[base_key(key)] = exp.record
                self._mark_repairing(plan, parity_at, key)
                continue
            if sync is None or sync.item_id != primary.item_id:
                plan.sync_puts.append(
                    SyncEntry(user_id, key, primary.item_id, primary.change_key, "", item_class, time.time())
                )
                plan.upserts[base_key(key)] = exp.record
                plan.findings.append(Finding("adopted", key, "im Postfach gefunden, neu zugeordnet", True))
            elif sync.content_hash != exp.hash:
                plan.upserts[base_key(key)] = exp.record
                plan.findings.append(Finding("changed", key, "in timeSensor geändert", True))
            elif sync.change_key != primary.change_key:
                candidates.append((key, primary, sync))
            self._mark_repairing(plan, parity_at, key)
        for start in range(0, len(candidates), READ_CHUNK):
            chunk = candidates[start : start + READ_CHUNK]
            plan.full_reads += len(chunk)
            got = session.read_owned(item_class, [ItemRef(r.item_id, r.change_key) for _, r, _ in chunk])
            for (key, ref, sync), actual in zip(chunk, got, strict=True):
                if isinstance(actual, ExchangeError):
                    continue  # gone meanwhile: the next sweep sees it missing
                diff = differing_fields(session.owned_values(wanted[key].item), actual)
                if not diff:
                    plan.sync_puts.append(dataclasses.replace(sync, change_key=ref.change_key))
                    continue
                plan.findings.append(
                    Finding("phone_edit", key, f"am Telefon geändert: {_labels(diff)}", restore)
                )
                if restore:
                    # Clearing the hash makes the pusher rewrite the item although the host is unchanged.
                    plan.sync_puts.append(
                        dataclasses.replace(sync, change_key=ref.change_key, content_hash="")
                    )
                    plan.upserts[base_key(key)] = wanted[key].record
                    for n, parity_diff in enumerate(plan.parity):
                        if parity_diff.record_key == key:
                            plan.parity[n] = dataclasses.replace(parity_diff, repairing=True)
        orphans = [k for k in found if k not in wanted and base_key(k) not in busy]
        removals = sum(len(found[k]) for k in orphans) + len(plan.surplus)
        if removals:
            total = session.folder_count(item_class)
            limit = max_percent(self.runtime)
            if total and removals * 100 > limit * total and not confirmed:
                message = (
                    f"{FOLDER_LABELS[item_class]}: {removals} von {total} Elementen wären zu entfernen, mehr als "
                    f"{limit} %. Nicht entfernt; bitte prüfen und den Abgleich ausdrücklich bestätigen."
                )
                plan.findings.append(Finding("refused", "", message, False))
                plan.surplus.clear()
                plan.findings = [f for f in plan.findings if f.kind != "surplus"]
                orphans = []
        for key in orphans:
            plan.deletes.append(key)
            plan.findings.append(Finding("orphan", key, "gehört nicht (mehr) in dieses Postfach", True))
        for key in syncs:
            if key not in wanted and key not in found and base_key(key) not in busy:
                plan.sync_drops.append(key)  # nothing left of it: forget it

    @staticmethod
    def _mark_repairing(plan: _Plan, at: int, key: str) -> None:
        if len(plan.parity) > at and base_key(key) in plan.upserts:
            plan.parity[at] = dataclasses.replace(plan.parity[at], repairing=True)

    def _parity(self, user_id: str, key: str, exp: _Expected, primary: OwnedRef | None, plan: _Plan) -> None:
        record, item = exp.record, exp.item
        if not isinstance(record, Deadline) or record.done or not isinstance(item, CalendarEntry):
            return
        if item.start_date is None:
            return
        plan.deadlines += 1
        host_date = item.start_date.isoformat()
        mailbox_date = primary.start_date if primary else ""
        if mailbox_date == host_date:
            return
        case_number = ""
        if record.case_id:
            from tsl_hostapi.types import RecordRef

            case = self.runtime.host.get_record(RecordRef("case", record.case_id))
            case_number = getattr(case, "file_number", "") if case else ""
        user = self.runtime.host.get_user(user_id)
        plan.parity.append(
            ParityDiff(
                user_id,
                user.name if user else user_id,
                key,
                "Vorfrist" if "#" in key else "Frist",
                case_number,
                host_date,
                mailbox_date,
            )
        )

    def _apply(self, session: Any, user_id: str, plan: _Plan) -> None:
        runtime = self.runtime
        # The host may have changed while the mailbox was read (a record deleted and its removal
        # pushed meanwhile): a repair for a record that is gone, no longer concerns this user or
        # has a change queued now is left out, so the sweep never brings a deleted item back.
        busy_now = {base_key(j.record_key) for j in runtime.outbox.jobs(user_id)}
        for key, record in list(plan.upserts.items()):
            current = runtime.host.get_record(record.ref)
            if (
                key in busy_now
                or current is None
                or user_id not in subscriptions.intended_recipients(runtime.host.settings, current)
            ):
                del plan.upserts[key]
        plan.deletes = [k for k in plan.deletes if base_key(k) not in busy_now]
        if plan.sync_puts:
            runtime.outbox.put_sync_many(plan.sync_puts)
        for key in plan.sync_drops:
            runtime.outbox.delete_sync(user_id, key)
        if plan.surplus:
            # Copies the sync state does not point to (a create retried after a lost answer):
            # removed at once; what the queue pushes always targets the one we keep.
            session.delete(plan.surplus)
        changes = [
            Change(user_id, key, "upsert", runtime.enqueue.snapshot_payload(record), priority=SWEEP_PRIORITY)
            for key, record in plan.upserts.items()
        ]
        changes += [Change(user_id, key, "delete", priority=SWEEP_PRIORITY) for key in plan.deletes]
        if changes:
            runtime.enqueue.put(changes)

    # ------------------------------------------------------------------ progress
    def _progress(self, user_id: str) -> dict[str, Any]:
        raw = self.runtime.host.settings.get(PLUGIN_ID, PROGRESS_KEY.format(user_id))
        if not isinstance(raw, dict) or not isinstance(raw.get("done"), list):
            return {}
        return dict(raw)

    def _save_progress(self, user_id: str, progress: dict[str, Any]) -> None:
        self.runtime.host.settings.set(PLUGIN_ID, PROGRESS_KEY.format(user_id), progress)

    def last_summary(self, user_id: str) -> str:
        return str(self._progress(user_id).get("summary", ""))

    def _probe_servers(self, ids: list[str]) -> None:
        """The server fidelity probe once per server of this run (its outcome is stored per server)."""
        from .fidelity import check_account, stored

        seen: set[str] = set()
        for uid in ids:
            try:
                account = self.runtime.config.resolve_account(uid)
            except Exception:  # noqa: BLE001 - the mailbox sweep reports it
                continue
            if account.server in seen or getattr(account, "backend", "ews") != "ews":
                continue
            seen.add(account.server)
            last = stored(self.runtime, account.server)
            if last is not None and time.time() - last.at < PROBE_EVERY:
                continue  # a server's behaviour changes with an upgrade, not by the hour
            try:
                check_account(self.runtime, account)
            except ExchangeError as exc:
                log.warning("Exchange-Sync: Prüfung des Servers %s fehlgeschlagen: %s", account.server, exc)

    # ------------------------------------------------------------------ a run
    def sweep(
        self,
        user_ids: Iterable[str] | None = None,
        *,
        dry_run: bool = False,
        confirmed: bool = False,
        progress: Callable[[int, int, SweepReport], None] | None = None,
    ) -> list[SweepReport]:
        """Sweep the given mailboxes (default: every enabled one), then publish the parity report.
        ``progress(done, total, report)`` after each mailbox (the command line's bar)."""
        with self._lock:
            ids = sorted(user_ids) if user_ids is not None else sorted(self.runtime.config.enabled_users())
            if not dry_run:
                self._probe_servers(ids)
            reports = []
            for uid in ids:
                reports.append(self.sweep_mailbox(uid, dry_run=dry_run, confirmed=confirmed))
                if progress is not None:
                    progress(len(reports), len(ids), reports[-1])
            done = [r for r in reports if r.outcome == "done"]
            if done and not dry_run:
                publish(
                    self.runtime,
                    ParityReport(
                        time.time(),
                        sum(r.deadlines_checked for r in done),
                        tuple(r.mailbox for r in done),
                        tuple(d for r in done for d in r.parity),
                    ),
                )
            return reports


def _merge(into: _Plan, part: _Plan) -> None:
    into.findings += part.findings
    into.parity += part.parity
    into.deadlines += part.deadlines
    into.checked += part.checked
    into.full_reads += part.full_reads


# ---------------------------------------------------------------------- schedule


def parse_time(value: object) -> dt.time | None:
    """ "02:30" -> 02:30; empty or invalid -> None (no scheduled sweep)."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        hours, minutes = text.split(":")
        return dt.time(int(hours), int(minutes))
    except ValueError:
        return None


def next_run(now: dt.datetime, at: dt.time) -> dt.datetime:
    """The next local time ``at`` strictly after ``now`` (naive local datetimes)."""
    candidate = dt.datetime.combine(now.date(), at)
    if candidate <= now:
        candidate = dt.datetime.combine(now.date() + dt.timedelta(days=1), at)
    return candidate


class Sweeper:
    """Background sweeps: the nightly schedule and the automatic ones (after enabling the plugin
    or switching a user's account on). A requested mailbox is swept once its queue is drained,
    so the sweep compares a settled mailbox and does not race the pushes just queued."""

    def __init__(
        self,
        runtime: CoreParts,
        reconciler: Reconciler,
        *,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
    ):
        self.runtime = runtime
        self.reconciler = reconciler
        self.clock = clock
        self._cv = threading.Condition()
        self._wanted: set[str] = set()
        self._stop = False
        self._running = False
        self._thread: threading.Thread | None = None
        self.runs = 0  # finished runs, for tests and the status view
        self._receiver = self._on_batch
        signals.batch_done.connect(self._receiver)
        signals.queue_drained.connect(self._receiver)

    def _on_batch(self, sender: object, **extra: object) -> None:
        with self._cv:
            self._cv.notify_all()

    def start(self) -> Sweeper:
        self._thread = threading.Thread(target=self._loop, name="tsl-exchange-sweeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        signals.batch_done.disconnect(self._receiver)
        signals.queue_drained.disconnect(self._receiver)

    def request(self, user_ids: Iterable[str] | None = None) -> None:
        """Sweep these mailboxes (None: every enabled one) as soon as their queues are drained."""
        # Resolved now: "every enabled mailbox" means those enabled when the sweep was asked for.
        ids = set(self.runtime.config.enabled_users()) if user_ids is None else set(user_ids)
        with self._cv:
            self._wanted |= ids
            self._cv.notify_all()

    def _due(self) -> tuple[set[str] | None, float]:
        """(mailboxes to sweep now or None, seconds to wait otherwise). Called under the lock."""
        ready = {u for u in self._wanted if self.runtime.outbox.pending_count(u) == 0}
        if ready:
            return ready, 0.0
        setting = str(self.runtime.config.firm_settings().get("reconcile_time", DEFAULT_TIME) or "")
        at = parse_time(setting)
        wait = 60.0 if self._wanted else 300.0  # a safety net: a batch or a request wakes us sooner
        if at is not None:
            now = self.clock()
            stored_next = self.runtime.host.settings.get(PLUGIN_ID, NEXT_KEY)
            if not isinstance(stored_next, dict) or stored_next.get("time") != setting:
                # First start, or the administrator moved the time: plan from now.
                stored_next = {"time": setting, "next": next_run(now, at).isoformat()}
                self.runtime.host.settings.set(PLUGIN_ID, NEXT_KEY, stored_next)
            due = dt.datetime.fromisoformat(stored_next["next"])
            if now >= due:
                # Stored before the run: a crash during it does not repeat it at once.
                self.runtime.host.settings.set(
                    PLUGIN_ID, NEXT_KEY, {"time": setting, "next": next_run(now, at).isoformat()}
                )
                self._wanted |= set(self.runtime.config.enabled_users())
                return None, 0.0
            wait = min(wait, max(1.0, (due - now).total_seconds()))
        return None, wait

    def _loop(self) -> None:
        while True:
            with self._cv:
                if self._stop:
                    return
                try:
                    ready, wait = self._due()
                except Exception:  # a closed store at shutdown; the loop ends with stop()
                    log.debug("Exchange-Sync: Abgleich-Planung fehlgeschlagen", exc_info=True)
                    ready, wait = None, 5.0
                if not ready:
                    if wait:
                        self._cv.wait(wait)
                    continue
                self._wanted -= ready
                self._running = True
            try:
                self.reconciler.sweep(ready)
            except Exception:  # never kill the thread; the next run tries again
                log.exception("Exchange-Sync: Abgleich fehlgeschlagen")
            with self._cv:
                self._running = False
                self.runs += 1
                self._cv.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no requested sweep is outstanding (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._wanted or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))
        return True
