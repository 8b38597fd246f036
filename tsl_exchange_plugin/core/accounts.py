"""Each user's Exchange account (User Editor › Exchange), kept in the host's settings store.

The password is stored only as a vault token and is never returned by ``load``;
``mailbox_account`` decrypts it for the moment of a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from tsl_hostapi.types import SettingsStore, User

from .. import PLUGIN_ID
from ..backends.base import AuthType, MailboxAccount
from ..credentials import Vault
from ..mapping.context import is_known_zone

NAMESPACE = PLUGIN_ID
_KEY = "user:{}"
# A stored value outside these (an older or hand-edited row) falls back to "auto".
_AUTH_TYPES: dict[str, AuthType] = {"auto": "auto", "ntlm": "ntlm", "basic": "basic"}


class AccountError(Exception):
    """A user's Exchange settings are missing or unusable. German, safe to show."""


@dataclass(frozen=True)
class ExchangeSettings:
    """What the Exchange tab holds for one user (password only as ciphertext)."""

    enabled: bool = False
    host: str = ""  # "mail.kanzlei.de" or a full EWS URL
    username: str = ""  # e-mail address or DOMAIN\\user
    email: str = ""  # primary SMTP of the mailbox; defaults to username, else the host's user e-mail
    auth_type: str = "auto"
    timezone: str = "Europe/Berlin"
    password_token: str = ""
    allow_insecure: bool = False  # plain HTTP or a self-signed certificate, allowed by an administrator
    credentials_version: int = 0
    # Reminder lead times in minutes; None means the firm's default (Interfaces tab).
    appointment_reminder_minutes: int | None = None
    deadline_reminder_minutes: int | None = None
    pre_deadline_reminder_minutes: int | None = None
    # "auto": from the Host field (see ``backend_of``); "ews" or "graph" when chosen explicitly.
    backend: str = "auto"

    @property
    def has_password(self) -> bool:
        return bool(self.password_token)

    @property
    def uses_graph(self) -> bool:
        return backend_of(self) == "graph"


def ews_url(host: str, *, allow_insecure: bool = False) -> str:
    """Full EWS URL from what the administrator typed: a host name or a complete URL."""
    host = host.strip()
    if not host:
        raise AccountError("Kein Exchange-Server angegeben (Feld „Host“).")
    if "://" in host:
        if host.lower().startswith("http://") and not allow_insecure:
            raise AccountError(
                "Unverschlüsselte Verbindung (http://) ist nicht erlaubt. Bitte https:// verwenden "
                "oder als Administrator unsichere Verbindungen für diesen Server zulassen."
            )
        return host
    return f"https://{host.rstrip('/')}/EWS/Exchange.asmx"


GRAPH_HOST_WORDS = frozenset({"graph", "m365", "microsoft365", "microsoft 365", "office365", "office 365"})
GRAPH_DEFAULT_URL = "https://graph.microsoft.com/v1.0"
AUTHORITY_DEFAULT = "https://login.microsoftonline.com"
# Firm settings (Interfaces tab) of the app registration that reaches Microsoft 365 mailboxes.
GRAPH_FIRM_KEYS = (
    "graph_tenant_id",
    "graph_client_id",
    "graph_secret_token",
    "graph_certificate_token",
    "graph_authority",
)


def is_graph_host(host: str) -> bool:
    """A Microsoft 365 address in the Host field: ``graph`` (or m365, office365), a Graph URL."""
    h = host.strip().lower().rstrip("/")
    if h in GRAPH_HOST_WORDS:
        return True
    if "://" in h:
        netloc = h.split("://", 1)[1].split("/", 1)[0]
        return netloc == "graph.microsoft.com" or h.endswith("/v1.0")
    return h == "graph.microsoft.com"


def backend_of(settings: ExchangeSettings) -> str:
    if settings.backend in ("ews", "graph"):
        return settings.backend
    return "graph" if is_graph_host(settings.host) else "ews"


def graph_url(host: str) -> str:
    """The Graph base URL: a Graph URL typed as Host, else Microsoft's (also when Microsoft 365 was
    chosen explicitly and the Host still holds the old EWS address)."""
    h = host.strip().rstrip("/")
    return h if "://" in h and is_graph_host(h) else GRAPH_DEFAULT_URL


def is_exchange_online_ews(url: str) -> bool:
    """An EWS URL of Exchange Online, where Microsoft blocks EWS from 1 October 2026."""
    netloc = url.split("://", 1)[-1].split("/", 1)[0].lower()
    return netloc in ("outlook.office365.com", "outlook.office.com") or netloc.endswith(".outlook.com")


class AccountStore:
    """Reads and writes users' Exchange settings through the host's settings store."""

    def __init__(self, settings: SettingsStore, vault: Vault):
        self._settings = settings
        self._vault = vault

    def load(self, user_id: str) -> ExchangeSettings:
        raw = self._settings.get(NAMESPACE, _KEY.format(user_id))
        if not isinstance(raw, dict):
            return ExchangeSettings()
        known = {k: v for k, v in raw.items() if k in ExchangeSettings.__dataclass_fields__}
        try:
            return ExchangeSettings(**known)
        except TypeError:
            return ExchangeSettings()

    def save(
        self, user_id: str, settings: ExchangeSettings, *, password: str | None = None
    ) -> ExchangeSettings:
        """Store settings; a new password is encrypted and bumps ``credentials_version``."""
        if settings.timezone and not is_known_zone(settings.timezone):
            # ZoneInfo("Europe") raises IsADirectoryError on some systems: check by name instead.
            raise AccountError(f"Unbekannte Zeitzone: {settings.timezone!r}")
        old = self.load(user_id)
        version = old.credentials_version
        if password is not None and password != "":
            settings = replace(settings, password_token=self._vault.encrypt(password))
        else:
            settings = replace(settings, password_token=old.password_token)
        if (
            settings.password_token != old.password_token
            or settings.host != old.host
            or settings.username != old.username
            or settings.auth_type != old.auth_type
            or backend_of(settings) != backend_of(old)
        ):
            version += 1
        settings = replace(settings, credentials_version=version)
        self._settings.set(NAMESPACE, _KEY.format(user_id), asdict(settings))
        return settings

    def enabled_user_ids(self) -> list[str]:
        ids = []
        for key in self._settings.keys(NAMESPACE, "user:"):
            raw = self._settings.get(NAMESPACE, key)
            if isinstance(raw, dict) and raw.get("enabled"):
                ids.append(key.split(":", 1)[1])
        return ids

    def mailbox_account(
        self, user: User, settings: ExchangeSettings | None = None, *, firm: Mapping[str, Any] | None = None
    ) -> MailboxAccount:
        """Connection data for one call, password decrypted. Raises AccountError with a German reason.

        ``firm``: the firm settings, which hold the app registration for Microsoft 365 mailboxes."""
        return mailbox_account(user, settings or self.load(user.id), self._vault, firm=firm)


def mailbox_account(
    user: User, s: ExchangeSettings, vault: Vault, *, firm: Mapping[str, Any] | None = None
) -> MailboxAccount:
    """Connection data from one user's settings, password decrypted with ``vault`` (the host's,
    or a worker process's with the same key). Raises AccountError or VaultError (German)."""
    if not s.enabled:
        raise AccountError(f"Exchange-Synchronisation ist für {user.name} nicht aktiviert.")
    if s.uses_graph:
        return graph_account(user, s, vault, firm or {})
    if not s.has_password:
        raise AccountError(f"Für {user.name} ist kein Exchange-Passwort hinterlegt.")
    url = ews_url(s.host, allow_insecure=s.allow_insecure)
    return MailboxAccount(
        mailbox=user.id,
        email=s.email or (s.username if "@" in s.username else user.email),
        ews_url=url,
        username=s.username or user.email,
        password=vault.decrypt(s.password_token),
        auth_type=_AUTH_TYPES.get(s.auth_type, "auto"),
        timezone=s.timezone or "Europe/Berlin",
        verify_tls=not s.allow_insecure,
    )


def graph_account(user: User, s: ExchangeSettings, vault: Vault, firm: Mapping[str, Any]) -> MailboxAccount:
    """A Microsoft 365 mailbox: only its address per user; the app credentials are the firm's."""
    email = s.email or (s.username if "@" in s.username else "") or user.email
    if not email or "@" not in email:
        raise AccountError(f"Für {user.name} fehlt die Postfachadresse (E-Mail) des Microsoft-365-Postfachs.")
    tenant = str(firm.get("graph_tenant_id") or "").strip()
    client = str(firm.get("graph_client_id") or "").strip()
    if not tenant or not client:
        raise AccountError(
            "Für Microsoft 365 fehlen Mandanten-ID oder Client-ID der App-Registrierung. Bitte unter "
            "Schnittstellen › Exchange-Synchronisation eintragen."
        )
    secret_token = str(firm.get("graph_secret_token") or "")
    cert_token = str(firm.get("graph_certificate_token") or "")
    if not secret_token and not cert_token:
        raise AccountError(
            "Für Microsoft 365 ist weder ein Zertifikat noch ein geheimer Clientschlüssel hinterlegt. "
            "Bitte unter Schnittstellen › Exchange-Synchronisation eintragen."
        )
    return MailboxAccount(
        mailbox=user.id,
        email=email,
        ews_url="",
        username=email,
        password="",
        timezone=s.timezone or "Europe/Berlin",
        backend="graph",
        tenant_id=tenant,
        client_id=client,
        client_secret=vault.decrypt(secret_token) if secret_token else "",
        client_certificate=vault.decrypt(cert_token) if cert_token else "",
        graph_url=graph_url(s.host),
        authority_host=str(firm.get("graph_authority") or AUTHORITY_DEFAULT).rstrip("/"),
    )


def public_view(settings: ExchangeSettings) -> dict[str, Any]:
    """What a form may show: everything but the password token."""
    data = asdict(settings)
    data.pop("password_token", None)
    data["password_set"] = settings.has_password
    return data
