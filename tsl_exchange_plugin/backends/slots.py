"""Request slots shared by the worker processes of one queue: how many requests may be in
flight to one place at once, counted across processes.

Used by both backends: the EWS backend limits the requests per Exchange server
(``--per-server``), the Graph backend the requests per Microsoft 365 mailbox (Exchange Online
counts at most 4 concurrent requests per app and mailbox, and a ``$batch`` counts as up to 4).
No client library is imported here, so both may use it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from .base import ServerSlots, TransientError

log = logging.getLogger(__name__)

SLOT_LEASE_SECONDS = 120.0  # SQLite: a dead process's slot is free again after this
SLOT_PAUSES = (0.005, 0.1)  # first and longest pause between two tries for a shared slot
SLOT_PATIENCE = 300.0  # then the request is given up as "busy" and retried later


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " …"


class ServerLimit:
    """The requests in flight to one place (an Exchange server, a Graph mailbox): at most ``limit``.

    First this process's semaphore, so its own threads queue in memory and never poll the
    store; then, with ``shared``, a slot in the queue's store, so that the limit holds for
    all worker processes together. A slot is released after the answer (or the error) is in;
    a process that dies holding one frees it through the store (see ``ServerSlots``).
    A context manager, entered by every thread that sends a request there.

    ``server`` names the slot space in the store; ``label`` is how a German message names it.
    """

    def __init__(
        self, server: str, limit: int, shared: ServerSlots | None = None, *, label: str = ""
    ) -> None:
        self.server = server
        self.limit = limit
        self.shared = shared
        self.label = label or f"Der Exchange-Server {server}"
        self._sem = threading.BoundedSemaphore(limit)
        self._held = threading.local()  # the slots this thread holds, innermost last

    def __enter__(self) -> ServerLimit:
        self._sem.acquire()
        if self.shared is None:
            return self
        try:
            slot = self._take_slot()
        except BaseException:
            self._sem.release()
            raise
        stack = getattr(self._held, "slots", None)
        if stack is None:
            stack = self._held.slots = []
        stack.append((slot, self._holder()))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.shared is not None:
                slot, holder = self._held.slots.pop()
                try:
                    self.shared.release_server_slot(self.server, slot, holder)
                except Exception:  # the store is gone for a moment: the slot frees itself (session, lease)
                    log.warning(
                        "Exchange-Sync: Anfrage-Platz für %s nicht freigegeben", self.server, exc_info=True
                    )
        finally:
            self._sem.release()

    @staticmethod
    def _holder() -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def _take_slot(self) -> int:
        holder = self._holder()
        pause, longest = SLOT_PAUSES
        deadline = time.monotonic() + SLOT_PATIENCE
        while True:
            try:
                slot = self.shared.acquire_server_slot(  # type: ignore[union-attr]  # only with shared slots (__enter__)
                    self.server, self.limit, holder, lease_seconds=SLOT_LEASE_SECONDS
                )
            except Exception as exc:
                raise TransientError(
                    f"Die Warteschlange ist nicht erreichbar, um eine Anfrage an {self.server} anzumelden "
                    f"({_short(exc)}); es wird später erneut versucht."
                ) from None
            if slot is not None:
                return slot
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"{self.label} hat seit {SLOT_PATIENCE:.0f} s {self.limit} Anfragen "
                    "anderer Worker in Arbeit; es wird später erneut versucht."
                )
            time.sleep(pause)  # polling: the store has no "slot free" notice; the pause stays short
            pause = min(longest, pause * 2)
