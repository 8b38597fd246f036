"""The order in which the threads of one process take SQLite's write lock: the host's first.

SQLite lets one writer at a time into a file. The threads of one process queue for it here
(SQLite's own busy handler polls in sleeps of up to 100 ms, this hands over at once). A
plain lock lets the worker's threads, which write after every slice, stand in front of the
host's save in any order; the save then waits for several of their transactions. Here a
waiting save (``first=True``) goes before every waiting worker write, so it waits for at most
the one transaction that holds the lock. Worker writes keep their turn among themselves, and
a stream of saves cannot starve them for long: saves are a few per second, each one short.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class WriteGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first = threading.Condition(self._lock)  # waiting saves
        self._rest = threading.Condition(self._lock)  # waiting worker writes
        self._held = False
        self._waiting_first = 0
        self._waiting_rest = 0

    @contextmanager
    def hold(self, *, first: bool = False) -> Iterator[None]:
        """Hold the gate for one write transaction; ``first`` for the host's save path."""
        with self._lock:
            if first:
                self._waiting_first += 1
                try:
                    self._first.wait_for(lambda: not self._held)
                finally:
                    self._waiting_first -= 1
            else:
                self._waiting_rest += 1
                try:
                    self._rest.wait_for(lambda: not self._held and not self._waiting_first)
                finally:
                    self._waiting_rest -= 1
            self._held = True
        try:
            yield
        finally:
            with self._lock:
                self._held = False
                # One waiter, not all: the others would only wake to find the gate taken again.
                if self._waiting_first:
                    self._first.notify()
                elif self._waiting_rest:
                    self._rest.notify()

    def waiting(self) -> tuple[int, int]:
        """(saves, worker writes) waiting right now (for tests and the benchmark)."""
        with self._lock:
            return self._waiting_first, self._waiting_rest
