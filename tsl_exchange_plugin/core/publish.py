"""What worker processes without a host read (``shared_state.py``): the host writes it at
startup, on every account, firm or hold change, and now and then in "external" mode."""

from __future__ import annotations

import logging
import threading

from tsl_hostapi.types import Host

from .. import PLUGIN_ID
from ..outbox.base import Outbox
from . import shared_state
from .accounts import AccountStore
from .config import FirmConfig

log = logging.getLogger(__name__)


class WorkerStatePublisher:
    def __init__(self, host: Host, config: FirmConfig, accounts: AccountStore, outbox: Outbox) -> None:
        self.host = host
        self.config = config
        self.accounts = accounts
        self.outbox = outbox
        self._lock = threading.Lock()
        self._loop: tuple[threading.Thread, threading.Event] | None = None

    def publish(self, *, full: bool = False) -> int:
        """Write the firm's rules, the licence and every user's account row into the store;
        with ``full``, also remove rows of users who no longer have settings. Unchanged rows
        are not rewritten. Returns how many rows changed."""
        with self._lock:
            profiles: dict[str, shared_state.MailboxProfile] = {}
            for user in self.host.list_users():
                if isinstance(self.host.settings.get(PLUGIN_ID, f"user:{user.id}"), dict):
                    profiles[user.id] = shared_state.MailboxProfile(user, self.accounts.load(user.id))
            lic = self.host.licence(PLUGIN_ID)
            rows = shared_state.host_rows(
                self.config.firm_settings(), profiles, lic.document if lic else None
            )
            if full:
                for key in self.outbox.worker_rows(shared_state.MAILBOX_PREFIX):
                    rows.setdefault(key, None)
            return self.outbox.put_worker_rows(rows)

    def publish_quietly(self) -> None:
        """``publish(full=True)``; a store hiccup must not stop the host (the loop tries again)."""
        try:
            self.publish(full=True)
        except Exception:
            log.warning("Exchange-Sync: Einstellungen für die Worker nicht geschrieben", exc_info=True)

    def start(self) -> None:
        """Publish now and then (external workers): rows of users removed meanwhile go, too."""
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop,), name="tsl-exchange-publisher", daemon=True)
        self._loop = (thread, stop)
        thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(shared_state.PUBLISH_EVERY):
            self.publish_quietly()

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop[1].set()
            loop[0].join(5.0)

    def write_hold(self, reason: str) -> int:
        return self.outbox.put_worker_rows(shared_state.hold_row(reason))

    def stored_hold(self) -> str:
        try:
            return shared_state.hold_reason(self.outbox)
        except Exception:  # the store is unreachable: the claim that follows fails the same way
            log.debug("reading the hold failed", exc_info=True)
            return ""
