"""App-only tokens for Microsoft Graph through msal's client-credentials flow.

One ``ConfidentialClientApplication`` per (authority, tenant, client, credential) for the life of
the process: msal keeps the token in its in-memory cache and hands it out until five minutes
before it expires, then fetches a new one (NOTES §13). A failure (wrong secret, unknown app,
missing admin consent) is remembered for ``FAILURE_MEMORY`` seconds per credential, so a firm
with twenty Microsoft 365 mailboxes asks Entra once, not twenty times, and a changed credential
is a new key that is tried at once ("Testen" always asks afresh: an administrator may just have
granted consent).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..base import AuthFailed, ConfigError, ExchangeError, MailboxAccount, TransientError

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
FAILURE_MEMORY = 60.0
REQUIRED_ROLES = ("Contacts.ReadWrite", "Calendars.ReadWrite", "Tasks.ReadWrite.All")
CONSENT_HINT = (
    "Ein globaler Administrator muss im Entra Admin Center unter App-Registrierungen › API-Berechtigungen "
    "die Anwendungsberechtigungen Contacts.ReadWrite, Calendars.ReadWrite und Tasks.ReadWrite.All erteilen "
    "(„Administratorzustimmung erteilen“)."
)


@dataclass(frozen=True)
class Credential:
    """What msal needs for one app: a secret or a certificate (PEM with private key)."""

    authority: str
    client_id: str
    secret: str = ""
    certificate_pem: str = ""

    def fingerprint(self) -> str:
        raw = f"{self.authority}|{self.client_id}|{self.secret}|{self.certificate_pem}".encode()
        return hashlib.sha256(raw).hexdigest()


def credential_of(account: MailboxAccount) -> Credential:
    if not account.tenant_id or not account.client_id:
        raise ConfigError(
            "Für Microsoft 365 fehlen Mandanten-ID oder Client-ID. Bitte unter Schnittstellen › "
            "Exchange-Synchronisation › Microsoft 365 eintragen."
        )
    if not account.client_secret and not account.client_certificate:
        raise ConfigError(
            "Für Microsoft 365 ist weder ein Zertifikat noch ein geheimer Clientschlüssel hinterlegt. "
            "Bitte unter Schnittstellen › Exchange-Synchronisation › Microsoft 365 eintragen."
        )
    authority = f"{account.authority_host.rstrip('/')}/{account.tenant_id}"
    return Credential(authority, account.client_id, account.client_secret, account.client_certificate)


def certificate_credential(pem: str) -> dict[str, str]:
    """msal's certificate form from one PEM holding the private key and the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise ConfigError(
            "Das hinterlegte Zertifikat ist nicht lesbar. Erwartet wird eine PEM-Datei mit privatem Schlüssel "
            "und Zertifikat (-----BEGIN CERTIFICATE-----)."
        ) from None
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            "Im hinterlegten Zertifikat fehlt der private Schlüssel (ohne Passwort, -----BEGIN PRIVATE KEY-----)."
        ) from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    thumb = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324 - x5t is SHA-1
    return {"private_key": key_pem, "thumbprint": thumb}


def token_roles(token: str) -> list[str]:
    """The ``roles`` claim of an access token (read, not verified: Graph verifies it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return []
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return [str(r) for r in roles] if isinstance(roles, list) else []


def translate_token_error(result: dict[str, Any]) -> ExchangeError:
    """msal's error dict -> a backend error with a plain German cause (secrets never included)."""
    codes = [int(c) for c in result.get("error_codes") or () if str(c).isdigit()]
    error = str(result.get("error") or "")
    if 7000215 in codes:
        return AuthFailed(
            "Anmeldung bei Microsoft 365 fehlgeschlagen: Der geheime Clientschlüssel ist falsch (AADSTS7000215). "
            "Bitte unter Schnittstellen den Wert des Geheimnisses eintragen, nicht die Geheimnis-ID."
        )
    if 7000222 in codes:
        return AuthFailed(
            "Anmeldung bei Microsoft 365 fehlgeschlagen: Der geheime Clientschlüssel ist abgelaufen (AADSTS7000222). "
            "Bitte im Entra Admin Center ein neues Geheimnis erstellen und unter Schnittstellen eintragen."
        )
    if 700016 in codes:
        return AuthFailed(
            "Anmeldung bei Microsoft 365 fehlgeschlagen: Die Client-ID ist in diesem Mandanten nicht bekannt "
            "(AADSTS700016). Bitte Mandanten-ID und Client-ID unter Schnittstellen prüfen."
        )
    if 700027 in codes or 700024 in codes:
        return AuthFailed(
            "Anmeldung bei Microsoft 365 fehlgeschlagen: Das Zertifikat wurde nicht anerkannt "
            f"(AADSTS{codes[0]}). Bitte prüfen, ob dasselbe Zertifikat in der App-Registrierung hochgeladen ist "
            "und die Uhr dieses Servers stimmt."
        )
    if 90002 in codes:
        return ConfigError(
            "Der Microsoft-365-Mandant wurde nicht gefunden (AADSTS90002). Bitte die Mandanten-ID unter Schnittstellen prüfen."
        )
    if error in ("invalid_client", "unauthorized_client"):
        return AuthFailed(
            f"Anmeldung bei Microsoft 365 fehlgeschlagen ({error}). Bitte App-Zugangsdaten prüfen."
        )
    if error in ("temporarily_unavailable", "server_error") or not error:
        return TransientError("Der Anmeldedienst von Microsoft ist vorübergehend nicht erreichbar.")
    return AuthFailed(f"Anmeldung bei Microsoft 365 fehlgeschlagen ({error}).")


def _http_client(verify: bool | str, timeout: float) -> Any:
    """msal's HTTP session. requests lets REQUESTS_CA_BUNDLE from the environment override a
    session's own ``verify``; a CA file the backend was given explicitly must win."""
    import functools

    import requests

    class _Session(requests.Session):
        def merge_environment_settings(
            self,
            url: str,
            proxies: dict[str, str] | None,
            stream: bool | None,
            verify: bool | str | None,
            cert: str | tuple[str, str] | None,
        ) -> dict[str, Any]:
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if isinstance(self.verify, str):
                merged["verify"] = self.verify
            return merged

    session = _Session()
    session.verify = verify
    session.request = functools.partial(session.request, timeout=timeout)  # type: ignore[method-assign]  # a default timeout
    return session


class TokenSource:
    """Tokens per app credential, shared by every session of a backend."""

    def __init__(
        self, *, verify: bool | str = True, timeout: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._verify = verify
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._apps: dict[str, tuple[Any, threading.Lock]] = {}
        self._failed: dict[str, tuple[float, ExchangeError]] = {}
        self.requests = 0  # tokens fetched from the identity provider (tests)

    def _app(self, cred: Credential) -> tuple[Any, threading.Lock]:
        key = cred.fingerprint()
        with self._lock:
            found = self._apps.get(key)
        if found is not None:
            return found
        import msal

        client_credential: Any = cred.secret or certificate_credential(cred.certificate_pem)
        try:
            app = msal.ConfidentialClientApplication(
                cred.client_id,
                client_credential=client_credential,
                authority=cred.authority,
                # A non-Microsoft authority (the sandbox; a sovereign cloud) must not be checked
                # against login.microsoftonline.com's instance list.
                validate_authority=cred.authority.startswith("https://login.microsoftonline.com/"),
                instance_discovery=cred.authority.startswith("https://login.microsoftonline.com/"),
                http_client=_http_client(self._verify, self._timeout),
            )
        except ValueError as exc:
            if "tenant" in str(exc).lower() or "OIDC" in str(exc) or "authority" in str(exc).lower():
                raise ConfigError(
                    "Der Microsoft-365-Mandant wurde nicht gefunden. Bitte die Mandanten-ID unter Schnittstellen prüfen."
                ) from None
            raise ConfigError(f"Microsoft-365-Anmeldung nicht möglich: {type(exc).__name__}") from None
        except Exception as exc:  # requests' connection errors: the identity provider is unreachable
            raise TransientError(
                f"Der Anmeldedienst von Microsoft ist nicht erreichbar ({type(exc).__name__})."
            ) from None
        with self._lock:
            found = self._apps.setdefault(key, (app, threading.Lock()))
        return found

    def token(self, account: MailboxAccount, *, fresh: bool = False) -> str:
        """A valid token (msal's cache first). ``fresh``: ignore a remembered failure."""
        cred = credential_of(account)
        key = cred.fingerprint()
        now = self._clock()
        with self._lock:
            failed = None if fresh else self._failed.get(key)
        if failed is not None and now - failed[0] < FAILURE_MEMORY:
            raise failed[1]
        app, lock = self._app(cred)
        with lock:  # one fetch per app at a time; the others then find it in msal's cache
            try:
                result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
            except Exception as exc:
                raise TransientError(
                    f"Der Anmeldedienst von Microsoft ist nicht erreichbar ({type(exc).__name__})."
                ) from None
        if "access_token" not in result:
            err = translate_token_error(result)
            if not isinstance(err, TransientError):
                with self._lock:
                    self._failed[key] = (now, err)
            raise err
        if result.get("token_source") == "identity_provider":
            with self._lock:
                self.requests += 1
        token: str = result["access_token"]
        if not token_roles(token):
            err = AuthFailed(
                "Microsoft 365 hat die Anmeldung angenommen, aber die App hat keine Berechtigungen "
                "(Administratorzustimmung fehlt). " + CONSENT_HINT
            )
            with self._lock:
                self._failed[key] = (now, err)
            raise err
        return token

    def forget(self, account: MailboxAccount) -> None:
        """Drop the cached app (and its token) after Graph refused a token as invalid."""
        try:
            key = credential_of(account).fingerprint()
        except ExchangeError:
            return
        with self._lock:
            self._apps.pop(key, None)
