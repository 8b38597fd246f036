"""The "Testen" button: a real check, step by step, each failure with a plain-German cause and what to do.

Steps: build the address; resolve the host name; open a TCP connection; TLS with
certificate verification (a self-signed certificate only where an administrator
allowed it for this user's server); ask the EWS endpoint without credentials (404 means
EWS is not there or switched off; the HTTP Date header gives the server's clock);
log in and open the target folders; create and delete a probe item carrying our
property; compare the clocks. Green only if every step worked.

The values on the tab may be unsaved: what the form holds overrides what is stored,
so a user can test before saving. The outcome is stored (without any secret) so the
tab shows the icon when it is opened again.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from tsl_hostapi.types import ActionResult, User

from .. import PLUGIN_ID
from ..backends.base import (
    AuthFailed,
    ConfigError,
    ExchangeError,
    ItemRef,
    MailboxAccount,
    TransientError,
    Written,
)
from ..core.accounts import AccountError, backend_of, ews_url, is_exchange_online_ews
from ..mapping.items import ContactItem
from .permissions import may_edit_user

if TYPE_CHECKING:
    from ..core.fidelity import FidelityResult
    from ..core.runtime import SyncRuntime

MAX_CLOCK_SKEW = 300.0  # seconds; Kerberos/NTLM and reminders go wrong beyond a few minutes
STEP_TIMEOUT = 10.0
RESULT_KEY = "test:{}"
FOLDER_LABELS = {"contact": "Kontakte", "calendar": "Kalender", "task": "Aufgaben"}


def _local_now() -> float:
    """Our clock (a function so a test can move it, as a wrongly set host clock would)."""
    return time.time()


@dataclass(frozen=True)
class TestOutcome:
    ok: bool
    step: str  # the step that failed, or "done"
    message: str  # German: what happened and what to do
    at: float
    credentials_version: int
    skew_seconds: float | None = None

    @property
    def icon(self) -> Literal["green", "red"]:
        return "green" if self.ok else "red"


class _Failed(Exception):
    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


# --------------------------------------------------------------------------- stored outcome


def stored_outcome(runtime: SyncRuntime, user_id: str) -> TestOutcome | None:
    """The last test of this user's current credentials (None: never tested since they changed)."""
    raw = runtime.host.settings.get(PLUGIN_ID, RESULT_KEY.format(user_id))
    if not isinstance(raw, dict):
        return None
    try:
        outcome = TestOutcome(**{k: raw[k] for k in TestOutcome.__dataclass_fields__ if k in raw})
    except TypeError:
        return None
    if outcome.credentials_version != runtime.accounts.load(user_id).credentials_version:
        return None
    return outcome


def _store(runtime: SyncRuntime, user_id: str, outcome: TestOutcome) -> None:
    runtime.host.settings.set(PLUGIN_ID, RESULT_KEY.format(user_id), asdict(outcome))


# --------------------------------------------------------------------------- the steps


def _resolve(host: str, port: int) -> None:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _Failed(
            "resolve",
            f"Der Server „{host}“ wurde nicht gefunden (Namensauflösung: {exc.args[-1] if exc.args else exc}). "
            "Bitte die Schreibweise im Feld „Host“ prüfen; bei einem Server im Kanzleinetz muss der "
            "Rechner dieses Netz erreichen (VPN).",
        ) from None


def _connect(host: str, port: int, tls: bool, verify: bool) -> None:
    try:
        sock = socket.create_connection((host, port), timeout=STEP_TIMEOUT)
    except TimeoutError:
        raise _Failed(
            "connect",
            f"Der Server {host} antwortet nicht auf Port {port} (Zeitüberschreitung). "
            "Bitte Firewall, VPN und die Portangabe prüfen.",
        ) from None
    except OSError as exc:
        raise _Failed(
            "connect",
            f"Verbindung zu {host}:{port} nicht möglich ({exc.strerror or exc}). "
            "Läuft der Exchange-Server, und ist die Adresse richtig?",
        ) from None
    try:
        if not tls:
            return
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            with ctx.wrap_socket(sock, server_hostname=host):
                pass
        except ssl.SSLCertVerificationError as exc:
            raise _Failed(
                "tls",
                f"Das Zertifikat des Servers {host} ist nicht vertrauenswürdig ({exc.verify_message}). "
                "Bitte ein gültiges Zertifikat auf dem Server einrichten oder das Zertifikat der "
                "Kanzlei-Zertifizierungsstelle auf diesem Rechner installieren. Nur wenn das gewollt ist: "
                "ein Administrator kann das selbstsignierte Zertifikat für diesen Server zulassen.",
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise _Failed(
                "tls",
                f"Die verschlüsselte Verbindung (TLS) zu {host} ist gescheitert ({exc}). "
                "Spricht der Server auf diesem Port HTTPS?",
            ) from None
    finally:
        sock.close()


def _probe_endpoint(url: str, verify: bool) -> float | None:
    """Ask the EWS address without credentials; returns the server's clock (HTTP Date) if sent."""
    import requests
    import urllib3

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            resp = requests.get(url, timeout=STEP_TIMEOUT, verify=verify, allow_redirects=False)
    except requests.RequestException as exc:
        raise _Failed("endpoint", f"Der Exchange-Webdienst antwortet nicht ({type(exc).__name__}).") from None
    code = resp.status_code
    if code == 404:
        raise _Failed(
            "endpoint",
            "Unter dieser Adresse gibt es keinen Exchange-Webdienst (EWS), HTTP 404. Entweder ist EWS "
            "auf dem Server abgeschaltet, oder die Adresse ist falsch: üblich ist "
            "https://SERVER/EWS/Exchange.asmx. Bitte den Exchange-Administrator fragen.",
        )
    if code in (502, 503, 504):
        raise _Failed(
            "endpoint",
            f"Der Exchange-Server ist vorübergehend nicht verfügbar (HTTP {code}). "
            "Bitte später erneut testen; bleibt es so, den Exchange-Administrator fragen.",
        )
    if 300 <= code < 400:
        raise _Failed(
            "endpoint",
            f"Der Server leitet auf eine andere Adresse um (HTTP {code} nach "
            f"{resp.headers.get('Location', '?')}). Bitte die vollständige EWS-Adresse eintragen.",
        )
    if code not in (200, 401, 403, 405, 500):
        raise _Failed("endpoint", f"Unerwartete Antwort des Servers (HTTP {code}) unter dieser Adresse.")
    date = resp.headers.get("Date")
    if not date:
        return None
    try:
        return email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None


def _explain_exchange(step: str, exc: ExchangeError) -> _Failed:
    text = str(exc)
    if isinstance(exc, AuthFailed):
        if "gesperrt" in text:
            return _Failed(
                "login",
                "Anmeldung abgelehnt: das Konto ist gesperrt. Bitte den Exchange-Administrator bitten, "
                "es zu entsperren, dann das Passwort hier neu eingeben.",
            )
        return _Failed(
            "login",
            "Anmeldung abgelehnt: Benutzername oder Passwort ist falsch. Bitte beides prüfen "
            "(Benutzername meist die E-Mail-Adresse) und das Passwort neu eingeben.",
        )
    if isinstance(exc, ConfigError) and any(
        code in text for code in ("ErrorNonExistentMailbox", "ErrorAccessDenied", "ErrorImpersonat")
    ):
        return _Failed(
            step,
            f"Das Postfach wurde nicht gefunden oder dieses Konto hat keinen Zugriff darauf ({text}). "
            "Bitte die E-Mail-Adresse des Postfachs prüfen.",
        )
    if isinstance(exc, ConfigError) and "ErrorFolderNotFound" in text:
        return _Failed(step, f"Ein Zielordner fehlt im Postfach ({text}).")
    if isinstance(exc, TransientError) and ("503" in text or "vorübergehend" in text):
        return _Failed(
            step,
            f"Der Exchange-Server ist vorübergehend nicht verfügbar ({text}). Bitte später erneut testen.",
        )
    if isinstance(exc, TransientError) and "drosselt" in text:
        return _Failed(step, f"{text} Bitte in einigen Minuten erneut testen.")
    return _Failed(step, text)


def _exchange_steps(runtime: SyncRuntime, account: MailboxAccount) -> None:
    session = runtime.backend.session(account)
    try:
        step = "login"
        try:
            for item_class in ("contact", "calendar", "task"):
                session.folder_count(item_class)  # logs in, opens (or creates) the target folder
                step = "folders"
        except ExchangeError as exc:
            raise _explain_exchange(step, exc) from None
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
        except ExchangeError as exc:
            raise _explain_exchange("probe", exc) from None
        try:
            errors = [e for e in session.delete([ItemRef(created.item_id, created.change_key)]) if e]
            if errors:
                raise errors[0]
        except ExchangeError as exc:
            failed = _explain_exchange("probe", exc)
            raise _Failed(
                "probe",
                f"Das Testelement wurde angelegt, aber nicht wieder gelöscht: {failed}. "
                "Bitte „timeSensor Verbindungstest“ in den Kontakten von Hand löschen.",
            ) from None
    finally:
        session.close()


def _check(runtime: SyncRuntime, account: MailboxAccount) -> float | None:
    """Every step; raises ``_Failed``. Returns the clock difference in seconds if the server sent one."""
    if account.backend == "graph":
        return _check_graph(runtime, account)
    if is_exchange_online_ews(account.ews_url) and _local_now() >= EWS_ONLINE_END:
        raise _Failed("exchange_online", EXCHANGE_ONLINE_ENDED)
    parts = urlsplit(account.ews_url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    _resolve(host, port)
    _connect(host, port, tls, account.verify_tls)
    sent_at = _local_now()
    server_time = _probe_endpoint(account.ews_url, account.verify_tls)
    received_at = _local_now()
    _exchange_steps(runtime, account)
    if server_time is None:
        return None
    # The Date header has one-second resolution; compare with the middle of the request.
    skew = server_time - (sent_at + received_at) / 2
    if abs(skew) > MAX_CLOCK_SKEW:
        minutes = abs(skew) / 60
        which = "vor" if skew > 0 else "nach"
        raise _Failed(
            "clock",
            f"Die Uhr des Exchange-Servers geht gegenüber diesem Rechner um etwa {minutes:.0f} Minuten "
            f"{which}. Bitte die Uhrzeit beider Rechner (Zeitserver/NTP) richten; sonst stimmen "
            "Erinnerungen nicht und die Anmeldung kann scheitern.",
        )
    return skew


# --------------------------------------------------------------------------- Microsoft 365 (Graph)

EWS_ONLINE_BLOCKED = 1790812800.0  # 2026-10-01 00:00 UTC: Exchange Online blocks EWS by default
EWS_ONLINE_END = 1806537600.0  # 2027-04-01 00:00 UTC: Exchange Online switches EWS off for good
GRAPH_OFFER = (
    "Für Microsoft-365-Postfächer bitte Microsoft Graph verwenden: im Feld „Host“ „graph“ eintragen "
    "(oder Schnittstelle „Microsoft 365“ wählen) und die App-Registrierung der Kanzlei unter Schnittstellen › "
    "Exchange-Synchronisation hinterlegen. Bereits übertragene Einträge werden übernommen, nicht verdoppelt."
)
EXCHANGE_ONLINE_ENDED = (
    "Dies ist die EWS-Adresse von Exchange Online (Microsoft 365). Microsoft hat EWS dort am 1. April 2027 "
    "endgültig abgeschaltet. " + GRAPH_OFFER
)
EXCHANGE_ONLINE_BLOCKED = (
    "Hinweis: Dies ist die EWS-Adresse von Exchange Online (Microsoft 365). Microsoft sperrt EWS dort seit "
    "dem 1. Oktober 2026, wenn die Kanzlei es nicht ausdrücklich freigegeben hat, und schaltet es am "
    "1. April 2027 ab. " + GRAPH_OFFER
)


def _check_graph(runtime: SyncRuntime, account: MailboxAccount) -> float | None:
    """Token, mailbox, folders and To Do list, a probe contact written and deleted, the clock."""
    session = runtime.backend.session(account)
    step = "token"
    try:
        graph = getattr(runtime.backend, "graph", None)
        tokens = getattr(graph, "tokens", None)
        sent_at = _local_now()
        if tokens is not None:
            tokens.token(account, fresh=True)
        step = "mailbox"
        for item_class in ("contact", "calendar", "task"):
            session.folder_count(item_class)
            step = "folders"
        received_at = _local_now()
        server_time: float | None = getattr(session, "server_time", lambda: None)()
        step = "probe"
        probe = ContactItem(
            record_key=f"probe:{uuid.uuid4().hex}",
            display_name="timeSensor Verbindungstest",
            file_as="timeSensor Verbindungstest",
            surname="Verbindungstest",
        )
        created = session.create([probe])[0]
        if not isinstance(created, Written):
            raise created
        errors = [e for e in session.delete([ItemRef(created.item_id, created.change_key)]) if e]
        if errors:
            raise _Failed(
                "probe",
                f"Das Testelement wurde angelegt, aber nicht wieder gelöscht: {errors[0]}. "
                "Bitte „timeSensor Verbindungstest“ in den Kontakten von Hand löschen.",
            )
    except ExchangeError as exc:
        text = str(exc)
        if isinstance(exc, TransientError) and "drosselt" in text:
            text += " Bitte in einigen Minuten erneut testen."
        raise _Failed(step, text) from None
    finally:
        session.close()
    if server_time is None:
        return None
    skew = server_time - (sent_at + received_at) / 2
    if abs(skew) > MAX_CLOCK_SKEW:
        which = "vor" if skew > 0 else "nach"
        raise _Failed(
            "clock",
            f"Die Uhr von Microsoft 365 geht gegenüber diesem Rechner um etwa {abs(skew) / 60:.0f} Minuten "
            f"{which}. Bitte die Uhrzeit dieses Rechners (Zeitserver/NTP) richten; sonst stimmen Erinnerungen "
            "nicht und die Anmeldung mit Zertifikat scheitert.",
        )
    return skew


# --------------------------------------------------------------------------- the action


def _account_from_values(
    runtime: SyncRuntime, actor: User, user: User, values: dict[str, Any]
) -> MailboxAccount:
    """Stored settings, overridden by what the form holds now (unsaved edits are tested too)."""
    current = runtime.accounts.load(user.id)
    settings = replace(current, enabled=True)
    for name in ("host", "username", "email", "auth_type", "timezone", "backend"):
        if values.get(name):
            typed: dict[str, Any] = {name: str(values[name]).strip()}
            settings = replace(settings, **typed)
    if "allow_insecure" in values and actor.is_admin:
        settings = replace(settings, allow_insecure=bool(values["allow_insecure"]))
    password = values.get("password") or None
    if password:
        # Only in memory, for this test: the vault token of the typed password.
        settings = replace(settings, password_token=runtime.vault.encrypt(str(password)))
    if backend_of(settings) == "graph":
        return runtime.accounts.mailbox_account(user, settings, firm=runtime.config.firm_settings())
    if not settings.host:
        raise AccountError("Bitte zuerst den Exchange-Server (Feld „Host“) angeben.")
    ews_url(settings.host, allow_insecure=settings.allow_insecure)
    return runtime.accounts.mailbox_account(user, settings)


def run_test(runtime: SyncRuntime, actor: User, values: dict[str, Any]) -> ActionResult:
    user_id = str(values.get("user_id") or actor.id)
    if not may_edit_user(actor, user_id):
        return ActionResult(
            False, "Keine Berechtigung für das Exchange-Konto dieses Benutzers.", status_icon="red"
        )
    user = runtime.host.get_user(user_id)
    if user is None:
        return ActionResult(False, "Benutzer nicht gefunden.", status_icon="red")
    version = runtime.accounts.load(user_id).credentials_version
    timeout = runtime.config.firm_settings().get("request_timeout")
    account: MailboxAccount | None = None
    try:
        account = _account_from_values(runtime, actor, user, values)
        if isinstance(timeout, (int, float)) and timeout > 0:
            account = replace(account, timeout=float(timeout))
        skew = _check(runtime, account)
        fidelity = _fidelity_step(runtime, account)
    except AccountError as exc:
        outcome = TestOutcome(False, "settings", str(exc), time.time(), version)
    except _Failed as exc:
        outcome = TestOutcome(False, exc.step, str(exc), time.time(), version)
    except Exception as exc:  # the button must answer; the message never carries a secret
        outcome = TestOutcome(
            False,
            "unexpected",
            f"Unerwarteter Fehler beim Test ({type(exc).__name__}).",
            time.time(),
            version,
        )
    else:
        clock = f" Uhrzeit stimmt (Abweichung {abs(skew):.0f} s)." if skew is not None else ""
        folders = ", ".join(FOLDER_LABELS.values())
        if account.backend == "graph":
            outcome = TestOutcome(
                True,
                "done",
                "Verbindung zu Microsoft 365 erfolgreich: Anmeldung der App, Postfach "
                f"{account.email}, Ordner (Kontakte, Kalender, To-Do-Liste), Schreiben und Löschen "
                f"funktionieren.{clock}",
                time.time(),
                version,
                skew,
            )
        else:
            outcome = TestOutcome(
                True,
                "done",
                "Verbindung erfolgreich: Server gefunden, Verbindung "
                + _transport_words(account)
                + f", Anmeldung, Ordner ({folders}), Schreiben und Löschen funktionieren.{clock}"
                + ("" if fidelity is None or fidelity.ok else " Achtung: " + fidelity.summary()),
                time.time(),
                version,
                skew,
            )
    if (
        account is not None
        and account.backend == "ews"
        and is_exchange_online_ews(account.ews_url)
        and _local_now() >= EWS_ONLINE_BLOCKED
        and outcome.step != "exchange_online"
    ):
        outcome = replace(outcome, message=f"{outcome.message} {EXCHANGE_ONLINE_BLOCKED}")
    # An unsaved form is tested but its outcome is not stored: it does not describe the saved account.
    if _matches_saved(runtime, actor, user_id, values):
        _store(runtime, user_id, outcome)
    prefix = "" if outcome.ok else "Verbindungstest fehlgeschlagen: "
    return ActionResult(outcome.ok, prefix + outcome.message, status_icon=outcome.icon)


def _transport_words(account: MailboxAccount) -> str:
    if not account.ews_url.startswith("https"):
        return "unverschlüsselt (vom Administrator zugelassen)"
    if account.verify_tls:
        return "verschlüsselt, Zertifikat geprüft"
    return "verschlüsselt, Zertifikat nicht geprüft (vom Administrator zugelassen)"


def _matches_saved(runtime: SyncRuntime, actor: User, user_id: str, values: dict[str, Any]) -> bool:
    """Did this test use exactly the saved account? Only then is its outcome the account's."""
    saved = runtime.accounts.load(user_id)
    if values.get("password"):
        return False
    if (
        actor.is_admin
        and "allow_insecure" in values
        and bool(values["allow_insecure"]) != saved.allow_insecure
    ):
        return False
    return all(
        not values.get(k) or str(values[k]).strip() == getattr(saved, k)
        for k in ("host", "username", "email", "backend")
    )


# --- server fidelity probe


def _fidelity_step(runtime: SyncRuntime, account: MailboxAccount) -> FidelityResult | None:
    """Write, change, read back and delete probe items: does the server keep every field we write?
    A field it drops even at create has no workaround: the test fails with its German name."""
    from ..core.fidelity import check_account

    if getattr(account, "backend", "ews") != "ews":
        return None  # Microsoft 365 over Graph: Microsoft's own server, no EWS fields to probe
    try:
        result = check_account(runtime, account)
    except ExchangeError as exc:
        raise _explain_exchange("fidelity", exc) from None
    if result.ignored_on_create:
        raise _Failed("fidelity", result.summary())
    return result
