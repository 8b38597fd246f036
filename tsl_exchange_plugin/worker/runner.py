"""The push worker: claims one mailbox at a time under a lease, pushes a batch, schedules retries.

Several threads share one process; each holds at most one mailbox, so a slow or
broken mailbox occupies one thread and never holds up the others. Within a
mailbox, a claim is pushed in slices of one request each, a few slices at a time
(``lanes``): while one request waits for the server, the next is being built. The lanes
of all claims take turns at the CPU (``backends/turns.py``). A save does not wait for a bulk
claim to end: at each slice boundary a lane takes its mailbox's better jobs into the next
slice, or ends the claim when another mailbox's better work finds no free thread.
The backend caps requests in flight per Exchange server. Wrong credentials park a mailbox
(no retry storm that locks the account in Active Directory) until its
credentials change.

Threads and connections are bounded: each worker thread keeps its lane helpers for its
whole life (not a new thread per claim), and every thread gives its outbox connection
back when it ends.

Back-off belongs to the mailbox and the server, not to a job (``pauses.py``): a busy
answer pauses the mailbox for the back-off the server asked for; a transport failure
pauses every mailbox of that server, longer with each failure in a row. Both are written
to the store, so claims of every worker process skip them. When a server's pause ends,
one claim of one small slice probes it; only its success opens the server for all.
Jobs interrupted by a pause keep their attempts and due time: once the pause is over,
everything is due at once.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

from .. import signals
from ..backends import turns
from ..backends.base import (
    AuthFailed,
    ConfigError,
    ExchangeBackend,
    ExchangeError,
    MailboxAccount,
    MailboxSession,
    Resting,
    TransientError,
)
from ..backends.turns import Turns
from ..credentials import VaultError
from ..outbox.backoff import pause_delay, retry_delay
from ..outbox.base import PRIORITY_INTERACTIVE, Claim, Job, LeaseLost, Outbox
from . import switching
from .claimplan import ClaimPlan
from .pauses import PauseBoard
from .push import BatchResult, Mapper, Pusher

log = logging.getLogger(__name__)

WATCH_SLICE = 0.25  # longest single wait of the watcher inside the store, in seconds
# A mailbox's "last success" is written at most this often (seconds) while its pushes succeed.
SUCCESS_NOTE_EVERY = 5.0
# A lease the keeper could not renew is given up when less than this share of it is left,
# so its lanes stop before it runs out and another worker may claim the mailbox.
LEASE_SAFETY_SHARE = 0.25

AccountResolver = Callable[[str], MailboxAccount]
"""mailbox -> connection data; raises an exception with a German message if the mailbox cannot be used."""


IDLE_WAIT_ENV = "TSL_EXCHANGE_IDLE_WAIT"
DEFAULT_IDLE_WAIT = 2.0


def _idle_wait_default() -> float:
    """The idle re-check interval; operators may set it for worker processes via the environment."""
    raw = os.environ.get(IDLE_WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        log.warning(
            "Exchange-Sync: %s=%r ist keine Zahl zwischen 0,05 und 3600 Sekunden; es gilt %s.",
            IDLE_WAIT_ENV,
            raw,
            DEFAULT_IDLE_WAIT,
        )
        return DEFAULT_IDLE_WAIT
    return value


@dataclass(frozen=True)
class WorkerConfig:
    threads: int = 4
    batch_size: int = 100  # one slice = one CreateItem of up to 100 items (the backend's chunk)
    # Slices of one mailbox in flight at once. Two keep the server and this process busy at
    # the same time; Exchange's own limit per user (EWSMaxConcurrency: 10 on Exchange 2010,
    # 27 since 2013 and online) is far above it.
    lanes: int = 2
    slices_per_claim: int = 8  # one claim: up to 800 jobs, so few pauses between claims
    lease_seconds: float = 60.0
    # How long an idle thread sleeps when nothing wakes it. New work wakes it at once
    # (the outbox's wait_for_work: NOTIFY on PostgreSQL, an in-process signal on SQLite),
    # so this is only the safety net for a lost notification and the gate re-check.
    idle_wait: float = field(default_factory=_idle_wait_default)
    max_back_off: float = 900.0
    busy_back_off: float = 5.0  # a mailbox's pause after a busy answer that named no back-off
    # A server's pause after transport failures in a row: 0.5-1 s, 1-2 s, 2-4 s, then 4-8 s. The
    # cap bounds how long the queue waits after the server is back (one probe per step).
    server_back_off: float = 1.0
    server_max_back_off: float = 8.0
    probe_size: int = 10  # jobs in the one claim that probes a recovering server


@dataclass
class _Held:
    """A lease this process holds, and when it was last extended (monotonic clock)."""

    claim: Claim
    renewed: float
    # Set when the lease is gone or about to run out unrenewed: the claim's lanes stop
    # before another worker may take the mailbox, and the pusher re-writes nothing.
    lost: threading.Event = field(default_factory=threading.Event)
    plan: ClaimPlan | None = None  # the claim's slices, once they are being pushed


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
        self._threads: list[threading.Thread] = []
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        # Idle threads wait on this for a kick (wake(), or the watcher seeing new work).
        self._cv = threading.Condition(self._lock)
        self._kicks = 0
        self._tries = 0  # claim attempts, so the watcher knows a kick was acted on
        self._claims = 0  # successful claims
        # One session per (mailbox, lane): a session serves one thread at a time.
        self._sessions: dict[tuple[str, int], tuple[MailboxAccount, MailboxSession]] = {}
        self._idle_threads = 0
        self._yielding = 0  # claims of this worker ending early to make room (see _makes_room)
        self._success_noted: dict[str, float] = {}  # mailbox -> when its success was last recorded
        # The lanes of all claims take turns at the CPU (backends/turns.py): the host's own
        # threads then compete with one lane for Python, not with all of them.
        self._turns = Turns()
        self._switching = False  # holds switching.py's short interval (between start and stop)
        # Leases held right now, extended by the keeper while a batch runs: a batch that
        # takes longer than the lease must not let another worker into the mailbox.
        self._held: dict[str, _Held] = {}
        self._lease_lock = threading.Lock()  # a lease is never renewed while it is released
        self._keeper: tuple[threading.Thread, threading.Event] | None = None
        self._watcher: tuple[threading.Thread, threading.Event] | None = None
        self.pauses = PauseBoard(busy_back_off=self.config.busy_back_off)
        self._noted_servers: dict[str, str] = {}  # mailbox -> server last written to the store
        # Lane helpers, per thread that runs claims (worker threads; a test's or drain()'s thread).
        self._crew_local = threading.local()
        self._crews: list[_LaneCrew] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Worker:
        self._stop.clear()
        if not self._switching:  # the host's threads get the CPU back sooner (switching.py)
            switching.hold()
            self._switching = True
        for n in range(self.config.threads):
            t = threading.Thread(target=self._loop, name=f"tsl-exchange-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        # One watcher per worker (so one LISTEN connection per process, not one per thread).
        stop = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(stop,), name="tsl-exchange-worker-watch", daemon=True
        )
        self._watcher = (watcher, stop)
        watcher.start()
        self._ensure_keeper()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batches in hand, then stop. Unfinished work stays queued."""
        self._stop.set()
        if self._switching:
            switching.release()
            self._switching = False
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher[1].set()
        with self._cv:
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper[1].set()
            keeper[0].join(max(0.0, min(5.0, deadline - time.monotonic())))
        if watcher is not None:
            # The watcher waits in the store in slices of WATCH_SLICE; once it has left,
            # nothing of this worker uses the store any more and it may be closed.
            watcher[0].join(max(0.0, min(2 * WATCH_SLICE, deadline - time.monotonic())))
        with self._lock:
            crews, self._crews = self._crews, []
        for crew in crews:  # lanes of threads that called run_once themselves (drain, tests)
            crew.stop(max(0.0, deadline - time.monotonic()))
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for _, session in sessions:
            try:
                session.close()
            except Exception:  # closing must never stop a shutdown
                log.debug("closing a session failed", exc_info=True)

    def wake(self) -> None:
        with self._cv:
            self._kicks += 1
            self._cv.notify_all()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    # Taken before the claim: a kick that arrives while the claim finds
                    # nothing (the enqueue committed just after it looked) is not lost.
                    seen = self._kicks
                try:
                    worked = self.run_once()
                except Exception:  # the loop must survive anything; the job stays queued
                    log.exception("Exchange-Sync: unerwarteter Fehler im Worker")
                    worked = False
                if not worked:
                    self._idle(seen)
        finally:
            crew = getattr(self._crew_local, "crew", None)
            if crew is not None:
                with self._lock:
                    if crew in self._crews:
                        self._crews.remove(crew)
                crew.stop()
            self._release_connection()

    def _release_connection(self) -> None:
        """This thread is done with the outbox: its connection goes back now, not at the next sweep."""
        release = getattr(self.outbox, "release_thread", None)
        if release is not None:
            try:
                release()
            except Exception:  # the store may be closed already
                log.debug("releasing a connection failed", exc_info=True)

    def _idle(self, seen: int) -> None:
        with self._cv:
            self._idle_threads += 1
            all_idle = self._idle_threads == len(self._threads) and not self._busy
            self._cv.notify_all()  # the watcher listens only while some thread is idle
        try:
            try:
                if all_idle and self.outbox.pending_count() == 0:
                    signals.emit(signals.queue_drained, self)
                due = self.outbox.next_due_at()
            except Exception:  # e.g. the database is gone for a moment; try again after idle_wait
                log.warning("Exchange-Sync: Warteschlange nicht lesbar", exc_info=True)
                due = None
            # A due time already past is work this worker cannot take (gate held, or a
            # race lost to another process): polling it would spin. The watcher kicks
            # when the store's state changes; only a future due time shortens the wait.
            ahead = None if due is None else due - time.time()
            wait = self.config.idle_wait if ahead is None or ahead <= 0 else min(self.config.idle_wait, ahead)
            with self._cv:
                self._cv.wait_for(lambda: self._kicks != seen or self._stop.is_set(), wait)
        finally:
            with self._cv:
                self._idle_threads -= 1

    def _watch(self, stop: threading.Event) -> None:
        """Turn the outbox's wake-ups into kicks for idle threads.

        ``wait_for_work`` returns at once on a PostgreSQL NOTIFY (from any process) or,
        on SQLite, on an enqueue in this process (other processes: within its poll).
        Its answer is a hint that stays true while due work waits, so the watcher only
        listens while a thread is idle and the gate is open, and after a kick it waits
        for a claim attempt before it listens again; otherwise it would spin.
        """
        try:
            self._watch_loop(stop)
        finally:
            self._release_connection()

    def _watch_loop(self, stop: threading.Event) -> None:
        fruitless = False
        while not stop.is_set():
            with self._cv:
                ready = self._cv.wait_for(
                    lambda: stop.is_set() or (self._idle_threads > 0 and not self.held_reason),
                    self.config.idle_wait,
                )
            if stop.is_set():
                return
            if not ready:
                continue
            if fruitless:
                # The last hint led to no claim (another process was quicker, or the due
                # work is not ours to take): do not ask again at once.
                stop.wait(0.1)
            try:
                # Short slices: stop() must be able to wait for this thread to leave the store
                # before the runtime closes it (closing a connection in use can crash sqlite).
                woke = self.outbox.wait_for_work(min(self.config.idle_wait, WATCH_SLICE))
            except Exception:
                if stop.is_set():
                    return  # the store was closed under us during shutdown
                log.warning("Exchange-Sync: Warten auf neue Arbeit fehlgeschlagen", exc_info=True)
                stop.wait(self.config.idle_wait)
                continue
            if stop.is_set():
                return
            if not woke:
                fruitless = False
                continue
            with self._cv:
                tries, claims = self._tries, self._claims
                self._kicks += 1
                self._cv.notify_all()

                def tried(t: int = tries) -> bool:
                    return stop.is_set() or self._tries != t

                self._cv.wait_for(tried, self.config.idle_wait)
                fruitless = self._claims == claims

    # ------------------------------------------------------------------ leases
    def _ensure_keeper(self) -> None:
        with self._lock:
            if self._stop.is_set() or (self._keeper is not None and self._keeper[0].is_alive()):
                return
            stop = threading.Event()
            keeper = threading.Thread(
                target=self._keep_leases, args=(stop,), name="tsl-exchange-lease-keeper", daemon=True
            )
            self._keeper = (keeper, stop)
        keeper.start()

    def _keep_leases(self, stop: threading.Event) -> None:
        """Extend the leases of running batches every third of the lease time.

        A dead process stops renewing, so its mailboxes are free again one lease
        time after its last renewal; a live one keeps its mailbox however long a
        batch takes (each request is bounded by its own timeout)."""
        try:
            self._keep_leases_loop(stop)
        finally:
            self._release_connection()

    def _keep_leases_loop(self, stop: threading.Event) -> None:
        lease = self.config.lease_seconds
        while not stop.wait(max(0.05, lease / 6)):
            with self._lease_lock:
                with self._lock:
                    due = [h for h in self._held.values() if time.monotonic() - h.renewed >= lease / 3]
                for held in due:
                    try:
                        claim = self.outbox.renew(held.claim, lease_seconds=lease)
                    except LeaseLost:
                        log.warning(
                            "Exchange-Sync: Postfach %s: Sperre verloren (Stapel lief länger als %s s)",
                            held.claim.mailbox,
                            lease,
                        )
                        held.lost.set()
                        with self._lock:
                            self._held.pop(held.claim.mailbox, None)
                    except Exception:  # a database hiccup: the next round tries again, while time is left
                        log.debug("renewing a lease failed", exc_info=True)
                        if time.monotonic() - held.renewed >= lease * (1 - LEASE_SAFETY_SHARE):
                            log.warning(
                                "Exchange-Sync: Postfach %s: Sperre ließ sich nicht verlängern; "
                                "der Stapel wird angehalten und später fortgesetzt",
                                held.claim.mailbox,
                            )
                            held.lost.set()
                            with self._lock:
                                self._held.pop(held.claim.mailbox, None)
                    else:
                        held.claim, held.renewed = claim, time.monotonic()

    def run_once(self, now: float | None = None) -> bool:
        """Claim one mailbox and push one batch. Returns False when nothing was claimable."""
        if self.gate is not None:
            reason = self.gate() or ""
            if reason != self.held_reason:
                self.held_reason = reason
                signals.emit(
                    signals.mailbox_status_changed,
                    self,
                    mailbox="*",
                    status="held" if reason else "resumed",
                    reason=reason,
                )
            if reason:
                self._tried(False)
                return False
        with self._lock:
            exclude = tuple(self._busy)
        try:
            claim = self.outbox.claim(
                self.worker_id,
                limit=self.config.batch_size * max(1, self.config.slices_per_claim),
                lease_seconds=self.config.lease_seconds,
                exclude=exclude,
                now=now,
                probe_limit=max(1, self.config.probe_size),
            )
        except BaseException:
            self._tried(False)
            raise
        finally:
            self._yielded_claimed()
        self._tried(claim is not None)
        if claim is None:
            return False
        held = _Held(claim, time.monotonic())
        with self._lock:
            self._busy.add(claim.mailbox)
            self._held[claim.mailbox] = held
        self._ensure_keeper()
        try:
            self._process(claim, held)
        finally:
            plan = held.plan
            if plan is not None and plan.ended_early:
                self._crew_local.yielded = True  # this thread's next claim lets others make room
            unsent = plan.unsent if plan is not None and not held.lost.is_set() else []
            with self._lease_lock:
                with self._lock:
                    self._busy.discard(claim.mailbox)
                    self._held.pop(claim.mailbox, None)
                self.outbox.release(claim, unsent=unsent)
            signals.emit(signals.batch_done, self, mailbox=claim.mailbox)
        return True

    def _tried(self, claimed: bool) -> None:
        with self._cv:
            self._tries += 1
            self._claims += claimed
            self._cv.notify_all()

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
    def _session(self, mailbox: str, lane: int, account: MailboxAccount) -> MailboxSession:
        with self._lock:
            cached = self._sessions.get((mailbox, lane))
        if cached and cached[0] == account:
            return cached[1]
        session = self.backend.session(account)
        with self._lock:
            old = self._sessions.get((mailbox, lane))
            self._sessions[(mailbox, lane)] = (account, session)
        if old:
            old[1].close()
        return session

    def _forget_sessions(self, mailbox: str) -> None:
        with self._lock:
            for key in [k for k in self._sessions if k[0] == mailbox]:
                del self._sessions[key]

    def _process(self, claim: Claim, held: _Held | None = None) -> None:
        held = held or _Held(claim, time.monotonic())
        mailbox = claim.mailbox
        plan = ClaimPlan(claim.jobs, max(1, self.config.batch_size))
        held.plan = plan
        lanes = max(1, min(self.config.lanes, plan.slice_count()))
        server = ""
        try:
            account = self.resolve(mailbox)
            server = account.server
            self._note_server(mailbox, server)
            sessions = [self._session(mailbox, lane, account) for lane in range(lanes)]
        except (LookupError, ValueError, ExchangeError, VaultError) as exc:
            # No account, bad settings, undecryptable password: an administrator must act.
            # (AccountError and MappingError are ValueErrors.)
            self._park(mailbox, str(exc))
            self._probe_done(claim, server, answered=False)
            return
        except Exception as exc:  # a passing hiccup (settings store busy): try again later
            reason = f"Vorübergehender Fehler beim Lesen der Einstellungen: {exc}"
            try:
                self._retry_all(claim.jobs, reason, None, fence=claim)
                self._note_error(mailbox, reason, fence=claim)
            except LeaseLost:
                held.lost.set()
            self._probe_done(claim, server, answered=False)
            return
        guard = self.pauses.guard(mailbox, server)
        for session in sessions:
            _attach_guard(session, guard)
        answers = guard.answers
        stopped: list[ExchangeError] = []  # the whole-request error that ended this claim early
        starts_with_saves = plan.next_priority() == PRIORITY_INTERACTIVE

        def lane(session: MailboxSession) -> None:
            with self._turns.taking_part(first=starts_with_saves):
                while not stopped and not held.lost.is_set():
                    if plan.next_priority() is None:
                        return  # all slices are out (a lane with nothing to do asks the store nothing)
                    # Before each slice: a lease lost meanwhile stops the claim, untouched jobs
                    # stay as they are for the next holder.
                    if not self.outbox.check_lease(claim):
                        held.lost.set()
                        return
                    try:
                        jobs = self._next_slice(claim, plan)
                    except LeaseLost:
                        held.lost.set()
                        return
                    if jobs is None:
                        return
                    saves = jobs[0].priority == PRIORITY_INTERACTIVE
                    with turns.going_first() if saves else nullcontext():
                        fatal = self._push_slice(mailbox, server, jobs, session, held)
                    if held.lost.is_set():
                        return
                    if fatal is not None:
                        stopped.append(fatal)

        tasks = [lambda s=s: self._lane_guard(lane, s) for s in sessions]
        self._crew().run(tasks)
        if held.lost.is_set():
            log.warning("Exchange-Sync: Postfach %s: Sperre verloren, der Stapel wurde angehalten", mailbox)
            self._probe_done(claim, server, answered=guard.answers > answers)
            return
        if stopped:
            # Slices not begun: the server said stop, so they wait as long as the failed ones.
            rest = plan.stop()
            fatal = stopped[0]
            if rest and isinstance(fatal, TransientError) and fatal.pause:
                self._waiting(rest, fatal, self._resting_for(mailbox, server))
            elif rest and not isinstance(fatal, (AuthFailed, ConfigError)):
                try:
                    self._retry_all(rest, str(fatal), getattr(fatal, "back_off", None), fence=claim)
                except LeaseLost:
                    held.lost.set()
        self._probe_done(claim, server, answered=guard.answers > answers)

    # ------------------------------------------------------------------ better work first
    def _next_slice(self, claim: Claim, plan: ClaimPlan) -> list[Job] | None:
        """The next slice of a claim, or None when it is done or makes room (LeaseLost propagates).

        A job of better priority than the next slice does not wait for the claim to end: one of
        the claim's own mailbox is handed out under its lease and goes next, in a slice of its
        own; one of another mailbox that no thread of this worker is free to take ends the claim
        here (one claim per such mailbox), and its unsent jobs go back to the queue."""
        with plan.checking:  # one lane looks at a time, so a job is never handed to both
            below = plan.next_priority()
            if below is None:
                return None
            if below > PRIORITY_INTERACTIVE and not claim.probe:
                urgent = self.outbox.claim_urgent(claim, below=below, skip=plan.begun(), limit=plan.size)
                if urgent:
                    plan.put_first(urgent)
                elif self._makes_room(claim, below):
                    plan.end_early()
                    return None
            return plan.take()

    def _makes_room(self, claim: Claim, below: int) -> bool:
        """Whether this claim should end for better work waiting in other mailboxes: no thread of
        this worker is free to claim it, and fewer claims of this worker are making room already
        than there are such mailboxes (one claim per mailbox, not every claim for each)."""
        with self._lock:
            if len(self._threads) > len(self._busy):
                return False  # a free thread takes it
            making = self._yielding
            busy = tuple(self._busy)
        waiting = self.outbox.urgent_waiting(below=below, exclude=busy, limit=making + 1)
        with self._lock:
            if waiting <= self._yielding:
                return False
            self._yielding += 1  # until the claiming thread has claimed again (run_once)
        return True

    def _yielded_claimed(self) -> None:
        """The thread that ended a claim to make room has claimed again (or found nothing):
        its share of the room is taken."""
        if getattr(self._crew_local, "yielded", False):
            self._crew_local.yielded = False
            with self._lock:
                self._yielding = max(0, self._yielding - 1)

    @staticmethod
    def _lane_guard(lane: Callable[[MailboxSession], None], session: MailboxSession) -> None:
        try:
            lane(session)
        except Exception:  # as in _loop: the lane's jobs stay claimed and come back after release
            log.exception("Exchange-Sync: unerwarteter Fehler im Worker")

    def _retry_all(
        self, jobs: Sequence[Job], reason: str, hint: float | None, *, fence: Claim | None = None
    ) -> None:
        delays = [
            retry_delay(job.attempts + 1, cap=self.config.max_back_off, server_hint=hint) for job in jobs
        ]
        if jobs:
            self.outbox.retry_many(jobs, reason, delays, fence=fence)
        for job, delay in zip(jobs, delays, strict=True):
            self._failed(job, reason, retry_in=delay)

    def _settle(
        self, mailbox: str, server: str, result: BatchResult, *, fence: Claim | None = None
    ) -> ExchangeError | None:
        """Record one slice's outcome; returns the whole-request error that should stop the claim.
        With ``fence`` every write needs the lease; LeaseLost propagates."""
        for job, reason in result.failed:
            self.outbox.fail(job, reason, fence=fence)
            self._failed(job, reason, retry_in=None)
        fatal = result.fatal
        if isinstance(fatal, (AuthFailed, ConfigError)):
            self._park(mailbox, str(fatal))
            self._forget_sessions(mailbox)
            return fatal
        by_hint: dict[tuple[str, float | None], list[Job]] = {}
        for job, error, hint in result.retry:
            by_hint.setdefault((error, hint), []).append(job)
        for (error, hint), jobs in by_hint.items():
            self._retry_all(jobs, error, hint, fence=fence)
        if isinstance(fatal, TransientError) and fatal.pause:
            # result.interrupted stay as they are: due, attempts unchanged, behind the pause.
            self._waiting(result.interrupted, fatal, self._pause(mailbox, server, fatal, fence=fence))
            return fatal
        if fatal is not None:
            self._note_error(mailbox, str(fatal), fence=fence)
            signals.emit(
                signals.mailbox_status_changed, self, mailbox=mailbox, status="error", reason=str(fatal)
            )
        elif result.done or not result.retry:
            self._note_success(mailbox, fence=fence)
        return fatal

    def _note_success(self, mailbox: str, *, fence: Claim | None = None) -> None:
        """Record a mailbox's success, at most every SUCCESS_NOTE_EVERY seconds: every slice
        succeeds during a bulk, and each write is a transaction the host's saves may wait for.
        After an error the next success is recorded at once (``_note_error``)."""
        now = time.monotonic()
        with self._lock:
            last = self._success_noted.get(mailbox)
        if last is not None and now - last < SUCCESS_NOTE_EVERY:
            return
        self.outbox.record_success(mailbox, fence=fence)
        with self._lock:
            self._success_noted[mailbox] = now

    def _note_error(self, mailbox: str, error: str, *, fence: Claim | None = None) -> None:
        with self._lock:
            self._success_noted.pop(mailbox, None)
        self.outbox.record_error(mailbox, error, fence=fence)

    def _failed(self, job: Job, error: str, *, retry_in: float | None, paused: bool = False) -> None:
        """Tell the listeners (status, audit); ``retry_in`` None means permanently failed;
        ``paused``: the job waits for its mailbox's or server's pause and counted no attempt."""
        signals.emit(
            signals.push_failed,
            self,
            mailbox=job.mailbox,
            record_key=job.record_key,
            op=job.op,
            error=error,
            permanent=retry_in is None,
            retry_in=retry_in,
            paused=paused,
        )

    def _park(self, mailbox: str, reason: str) -> None:
        log.warning("Exchange-Sync: Postfach %s angehalten: %s", mailbox, reason)
        self.outbox.park(mailbox, reason)
        signals.emit(signals.mailbox_status_changed, self, mailbox=mailbox, status="parked", reason=reason)

    def _push_slice(
        self,
        mailbox: str,
        server: str,
        jobs: Sequence[Job],
        session: MailboxSession,
        held: _Held | None = None,
    ) -> ExchangeError | None:
        """Push and settle one slice. Anything unexpected (a bug, a database that is locked while
        the outcome is recorded) retries the slice's unsettled jobs with back-off: released as
        they were, they would be claimed again at once with the same attempts, and the claim
        loop would spin on them. With ``held`` every write is fenced by its claim; a lost lease
        sets ``held.lost`` and nothing more is written."""
        fence = held.claim if held is not None else None
        lost = held.lost if held is not None else None
        try:
            result = self.pusher.run(mailbox, jobs, session, fence=fence, lost=lost)
        except Exception as exc:
            self._unexpected(jobs, exc, fence=fence)
            return None
        if result.lost:
            if held is not None:
                held.lost.set()
            return None
        try:
            return self._settle(mailbox, server, result, fence=fence)
        except LeaseLost:
            if held is not None:
                held.lost.set()
            return None
        except Exception as exc:
            settled = {j.id for j in result.done} | {j.id for j, _ in result.failed}
            self._unexpected([j for j in jobs if j.id not in settled], exc, fence=fence)
            return None

    def _unexpected(self, jobs: Sequence[Job], exc: Exception, *, fence: Claim | None = None) -> None:
        log.error("Exchange-Sync: unerwarteter Fehler beim Übertragen", exc_info=exc)
        reason = (
            f"Unerwarteter Fehler bei der Übertragung ({type(exc).__name__}: {exc}); neuer Versuch später."
        )
        for job in jobs:
            try:
                self._retry_all([job], reason, None, fence=fence)
            except LeaseLost:  # the next holder has the jobs now
                return
            except Exception:  # the store itself fails; it refuses the next claim as well
                log.warning(
                    "Exchange-Sync: Wiederholung für %s nicht speicherbar", job.record_key, exc_info=True
                )

    # ------------------------------------------------------------------ pauses
    def _note_server(self, mailbox: str, server: str) -> None:
        """The store learns each mailbox's server once, so a server pause covers all its mailboxes."""
        if self._noted_servers.get(mailbox) == server:
            return
        note = getattr(self.outbox, "note_server", None)
        if note is not None:
            note(mailbox, server)
        self._noted_servers[mailbox] = server

    def _waiting(self, jobs: Sequence[Job], error: TransientError, wait: float | None) -> None:
        """Tell the listeners that these jobs wait for a pause (no attempt counted). Not for a
        claim that met a pause before sending anything: nothing happened to its jobs."""
        if wait is None or isinstance(error, Resting):
            return
        for job in jobs:
            self._failed(job, str(error), retry_in=wait, paused=True)

    def _resting_for(self, mailbox: str, server: str) -> float | None:
        resting = self.pauses.resting(mailbox, server)
        return None if resting is None else resting.back_off

    def _pause(
        self, mailbox: str, server: str, error: TransientError, *, fence: Claim | None = None
    ) -> float | None:
        """Record a pause that ``error`` calls for, in the store (for every process) and here;
        returns the seconds it lasts from now."""
        if isinstance(error, Resting):
            return None  # nothing was sent; the pause that stopped it is recorded already
        if error.pause == "mailbox":
            back_off = error.back_off if error.back_off and error.back_off > 0 else self.config.busy_back_off
            until = self.outbox.pause_mailbox(mailbox, back_off)
            self.pauses.pause_mailbox(mailbox, until)
            self._note_error(mailbox, str(error), fence=fence)
            signals.emit(
                signals.mailbox_status_changed,
                self,
                mailbox=mailbox,
                status="paused",
                reason=str(error),
                until=until,
            )
            return max(0.0, until - time.time())
        cfg = self.config
        self._note_error(mailbox, str(error), fence=fence)
        step = self.outbox.server_failed(
            server,
            lambda failures: pause_delay(failures, base=cfg.server_back_off, cap=cfg.server_max_back_off),
        )
        self.pauses.pause_server(server, step.paused_until)
        if step.counted:
            log.warning(
                "Exchange-Sync: Server %s nicht erreichbar (%s. Fehlschlag in Folge); nächster Versuch in %.1f s: %s",
                server,
                step.failures,
                max(0.0, step.paused_until - time.time()),
                error,
            )
            signals.emit(
                signals.server_status_changed,
                self,
                server=server,
                status="paused",
                failures=step.failures,
                until=step.paused_until,
            )
        return max(0.0, step.paused_until - time.time())

    def _probe_done(self, claim: Claim, server: str, *, answered: bool) -> None:
        """The verdict of a probe claim: an answer opens the server; a transport failure has paused
        it again already (``server_failed``); neither lets the next claim probe."""
        if not claim.probe or not server:
            return
        if answered:
            self.outbox.server_ok(server)
            self.pauses.open_server(server)
            log.info("Exchange-Sync: Server %s antwortet wieder.", server)
            signals.emit(
                signals.server_status_changed, self, server=server, status="open", failures=0, until=0.0
            )
        else:
            self.outbox.end_probe(server, claim.worker_id)

    # ------------------------------------------------------------------ lanes
    def _crew(self) -> _LaneCrew:
        crew = getattr(self._crew_local, "crew", None)
        if crew is None:
            crew = self._crew_local.crew = _LaneCrew(
                threading.current_thread().name, self._release_connection
            )
        with self._lock:
            if crew not in self._crews:  # new, or stopped by stop() and claiming again
                self._crews.append(crew)
        return crew


def _attach_guard(session: MailboxSession, guard: object) -> None:
    """Give the guard to the session that sends the requests: a wrapping session (the routing
    backend's) passes attribute reads to its ``inner`` one, but not assignments."""
    target: object = session
    while isinstance(getattr(target, "__dict__", None), dict) and "inner" in vars(target):
        target = vars(target)["inner"]
    if "guard" in getattr(target, "__dict__", {}):
        target.guard = guard  # type: ignore[attr-defined]  # checked in its __dict__ just above


class _LaneCrew:
    """The lane helpers of one thread that runs claims, kept for that thread's life.

    A claim's first lane runs in the claiming thread, the others on these helpers; a helper
    is started the first time a claim needs it and then waits for the next claim. (A new
    thread per claim, each with its own outbox connection, leaked a connection per claim.)
    """

    def __init__(self, name: str, on_exit: Callable[[], None]) -> None:
        self._name = name
        self._on_exit = on_exit
        self._tasks: queue.SimpleQueue[tuple[Callable[[], None], threading.Event] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []

    def run(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run ``tasks[0]`` here and the others on helpers at the same time; return when all are done."""
        if not tasks:
            return
        while len(self._threads) < len(tasks) - 1:
            t = threading.Thread(target=self._serve, name=f"{self._name}-lane", daemon=True)
            t.start()
            self._threads.append(t)
        done = [threading.Event() for _ in tasks[1:]]
        for task, event in zip(tasks[1:], done, strict=True):
            self._tasks.put((task, event))
        try:
            tasks[0]()
        finally:
            for event in done:
                event.wait()

    def _serve(self) -> None:
        try:
            while True:
                item = self._tasks.get()
                if item is None:
                    return
                task, event = item
                try:
                    task()
                finally:
                    event.set()
        finally:
            self._on_exit()

    def stop(self, timeout: float = 5.0) -> None:
        threads, self._threads = self._threads, []
        for _ in threads:
            self._tasks.put(None)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
