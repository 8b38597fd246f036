"""Two claimers of one recovering server at once (PostgreSQL): only one becomes its probe.

The loser's pick saw the server's probe free, but by the time it asks for the probe another
claimer has taken it. The loser must leave no trace: no lease kept on the mailbox and no
hand-out counted on its jobs (a counted hand-out makes the next holder look every such job
up in the mailbox first, as if it might have been written).
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.testing import wait_for

pytestmark = pytest.mark.postgres

SERVER = "mail.kanzlei.de:443"


def test_a_claim_that_loses_the_probe_leaves_no_lease_and_no_hand_out(pg_url, pg_schema):
    store = PostgresOutbox(pg_url, schema=pg_schema)
    try:
        store.enqueue([Change("anna", f"contact:{i}", "upsert", "{}") for i in range(3)])
        store.note_server("anna", SERVER)
        step = store.server_failed(SERVER, lambda failures: 5.0)
        later = step.paused_until + 1
        with psycopg.connect(pg_url) as rival:  # another process's claim, taking the probe right now
            rival.execute(
                psycopg.sql.SQL(
                    "UPDATE {}.servers SET probe_worker = 'w2', probe_until = %s WHERE server = %s"
                ).format(psycopg.sql.Identifier(pg_schema)),
                (later + 60, SERVER),
            )
            claimed: list = []
            claimer = threading.Thread(target=lambda: claimed.append(store.claim("w1", now=later)))
            claimer.start()

            def claim_waits_for_the_rival() -> bool:
                query = (
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
                )
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    return admin.execute(query, (f"%{pg_schema}%servers%",)).fetchone()[0] > 0

            wait_for(claim_waits_for_the_rival, timeout=30, what="the claim to wait for the rival's probe")
            rival.commit()
        claimer.join(30)
        assert claimed == [None]
        assert [job.claims for job in store.jobs()] == [0, 0, 0]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            holder = admin.execute(
                psycopg.sql.SQL("SELECT worker_id, lease_until FROM {}.leases WHERE mailbox = 'anna'").format(
                    psycopg.sql.Identifier(pg_schema)
                )
            ).fetchone()
        assert holder is None or holder == ("", 0)
    finally:
        store.close()
