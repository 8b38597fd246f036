"""The outbox on PostgreSQL, for several host instances or worker processes.

Same model as the SQLite store (see ``base.py``). Differences that matter:

* Claims lock the mailbox's row in ``mailboxes`` with ``FOR UPDATE SKIP LOCKED``,
  so concurrent claimers never wait for each other and never take the same
  mailbox; the lease write is guarded again (see ``_TAKE_LEASE``).
* Timestamps come from the server's clock unless a caller passes ``now``: worker
  processes may run on several machines whose clocks drift, and leases must mean
  the same thing to all of them.
* ``enqueue`` sends ``NOTIFY``; ``wait_for_work`` blocks on ``LISTEN``.
* The URL may name the schema: ``postgresql://host/db?schema=kanzlei_sync``. The
  parameter is the plugin's, not libpq's, and is removed before connecting. It wins
  over the ``schema`` argument, because the URL is the one setting an operator gives
  the host and every ``tsl-exchange worker`` alike, and they must share one schema.

One connection per thread (autocommit, explicit transactions), borrowed from a
bounded pool (``pool_size`` per store) and given back when the thread ends; a broken
connection is replaced on the next call. The LISTEN connection is the watcher's own,
outside the pool.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

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

SCHEMA_VERSION = 2

# Transaction start time in UNIX seconds: stable within one transaction, so a claim's
# pick and its lease use the same instant. date_part, not extract: extract answers a
# numeric, and its cast to float8 goes through text (a real cost in the claim's per-row
# filters); both round the same exact value, so the two forms are equal.
_NOW = "date_part('epoch', now())"
# The server's clock right now (for lease checks late in a transaction).
_CLOCK = "date_part('epoch', clock_timestamp())"

_TABLES = [
    "CREATE SCHEMA IF NOT EXISTS {s}",
    """CREATE TABLE IF NOT EXISTS {s}.meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    # An identity column never reuses ids, so a stale Job (id, version) cannot
    # match a row created later.
    # fillfactor: room on each page, so a claim's "claims + 1" stays a HOT update (no
    # index entries written for the five indexes).
    """CREATE TABLE IF NOT EXISTS {s}.jobs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        mailbox text NOT NULL,
        record_key text NOT NULL,
        op text NOT NULL CONSTRAINT jobs_op_check CHECK (op IN ('upsert', 'delete', 'verify')),
        payload_hash text NOT NULL DEFAULT '',
        version integer NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        status text NOT NULL CHECK (status IN ('pending', 'failed')),
        last_error text NOT NULL DEFAULT '',
        due_at double precision NOT NULL,
        enqueued_at double precision NOT NULL,
        claims integer NOT NULL DEFAULT 0,
        source_version bigint NOT NULL DEFAULT 0,
        priority smallint NOT NULL DEFAULT 0,
        verify boolean NOT NULL DEFAULT false,
        UNIQUE (mailbox, record_key)
    ) WITH (fillfactor = 70)""",
    """CREATE TABLE IF NOT EXISTS {s}.payloads (
        hash text PRIMARY KEY,
        body text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.leases (
        mailbox text PRIMARY KEY,
        worker_id text NOT NULL,
        lease_until double precision NOT NULL,
        token bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.sync_state (
        mailbox text NOT NULL,
        record_key text NOT NULL,
        item_id text NOT NULL,
        change_key text NOT NULL,
        content_hash text NOT NULL,
        item_class text NOT NULL DEFAULT '',
        updated_at double precision NOT NULL,
        source_version bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (mailbox, record_key)
    )""",
    # A pushed delete's version, kept for a while (see the SQLite store).
    """CREATE TABLE IF NOT EXISTS {s}.tombstones (
        mailbox text NOT NULL,
        record_key text NOT NULL,
        source_version bigint NOT NULL,
        deleted_at double precision NOT NULL,
        PRIMARY KEY (mailbox, record_key)
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.mailboxes (
        mailbox text PRIMARY KEY,
        parked boolean NOT NULL DEFAULT false,
        parked_reason text NOT NULL DEFAULT '',
        last_success_at double precision,
        last_error text NOT NULL DEFAULT '',
        last_error_at double precision,
        superseded bigint NOT NULL DEFAULT 0
    )""",
    # Pauses (see worker/runner.py): a busy answer pauses one mailbox, a transport failure its
    # whole server (host:port, noted per mailbox by the worker). A server with failures > 0
    # is recovering: once its pause is over, one claim (the probe) may go.
    # ALTER TABLE takes an exclusive lock even when the column exists; a worker process that
    # starts while another one claims would deadlock with it. So only when a column is missing.
    """DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{s}.mailboxes'::regclass
                       AND attname = 'paused_until' AND NOT attisdropped) THEN
            ALTER TABLE {s}.mailboxes ADD COLUMN paused_until double precision NOT NULL DEFAULT 0;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{s}.mailboxes'::regclass
                       AND attname = 'server' AND NOT attisdropped) THEN
            ALTER TABLE {s}.mailboxes ADD COLUMN server text NOT NULL DEFAULT '';
        END IF;
    END $$""",
    """CREATE TABLE IF NOT EXISTS {s}.servers (
        server text PRIMARY KEY,
        failures integer NOT NULL DEFAULT 0,
        paused_until double precision NOT NULL DEFAULT 0,
        probe_worker text NOT NULL DEFAULT '',
        probe_until double precision NOT NULL DEFAULT 0
    )""",
]

# Freed snapshots a worker thread gathers before it collects them (see _deferred_gc).
GC_BATCH = 256

# Raised by {s}.fence(): the lease is no longer held with that token.
FENCE_SQLSTATE = "TSL01"

_FUNCTIONS = [
    # Called first in a fenced transaction. FOR SHARE holds the lease row until commit, so
    # no claim can take the lease between this check and the commit; the error (rather
    # than an empty answer) lets the whole transaction go to the server in one round trip.
    f"""CREATE OR REPLACE FUNCTION {{s}}.fence(p_mailbox text, p_worker text, p_token bigint)
    RETURNS void LANGUAGE plpgsql AS $fn$
    BEGIN
        PERFORM 1 FROM {{s}}.leases
        WHERE mailbox = p_mailbox AND worker_id = p_worker AND token = p_token
          AND lease_until > {_CLOCK}
        FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'lease on % is no longer held with token %', p_mailbox, p_token
                USING ERRCODE = '{FENCE_SQLSTATE}';
        END IF;
    END
    $fn$""",
    # Same rules as the SQLite store's _ENQUEUE (see "Order" in base.py), for a whole batch in
    # one statement: the changes come as arrays and are written in their order (the caller
    # sorts them, so concurrent batches lock rows in one order). A batch names each (mailbox,
    # record key) at most once (ON CONFLICT cannot touch a row twice); the caller splits a
    # batch that names one twice. Returns the accepted changes; the others were superseded.
    # A function so that its plan is made once per connection: a plan made for each call
    # (the planner sees how long the arrays are) costs a single save more than it saves.
    f"""CREATE OR REPLACE FUNCTION {{s}}.enqueue(
        p_mailbox text[], p_key text[], p_op text[], p_hash text[], p_version bigint[], p_priority smallint[])
    RETURNS TABLE (accepted_mailbox text, accepted_key text) LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan AS $fn$
    BEGIN
        RETURN QUERY
            INSERT INTO {{s}}.jobs AS j
                (mailbox, record_key, op, payload_hash, version, source_version, priority, attempts, status,
                 last_error, due_at, enqueued_at)
            SELECT c.mailbox, c.key, c.op, c.hash, 1, c.version, c.priority, 0, 'pending', '', {_NOW}, {_NOW}
            FROM unnest(p_mailbox, p_key, p_op, p_hash, p_version, p_priority)
                WITH ORDINALITY AS c(mailbox, key, op, hash, version, priority, n)
            WHERE c.version = 0 OR (
                NOT EXISTS (
                    SELECT 1 FROM {{s}}.sync_state AS s
                    WHERE s.mailbox = c.mailbox AND s.record_key = c.key AND s.source_version > c.version)
                AND NOT EXISTS (
                    SELECT 1 FROM {{s}}.tombstones AS t
                    WHERE t.mailbox = c.mailbox AND t.record_key = c.key
                      AND (t.source_version > c.version OR (t.source_version = c.version AND c.op = 'upsert'))))
            ORDER BY c.n
            ON CONFLICT (mailbox, record_key) DO UPDATE SET
                op = EXCLUDED.op,
                payload_hash = EXCLUDED.payload_hash,
                version = j.version + 1,
                source_version = GREATEST(j.source_version, EXCLUDED.source_version),
                priority = LEAST(j.priority, EXCLUDED.priority),
                verify = j.verify OR j.op = 'verify',
                attempts = 0,
                status = 'pending',
                last_error = '',
                due_at = EXCLUDED.due_at,
                enqueued_at = EXCLUDED.enqueued_at
            WHERE j.op = 'verify' OR EXCLUDED.source_version = 0
               OR EXCLUDED.source_version > j.source_version
               OR (EXCLUDED.source_version = j.source_version AND NOT (j.op = 'delete' AND EXCLUDED.op = 'upsert'))
            RETURNING j.mailbox, j.record_key;
    END
    $fn$""",  # claims kept: see the SQLite store
    # A worker's outcome in ONE statement (one round trip, its own transaction): the lease
    # check first, then the acks, then the sync state in the given order (entries written
    # before removals, each entry as if on its own, as executemany would), then the
    # tombstones' pruning. A NULL token writes without a lease check. Returns the jobs
    # acked and their snapshots' hashes (which may now be unreferenced).
    # A pushed delete leaves its version as a tombstone (see the SQLite store).
    f"""CREATE OR REPLACE FUNCTION {{s}}.complete(
        p_mailbox text, p_worker text, p_token bigint, p_ids bigint[], p_versions integer[],
        p_sync_mailbox text[], p_sync_key text[], p_item_id text[], p_change_key text[],
        p_content_hash text[], p_item_class text[], p_updated_at float8[], p_source_version bigint[],
        p_removed_mailbox text[], p_removed_key text[], p_prune_seconds float8)
    RETURNS TABLE (acked_id bigint, acked_hash text) LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan AS $fn$
    BEGIN
        IF p_token IS NOT NULL THEN
            PERFORM {{s}}.fence(p_mailbox, p_worker, p_token);
        END IF;
        IF cardinality(p_ids) > 0 THEN
            RETURN QUERY
            WITH d AS (
                DELETE FROM {{s}}.jobs AS j USING unnest(p_ids, p_versions) AS a(id, version)
                WHERE j.id = a.id AND j.version = a.version
                RETURNING j.id, j.payload_hash, j.op, j.mailbox, j.record_key, j.source_version
            ), t AS (
                INSERT INTO {{s}}.tombstones AS t (mailbox, record_key, source_version, deleted_at)
                SELECT d.mailbox, d.record_key, d.source_version, {_NOW} FROM d
                WHERE d.op = 'delete' AND d.source_version > 0
                ON CONFLICT (mailbox, record_key) DO UPDATE SET
                    source_version = GREATEST(t.source_version, EXCLUDED.source_version),
                    deleted_at = EXCLUDED.deleted_at
            )
            SELECT d.id, d.payload_hash FROM d;
        END IF;
        FOR i IN 1 .. COALESCE(cardinality(p_sync_mailbox), 0) LOOP
            INSERT INTO {{s}}.sync_state AS ss ({SYNC_COLS})
            VALUES (p_sync_mailbox[i], p_sync_key[i], p_item_id[i], p_change_key[i], p_content_hash[i],
                    p_item_class[i], COALESCE(p_updated_at[i], {_NOW}), p_source_version[i])
            ON CONFLICT (mailbox, record_key) DO UPDATE SET
                item_id = EXCLUDED.item_id,
                change_key = EXCLUDED.change_key,
                content_hash = EXCLUDED.content_hash,
                item_class = EXCLUDED.item_class,
                updated_at = EXCLUDED.updated_at,
                source_version = GREATEST(ss.source_version, EXCLUDED.source_version)
            WHERE EXCLUDED.source_version = 0 OR EXCLUDED.source_version >= ss.source_version;
        END LOOP;
        IF cardinality(p_removed_mailbox) > 0 THEN
            DELETE FROM {{s}}.sync_state AS ss USING unnest(p_removed_mailbox, p_removed_key) AS r(mailbox, key)
            WHERE ss.mailbox = r.mailbox AND ss.record_key = r.key;
        END IF;
        IF p_prune_seconds IS NOT NULL THEN
            DELETE FROM {{s}}.tombstones AS t WHERE t.deleted_at < {_NOW} - p_prune_seconds;
        END IF;
    END
    $fn$""",
]

_INDEXES = [
    # The claim's pick walks pending jobs in (priority, due_at, id) order and stops at the
    # first free mailbox: with id in the key, ORDER BY ... LIMIT 1 reads index entries in
    # order instead of sorting every job of the same due time.
    "CREATE INDEX IF NOT EXISTS jobs_claim ON {s}.jobs (priority, due_at, id) WHERE status = 'pending'",
    # The claimed mailbox's jobs, in the same order.
    "CREATE INDEX IF NOT EXISTS jobs_mailbox_claim ON {s}.jobs (mailbox, priority, due_at, id) "
    "WHERE status = 'pending'",
    # holders() runs on the host's save path: find a record's mailboxes without a scan.
    # text_pattern_ops: serves both "=" and the LIKE 'key#%' prefix search whatever
    # the database's collation is.
    "CREATE INDEX IF NOT EXISTS jobs_record ON {s}.jobs (record_key text_pattern_ops)",
    "CREATE INDEX IF NOT EXISTS jobs_payload ON {s}.jobs (payload_hash)",
    "CREATE INDEX IF NOT EXISTS sync_state_record ON {s}.sync_state (record_key text_pattern_ops)",
    "CREATE INDEX IF NOT EXISTS tombstones_age ON {s}.tombstones (deleted_at)",
]

# Schema 1 -> 2 in place (inside the schema lock): snapshots move to payloads, jobs gain
# source version, priority and the verify flag, leases their fencing token.
_MIGRATE_V1 = [
    "ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS payload_hash text NOT NULL DEFAULT ''",
    "ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS source_version bigint NOT NULL DEFAULT 0",
    "ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 0",
    "ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS verify boolean NOT NULL DEFAULT false",
    "ALTER TABLE {s}.jobs DROP CONSTRAINT IF EXISTS jobs_op_check",
    "ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_op_check CHECK (op IN ('upsert', 'delete', 'verify'))",
    "UPDATE {s}.jobs SET payload_hash = encode(sha256(convert_to(payload, 'UTF8')), 'hex') WHERE payload <> ''",
    "INSERT INTO {s}.payloads (hash, body) SELECT DISTINCT payload_hash, payload FROM {s}.jobs "
    "WHERE payload <> '' ON CONFLICT (hash) DO NOTHING",
    "ALTER TABLE {s}.jobs DROP COLUMN payload",
    "DROP INDEX IF EXISTS {s}.jobs_status_due",
    "ALTER TABLE {s}.leases ADD COLUMN IF NOT EXISTS token bigint NOT NULL DEFAULT 0",
    "ALTER TABLE {s}.sync_state ADD COLUMN IF NOT EXISTS source_version bigint NOT NULL DEFAULT 0",
    "ALTER TABLE {s}.mailboxes ADD COLUMN IF NOT EXISTS superseded bigint NOT NULL DEFAULT 0",
    "ALTER TABLE {s}.jobs SET (fillfactor = 70)",
]

JOB_COLS = job_cols("COALESCE((SELECT p.body FROM {s}.payloads AS p WHERE p.hash = jobs.payload_hash), '')")

_Q = {
    # See the function {s}.enqueue; the casts name the array types.
    "enqueue": """
        SELECT accepted_mailbox, accepted_key FROM {s}.enqueue(
            %(mailbox)s::text[], %(key)s::text[], %(op)s::text[], %(hash)s::text[],
            %(version)s::bigint[], %(priority)s::smallint[])
    """,
    # DO UPDATE (not NOTHING) locks an existing row until commit, so a concurrent
    # collection cannot delete a snapshot this enqueue is about to reference. Hashes come
    # sorted and once each.
    "put_payloads": """
        INSERT INTO {s}.payloads AS p (hash, body)
        SELECT b.hash, b.body FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS b(hash, body, n)
        ORDER BY b.n
        ON CONFLICT (hash) DO UPDATE SET hash = EXCLUDED.hash
    """,
    "queued_hashes": """
        SELECT DISTINCT j.payload_hash FROM {s}.jobs AS j
        JOIN unnest(%s::text[], %s::text[]) AS p(mailbox, record_key)
          ON j.mailbox = p.mailbox AND j.record_key = p.record_key
        WHERE j.payload_hash <> ''
    """,
    "collect_payloads": """
        DELETE FROM {s}.payloads AS p WHERE p.hash = ANY(%s::text[])
          AND NOT EXISTS (SELECT 1 FROM {s}.jobs AS j WHERE j.payload_hash = p.hash)
    """,
    "count_superseded": """
        INSERT INTO {s}.mailboxes AS m (mailbox, superseded) VALUES (%s, %s)
        ON CONFLICT (mailbox) DO UPDATE SET superseded = m.superseded + EXCLUDED.superseded
    """,
    "superseded": """
        SELECT COALESCE(sum(superseded), 0) FROM {s}.mailboxes
        WHERE (%(mailbox)s::text IS NULL OR mailbox = %(mailbox)s)
    """,
    "note_verify": f"""
        INSERT INTO {{s}}.jobs AS j
            (mailbox, record_key, op, payload_hash, version, source_version, priority, verify, attempts,
             status, last_error, due_at, enqueued_at)
        VALUES (%s, %s, 'verify', '', 1, 0, 0, true, 0, 'pending', '', {_NOW}, {_NOW})
        ON CONFLICT (mailbox, record_key) DO UPDATE SET
            verify = true, version = j.version + 1, status = 'pending', priority = 0,
            due_at = LEAST(j.due_at, EXCLUDED.due_at)
    """,
    "fence": "SELECT {s}.fence(%s, %s, %s)",
    "check_lease": f"""
        SELECT 1 FROM {{s}}.leases
        WHERE mailbox = %s AND worker_id = %s AND token = %s AND lease_until > {_CLOCK}
    """,
    "retry_many": f"""
        UPDATE {{s}}.jobs AS j SET attempts = j.attempts + 1, last_error = %s, due_at = {_NOW} + r.delay,
            status = 'pending'
        FROM unnest(%s::bigint[], %s::integer[], %s::float8[]) AS r(id, version, delay)
        WHERE j.id = r.id AND j.version = r.version
    """,
    # Mailbox rows are what claims lock; every mailbox with work must have one.
    "know_mailbox": "INSERT INTO {s}.mailboxes (mailbox) VALUES (%s) ON CONFLICT (mailbox) DO NOTHING",
    "notify": "SELECT pg_notify(%s, '')",
    # A claim in ONE statement (one round trip, no explicit transaction):
    # * pick walks due jobs best first (priority, due_at, id) and locks the first mailbox
    #   row nobody else has locked; a mailbox being claimed right now is skipped. It also
    #   tells whether the mailbox's server is recovering (failures > 0).
    # * lease: the pick's snapshot may predate a lease another worker committed a moment
    #   ago (its mailbox row lock was already released, so SKIP LOCKED did not see it).
    #   ON CONFLICT re-reads the newest lease row and the WHERE refuses to overwrite a
    #   live one. Every claim raises the fencing token.
    # * probe: only with the lease won, and only for a recovering server: this claim
    #   becomes the server's one probe. The row lock serialises two claimers of the same
    #   server; the second re-reads probe_until and takes nothing.
    # * go: the lease may hand out jobs if the server is healthy or the probe was won.
    # * due lists the mailbox's due jobs (at most probe_limit for a probe). The mailbox is a
    #   scalar, so the per-mailbox index serves the walk whatever the queue's depth.
    # * taken hands them out and counts the hand-out (RETURNING has no order; the caller
    #   sorts), finding each row by its ctid rather than by a second index walk. A job an
    #   enqueue is rewriting is waited for and the new row version is checked again: its
    #   snapshot must exist in the statement's snapshot, in which a snapshot stored by that
    #   enqueue does not exist yet; such a job is left for the next claim instead of being
    #   handed out without its snapshot. A row as due saw it needs no look-up: its snapshot
    #   was stored with it, and collection never deletes a snapshot a job still names.
    # The row of ``pick`` comes back even when the lease race was lost (token NULL), so
    # the caller can skip that mailbox and try the next; with the lease won but the probe
    # lost (recovering, not probe) the caller releases the lease and tries the next.
    "claim": f"""
        WITH pick AS (
            SELECT m.mailbox, m.server, COALESCE(%(now)s::float8, {_NOW}) AS now,
                   EXISTS (SELECT 1 FROM {{s}}.servers AS r WHERE r.server = m.server AND r.failures > 0)
                       AS recovering
            FROM {{s}}.jobs AS j
            JOIN {{s}}.mailboxes AS m ON m.mailbox = j.mailbox
            WHERE j.status = 'pending' AND j.due_at <= COALESCE(%(now)s::float8, {_NOW})
              AND NOT m.parked
              AND m.paused_until <= COALESCE(%(now)s::float8, {_NOW})
              AND NOT EXISTS (
                  SELECT 1 FROM {{s}}.servers AS s WHERE s.server = m.server
                    AND (s.paused_until > COALESCE(%(now)s::float8, {_NOW})
                         OR s.probe_until > COALESCE(%(now)s::float8, {_NOW})))
              AND m.mailbox <> ALL(%(exclude)s::text[])
              AND NOT EXISTS (
                  SELECT 1 FROM {{s}}.leases AS l
                  WHERE l.mailbox = m.mailbox AND l.lease_until > COALESCE(%(now)s::float8, {_NOW}))
            ORDER BY j.priority, j.due_at, j.id
            LIMIT 1
            FOR UPDATE OF m SKIP LOCKED
        ), lease AS (
            INSERT INTO {{s}}.leases AS l (mailbox, worker_id, lease_until, token)
            SELECT mailbox, %(worker)s, now + %(seconds)s::float8, 1 FROM pick
            ON CONFLICT (mailbox) DO UPDATE SET worker_id = EXCLUDED.worker_id,
                lease_until = EXCLUDED.lease_until, token = l.token + 1
            WHERE l.lease_until <= EXCLUDED.lease_until - %(seconds)s::float8
            RETURNING l.mailbox, l.token, l.lease_until
        ), probe AS (
            UPDATE {{s}}.servers AS s SET probe_worker = %(worker)s, probe_until = lease.lease_until
            FROM pick, lease
            WHERE pick.recovering AND s.server = pick.server AND s.failures > 0
              AND s.paused_until <= pick.now AND s.probe_until <= pick.now
            RETURNING s.server
        ), go AS (
            SELECT lease.mailbox, EXISTS (SELECT 1 FROM probe) AS probe FROM lease, pick
            WHERE NOT pick.recovering OR EXISTS (SELECT 1 FROM probe)
        ), due AS (
            SELECT j.ctid AS tid, j.payload_hash FROM {{s}}.jobs AS j
            WHERE j.mailbox = (SELECT mailbox FROM go)
              AND j.status = 'pending' AND j.due_at <= (SELECT now FROM pick)
            ORDER BY j.priority, j.due_at, j.id
            LIMIT (SELECT CASE WHEN probe THEN LEAST(%(limit)s, %(probe_limit)s) ELSE %(limit)s END FROM go)
        ), taken AS (
            UPDATE {{s}}.jobs SET claims = claims + 1
            FROM due WHERE jobs.ctid = due.tid
              AND (jobs.payload_hash = '' OR jobs.payload_hash = due.payload_hash
                   OR EXISTS (SELECT 1 FROM {{s}}.payloads AS p WHERE p.hash = jobs.payload_hash))
            RETURNING {JOB_COLS}
        )
        SELECT pick.mailbox, lease.token, lease.lease_until, pick.recovering, go.probe, taken.*
        FROM pick LEFT JOIN lease ON true LEFT JOIN go ON true LEFT JOIN taken ON true
    """,
    # ``claim_urgent``: more due jobs of a leased mailbox that rank above ``below``, except those
    # the claim has begun; handed out under the lease (the caller's transaction is fenced).
    "urgent_ids": f"""
        SELECT id FROM {{s}}.jobs
        WHERE mailbox = %(mailbox)s AND status = 'pending' AND due_at <= {_NOW} AND priority < %(below)s
          AND id <> ALL(%(skip)s::bigint[])
        ORDER BY priority, due_at, id
        LIMIT %(limit)s
    """,
    "take_urgent": f"""
        UPDATE {{s}}.jobs SET claims = claims + 1
        WHERE id IN (
            SELECT id FROM {{s}}.jobs
            WHERE mailbox = %(mailbox)s AND status = 'pending' AND due_at <= {_NOW} AND priority < %(below)s
              AND id <> ALL(%(skip)s::bigint[])
            ORDER BY priority, due_at, id
            LIMIT %(limit)s)
          AND (jobs.payload_hash = ''
               OR EXISTS (SELECT 1 FROM {{s}}.payloads AS p WHERE p.hash = jobs.payload_hash))
        RETURNING {JOB_COLS}
    """,
    # ``urgent_waiting``: the claim's pick, restricted to a priority, without taking anything:
    # how many mailboxes (up to a limit) it could take.
    "urgent_waiting": f"""
        SELECT count(*) FROM (SELECT DISTINCT j.mailbox FROM {{s}}.jobs AS j
        JOIN {{s}}.mailboxes AS m ON m.mailbox = j.mailbox
        WHERE j.status = 'pending' AND j.priority < %(below)s
          AND j.due_at <= COALESCE(%(now)s::float8, {_NOW})
          AND NOT m.parked
          AND m.paused_until <= COALESCE(%(now)s::float8, {_NOW})
          AND NOT EXISTS (
              SELECT 1 FROM {{s}}.servers AS s WHERE s.server = m.server
                AND (s.paused_until > COALESCE(%(now)s::float8, {_NOW})
                     OR s.probe_until > COALESCE(%(now)s::float8, {_NOW})))
          AND m.mailbox <> ALL(%(exclude)s::text[])
          AND NOT EXISTS (
              SELECT 1 FROM {{s}}.leases AS l
              WHERE l.mailbox = m.mailbox AND l.lease_until > COALESCE(%(now)s::float8, {_NOW}))
        LIMIT %(limit)s) AS waiting
    """,
    "renew": f"""
        UPDATE {{s}}.leases SET lease_until = {_NOW} + %s
        WHERE mailbox = %s AND worker_id = %s AND token = %s
        RETURNING lease_until
    """,
    # The row stays with its token, so the next claim's token is higher still.
    # One statement: free the lease (keeping its token) and wake other workers if the
    # mailbox still has due work (the releasing worker stopped early, e.g. on shutdown
    # or after its batch limit).
    # Hand-outs that were never sent give their count back, while the lease is still ours
    # (so nobody was handed those jobs since).
    "release": f"""
        WITH r AS (
            UPDATE {{s}}.leases SET worker_id = '', lease_until = 0
            WHERE mailbox = %(mailbox)s AND worker_id = %(worker)s AND token = %(token)s
            RETURNING mailbox
        ), u AS (
            UPDATE {{s}}.jobs SET claims = claims - 1
            WHERE id = ANY(%(unsent)s::bigint[]) AND claims > 0 AND EXISTS (SELECT 1 FROM r))
        SELECT pg_notify(%(channel)s, '') FROM r WHERE EXISTS (
            SELECT 1 FROM {{s}}.jobs
            WHERE mailbox = %(mailbox)s AND status = 'pending' AND due_at <= {_NOW})
    """,
    # Payload collection in two statements of one transaction: lock the candidates (an
    # enqueue that reuses one holds its lock until commit, see put_payload), then delete
    # those no job references, judged by a snapshot taken after the lock was granted.
    "lock_payloads": "SELECT hash FROM {s}.payloads WHERE hash = ANY(%s::text[]) ORDER BY hash FOR UPDATE",
    # See the function {s}.complete; the casts name the array types even for empty lists.
    "complete": """
        SELECT acked_id, acked_hash FROM {s}.complete(
            %s, %s, %s::bigint, %s::bigint[], %s::integer[],
            %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::bigint[],
            %s::text[], %s::text[], %s::float8)
    """,
    "fail": """
        UPDATE {s}.jobs SET attempts = attempts + 1, last_error = %s, status = 'failed'
        WHERE id = %s AND version = %s
    """,
    "requeue_failed": f"""
        UPDATE {{s}}.jobs SET status = 'pending', attempts = 0, due_at = {_NOW}
        WHERE status = 'failed' AND (%(mailbox)s::text IS NULL OR mailbox = %(mailbox)s)
    """,
    # A leased mailbox becomes claimable when its lease runs out, so its jobs
    # count from greatest(due_at, lease_until); a paused mailbox or server (or one
    # whose probe is out) likewise from the end of its pause.
    "next_due": """
        SELECT min(greatest(j.due_at, COALESCE(l.lease_until, 0), COALESCE(m.paused_until, 0),
                            COALESCE(s.paused_until, 0), COALESCE(s.probe_until, 0))),
               date_part('epoch', clock_timestamp())
        FROM {s}.jobs AS j
        LEFT JOIN {s}.leases AS l ON l.mailbox = j.mailbox
        LEFT JOIN {s}.mailboxes AS m ON m.mailbox = j.mailbox
        LEFT JOIN {s}.servers AS s ON s.server = m.server
        WHERE j.status = 'pending' AND NOT COALESCE(m.parked, false)
    """,
    "get_sync": f"""
        SELECT {SYNC_COLS}
        FROM {{s}}.sync_state WHERE mailbox = %s AND record_key = ANY(%s::text[])
    """,
    "sync_keys": """
        SELECT record_key FROM {s}.sync_state WHERE mailbox = %s AND left(record_key, %s) = %s
        ORDER BY record_key
    """,
    # The record itself and its sub-items ("deadline:4#pre1"). Failed upserts count
    # too: they are retried when the record changes.
    "holders": """
        SELECT mailbox FROM {s}.sync_state WHERE record_key = %(key)s OR record_key LIKE %(sub)s
        UNION
        SELECT mailbox FROM {s}.jobs WHERE op = 'upsert' AND (record_key = %(key)s OR record_key LIKE %(sub)s)
        ORDER BY 1
    """,
    "park": """
        INSERT INTO {s}.mailboxes AS m (mailbox, parked, parked_reason) VALUES (%s, true, %s)
        ON CONFLICT (mailbox) DO UPDATE SET parked = true, parked_reason = EXCLUDED.parked_reason
    """,
    "unpark": "UPDATE {s}.mailboxes SET parked = false, parked_reason = '' WHERE mailbox = %s",
    "unpark_jobs": f"""
        UPDATE {{s}}.jobs SET due_at = {_NOW}
        WHERE mailbox = %s AND status = 'pending' AND due_at > {_NOW}
    """,
    "record_success": f"""
        INSERT INTO {{s}}.mailboxes AS m (mailbox, last_success_at) VALUES (%s, {_NOW})
        ON CONFLICT (mailbox) DO UPDATE SET last_success_at = EXCLUDED.last_success_at
    """,
    "record_error": f"""
        INSERT INTO {{s}}.mailboxes AS m (mailbox, last_error, last_error_at) VALUES (%s, %s, {_NOW})
        ON CONFLICT (mailbox) DO UPDATE SET last_error = EXCLUDED.last_error,
            last_error_at = EXCLUDED.last_error_at
    """,
    "mailbox_states": """
        SELECT b.mailbox, COALESCE(m.parked, false), COALESCE(m.parked_reason, ''), m.last_success_at,
               COALESCE(m.last_error, ''), m.last_error_at, COALESCE(c.pending, 0), COALESCE(c.failed, 0)
        FROM (SELECT mailbox FROM {s}.mailboxes UNION SELECT mailbox FROM {s}.jobs) AS b
        LEFT JOIN {s}.mailboxes AS m ON m.mailbox = b.mailbox
        LEFT JOIN (
            SELECT mailbox, count(*) FILTER (WHERE status = 'pending') AS pending,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM {s}.jobs GROUP BY mailbox
        ) AS c ON c.mailbox = b.mailbox
        ORDER BY b.mailbox
    """,
    "pending_count": """
        SELECT count(*) FROM {s}.jobs
        WHERE status = 'pending' AND (%(mailbox)s::text IS NULL OR mailbox = %(mailbox)s)
    """,
    "jobs": f"""
        SELECT {JOB_COLS} FROM {{s}}.jobs
        WHERE (%(mailbox)s::text IS NULL OR mailbox = %(mailbox)s)
          AND (%(status)s::text IS NULL OR status = %(status)s)
        ORDER BY due_at, id
    """,
}

_PAUSE_Q = {
    "note_server": """
        INSERT INTO {s}.mailboxes AS m (mailbox, server) VALUES (%s, %s)
        ON CONFLICT (mailbox) DO UPDATE SET server = EXCLUDED.server WHERE m.server <> EXCLUDED.server
    """,
    "pause_mailbox": f"""
        INSERT INTO {{s}}.mailboxes AS m (mailbox, paused_until) VALUES (%s, {_NOW} + %s)
        ON CONFLICT (mailbox) DO UPDATE SET paused_until = greatest(m.paused_until, EXCLUDED.paused_until)
        RETURNING m.paused_until
    """,
    "know_server": "INSERT INTO {s}.servers (server) VALUES (%s) ON CONFLICT (server) DO NOTHING",
    "lock_server": f"""
        SELECT failures, paused_until, {_NOW} FROM {{s}}.servers WHERE server = %s FOR UPDATE
    """,
    "pause_server": """
        UPDATE {s}.servers SET failures = %s, paused_until = %s, probe_worker = '', probe_until = 0
        WHERE server = %s
    """,
    "server_ok": """
        UPDATE {s}.servers SET failures = 0, paused_until = 0, probe_worker = '', probe_until = 0
        WHERE server = %s AND (failures > 0 OR probe_until > 0)
    """,
    "end_probe": """
        UPDATE {s}.servers SET probe_worker = '', probe_until = 0 WHERE server = %s AND probe_worker = %s
    """,
    "server_pauses": "SELECT server, failures, paused_until FROM {s}.servers ORDER BY server",
    "mailbox_pauses": "SELECT mailbox, paused_until FROM {s}.mailboxes WHERE paused_until > 0",
}


def _one(cur: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row of a statement that always returns one (an aggregate, an upsert's RETURNING)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("Die Warteschlange hat auf eine Abfrage keine Zeile geliefert.")
    return row


def _rounds(pairs: list[tuple[Change, str]]) -> list[list[tuple[Change, str]]]:
    """A sorted batch of (change, payload hash) in parts that name each record at most once
    (one statement cannot write a row twice): the n-th change of a record goes into the n-th
    part, every part keeps the batch's order, and the parts are written one after the other,
    so a record's later change is applied after its earlier one."""
    rounds: list[list[tuple[Change, str]]] = []
    seen: dict[tuple[str, str], int] = {}
    for pair in pairs:
        key = (pair[0].mailbox, pair[0].record_key)
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(pair)
    return rounds


SCHEMA_PARAM = "schema"
# Letters, digits, underscore: the name also forms the NOTIFY channel ("<schema>_work",
# at most 63 bytes) and appears unquoted in operators' psql sessions.
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


def split_schema(url: str) -> tuple[str, str | None]:
    """The URL without the plugin's ``schema`` query parameter, and that schema (or None).

    Only the query part is rebuilt; user, password and host stay byte for byte."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres") or not parts.query:
        return url, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    named = [v for k, v in pairs if k == SCHEMA_PARAM]
    if not named:
        return url, None
    if len(named) > 1 or not _SCHEMA_NAME.fullmatch(named[0]):
        raise ValueError(
            f"Die Warteschlangen-URL nennt ein ungültiges Schema ({', '.join(map(repr, named))}). "
            "Erlaubt ist genau ein Name aus Buchstaben, Ziffern und '_' (höchstens 48 Zeichen), "
            "z. B. ?schema=tsl_exchange."
        )
    rest = urlencode([(k, v) for k, v in pairs if k != SCHEMA_PARAM])
    return urlunsplit(parts._replace(query=rest)), named[0]


class PostgresOutbox(PerThreadConnections):
    """The outbox in a PostgreSQL schema; safe for many threads and processes."""

    def __init__(
        self, url: str, *, schema: str = "tsl_exchange", connect_timeout: int = 10, pool_size: int = 32
    ) -> None:
        url, url_schema = split_schema(url)
        schema = url_schema or schema
        if not schema:
            raise ValueError("schema must not be empty")
        self.schema = schema
        self.channel = f"{schema}_work"
        self._url = url
        # The schema in the name: an operator (and a test) can tell whose connections are whose.
        # libpq connection parameters, passed on as keywords
        self._connect_kwargs: dict[str, Any] = {"application_name": f"tsl-exchange:{schema}"}
        if "connect_timeout" not in conninfo_to_dict(url):
            self._connect_kwargs["connect_timeout"] = connect_timeout
        self._init_conns()
        self._dedicated: set[int] = set()  # ids of LISTEN connections (not the pool's)
        self._pool = self._open_pool(pool_size, connect_timeout)
        ident = sql.Identifier(schema)
        # Composed once; psycopg prepares a statement server-side after a few uses
        # (prepare_threshold), so hot statements are not re-planned.
        self._sql = {name: sql.SQL(text).format(s=ident) for name, text in {**_Q, **_PAUSE_Q}.items()}
        try:
            self._init_schema(ident)
        except BaseException:
            self.close()
            raise

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        if self._closed:
            raise RuntimeError("outbox is closed")
        # A full pool may hold connections of threads that have ended: keep giving those back
        # while waiting, so they reach this thread instead of the timeout.
        deadline = time.monotonic() + self._pool.timeout
        while True:
            self._sweep()
            try:
                conn = self._pool.getconn(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
                break
            except PoolTimeout:
                if time.monotonic() >= deadline:
                    raise PoolTimeout(
                        f"Alle {self._pool.max_size} Verbindungen dieses Prozesses zur PostgreSQL-"
                        "Warteschlange sind belegt. Bitte die Zahl der Worker-Threads senken."
                    ) from None
        self._adopt(conn)
        return conn

    def _forget(self, conn: psycopg.Connection | None) -> None:
        """Drop a dead connection (server restart, network cut); the caller opens a new one."""
        if conn is None:
            return
        if self._disown(conn):
            self._give_back_quietly(conn)
        else:
            conn.close()

    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            self._forget(conn)
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _wconn(self) -> psycopg.Connection:
        """This thread's connection for a worker's own bookkeeping (claims, leases, acks, retries).

        Its commits do not wait for the WAL flush (synchronous_commit=off): a server crash may
        forget the last of them, and then a job comes back or a lease ends early. Pushing is
        idempotent (content hash, look-up before a create, NeverOverwrite updates) and an ack
        and its sync state are one transaction, so nothing is duplicated or lost. The host's
        enqueue stays on the fully durable connection."""
        conn = getattr(self._local, "wconn", None)
        if conn is None or conn.closed or conn.broken:
            self._forget(conn)
            conn = self._connect()
            conn.execute("SET synchronous_commit = off")
            self._local.wconn = conn
        return conn

    def _listen_conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "listen", None)
        if conn is None or conn.closed or conn.broken:
            self._forget(conn)
            if self._closed:
                raise RuntimeError("outbox is closed")
            # Not from the pool: a LISTEN connection is held for the watcher's whole life.
            conn = psycopg.connect(self._url, autocommit=True, **self._connect_kwargs)
            self._dedicated.add(id(conn))
            self._adopt(conn)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._local.listen = conn
        return conn

    def _init_schema(self, ident: sql.Identifier) -> None:
        conn = self._conn()
        with conn.transaction():
            # Several processes may open a fresh schema at once; CREATE ... IF NOT
            # EXISTS is not safe against that on its own.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tsl_exchange_outbox:{self.schema}",)
            )
            for statement in _TABLES:
                conn.execute(sql.SQL(statement).format(s=ident))
            row = conn.execute(
                sql.SQL("SELECT value FROM {s}.meta WHERE key = 'schema_version'").format(s=ident)
            ).fetchone()
            found = int(row[0]) if row else 0
            if found > SCHEMA_VERSION:
                raise ValueError(
                    f"Das PostgreSQL-Schema {self.schema!r} der Warteschlange stammt von einer neueren "
                    f"Plugin-Version (Schema {found}, unterstützt bis {SCHEMA_VERSION}). "
                    "Bitte das Plugin aktualisieren."
                )
            if found == 1:
                for statement in _MIGRATE_V1:
                    conn.execute(sql.SQL(statement).format(s=ident))
            for statement in _INDEXES + _FUNCTIONS:
                conn.execute(sql.SQL(statement).format(s=ident))
            if found < SCHEMA_VERSION:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {s}.meta (key, value) VALUES ('schema_version', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                    ).format(s=ident),
                    (str(SCHEMA_VERSION),),
                )

    # -- producers -------------------------------------------------------------------------
    def enqueue(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        check_changes(changes)
        # Row locks are taken in key order so two concurrent batches touching the
        # same records cannot deadlock; the sort is stable, so for a record listed
        # twice the later change still wins.
        ordered = sorted(changes, key=lambda c: (c.mailbox, c.record_key))
        hashes = [payload_hash(c.payload) for c in ordered]
        bodies = sorted({h: c.payload for h, c in zip(hashes, ordered, strict=True) if h}.items())
        mailboxes = [(m,) for m in dict.fromkeys(c.mailbox for c in ordered)]
        conn = self._conn()
        superseded: dict[str, int] = {}
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                self._sql["queued_hashes"], ([c.mailbox for c in ordered], [c.record_key for c in ordered])
            )
            replaced = {r[0] for r in cur.fetchall()}
            if bodies:
                cur.execute(self._sql["put_payloads"], ([h for h, _ in bodies], [b for _, b in bodies]))
            for batch in _rounds(list(zip(ordered, hashes, strict=True))):
                cur.execute(
                    self._sql["enqueue"],
                    {
                        "mailbox": [c.mailbox for c, _ in batch],
                        "key": [c.record_key for c, _ in batch],
                        "op": [c.op for c, _ in batch],
                        "hash": [h for _, h in batch],
                        "version": [c.version for c, _ in batch],
                        "priority": [c.priority for c, _ in batch],
                    },
                )
                accepted = set(cur.fetchall())
                for change, _ in batch:
                    if (change.mailbox, change.record_key) not in accepted:
                        superseded[change.mailbox] = superseded.get(change.mailbox, 0) + 1
            cur.executemany(self._sql["know_mailbox"], mailboxes)
            if superseded:
                cur.executemany(self._sql["count_superseded"], sorted(superseded.items()))
            cur.execute(self._sql["notify"], (self.channel,))  # delivered at commit
        # Snapshots replaced, or offered only by superseded changes, may be referenced by nobody now.
        self._collect_now(replaced | {h for h, _ in bodies} if superseded else replaced)

    # -- workers -------------------------------------------------------------------------------
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
        conn = self._wconn()
        skip = list(exclude)
        params = {
            "now": now,
            "worker": worker_id,
            "seconds": float(lease_seconds),
            "limit": max(1, limit),
            "probe_limit": None if probe_limit is None else max(1, probe_limit),
        }
        # A few rounds: a candidate can lose the lease race, or its server's probe (see claim).
        for _ in range(8):
            rows = conn.execute(self._sql["claim"], params | {"exclude": skip}).fetchall()
            if not rows:
                self._flush_gc()  # idle: a good moment to drop snapshots nobody needs any more
                return None
            mailbox, token, until, recovering, probe = rows[0][:5]
            if token is not None:
                jobs = claimed_jobs(r[5:] for r in rows if r[5] is not None)
                claim = Claim(
                    mailbox=mailbox,
                    worker_id=worker_id,
                    lease_until=until,
                    jobs=jobs,
                    token=token,
                    probe=bool(probe),
                )
                if not recovering or probe:
                    return claim
                self.release(claim)  # another worker's probe of this server is out
            skip.append(mailbox)
        return None

    def renew(self, claim: Claim, *, lease_seconds: float = 60.0) -> Claim:
        # Only a lease row naming us with our token is extended: a claim raises the token
        # when it takes an expired lease and release clears the holder, so anything else
        # means someone else has (or had) the mailbox meanwhile.
        row = (
            self._wconn()
            .execute(self._sql["renew"], (lease_seconds, claim.mailbox, claim.worker_id, claim.token))
            .fetchone()
        )
        if row is None:
            raise lease_lost(claim)
        return dataclasses.replace(claim, lease_until=row[0])

    def release(self, claim: Claim, *, unsent: Sequence[Job] = ()) -> None:
        conn = self._wconn()
        params = {
            "mailbox": claim.mailbox,
            "worker": claim.worker_id,
            "token": claim.token,
            "unsent": sorted({j.id for j in unsent}),
        }
        pending = self._deferred_gc()
        if len(pending) < GC_BATCH:
            conn.execute(self._sql["release"], params | {"channel": self.channel})
            return
        hashes = set(pending)
        pending.clear()
        with conn.pipeline(), conn.transaction():
            conn.execute(self._sql["release"], params | {"channel": self.channel})
            self._collect(conn, hashes)

    def claim_urgent(
        self, claim: Claim, *, below: int, skip: Sequence[int] = (), limit: int = 100
    ) -> tuple[Job, ...]:
        params = {
            "mailbox": claim.mailbox,
            "below": below,
            "skip": sorted(set(skip)),
            "limit": max(1, limit),
        }
        # A read first: almost always there is nothing, and then no transaction is needed.
        if not self._wconn().execute(self._sql["urgent_ids"], params).fetchall():
            return ()
        with self._tx(claim) as conn:
            cur = conn.execute(self._sql["take_urgent"], params)
        return claimed_jobs(cur.fetchall())

    def urgent_waiting(
        self, *, below: int, exclude: Sequence[str] = (), limit: int = 1, now: float | None = None
    ) -> int:
        params = {"below": below, "exclude": list(exclude), "limit": max(1, limit), "now": now}
        # The worker's connection: a lane asks this, and a lane holds no other one.
        return int(_one(self._wconn().execute(self._sql["urgent_waiting"], params))[0])

    def _deferred_gc(self) -> set[str]:
        """Snapshots this thread's fenced acks may have freed. They are collected with a release
        once GC_BATCH have gathered, or when a claim finds nothing to do: one collection for
        many claims instead of one per slice."""
        pending = getattr(self._local, "gc", None)
        if pending is None:
            pending = self._local.gc = set()
        return pending

    def _flush_gc(self) -> None:
        pending = self._deferred_gc()
        if pending:
            hashes = set(pending)
            pending.clear()
            self._collect_now(hashes)

    def _collect(self, conn: psycopg.Connection, hashes: set[str] | Sequence[str]) -> None:
        """Inside a transaction: delete those of ``hashes`` no job references (see lock_payloads).
        The delete is a statement of its own, so its snapshot follows the lock; it needs no
        answer from the lock, so both can go in one pipelined round trip."""
        candidates = sorted(hashes)
        conn.execute(self._sql["lock_payloads"], (candidates,))
        conn.execute(self._sql["collect_payloads"], (candidates,))

    def _collect_now(self, hashes: set[str]) -> None:
        """Collect in a transaction of its own, after the one that freed them committed: holding
        job row locks while waiting for payload locks could deadlock with an enqueue."""
        if not hashes:
            return
        conn = self._conn()
        with conn.pipeline(), conn.transaction():
            self._collect(conn, hashes)

    @contextmanager
    def _tx(self, fence: Claim | None) -> Iterator[psycopg.Connection]:
        """A worker's write transaction, pipelined (one round trip unless a result is read
        early). With ``fence`` it starts with the lease check and raises LeaseLost, having
        written nothing, when the lease is no longer held with that token."""
        conn = self._wconn()
        try:
            with conn.pipeline(), conn.transaction():
                if fence is not None:
                    conn.execute(self._sql["fence"], (fence.mailbox, fence.worker_id, fence.token))
                yield conn
        except psycopg.Error as exc:
            if fence is not None and exc.sqlstate == FENCE_SQLSTATE:
                raise lease_lost(fence) from None
            raise

    def _complete(
        self,
        jobs: Sequence[Job],
        entries: Sequence[SyncEntry],
        removed: Sequence[tuple[str, str]],
        fence: Claim | None,
    ) -> list[tuple[int, str]]:
        """Acks, sync writes and removals in one call of {s}.complete (one round trip, one
        transaction): the jobs acked and their snapshots' hashes. Entries are written before
        removals, so a pair named in both ends up removed."""
        rows = [self._sync_row(e) for e in entries]
        cols = list(zip(*rows, strict=True)) if rows else [()] * 8
        prune = TOMBSTONE_SECONDS if any(j.op == "delete" and j.source_version for j in jobs) else None
        params = (
            fence.mailbox if fence is not None else "",
            fence.worker_id if fence is not None else "",
            fence.token if fence is not None else None,
            [j.id for j in jobs],
            [j.version for j in jobs],
            *(list(c) for c in cols),
            [m for m, _ in removed],
            [k for _, k in removed],
            prune,
        )
        try:
            return self._wconn().execute(self._sql["complete"], params).fetchall()
        except psycopg.Error as exc:
            if fence is not None and exc.sqlstate == FENCE_SQLSTATE:
                raise lease_lost(fence) from None
            raise

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
        acked = self._complete(jobs, entries, removed, fence)
        found = {row[0] for row in acked}
        hashes = {row[1] for row in acked if row[1]}
        if hashes:
            if fence is not None:
                self._deferred_gc().update(hashes)
            else:
                self._collect_now(hashes)
        return [j.id in found for j in jobs]

    def retry(self, job: Job, error: str, delay: float, *, fence: Claim | None = None) -> None:
        self.retry_many([job], error, [delay], fence=fence)

    def fail(self, job: Job, reason: str, *, fence: Claim | None = None) -> None:
        with self._tx(fence) as conn:
            conn.execute(self._sql["fail"], (reason, job.id, job.version))

    def requeue_failed(self, mailbox: str | None = None) -> int:
        conn = self._conn()
        with conn.transaction():
            count = conn.execute(self._sql["requeue_failed"], {"mailbox": mailbox}).rowcount
            if count:
                conn.execute(self._sql["notify"], (self.channel,))
        return count

    def _next_due_and_now(self) -> tuple[float | None, float]:
        due, server_now = _one(self._conn().execute(self._sql["next_due"]))
        return due, server_now

    def next_due_at(self) -> float | None:
        return self._next_due_and_now()[0]

    def wait_for_work(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        listen = self._listen_conn()
        while True:
            # Drop old notifications first, then look at the table: anything
            # committed after this look arrives as a fresh notification.
            for _ in listen.notifies(timeout=0):
                pass
            due, server_now = self._next_due_and_now()
            if due is not None and due <= server_now:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait = remaining if due is None else min(remaining, due - server_now)
            if next(listen.notifies(timeout=max(wait, 0.0), stop_after=1), None) is not None:
                return True
            # No notification: either the deadline or a due time came; the loop
            # head tells which.

    # -- sync state ----------------------------------------------------------------------------
    @staticmethod
    def _sync_row(e: SyncEntry) -> tuple[Any, ...]:
        updated = e.updated_at or None  # None: the server's clock
        return sync_params(e, updated)

    def get_sync(self, mailbox: str, record_keys: Sequence[str]) -> dict[str, SyncEntry]:
        if not record_keys:
            return {}
        rows = self._conn().execute(self._sql["get_sync"], (mailbox, list(record_keys)))
        return {r[1]: SyncEntry(*r) for r in rows}

    def put_sync(self, entry: SyncEntry, *, fence: Claim | None = None) -> None:
        self.put_sync_many([entry], fence=fence)

    def put_sync_many(self, entries: Sequence[SyncEntry], *, fence: Claim | None = None) -> None:
        if not entries and fence is None:
            return
        self._complete((), entries, (), fence)

    def delete_sync(self, mailbox: str, record_key: str, *, fence: Claim | None = None) -> None:
        self._complete((), (), [(mailbox, record_key)], fence)

    def sync_keys(self, mailbox: str, prefix: str = "") -> list[str]:
        rows = self._conn().execute(self._sql["sync_keys"], (mailbox, len(prefix), prefix))
        return [r[0] for r in rows]

    def holders(self, record_key: str) -> list[str]:
        escaped = record_key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params = {"key": record_key, "sub": escaped + "#%"}
        return [r[0] for r in self._conn().execute(self._sql["holders"], params)]

    # -- mailboxes ---------------------------------------------------------------------------------
    def park(self, mailbox: str, reason: str) -> None:
        self._conn().execute(self._sql["park"], (mailbox, reason))

    def unpark(self, mailbox: str) -> None:
        # Unparking follows a fix (new credentials), so the mailbox's waiting jobs
        # are made due now instead of sitting out a back-off chosen for the old fault.
        conn = self._conn()
        with conn.transaction():
            conn.execute(self._sql["unpark"], (mailbox,))
            conn.execute(self._sql["unpark_jobs"], (mailbox,))
            conn.execute(self._sql["notify"], (self.channel,))

    def record_success(self, mailbox: str, *, fence: Claim | None = None) -> None:
        with self._tx(fence) as conn:
            conn.execute(self._sql["record_success"], (mailbox,))

    def record_error(self, mailbox: str, error: str, *, fence: Claim | None = None) -> None:
        with self._tx(fence) as conn:
            conn.execute(self._sql["record_error"], (mailbox, error))

    def mailbox_states(self) -> list[MailboxState]:
        return [mailbox_state(r) for r in self._conn().execute(self._sql["mailbox_states"])]

    # -- inspection --------------------------------------------------------------------------------
    def pending_count(self, mailbox: str | None = None) -> int:
        return int(_one(self._conn().execute(self._sql["pending_count"], {"mailbox": mailbox}))[0])

    def jobs(self, mailbox: str | None = None, status: str | None = None) -> list[Job]:
        rows = self._conn().execute(self._sql["jobs"], {"mailbox": mailbox, "status": status})
        return [job_from_row(r) for r in rows]

    # -- what host-less workers read, and the per-server request slots -------------------------
    # The state table is created on first use rather than in _SCHEMA, so the job tables'
    # schema stays as it is; request slots are advisory locks and need no table.
    def _ensure_shared(self) -> None:
        if getattr(self, "_shared_ready", False):
            return
        conn = self._conn()
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tsl_exchange_outbox:{self.schema}",)
            )
            conn.execute(sql.SQL(_SHARED_SCHEMA).format(s=sql.Identifier(self.schema)))
        self._shared_ready = True

    def _shared_sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(self.schema))

    def put_worker_rows(self, rows: Mapping[str, str | None]) -> int:
        """Write (or, for None, delete) rows of the shared worker state in ONE transaction.
        A row whose value is unchanged is not rewritten. Returns how many rows changed."""
        if not rows:
            return 0
        self._ensure_shared()
        changed = 0
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            for key in sorted(rows):  # key order: two publishers never deadlock
                value = rows[key]
                if value is None:
                    cur.execute(self._shared_sql("DELETE FROM {s}.worker_state WHERE key = %s"), (key,))
                else:
                    cur.execute(self._shared_sql(_PUT_WORKER_ROW), (key, value))
                changed += max(0, cur.rowcount)
            if changed:
                # A released hold (or a mailbox's new account) is work for idle worker processes.
                cur.execute(self._sql["notify"], (self.channel,))
        return changed

    def worker_rows(self, prefix: str = "") -> dict[str, str]:
        """Rows of the shared worker state whose key starts with ``prefix``."""
        self._ensure_shared()
        rows = self._conn().execute(
            self._shared_sql("SELECT key, value FROM {s}.worker_state WHERE left(key, %s) = %s"),
            (len(prefix), prefix),
        )
        return {k: v for k, v in rows}

    def worker_row(self, key: str) -> str | None:
        self._ensure_shared()
        row = (
            self._conn()
            .execute(self._shared_sql("SELECT value FROM {s}.worker_state WHERE key = %s"), (key,))
            .fetchone()
        )
        return row[0] if row else None

    def acquire_server_slot(
        self, server: str, limit: int, holder: str, *, lease_seconds: float = 120.0, now: float | None = None
    ) -> int | None:
        """Take one of ``limit`` request slots of ``server``; None when all are taken.

        A slot is a session-level advisory lock (namespace: schema and server, number: the
        slot) on this thread's connection. It dies with the session, so a killed process
        frees its slots at once; ``holder`` and ``lease_seconds`` are for the SQLite store.
        The scan stops at the first lock it gets (LIMIT 1 over a lazily filtered series).
        Advisory locks stack within a session, so a thread must hold at most one slot at a
        time (``ServerLimit`` is never entered twice by one thread)."""
        row = (
            self._conn()
            .execute(
                "SELECT s FROM generate_series(0, %s - 1) AS s "
                "WHERE pg_try_advisory_lock(hashtext(%s), s) LIMIT 1",
                (limit, self._slot_space(server)),
            )
            .fetchone()
        )
        return int(row[0]) if row else None

    def release_server_slot(self, server: str, slot: int, holder: str) -> None:
        # On the connection that took it; if that one broke meanwhile, its session (and
        # with it the lock) is gone already.
        self._conn().execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", (self._slot_space(server), slot))

    def _slot_space(self, server: str) -> str:
        return f"tsl_exchange_slots:{self.schema}:{server}"

    # -- fencing, order, bulk retries ----------------------------------------------------------
    def check_lease(self, claim: Claim) -> bool:
        row = (
            self._wconn()
            .execute(self._sql["check_lease"], (claim.mailbox, claim.worker_id, claim.token))
            .fetchone()
        )
        return row is not None

    def note_verify(self, mailbox: str, record_keys: Sequence[str]) -> None:
        if not record_keys:
            return
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(self._sql["note_verify"], [(mailbox, k) for k in sorted(set(record_keys))])
            cur.execute(self._sql["know_mailbox"], (mailbox,))
            cur.execute(self._sql["notify"], (self.channel,))

    def retry_many(
        self, jobs: Sequence[Job], error: str, delays: Sequence[float], *, fence: Claim | None = None
    ) -> None:
        if len(jobs) != len(delays):
            raise ValueError("retry_many needs one delay per job")
        with self._tx(fence) as conn:
            if jobs:
                conn.execute(
                    self._sql["retry_many"],
                    (
                        error,
                        [j.id for j in jobs],
                        [j.version for j in jobs],
                        [max(0.0, float(d)) for d in delays],
                    ),
                )

    def superseded_count(self, mailbox: str | None = None) -> int:
        return int(_one(self._conn().execute(self._sql["superseded"], {"mailbox": mailbox}))[0])

    # -- pauses of mailboxes and servers ---------------------------------------------------------
    def note_server(self, mailbox: str, server: str) -> None:
        self._conn().execute(self._sql["note_server"], (mailbox, server))

    def pause_mailbox(self, mailbox: str, seconds: float) -> float:
        row = _one(self._conn().execute(self._sql["pause_mailbox"], (mailbox, max(0.0, seconds))))
        return float(row[0])

    def server_failed(self, server: str, delay_for: Callable[[int], float]) -> ServerPause:
        conn = self._conn()
        with conn.transaction():
            conn.execute(self._sql["know_server"], (server,))
            failures, paused_until, now = _one(conn.execute(self._sql["lock_server"], (server,)))
            if paused_until > now:
                # A request that was already out when the pause began: the same step, not a new one.
                return ServerPause(server, failures, paused_until, counted=False)
            failures += 1
            paused_until = now + max(0.0, delay_for(failures))
            conn.execute(self._sql["pause_server"], (failures, paused_until, server))
        return ServerPause(server, failures, paused_until, counted=True)

    def server_ok(self, server: str) -> None:
        conn = self._conn()
        with conn.transaction():
            if conn.execute(self._sql["server_ok"], (server,)).rowcount:
                conn.execute(self._sql["notify"], (self.channel,))

    def end_probe(self, server: str, worker_id: str) -> None:
        conn = self._conn()
        with conn.transaction():
            if conn.execute(self._sql["end_probe"], (server, worker_id)).rowcount:
                conn.execute(self._sql["notify"], (self.channel,))

    def server_pauses(self) -> list[ServerPause]:
        return [ServerPause(*r) for r in self._conn().execute(self._sql["server_pauses"])]

    def mailbox_pauses(self) -> dict[str, float]:
        return {r[0]: r[1] for r in self._conn().execute(self._sql["mailbox_pauses"])}

    # -- connections: the pool --------------------------------------------------------------------
    def _open_pool(self, size: int, connect_timeout: int) -> ConnectionPool:
        if size < 1:
            raise ValueError("pool_size muss mindestens 1 sein")
        # One plain connection first: an unreachable server or a wrong password fails here at
        # once with the driver's own message, not after the pool's timeout.
        psycopg.connect(self._url, autocommit=True, **self._connect_kwargs).close()
        return ConnectionPool(
            self._url,
            kwargs={"autocommit": True, **self._connect_kwargs},
            min_size=0,  # an idle process holds no connection it does not use
            max_size=size,
            timeout=float(connect_timeout),
            name=f"tsl-exchange-{self.schema}",
            reset=_reset_session,
            open=True,
        )

    def _give_back(self, conn: psycopg.Connection) -> None:
        if id(conn) in self._dedicated:
            self._dedicated.discard(id(conn))
            conn.close()
            return
        self._pool.putconn(conn)  # the pool rolls back, checks and keeps or ends it

    def close(self) -> None:
        super().close()
        self._pool.close()


_SHARED_SCHEMA = """CREATE TABLE IF NOT EXISTS {s}.worker_state (
    key text PRIMARY KEY,
    value text NOT NULL,
    updated_at double precision NOT NULL
)"""
_PUT_WORKER_ROW = f"""
    INSERT INTO {{s}}.worker_state AS w (key, value, updated_at) VALUES (%s, %s, {_NOW})
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at
    WHERE w.value <> EXCLUDED.value
"""


def _reset_session(conn: psycopg.Connection) -> None:
    """A connection back in the pool (its thread ended) keeps nothing of that thread's session:
    neither request slots (session-level advisory locks) nor settings such as the worker
    connection's synchronous_commit=off, which must never reach a host's enqueue."""
    conn.execute("RESET ALL")
    conn.execute("SELECT pg_advisory_unlock_all()")
