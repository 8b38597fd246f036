"""The parts of one host's runtime that the core's services use (cleanup, reconcile, the
fidelity probe, the parity report). They see the runtime through this protocol, so the
composition root (``runtime.py``) imports them and nothing in the core imports it back."""

from __future__ import annotations

from typing import Protocol

from tsl_hostapi.types import Host

from ..backends.base import ExchangeBackend
from ..outbox.base import Outbox
from ..worker.runner import Worker
from .accounts import AccountStore
from .config import FirmConfig
from .enqueue import EnqueuePath


class CoreParts(Protocol):
    host: Host
    config: FirmConfig
    accounts: AccountStore
    outbox: Outbox
    backend: ExchangeBackend
    worker: Worker
    enqueue: EnqueuePath
