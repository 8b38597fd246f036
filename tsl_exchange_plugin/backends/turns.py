"""The worker's lanes take turns at the CPU, and hand the turn on while they wait for Exchange.

The worker pushes claims as several requests in flight at once (``WorkerConfig.lanes`` per
claim, several claims at a time). Building a request is pure Python, and Python runs one
thread at a time: left to the interpreter's thread switching, the lanes would build their
requests side by side, all slowly, send them at the same moment and then all wait, with the
CPU idle. Worse for the host the worker runs in: every thread of the host that asks for the
CPU (a user's save) queues behind all of them, each time it comes back from the disk or the
database. Taking turns, one lane builds while the others' requests are at the server, and a
host thread competes with one lane, not with all.

The backend calls ``pause()`` just before a request goes on the wire and ``resume()`` once its
answer is in; outside a turn (any other thread) both do nothing. A lane pushing a user's save
(``going_first``) gets the turn before the lanes of bulk work that wait for it.

A turn is an optimisation, never a dependency: ``resume()`` waits at most ``PATIENCE``
and then goes on without the turn, so a lock taken elsewhere (inside exchangelib, say)
while a turn is awaited can slow a lane down but never deadlock it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

PATIENCE = 0.5  # seconds; building one request of 100 items takes well under that

# .turns: the Turns this thread takes part in; .held: has the turn now; .first: goes first
_mine = threading.local()


class Turns:
    """One per worker, shared by the lanes of all its claims."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first = threading.Condition(self._lock)  # lanes pushing saves
        self._rest = threading.Condition(self._lock)
        self._held = False
        self._waiting_first = 0

    @contextmanager
    def taking_part(self, *, first: bool = False) -> Iterator[None]:
        """Run the body as one lane: it holds the turn except while a request is out.
        ``first``: the lane starts with a slice of saves."""
        _mine.turns, _mine.held, _mine.first = self, False, first
        try:
            resume()
            _mine.first = False  # later turns go first only for a slice of saves (going_first)
            yield
        finally:
            pause()
            _mine.turns = None
            _mine.first = False

    def free(self) -> bool:
        """Whether nobody holds the turn (for tests)."""
        with self._lock:
            return not self._held

    def _take(self, first: bool, timeout: float) -> bool:
        with self._lock:
            if first:
                self._waiting_first += 1
                try:
                    got = self._first.wait_for(lambda: not self._held, timeout)
                finally:
                    self._waiting_first -= 1
                    if not got and not self._waiting_first and not self._held:
                        self._rest.notify()  # a bulk lane held back for this one may go now
            else:
                got = self._rest.wait_for(lambda: not self._held and not self._waiting_first, timeout)
            if got:
                self._held = True
            return got

    def _give(self) -> None:
        with self._lock:
            self._held = False
            if self._waiting_first:
                self._first.notify()
            else:
                self._rest.notify()


@contextmanager
def going_first() -> Iterator[None]:
    """While the body runs (a slice of saves), this lane takes the turn before bulk lanes."""
    before = getattr(_mine, "first", False)
    _mine.first = True
    try:
        yield
    finally:
        _mine.first = before


@contextmanager
def waiting() -> Iterator[None]:
    """The body waits for something other than Python (the queue's database, the disk):
    another lane may build meanwhile, and this one takes the turn back afterwards."""
    pause()
    try:
        yield
    finally:
        resume()


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
        turns._give()


def resume() -> None:
    """This thread's answer is in: wait for the turn before going on with Python work."""
    turns = getattr(_mine, "turns", None)
    if turns is not None and not _mine.held:
        _mine.held = turns._take(getattr(_mine, "first", False), PATIENCE)
