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

from .. import PLUGIN_ID
from ..core import subscriptions
from ..core.accounts import AccountError, backend_of, ews_url, public_view
from ..core.firm import FIRM_DEFAULTS
from .permissions import may_edit_user

if TYPE_CHECKING:
    from ..core.runtime import SyncRuntime

USER_TAB = f"{PLUGIN_ID}.user"
CONTACT_TAB = f"{PLUGIN_ID}.contact"
INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
TEST_ACTION = f"{PLUGIN_ID}.test_connection"
RETRY_ACTION = f"{PLUGIN_ID}.retry_now"
RECONCILE_ACTION = f"{PLUGIN_ID}.reconcile_now"

AUTH_CHOICES = (Choice("auto", "Automatisch"), Choice("ntlm", "NTLM"), Choice("basic", "Basic"))

MAX_USER_LEAD_MINUTES = 60 * 24 * 28
# Per-user reminder lead times (Exchange tab); empty means the firm's default.
USER_LEAD_TIMES = {
    "appointment_reminder_minutes": ("Erinnerung vor Terminen (Minuten)", 0, MAX_USER_LEAD_MINUTES),
    "deadline_reminder_minutes": ("Erinnerung vor Fristen (Minuten)", 0, MAX_USER_LEAD_MINUTES),
    "pre_deadline_reminder_minutes": ("Erinnerung vor Vorfristen (Minuten)", 0, MAX_USER_LEAD_MINUTES),
}

USER_FIELDS = (
    SettingsField("enabled", "Exchange-Synchronisation aktiv", "checkbox"),
    SettingsField("host", "Host", "text", help="z. B. mail.kanzlei.de oder die vollständige EWS-Adresse"),
    SettingsField("username", "Benutzername", "text", help="E-Mail-Adresse oder DOMÄNE\\Benutzer"),
    SettingsField(
        "email", "Postfach (E-Mail-Adresse)", "text", help="Nur nötig, wenn sie vom Benutzernamen abweicht"
    ),
    SettingsField(
        "password", "Passwort", "password", help="Wird verschlüsselt gespeichert und nie angezeigt"
    ),
    SettingsField("auth_type", "Authentifizierung", "select", choices=AUTH_CHOICES),
    SettingsField("timezone", "Zeitzone", "text"),
    *(
        SettingsField(name, label, "number", help="leer: Vorgabe der Kanzlei (Schnittstellen)")
        for name, (label, _lo, _hi) in USER_LEAD_TIMES.items()
    ),
    SettingsField("allow_insecure", "Unsichere Verbindung zulassen (nur Administrator)", "checkbox"),
    SettingsField("status", "Status", "status", read_only=True),
    SettingsField(
        "backend",
        "Schnittstelle",
        "select",
        choices=(
            Choice("auto", "Automatisch (aus dem Feld Host)"),
            Choice("ews", "Exchange Web Services (Exchange Server, gehostetes Exchange)"),
            Choice("graph", "Microsoft 365 (Microsoft Graph)"),
        ),
        help="Für Microsoft 365 genügt im Feld Host „graph“ und die Postfachadresse; kein Passwort.",
    ),
)
BACKEND_CHOICES = ("auto", "ews", "graph")

TARGET_CHOICES = (
    Choice("default", "Standardordner (Kontakte, Kalender, Aufgaben)"),
    Choice("subfolder", "Eigener Unterordner in jedem dieser Ordner"),
)
DONE_CHOICES = (Choice("mark", "als erledigt markieren"), Choice("remove", "aus dem Kalender entfernen"))
MAX_LEAD_MINUTES = 60 * 24 * 28  # four weeks
INTERFACES_FIELDS = (
    SettingsField("summary", "Zustand", "status", read_only=True),
    SettingsField("target", "Ziel der Einträge", "select", choices=TARGET_CHOICES),
    SettingsField("subfolder", "Name des Unterordners", "text", help="z. B. timeSensor LEGAL"),
    SettingsField("done_deadline", "Erledigte Fristen", "select", choices=DONE_CHOICES),
    SettingsField("appointment_reminder_minutes", "Erinnerung vor Terminen (Minuten)", "number"),
    SettingsField("deadline_reminder_minutes", "Erinnerung vor Fristen (Minuten)", "number"),
    SettingsField("pre_deadline_reminder_minutes", "Erinnerung vor Vorfristen (Minuten)", "number"),
    SettingsField(
        "queue_url",
        "Warteschlange",
        "text",
        help="Leer: SQLite im Datenverzeichnis. Für mehrere Server: postgresql://benutzer@server/datenbank "
        "(Passwort in .pgpass oder PGPASSWORD, nicht in der Adresse). Wirkt nach dem nächsten Start.",
    ),
    SettingsField("audit_retention_days", "Protokoll aufbewahren (Tage)", "number"),
    SettingsField("cleanup_max_percent", "Aufräumen: höchstens so viel Prozent eines Ordners", "number"),
    SettingsField("mailboxes", "Postfächer", "table", read_only=True),
    SettingsField(
        "reconcile_time",
        "Abgleich der Postfächer täglich um",
        "text",
        help="Uhrzeit (SS:MM) in den ruhigen Stunden der Kanzlei, z. B. 02:30; leer: nur von Hand",
    ),
    SettingsField(
        "phone_edits",
        "Am Telefon geänderte oder gelöschte Einträge",
        "select",
        choices=(Choice("restore", "wiederherstellen (timeSensor gilt)"), Choice("report", "nur melden")),
    ),
    SettingsField("parity", "Fristenabgleich", "status", read_only=True),
    SettingsField(
        "cleanup_offer", "Postfächer ohne Zugang mit übertragenen Elementen", "table", read_only=True
    ),
    SettingsField("audit", "Protokoll (neueste zuerst)", "table", read_only=True),
    SettingsField("graph_tenant_id", "Microsoft 365: Mandanten-ID (Tenant ID)", "text"),
    SettingsField("graph_client_id", "Microsoft 365: Client-ID der App-Registrierung", "text"),
    SettingsField(
        "graph_secret",
        "Microsoft 365: geheimer Clientschlüssel",
        "password",
        help="Der Wert des Geheimnisses, nicht seine ID. Wird verschlüsselt gespeichert und nie angezeigt.",
    ),
    SettingsField(
        "graph_certificate",
        "Microsoft 365: Zertifikat (PEM mit privatem Schlüssel)",
        "password",
        help="Statt des Geheimnisses empfohlen. Wird verschlüsselt gespeichert und nie angezeigt.",
    ),
    SettingsField("graph_status", "Microsoft 365: hinterlegt", "status", read_only=True),
)
CLEANUP_ACTION = f"{PLUGIN_ID}.cleanup"


OWN_ONLY_MESSAGE = (
    "Sie dürfen Exchange-Sync nur für sich selbst setzen oder entfernen; "
    "für andere Benutzer bitte einen Administrator fragen."
)


class NotAllowed(Exception):
    pass


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
                INTERFACES_FIELDS,
                (
                    SettingsButton(RETRY_ACTION, "Jetzt erneut versuchen"),
                    SettingsButton(CLEANUP_ACTION, "Übertragene Elemente entfernen …"),
                    SettingsButton(RECONCILE_ACTION, "Postfächer jetzt abgleichen"),
                ),
            )
        ]
    return []


def _exchange_users(host: Host, runtime: SyncRuntime | None) -> list[User]:
    enabled = runtime.config.enabled_users() if runtime else frozenset()
    return [u for u in host.list_users() if u.id in enabled]


def load(
    host: Host, runtime: SyncRuntime | None, actor: User, tab_id: str, ctx: SettingsContext
) -> SettingsValues:
    if runtime is None:
        return SettingsValues({}, status="Exchange-Sync ist nicht aktiv.")
    if tab_id == USER_TAB:
        if not may_edit_user(actor, ctx.object_id):
            return SettingsValues({}, status="Keine Berechtigung für das Exchange-Konto dieses Benutzers.")
        from .connection_test import stored_outcome

        values = public_view(runtime.accounts.load(ctx.object_id))
        states = {s.mailbox: s for s in runtime.outbox.mailbox_states()}
        state = states.get(ctx.object_id)
        test = stored_outcome(runtime, ctx.object_id)
        status = ""
        if state is not None and state.parked:
            status = f"Angehalten: {state.parked_reason}"
        elif state is not None and state.last_error:
            status = f"Letzter Fehler: {state.last_error}"
        elif test is not None:
            status = ("Verbindungstest erfolgreich: " if test.ok else "Verbindungstest fehlgeschlagen: ") + (
                test.message
            )
        else:
            status = "Noch nicht getestet."
        values["status"] = status
        values["status_icon"] = test.icon if test else ""
        return SettingsValues(values, status=status)
    if tab_id == CONTACT_TAB:
        current = set(subscriptions.subscribers(host.settings, ctx.object_id))
        users = _exchange_users(host, runtime)
        return SettingsValues(
            {"users": [{"id": u.id, "name": u.name, "checked": u.id in current} for u in users]}
        )
    if tab_id == INTERFACES_TAB:
        if not actor.is_admin:
            return SettingsValues({}, status="Nur ein Administrator darf die Schnittstellen einsehen.")
        return interfaces_values(host, runtime)
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
    if tab_id == INTERFACES_TAB:
        if not actor.is_admin:
            return SaveResult(False, message="Nur ein Administrator darf die Schnittstellen ändern.")
        return _save_interfaces(runtime, values)
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
        add, remove = wanted, (before - wanted) & allowed
        if not actor.is_admin:
            # The same rule as Exchange-Sync setzen/entfernen: a user changes only his own entry;
            # the others' ticks stay as they are, whatever the form sent for them.
            changed = (wanted - before) | remove
            if changed - {actor.id}:
                return SaveResult(False, (FieldError("users", OWN_ONLY_MESSAGE),), message=OWN_ONLY_MESSAGE)
            add, remove = wanted & {actor.id}, remove & {actor.id}
        from ..core.subscribe import QueueDeferred

        try:
            # Every checked user is queued again, also when nothing changed: saving the tab
            # repairs a missing item, and an unchanged one is not rewritten.
            runtime.subscriptions.change([ctx.object_id], add=add, remove=remove)
        except QueueDeferred:
            return SaveResult(True, message=DEFERRED_MESSAGE)
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
        backend=str(values.get("backend", current.backend) or "auto"),
    )
    if new.backend not in BACKEND_CHOICES:
        errors.append(FieldError("backend", "Bitte Automatisch, EWS oder Microsoft 365 wählen."))
    if "allow_insecure" in values:
        if not actor.is_admin and bool(values["allow_insecure"]) != current.allow_insecure:
            errors.append(
                FieldError("allow_insecure", "Nur ein Administrator darf unsichere Verbindungen zulassen.")
            )
        else:
            new = replace(new, allow_insecure=bool(values["allow_insecure"]))
    if new.auth_type not in {c.value for c in AUTH_CHOICES}:
        errors.append(FieldError("auth_type", "Bitte Automatisch, NTLM oder Basic wählen."))
    if new.enabled and backend_of(new) == "graph":
        email = str(values.get("email", current.email) or "").strip() or new.username
        if "@" not in email:
            errors.append(
                FieldError(
                    "email", "Bitte die Adresse des Microsoft-365-Postfachs angeben (z. B. anna@kanzlei.de)."
                )
            )
    elif new.enabled:
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
    if "email" in values:
        new = replace(new, email=str(values.get("email") or "").strip())
    for name, (label, lo, hi) in USER_LEAD_TIMES.items():
        if name in values:
            empty = values[name] is None or str(values[name]).strip() == ""
            number = None if empty else _int_field(values, name, lo, hi, errors, label)
            lead_time: dict[str, Any] = {name: number}
            new = replace(new, **lead_time)
    if new.enabled and not current.enabled:
        problem = runtime.admin.seat_problem(user_id)
        if problem:
            errors.append(FieldError("enabled", problem))
    if errors:
        return SaveResult(False, tuple(errors))
    password = values.get("password") or None
    try:
        runtime.admin.save_account(user_id, new, password=password)
    except AccountError as exc:
        return SaveResult(False, (FieldError("timezone", str(exc)),))
    if current.enabled and not new.enabled and runtime.outbox.sync_keys(user_id):
        return SaveResult(
            True,
            message="Gespeichert. Exchange-Sync ist für diesen Benutzer abgeschaltet; die bisher "
            "übertragenen Elemente bleiben im Postfach. Ein Administrator kann sie unter Schnittstellen › "
            "Exchange-Synchronisation › „Übertragene Elemente entfernen …“ entfernen.",
        )
    return SaveResult(True, message="Gespeichert.")


# --------------------------------------------------------------------------- Interfaces tab


def interfaces_values(host: Host, runtime: SyncRuntime) -> SettingsValues:
    from ..core.cleanup import candidates
    from .status import mailbox_rows, summary

    stored = runtime.config.firm_settings()
    firm = {**FIRM_DEFAULTS, **{k: v for k, v in stored.items() if k in FIRM_DEFAULTS}}
    firm["graph_tenant_id"] = stored.get("graph_tenant_id", "")
    firm["graph_client_id"] = stored.get("graph_client_id", "")
    firm["graph_status"] = (
        "Zertifikat hinterlegt"
        if stored.get("graph_certificate_token")
        else "Geheimer Clientschlüssel hinterlegt"
        if stored.get("graph_secret_token")
        else "Keine Zugangsdaten hinterlegt"
    )
    text = summary(runtime)
    return SettingsValues(
        {
            **firm,
            "summary": text,
            "mailboxes": [row.as_dict() for row in mailbox_rows(host, runtime)],
            "cleanup_offer": [
                {"user_id": c.user_id, "user_name": c.user_name, "reason": c.reason}
                for c in candidates(runtime)
            ],
            "audit": [e.as_dict() for e in runtime.admin.audit.entries(limit=50)],
            "parity": _parity_text(runtime),
        },
        status=text,
    )


def _int_field(
    values: dict[str, Any], name: str, lo: int, hi: int, errors: list[FieldError], label: str
) -> int | None:
    raw = values.get(name)
    try:
        if isinstance(raw, bool):
            raise ValueError
        number = int(str(raw).strip())
    except (TypeError, ValueError):
        errors.append(FieldError(name, f"{label}: bitte eine ganze Zahl eingeben."))
        return None
    if not lo <= number <= hi:
        errors.append(FieldError(name, f"{label}: erlaubt sind {lo} bis {hi}."))
        return None
    return number


def validate_queue_url(url: str) -> str | None:
    """A German problem with the queue URL, or None. PostgreSQL is tried for real (a few seconds)."""
    url = url.strip()
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        if rest in ("", "/") or rest.startswith("/"):
            return None
        return "SQLite-Adresse ungültig: erwartet wird sqlite:///datei.sqlite3 oder sqlite:////pfad/datei.sqlite3."
    if not (sep and scheme in ("postgresql", "postgres")):
        return (
            "Unbekannte Warteschlange: leer lassen (SQLite) oder postgresql://benutzer@server:5432/datenbank."
        )
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception:
        return (
            "Die PostgreSQL-Adresse ist nicht lesbar. Beispiel: postgresql://benutzer@server:5432/datenbank."
        )
    if params.get("password"):
        return (
            "Bitte kein Passwort in die Adresse schreiben (es stünde sonst unverschlüsselt in den "
            "Einstellungen). Das Passwort gehört in die Datei .pgpass des Dienstkontos oder in PGPASSWORD."
        )
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"PostgreSQL ist unter dieser Adresse nicht erreichbar ({first}). Bitte Server, Port, Datenbank und Benutzer prüfen."
    return None


def _save_interfaces(runtime: SyncRuntime, values: dict[str, Any]) -> SaveResult:
    from ..mapping.context import DONE_DEADLINE_MODES

    current = {**FIRM_DEFAULTS, **runtime.config.firm_settings()}
    errors: list[FieldError] = []
    new: dict[str, Any] = {}
    target = str(values.get("target", current["target"]) or "default")
    if target not in {c.value for c in TARGET_CHOICES}:
        errors.append(FieldError("target", "Bitte Standardordner oder eigenen Unterordner wählen."))
    subfolder = str(values.get("subfolder", current["subfolder"]) or "").strip()
    if target == "subfolder":
        if not subfolder:
            errors.append(FieldError("subfolder", "Bitte einen Namen für den Unterordner angeben."))
        elif len(subfolder) > 120 or any(ch in subfolder for ch in "/\\") or subfolder in (".", ".."):
            errors.append(
                FieldError(
                    "subfolder", "Der Ordnername darf keinen Schrägstrich enthalten (max. 120 Zeichen)."
                )
            )
    new.update(target=target, subfolder=subfolder)
    done = str(values.get("done_deadline", current["done_deadline"]) or "")
    if done not in DONE_DEADLINE_MODES:
        errors.append(FieldError("done_deadline", "Bitte „markieren“ oder „entfernen“ wählen."))
    new["done_deadline"] = done
    labels = {
        "appointment_reminder_minutes": ("Erinnerung vor Terminen", 0, MAX_LEAD_MINUTES),
        "deadline_reminder_minutes": ("Erinnerung vor Fristen", 0, MAX_LEAD_MINUTES),
        "pre_deadline_reminder_minutes": ("Erinnerung vor Vorfristen", 0, MAX_LEAD_MINUTES),
        "audit_retention_days": ("Aufbewahrung des Protokolls", 1, 3650),
        "cleanup_max_percent": ("Grenzwert beim Aufräumen", 1, 100),
    }
    for name, (label, lo, hi) in labels.items():
        if name in values:
            number = _int_field(values, name, lo, hi, errors, label)
            if number is not None:
                new[name] = number
    queue_url = str(values.get("queue_url", current["queue_url"]) or "").strip()
    queue_changed = queue_url != (current.get("queue_url") or "")
    if queue_changed:
        problem = validate_queue_url(queue_url)
        if problem:
            errors.append(FieldError("queue_url", problem))
    new["queue_url"] = queue_url
    graph_changed = _graph_values(runtime, values, new, errors)
    _reconcile_fields(values, current, new, errors)
    if errors:
        return SaveResult(False, tuple(errors))
    folders_changed = (target, subfolder) != (current["target"], current["subfolder"])
    runtime.admin.save_firm_settings(new)
    if graph_changed:
        runtime.admin.graph_credentials_changed()
    notes = ["Gespeichert."]
    if queue_changed:
        notes.append("Die neue Warteschlange wird beim nächsten Start verwendet.")
    if folders_changed:
        notes.append(
            "Der neue Zielordner gilt ab dem nächsten Start; bereits übertragene Einträge bleiben, wo sie sind."
        )
    return SaveResult(True, message=" ".join(notes))


DEFERRED_MESSAGE = (
    "Gespeichert. Die Warteschlange ist gerade nicht erreichbar; die Übertragung nach Exchange "
    "wird automatisch nachgeholt, sobald sie wieder erreichbar ist (der Administrator ist informiert)."
)


def _graph_values(
    runtime: SyncRuntime, values: dict[str, Any], new: dict[str, Any], errors: list[FieldError]
) -> bool:
    """The Microsoft 365 app registration (tenant, client, secret or certificate); True if it changed.
    Secret and certificate are encrypted like the users' passwords and never sent back to a form."""
    current = runtime.config.firm_settings()
    changed = False
    for name in ("graph_tenant_id", "graph_client_id"):
        if name in values:
            value = str(values.get(name) or "").strip()
            if value and not _looks_like_id(value):
                errors.append(
                    FieldError(name, "Bitte die ID im Format 00000000-0000-0000-0000-000000000000 eingeben.")
                )
            new[name] = value
            changed |= value != current.get(name, "")
    secret = str(values.get("graph_secret") or "")
    if secret:
        new["graph_secret_token"] = runtime.vault.encrypt(secret)
        changed = True
    pem = str(values.get("graph_certificate") or "").strip()
    if pem:
        if "PRIVATE KEY-----" not in pem or "BEGIN CERTIFICATE-----" not in pem:
            errors.append(
                FieldError(
                    "graph_certificate",
                    "Bitte eine PEM-Datei mit privatem Schlüssel und Zertifikat einfügen (ohne Passwort).",
                )
            )
        else:
            new["graph_certificate_token"] = runtime.vault.encrypt(pem)
            changed = True
    return changed


def _looks_like_id(value: str) -> bool:
    import re

    # Tenant ids may also be given as the primary domain (kanzlei.onmicrosoft.com).
    return bool(re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", value)) or "." in value


# --- reconcile sweep
PHONE_EDIT_CHOICES = (
    Choice("restore", "wiederherstellen (timeSensor gilt)"),
    Choice("report", "nur melden"),
)


def _reconcile_fields(
    values: dict[str, Any], current: dict[str, Any], new: dict[str, Any], errors: list[FieldError]
) -> None:
    from ..core.reconcile import parse_time

    when = str(values.get("reconcile_time", current.get("reconcile_time", "")) or "").strip()
    if when and parse_time(when) is None:
        errors.append(
            FieldError("reconcile_time", "Bitte eine Uhrzeit wie 02:30 angeben (leer: nur von Hand).")
        )
    new["reconcile_time"] = when
    mode = str(values.get("phone_edits", current.get("phone_edits", "restore")) or "restore")
    if mode not in {c.value for c in PHONE_EDIT_CHOICES}:
        errors.append(FieldError("phone_edits", "Bitte „wiederherstellen“ oder „nur melden“ wählen."))
    new["phone_edits"] = mode


def _parity_text(runtime: SyncRuntime) -> str:
    from ..core.parity import stored

    report = stored(runtime)
    if report is None:
        return "Noch kein Abgleich gelaufen."
    lines = [report.summary()] + [d.describe() for d in report.diffs[:20]]
    return "\n".join(lines)
