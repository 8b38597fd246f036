"""Authentication for the EWS sandbox: the mailbox accounts, Basic, and NTLM through pyspnego's acceptor.

pyspnego's NTLM acceptor reads its users from the file named by the process-global environment
variable ``NTLM_USER_FILE``, and it reads that file inside ``step()`` when the Type-3 message
arrives (``spnego/_ntlm.py``: ``_step_accept_authenticate`` -> ``_NTLMCredential`` ->
``_get_credential_file``), not only when the acceptor is created. Each server therefore keeps its
own file under its data directory, and every acceptor creation and step runs under one module lock
with the variable pointing at that server's file. Two sandbox servers in one process (even with the
same user and different passwords) stay independent.

The file uses pyspnego's smbpasswd form (``USER:UID:LM:NT:FLAGS:LCT``) so it holds hashes, not
passwords, and passwords may contain colons.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import spnego
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1  # pyspnego's own: hashlib has no MD4 on OpenSSL 3
from spnego.channel_bindings import GssChannelBindings
from spnego.exceptions import SpnegoError

REALM_DEFAULT = "127.0.0.1"
_ENV_LOCK = threading.Lock()
_NTLM_SIGNATURE = b"NTLMSSP\x00"


@dataclass(frozen=True)
class MailboxAccount:
    email: str
    username: str
    domain: str
    password: str = field(repr=False)


class CredentialStore:
    """The mailbox accounts of one sandbox server. Thread-safe."""

    def __init__(self, ntlm_user_file: str | os.PathLike[str]):
        self.ntlm_user_file = Path(ntlm_user_file)
        self._lock = threading.Lock()
        self._accounts: dict[str, MailboxAccount] = {}  # key: email lower-cased
        self._generation: dict[str, int] = {}
        self._write_user_file()

    # --- administration -------------------------------------------------------------------
    def add(self, email: str, password: str, *, username: str | None = None, domain: str = "KANZLEI") -> None:
        if "@" not in email or ":" in email or "\\" in email:
            raise ValueError(f"invalid mailbox address: {email!r}")
        username = username or email.split("@", 1)[0]
        if ":" in username or "\\" in username or ":" in domain or "\\" in domain:
            raise ValueError(f"invalid user name or domain for {email!r}")
        with self._lock:
            key = email.lower()
            self._accounts[key] = MailboxAccount(email, username, domain, password)
            self._generation[key] = self._generation.get(key, 0) + 1
            self._write_user_file_locked()

    def set_password(self, email: str, password: str) -> None:
        with self._lock:
            key = email.lower()
            old = self._accounts.get(key)
            if old is None:
                raise KeyError(f"unknown mailbox: {email}")
            self._accounts[key] = MailboxAccount(old.email, old.username, old.domain, password)
            # A password change ends authenticated NTLM connections (see ``generation``).
            self._generation[key] += 1
            self._write_user_file_locked()

    def emails(self) -> list[str]:
        with self._lock:
            return [a.email for a in self._accounts.values()]

    def account(self, email: str) -> MailboxAccount | None:
        with self._lock:
            return self._accounts.get(email.lower())

    def generation(self, email: str) -> int:
        """Changes whenever the mailbox's credentials change."""
        with self._lock:
            return self._generation.get(email.lower(), -1)

    # --- lookups ----------------------------------------------------------------------------
    def _find_locked(self, login: str) -> MailboxAccount | None:
        """``DOMAIN\\user``, ``user@domain`` (the e-mail) or a bare ``user``, case-insensitive."""
        login = login.lower()
        if "\\" in login:
            domain, user = login.split("\\", 1)
            if not domain:  # NTLM with a UPN sends "\\alice@kanzlei.test"
                return self._find_locked(user)
            for acc in self._accounts.values():
                if acc.domain.lower() == domain and acc.username.lower() == user:
                    return acc
            return None
        if "@" in login:
            return self._accounts.get(login)
        matches = [a for a in self._accounts.values() if a.username.lower() == login]
        return matches[0] if len(matches) == 1 else None

    def email_for_login(self, login: str) -> str | None:
        with self._lock:
            acc = self._find_locked(login)
            return acc.email if acc else None

    def check_basic(self, login: str, password: str) -> str | None:
        """The mailbox e-mail when ``login``/``password`` are right, else None."""
        with self._lock:
            acc = self._find_locked(login)
        if acc is None:
            # Compare anyway so a wrong user name costs as long as a wrong password.
            hmac.compare_digest(password.encode(), b"x" * len(password.encode()))
            return None
        return acc.email if hmac.compare_digest(password.encode(), acc.password.encode()) else None

    # --- NTLM user file -----------------------------------------------------------------------
    def _write_user_file(self) -> None:
        with self._lock:
            self._write_user_file_locked()

    def _write_user_file_locked(self) -> None:
        lines = []
        uid = 1000
        for acc in self._accounts.values():
            lm = base64.b16encode(lmowfv1(acc.password)).decode()
            nt = base64.b16encode(ntowfv1(acc.password)).decode()
            for login in (f"{acc.domain}\\{acc.username}", acc.email, acc.username):
                uid += 1
                lines.append(f"{login}:{uid}:{lm}:{nt}:[U]:LCT-00000000")
        self.ntlm_user_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ntlm_user_file.with_name(self.ntlm_user_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # pyspnego reads the file with splitlines(); an empty file must still exist.
            fh.write("\n".join(lines) + ("\n" if lines else ""))
        os.replace(tmp, self.ntlm_user_file)


def parse_basic(value: str) -> tuple[str, str] | None:
    """``(login, password)`` from a ``Basic`` credential token, None when malformed."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # requests encodes Basic credentials as latin-1
    if ":" not in text:
        return None
    login, password = text.split(":", 1)
    return login, password


def ntlm_message_type(token: bytes) -> int | None:
    if len(token) < 12 or not token.startswith(_NTLM_SIGNATURE):
        return None
    return int.from_bytes(token[8:12], "little")


class NtlmFailure(Exception):
    """The NTLM exchange failed: wrong password, unknown user, bad token or channel binding."""


class NtlmHandshake:
    """One NTLM exchange on one connection (NTLM authenticates the connection, not the request)."""

    def __init__(self, store: CredentialStore, *, cert_hash: bytes | None = None):
        self._store = store
        bindings = (
            GssChannelBindings(application_data=b"tls-server-end-point:" + cert_hash) if cert_hash else None
        )
        with _user_file(store.ntlm_user_file):
            self._ctx = spnego.server(
                hostname="localhost",
                service="http",
                protocol="ntlm",
                channel_bindings=bindings,
                # Force pyspnego's own implementation: a system gss-ntlmssp would ignore our file.
                options=spnego.NegotiateOptions.use_ntlm,
            )

    def negotiate(self, token: bytes) -> bytes:
        """Type 1 in, Type 2 (the challenge) out."""
        try:
            with _user_file(self._store.ntlm_user_file):
                out = self._ctx.step(token)
        except (SpnegoError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise NtlmFailure(f"bad NTLM negotiate message: {exc}") from exc
        if not out:
            raise NtlmFailure("NTLM acceptor produced no challenge")
        return out

    def authenticate(self, token: bytes) -> str:
        """Type 3 in; the authenticated mailbox e-mail out."""
        try:
            with _user_file(self._store.ntlm_user_file):
                self._ctx.step(token)
        except (SpnegoError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise NtlmFailure(f"NTLM authentication failed: {exc}") from exc
        principal = self._ctx.client_principal if self._ctx.complete else None
        email = self._store.email_for_login(principal) if principal else None
        if email is None:
            raise NtlmFailure(f"NTLM principal {principal!r} maps to no mailbox")
        return email


class _user_file:
    """Point ``NTLM_USER_FILE`` at one server's file while pyspnego runs (module lock held)."""

    def __init__(self, path: Path):
        self._path = str(path)

    def __enter__(self) -> None:
        _ENV_LOCK.acquire()
        self._old = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = self._path

    def __exit__(self, *exc: object) -> None:
        try:
            if self._old is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = self._old
        finally:
            _ENV_LOCK.release()


def www_authenticate(*, ntlm: bool, basic: bool, realm: str = REALM_DEFAULT) -> list[str]:
    """The ``WWW-Authenticate`` values of an IIS 401, strongest first (IIS lists Negotiate/NTLM before Basic)."""
    values = []
    if ntlm:
        values.append("NTLM")
    if basic:
        values.append(f'Basic realm="{realm}"')
    return values
