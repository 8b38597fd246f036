"""The composition root for one host: it builds the stores, the vault, the accounts, the enqueue
path, the administrative operations, the worker and the reconcile sweep, and wires them.

``plugin.py`` creates one ``SyncRuntime`` per host (through ``recovery.py``) and hands each hook
to one of its parts: saves to ``enqueue``, subscription changes to ``subscriptions``, settings and
holds to ``admin``. The parts never import this module (``parts.CoreParts`` is their view of it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tsl_hostapi.types import Host

from .. import PLUGIN_ID, logfile
from ..backends.base import ExchangeBackend
from ..credentials import Vault
from ..outbox.base import Outbox
from ..outbox.factory import open_outbox
from ..outbox.journal import Journal
from ..outbox.sqlite import SQLiteOutbox
from ..worker.dispatch import make_mapper
from ..worker.runner import Worker, WorkerConfig
from .accounts import AccountStore
from .admin import Administration
from .config import FirmConfig
from .enqueue import EnqueuePath
from .fidelity import FidelityBackend
from .publish import WorkerStatePublisher
from .reconcile import Reconciler, Sweeper
from .subscribe import SubscriptionChanges


class SyncRuntime:
    def __init__(
        self,
        host: Host,
        *,
        backend: ExchangeBackend | None = None,
        outbox: Outbox | None = None,
        worker_config: WorkerConfig | None = None,
        start_worker: bool = True,
    ):
        self.host = host
        self.data_dir = host.data_dir(PLUGIN_ID)
        logfile.attach(self.data_dir)  # exchange-sync.log, rotated, credentials scrubbed
        # Where a change waits when the queue cannot take it, and a subscription change's intent.
        self.journal = Journal.at(self.data_dir)
        self.journal_waiting: Callable[[], None] = lambda: None  # the plugin wakes its replay here
        self.recovery_lock = threading.RLock()  # subscription changes vs. journal replay and sweep
        self.vault = Vault.open(self.data_dir)
        self.accounts = AccountStore(host.settings, self.vault)
        self.config = FirmConfig(host, self.accounts, self.vault)
        self.outbox = outbox or open_outbox(self.config.queue_url(), self.data_dir)
        if backend is None:
            from ..backends.routing import RoutingBackend  # EWS or Graph per mailbox, each imported on use

            backend = RoutingBackend()
        self.backend = backend
        self.worker = Worker(
            self.outbox,
            backend,
            self.config.resolve_account,
            make_mapper(self.config.mapping_context),
            worker_config,
        )
        self.enqueue = EnqueuePath(
            host,
            self.outbox,
            enabled_users=self.config.enabled_users,
            wake=self.worker.wake,
            recovery_lock=self.recovery_lock,
        )
        self.subscriptions = SubscriptionChanges(
            host,
            self.enqueue,
            self.journal,
            data_dir=self.data_dir,
            journal_waiting=lambda: self.journal_waiting(),
        )
        self.publisher = WorkerStatePublisher(host, self.config, self.accounts, self.outbox)
        self.admin = Administration(
            host,
            data_dir=self.data_dir,
            config=self.config,
            accounts=self.accounts,
            outbox=self.outbox,
            worker=self.worker,
            enqueue=self.enqueue,
            publisher=self.publisher,
            request_sweep=lambda users: self.sweeper.request(users),
        )
        self.worker.gate = self.admin.push_gate
        targets = self.config.target_folders()
        folders = getattr(self.backend, "target_folders", None)
        if targets and isinstance(folders, dict) and not folders:
            folders.update(targets)  # read when a session opens its folders; takes effect from the start
        self._init_shared(publisher=start_worker)
        if start_worker and self.config.worker_mode() == "host":
            self.worker.start()
        self._init_reconcile(start_worker)

    def _init_shared(self, *, publisher: bool) -> None:
        """Host-less workers read accounts, firm rules, hold and licence from the store."""
        if self.config.worker_mode() == "external" or not isinstance(self.outbox, SQLiteOutbox):
            # Several processes may push: each request also takes a slot in the store, so the
            # per-server limit holds for all of them together.
            if getattr(self.backend, "shared_slots", False) is None:
                self.backend.shared_slots = self.outbox  # type: ignore[attr-defined]
        self.publisher.publish_quietly()
        if publisher and self.config.worker_mode() == "external":
            self.publisher.start()

    def _init_reconcile(self, start: bool) -> None:
        # Pushes work around what the server fidelity probe found (recreate instead of update).
        self.worker.backend = FidelityBackend(self.backend, self)
        self.reconciler = Reconciler(self)
        self.sweeper = Sweeper(self, self.reconciler)
        if start:  # also with external workers: the sweep only reads and queues
            self.sweeper.start()
            if self.config.reconcile_auto():
                # Started or enabled (again): what changed while the plugin was off arrives now.
                self.sweeper.request(None)

    def close(self) -> None:
        self.publisher.stop()
        if getattr(self, "sweeper", None) is not None:
            self.sweeper.stop()
        self.worker.stop()
        self.admin.close()
        self.outbox.close()
        logfile.detach(self.data_dir)
