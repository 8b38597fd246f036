"""The per-thread connection bookkeeping both outbox stores share.

Each thread uses its own connection (``_local``); every connection opened is also
listed in ``_conns`` with the thread that owns it, so that ``close`` can close the
other threads' ones too.

A connection lives exactly as long as its thread: a thread that is done with the
store gives its connection back (``release_thread``), and the connections of threads
that ended without doing so are given back the next time any thread opens one. Without
that, every short-lived thread (a lane of one claim, a host's request thread) would leave
an open connection behind, until PostgreSQL's ``max_connections`` refuses every save.
"""

from __future__ import annotations

import threading
from typing import Any


class PerThreadConnections:
    """Mixin for a store; the store opens connections and hands them to ``_adopt``."""

    _local: threading.local
    _conns: list[Any]
    _owners: dict[int, threading.Thread]  # id(connection) -> the thread it belongs to
    _conns_lock: threading.Lock
    _closed: bool

    def _init_conns(self) -> None:
        self._local = threading.local()
        self._conns = []
        self._owners = {}
        self._conns_lock = threading.Lock()
        self._closed = False

    def _give_back(self, conn: Any) -> None:
        """End one connection (a pooled store returns it to its pool instead)."""
        conn.close()

    def _adopt(self, conn: Any) -> None:
        """List a connection the calling thread just opened; give back those of ended threads."""
        with self._conns_lock:
            self._conns.append(conn)
            self._owners[id(conn)] = threading.current_thread()
        self._sweep()

    def _sweep(self) -> None:
        """Give back the connections of threads that ended without ``release_thread``."""
        with self._conns_lock:
            orphans = [c for c in self._conns if not self._owners[id(c)].is_alive()]
            for c in orphans:
                self._conns.remove(c)
                del self._owners[id(c)]
        for c in orphans:
            self._give_back_quietly(c)

    def _disown(self, conn: Any) -> bool:
        """Remove a connection from the list; False if it was not (or no longer) listed."""
        with self._conns_lock:
            if self._owners.pop(id(conn), None) is None:
                return False
            self._conns.remove(conn)
            return True

    def _give_back_quietly(self, conn: Any) -> None:
        try:
            self._give_back(conn)
        except Exception:  # an already broken connection: nothing left to end
            pass

    def open_connections(self) -> int:
        """How many connections this store holds open right now (for tests and the status view)."""
        with self._conns_lock:
            return len(self._conns)

    def release_thread(self) -> None:
        """The calling thread is done with the store: give its connections back now.

        Long-lived threads (worker threads, lanes) call this when they end; the store opens a
        new connection should the thread use it again."""
        me = threading.current_thread()
        with self._conns_lock:
            mine = [c for c in self._conns if self._owners[id(c)] is me]
            for c in mine:
                self._conns.remove(c)
                del self._owners[id(c)]
        for name in ("conn", "wconn", "listen"):  # this thread's cache only; a threading.local is per thread
            if hasattr(self._local, name):
                delattr(self._local, name)
        for c in mine:
            self._give_back_quietly(c)

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
            self._owners = {}
        for conn in conns:
            self._give_back_quietly(conn)
        self._local = threading.local()
