"""The durable push queue: one interface, implemented by a SQLite and a PostgreSQL store.

Model
-----
* One row per (mailbox, record_key). Enqueueing a change for a pair that already
  has a row replaces its op and snapshot, raises ``version`` by one, makes it due
  now and clears attempts and error (but keeps ``claims``) (coalescing: ten edits in a second push once;
  a permanently failed row is retried when the record changes).
* Work is claimed per mailbox: ``claim`` takes a lease on one mailbox that has due
  work, is not parked and is not leased by a live worker, and returns its due jobs.
  A lease expires after ``lease_seconds`` so a dead worker's mailbox is picked up
  again. While a worker holds the lease no other worker touches that mailbox.
* ``ack`` removes a job only if its version is still the one that was claimed; a
  newer snapshot enqueued meanwhile stays and is pushed next.
* ``retry`` keeps the job and makes it due after ``delay`` seconds; ``fail`` keeps it
  with status "failed" and the reason (nothing is dropped silently).
* Sync state maps (mailbox, record_key) to the Exchange ItemId, ChangeKey and the
  content hash last written. It lives in the same store so that an ack and the
  state update are one transaction (``complete``).
* Mailbox state: parked (e.g. wrong password) with a reason, last success, last error.

Fencing
-------
Every claim carries a fencing token: the lease's generation, stored in the leases
table and raised by one on every claim of that mailbox. Writes made on behalf of a
claim (acks, retries, failures, sync state, mailbox outcome) take ``fence=claim`` and
succeed only while that lease is still held with that token, checked in the same
transaction; otherwise they write nothing and raise ``LeaseLost``. A worker that lost
its lease therefore cannot overwrite what the next holder wrote. The one write that
needs no lease is ``note_verify``: it only asks the next holder to look a record up.

Order
-----
``Change.version`` is the record's source version (the host's per-record revision,
or its modification time in microseconds; 0 = unknown). A queued snapshot is replaced
only by a change of a newer version; on equal versions the later enqueue wins, except
that a save never replaces a queued delete of the same version (a host that numbers
deletes too never sends such a tie; where it happens the removal is the safe side).
A change older than the version the sync state already reflects is dropped as
superseded (counted per mailbox, no error), and
so is a save not newer than a delete already pushed (a tombstone keeps a pushed
delete's version for a week, as the record's sync state is gone). Unknown versions (0) behave as before:
they replace what is queued and never lower the stored version. The sync state keeps
the version it reflects; a sync write of an older version never replaces a newer one.

Priority
--------
0 interactive save/delete, 1 bulk (resync, bulk subscription actions, initial sync),
2 reconcile sweep. A claim takes the mailbox whose best due job ranks first by
(priority, due_at, id) and hands its jobs out in that order; coalescing keeps the
better (lower) priority. A running claim does not make better work wait for its end:
``claim_urgent`` adds its own mailbox's newer, better jobs under the same lease, and
``urgent_waiting`` tells a worker that another mailbox's better work waits, so that a
bulk claim may end early (``release`` with the jobs it never sent).

Payloads
--------
Snapshots are stored once per content (table ``payloads``, keyed by a SHA-256 of the
text) and referenced by the per-mailbox jobs: a contact subscribed by 20 users is one
stored snapshot. A payload no job references any more is deleted with the last job.

All timestamps are UNIX seconds (float, UTC). Payloads are JSON text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Op = Literal["upsert", "delete"]
# "verify": no change of its own; the next holder looks the record key up and removes
# copies the sync state does not name (left by a write that landed after its lease ended).
JobOp = Literal["upsert", "delete", "verify"]

PRIORITY_INTERACTIVE = 0
PRIORITY_BULK = 1
PRIORITY_RECONCILE = 2


@dataclass(frozen=True)
class Change:
    """One change to enqueue for one mailbox."""

    mailbox: str  # the host user id whose Exchange mailbox receives it
    record_key: str  # "contact:17", "deadline:4#pre1", ...
    op: Op
    payload: str = ""  # JSON snapshot (empty for deletes)
    # The record's source version (see "Order" above); 0: unknown, ordered by arrival.
    version: int = 0
    priority: int = PRIORITY_INTERACTIVE


@dataclass(frozen=True)
class Job:
    """A queued change as a worker sees it."""

    id: int
    mailbox: str
    record_key: str
    op: JobOp
    payload: str
    version: int
    attempts: int
    status: Literal["pending", "failed"] = "pending"
    last_error: str = ""
    due_at: float = 0.0
    enqueued_at: float = 0.0
    # How often workers were handed this row, over all its coalesced versions; >1 means an
    # earlier push may have written, so a create looks its key up first.
    claims: int = 0
    source_version: int = 0  # the record version of the snapshot (Change.version)
    priority: int = PRIORITY_INTERACTIVE
    # A write may have landed after its worker lost the lease: look the key up and
    # remove copies the sync state does not name before anything else.
    verify: bool = False


@dataclass(frozen=True)
class Claim:
    """A lease on one mailbox plus the due jobs taken with it."""

    mailbox: str
    worker_id: str
    lease_until: float
    jobs: tuple[Job, ...]
    token: int = 0  # the fencing token: the lease's generation for this mailbox
    # The mailbox's server is recovering from an outage and this claim is its one probe:
    # at most ``probe_limit`` jobs, and the server opens for everyone only once it succeeds.
    probe: bool = False


@dataclass(frozen=True)
class SyncEntry:
    """What the plugin last wrote for a record into a mailbox."""

    mailbox: str
    record_key: str
    item_id: str
    change_key: str
    content_hash: str
    item_class: str = ""  # "contact", "calendar", "task"
    updated_at: float = 0.0
    source_version: int = 0  # the record version this entry reflects (0: unknown)


@dataclass(frozen=True)
class MailboxState:
    mailbox: str
    parked: bool = False
    parked_reason: str = ""
    last_success_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    pending: int = 0
    failed: int = 0


@dataclass(frozen=True)
class ServerPause:
    """An Exchange server (host:port) that failed: how often in a row, and until when it rests."""

    server: str
    failures: int
    paused_until: float
    counted: bool = True  # False: the failure fell into a pause already running (same step)


class Pauses(Protocol):
    """Back-off that belongs to a mailbox or a server, not to a job (both stores implement it).

    Claims skip a mailbox while it or its server is paused, and while another worker's
    probe of its server is out; ``next_due_at`` counts the pause in."""

    def note_server(self, mailbox: str, server: str) -> None:
        """Remember which server (host:port) a mailbox lives on, so a server pause covers it."""

    def pause_mailbox(self, mailbox: str, seconds: float) -> float:
        """No request to this mailbox for ``seconds`` (a longer pause already set stays); returns its end."""

    def server_failed(self, server: str, delay_for: Callable[[int], float]) -> ServerPause:
        """A transport failure: unless a pause is already running, count one more failure and
        pause the server for ``delay_for(failures)`` seconds."""

    def server_ok(self, server: str) -> None:
        """A request to the server succeeded: forget its failures, open it for every claim."""

    def end_probe(self, server: str, worker_id: str) -> None:
        """The probe claim ended without an answer either way: the next claim may probe."""

    def server_pauses(self) -> list[ServerPause]: ...

    def mailbox_pauses(self) -> dict[str, float]: ...


class Outbox(Pauses, Protocol):
    """The one outbox interface (with the pauses). Every method is one short transaction."""

    # -- producers (the host's save path) --------------------------------------
    def enqueue(self, changes: Sequence[Change]) -> None:
        """Insert or replace (coalesce) all changes in ONE transaction."""

    # -- workers -----------------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        *,
        limit: int = 100,
        lease_seconds: float = 60.0,
        exclude: Sequence[str] = (),
        now: float | None = None,
        probe_limit: int | None = None,
    ) -> Claim | None:
        """Lease one mailbox with due pending jobs (not parked, not paused, not leased, not in
        ``exclude``, its server neither paused nor being probed) and return up to ``limit`` of
        its due jobs, oldest first; a claim that probes a recovering server (``Claim.probe``)
        takes at most ``probe_limit``."""

    def renew(self, claim: Claim, *, lease_seconds: float = 60.0) -> Claim:
        """Extend the lease; raises LeaseLost if another worker took the mailbox."""

    def release(self, claim: Claim, *, unsent: Sequence[Job] = ()) -> None:
        """Give the mailbox lease back (jobs not acked stay as they are). ``unsent``: jobs of the
        claim that were never sent (it ended early); while the lease is still ours their hand-out
        is uncounted, so their next claim need not look their keys up before creating."""

    def claim_urgent(
        self, claim: Claim, *, below: int, skip: Sequence[int] = (), limit: int = 100
    ) -> tuple[Job, ...]:
        """More of the claim's mailbox: its due pending jobs that rank above ``below`` (priority
        less than it), except the ids in ``skip`` (those the claim has begun), up to ``limit``,
        handed out under the claim's lease (fenced: raises LeaseLost) and counted like a claim.
        Lets a save made while a bulk claim runs go out with the claim's next slice."""

    def urgent_waiting(
        self, *, below: int, exclude: Sequence[str] = (), limit: int = 1, now: float | None = None
    ) -> int:
        """How many other mailboxes (not in ``exclude``; counted up to ``limit``) could be claimed
        now for due work that ranks above ``below``: as many bulk claims may end early for them
        when no thread is free. Reads only."""

    def complete(
        self, job: Job, sync: SyncEntry | None, *, remove_sync: bool = False, fence: Claim | None = None
    ) -> bool:
        """Ack ``job`` (delete it if its version is unchanged) and, in the same
        transaction, store ``sync`` or remove the sync entry. Returns False when a
        newer version superseded the job (the sync state is still written, because
        it describes what is now in the mailbox)."""

    def complete_many(
        self,
        jobs: Sequence[Job],
        entries: Sequence[SyncEntry] = (),
        removed: Sequence[tuple[str, str]] = (),
        *,
        fence: Claim | None = None,
    ) -> list[bool]:
        """Batch form of ``complete`` in ONE transaction: ack ``jobs`` (version-checked),
        upsert ``entries`` and remove the (mailbox, record_key) pairs in ``removed``."""

    def put_sync_many(self, entries: Sequence[SyncEntry], *, fence: Claim | None = None) -> None:
        """Upsert several sync entries in one transaction."""

    def retry(self, job: Job, error: str, delay: float, *, fence: Claim | None = None) -> None:
        """Keep the job pending, attempts+1, due in ``delay`` seconds (no-op if superseded)."""

    def fail(self, job: Job, reason: str, *, fence: Claim | None = None) -> None:
        """Mark permanently failed with a reason (no-op if superseded)."""

    def next_due_at(self) -> float | None:
        """Earliest due_at over claimable pending jobs, for the worker's sleep."""

    def wait_for_work(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until work may be claimable: a change was
        enqueued (NOTIFY on PostgreSQL; in-process signal plus polling on SQLite) or a
        pending job fell due. Returns True when woken for work, False on timeout.
        Call it after ``claim`` returned None; a True answer is a hint, not a promise."""

    def requeue_failed(self, mailbox: str | None = None) -> int:
        """Make failed jobs pending and due now (attempts 0, error kept until the next
        outcome); e.g. the administrator's "retry failed" action. Returns the count."""

    # -- sync state ----------------------------------------------------------------
    def get_sync(self, mailbox: str, record_keys: Sequence[str]) -> dict[str, SyncEntry]: ...

    def put_sync(self, entry: SyncEntry, *, fence: Claim | None = None) -> None: ...

    def delete_sync(self, mailbox: str, record_key: str, *, fence: Claim | None = None) -> None: ...

    def holders(self, record_key: str) -> list[str]:
        """Mailboxes that hold (sync state) or are about to receive (pending upsert) this record
        or one of its sub-items (``record_key#...``): whom a delete or a change of recipients concerns."""

    def sync_keys(self, mailbox: str, prefix: str = "") -> list[str]:
        """Record keys with sync state in a mailbox (optionally with a key prefix)."""

    # -- mailboxes -------------------------------------------------------------------
    def park(self, mailbox: str, reason: str) -> None: ...

    def unpark(self, mailbox: str) -> None: ...

    def record_success(self, mailbox: str, *, fence: Claim | None = None) -> None: ...

    def record_error(self, mailbox: str, error: str, *, fence: Claim | None = None) -> None: ...

    def mailbox_states(self) -> list[MailboxState]: ...

    # -- inspection ------------------------------------------------------------------
    def pending_count(self, mailbox: str | None = None) -> int: ...

    def jobs(self, mailbox: str | None = None, status: str | None = None) -> list[Job]: ...

    def close(self) -> None: ...

    # -- what host-less worker processes read (see core/shared_state.py) ---------------------------
    def put_worker_rows(self, rows: Mapping[str, str | None]) -> int:
        """Upsert (None: delete) rows of the shared worker state in ONE transaction; unchanged
        rows are not rewritten. Returns how many changed; a change wakes idle workers."""

    def worker_rows(self, prefix: str = "") -> dict[str, str]:
        """Rows of the shared worker state whose key starts with ``prefix``."""

    def worker_row(self, key: str) -> str | None: ...

    # -- the request limit per Exchange server, across processes ------------------------------
    def acquire_server_slot(
        self, server: str, limit: int, holder: str, *, lease_seconds: float = 120.0, now: float | None = None
    ) -> int | None:
        """Take one of ``limit`` slots of ``server`` for one request; None when all are taken.
        A dead process's slots come free (PostgreSQL: with its session; SQLite: after the lease)."""

    def release_server_slot(self, server: str, slot: int, holder: str) -> None: ...

    # -- fencing, order, bulk retries ---------------------------------------------------
    def check_lease(self, claim: Claim) -> bool:
        """True while ``claim``'s lease is still held with its token (one cheap read)."""

    def note_verify(self, mailbox: str, record_keys: Sequence[str]) -> None:
        """Ask the next holder of ``mailbox`` to look these record keys up and remove copies the
        sync state does not name. Needs no lease: it only adds work (a "verify" job, or the
        flag on the record's queued job, whose version it raises so a running ack misses it)."""

    def retry_many(
        self, jobs: Sequence[Job], error: str, delays: Sequence[float], *, fence: Claim | None = None
    ) -> None:
        """``retry`` for several jobs (each with its own delay) in ONE transaction."""

    def superseded_count(self, mailbox: str | None = None) -> int:
        """How many enqueued changes were dropped because a newer version was queued or synced."""


class LeaseLost(RuntimeError):
    """Another worker holds the mailbox now; stop working on this claim."""
