"""The push worker: claims one mailbox at a time under a lease, pushes a batch, schedules retries.

Several threads share one process; each holds at most one mailbox, so a slow or
broken mailbox occupies one thread and never holds up the others. The backend
caps requests in flight per Exchange server. Wrong credentials park a mailbox
(no retry storm that locks the account in Active Directory) until its
credentials change.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import signals
from .exchange.base import (
    AuthFailed,
    ConfigError,
    ExchangeBackend,
    MailboxAccount,
    MailboxSession,
)
from .outbox.backoff import retry_delay
from .outbox.base import Claim, Outbox
from .push import Mapper, Pusher

log = logging.getLogger(__name__)

AccountResolver = Callable[[str], MailboxAccount]
"""mailbox -> connection data; raises an exception with a German message if the mailbox cannot be used."""


@dataclass(frozen=True)
class WorkerConfig:
    threads: int = 4
    batch_size: int = 50
    lease_seconds: float = 60.0
    idle_wait: float = 2.0
    max_back_off: float = 900.0


class Worker:
    def __init__(
        self,
        outbox: Outbox,
        backend: ExchangeBackend,
        resolve: AccountResolver,
        mapper: Mapper,
        config: WorkerConfig | None = None,
        worker_id: str | None = None,
        gate: Callable[[], str | None] | None = None,
    ):
        self.outbox = outbox
        self.backend = backend
        self.resolve = resolve
        self.pusher = Pusher(outbox, mapper)
        self.config = config or WorkerConfig()
        # Asked before every claim: a German reason to hold all pushing (e.g. the licence ended),
        # or None. Held work stays queued.
        self.gate = gate
        self.held_reason = ""
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[MailboxAccount, MailboxSession]] = {}
        self._idle_threads = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Worker:
        self._stop.clear()
        for n in range(self.config.threads):
            t = threading.Thread(target=self._loop, name=f"tsl-exchange-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batches in hand, then stop. Unfinished work stays queued."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for _, session in sessions:
            try:
                session.close()
            except Exception:  # closing must never stop a shutdown
                log.debug("closing a session failed", exc_info=True)

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the loop must survive anything; the job stays queued
                log.exception("Exchange-Sync: unerwarteter Fehler im Worker")
                worked = False
            if not worked:
                self._idle()

    def _idle(self) -> None:
        with self._lock:
            self._idle_threads += 1
            all_idle = self._idle_threads == len(self._threads) and not self._busy
        if all_idle and self.outbox.pending_count() == 0:
            signals.queue_drained.send(self)
        due = self.outbox.next_due_at()
        wait = (
            self.config.idle_wait if due is None else min(self.config.idle_wait, max(0.05, due - time.time()))
        )
        self._wake.wait(wait)
        self._wake.clear()
        with self._lock:
            self._idle_threads -= 1

    def run_once(self, now: float | None = None) -> bool:
        """Claim one mailbox and push one batch. Returns False when nothing was claimable."""
        if self.gate is not None:
            reason = self.gate() or ""
            if reason != self.held_reason:
                self.held_reason = reason
                signals.mailbox_status_changed.send(
                    self, mailbox="*", status="held" if reason else "resumed", reason=reason
                )
            if reason:
                return False
        with self._lock:
            exclude = tuple(self._busy)
        claim = self.outbox.claim(
            self.worker_id,
            limit=self.config.batch_size,
            lease_seconds=self.config.lease_seconds,
            exclude=exclude,
            now=now,
        )
        if claim is None:
            return False
        with self._lock:
            self._busy.add(claim.mailbox)
        try:
            self._process(claim)
        finally:
            with self._lock:
                self._busy.discard(claim.mailbox)
            self.outbox.release(claim)
        return True

    def drain(self, timeout: float = 60.0) -> bool:
        """Run in the calling thread until nothing is due (tests, demo, CLI). True if drained."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run_once():
                due = self.outbox.next_due_at()
                if due is None or due > time.time() + (deadline - time.monotonic()):
                    return due is None
                time.sleep(min(0.2, max(0.0, due - time.time())))
        return False

    # ------------------------------------------------------------------ one claim
    def _session(self, mailbox: str) -> MailboxSession:
        account = self.resolve(mailbox)
        with self._lock:
            cached = self._sessions.get(mailbox)
        if cached and cached[0] == account:
            return cached[1]
        session = self.backend.session(account)
        with self._lock:
            old = self._sessions.get(mailbox)
            self._sessions[mailbox] = (account, session)
        if old:
            old[1].close()
        return session

    def _process(self, claim: Claim) -> None:
        mailbox = claim.mailbox
        try:
            session = self._session(mailbox)
        except Exception as exc:  # no account, bad settings, undecryptable password
            self._park(mailbox, str(exc))
            return
        result = self.pusher.run(mailbox, claim.jobs, session)
        for job, reason in result.failed:
            self.outbox.fail(job, reason)
            signals.push_failed.send(
                self,
                mailbox=mailbox,
                record_key=job.record_key,
                op=job.op,
                error=reason,
                permanent=True,
                retry_in=None,
            )
        fatal = result.fatal
        if isinstance(fatal, (AuthFailed, ConfigError)):
            self._park(mailbox, str(fatal))
            with self._lock:
                self._sessions.pop(mailbox, None)
            return
        for job, error, hint in result.retry:
            delay = retry_delay(job.attempts + 1, cap=self.config.max_back_off, server_hint=hint)
            self.outbox.retry(job, error, delay)
            signals.push_failed.send(
                self,
                mailbox=mailbox,
                record_key=job.record_key,
                op=job.op,
                error=error,
                permanent=False,
                retry_in=delay,
            )
        if fatal is not None:
            self.outbox.record_error(mailbox, str(fatal))
            signals.mailbox_status_changed.send(self, mailbox=mailbox, status="error", reason=str(fatal))
        elif result.done or not result.retry:
            self.outbox.record_success(mailbox)

    def _park(self, mailbox: str, reason: str) -> None:
        log.warning("Exchange-Sync: Postfach %s angehalten: %s", mailbox, reason)
        self.outbox.park(mailbox, reason)
        signals.mailbox_status_changed.send(self, mailbox=mailbox, status="parked", reason=reason)
