"""The local journal: where a change waits when the queue cannot take it.

One file, ``journal.log`` in the plugin's data directory, append-only, one record per
line: ``<crc32 as 8 hex digits> <JSON>``. Every record that must survive a crash is
written with ``fsync`` before the caller goes on. A crash can tear only the last line;
its checksum (or its missing newline) gives it away, and it is dropped when the file is
next opened, never half-applied. A line whose checksum fails elsewhere is skipped (and
logged) rather than guessed at.

Three record types (the meaning belongs to the caller; the journal only keeps order):

* an event (``"t": "saved"`` / ``"deleted"``): a host save or delete the queue could not take;
* an intent (``"t": "intent"``, with an ``"id"``): a subscription change about to be
  committed; it is written before the change, and closed by ``"t": "done"`` once its
  pushes are queued. An intent still open after a crash is completed by the replay.
* done (``"t": "done"``, ``"id"``).

``replay`` applies events and open intents in file order and then empties the file.
Intents this process is still working on (``live``) are kept; they close themselves.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:  # only to keep two processes on one data directory from interleaving (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # the module is absent there; checked before use

log = logging.getLogger(__name__)

FILE_NAME = "journal.log"
REJECTED_FILE_NAME = "journal.rejected.log"
EVENT_TYPES = ("saved", "deleted")


@dataclass(frozen=True)
class JournalInfo:
    """What the status view shows: how much waits in the journal."""

    path: str
    waiting: int  # events and open intents not yet replayed
    size_bytes: int


def encode_line(data: dict[str, Any]) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of one complete line, or None when it is torn or damaged."""
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class JournalReplayStopped(Exception):
    """The replay stopped at a record the queue could not take; it stays for the next round."""


class JournalRecordUnusable(ValueError):
    """Raised by a replay's ``apply``: this record itself can never be applied (it cannot be
    read back), so waiting for the queue would not help."""


class Journal:
    """The journal file of one data directory. Use :meth:`at`: one object per file and
    process, so that every thread shares one lock and one view of what is open."""

    _instances: dict[str, Journal] = {}
    _instances_lock = threading.Lock()

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, FILE_NAME)
        self.rejected_path = os.path.join(data_dir, REJECTED_FILE_NAME)
        self._lock = threading.RLock()
        self._replay_lock = threading.Lock()
        self._events = 0  # event records in the file
        self._open: set[str] = set()  # intents without "done" in the file
        self._live: set[str] = set()  # intents this process is completing itself
        self._loaded = False

    @classmethod
    def at(cls, data_dir: str) -> Journal:
        key = os.path.realpath(data_dir)
        with cls._instances_lock:
            journal = cls._instances.get(key)
            if journal is None:
                journal = cls._instances[key] = cls(data_dir)
            return journal

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        """Count what the file holds; cut a torn last line off (it never reached its caller's
        next step, so it must not be applied, and a later append must not extend it)."""
        if self._loaded:
            return
        records, end = self._read(0)
        try:
            if os.path.getsize(self.path) > end:
                with open(self.path, "r+b") as fh:
                    fh.truncate(end)
                    os.fsync(fh.fileno())
                log.warning(
                    "Exchange-Sync: unvollständige letzte Zeile im Journal verworfen (%s).", self.path
                )
        except FileNotFoundError:
            pass
        self._events = 0
        self._open = set()
        for rec in records:
            self._count(rec)
        self._loaded = True

    def _count(self, rec: dict[str, Any]) -> None:
        kind = rec.get("t")
        if kind in EVENT_TYPES:
            self._events += 1
        elif kind == "intent":
            self._open.add(str(rec.get("id")))
        elif kind == "done":
            self._open.discard(str(rec.get("id")))

    def _read(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Records from byte ``offset`` on, and the offset after the last complete line."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                raw = fh.read()
        except FileNotFoundError:
            return [], offset
        records = []
        pos = 0
        while pos < len(raw):
            nl = raw.find(b"\n", pos)
            if nl < 0:
                break  # torn tail: not complete, not ours to apply
            line = raw[pos : nl + 1]
            rec = decode_line(line)
            if rec is None:
                log.warning(
                    "Exchange-Sync: beschädigte Zeile im Journal übersprungen (Byte %d).", offset + pos
                )
            else:
                records.append(rec)
            pos = nl + 1
        return records, offset + pos

    def records(self) -> list[dict[str, Any]]:
        """Every intact record, in order (for tests and inspection)."""
        with self._lock:
            return self._read(0)[0]

    # ------------------------------------------------------------------ writing
    def _append(self, lines: list[bytes], *, sync: bool) -> None:
        created = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            data = b"".join(lines)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)  # also drops the flock
        if created and sync:
            _fsync_dir(os.path.dirname(self.path))

    def append(self, data: dict[str, Any], *, sync: bool = True) -> None:
        """Write one record; with ``sync`` it is on disk when this returns. Raises OSError."""
        with self._lock:
            self._load()
            self._append([encode_line(data)], sync=sync)
            self._count(data)

    def open_intent(self, data: dict[str, Any]) -> str:
        """Record a change about to be made (on disk before this returns); returns its id.
        The caller completes it and calls :meth:`close_intent`, or :meth:`abandon_intent`
        to leave it to the replay."""
        ident = uuid.uuid4().hex
        with self._lock:
            self.append({**data, "t": "intent", "id": ident})
            self._live.add(ident)
        return ident

    def close_intent(self, ident: str) -> None:
        """The intent's pushes are queued. Not synced: if this line is lost, the replay
        repeats the intent, which only queues what is already queued."""
        with self._lock:
            self._live.discard(ident)
            try:
                self.append({"t": "done", "id": ident}, sync=False)
            except OSError:
                log.warning("Exchange-Sync: Abschluss im Journal nicht vermerkt; wird wiederholt.")
                return
            # Nothing else waits: start the next change on an empty file. Not while a replay
            # reads the file by offset (it empties the file itself when it is through).
            if not self._events and not self._open and not self._live and self._replay_lock.acquire(False):
                try:
                    self._truncate([])
                finally:
                    self._replay_lock.release()

    def abandon_intent(self, ident: str) -> None:
        """The intent could not be completed now; the replay completes it."""
        with self._lock:
            self._live.discard(ident)

    def _truncate(self, keep: list[bytes]) -> None:
        """Empty the file, keeping ``keep`` (the lines of intents still live)."""
        if not os.path.exists(self.path):
            return
        if not keep:
            with open(self.path, "r+b") as fh:
                fh.truncate(0)
                os.fsync(fh.fileno())
            return
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"".join(keep))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(os.path.dirname(self.path))

    # ------------------------------------------------------------------ state
    def needs_replay(self) -> bool:
        """Events or intents wait for the queue: new events must queue up behind them."""
        with self._lock:
            try:
                self._load()
            except OSError:
                return False
            return bool(self._events or (self._open - self._live))

    def info(self) -> JournalInfo:
        with self._lock:
            try:
                self._load()
                size = os.path.getsize(self.path)
            except OSError:
                size = 0
            return JournalInfo(self.path, self._events + len(self._open - self._live), size)

    # ------------------------------------------------------------------ replay
    def replay(
        self,
        apply: Callable[[dict[str, Any]], None],
        *,
        rejected: Callable[[dict[str, Any], Exception], None] | None = None,
    ) -> int:
        """Apply events and open intents in file order, then empty the file; returns how
        many were applied. When ``apply`` raises ``JournalRecordUnusable`` the record is
        moved to ``journal.rejected.log`` (and ``rejected`` told) so it never blocks what
        follows. Any other error stops the replay (``JournalReplayStopped``): the queue may
        still fail (reads can work while writes fail, so a probe proves nothing), and what
        is left stays for the next round. A repeated replay of what was already applied only
        queues the same snapshots again, in the same order."""
        with self._replay_lock:
            applied = 0
            offset = 0
            while True:
                with self._lock:
                    self._load()
                    records, end = self._read(offset)
                    if not records and end == offset:
                        keep = self._live_lines()
                        self._truncate(keep)
                        self._events = 0
                        self._open = set(self._live)
                        return applied
                    live = set(self._live)
                closed = {str(r.get("id")) for r in records if r.get("t") == "done"}
                for rec in records:
                    kind = rec.get("t")
                    if kind == "intent" and (str(rec.get("id")) in closed or str(rec.get("id")) in live):
                        continue
                    if kind not in EVENT_TYPES and kind != "intent":
                        continue
                    try:
                        apply(rec)
                    except JournalRecordUnusable as exc:
                        log.error("Exchange-Sync: Journaleintrag nicht lesbar, abgelegt: %s", exc)
                        self._reject(rec)
                        if rejected is not None:
                            rejected(rec, exc)
                    except Exception as exc:
                        raise JournalReplayStopped(str(exc)) from exc
                    applied += 1
                offset = end

    def _live_lines(self) -> list[bytes]:
        if not self._live:
            return []
        records, _ = self._read(0)
        return [encode_line(r) for r in records if r.get("t") == "intent" and str(r.get("id")) in self._live]

    def _reject(self, rec: dict[str, Any]) -> None:
        try:
            with open(self.rejected_path, "ab") as fh:
                fh.write(encode_line(rec))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            log.exception("Exchange-Sync: abgewiesener Journaleintrag konnte nicht abgelegt werden")


def _fsync_dir(path: str) -> None:
    """Make a created or renamed file's directory entry durable (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
