"""The audit log: what was pushed to which mailbox, when, with what outcome.

It listens on ``signals.push_succeeded`` / ``signals.push_failed``. Several runtimes
(hosts) may live in one process and the signals are process-wide, so a log only
records events whose sender is one of its own worker objects. Entries live in a
small SQLite file in the plugin's data directory and are purged after the firm's
retention (``audit_retention_days``, default 90). Entries hold record keys and
German error texts, never a record's content or a secret.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import signals

FILE_NAME = "audit.sqlite3"
DEFAULT_RETENTION_DAYS = 90
PURGE_EVERY = 500  # entries between purges on the write path
# Entries are written once per pushed batch (signal batch-done): one transaction per item
# would cost the worker more than the push itself. Reads in the same process flush first;
# a crash can lose the audit entries of the batch in hand (never a change).
FLUSH_EVERY = 500
FLUSH_SECONDS = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    mailbox TEXT NOT NULL,
    record_key TEXT NOT NULL,
    op TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE INDEX IF NOT EXISTS audit_mailbox ON audit(mailbox, at);
"""

OUTCOME_LABELS = {
    "ok": "übertragen",
    "retry": "fehlgeschlagen, wird wiederholt",
    "failed": "endgültig fehlgeschlagen",
}
OP_LABELS = {"upsert": "geschrieben", "delete": "entfernt"}


@dataclass(frozen=True)
class AuditEntry:
    at: float
    mailbox: str
    record_key: str
    op: str
    outcome: str  # "ok", "retry", "failed"
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["when"] = dt.datetime.fromtimestamp(self.at).strftime("%d.%m.%Y %H:%M:%S")
        data["outcome_label"] = OUTCOME_LABELS.get(self.outcome, self.outcome)
        return data


class AuditLog:
    def __init__(
        self,
        data_dir: str | Path,
        *,
        senders: Callable[[], tuple[object, ...]] = tuple,
        retention_days: Callable[[], int] = lambda: DEFAULT_RETENTION_DAYS,
    ):
        self.path = Path(data_dir) / FILE_NAME
        self._senders = senders
        self._retention_days = retention_days
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file
            conn.executescript(_SCHEMA)
        self._since_purge = 0
        self._listening = False
        self._pending: list[tuple[Any, ...]] = []
        self._flushed_at = time.monotonic()

    def _connect(self) -> contextlib.closing[sqlite3.Connection]:
        # A short connection per operation: nothing stays open when the runtime goes away
        # without telling the log (its close() is optional).
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        return contextlib.closing(conn)

    # ----------------------------------------------------------------- signals
    def listen(self) -> AuditLog:
        # Weak references (blinker's default): a log that is no longer referenced stops listening.
        signals.push_succeeded.connect(self._on_success)
        signals.push_failed.connect(self._on_failure)
        signals.batch_done.connect(self._on_batch_done)
        self._listening = True
        return self

    def _mine(self, sender: object) -> bool:
        return any(sender is s for s in self._senders())

    def _on_success(self, sender: object, **extra: Any) -> None:
        if self._mine(sender):
            self.record(
                str(extra.get("mailbox", "")),
                str(extra.get("record_key", "")),
                str(extra.get("op", "")),
                "ok",
            )

    def _on_batch_done(self, sender: object, **extra: Any) -> None:
        if self._mine(sender):
            self.flush()  # one transaction per batch, visible to other processes right away

    def _on_failure(self, sender: object, **extra: Any) -> None:
        if self._mine(sender):
            outcome = "failed" if extra.get("permanent") else "retry"
            self.record(
                str(extra.get("mailbox", "")),
                str(extra.get("record_key", "")),
                str(extra.get("op", "")),
                outcome,
                str(extra.get("error", ""))[:500],
            )

    # ----------------------------------------------------------------- store
    def record(self, mailbox: str, record_key: str, op: str, outcome: str, detail: str = "") -> None:
        with self._lock:
            self._pending.append((time.time(), mailbox, record_key, op, outcome, detail))
            due = len(self._pending) >= FLUSH_EVERY or time.monotonic() - self._flushed_at >= FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
            self._flushed_at = time.monotonic()
            if not rows:
                return
            with self._connect() as conn:
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO audit(at, mailbox, record_key, op, outcome, detail) VALUES (?,?,?,?,?,?)",
                    rows,
                )
                conn.execute("COMMIT")
            self._since_purge += len(rows)
            due = self._since_purge >= PURGE_EVERY
        if due:
            self.purge()

    def entries(
        self, *, mailbox: str | None = None, limit: int = 200, since: float | None = None
    ) -> list[AuditEntry]:
        """Newest first."""
        self.flush()
        sql = "SELECT at, mailbox, record_key, op, outcome, detail FROM audit WHERE 1=1"
        args: list[Any] = []
        if mailbox:
            sql += " AND mailbox=?"
            args.append(mailbox)
        if since is not None:
            sql += " AND at>=?"
            args.append(since)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        args.append(int(limit))
        with self._connect() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [AuditEntry(*row) for row in rows]

    def purge(self, *, now: float | None = None) -> int:
        """Drop entries older than the retention; returns how many."""
        days = self._retention_days()
        if not isinstance(days, int) or days <= 0:
            days = DEFAULT_RETENTION_DAYS
        cutoff = (now if now is not None else time.time()) - days * 86400
        with self._lock, self._connect() as conn:
            cur = conn.execute("DELETE FROM audit WHERE at<?", (cutoff,))
            self._since_purge = 0
            return cur.rowcount

    def close(self) -> None:
        self.flush()
        if self._listening:
            signals.push_succeeded.disconnect(self._on_success)
            signals.push_failed.disconnect(self._on_failure)
            signals.batch_done.disconnect(self._on_batch_done)
            self._listening = False
