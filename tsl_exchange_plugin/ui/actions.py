"""Menu actions and tab buttons: Extras › Auswahl ändern › Exchange-Sync setzen / entfernen, Testen,
Jetzt erneut versuchen, Übertragene Elemente entfernen."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from tsl_hostapi.types import ActionResult, Host, MenuAction, RecordOutcome, RecordRef, SettingsField, User

from .. import PLUGIN_ID, signals
from .settings import CLEANUP_ACTION, DEFERRED_MESSAGE, RECONCILE_ACTION, RETRY_ACTION, TEST_ACTION

if TYPE_CHECKING:
    from ..core.runtime import SyncRuntime

SET_SYNC = f"{PLUGIN_ID}.set_sync"
REMOVE_SYNC = f"{PLUGIN_ID}.remove_sync"
MENU_PATH = ("Extras", "Auswahl ändern")
ASK_USERS = (SettingsField("users", "Für welche Benutzer?", "user_list", required=True),)
BULK_CHUNK = 1000  # contacts per progress step

bulk_progress = signals.ns.signal(
    "bulk-progress", doc="action_id, done: int, total: int (contacts handled so far in a bulk action)"
)
cleanup_progress = signals.ns.signal(
    "cleanup-progress",
    doc="done: int, total: int, user_id, outcome, message, removed: int (one mailbox finished)",
)

NOT_ADMIN = "Nur ein Administrator darf das."
log = logging.getLogger(__name__)


def menu(host: Host, user: User, view: str, selection: tuple[RecordRef, ...]) -> list[MenuAction]:
    if view != "contacts":
        return []
    return [
        MenuAction(PLUGIN_ID, SET_SYNC, "Exchange-Sync setzen", MENU_PATH, "contacts", True, ASK_USERS),
        MenuAction(PLUGIN_ID, REMOVE_SYNC, "Exchange-Sync entfernen", MENU_PATH, "contacts", True, ASK_USERS),
    ]


def run(
    host: Host,
    runtime: SyncRuntime | None,
    user: User,
    action_id: str,
    selection: tuple[RecordRef, ...],
    values: dict[str, Any],
) -> ActionResult:
    if runtime is None:
        return ActionResult(False, "Exchange-Sync ist nicht aktiv.")
    if action_id in (SET_SYNC, REMOVE_SYNC):
        return bulk_subscribe(runtime, user, action_id, selection, values)
    if action_id == RETRY_ACTION:
        return retry_now(runtime, user, values)
    if action_id == TEST_ACTION:
        from .connection_test import run_test

        return run_test(runtime, user, values)
    if action_id == CLEANUP_ACTION:
        return run_cleanup(runtime, user, values)
    if action_id == RECONCILE_ACTION:
        return reconcile_now(runtime, user, values)
    return ActionResult(False, f"Unbekannte Aktion: {action_id}")


# --------------------------------------------------------------------------- retry


def retry_now(runtime: SyncRuntime, user: User, values: dict[str, Any]) -> ActionResult:
    if not user.is_admin:
        return ActionResult(False, NOT_ADMIN)
    only = str(values.get("user_id") or "") or None
    unparked = 0
    for state in runtime.outbox.mailbox_states():
        if state.parked and (only is None or state.mailbox == only):
            runtime.outbox.unpark(state.mailbox)
            unparked += 1
    requeued = runtime.outbox.requeue_failed(only)
    runtime.admin.release_hold()
    held = runtime.admin.push_gate()
    if held:
        return ActionResult(False, f"Erneuter Versuch nicht möglich: {held}")
    return ActionResult(
        True,
        f"Die Übertragung wird jetzt erneut versucht ({unparked} Postfächer freigegeben, "
        f"{requeued} fehlgeschlagene Änderungen neu eingereiht).",
    )


# --------------------------------------------------------------------------- cleanup


def run_cleanup(runtime: SyncRuntime, user: User, values: dict[str, Any]) -> ActionResult:
    """Remove the items we created. ``values``: ``users`` (ids; default: every mailbox offered),
    ``all_mailboxes`` (the interface is being disabled: every mailbox, pushing held first),
    ``confirm_over_limit`` (allow deleting more than the guard's share of a folder)."""
    from ..core.cleanup import candidates, clean, known_mailboxes

    if not user.is_admin:
        return ActionResult(False, NOT_ADMIN)
    all_mailboxes = bool(values.get("all_mailboxes"))
    if all_mailboxes:
        targets = known_mailboxes(runtime)
        runtime.admin.hold(
            "Alle Übertragungen angehalten: die übertragenen Elemente werden entfernt, damit die "
            "Schnittstelle deaktiviert werden kann. „Jetzt erneut versuchen“ nimmt den Betrieb wieder auf."
        )
    else:
        targets = [str(u) for u in values.get("users") or ()] or [c.user_id for c in candidates(runtime)]
    if not targets:
        return ActionResult(True, "Es gibt keine Postfächer, in denen aufzuräumen wäre.")

    def progress(done: int, total: int, res: Any) -> None:
        cleanup_progress.send(
            runtime,
            done=done,
            total=total,
            user_id=res.user_id,
            outcome=res.outcome,
            message=res.message,
            removed=res.removed,
        )

    results = clean(
        runtime,
        targets,
        confirmed=bool(values.get("confirm_over_limit")),
        all_mailboxes=all_mailboxes,
        progress=progress,
    )
    status: dict[str, Literal["done", "unchanged", "failed"]] = {
        "done": "done",
        "nothing": "unchanged",
        "refused": "failed",
        "failed": "failed",
    }
    outcomes = tuple(
        RecordOutcome(RecordRef("user", r.user_id), status[r.outcome], f"{r.user_name}: {r.message}")
        for r in results
    )
    removed = sum(r.removed for r in results)
    bad = [r for r in results if r.outcome in ("refused", "failed")]
    message = f"{removed} Elemente aus {sum(1 for r in results if r.outcome == 'done')} Postfächern entfernt."
    if bad:
        message += f" {len(bad)} Postfächer nicht bereinigt (siehe Einzelergebnisse)."
    runtime.host.notify(f"Exchange-Sync: {message}", level="warning" if bad else "info")
    return ActionResult(not bad, message, outcomes)


# --------------------------------------------------------------------------- bulk subscribe


def bulk_subscribe(
    runtime: SyncRuntime,
    actor: User,
    action_id: str,
    selection: tuple[RecordRef, ...],
    values: dict[str, Any],
) -> ActionResult:
    """Set/remove Exchange Sync on every selected contact for the chosen users.

    Reads happen before, and outside, the one short write: the subscription lists are
    written in one transaction and the pushes queued in one more (the host's saves are
    never held up behind a long transaction). Progress goes out on ``bulk_progress``.
    """
    add = action_id == SET_SYNC
    users = {str(u) for u in values.get("users") or ()}
    if not users:
        return ActionResult(False, "Bitte mindestens einen Benutzer wählen.")
    if not actor.is_admin and users != {actor.id}:
        return ActionResult(False, "Sie dürfen Exchange-Sync nur für sich selbst setzen oder entfernen.")
    enabled = runtime.config.enabled_users()
    unknown = users - enabled
    if unknown and add:
        names = ", ".join(sorted(unknown))
        return ActionResult(
            False, f"Benutzer ohne aktives Exchange-Konto können nicht gewählt werden: {names}."
        )
    contact_ids = list(dict.fromkeys(ref.id for ref in selection if ref.kind == "contact"))
    existing = _existing_contacts(runtime, contact_ids)
    valid = [cid for cid in contact_ids if cid in existing]
    started = time.monotonic()
    bulk_progress.send(runtime, action_id=action_id, done=0, total=len(valid))
    notice = BulkNotices(runtime.host, actor, "Exchange-Sync setzen" if add else "Exchange-Sync entfernen")

    def progress(done: int) -> None:
        bulk_progress.send(runtime, action_id=action_id, done=done, total=len(valid))
        notice.step(done, len(valid))

    from ..core.subscribe import QueueDeferred

    deferred = False
    try:
        changed = runtime.subscriptions.change_bulk(
            valid,
            add=users if add else (),
            remove=() if add else users,
            records=existing,
            progress=progress,
            chunk=BULK_CHUNK,
        )
    except QueueDeferred as exc:  # saved; the journal completes the pushes when the queue is back
        changed, deferred = exc.changed, True
    except Exception as exc:  # nothing was written (one transaction); say so per record
        log.exception("Exchange-Sync: Sammeländerung fehlgeschlagen")
        reason = f"nicht geändert: {exc}"
        failures = tuple(
            RecordOutcome(ref, "failed", reason if ref.kind == "contact" else "Kein Kontakt")
            for ref in selection
        )
        return ActionResult(
            False, "Exchange-Sync konnte nicht geändert werden; nichts wurde gespeichert.", failures
        )
    bulk_progress.send(runtime, action_id=action_id, done=len(valid), total=len(valid))
    outcomes: list[RecordOutcome] = []
    reported: set[str] = set()
    for ref in selection:
        if ref.kind != "contact":
            outcomes.append(RecordOutcome(ref, "failed", "Kein Kontakt"))
        elif ref.id in reported:
            continue  # selected twice: reported once
        elif ref.id not in existing:
            outcomes.append(RecordOutcome(ref, "failed", "Kontakt existiert nicht (mehr)"))
        elif ref.id in changed:
            outcomes.append(RecordOutcome(ref, "done"))
        else:
            outcomes.append(
                RecordOutcome(ref, "unchanged", "bereits gesetzt" if add else "war nicht gesetzt")
            )
        if ref.kind == "contact":
            reported.add(ref.id)
    done = sum(1 for o in outcomes if o.status == "done")
    failed = sum(1 for o in outcomes if o.status == "failed")
    verb = "gesetzt" if add else "entfernt"
    message = f"Exchange-Sync für {done} von {len(selection)} Kontakten {verb}"
    if failed:
        message += f", {failed} fehlgeschlagen"
    message += f" ({time.monotonic() - started:.1f} s)."
    again = sum(1 for o in outcomes if o.status == "unchanged") if add else 0
    if again:
        message += f" {again} bereits gesetzte Kontakte werden erneut übertragen, falls sie fehlen."
    if deferred:
        message += f" {DEFERRED_MESSAGE}"
    return ActionResult(True, message, tuple(outcomes))


class BulkNotices:
    """Progress of a long bulk action for the user who started it.

    Host API 1.x has no progress channel: ``tsl_run_action`` returns only when the action is
    done, and ``Host.notify`` is the one way to tell a user something meanwhile. So a selection
    of more than ``BULK_NOTICE_FROM`` contacts reports each tenth of the way as one notice
    (never more than nine; the result says the rest), with counts and the rate. In-process
    observers get every step on ``bulk_progress``."""

    def __init__(
        self, host: Host, user: User, label: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._host, self._user, self._label, self._clock = host, user, label, clock
        self._started = clock()
        self._tenth = 0

    def step(self, done: int, total: int) -> None:
        if total <= BULK_NOTICE_FROM or done >= total:
            return
        tenth = done * 10 // total
        if tenth <= self._tenth:
            return
        self._tenth = tenth
        from .progress import number, rate

        elapsed = max(self._clock() - self._started, 1e-9)
        self._host.notify(
            f"{self._label}: {number(done)} von {number(total)} Kontakten vorbereitet "
            f"({done * 100 // total} %, {rate(done / elapsed)} Elemente/s). Die Übertragung in die "
            "Postfächer folgt in der Warteschlange.",
            user_id=self._user.id,
            level="info",
        )


BULK_NOTICE_FROM = 2 * BULK_CHUNK
"""Selections up to this size finish in a few seconds and get only their result."""


def _existing_contacts(runtime: SyncRuntime, contact_ids: list[str]) -> dict[str, Any]:
    """The selected contacts that exist, by id (the records are reused for the snapshots)."""
    if len(contact_ids) > 50:
        # One scan beats thousands of single look-ups.
        wanted = set(contact_ids)
        return {r.id: r for r in runtime.host.iter_records("contact") if r.id in wanted}
    found = {cid: runtime.host.get_record(RecordRef("contact", cid)) for cid in contact_ids}
    return {cid: r for cid, r in found.items() if r is not None}


# --------------------------------------------------------------------------- reconcile sweep


def reconcile_now(runtime: SyncRuntime, user: User, values: dict[str, Any]) -> ActionResult:
    """The Interfaces tab's button: sweep every mailbox (or ``user_id``) in the background."""
    if not user.is_admin:
        return ActionResult(False, NOT_ADMIN)
    only = str(values.get("user_id") or "") or None
    runtime.sweeper.request([only] if only else None)
    return ActionResult(
        True,
        "Der Abgleich der Postfächer läuft im Hintergrund, sobald die Warteschlange leer ist. "
        "Das Ergebnis und der Fristenabgleich erscheinen in der Statusansicht.",
    )
