"""A claim that meets a job an enqueue is rewriting with a new snapshot (PostgreSQL).

The claim waits for the enqueue's row lock and then sees the rewritten job row, but its
statement's snapshot predates the enqueue's commit, so the new snapshot row is not visible
to it. Handing the job out then would give the worker an upsert without its snapshot (a
job failed as unreadable: a lost change). The job must come out whole, or stay pending.
"""

from __future__ import annotations

import json
import threading

import psycopg
import pytest

from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.rows import payload_hash
from tsl_exchange_plugin.testing import wait_for

pytestmark = pytest.mark.postgres


def test_a_job_rewritten_during_a_claim_never_comes_out_without_its_snapshot(pg_url, pg_schema):
    store = PostgresOutbox(pg_url, schema=pg_schema)
    try:
        old = json.dumps({"key": "contact:1", "notes": "alt"})
        new = json.dumps({"key": "contact:1", "notes": "neu"})
        store.enqueue([Change("anna", "contact:1", "upsert", old, 1)])
        sql = store._sql
        with psycopg.connect(pg_url) as writer:  # another process's enqueue, held open
            writer.execute(sql["put_payloads"], ([payload_hash(new)], [new]))
            row = {"mailbox": ["anna"], "key": ["contact:1"], "op": ["upsert"], "hash": [payload_hash(new)]}
            writer.execute(sql["enqueue"], row | {"version": [2], "priority": [0]})
            claimed: list = []
            claimer = threading.Thread(target=lambda: claimed.append(store.claim("w1", lease_seconds=30)))
            claimer.start()

            def claim_waits_for_the_enqueue() -> bool:
                query = (
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE %s AND query LIKE %s"
                )
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    found = admin.execute(query, ("%WITH pick AS%", f"%{pg_schema}%")).fetchone()[0]
                    return found > 0

            wait_for(claim_waits_for_the_enqueue, timeout=30, what="the claim to wait for the enqueue")
            writer.commit()
        claimer.join(30)
        (claim,) = claimed
        assert claim is not None
        for job in claim.jobs:
            assert job.payload == new, "a job was handed out without its snapshot"
        store.release(claim)
        again = store.claim("w1", lease_seconds=30)
        if not claim.jobs:  # left for the next claim: it comes out whole then
            assert again is not None and [j.payload for j in again.jobs] == [new]
    finally:
        store.close()
