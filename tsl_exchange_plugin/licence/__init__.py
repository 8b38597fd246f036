"""The signed licence: customer, licensed modules, Exchange seats, expiry (Ed25519).

A licence document is JSON: the claims plus ``key_id`` and ``signature`` (base64 of
the Ed25519 signature over the canonical JSON of every other field).

Which keys are trusted:

- the vendor's public keys in ``VENDOR_KEYS`` (shipped; the private key never leaves the vendor);
- development keys, only behind a visible switch: ``TSL_EXCHANGE_DEV_KEYS=1`` together with
  ``TSL_EXCHANGE_TRUSTED_KEYS`` (``key_id=base64,...``), or a data directory's
  ``licence-dev-key.json`` (the demo records its key there, so every later command on that
  directory agrees with it). A licence signed with such a key is a *development licence* and
  every command says so; a development key can never stand in for a vendor key id.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tsl_hostapi.types import LicenceDecision

from .. import PLUGIN_ID

MODULE = PLUGIN_ID
TRUSTED_KEYS_ENV = "TSL_EXCHANGE_TRUSTED_KEYS"
DEV_KEYS_ENV = "TSL_EXCHANGE_DEV_KEYS"
DEV_KEY_FILE = "licence-dev-key.json"
# The vendor's licence keys (key id -> raw Ed25519 public key, base64). Only the public half ships.
VENDOR_KEYS: dict[str, str] = {"tsl-vendor-2026": "A1UwskGnX5qWTNGrfi8CLbpCPUPqjzRK1e2bd0LBDq0="}
SHIPPED_KEYS = VENDOR_KEYS
DEV_WARNING = (
    "Achtung: Entwicklungsmodus ({what}): Lizenzen mit Entwicklungsschlüsseln werden anerkannt. "
    "Nicht für den Echtbetrieb."
)


def dev_switch_on() -> bool:
    return os.environ.get(DEV_KEYS_ENV, "").strip() == "1"


def _parse_keys(text: str) -> dict[str, str]:
    keys = {}
    for part in text.split(","):
        key_id, sep, b64 = part.strip().partition("=")
        if sep and key_id and b64:
            keys[key_id.strip()] = b64.strip()
    return keys


def env_dev_keys() -> dict[str, str]:
    """Development keys from the environment, only while ``TSL_EXCHANGE_DEV_KEYS=1`` is set."""
    return _parse_keys(os.environ.get(TRUSTED_KEYS_ENV, "")) if dev_switch_on() else {}


def data_dir_dev_keys(data_dir: str | Path | None) -> dict[str, str]:
    """The development key a demo recorded in the plugin's data directory ({} when there is none)."""
    if not data_dir:
        return {}
    path = Path(data_dir) / DEV_KEY_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
        return {str(data["key_id"]): str(data["public_key"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def record_dev_key(data_dir: str | Path, key_id: str, private: Ed25519PrivateKey) -> Path:
    """Record a development key's public half in a data directory (the demo)."""
    path = Path(data_dir) / DEV_KEY_FILE
    data = {"key_id": key_id, "public_key": public_key_b64(private), "note": "Entwicklungsschlüssel"}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def dev_warnings(data_dir: str | Path | None = None) -> list[str]:
    """One German warning line per development switch that is on (for every command's output)."""
    lines = []
    if dev_switch_on():
        lines.append(DEV_WARNING.format(what=f"{DEV_KEYS_ENV}=1"))
    if data_dir_dev_keys(data_dir):
        lines.append(
            DEV_WARNING.format(what=f"Entwicklungsschlüssel in {DEV_KEY_FILE} des Datenverzeichnisses")
        )
    return lines


@dataclass(frozen=True)
class LicenceClaims:
    customer: str
    modules: tuple[str, ...]
    seats: int
    expires: dt.date


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def trusted_key_texts(dev_keys: dict[str, str] | None = None) -> dict[str, str]:
    """Key id -> base64 public key: the vendor's, then development keys (never over a vendor id)."""
    keys = {**env_dev_keys(), **(dev_keys or {})}
    keys.update(VENDOR_KEYS)
    return keys


def trusted_keys(dev_keys: dict[str, str] | None = None) -> dict[str, Ed25519PublicKey]:
    out = {}
    for key_id, b64 in trusted_key_texts(dev_keys).items():
        try:
            out[key_id] = Ed25519PublicKey.from_public_bytes(base64.b64decode(b64))
        except ValueError:
            continue
    return out


def is_development(document: str | None) -> bool:
    """Whether ``document`` is signed with anything but a vendor key."""
    try:
        return str(json.loads(document or "")["key_id"]) not in VENDOR_KEYS
    except (ValueError, KeyError, TypeError):
        return False


def public_key_b64(private: Ed25519PrivateKey) -> str:
    return base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def sign(claims: LicenceClaims, private: Ed25519PrivateKey, key_id: str) -> str:
    """Issue a licence document (vendor side; used by tests and the demo)."""
    data = {
        "customer": claims.customer,
        "modules": list(claims.modules),
        "seats": claims.seats,
        "expires": claims.expires.isoformat(),
        "key_id": key_id,
    }
    data["signature"] = base64.b64encode(private.sign(_canonical(data))).decode("ascii")
    return json.dumps(data, ensure_ascii=False, indent=2)


def verify(
    document: str | None, *, today: dt.date | None = None, dev_keys: dict[str, str] | None = None
) -> tuple[LicenceDecision, LicenceClaims | None]:
    """Check a licence document. The reason is German and says what to do."""
    if not document or not document.strip():
        return LicenceDecision(
            False, "Keine Lizenz für Exchange-Sync hinterlegt. Bitte die Lizenzdatei einspielen."
        ), None
    try:
        data = json.loads(document)
        signature = base64.b64decode(data.pop("signature"), validate=True)
        key_id = data["key_id"]
        claims = LicenceClaims(
            customer=str(data["customer"]),
            modules=tuple(str(m) for m in data["modules"]),
            seats=int(data["seats"]),
            expires=dt.date.fromisoformat(data["expires"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return LicenceDecision(False, "Die Lizenzdatei ist beschädigt oder unvollständig."), None
    key = trusted_keys(dev_keys).get(key_id)
    if key is None and key_id in _parse_keys(os.environ.get(TRUSTED_KEYS_ENV, "")):
        return LicenceDecision(
            False,
            "Die Lizenz ist mit einem Entwicklungsschlüssel signiert; solche Lizenzen gelten nur im "
            f"Entwicklungsmodus ({DEV_KEYS_ENV}=1). Bitte die Lizenzdatei des Herstellers einspielen.",
        ), None
    if key is None:
        return LicenceDecision(
            False,
            "Die Lizenz stammt nicht vom Hersteller (unbekannter Schlüssel). Bitte die Lizenzdatei des "
            "Herstellers mit „tsl-exchange licence install“ einspielen.",
        ), None
    try:
        key.verify(signature, _canonical(data))
    except InvalidSignature:
        return LicenceDecision(False, "Die Lizenz ist ungültig: die Signatur passt nicht (verändert?)."), None
    if MODULE not in claims.modules:
        return LicenceDecision(False, "Die Lizenz umfasst das Modul Exchange-Sync nicht."), claims
    today = today or dt.date.today()
    if claims.expires < today:
        reason = f"Die Lizenz ist am {claims.expires:%d.%m.%Y} abgelaufen."
        return LicenceDecision(False, reason, seats=claims.seats, expires=claims.expires), claims
    return LicenceDecision(True, "", seats=claims.seats, expires=claims.expires), claims
