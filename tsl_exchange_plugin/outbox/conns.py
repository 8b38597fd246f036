"""The per-thread connection bookkeeping both outbox stores share.

Each thread uses its own connection (``_local``); every connection opened is also
listed in ``_conns`` so that ``close`` can close the other threads' ones too.
"""

from __future__ import annotations

import threading
from typing import Any


class PerThreadConnections:
    """Mixin for a store; the store opens connections and appends them to ``_conns``."""

    _local: threading.local
    _conns: list[Any]
    _conns_lock: threading.Lock
    _closed: bool

    def _init_conns(self) -> None:
        self._local = threading.local()
        self._conns = []
        self._conns_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
