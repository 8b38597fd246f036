"""Fault injection for the EWS sandbox: what can go wrong, for which mailbox and operation, how often.

The HTTP layer (``server.py``) acts on the transport kinds, the SOAP engine
(``engine.py``) on the ones that live inside a SOAP answer. Both ask the same
``FaultPlan`` with ``take(mailbox, operation, layer)``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal[
    # transport layer (server.py)
    "http_status",  # answer ``status`` (401, 429, 500, 503) with optional Retry-After, body not processed
    "delay",  # sleep ``seconds`` before processing, then answer normally
    "commit_then_hang",  # process and commit, then hold the answer ``seconds`` and drop the connection
    "drop_connection",  # close the socket without an answer, nothing processed
    # SOAP layer (engine.py)
    "server_busy",  # SOAP Fault ErrorServerBusy with BackOffMilliseconds ``back_off_ms``, nothing processed
    "busy_in_message",  # ErrorServerBusy in ResponseMessage number ``index`` (0-based); the others processed
    "response_code",  # ``code`` (e.g. ErrorQuotaExceeded) in message ``index``, or in all when index is None
]

TRANSPORT_KINDS = frozenset({"http_status", "delay", "commit_then_hang", "drop_connection"})
SOAP_KINDS = frozenset({"server_busy", "busy_in_message", "response_code"})


@dataclass
class Fault:
    kind: FaultKind
    mailbox: str | None = None  # None: any mailbox (compared case-insensitively)
    operation: str | None = None  # "CreateItem", ...; None: any operation
    count: int | None = 1  # shots left; None: unlimited (use with probability)
    probability: float = 1.0
    status: int = 503
    retry_after: int | None = None
    seconds: float = 0.0
    back_off_ms: int = 1500
    index: int | None = None
    code: str = "ErrorServerBusy"
    # delay / commit_then_hang: wait for this event instead of a fixed time (``seconds`` > 0
    # still bounds the wait), so a test decides when the request goes on, not the clock.
    hold: threading.Event | None = field(default=None, compare=False)
    fired: int = field(default=0, init=False)

    @property
    def layer(self) -> str:
        return "transport" if self.kind in TRANSPORT_KINDS else "soap"


class FaultPlan:
    """A thread-safe list of armed faults. Deterministic when ``seed`` is given."""

    def __init__(self, seed: int | None = None):
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)
        self._taken = threading.local()  # the faults fired for the request this thread serves

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def armed(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.count is None or f.count > 0]

    def take(self, mailbox: str | None, operation: str | None, layer: str) -> Fault | None:
        """The first armed fault matching this request, consuming one shot, or None."""
        with self._lock:
            for fault in self._faults:
                if fault.layer != layer or (fault.count is not None and fault.count <= 0):
                    continue
                if fault.mailbox and (mailbox or "").lower() != fault.mailbox.lower():
                    continue
                if fault.operation and fault.operation != operation:
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                fault.fired += 1
                self._taken.kinds = [*getattr(self._taken, "kinds", []), fault.kind]
                return fault
        return None

    def begin_request(self) -> None:
        """The calling thread starts serving a request: forget what fired for its previous one."""
        self._taken.kinds = []

    def fired_in_request(self) -> list[str]:
        """The kinds of the faults fired for the request this thread serves (for the request log)."""
        return list(getattr(self._taken, "kinds", []))
