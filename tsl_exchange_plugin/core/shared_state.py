"""What a worker needs from the host, kept in the queue's store, so a worker needs no host.

The host writes these rows (``Outbox.put_worker_rows``) at startup, whenever an account,
the firm's settings or the administrator's hold change, and every ``PUBLISH_EVERY``
seconds in worker mode "external" (users have no hook in host API 1.0: a renamed or
deactivated user reaches the workers that way). Writing is idempotent: an unchanged row
is not rewritten. Every row is JSON text:

* ``firm``: the firm's rules the mapping and the transport read: done-deadline mode,
  default lead times, request timeout, target folders. Never the queue URL.
* ``mailbox:<user id>``: the user record (the mapping names them, the worker checks
  ``active``) and their Exchange settings as the host stores them: host or EWS URL,
  username, auth type, TLS choice, time zone, lead times, and the password only as the
  Fernet token the host keeps. A worker decrypts it with the host's key
  (``TSL_EXCHANGE_KEY`` or ``--key-file``); the plain password is never in the store.
* ``hold``: ``{"reason": ...}`` while an administrator holds all pushing (cleanup before
  disable); no row otherwise. Every worker's gate reads it before every claim.
* ``licence``: ``{"document": ...}``: the signed licence document installed in the host
  (no secret). Each worker verifies it itself (signature, module, expiry date), so a
  licence that expires while the host is down still stops pushing; until the host has
  written the row, a worker holds (fails closed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from tsl_hostapi import serialize
from tsl_hostapi.types import User

from .. import licence
from ..backends.base import MailboxAccount
from ..credentials import Vault, VaultError
from ..mapping.context import DEFAULT_TIMEZONE, DONE_DEADLINE_MODES, MappingContext
from ..outbox.base import Outbox
from ..outbox.snapshot import Snapshot
from .accounts import GRAPH_FIRM_KEYS, ExchangeSettings, mailbox_account
from .firm import FIRM_DEFAULTS

log = logging.getLogger(__name__)

FIRM_ROW = "firm"
HOLD_ROW = "hold"
LICENCE_ROW = "licence"
MAILBOX_PREFIX = "mailbox:"
PUBLISH_EVERY = 30.0  # seconds between the host's re-publications in worker mode "external"

# The firm settings a worker reads. The queue URL (which may carry a database password)
# and purely host-side settings stay out of the store.
FIRM_RULE_KEYS = (
    "done_deadline",
    "appointment_reminder_minutes",
    "deadline_reminder_minutes",
    "pre_deadline_reminder_minutes",
    "request_timeout",
    "target",
    "subfolder",
    # The Microsoft 365 app registration; its secret and certificate only as the host's vault tokens.
    *GRAPH_FIRM_KEYS,
)

WRONG_KEY = (
    "Der Worker kann das gespeicherte Exchange-Passwort nicht entschlüsseln: sein Schlüssel "
    "(TSL_EXCHANGE_KEY oder --key-file) ist nicht der des Hosts."
)
WRONG_KEY_ADVICE = (
    " Bitte die Datei credentials.key aus dem Datenverzeichnis des Hosts verwenden und den Worker neu "
    "starten; er gibt das Postfach dann wieder frei."
)
NO_LICENCE_ROW = (
    "Übertragung angehalten: Der Host hat noch keinen Lizenzstand in die Warteschlange geschrieben. "
    "Bitte timeSensor LEGAL mit aktiviertem Exchange-Sync starten. Die Änderungen bleiben in der Warteschlange."
)


# --------------------------------------------------------------------------- shared by host and worker


def firm_rules(firm: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the firm's settings a worker reads."""
    return {k: firm[k] for k in FIRM_RULE_KEYS if k in firm}


def target_folders(firm: Mapping[str, Any]) -> dict[str, str]:
    """Item class -> subfolder name, when the firm pushes into a named subfolder."""
    name = str(firm.get("subfolder") or "").strip()
    if firm.get("target") == "subfolder" and name:
        return {"contact": name, "calendar": name, "task": name}
    return {}


def mapping_context(
    firm: Mapping[str, Any], mine: ExchangeSettings, recipient: User, snap: Snapshot
) -> MappingContext:
    """How a record looks in one user's mailbox: their time zone and lead times, the firm's rules."""

    def minutes(key: str) -> int | None:
        own = getattr(mine, key)
        default = FIRM_DEFAULTS[key]
        value = own if own is not None else firm.get(key, default)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default

    done = firm.get("done_deadline")
    return MappingContext(
        recipient=recipient,
        timezone=mine.timezone or DEFAULT_TIMEZONE,
        appointment_reminder_minutes=minutes("appointment_reminder_minutes"),
        deadline_reminder_minutes=minutes("deadline_reminder_minutes"),
        pre_deadline_reminder_minutes=minutes("pre_deadline_reminder_minutes"),
        done_deadline=done if done in DONE_DEADLINE_MODES else FIRM_DEFAULTS["done_deadline"],
        cases={snap.case.id: snap.case} if snap.case else {},
        users=snap.users,
    )


def resolve_account(
    mailbox: str, user: User | None, settings: ExchangeSettings, firm: Mapping[str, Any], vault: Vault
) -> MailboxAccount:
    """Connection data for one mailbox; LookupError, AccountError or VaultError (German) when
    it cannot be used (the worker parks the mailbox then)."""
    if user is None:
        raise LookupError(f"Benutzer {mailbox} existiert nicht mehr.")
    if not user.active:
        raise LookupError(f"Benutzer {user.name} ist deaktiviert.")
    account = mailbox_account(user, settings, vault, firm=firm)
    timeout = firm.get("request_timeout")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        account = replace(account, timeout=float(timeout))
    return account


def licence_gate(document: str | None, today: dt.date | None = None) -> str | None:
    """Why the licence document holds every push, or None (the same words as the host's gate)."""
    decision, _claims = licence.verify(document, today=today)
    if decision.allowed:
        return None
    return f"Übertragung angehalten: {decision.reason} Die Änderungen bleiben in der Warteschlange."


def hold_reason(outbox: Outbox) -> str:
    """The administrator's hold as the store has it ("" when none)."""
    raw = outbox.worker_row(HOLD_ROW)
    if raw is None:
        return ""
    try:
        reason = json.loads(raw).get("reason")
    except (ValueError, AttributeError):
        reason = None
    # A row that cannot be read is still a hold: pushing through a cleanup is the worse mistake.
    return str(reason or "Übertragung angehalten (Administrator).")


def hold_row(reason: str) -> dict[str, str | None]:
    """The rows that set (``reason``) or clear ("") the administrator's hold."""
    return {HOLD_ROW: json.dumps({"reason": reason}, ensure_ascii=False) if reason else None}


# --------------------------------------------------------------------------- the host's side


@dataclass(frozen=True)
class MailboxProfile:
    """One ``mailbox:<id>`` row: the user record and their Exchange settings (password as token)."""

    user: User
    settings: ExchangeSettings

    def dump(self) -> str:
        return json.dumps(
            {"user": serialize.to_data(self.user), "settings": asdict(self.settings)},
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def load(cls, text: str) -> MailboxProfile:
        data = json.loads(text)
        user = serialize.from_data(User, data["user"])
        raw = data.get("settings") or {}
        known = {k: v for k, v in raw.items() if k in ExchangeSettings.__dataclass_fields__}
        return cls(user=user, settings=ExchangeSettings(**known))


def host_rows(
    firm: Mapping[str, Any],
    profiles: Mapping[str, MailboxProfile],
    licence_document: str | None,
) -> dict[str, str | None]:
    """The rows the host publishes (all but the hold, which only hold/release write)."""
    rows: dict[str, str | None] = {
        FIRM_ROW: json.dumps(firm_rules(firm), ensure_ascii=False, sort_keys=True),
        LICENCE_ROW: json.dumps({"document": licence_document}, ensure_ascii=False),
    }
    for mailbox, profile in profiles.items():
        rows[MAILBOX_PREFIX + mailbox] = profile.dump()
    return rows


# --------------------------------------------------------------------------- a worker's side


class StoreContext:
    """A worker process's view of the host: everything read from the queue's store.

    ``resolve_account`` and ``gate`` read the store on every call (once per claim), so a
    new password, a deactivated user or the administrator's hold count from the next claim;
    ``mapping_context`` (called for every record) reuses what was read for ``ttl`` seconds.
    """

    def __init__(
        self,
        outbox: Outbox,
        vault: Vault,
        *,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        self.outbox = outbox
        self.vault = vault
        self._ttl = ttl
        self._clock = clock
        self._today = today
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def _read(self, key: str, parse: Callable[[str], Any], *, fresh: bool = False) -> Any:
        now = self._clock()
        if not fresh:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self._ttl:
                return hit[1]
        raw = self.outbox.worker_row(key)
        value = None if raw is None else parse(raw)
        with self._lock:
            self._cache[key] = (now, value)
        return value

    def firm(self, *, fresh: bool = False) -> dict[str, Any]:
        firm = self._read(FIRM_ROW, json.loads, fresh=fresh)
        return firm if isinstance(firm, dict) else {}

    def profile(self, mailbox: str, *, fresh: bool = False) -> MailboxProfile | None:
        try:
            profile: MailboxProfile | None = self._read(
                MAILBOX_PREFIX + mailbox, MailboxProfile.load, fresh=fresh
            )
            return profile
        except (ValueError, KeyError, TypeError) as exc:
            raise LookupError(
                f"Die Exchange-Einstellungen von Benutzer {mailbox} in der Warteschlange sind nicht lesbar "
                f"({exc}). Bitte die Einstellungen im Benutzer-Editor › Exchange erneut speichern."
            ) from None

    def resolve_account(self, mailbox: str) -> MailboxAccount:
        profile = self.profile(mailbox, fresh=True)
        if profile is None:
            raise LookupError(
                f"Für Benutzer {mailbox} stehen keine Exchange-Einstellungen in der Warteschlange "
                "(Benutzer gelöscht, oder der Host hat sie noch nicht geschrieben)."
            )
        try:
            return resolve_account(mailbox, profile.user, profile.settings, self.firm(fresh=True), self.vault)
        except VaultError:
            raise VaultError(WRONG_KEY + WRONG_KEY_ADVICE) from None

    def mapping_context(self, mailbox: str, snap: Snapshot) -> MappingContext:
        profile = self.profile(mailbox)
        if profile is None:
            mine, recipient = ExchangeSettings(), User(id=mailbox, name=mailbox)
        else:
            mine, recipient = profile.settings, profile.user
        return mapping_context(self.firm(), mine, snap.users.get(mailbox) or recipient, snap)

    def gate(self) -> str | None:
        """Why every push is held now (administrator's hold, licence), or None."""
        reason = hold_reason(self.outbox)
        if reason:
            return reason
        raw = self.outbox.worker_row(LICENCE_ROW)
        if raw is None:
            return NO_LICENCE_ROW
        try:
            document = json.loads(raw).get("document")
        except (ValueError, AttributeError):
            document = None
        return licence_gate(document, self._today())

    def target_folders(self) -> dict[str, str]:
        return target_folders(self.firm(fresh=True))

    def unpark_wrong_key(self) -> list[str]:
        """Give back the mailboxes parked because a worker had the wrong key: this one starts
        with a key the operator has just given it. Returns their ids."""
        freed = []
        for state in self.outbox.mailbox_states():
            if state.parked and state.parked_reason.startswith(WRONG_KEY):
                self.outbox.unpark(state.mailbox)
                freed.append(state.mailbox)
        return freed
