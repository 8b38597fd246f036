"""Encrypted credential vault: passwords at rest are Fernet tokens, never plain text.

The key comes from the environment (``TSL_EXCHANGE_KEY``, for operators) or from a
key file in the plugin's data directory, created readable only by the host's user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_ENV = "TSL_EXCHANGE_KEY"
KEY_FILE_ENV = "TSL_EXCHANGE_KEY_FILE"
KEY_FILE_NAME = "credentials.key"


class VaultError(Exception):
    """A stored secret cannot be read (key missing or changed). Message is German, without the secret."""


class Vault:
    """Encrypts and decrypts secrets with the firm's key (newest key first, older keys still read)."""

    def __init__(self, keys: list[bytes]):
        if not keys:
            raise VaultError("Kein Schlüssel für die Passwortverschlüsselung vorhanden.")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def open(cls, data_dir: str | Path) -> Vault:
        """Key from the environment, else from the key file (created on first use, mode 0600)."""
        env_key = os.environ.get(KEY_ENV)
        if env_key:
            return cls([k.encode() for k in _env_keys(env_key)])
        path = key_file_path(data_dir)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL so two processes starting at once cannot each write a different key.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(Fernet.generate_key() + b"\n")
        keys = [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
        return cls(keys)

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError) as exc:
            raise VaultError(
                "Das gespeicherte Passwort kann nicht entschlüsselt werden (Schlüssel geändert?). "
                "Bitte das Passwort im Benutzer-Editor › Exchange neu eingeben."
            ) from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the newest key."""
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")


def _env_keys(value: str) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()]


def key_file_path(data_dir: str | Path) -> Path:
    """The key file in use when ``TSL_EXCHANGE_KEY`` is not set: ``TSL_EXCHANGE_KEY_FILE`` or
    ``credentials.key`` in the plugin's data directory."""
    return Path(os.environ.get(KEY_FILE_ENV) or Path(data_dir) / KEY_FILE_NAME)


@dataclass(frozen=True)
class RotatedKey:
    """The outcome of a key rotation: the vault with the new key in front of the old ones, and
    where the key lives. ``source`` "file": ``path`` was rewritten. ``source`` "env": the key comes
    from ``TSL_EXCHANGE_KEY``, which no program can change for the administrator; ``env_value``
    is what the variable must hold from now on (new key first, the old ones behind it)."""

    vault: Vault = field(repr=False)
    source: Literal["file", "env"]
    path: Path | None = None
    env_value: str = field(default="", repr=False)


def rotate_active_key(data_dir: str | Path) -> RotatedKey:
    """Rotate the key actually in use, in the order ``Vault.open`` reads it: the environment
    variable (nothing is written; the caller shows ``env_value`` once), else the key file named
    by ``TSL_EXCHANGE_KEY_FILE``, else ``credentials.key`` in the data directory. Old keys stay
    behind the new one, so tokens not yet re-encrypted still decrypt."""
    env_key = os.environ.get(KEY_ENV)
    if env_key:
        keys = [Fernet.generate_key().decode("ascii"), *_env_keys(env_key)]
        return RotatedKey(Vault([k.encode() for k in keys]), "env", env_value=",".join(keys))
    path = key_file_path(data_dir)
    rotate_key_file(path)
    return RotatedKey(Vault.open(data_dir), "file", path)


def rotate_key_file(path: str | Path) -> bytes:
    """Put a new key in front of the key file; older keys stay so existing tokens still decrypt."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    new = Fernet.generate_key()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(new + b"\n" + old)
        fh.flush()
        os.fsync(fh.fileno())  # a key lost in a crash would make every stored password unreadable
    os.replace(tmp, path)
    return new


def open_worker_vault(key_file: str | Path | None = None) -> Vault:
    """The vault of a worker process on another machine: the host's key, never a new one.

    ``key_file`` (``tsl-exchange worker --key-file``) first, then ``TSL_EXCHANGE_KEY``, then
    ``TSL_EXCHANGE_KEY_FILE``. Unlike ``Vault.open`` nothing is created: a fresh key could
    decrypt none of the host's passwords. Raises VaultError (German) when no usable key is given.
    """
    if key_file is None and not os.environ.get(KEY_ENV):
        key_file = os.environ.get(KEY_FILE_ENV) or None
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise VaultError(
                f"Die Schlüsseldatei {path} kann nicht gelesen werden ({exc.strerror or exc}). Bitte die "
                f"Datei {KEY_FILE_NAME} aus dem Datenverzeichnis des Hosts hierher kopieren (nur für den "
                "Worker-Benutzer lesbar) und mit --key-file angeben."
            ) from None
        keys = [line.strip() for line in text.splitlines() if line.strip()]
        where = f"in {path}"
    else:
        keys = [k.encode() for k in _env_keys(os.environ.get(KEY_ENV, ""))]
        where = f"in {KEY_ENV}"
    if not keys:
        raise VaultError(
            "Kein Schlüssel für die Exchange-Passwörter: bitte die Umgebungsvariable "
            f"{KEY_ENV} setzen oder --key-file DATEI angeben (die Datei {KEY_FILE_NAME} aus dem "
            "Datenverzeichnis des Hosts)."
        )
    try:
        return Vault(keys)
    except ValueError:
        raise VaultError(
            f"Der Schlüssel {where} ist kein gültiger Schlüssel für die Exchange-Passwörter. Erwartet "
            f"wird der Inhalt der Datei {KEY_FILE_NAME} aus dem Datenverzeichnis des Hosts."
        ) from None
