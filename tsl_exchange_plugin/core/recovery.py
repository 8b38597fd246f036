"""Keeping one host's changes when the queue cannot take them: startup that failed, a queue
that cannot be written, a crash.

``plugin.py`` keeps one :class:`Recovery` per host. It owns the runtime's life:

* ``start`` tries to build the :class:`SyncRuntime`. When that fails (PostgreSQL down at
  boot, a locked or unwritable file) nothing raises into the host: the administrator is
  told once, saves go to the journal, and a background thread keeps trying with back-off.
* ``handle`` is the save/delete hooks' path: straight into the queue while nothing waits
  in the journal, otherwise (and whenever the queue write fails) into the journal, so
  that the order of changes is kept.
* The background thread replays the journal into the queue, in order, then empties it.
* A marker file tells an unclean stop (the host died): the host may have committed
  changes whose hook never ran, so the host's view is queued again once.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tsl_hostapi.types import Host, RecordEvent

from .. import PLUGIN_ID
from ..outbox.journal import Journal, JournalReplayStopped
from .enqueue import event_to_journal
from .runtime import SyncRuntime

log = logging.getLogger(__name__)

RUNNING_MARKER = "running.marker"
HOOKS = {"record_saved": "saved", "record_deleted": "deleted"}
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


@dataclass(frozen=True)
class RetryPolicy:
    """How soon the background thread tries again: doubling from ``first`` up to ``longest``
    seconds, with jitter so that several hosts do not hammer a database in step."""

    first: float = 1.0
    longest: float = 60.0


def _reason(exc: BaseException) -> str:
    """The first line of an error, without a password from a URL."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return _URL_PASSWORD.sub(r"\1***@", line)


class Recovery:
    def __init__(
        self,
        host: Host,
        *,
        factory: Callable[[Host], SyncRuntime] | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.host = host
        self.factory = factory or SyncRuntime
        self.policy = policy or RetryPolicy()
        self.data_dir = host.data_dir(PLUGIN_ID)
        self.journal = Journal.at(self.data_dir)
        self.runtime: SyncRuntime | None = None
        self.reason = ""  # why the queue is unavailable, in German
        self._notified = False
        self._holding = False  # saves go to the journal until the recovery after start is done
        self._sweep_due = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()  # set while nothing waits (tests wait on it)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SyncRuntime | None:
        """Build the runtime; never raises. Returns it, or None while it cannot be built."""
        marker = os.path.join(self.data_dir, RUNNING_MARKER)
        self._sweep_due = os.path.exists(marker)
        try:
            with open(marker, "w", encoding="utf-8") as fh:
                fh.write(str(os.getpid()))
        except OSError:
            log.warning("Exchange-Sync: Laufmarke %s nicht schreibbar", marker)
        self._holding = self._sweep_due or self.journal.needs_replay()
        self._open_runtime()
        if self.runtime is None or self._holding:
            self._ensure_thread()
        else:
            self._idle.set()
        return self.runtime

    def close(self) -> None:
        """Stop retrying; close the runtime; a clean stop removes the marker."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.close()
        try:
            os.remove(os.path.join(self.data_dir, RUNNING_MARKER))
        except OSError:
            pass

    def wake(self) -> None:
        """Try again now (the queue may be back, or something new waits in the journal)."""
        self._idle.clear()
        self._ensure_thread()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """For tests and the demo: True once nothing waits in the journal."""
        return self._idle.wait(timeout)

    # ------------------------------------------------------------------ the hooks' path
    def handle(self, event: RecordEvent, method: str) -> None:
        """A host save or delete: into the queue, or into the journal. Never raises."""
        runtime = self.runtime
        failed = runtime is None
        if runtime is not None and not self._holding and not self.journal.needs_replay():
            try:
                getattr(runtime.enqueue, method)(event)
                return
            except Exception as exc:
                log.exception("Exchange-Sync: %s konnte nicht eingereiht werden", event.ref.key)
                self.reason = (
                    f"Änderungen können nicht in die Warteschlange eingereiht werden ({_reason(exc)})."
                )
                failed = True
        # Otherwise earlier changes wait in the journal (or the recovery after start runs):
        # this one queues up behind them, so the order is kept.
        try:
            self.journal.append(event_to_journal(event, HOOKS[method]))
        except Exception as exc:
            log.exception("Exchange-Sync: Journal nicht beschreibbar")
            self.host.notify(
                f"Exchange-Sync: Die Änderung an {event.ref.key} konnte weder in die Warteschlange noch "
                f"in das Journal ({self.journal.path}) geschrieben werden: {_reason(exc)}. Bitte prüfen Sie, "
                "ob das Datenverzeichnis beschreibbar und der Datenträger nicht voll ist, und speichern "
                "Sie den Datensatz danach erneut.",
                level="error",
            )
            return
        if failed:
            self._tell_once()
        self.wake()

    def _tell_once(self) -> None:
        with self._lock:
            if self._notified:
                return
            self._notified = True
        self.host.notify(
            f"Exchange-Sync: {self.reason or 'Die Warteschlange ist nicht verfügbar.'} Es geht nichts "
            f"verloren: Änderungen werden im lokalen Journal ({self.journal.path}) gespeichert und "
            "automatisch übertragen, sobald die Warteschlange wieder erreichbar ist; es wird "
            "selbständig erneut versucht. Bitte beheben Sie die Ursache (läuft der Datenbankserver, "
            "ist die Datei beschreibbar und nicht von einem anderen Programm gesperrt, ist der "
            "Datenträger voll?). Die Statusanzeige zeigt, wie viele Änderungen warten.",
            level="error",
        )

    # ------------------------------------------------------------------ background
    def _open_runtime(self) -> bool:
        if self.runtime is not None:
            return True
        try:
            runtime = self.factory(self.host)
        except Exception as exc:
            log.exception("Exchange-Sync konnte nicht starten")
            self.reason = f"Exchange-Sync konnte nicht starten: {_reason(exc)}"
            self._tell_once()
            return False
        runtime.journal_waiting = self._on_deferred
        self.runtime = runtime
        return True

    def _on_deferred(self) -> None:
        self.reason = "Änderungen können nicht in die Warteschlange eingereiht werden."
        self._tell_once()
        self.wake()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._loop, name="tsl-exchange-journal", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        delay = self.policy.first
        while not self._stop.is_set():
            self._wake.clear()
            try:
                done = self._step()
            except Exception:
                log.exception("Exchange-Sync: Nachholen aus dem Journal fehlgeschlagen")
                done = False
            if self._stop.is_set():
                return
            if done:
                delay = self.policy.first
                self._wake.wait()
            else:
                self._wake.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.policy.longest)

    def _step(self) -> bool:
        """One round: open the runtime, replay, the sweep after an unclean stop, replay again.
        True when nothing waits any more."""
        if not self._open_runtime():
            return False
        runtime = self.runtime
        assert runtime is not None
        if not self._replay(runtime):
            return False
        if self._sweep_due:
            try:
                runtime.enqueue.requeue_host_view()
            except Exception as exc:
                log.exception("Exchange-Sync: Abgleich nach unsauberem Ende fehlgeschlagen")
                self.reason = (
                    f"Änderungen können nicht in die Warteschlange eingereiht werden ({_reason(exc)})."
                )
                return False
            self._sweep_due = False
            if not self._replay(runtime):
                return False
        with self._lock:
            # A save that came in after the last replay went to the journal: go round again.
            if self.journal.needs_replay():
                self._wake.set()
                return True
            self._holding = False
            was_told, self._notified = self._notified, False
        runtime.worker.wake()
        if was_told:
            self.host.notify(
                "Exchange-Sync: Die Warteschlange ist wieder erreichbar; die zwischengespeicherten "
                "Änderungen wurden eingereiht und werden übertragen.",
                level="info",
            )
        self._idle.set()
        return True

    def _replay(self, runtime: SyncRuntime) -> bool:
        def rejected(rec: dict[str, Any], exc: Exception) -> None:
            self.host.notify(
                f"Exchange-Sync: Eine zwischengespeicherte Änderung ({rec.get('kind')}:{rec.get('id')}) kann "
                f"nicht übertragen werden ({_reason(exc)}); sie liegt in {self.journal.rejected_path}. "
                "Bitte speichern Sie den Datensatz erneut.",
                level="error",
            )

        try:
            if self.journal.replay(runtime.enqueue.apply_journal, rejected=rejected):
                runtime.worker.wake()
        except JournalReplayStopped as exc:
            self.reason = f"Änderungen können nicht in die Warteschlange eingereiht werden ({_reason(exc)})."
            self._tell_once()
            return False
        return True
