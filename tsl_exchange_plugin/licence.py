"""The signed licence: customer, licensed modules, Exchange seats, expiry (Ed25519).

A licence document is JSON: the claims plus ``key_id`` and ``signature`` (base64 of
the Ed25519 signature over the canonical JSON of every other field). The plugin
trusts the public keys in ``SHIPPED_KEYS`` and, for tests and the demo, keys
named in the environment variable ``TSL_EXCHANGE_TRUSTED_KEYS``
(``key_id=base64,...``). The demo signs its own demo licence with a key it makes
at start and says so.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tsl_hostapi.types import LicenceDecision

from . import PLUGIN_ID

MODULE = PLUGIN_ID
TRUSTED_KEYS_ENV = "TSL_EXCHANGE_TRUSTED_KEYS"
# The vendor's production keys (key id -> raw public key, base64). Empty in this build:
# licences for development come from keys named in TSL_EXCHANGE_TRUSTED_KEYS.
SHIPPED_KEYS: dict[str, str] = {}


@dataclass(frozen=True)
class LicenceClaims:
    customer: str
    modules: tuple[str, ...]
    seats: int
    expires: dt.date


def _canonical(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def trusted_keys() -> dict[str, Ed25519PublicKey]:
    keys = dict(SHIPPED_KEYS)
    for part in os.environ.get(TRUSTED_KEYS_ENV, "").split(","):
        key_id, sep, b64 = part.strip().partition("=")
        if sep and key_id and b64:
            keys[key_id] = b64
    out = {}
    for key_id, b64 in keys.items():
        try:
            out[key_id] = Ed25519PublicKey.from_public_bytes(base64.b64decode(b64))
        except ValueError:
            continue
    return out


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
    document: str | None, *, today: dt.date | None = None
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
    key = trusted_keys().get(key_id)
    if key is None:
        return LicenceDecision(False, "Die Lizenz stammt nicht vom Hersteller (unbekannter Schlüssel)."), None
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
