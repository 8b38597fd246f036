"""What both outbox stores (SQLite, PostgreSQL) share: column lists, row converters, checks.

The stores differ in SQL dialect, locking and clocks; the shape of their rows and the
rules for valid input are one, so they live here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .base import Change, Job, MailboxState, SyncEntry

# Column order of every query that returns jobs; ``job_from_row`` reads rows in this order.
JOB_COLS = (
    "id, mailbox, record_key, op, payload, version, attempts, status, last_error, due_at, enqueued_at, claims"
)

# Column order of sync_state reads and writes; ``sync_params`` and ``SyncEntry(*row)`` follow it.
SYNC_COLS = "mailbox, record_key, item_id, change_key, content_hash, item_class, updated_at"


def job_from_row(row: Sequence) -> Job:
    """A Job from a row in ``JOB_COLS`` order."""
    return Job(
        id=row[0],
        mailbox=row[1],
        record_key=row[2],
        op=row[3],
        payload=row[4],
        version=row[5],
        attempts=row[6],
        status=row[7],
        last_error=row[8],
        due_at=row[9],
        enqueued_at=row[10],
        claims=row[11],
    )


def claimed_jobs(rows: Iterable[Sequence]) -> tuple[Job, ...]:
    """Jobs handed out by a claim, oldest due first (UPDATE ... RETURNING has no order)."""
    return tuple(sorted((job_from_row(r) for r in rows), key=lambda j: (j.due_at, j.id)))


def mailbox_state(row: Sequence) -> MailboxState:
    """A MailboxState from a row of the stores' mailbox_states query."""
    return MailboxState(
        mailbox=row[0],
        parked=bool(row[1]),
        parked_reason=row[2],
        last_success_at=row[3],
        last_error=row[4],
        last_error_at=row[5],
        # PostgreSQL's count(*) is bigint; int() keeps both stores' answers alike.
        pending=int(row[6]),
        failed=int(row[7]),
    )


def sync_params(e: SyncEntry, updated_at: float | None) -> tuple:
    """Parameters for a sync_state upsert in ``SYNC_COLS`` order; ``updated_at`` is
    the store's choice for an entry without one (its clock, or None for the server's)."""
    return (e.mailbox, e.record_key, e.item_id, e.change_key, e.content_hash, e.item_class, updated_at)


def check_changes(changes: Iterable[Change]) -> None:
    """Refuse the whole batch before anything is written if one change is malformed."""
    for change in changes:
        if not change.mailbox or not change.record_key:
            raise ValueError(f"change needs a mailbox and a record key: {change!r}")
        if change.op not in ("upsert", "delete"):
            raise ValueError(f"unknown op {change.op!r} (expected 'upsert' or 'delete')")


def check_worker_id(worker_id: str) -> None:
    if not worker_id:
        raise ValueError("worker_id must not be empty")


def check_complete(sync: SyncEntry | None, remove_sync: bool) -> None:
    if sync is not None and remove_sync:
        raise ValueError("complete() takes either a sync entry or remove_sync, not both")
