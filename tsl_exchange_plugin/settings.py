"""Settings tabs: User Editor › Exchange, contact file › Sync, Admin › Schnittstellen.

Declarative tabs with German labels; load never returns a stored password; save
validates and answers field errors the host shows beside the fields.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tsl_hostapi.types import (
    Choice,
    FieldError,
    Host,
    SaveResult,
    SettingsButton,
    SettingsContext,
    SettingsField,
    SettingsTab,
    SettingsValues,
    User,
)

from . import PLUGIN_ID, subscriptions
from .accounts import AccountError, ews_url, public_view

if TYPE_CHECKING:
    from .runtime import SyncRuntime

USER_TAB = f"{PLUGIN_ID}.user"
CONTACT_TAB = f"{PLUGIN_ID}.contact"
INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
TEST_ACTION = f"{PLUGIN_ID}.test_connection"
RETRY_ACTION = f"{PLUGIN_ID}.retry_now"

AUTH_CHOICES = (Choice("auto", "Automatisch"), Choice("ntlm", "NTLM"), Choice("basic", "Basic"))

USER_FIELDS = (
    SettingsField("enabled", "Exchange-Synchronisation aktiv", "checkbox"),
    SettingsField("host", "Host", "text", help="z. B. mail.kanzlei.de oder die vollständige EWS-Adresse"),
    SettingsField("username", "Benutzername", "text", help="E-Mail-Adresse oder DOMÄNE\\Benutzer"),
    SettingsField(
        "password", "Passwort", "password", help="Wird verschlüsselt gespeichert und nie angezeigt"
    ),
    SettingsField("auth_type", "Authentifizierung", "select", choices=AUTH_CHOICES),
    SettingsField("timezone", "Zeitzone", "text"),
    SettingsField("allow_insecure", "Unsichere Verbindung zulassen (nur Administrator)", "checkbox"),
    SettingsField("status", "Status", "status", read_only=True),
)


class NotAllowed(Exception):
    pass


def may_edit_user(actor: User, user_id: str) -> bool:
    """Only an administrator or the user themself may see or change a user's Exchange tab."""
    return actor.is_admin or actor.id == user_id


def tabs(host: Host, user: User, scope: str) -> list[SettingsTab]:
    if scope == "user":
        return [
            SettingsTab(
                PLUGIN_ID, USER_TAB, "Exchange", "user", USER_FIELDS, (SettingsButton(TEST_ACTION, "Testen"),)
            )
        ]
    if scope == "contact":
        return [
            SettingsTab(
                PLUGIN_ID,
                CONTACT_TAB,
                "Sync",
                "contact",
                (SettingsField("users", "Erhält diesen Kontakt", "user_list"),),
            )
        ]
    if scope == "interfaces" and user.is_admin:
        return [
            SettingsTab(
                PLUGIN_ID,
                INTERFACES_TAB,
                "Exchange-Synchronisation",
                "interfaces",
                (SettingsField("mailboxes", "Postfächer", "table", read_only=True),),
                (SettingsButton(RETRY_ACTION, "Jetzt erneut versuchen"),),
            )
        ]
    return []


def _exchange_users(host: Host, runtime: SyncRuntime | None) -> list[User]:
    enabled = runtime.enabled_users() if runtime else frozenset()
    return [u for u in host.list_users() if u.id in enabled]


def load(
    host: Host, runtime: SyncRuntime | None, actor: User, tab_id: str, ctx: SettingsContext
) -> SettingsValues:
    if runtime is None:
        return SettingsValues({}, status="Exchange-Sync ist nicht aktiv.")
    if tab_id == USER_TAB:
        if not may_edit_user(actor, ctx.object_id):
            return SettingsValues({}, status="Keine Berechtigung für das Exchange-Konto dieses Benutzers.")
        values = public_view(runtime.accounts.load(ctx.object_id))
        states = {s.mailbox: s for s in runtime.outbox.mailbox_states()}
        state = states.get(ctx.object_id)
        status = ""
        if state is not None and state.parked:
            status = f"Angehalten: {state.parked_reason}"
        elif state is not None and state.last_error:
            status = f"Letzter Fehler: {state.last_error}"
        values["status"] = status
        return SettingsValues(values, status=status)
    if tab_id == CONTACT_TAB:
        current = set(subscriptions.subscribers(host.settings, ctx.object_id))
        users = _exchange_users(host, runtime)
        return SettingsValues(
            {"users": [{"id": u.id, "name": u.name, "checked": u.id in current} for u in users]}
        )
    if tab_id == INTERFACES_TAB:
        from .status import mailbox_rows

        return SettingsValues({"mailboxes": [row.as_dict() for row in mailbox_rows(host, runtime)]})
    return SettingsValues({}, status="Unbekannter Reiter.")


def save(
    host: Host,
    runtime: SyncRuntime | None,
    actor: User,
    tab_id: str,
    ctx: SettingsContext,
    values: dict[str, Any],
) -> SaveResult:
    if runtime is None:
        return SaveResult(False, message="Exchange-Sync ist nicht aktiv.")
    if tab_id == USER_TAB:
        return _save_user(runtime, actor, ctx.object_id, values)
    if tab_id == CONTACT_TAB:
        wanted = {str(u) for u in values.get("users") or ()}
        allowed = {u.id for u in _exchange_users(host, runtime)}
        unknown = wanted - allowed
        if unknown:
            return SaveResult(
                False,
                (FieldError("users", "Benutzer ohne Exchange-Konto können nicht gewählt werden."),),
            )
        before = set(subscriptions.subscribers(host.settings, ctx.object_id))
        runtime.change_subscriptions([ctx.object_id], add=wanted - before, remove=(before - wanted) & allowed)
        return SaveResult(True, message="Gespeichert.")
    return SaveResult(False, message="Dieser Reiter hat nichts zu speichern.")


def _save_user(runtime: SyncRuntime, actor: User, user_id: str, values: dict[str, Any]) -> SaveResult:
    if not may_edit_user(actor, user_id):
        return SaveResult(False, message="Keine Berechtigung für das Exchange-Konto dieses Benutzers.")
    current = runtime.accounts.load(user_id)
    errors: list[FieldError] = []
    new = replace(
        current,
        enabled=bool(values.get("enabled", current.enabled)),
        host=str(values.get("host", current.host) or "").strip(),
        username=str(values.get("username", current.username) or "").strip(),
        auth_type=str(values.get("auth_type", current.auth_type) or "auto"),
        timezone=str(values.get("timezone", current.timezone) or "Europe/Berlin").strip(),
    )
    if "allow_insecure" in values:
        if not actor.is_admin and bool(values["allow_insecure"]) != current.allow_insecure:
            errors.append(
                FieldError("allow_insecure", "Nur ein Administrator darf unsichere Verbindungen zulassen.")
            )
        else:
            new = replace(new, allow_insecure=bool(values["allow_insecure"]))
    if new.auth_type not in {c.value for c in AUTH_CHOICES}:
        errors.append(FieldError("auth_type", "Bitte Automatisch, NTLM oder Basic wählen."))
    if new.enabled:
        if not new.host:
            errors.append(FieldError("host", "Bitte den Exchange-Server angeben."))
        else:
            try:
                ews_url(new.host, allow_insecure=new.allow_insecure)
            except AccountError as exc:
                errors.append(FieldError("host", str(exc)))
        if not new.username:
            errors.append(FieldError("username", "Bitte den Benutzernamen (E-Mail-Adresse) angeben."))
        if not values.get("password") and not current.has_password:
            errors.append(FieldError("password", "Bitte das Passwort eingeben."))
    if errors:
        return SaveResult(False, tuple(errors))
    password = values.get("password") or None
    try:
        runtime.save_account(user_id, new, password=password)
    except AccountError as exc:
        return SaveResult(False, (FieldError("timezone", str(exc)),))
    return SaveResult(True, message="Gespeichert.")
