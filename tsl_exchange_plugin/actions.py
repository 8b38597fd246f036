"""Menu actions and tab buttons: Extras › Auswahl ändern › Exchange-Sync setzen / entfernen, Testen, Retry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tsl_hostapi.types import ActionResult, Host, MenuAction, RecordOutcome, RecordRef, SettingsField, User

from . import PLUGIN_ID
from .settings import RETRY_ACTION, TEST_ACTION

if TYPE_CHECKING:
    from .runtime import SyncRuntime

SET_SYNC = f"{PLUGIN_ID}.set_sync"
REMOVE_SYNC = f"{PLUGIN_ID}.remove_sync"
MENU_PATH = ("Extras", "Auswahl ändern")
ASK_USERS = (SettingsField("users", "Für welche Benutzer?", "user_list", required=True),)


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
        return _bulk_subscribe(runtime, action_id == SET_SYNC, selection, values)
    if action_id == RETRY_ACTION:
        if not user.is_admin:
            return ActionResult(False, "Nur ein Administrator darf das.")
        for state in runtime.outbox.mailbox_states():
            if state.parked:
                runtime.outbox.unpark(state.mailbox)
        runtime.worker.wake()
        return ActionResult(True, "Die Übertragung wird jetzt erneut versucht.")
    if action_id == TEST_ACTION:
        from .connection_test import run_test

        return run_test(runtime, user, values)
    return ActionResult(False, f"Unbekannte Aktion: {action_id}")


def _bulk_subscribe(
    runtime: SyncRuntime, add: bool, selection: tuple[RecordRef, ...], values: dict
) -> ActionResult:
    users = {str(u) for u in values.get("users") or ()}
    if not users:
        return ActionResult(False, "Bitte mindestens einen Benutzer wählen.")
    enabled = runtime.enabled_users()
    unknown = users - enabled
    contact_ids = [ref.id for ref in selection if ref.kind == "contact"]
    outcomes = [RecordOutcome(ref, "failed", "Kein Kontakt") for ref in selection if ref.kind != "contact"]
    if unknown and add:
        return ActionResult(False, "Benutzer ohne aktives Exchange-Konto können nicht gewählt werden.")
    changed = runtime.change_subscriptions(contact_ids, add=users if add else (), remove=() if add else users)
    for cid in contact_ids:
        ref = RecordRef("contact", cid)
        if cid in changed:
            outcomes.append(RecordOutcome(ref, "done"))
        else:
            outcomes.append(
                RecordOutcome(ref, "unchanged", "bereits gesetzt" if add else "war nicht gesetzt")
            )
    done = sum(1 for o in outcomes if o.status == "done")
    verb = "gesetzt" if add else "entfernt"
    return ActionResult(
        True, f"Exchange-Sync für {done} von {len(selection)} Kontakten {verb}.", tuple(outcomes)
    )
