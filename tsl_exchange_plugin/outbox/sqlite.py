"""The outbox in SQLite (the default; no server needed): two files side by side.

* The queue file (``outbox.sqlite3``): jobs, their snapshots, leases, mailboxes, pauses. It
  runs empty when the queue drains and then gives its pages back to the file system.
* The sync-state file (``syncstate.sqlite3`` beside it, ``sync_state_path``): what was
  written where (ItemId, ChangeKey, hash, version) and the tombstones of pushed deletes. It
  never drains, so it lives apart and the queue file can shrink; every connection ATTACHes it
  as the schema ``syncstate``, so one connection (and one transaction) reads both.

Concurrency model: every thread gets its own connection (``threading.local``);
writes run in ``BEGIN IMMEDIATE`` transactions, which take the write lock of both files
up front, so a claim's read-then-lease can never interleave with another writer, whether it
sits in another thread or another process on the same files. WAL mode lets readers
(status views, ``jobs()``) run while a writer commits.

Crash atomicity across the two files: in WAL mode a transaction that writes both is atomic
per file only, so no transaction writes both. An ack first writes the sync state (fenced,
one transaction on the sync-state file) and then deletes the jobs (fenced again, one
transaction on the queue file). A crash in between leaves jobs whose outcome the sync state
already holds: they are pushed again and find an unchanged hash, so nothing is lost or
written twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .base import Change, Claim, Job, MailboxState, ServerPause, SyncEntry
from .conns import PerThreadConnections
from .rows import (
    SYNC_COLS,
    TOMBSTONE_SECONDS,
    check_changes,
    check_complete,
    check_worker_id,
    claimed_jobs,
    job_cols,
    job_from_row,
    lease_lost,
    mailbox_state,
    payload_hash,
    sync_params,
)
from .writegate import WriteGate

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

# The schema name the sync-state file is attached under, in every connection.
SYNC = "syncstate"
SYNC_FILE_NAME = "syncstate.sqlite3"

# The WAL files are cut back to this size whenever a checkpoint has copied them into their
# database: a bulk enqueue or a drain may grow a WAL far beyond it for a moment, and without
# a limit SQLite keeps a WAL at the largest size it ever had.
WAL_LIMIT = 4 * 1024 * 1024
VACUUM_STEP = 256  # pages (1 MB) a drained queue gives back per write transaction
_WAL_KEPT = 1024 * 1024  # a drained queue truncates a WAL larger than this

_JOBS_TABLE = """CREATE TABLE IF NOT EXISTS jobs (
        -- AUTOINCREMENT: ids are never reused, so a stale Job object (id, version)
        -- can never match a row created later for the same record.
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mailbox TEXT NOT NULL,
        record_key TEXT NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('upsert', 'delete', 'verify')),
        -- the snapshot lives once in payloads (0 for deletes and verifies); an integer, not
        -- the 64-character hash: a bulk of 200,000 jobs would carry it in its row and index
        payload_id INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL CHECK (status IN ('pending', 'failed')),
        last_error TEXT NOT NULL DEFAULT '',
        due_at REAL NOT NULL,
        enqueued_at REAL NOT NULL,
        -- how often this version was handed to a worker; >1 warns that an earlier
        -- push may already have written it
        claims INTEGER NOT NULL DEFAULT 0,
        source_version INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 0,
        verify INTEGER NOT NULL DEFAULT 0,
        UNIQUE (mailbox, record_key)
    )"""

_TABLES = [
    _JOBS_TABLE,
    # One row per distinct snapshot text, found by its SHA-256 (``hash``) and referenced by
    # ``id``; an explicit INTEGER PRIMARY KEY, so VACUUM never renumbers it.
    """CREATE TABLE IF NOT EXISTS payloads (
        id INTEGER PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS leases (
        mailbox TEXT PRIMARY KEY,
        worker_id TEXT NOT NULL,
        lease_until REAL NOT NULL,
        -- the fencing token: raised by every claim, kept when the lease is released
        token INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS mailboxes (
        mailbox TEXT PRIMARY KEY,
        parked INTEGER NOT NULL DEFAULT 0,
        parked_reason TEXT NOT NULL DEFAULT '',
        last_success_at REAL,
        last_error TEXT NOT NULL DEFAULT '',
        last_error_at REAL,
        superseded INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
]

# In the sync-state file.
_SYNC_TABLES = [
    f"""CREATE TABLE IF NOT EXISTS {SYNC}.sync_state (
        mailbox TEXT NOT NULL,
        record_key TEXT NOT NULL,
        item_id TEXT NOT NULL,
        change_key TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        item_class TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL,
        source_version INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (mailbox, record_key)
    ) WITHOUT ROWID""",
    # A pushed delete's version, kept for a while: a save of an older version whose hook
    # runs (or whose journal entry is replayed) after the delete was pushed must not bring
    # the item back, and the sync state of a deleted record is gone.
    f"""CREATE TABLE IF NOT EXISTS {SYNC}.tombstones (
        mailbox TEXT NOT NULL,
        record_key TEXT NOT NULL,
        source_version INTEGER NOT NULL,
        deleted_at REAL NOT NULL,
        PRIMARY KEY (mailbox, record_key)
    ) WITHOUT ROWID""",
    f"""CREATE INDEX IF NOT EXISTS {SYNC}.sync_state_record ON sync_state (record_key)""",
    f"""CREATE INDEX IF NOT EXISTS {SYNC}.tombstones_age ON tombstones (deleted_at)""",
]

# Bookkeeping that follows every change of a job row, done by SQLite itself inside the statement
# that changes it (see _ACKED on why fewer statements matter): a snapshot no job refers to any
# more is deleted (replaced by a newer one, or its last job acknowledged), and every mailbox that
# ever had work gets a row, so the status view lists it (with its last success) even after its
# queue ran empty.
_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS jobs_payload_replaced AFTER UPDATE OF payload_id ON jobs
    WHEN old.payload_id <> 0 AND old.payload_id <> new.payload_id
    BEGIN
        DELETE FROM payloads WHERE id = old.payload_id
          AND NOT EXISTS (SELECT 1 FROM jobs WHERE payload_id = old.payload_id);
    END""",
    """CREATE TRIGGER IF NOT EXISTS jobs_payload_released AFTER DELETE ON jobs
    WHEN old.payload_id <> 0
    BEGIN
        DELETE FROM payloads WHERE id = old.payload_id
          AND NOT EXISTS (SELECT 1 FROM jobs WHERE payload_id = old.payload_id);
    END""",
    """CREATE TRIGGER IF NOT EXISTS jobs_know_mailbox AFTER INSERT ON jobs
    BEGIN
        INSERT INTO mailboxes (mailbox) VALUES (new.mailbox) ON CONFLICT (mailbox) DO NOTHING;
    END""",
]

_INDEXES = [
    # claim and next_due_at walk pending jobs in (priority, due) order; id ends the key so
    # ORDER BY ... LIMIT 1 reads the first entry instead of sorting jobs of one due time.
    """CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, priority, due_at, id)""",
    # a claimed mailbox's jobs in the same order
    """CREATE INDEX IF NOT EXISTS jobs_mailbox_claim ON jobs (mailbox, status, priority, due_at, id)""",
    # holders() runs on the host's save path: find a record's mailboxes without a scan.
    """CREATE INDEX IF NOT EXISTS jobs_record ON jobs (record_key)""",
    # garbage collection of payloads: "is this snapshot still referenced?"
    """CREATE INDEX IF NOT EXISTS jobs_payload ON jobs (payload_id)""",
]

# Columns a queue of schema 1 lacks (schema 2 added them in place).
_V1_COLUMNS = [("leases", "token"), ("mailboxes", "superseded")]

JOB_COLS = job_cols("COALESCE((SELECT p.body FROM payloads AS p WHERE p.id = jobs.payload_id), '')")


def sync_state_path(queue_path: str | os.PathLike[str]) -> str:
    """The sync-state file beside a queue file: ``syncstate.sqlite3`` beside the default
    ``outbox.sqlite3``, ``NAME.syncstate.sqlite3`` beside any other ``NAME.sqlite3``."""
    path = os.fspath(queue_path)
    folder, name = os.path.split(path)
    if name == "outbox.sqlite3":
        return os.path.join(folder, SYNC_FILE_NAME)
    stem = name[: -len(".sqlite3")] if name.endswith(".sqlite3") else name
    return os.path.join(folder, f"{stem}.syncstate.sqlite3")


# A file is vacuumed once during the migration to schema 2 (to switch auto_vacuum on) only
# up to this size; a bigger queue keeps auto_vacuum off (documented in the README) rather
# than block the host's start for minutes.
_MIGRATION_VACUUM_LIMIT = 256 * 1024 * 1024

# Insert, or coalesce into the queued row when the change is not older than it (see
# "Order" in base.py). The SELECT drops a versioned change older than what the sync
# state already reflects. Parameters: mailbox, record_key, op, payload (id), version,
# priority, now.
_ENQUEUE = f"""
INSERT INTO jobs (mailbox, record_key, op, payload_id, version, source_version, priority,
                  attempts, status, last_error, due_at, enqueued_at)
SELECT :mailbox, :key, :op, :payload, 1, :version, :priority, 0, 'pending', '', :now, :now
WHERE :version = 0 OR (
    NOT EXISTS (
        SELECT 1 FROM {SYNC}.sync_state AS s
        WHERE s.mailbox = :mailbox AND s.record_key = :key AND s.source_version > :version)
    AND NOT EXISTS (
        SELECT 1 FROM {SYNC}.tombstones AS t
        WHERE t.mailbox = :mailbox AND t.record_key = :key
          AND (t.source_version > :version OR (t.source_version = :version AND :op = 'upsert'))))
ON CONFLICT (mailbox, record_key) DO UPDATE SET
    op = excluded.op,
    payload_id = excluded.payload_id,
    version = jobs.version + 1,
    source_version = max(jobs.source_version, excluded.source_version),
    priority = min(jobs.priority, excluded.priority),
    -- a verify note survives being coalesced into a real change
    verify = jobs.verify OR jobs.op = 'verify',
    attempts = 0,
    status = 'pending',
    last_error = '',
    due_at = excluded.due_at,
    enqueued_at = excluded.enqueued_at
WHERE jobs.op = 'verify' OR excluded.source_version = 0
   OR excluded.source_version > jobs.source_version
   OR (excluded.source_version = jobs.source_version AND NOT (jobs.op = 'delete' AND excluded.op = 'upsert'))
"""
_COUNT_SUPERSEDED = """
INSERT INTO mailboxes (mailbox, superseded) VALUES (?, ?)
ON CONFLICT (mailbox) DO UPDATE SET superseded = mailboxes.superseded + excluded.superseded
"""
# Stores a snapshot once and answers its id in one step (a snapshot stored before is rewritten
# unchanged: rare, and cheaper than a second statement on the save path).
_PUT_PAYLOAD = (
    "INSERT INTO payloads (hash, body) VALUES (?, ?) ON CONFLICT (hash) DO UPDATE SET hash = excluded.hash "
    "RETURNING id"
)
# Snapshots offered only by superseded changes (no job took them).
_COLLECT_PAYLOADS = """
DELETE FROM payloads WHERE id IN (SELECT value FROM json_each(?))
  AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.payload_id = payloads.id)
"""
_NOTE_VERIFY = """
INSERT INTO jobs (mailbox, record_key, op, payload_id, version, source_version, priority, verify,
                  attempts, status, last_error, due_at, enqueued_at)
VALUES (?, ?, 'verify', 0, 1, 0, 0, 1, 0, 'pending', '', ?, ?)
ON CONFLICT (mailbox, record_key) DO UPDATE SET
    verify = 1,
    version = jobs.version + 1,
    status = 'pending',
    priority = 0,
    due_at = min(jobs.due_at, excluded.due_at)
"""
# The lease is still ours with this token. SQLite writers are serialised (BEGIN IMMEDIATE),
# so nobody can take the lease between this check and the commit.
_FENCE = "SELECT 1 FROM leases WHERE mailbox = ? AND worker_id = ? AND token = ? AND lease_until > ?"

# ``claims`` is kept on purpose: a newer version of a job whose earlier hand-out may have
# written to the mailbox must still look its key up before creating (no duplicate).

# Pauses (see worker/runner.py): a busy answer pauses one mailbox, a transport failure its whole
# server (host:port of the EWS URL, noted per mailbox by the worker). A server with
# failures > 0 is recovering: once its pause is over, one claim (the probe) may go.
_PAUSE_COLUMNS = [("paused_until", "REAL NOT NULL DEFAULT 0"), ("server", "TEXT NOT NULL DEFAULT ''")]
_SERVERS_TABLE = """CREATE TABLE IF NOT EXISTS servers (
    server TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    paused_until REAL NOT NULL DEFAULT 0,
    probe_worker TEXT NOT NULL DEFAULT '',
    probe_until REAL NOT NULL DEFAULT 0
) WITHOUT ROWID"""
_RECOVERING = """
SELECT s.server FROM mailboxes AS p JOIN servers AS s ON s.server = p.server
WHERE p.mailbox = ? AND s.failures > 0
"""


# Due pending jobs (better than :below) whose mailbox is neither parked, nor paused, nor leased
# by a live worker, nor excluded by the caller. The pick walks jobs_claim in (priority, due)
# order and stops at the first hit.
_CLAIMABLE = """
FROM jobs AS j
WHERE j.status = 'pending' AND j.due_at <= :now AND j.priority < :below
  AND NOT EXISTS (SELECT 1 FROM mailboxes AS m WHERE m.mailbox = j.mailbox AND m.parked)
  AND NOT EXISTS (SELECT 1 FROM leases AS l WHERE l.mailbox = j.mailbox AND l.lease_until > :now)
  AND NOT EXISTS (SELECT 1 FROM mailboxes AS p LEFT JOIN servers AS s ON s.server = p.server
                  WHERE p.mailbox = j.mailbox
                    AND (p.paused_until > :now OR s.paused_until > :now OR s.probe_until > :now))
  AND j.mailbox NOT IN (SELECT value FROM json_each(:exclude))
"""
_PICK_MAILBOX = f"SELECT j.mailbox {_CLAIMABLE} ORDER BY j.priority, j.due_at, j.id LIMIT 1"
# How many mailboxes could be claimed for work better than :below (``urgent_waiting``).
_URGENT_MAILBOXES = f"SELECT count(*) FROM (SELECT DISTINCT j.mailbox {_CLAIMABLE} LIMIT :limit)"

_TAKE_LEASE = """
INSERT INTO leases (mailbox, worker_id, lease_until, token) VALUES (?, ?, ?, 1)
ON CONFLICT (mailbox) DO UPDATE SET worker_id = excluded.worker_id, lease_until = excluded.lease_until,
    token = leases.token + 1
RETURNING token
"""

# More due jobs of a leased mailbox that rank above a priority, except those the claim has begun
# (``claim_urgent``). Parameters: mailbox, now, below, skip (JSON ids), limit.
_URGENT_IDS = """
SELECT id FROM jobs
WHERE mailbox = ? AND status = 'pending' AND due_at <= ? AND priority < ?
  AND id NOT IN (SELECT value FROM json_each(?))
ORDER BY priority, due_at, id
LIMIT ?
"""
_TAKE_IDS = f"""
UPDATE jobs SET claims = claims + 1
WHERE id IN (SELECT value FROM json_each(?)) AND mailbox = ? AND status = 'pending' AND priority < ?
RETURNING {JOB_COLS}
"""
# Give back the count of hand-outs that were never sent (``release``).
_UNCOUNT = "UPDATE jobs SET claims = claims - 1 WHERE id IN (SELECT value FROM json_each(?)) AND claims > 0"
_ANY_PRIORITY = 99

# A claim picks the mailbox's due jobs (their ids as one JSON array) and counts the hand-out;
# the jobs themselves are read after the commit (_JOBS_BY_ID), so the write lock is not held
# while hundreds of rows and snapshots are copied out (see _ACKED). Nobody else changes a
# leased mailbox's jobs meanwhile but an enqueue with a newer version, which is then what
# is read (the hand-out counted for the row, whatever its version).
_TAKE_IDS_JSON = """
SELECT json_group_array(id) FROM (
    SELECT id FROM jobs
    WHERE mailbox = ? AND status = 'pending' AND due_at <= ?
    ORDER BY priority, due_at, id
    LIMIT ?)
"""
_COUNT_CLAIMS = "UPDATE jobs SET claims = claims + 1 WHERE id IN (SELECT value FROM json_each(?))"
_JOBS_BY_ID = f"""
SELECT json_group_array(json_array({JOB_COLS})) FROM jobs
WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'
"""

# A leased mailbox becomes claimable when its lease runs out, so its jobs count
# from max(due_at, lease_until); that keeps idle workers from waking up for work
# another live worker is holding. A paused mailbox or server (and a server whose
# probe is out) likewise holds its jobs back until the pause ends.
_NEXT_DUE = """
SELECT MIN(MAX(j.due_at, COALESCE(l.lease_until, 0), COALESCE(p.paused_until, 0),
               COALESCE(s.paused_until, 0), COALESCE(s.probe_until, 0))) FROM jobs AS j
LEFT JOIN leases AS l ON l.mailbox = j.mailbox
LEFT JOIN mailboxes AS p ON p.mailbox = j.mailbox
LEFT JOIN servers AS s ON s.server = p.server
WHERE j.status = 'pending'
  AND NOT EXISTS (SELECT 1 FROM mailboxes AS m WHERE m.mailbox = j.mailbox AND m.parked)
"""

_SYNC_CONFLICT = """
ON CONFLICT (mailbox, record_key) DO UPDATE SET
    item_id = excluded.item_id,
    change_key = excluded.change_key,
    content_hash = excluded.content_hash,
    item_class = excluded.item_class,
    updated_at = excluded.updated_at,
    source_version = max(sync_state.source_version, excluded.source_version)
-- an older snapshot's outcome never replaces a newer one's (0: unknown, always written)
WHERE excluded.source_version = 0 OR excluded.source_version >= sync_state.source_version
"""

# Inside a write transaction every statement is one step and every result ONE row: each
# step lets the other threads of the process in (the GIL), and under a busy worker getting
# back in takes milliseconds, all of them with the write lock held and the host's save
# waiting. So a batch is acknowledged in a few statements, not one per job, and rows come
# back as one JSON array, not row by row.
_ACKED = """
SELECT json_group_array(json_array(j.id, j.payload_id, j.op, j.mailbox, j.record_key, j.source_version))
FROM json_each(?) AS p
JOIN jobs AS j ON j.id = json_extract(p.value, '$[0]') AND j.version = json_extract(p.value, '$[1]')
"""
_DELETE_JOBS = "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
_PUT_TOMBSTONES = f"""
INSERT INTO {SYNC}.tombstones (mailbox, record_key, source_version, deleted_at)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), ?1
FROM json_each(?2) WHERE true
ON CONFLICT (mailbox, record_key) DO UPDATE SET
    source_version = max(tombstones.source_version, excluded.source_version), deleted_at = excluded.deleted_at
"""
_PRUNE_TOMBSTONES = f"DELETE FROM {SYNC}.tombstones WHERE deleted_at < ?"
_DELETE_SYNC = f"DELETE FROM {SYNC}.sync_state WHERE mailbox = ? AND record_key = ?"
_DELETE_SYNC_MANY = f"""
DELETE FROM {SYNC}.sync_state WHERE (mailbox, record_key) IN (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))
"""
# Parameters: the error, then [[id, version, due_at], ...]; a superseded job is left alone.
_RETRY_MANY = """
UPDATE jobs SET attempts = attempts + 1, last_error = ?1, status = 'pending',
    due_at = json_extract(r.value, '$[2]')
FROM json_each(?2) AS r
WHERE jobs.id = json_extract(r.value, '$[0]') AND jobs.version = json_extract(r.value, '$[1]')
"""
_PUT_SYNC_MANY = (
    f"""
INSERT INTO {SYNC}.sync_state ({SYNC_COLS})
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
    json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
    json_extract(value, '$[6]'), json_extract(value, '$[7]')
FROM json_each(?) WHERE true
"""
    + _SYNC_CONFLICT
)

_PUT_SYNC = (
    f"""
INSERT INTO {SYNC}.sync_state ({SYNC_COLS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
    + _SYNC_CONFLICT
)

_MAILBOX_STATES = """
SELECT b.mailbox, COALESCE(m.parked, 0), COALESCE(m.parked_reason, ''), m.last_success_at,
       COALESCE(m.last_error, ''), m.last_error_at, COALESCE(c.pending, 0), COALESCE(c.failed, 0)
FROM (SELECT mailbox FROM mailboxes UNION SELECT mailbox FROM jobs) AS b
LEFT JOIN mailboxes AS m ON m.mailbox = b.mailbox
LEFT JOIN (
    SELECT mailbox, SUM(status = 'pending') AS pending, SUM(status = 'failed') AS failed
    FROM jobs GROUP BY mailbox
) AS c ON c.mailbox = b.mailbox
ORDER BY b.mailbox
"""

# How often wait_for_work looks for commits from other processes. It only reads
# PRAGMA data_version (no table access) unless something changed.
_POLL_SECONDS = 0.1


class _WorkSignal:
    """Wakes waiters in this process when any outbox object on the same file enqueues."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.generation = 0

    def notify(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()


_signals: dict[str, _WorkSignal] = {}
_signals_lock = threading.Lock()


def _signal_for(path: str) -> _WorkSignal:
    key = os.path.realpath(path)
    with _signals_lock:
        return _signals.setdefault(key, _WorkSignal())


class SQLiteOutbox(PerThreadConnections):
    """The outbox in a SQLite file; safe for many threads and processes on one file."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self.sync_path = sync_state_path(self.path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        # A queue file of schema 3 or later whose sync-state file is gone lost what was written
        # where; noticed before the connection creates an empty one (see _init_schema).
        self._sync_was_missing = os.path.exists(self.path) and not os.path.exists(self.sync_path)
        self._busy_timeout = busy_timeout
        self._init_conns()
        self._gate = WriteGate()
        self._signal = _signal_for(self.path)
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    # -- connections -------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so every
        # transaction boundary is visible in this file and not guessed by sqlite3.
        # check_same_thread=False only so close() may close other threads'
        # connections; each connection is still used by its own thread only.
        # sqlite3 keeps compiled statements per connection keyed by their text
        # (cached_statements); all SQL here is module constants, so each statement
        # is prepared once per connection and the save path never re-parses it.
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=64,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        conn.execute(f"ATTACH DATABASE ? AS {SYNC}", (self.sync_path,))
        # Each schema of each thread's connection keeps its own page cache (2 MB by default); the
        # sync state is read by key, so its B-tree's inner pages are what a cache is good for.
        conn.execute(f"PRAGMA {SYNC}.cache_size = -1024")
        for schema in ("main", SYNC):
            # synchronous=FULL: in WAL mode, NORMAL survives a crash of the process but
            # can lose the last commits on an OS crash or power cut. The host has told
            # the user "saved" when it calls enqueue, and a law firm's server room does
            # lose power; a lost change would leave a phone showing a stale deadline
            # with nobody knowing. FULL syncs the WAL on every commit. For the sync state
            # it also keeps the order of an ack: its sync state is on disk before the jobs go.
            conn.execute(f"PRAGMA {schema}.synchronous = FULL")
            conn.execute(f"PRAGMA {schema}.journal_size_limit = {WAL_LIMIT}")
            # Deleted content is zeroed where the page is written anyway, but freed pages are not
            # written again only to be zeroed: some SQLite builds zero them all (secure_delete on),
            # and a queue that deletes every row it ever held would write itself twice, its WAL
            # and fsyncs growing with it (the drain's vacuum alone would rewrite the whole file).
            conn.execute(f"PRAGMA {schema}.secure_delete = FAST")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("outbox is closed")
            conn = self._connect()
            self._local.conn = conn
            self._adopt(conn)
        return conn

    @contextmanager
    def _write(self, *, first: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock before the first read.

        Writers of this process queue at the gate first (``writegate.py``): the host's save
        path (``first``) ahead of the worker's writes. Other processes meet SQLite's busy handler.
        """
        conn = self._conn()
        with self._gate.hold(first=first):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _write_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """A single-statement write, queued like every other write of this process."""
        with self._write() as conn:
            return conn.execute(sql, params)

    def _init_schema(self) -> None:
        conn = self._conn()
        for schema in ("main", SYNC):
            # Only possible while a file has no tables: a new file gives pages back on its own
            # (``incremental_vacuum``, e.g. when the queue runs empty) instead of keeping the
            # size of its peak.
            conn.execute(f"PRAGMA {schema}.auto_vacuum = INCREMENTAL")
            mode = conn.execute(f"PRAGMA {schema}.journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ValueError(
                    f"Die Warteschlange {self.path!r} kann den SQLite-WAL-Modus nicht einschalten "
                    f"(Modus {mode!r}). Liegt das Datenverzeichnis auf einem Netzlaufwerk? "
                    "Bitte ein lokales Verzeichnis oder PostgreSQL verwenden."
                )
        # Two transactions, sync state first (see the module docstring): a crash between them
        # leaves the old tables in the queue file, and the next start copies them again.
        with self._write() as c:
            found = c.execute("PRAGMA main.user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise ValueError(
                    f"Die Warteschlange {self.path!r} stammt von einer neueren Plugin-Version "
                    f"(Schema {found}, unterstützt bis {SCHEMA_VERSION}). Bitte das Plugin aktualisieren."
                )
            for statement in _SYNC_TABLES:
                c.execute(statement)
            self._move_sync_state(c)
        with self._write() as c:
            migrated = self._migrate_jobs(c)
            for table in ("sync_state", "tombstones"):  # copied into the sync-state file above
                c.execute(f"DROP TABLE IF EXISTS main.{table}")
            for statement in _TABLES + _INDEXES + _TRIGGERS:
                c.execute(statement)
            self._add_pause_schema(c)
            if found < SCHEMA_VERSION:
                c.execute(f"PRAGMA main.user_version = {SCHEMA_VERSION}")
        if found >= SCHEMA_VERSION and self._sync_was_missing:
            log.warning(
                "Exchange-Sync: Die Datei %s mit dem Stand der Synchronisation fehlt; sie wurde leer "
                "neu angelegt. Bitte die Sicherung zurückspielen (beide Dateien zusammen) oder "
                "„tsl-exchange reconcile“ ausführen, damit keine Einträge doppelt angelegt werden.",
                self.sync_path,
            )
        if 0 < found < SCHEMA_VERSION:
            self._vacuum_after_migration(conn, rebuilt=migrated)

    @staticmethod
    def _columns(c: sqlite3.Connection, table: str) -> list[str]:
        return [r[1] for r in c.execute(f"PRAGMA main.table_info({table})")]

    def _move_sync_state(self, c: sqlite3.Connection) -> None:
        """Schema 1 and 2 kept the sync state in the queue file: copy it into the sync-state file
        (in the caller's transaction, which writes only that file). A row already there wins: it
        was written after an earlier copy, by a worker that ran before the old table was dropped."""
        columns = self._columns(c, "sync_state")
        if columns:
            version = "source_version" if "source_version" in columns else "0"  # schema 1 had none
            c.execute(
                f"INSERT INTO {SYNC}.sync_state ({SYNC_COLS}) SELECT mailbox, record_key, item_id, "
                f"change_key, content_hash, item_class, updated_at, {version} FROM main.sync_state "
                "WHERE true ON CONFLICT (mailbox, record_key) DO NOTHING"
            )
        if self._columns(c, "tombstones"):
            c.execute(
                f"INSERT INTO {SYNC}.tombstones (mailbox, record_key, source_version, deleted_at) "
                "SELECT mailbox, record_key, source_version, deleted_at FROM main.tombstones "
                "WHERE true ON CONFLICT (mailbox, record_key) DO NOTHING"
            )

    def _migrate_jobs(self, c: sqlite3.Connection) -> bool:
        """Jobs of schema 1 (snapshot in the row) or 2 (snapshot by hash) -> schema 3 (snapshot by
        id), in the caller's transaction; True if the table was rebuilt. Schema 2 also gave jobs
        source version, priority and the verify flag, leases their fencing token, and mailboxes
        their superseded count; a schema 1 queue gets them here."""
        columns = self._columns(c, "jobs")
        if not columns or "payload_id" in columns:
            return False
        v1 = "payload" in columns
        c.create_function("tsl_payload_hash", 1, payload_hash, deterministic=True)
        seq = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        c.execute("ALTER TABLE jobs RENAME TO jobs_old")
        if not v1:
            c.execute("ALTER TABLE payloads RENAME TO payloads_old")
        for statement in _TABLES:
            c.execute(statement)
        common = (
            "id, mailbox, record_key, op, version, attempts, status, last_error, due_at, enqueued_at, claims"
        )
        if v1:
            c.execute(
                "INSERT INTO payloads (hash, body) SELECT DISTINCT tsl_payload_hash(payload), payload "
                "FROM jobs_old WHERE payload <> '' ON CONFLICT (hash) DO NOTHING"
            )
            c.execute(
                f"INSERT INTO jobs ({common}, payload_id) SELECT {common}, COALESCE("
                "(SELECT p.id FROM payloads AS p WHERE p.hash = tsl_payload_hash(jobs_old.payload)), 0) "
                "FROM jobs_old"
            )
        else:
            c.execute("INSERT INTO payloads (hash, body) SELECT hash, body FROM payloads_old")
            more = "source_version, priority, verify"
            c.execute(
                f"INSERT INTO jobs ({common}, {more}, payload_id) SELECT {common}, {more}, COALESCE("
                "(SELECT p.id FROM payloads AS p WHERE p.hash = jobs_old.payload_hash), 0) FROM jobs_old"
            )
            c.execute("DROP TABLE payloads_old")
        c.execute("DROP TABLE jobs_old")  # with its indexes; the caller makes the new ones
        if seq is not None:
            # Ids stay never reused: the new table continues the old one's sequence.
            c.execute("DELETE FROM sqlite_sequence WHERE name IN ('jobs', 'jobs_old')")
            c.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", (seq[0],))
        for table, column in _V1_COLUMNS:
            if column not in self._columns(c, table):
                c.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
        return True

    def _vacuum_after_migration(self, conn: sqlite3.Connection, *, rebuilt: bool) -> None:
        """Give the pages of the old tables back. A file with auto_vacuum does that in place; one
        without (schema 1) needs one VACUUM to switch it on, done only for a small file (a big
        one keeps working without it; see the README)."""
        try:
            if conn.execute("PRAGMA main.auto_vacuum").fetchone()[0] == 2:
                self._give_back_space()
                return
            if not rebuilt or os.path.getsize(self.path) > _MIGRATION_VACUUM_LIMIT:
                return
            with self._gate.hold():
                conn.execute("PRAGMA main.auto_vacuum = INCREMENTAL")
                conn.execute("VACUUM main")
        except sqlite3.OperationalError:  # another process holds the file: next start tries again
            pass

    # -- producers -----------------------------------------------------------------
    def enqueue(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        check_changes(changes)
        now = time.time()
        hashes = [payload_hash(c.payload) for c in changes]
        bodies = {h: c.payload for h, c in zip(hashes, changes, strict=True) if h}
        superseded: dict[str, int] = {}
        # The host's save waits for this: few statements (the triggers collect replaced snapshots
        # and note new mailboxes), and it goes through the gate before the worker's writes.
        with self._write(first=True) as conn:
            ids = {h: conn.execute(_PUT_PAYLOAD, (h, body)).fetchone()[0] for h, body in bodies.items()}
            for change, h in zip(changes, hashes, strict=True):
                params = {
                    "mailbox": change.mailbox,
                    "key": change.record_key,
                    "op": change.op,
                    "payload": ids.get(h, 0),
                    "version": change.version,
                    "priority": change.priority,
                    "now": now,
                }
                if conn.execute(_ENQUEUE, params).rowcount == 0:
                    superseded[change.mailbox] = superseded.get(change.mailbox, 0) + 1
            if superseded:
                conn.executemany(_COUNT_SUPERSEDED, list(superseded.items()))
                # A snapshot offered only by superseded changes is referenced by nobody.
                conn.execute(_COLLECT_PAYLOADS, (json.dumps(sorted(ids.values())),))
        self._signal.notify()

    # -- workers ---------------------------------------------------------------------
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
        check_worker_id(worker_id)
        now = time.time() if now is None else now
        until = now + lease_seconds
        pick = {"now": now, "exclude": json.dumps(list(exclude)), "below": _ANY_PRIORITY}
        # A read first: an idle worker woken for work another thread took asks often, and a
        # question that finds nothing needs no write lock (new work wakes it again).
        if self._conn().execute(_PICK_MAILBOX, pick).fetchone() is None:
            return None
        with self._write() as conn:
            row = conn.execute(_PICK_MAILBOX, pick).fetchone()
            if row is None:
                return None
            mailbox = row[0]
            token = conn.execute(_TAKE_LEASE, (mailbox, worker_id, until)).fetchone()[0]
            probe = self._take_probe(conn, mailbox, worker_id, until)
            if probe and probe_limit is not None:
                limit = min(limit, probe_limit)
            ids = conn.execute(_TAKE_IDS_JSON, (mailbox, now, max(1, limit))).fetchone()[0]
            conn.execute(_COUNT_CLAIMS, (ids,))
        rows = json.loads(self._conn().execute(_JOBS_BY_ID, (ids,)).fetchone()[0])
        return Claim(
            mailbox=mailbox,
            worker_id=worker_id,
            lease_until=until,
            jobs=claimed_jobs(rows),
            token=token,
            probe=probe,
        )

    def renew(self, claim: Claim, *, lease_seconds: float = 60.0) -> Claim:
        # Only a lease row naming us with our token is extended. A claim raises the token
        # when it takes an expired lease and release clears the holder, so anything else
        # means someone else has (or had) the mailbox meanwhile.
        until = time.time() + lease_seconds
        cur = self._write_one(
            "UPDATE leases SET lease_until = ? WHERE mailbox = ? AND worker_id = ? AND token = ?",
            (until, claim.mailbox, claim.worker_id, claim.token),
        )
        if cur.rowcount != 1:
            raise lease_lost(claim)
        return dataclasses.replace(claim, lease_until=until)

    def release(self, claim: Claim, *, unsent: Sequence[Job] = ()) -> None:
        # The row stays (with its token), so the next claim's token is higher still.
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE leases SET worker_id = '', lease_until = 0 WHERE mailbox = ? AND worker_id = ? AND token = ?",
                (claim.mailbox, claim.worker_id, claim.token),
            )
            if cur.rowcount == 1 and unsent:
                # Still ours, so nobody was handed these since: this hand-out wrote nothing.
                conn.execute(_UNCOUNT, (json.dumps(sorted({j.id for j in unsent})),))
        if unsent:
            self._signal.notify()  # due work is left for this process's other threads

    def claim_urgent(
        self, claim: Claim, *, below: int, skip: Sequence[int] = (), limit: int = 100
    ) -> tuple[Job, ...]:
        now = time.time()
        params = (claim.mailbox, now, below, json.dumps(sorted(set(skip))), max(1, limit))
        # A read first: almost always there is nothing, and then no write lock is taken.
        if not self._conn().execute(_URGENT_IDS, params).fetchall():
            return ()
        with self._write() as conn:
            self._fenced(conn, claim)
            ids = [r[0] for r in conn.execute(_URGENT_IDS, params)]
            rows = conn.execute(_TAKE_IDS, (json.dumps(ids), claim.mailbox, below)).fetchall()
        return claimed_jobs(rows)

    def urgent_waiting(
        self, *, below: int, exclude: Sequence[str] = (), limit: int = 1, now: float | None = None
    ) -> int:
        now = time.time() if now is None else now
        params = {"now": now, "exclude": json.dumps(list(exclude)), "below": below, "limit": max(1, limit)}
        return int(self._conn().execute(_URGENT_MAILBOXES, params).fetchone()[0])

    @staticmethod
    def _fenced(conn: sqlite3.Connection, fence: Claim | None) -> None:
        """Inside a write transaction: raise LeaseLost (rolling it back) unless ``fence`` still holds."""
        if fence is None:
            return
        if (
            conn.execute(_FENCE, (fence.mailbox, fence.worker_id, fence.token, time.time())).fetchone()
            is None
        ):
            raise lease_lost(fence)

    def complete(
        self, job: Job, sync: SyncEntry | None, *, remove_sync: bool = False, fence: Claim | None = None
    ) -> bool:
        check_complete(sync, remove_sync)
        removed = [(job.mailbox, job.record_key)] if remove_sync else []
        return self.complete_many([job], [sync] if sync is not None else [], removed, fence=fence)[0]

    def complete_many(
        self,
        jobs: Sequence[Job],
        entries: Sequence[SyncEntry] = (),
        removed: Sequence[tuple[str, str]] = (),
        *,
        fence: Claim | None = None,
    ) -> list[bool]:
        # Two transactions, the sync state first (see the module docstring), each fenced: a crash
        # or a lost lease between them leaves jobs whose outcome is recorded, pushed again later
        # with nothing to write. The second one checks every version again, because another
        # process may have enqueued a newer one in between.
        pairs = json.dumps([[j.id, j.version] for j in jobs])
        now = time.time()
        deletes = any(j.op == "delete" for j in jobs)
        synced = bool(entries or removed or deletes)
        if synced:
            with self._write() as conn:
                self._fenced(conn, fence)
                if deletes:
                    # A pushed delete's version becomes a tombstone (read here, while the job is
                    # still queued with the version that was pushed).
                    tomb = [r[3:6] for r in self._acked(conn, pairs) if r[2] == "delete" and r[5] > 0]
                    if tomb:
                        conn.execute(_PUT_TOMBSTONES, (now, json.dumps(tomb)))
                        conn.execute(_PRUNE_TOMBSTONES, (now - TOMBSTONE_SECONDS,))
                # Entries are written before removals, so a pair named in both ends up removed.
                if entries:
                    conn.execute(_PUT_SYNC_MANY, (json.dumps([self._sync_row(e) for e in entries]),))
                if removed:
                    conn.execute(_DELETE_SYNC_MANY, (json.dumps([list(pair) for pair in removed]),))
        if not jobs and (synced or fence is None):
            return []
        with self._write() as conn:
            self._fenced(conn, fence)
            acked = self._acked(conn, pairs)
            found = {row[0] for row in acked}
            if found:  # (their snapshots go with the last job that refers to them: a trigger)
                conn.execute(_DELETE_JOBS, (json.dumps(sorted(found)),))
        if found and self._conn().execute("SELECT NOT EXISTS (SELECT 1 FROM jobs)").fetchone()[0]:
            self._give_back_space()
        return [j.id in found for j in jobs]

    @staticmethod
    def _acked(conn: sqlite3.Connection, pairs: str) -> list[list[Any]]:
        """[id, payload_id, op, mailbox, record_key, source_version] of the jobs still queued with
        the (id, version) ``pairs`` name."""
        rows: list[list[Any]] = json.loads(conn.execute(_ACKED, (pairs,)).fetchone()[0])
        return rows

    def _give_back_space(self) -> None:
        """The queue ran empty: return its free pages to the file system (a no-op for a file
        without auto_vacuum; see the migration), and cut a WAL that a bulk left large back
        to nothing, unless a reader still needs it (then the next drain tries again).

        In steps of VACUUM_STEP pages, each its own short write (a save may come in between)
        followed by a checkpoint that does not wait, so the WAL is reused rather than grown to
        the size of the queue's peak."""
        conn = self._conn()
        try:
            free = conn.execute("PRAGMA main.freelist_count").fetchone()[0]
            while free:
                with self._gate.hold():
                    # executescript runs the pragma to the end in its own transaction (execute()
                    # would step it once and free a single page).
                    conn.executescript(f"PRAGMA main.incremental_vacuum({VACUUM_STEP});")
                self._checkpoint("PASSIVE")
                free, before = conn.execute("PRAGMA main.freelist_count").fetchone()[0], free
                if free >= before:
                    break  # no auto_vacuum (see the migration), or new work took the pages
            if os.path.getsize(self.path + "-wal") > _WAL_KEPT:
                self._checkpoint("TRUNCATE")
        except (sqlite3.OperationalError, OSError):  # busy, or no WAL file: the next drain tries again
            pass

    def _checkpoint(self, mode: str) -> None:
        """Copy the queue file's WAL into it, without waiting for readers or writers: a busy
        checkpoint must not hold up the worker's next claim."""
        conn = self._conn()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute(f"PRAGMA main.wal_checkpoint({mode})").fetchall()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")

    def retry(self, job: Job, error: str, delay: float, *, fence: Claim | None = None) -> None:
        self.retry_many([job], error, [delay], fence=fence)

    def fail(self, job: Job, reason: str, *, fence: Claim | None = None) -> None:
        with self._write() as conn:
            self._fenced(conn, fence)
            conn.execute(
                "UPDATE jobs SET attempts = attempts + 1, last_error = ?, status = 'failed' "
                "WHERE id = ? AND version = ?",
                (reason, job.id, job.version),
            )

    def requeue_failed(self, mailbox: str | None = None) -> int:
        now = time.time()
        cur = self._write_one(
            "UPDATE jobs SET status = 'pending', attempts = 0, due_at = ? "
            "WHERE status = 'failed' AND (? IS NULL OR mailbox = ?)",
            (now, mailbox, mailbox),
        )
        if cur.rowcount:
            self._signal.notify()
        return cur.rowcount

    def next_due_at(self) -> float | None:
        due: float | None = self._conn().execute(_NEXT_DUE).fetchone()[0]
        return due

    def wait_for_work(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        conn = self._conn()
        with self._signal.cond:
            generation = self._signal.generation
        # Read data_version before next_due_at so a commit in between is noticed.
        data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        due = self.next_due_at()
        while True:
            if due is not None and due <= time.time():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            step = min(remaining, _POLL_SECONDS)
            if due is not None:
                step = min(step, max(0.0, due - time.time()))
            with self._signal.cond:
                if self._signal.cond.wait_for(lambda: self._signal.generation != generation, step):
                    return True
            # data_version changes when another connection (thread or process)
            # committed; only then is the (heavier) due query worth running again.
            current = conn.execute("PRAGMA data_version").fetchone()[0]
            if current != data_version:
                data_version = current
                due = self.next_due_at()

    # -- sync state --------------------------------------------------------------------
    @staticmethod
    def _sync_row(e: SyncEntry) -> tuple[Any, ...]:
        updated = e.updated_at or time.time()
        return sync_params(e, updated)

    def get_sync(self, mailbox: str, record_keys: Sequence[str]) -> dict[str, SyncEntry]:
        if not record_keys:
            return {}
        rows = self._conn().execute(
            f"SELECT {SYNC_COLS} "
            f"FROM {SYNC}.sync_state WHERE mailbox = ? AND record_key IN (SELECT value FROM json_each(?))",
            (mailbox, json.dumps(list(record_keys))),
        )
        return {r[1]: SyncEntry(*r) for r in rows}

    def put_sync(self, entry: SyncEntry, *, fence: Claim | None = None) -> None:
        with self._write() as conn:
            self._fenced(conn, fence)
            conn.execute(_PUT_SYNC, self._sync_row(entry))

    def put_sync_many(self, entries: Sequence[SyncEntry], *, fence: Claim | None = None) -> None:
        if not entries and fence is None:
            return
        with self._write() as conn:
            self._fenced(conn, fence)
            if entries:
                conn.execute(_PUT_SYNC_MANY, (json.dumps([self._sync_row(e) for e in entries]),))

    def delete_sync(self, mailbox: str, record_key: str, *, fence: Claim | None = None) -> None:
        with self._write() as conn:
            self._fenced(conn, fence)
            conn.execute(_DELETE_SYNC, (mailbox, record_key))

    def sync_keys(self, mailbox: str, prefix: str = "") -> list[str]:
        rows = self._conn().execute(
            f"SELECT record_key FROM {SYNC}.sync_state WHERE mailbox = ? AND substr(record_key, 1, ?) = ? "
            "ORDER BY record_key",
            (mailbox, len(prefix), prefix),
        )
        return [r[0] for r in rows]

    def holders(self, record_key: str) -> list[str]:
        # The record itself and its sub-items ("deadline:4#pre1"): keys from
        # "key#" up to (not including) "key$" ('$' follows '#'), an index range.
        # Failed upserts count too: they are retried when the record changes.
        lo, hi = record_key + "#", record_key + "$"
        rows = self._conn().execute(
            f"SELECT mailbox FROM {SYNC}.sync_state WHERE record_key = :k OR (record_key >= :lo AND record_key < :hi) "
            "UNION SELECT mailbox FROM jobs WHERE op = 'upsert' "
            "AND (record_key = :k OR (record_key >= :lo AND record_key < :hi)) ORDER BY 1",
            {"k": record_key, "lo": lo, "hi": hi},
        )
        return [r[0] for r in rows]

    # -- mailboxes ------------------------------------------------------------------------
    def park(self, mailbox: str, reason: str) -> None:
        self._write_one(
            "INSERT INTO mailboxes (mailbox, parked, parked_reason) VALUES (?, 1, ?) "
            "ON CONFLICT (mailbox) DO UPDATE SET parked = 1, parked_reason = excluded.parked_reason",
            (mailbox, reason),
        )

    def unpark(self, mailbox: str) -> None:
        # Unparking follows a fix (new credentials), so the mailbox's waiting jobs
        # are made due now instead of sitting out a back-off chosen for the old fault.
        now = time.time()
        with self._write() as conn:
            conn.execute("UPDATE mailboxes SET parked = 0, parked_reason = '' WHERE mailbox = ?", (mailbox,))
            conn.execute(
                "UPDATE jobs SET due_at = ? WHERE mailbox = ? AND status = 'pending' AND due_at > ?",
                (now, mailbox, now),
            )
        self._signal.notify()

    def record_success(self, mailbox: str, *, fence: Claim | None = None) -> None:
        with self._write() as conn:
            self._fenced(conn, fence)
            conn.execute(
                "INSERT INTO mailboxes (mailbox, last_success_at) VALUES (?, ?) "
                "ON CONFLICT (mailbox) DO UPDATE SET last_success_at = excluded.last_success_at",
                (mailbox, time.time()),
            )

    def record_error(self, mailbox: str, error: str, *, fence: Claim | None = None) -> None:
        with self._write() as conn:
            self._fenced(conn, fence)
            conn.execute(
                "INSERT INTO mailboxes (mailbox, last_error, last_error_at) VALUES (?, ?, ?) "
                "ON CONFLICT (mailbox) DO UPDATE SET last_error = excluded.last_error, "
                "last_error_at = excluded.last_error_at",
                (mailbox, error, time.time()),
            )

    def mailbox_states(self) -> list[MailboxState]:
        return [mailbox_state(r) for r in self._conn().execute(_MAILBOX_STATES)]

    # -- inspection ------------------------------------------------------------------------
    def pending_count(self, mailbox: str | None = None) -> int:
        count: int = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'pending' AND (? IS NULL OR mailbox = ?)",
                (mailbox, mailbox),
            )
            .fetchone()[0]
        )
        return count

    def jobs(self, mailbox: str | None = None, status: str | None = None) -> list[Job]:
        rows = self._conn().execute(
            f"SELECT {JOB_COLS} FROM jobs WHERE (? IS NULL OR mailbox = ?) AND (? IS NULL OR status = ?) "
            "ORDER BY due_at, id",
            (mailbox, mailbox, status, status),
        )
        return [job_from_row(r) for r in rows]

    # -- what host-less workers read, and the per-server request slots -------------------------
    # Created on first use rather than in _SCHEMA: a store that never meets a worker process
    # (tests, the in-host default) pays nothing, and the job tables' schema stays as it is.
    def _ensure_shared(self) -> None:
        if getattr(self, "_shared_ready", False):
            return
        with self._write() as conn:
            for statement in _SHARED_SCHEMA:
                conn.execute(statement)
        self._shared_ready = True

    def put_worker_rows(self, rows: Mapping[str, str | None]) -> int:
        """Write (or, for None, delete) rows of the shared worker state in ONE transaction.
        A row whose value is unchanged is not rewritten. Returns how many rows changed."""
        if not rows:
            return 0
        self._ensure_shared()
        now = time.time()
        changed = 0
        with self._write() as conn:
            for key, value in rows.items():
                if value is None:
                    changed += conn.execute(_DELETE_WORKER_ROW, (key,)).rowcount
                else:
                    changed += conn.execute(_PUT_WORKER_ROW, (key, value, now)).rowcount
        if changed:
            self._signal.notify()  # a released hold is work for idle workers of this process
        return changed

    def worker_rows(self, prefix: str = "") -> dict[str, str]:
        """Rows of the shared worker state whose key starts with ``prefix``."""
        self._ensure_shared()
        rows = self._conn().execute(
            "SELECT key, value FROM worker_state WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return {k: v for k, v in rows}

    def worker_row(self, key: str) -> str | None:
        self._ensure_shared()
        row = self._conn().execute("SELECT value FROM worker_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def acquire_server_slot(
        self, server: str, limit: int, holder: str, *, lease_seconds: float = 120.0, now: float | None = None
    ) -> int | None:
        """Take one of ``limit`` request slots of ``server`` for ``holder``; None when all are taken.
        A slot whose lease ran out (its process died) counts as free."""
        self._ensure_shared()
        now = time.time() if now is None else now
        with self._write() as conn:
            taken = {r[0] for r in conn.execute(_SLOTS_TAKEN, (server, now))}
            if len(taken) >= limit:
                return None
            slot = next(s for s in range(limit) if s not in taken)
            conn.execute(_TAKE_SLOT, (server, slot, holder, now + lease_seconds))
        return slot

    def release_server_slot(self, server: str, slot: int, holder: str) -> None:
        self._ensure_shared()
        self._write_one(
            "DELETE FROM server_slots WHERE server = ? AND slot = ? AND holder = ?", (server, slot, holder)
        )

    # -- fencing, order, bulk retries ----------------------------------------------------------
    def check_lease(self, claim: Claim) -> bool:
        row = (
            self._conn()
            .execute(_FENCE, (claim.mailbox, claim.worker_id, claim.token, time.time()))
            .fetchone()
        )
        return row is not None

    def note_verify(self, mailbox: str, record_keys: Sequence[str]) -> None:
        if not record_keys:
            return
        now = time.time()
        with self._write() as conn:
            conn.executemany(_NOTE_VERIFY, [(mailbox, key, now, now) for key in dict.fromkeys(record_keys)])
        self._signal.notify()

    def retry_many(
        self, jobs: Sequence[Job], error: str, delays: Sequence[float], *, fence: Claim | None = None
    ) -> None:
        if len(jobs) != len(delays):
            raise ValueError("retry_many needs one delay per job")
        now = time.time()
        rows = json.dumps([[j.id, j.version, now + max(0.0, d)] for j, d in zip(jobs, delays, strict=True)])
        with self._write() as conn:
            self._fenced(conn, fence)
            if jobs:
                conn.execute(_RETRY_MANY, (error, rows))

    def superseded_count(self, mailbox: str | None = None) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT COALESCE(SUM(superseded), 0) FROM mailboxes WHERE (? IS NULL OR mailbox = ?)",
                (mailbox, mailbox),
            )
            .fetchone()
        )
        return int(row[0])

    # -- pauses of mailboxes and servers ------------------------------------------------------
    @staticmethod
    def _add_pause_schema(conn: sqlite3.Connection) -> None:
        """Columns and table for pauses, added in place to a queue made by an older version."""
        have = {r[1] for r in conn.execute("PRAGMA table_info(mailboxes)")}
        for name, decl in _PAUSE_COLUMNS:
            if name not in have:
                conn.execute(f"ALTER TABLE mailboxes ADD COLUMN {name} {decl}")
        conn.execute(_SERVERS_TABLE)

    @staticmethod
    def _take_probe(conn: sqlite3.Connection, mailbox: str, worker_id: str, until: float) -> bool:
        """Inside a claim: a mailbox whose server is recovering is claimed as that server's probe."""
        row = conn.execute(_RECOVERING, (mailbox,)).fetchone()
        if row is None:
            return False
        conn.execute(
            "UPDATE servers SET probe_worker = ?, probe_until = ? WHERE server = ?",
            (worker_id, until, row[0]),
        )
        return True

    def note_server(self, mailbox: str, server: str) -> None:
        self._write_one(
            "INSERT INTO mailboxes (mailbox, server) VALUES (?, ?) "
            "ON CONFLICT (mailbox) DO UPDATE SET server = excluded.server WHERE mailboxes.server <> excluded.server",
            (mailbox, server),
        )

    def pause_mailbox(self, mailbox: str, seconds: float) -> float:
        until = time.time() + max(0.0, seconds)
        with self._write() as conn:
            row = conn.execute(
                "INSERT INTO mailboxes (mailbox, paused_until) VALUES (?, ?) "
                "ON CONFLICT (mailbox) DO UPDATE SET paused_until = MAX(paused_until, excluded.paused_until) "
                "RETURNING paused_until",
                (mailbox, until),
            ).fetchone()
        return float(row[0])

    def server_failed(self, server: str, delay_for: Callable[[int], float]) -> ServerPause:
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT failures, paused_until FROM servers WHERE server = ?", (server,)
            ).fetchone()
            failures, paused_until = row if row is not None else (0, 0.0)
            if paused_until > now:
                # A request that was already out when the pause began: the same step, not a new one.
                return ServerPause(server, failures, paused_until, counted=False)
            failures += 1
            paused_until = now + max(0.0, delay_for(failures))
            conn.execute(
                "INSERT INTO servers (server, failures, paused_until, probe_worker, probe_until) "
                "VALUES (?, ?, ?, '', 0) ON CONFLICT (server) DO UPDATE SET failures = excluded.failures, "
                "paused_until = excluded.paused_until, probe_worker = '', probe_until = 0",
                (server, failures, paused_until),
            )
        return ServerPause(server, failures, paused_until, counted=True)

    def server_ok(self, server: str) -> None:
        cur = self._write_one(
            "UPDATE servers SET failures = 0, paused_until = 0, probe_worker = '', probe_until = 0 "
            "WHERE server = ? AND (failures > 0 OR probe_until > 0)",
            (server,),
        )
        if cur.rowcount:
            self._signal.notify()  # the server's other mailboxes may be claimed again

    def end_probe(self, server: str, worker_id: str) -> None:
        cur = self._write_one(
            "UPDATE servers SET probe_worker = '', probe_until = 0 WHERE server = ? AND probe_worker = ?",
            (server, worker_id),
        )
        if cur.rowcount:
            self._signal.notify()

    def server_pauses(self) -> list[ServerPause]:
        rows = self._conn().execute("SELECT server, failures, paused_until FROM servers ORDER BY server")
        return [ServerPause(r[0], r[1], r[2]) for r in rows]

    def mailbox_pauses(self) -> dict[str, float]:
        rows = self._conn().execute("SELECT mailbox, paused_until FROM mailboxes WHERE paused_until > 0")
        return {r[0]: r[1] for r in rows}


_SHARED_SCHEMA = [
    # Key -> JSON text: "firm", "hold", "licence", "mailbox:<user id>" (see core/shared_state.py).
    """CREATE TABLE IF NOT EXISTS worker_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS server_slots (
        server TEXT NOT NULL,
        slot INTEGER NOT NULL,
        holder TEXT NOT NULL,
        lease_until REAL NOT NULL,
        PRIMARY KEY (server, slot)
    )""",
]
_PUT_WORKER_ROW = (
    "INSERT INTO worker_state (key, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at "
    "WHERE worker_state.value <> excluded.value"
)
_DELETE_WORKER_ROW = "DELETE FROM worker_state WHERE key = ?"
_SLOTS_TAKEN = "SELECT slot FROM server_slots WHERE server = ? AND lease_until > ?"
_TAKE_SLOT = (
    "INSERT INTO server_slots (server, slot, holder, lease_until) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (server, slot) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until"
)
