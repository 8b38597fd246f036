"""What the core reads from the host's settings for one host: the firm's rules, who has Exchange
Sync switched on, and each mailbox's account and mapping context."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from tsl_hostapi.types import Host, User

from .. import PLUGIN_ID
from ..backends.base import MailboxAccount
from ..credentials import Vault
from ..mapping.context import MappingContext
from ..outbox import snapshot
from . import shared_state
from .accounts import AccountStore
from .firm import FIRM_KEY, QUEUE_URL_ENV

log = logging.getLogger(__name__)

ENABLED_USERS_TTL = 5.0
"""Seconds the list of enabled users is cached: it is read on every save."""


class FirmConfig:
    def __init__(self, host: Host, accounts: AccountStore, vault: Vault) -> None:
        self.host = host
        self.accounts = accounts
        self.vault = vault
        self._enabled_cache: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._cache_lock = threading.Lock()

    def firm_settings(self) -> dict[str, Any]:
        raw = self.host.settings.get(PLUGIN_ID, FIRM_KEY, {})
        return raw if isinstance(raw, dict) else {}

    def worker_mode(self) -> str:
        """Where pushing runs: "host" (default) in worker threads of this process, or
        "external" (firm setting ``worker``): this process only enqueues and separate
        ``tsl-exchange worker`` processes push. An unknown value counts as "host", so a
        typo never leaves the queue without a worker."""
        mode = self.firm_settings().get("worker", "host")
        if mode in ("host", "external"):
            return str(mode)
        log.warning("Exchange-Sync: unbekannte Worker-Einstellung %r, es gilt 'host'.", mode)
        return "host"

    def queue_url(self) -> str | None:
        return os.environ.get(QUEUE_URL_ENV) or self.firm_settings().get("queue_url") or None

    def reconcile_auto(self) -> bool:
        """Firm setting ``reconcile_auto`` (default on): sweep after enabling and after an account is set up."""
        return self.firm_settings().get("reconcile_auto", True) is not False

    def target_folders(self) -> dict[str, str]:
        """Item class -> subfolder name, when the firm pushes into a named subfolder."""
        return shared_state.target_folders(self.firm_settings())

    def mapping_context(self, mailbox: str, snap: snapshot.Snapshot) -> MappingContext:
        """How a record looks in one user's mailbox: their time zone and lead times, the firm's rules.
        (Worker processes without a host build the same from the store: ``shared_state``.)"""
        recipient = snap.users.get(mailbox) or self.host.get_user(mailbox) or User(id=mailbox, name=mailbox)
        return shared_state.mapping_context(
            self.firm_settings(), self.accounts.load(mailbox), recipient, snap
        )

    def resolve_account(self, mailbox: str) -> MailboxAccount:
        return shared_state.resolve_account(
            mailbox,
            self.host.get_user(mailbox),
            self.accounts.load(mailbox),
            self.firm_settings(),
            self.vault,
        )

    def enabled_users(self) -> frozenset[str]:
        """Active users with Exchange Sync switched on (cached briefly: read on every save)."""
        with self._cache_lock:
            at, users = self._enabled_cache
            if time.monotonic() - at < ENABLED_USERS_TTL:
                return users
        enabled = set(self.accounts.enabled_user_ids())
        users = frozenset(u.id for u in self.host.list_users() if u.active and u.id in enabled)
        with self._cache_lock:
            self._enabled_cache = (time.monotonic(), users)
        return users

    def invalidate(self) -> None:
        """An account changed: the next read of the enabled users asks the host again."""
        with self._cache_lock:
            self._enabled_cache = (0.0, frozenset())
