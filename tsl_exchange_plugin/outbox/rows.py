"""What both outbox stores (SQLite, PostgreSQL) share: column lists, row converters, checks.

The stores differ in SQL dialect, locking and clocks; the shape of their rows and the
rules for valid input are one, so they live here once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from .base import Change, Claim, Job, LeaseLost, MailboxState, SyncEntry


def job_cols(payload: str) -> str:
    """Column order of every query that returns jobs from the table ``jobs`` (not aliased);
    ``job_from_row`` reads rows in this order. ``payload`` is the store's expression for the
    job's snapshot text (the stores keep snapshots once per content, referenced differently)."""
    return (
        f"jobs.id, jobs.mailbox, jobs.record_key, jobs.op, {payload}, "
        "jobs.version, jobs.attempts, jobs.status, jobs.last_error, jobs.due_at, jobs.enqueued_at, jobs.claims, "
        "jobs.source_version, jobs.priority, jobs.verify"
    )


# Column order of sync_state reads and writes; ``sync_params`` and ``SyncEntry(*row)`` follow it.
SYNC_COLS = "mailbox, record_key, item_id, change_key, content_hash, item_class, updated_at, source_version"

# How long a pushed delete's version is kept (the stores' tombstones): far longer than two
# hooks run apart, long enough for a journal replayed after an outage.
TOMBSTONE_SECONDS = 7 * 86400


def payload_hash(payload: str) -> str:
    """The key a snapshot is stored under (empty for deletes): equal texts share one row."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest() if payload else ""


def job_from_row(row: Sequence[Any]) -> Job:
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
        source_version=int(row[12]),
        priority=int(row[13]),
        verify=bool(row[14]),
    )


def claimed_jobs(rows: Iterable[Sequence[Any]]) -> tuple[Job, ...]:
    """Jobs handed out by a claim, best first by (priority, due_at, id) (UPDATE ... RETURNING has no order)."""
    return tuple(sorted((job_from_row(r) for r in rows), key=lambda j: (j.priority, j.due_at, j.id)))


def mailbox_state(row: Sequence[Any]) -> MailboxState:
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


def sync_params(e: SyncEntry, updated_at: float | None) -> tuple[Any, ...]:
    """Parameters for a sync_state upsert in ``SYNC_COLS`` order; ``updated_at`` is
    the store's choice for an entry without one (its clock, or None for the server's)."""
    return (
        e.mailbox,
        e.record_key,
        e.item_id,
        e.change_key,
        e.content_hash,
        e.item_class,
        updated_at,
        e.source_version,
    )


def check_changes(changes: Iterable[Change]) -> None:
    """Refuse the whole batch before anything is written if one change is malformed."""
    for change in changes:
        if not change.mailbox or not change.record_key:
            raise ValueError(f"change needs a mailbox and a record key: {change!r}")
        if change.op not in ("upsert", "delete"):
            raise ValueError(f"unknown op {change.op!r} (expected 'upsert' or 'delete')")
        if change.version < 0 or change.priority not in (0, 1, 2):
            raise ValueError(f"version must be >= 0 and priority 0, 1 or 2: {change!r}")


def check_worker_id(worker_id: str) -> None:
    if not worker_id:
        raise ValueError("worker_id must not be empty")


def check_complete(sync: SyncEntry | None, remove_sync: bool) -> None:
    if sync is not None and remove_sync:
        raise ValueError("complete() takes either a sync entry or remove_sync, not both")


def lease_lost(claim: Claim) -> LeaseLost:
    return LeaseLost(
        f"lease on {claim.mailbox!r} is no longer held by {claim.worker_id!r} (token {claim.token})"
    )
