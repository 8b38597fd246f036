"""Removing what the plugin put into mailboxes: offered, confirmed by an administrator, guarded.

When a user loses Exchange access (account switched off, user deactivated or gone),
or before the interface is disabled, the administrator is offered to remove every
item the plugin created there. Only items that carry our property (``tslRecordId``)
are touched; anything the user made by hand stays. A guard refuses to delete more
than a set share (firm setting ``cleanup_max_percent``, default 50 %) of any one
folder in one sweep unless the administrator confirms exactly that.

A mailbox whose user still syncs is not cleaned (the worker would push everything
back) unless the whole interface is being wound down (``all_mailboxes``), in which
case the runtime holds all pushing first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tsl_hostapi.types import User

from .. import PLUGIN_ID
from ..backends.base import ExchangeError, ItemClass, ItemNotFound, ItemRef, MailboxSession

if TYPE_CHECKING:
    from .parts import CoreParts

DEFAULT_MAX_PERCENT = 50
ITEM_CLASSES: tuple[ItemClass, ...] = ("contact", "calendar", "task")
FOLDER_LABELS = {"contact": "Kontakte", "calendar": "Kalender", "task": "Aufgaben"}


@dataclass(frozen=True)
class Candidate:
    """A mailbox that may hold our items although its user no longer syncs."""

    user_id: str
    user_name: str
    reason: str  # German: why it is offered


@dataclass(frozen=True)
class MailboxCleanup:
    user_id: str
    user_name: str
    outcome: str  # "done", "refused", "failed", "nothing"
    found: int = 0
    removed: int = 0
    message: str = ""


def max_percent(runtime: CoreParts) -> int:
    value = runtime.config.firm_settings().get("cleanup_max_percent", DEFAULT_MAX_PERCENT)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        return DEFAULT_MAX_PERCENT
    return value


def _access_problem(runtime: CoreParts, user_id: str) -> str:
    user = runtime.host.get_user(user_id)
    if user is None:
        return "Benutzer gelöscht"
    if not user.active:
        return "Benutzer deaktiviert"
    if not runtime.accounts.load(user_id).enabled:
        return "Exchange-Sync für den Benutzer abgeschaltet"
    return ""


def known_mailboxes(runtime: CoreParts) -> list[str]:
    """Every mailbox the plugin may have written to: stored accounts and queue/sync state."""
    ids = {key.split(":", 1)[1] for key in runtime.host.settings.keys(PLUGIN_ID, "user:")}
    ids |= {s.mailbox for s in runtime.outbox.mailbox_states()}
    return sorted(ids)


def candidates(runtime: CoreParts) -> list[Candidate]:
    """Mailboxes without access that still hold items we wrote (by our sync state)."""
    out = []
    for uid in known_mailboxes(runtime):
        problem = _access_problem(runtime, uid)
        if problem and runtime.outbox.sync_keys(uid):
            user = runtime.host.get_user(uid)
            out.append(Candidate(uid, user.name if user else uid, problem))
    return out


def _session(runtime: CoreParts, user_id: str) -> MailboxSession:
    user = runtime.host.get_user(user_id) or User(id=user_id, name=user_id)
    settings = runtime.accounts.load(user_id)
    if not settings.uses_graph and (not settings.host or not settings.has_password):
        raise ValueError(f"Für {user.name} sind keine Exchange-Zugangsdaten mehr gespeichert.")
    # The account may be switched off: cleaning up still needs its stored credentials (for a
    # Microsoft 365 mailbox, the firm's app registration).
    account = runtime.accounts.mailbox_account(
        user, replace(settings, enabled=True), firm=runtime.config.firm_settings()
    )
    return runtime.backend.session(account)


def clean_mailbox(runtime: CoreParts, user_id: str, *, confirmed: bool) -> MailboxCleanup:
    user = runtime.host.get_user(user_id)
    name = user.name if user else user_id
    limit = max_percent(runtime)
    try:
        session = _session(runtime, user_id)
    except Exception as exc:  # missing or undecryptable credentials: German message, no secret
        return MailboxCleanup(user_id, name, "failed", message=str(exc))
    try:
        found: dict[str, list[ItemRef]] = {}
        over: list[str] = []
        for item_class in ITEM_CLASSES:
            refs = [r for rs in session.find_all_ours(item_class).values() for r in rs]
            found[item_class] = refs
            if not refs:
                continue
            total = session.folder_count(item_class)
            if total and len(refs) * 100 > limit * total:
                over.append(
                    f"{FOLDER_LABELS[item_class]}: {len(refs)} von {total} ({len(refs) * 100 // total} %)"
                )
        count = sum(len(r) for r in found.values())
        if count == 0:
            _forget(runtime, user_id)
            return MailboxCleanup(
                user_id, name, "nothing", message="Keine von Exchange-Sync angelegten Elemente."
            )
        if over and not confirmed:
            return MailboxCleanup(
                user_id,
                name,
                "refused",
                found=count,
                message=(
                    f"Nicht entfernt: das wäre mehr als {limit} % eines Ordners ({'; '.join(over)}). "
                    "Bitte ausdrücklich bestätigen („Mehr als den Grenzwert löschen“), wenn das gewollt ist."
                ),
            )
        removed = 0
        errors: list[str] = []
        for refs in found.values():
            if not refs:
                continue
            for err in session.delete(refs):
                if err is None or isinstance(err, ItemNotFound):
                    removed += 1
                else:
                    errors.append(str(err))
    except ExchangeError as exc:
        return MailboxCleanup(user_id, name, "failed", message=f"Exchange meldet: {exc}")
    finally:
        session.close()
    if errors:
        return MailboxCleanup(
            user_id, name, "failed", count, removed, f"{removed} von {count} entfernt; Fehler: {errors[0]}"
        )
    _forget(runtime, user_id)
    return MailboxCleanup(user_id, name, "done", count, removed, f"{removed} Elemente entfernt.")


def _forget(runtime: CoreParts, user_id: str) -> None:
    """What we wrote is gone: drop the sync state so a later re-activation creates afresh."""
    for key in runtime.outbox.sync_keys(user_id):
        runtime.outbox.delete_sync(user_id, key)


def clean(
    runtime: CoreParts,
    user_ids: list[str],
    *,
    confirmed: bool,
    all_mailboxes: bool,
    progress: Callable[[int, int, MailboxCleanup], None] | None = None,
) -> list[MailboxCleanup]:
    results: list[MailboxCleanup] = []
    for n, uid in enumerate(user_ids, start=1):
        if not all_mailboxes and not _access_problem(runtime, uid):
            user = runtime.host.get_user(uid)
            res = MailboxCleanup(
                uid,
                user.name if user else uid,
                "refused",
                message="Der Benutzer synchronisiert noch; erst Exchange-Sync für ihn abschalten.",
            )
        else:
            res = clean_mailbox(runtime, uid, confirmed=confirmed)
        results.append(res)
        if progress is not None:
            progress(n, len(user_ids), res)
    return results
