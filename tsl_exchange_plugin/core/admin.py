"""The administrative operations for one host: the licence at run time, the firm's settings,
account changes, holding all pushes, and the push log. The settings tabs and the CLI call
these; nothing here imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tsl_hostapi.types import Host

from .. import PLUGIN_ID, signals
from ..audit import DEFAULT_RETENTION_DAYS, AuditLog
from ..licence.gate import LicenceState
from ..outbox.base import Outbox
from ..worker.runner import Worker
from .accounts import AccountStore, ExchangeSettings, backend_of
from .config import FirmConfig
from .enqueue import EnqueuePath
from .firm import FIRM_KEY, FIRM_KEYS_SHOWN
from .publish import WorkerStatePublisher


def _shown(s: ExchangeSettings) -> tuple[Any, ...]:
    """The user settings that change how items look in the mailbox."""
    return (
        s.timezone,
        s.appointment_reminder_minutes,
        s.deadline_reminder_minutes,
        s.pre_deadline_reminder_minutes,
    )


class Administration:
    def __init__(
        self,
        host: Host,
        *,
        data_dir: str,
        config: FirmConfig,
        accounts: AccountStore,
        outbox: Outbox,
        worker: Worker,
        enqueue: EnqueuePath,
        publisher: WorkerStatePublisher,
        request_sweep: Callable[[list[str] | None], None],
    ) -> None:
        self.host = host
        self.config = config
        self.accounts = accounts
        self.outbox = outbox
        self.worker = worker
        self.enqueue = enqueue
        self.publisher = publisher
        self._request_sweep = request_sweep  # the sweeper starts after this object is built
        self.licensing = LicenceState(host)
        self.hold_reason = (
            ""  # German reason while an administrator holds all pushes (cleanup before disable)
        )
        self.audit = AuditLog(
            data_dir,
            senders=lambda: (worker, worker.pusher),
            retention_days=lambda: config.firm_settings().get("audit_retention_days", DEFAULT_RETENTION_DAYS),
        ).listen()
        self.audit.purge()

    def close(self) -> None:
        self.audit.close()

    # ------------------------------------------------------------------ licence and hold
    def push_gate(self) -> str | None:
        """For the worker: why every push is held now (licence ended, administrator's hold), or None.
        The hold is also read from the store: another host instance may have set it."""
        return self.hold_reason or self.publisher.stored_hold() or self.licensing.gate()

    def seat_problem(self, user_id: str) -> str | None:
        """Why switching Exchange Sync on for ``user_id`` would exceed the licence, or None."""
        active = {u.id for u in self.host.list_users() if u.active}
        return self.licensing.seat_problem(user_id, set(self.accounts.enabled_user_ids()) & active)

    def hold(self, reason: str) -> None:
        self.hold_reason = reason
        self.publisher.write_hold(reason)  # worker processes elsewhere read it before every claim
        signals.mailbox_status_changed.send(self, mailbox="*", status="held", reason=reason)

    def release_hold(self) -> None:
        if self.publisher.write_hold("") or self.hold_reason:
            self.hold_reason = ""
            self.licensing.invalidate()
            signals.mailbox_status_changed.send(self, mailbox="*", status="resumed", reason="")
        self.worker.wake()

    # ------------------------------------------------------------------ settings
    def save_firm_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        before = self.config.firm_settings()
        merged = {**before, **values}
        self.host.settings.set(PLUGIN_ID, FIRM_KEY, merged)
        self.publisher.publish()
        if any(before.get(k) != merged.get(k) for k in FIRM_KEYS_SHOWN):
            # How done deadlines and reminders look changed for everyone; the hash skips the rest.
            self.enqueue.resync(self.config.enabled_users())
        self.worker.wake()
        return merged

    def save_account(
        self, user_id: str, settings: ExchangeSettings, *, password: str | None = None
    ) -> ExchangeSettings:
        before = self.accounts.load(user_id)
        saved = self.accounts.save(user_id, settings, password=password)
        self.config.invalidate()
        self.publisher.publish()  # before the unpark below wakes a worker in another process
        looks_different = _shown(saved) != _shown(before)
        if (
            saved.credentials_version != before.credentials_version
            or saved.enabled != before.enabled
            or looks_different
        ):
            # New credentials, a new account or a corrected time zone: a parked mailbox gets another chance.
            self.outbox.unpark(user_id)
            signals.mailbox_status_changed.send(self, mailbox=user_id, status="unparked", reason="")
        moved = saved.enabled and before.enabled and backend_of(saved) != backend_of(before)
        if moved:
            self._adopt_on_move(user_id)
        if saved.enabled and (not before.enabled or looks_different or moved):
            # A new zone or lead time changes how every item looks; unchanged ones are not rewritten.
            self.enqueue.resync([user_id])
        if saved.enabled and not before.enabled and self.config.reconcile_auto():
            # A mailbox set up (again) may hold our items from before: compare once it is pushed.
            self._request_sweep([user_id])
        self.worker.wake()
        return saved

    def _adopt_on_move(self, user_id: str) -> None:
        """The mailbox moved between EWS and Graph: every item is written once more through the new
        backend. Clearing the content hashes makes the resync rewrite them; the stored ids belong to
        the old backend, so the new one finds each item by its record key and updates it in place."""
        keys = self.outbox.sync_keys(user_id)
        if keys:
            entries = self.outbox.get_sync(user_id, keys)
            self.outbox.put_sync_many([replace(e, content_hash="") for e in entries.values()])

    def graph_credentials_changed(self) -> None:
        """New app credentials for Microsoft 365: every parked Graph mailbox gets another chance."""
        for user_id in self.accounts.enabled_user_ids():
            if self.accounts.load(user_id).uses_graph:
                self.outbox.unpark(user_id)
                signals.mailbox_status_changed.send(self, mailbox=user_id, status="unparked", reason="")
        self.worker.wake()
