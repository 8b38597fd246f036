"""Lanes of one mailbox take turns at the CPU, and hand the turn on while they wait for Exchange.

The worker pushes a large claim as several requests in flight at once (``WorkerConfig.lanes``).
Building a request is pure Python; left to the interpreter's thread switching, two lanes
would build their requests side by side, both slowly, send them at the same moment and then
both wait, with the CPU idle. Taking turns, one lane builds while the other's request is at
the server. The backend calls ``pause()`` just before a request goes on the wire and
``resume()`` once its answer is in; outside a turn (any other thread) both do nothing.

A turn is an optimisation, never a dependency: ``resume()`` waits at most ``PATIENCE``
and then goes on without the turn, so a lock taken elsewhere (inside exchangelib, say)
while a turn is awaited can slow a lane down but never deadlock it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

PATIENCE = 0.5  # seconds; building one request of 100 items takes well under that

_mine = threading.local()  # .turns: the Turns this thread takes part in; .held: has the turn now


class Turns:
    """One per claim, shared by its lanes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def taking_part(self) -> Iterator[None]:
        """Run the body as one lane: it holds the turn except while a request is out."""
        _mine.turns, _mine.held = self, False
        try:
            resume()
            yield
        finally:
            pause()
            _mine.turns = None


@contextmanager
def sitting_out() -> Iterator[None]:
    """Run the body outside the turns, for exchangelib calls that may hold a lock of their own
    across a request (resolving folders, probing the server version): a lane must never wait
    for the turn while holding such a lock that the lane with the turn may need."""
    turns = getattr(_mine, "turns", None)
    pause()
    _mine.turns = None
    try:
        yield
    finally:
        _mine.turns = turns
        resume()


def pause() -> None:
    """A request of this thread is about to wait for the server: another lane may build."""
    turns = getattr(_mine, "turns", None)
    if turns is not None and _mine.held:
        _mine.held = False
        turns._lock.release()


def resume() -> None:
    """This thread's answer is in: wait for the turn before going on with Python work."""
    turns = getattr(_mine, "turns", None)
    if turns is not None and not _mine.held:
        _mine.held = turns._lock.acquire(timeout=PATIENCE)
