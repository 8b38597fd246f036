"""The "Testen" button: a real round trip, not a login ping.

It connects with the entered credentials, creates a probe contact carrying our
property and deletes it again. Green only if all of that worked.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tsl_hostapi.types import ActionResult, User

from .exchange.base import ExchangeError, Written
from .mapping.items import ContactItem
from .settings import may_edit_user

if TYPE_CHECKING:
    from .runtime import SyncRuntime


def run_test(runtime: SyncRuntime, actor: User, values: dict[str, Any]) -> ActionResult:
    user_id = str(values.get("user_id") or actor.id)
    if not may_edit_user(actor, user_id):
        return ActionResult(
            False, "Keine Berechtigung für das Exchange-Konto dieses Benutzers.", status_icon="red"
        )
    user = runtime.host.get_user(user_id)
    if user is None:
        return ActionResult(False, "Benutzer nicht gefunden.", status_icon="red")
    try:
        account = runtime.accounts.mailbox_account(user)
    except Exception as exc:
        return ActionResult(False, str(exc), status_icon="red")
    session = runtime.backend.session(account)
    probe = ContactItem(
        record_key=f"probe:{uuid.uuid4().hex}",
        display_name="timeSensor Verbindungstest",
        file_as="timeSensor Verbindungstest",
        surname="Verbindungstest",
    )
    try:
        created = session.create([probe])[0]
        if not isinstance(created, Written):
            raise created
        from .exchange.base import ItemRef

        errors = [e for e in session.delete([ItemRef(created.item_id, created.change_key)]) if e is not None]
        if errors:
            raise errors[0]
    except ExchangeError as exc:
        return ActionResult(False, f"Verbindungstest fehlgeschlagen: {exc}", status_icon="red")
    finally:
        session.close()
    return ActionResult(
        True, "Verbindung erfolgreich: Anmeldung, Schreiben und Löschen funktionieren.", status_icon="green"
    )
