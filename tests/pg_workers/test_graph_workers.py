"""Microsoft 365 mailboxes pushed by worker processes on one PostgreSQL queue: Exchange Online's
limit of 4 concurrent requests per mailbox holds for all of them together.

Each worker process keeps its own requests to a mailbox one at a time (its guard) and the claim
gives a mailbox to one worker at a time; the host's reconcile sweep, though, reads the same
mailboxes from another process meanwhile. A ``$batch`` counts as up to 4 requests at Exchange
Online, so two processes with one batch each would already be too many: every request also holds
the mailbox's slot in the queue's store. The Graph sandbox counts the requests in flight per
mailbox and refuses (429) what goes over the limit.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.core.firm import FIRM_KEY
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.plugin import runtime_for
from tsl_exchange_plugin.sandbox.graph.testing import graph_sandbox  # noqa: F401 - fixture
from tsl_exchange_plugin.testing import make_kanzlei, wait_for
from tsl_hostapi.reference.sample_firm import generate_firm

from .conftest import Workers
from .test_external_workers import listeners, subscribe

pytestmark = pytest.mark.postgres


@pytest.fixture
def graph_firm(pg_queue_url, pg_schema_name, tmp_path, sandbox, graph_sandbox, licence_key) -> Iterator:  # noqa: F811
    """The firm with its three lawyers on Microsoft 365, its queue on PostgreSQL, worker mode
    "external" (only worker processes push) and 100 contacts to subscribe."""
    k = make_kanzlei(tmp_path, sandbox, graph_sandbox, licence_key, backend="graph")
    try:
        assert isinstance(k.runtime.outbox, PostgresOutbox) and k.runtime.outbox.schema == pg_schema_name
        firm = k.host.settings.get(PLUGIN_ID, FIRM_KEY, {}) or {}
        k.host.settings.set(PLUGIN_ID, FIRM_KEY, {**firm, "worker": "external"})
        k.host.disable(PLUGIN_ID)
        assert k.host.enable(PLUGIN_ID).allowed
        assert runtime_for(k.host) is not None and not k.runtime.worker.running
        k.host.save_many(generate_firm(seed=7, contacts=100).contacts)
        k.contacts = list(k.host.iter_records("contact"))
        yield k
    finally:
        k.host.close()


def test_worker_processes_and_the_hosts_sweep_never_exceed_four_requests_per_mailbox(graph_firm, tmp_path):
    k = graph_firm
    graph = k.graph
    graph.delay = 0.02  # every request takes a while, so that requests from different processes meet
    pool = Workers(Path(k.host.root), tmp_path)
    try:
        pool.start(threads=2, lease=5)
        pool.start(threads=2, lease=5)
        wait_for(lambda: listeners(k) == 2, timeout=30, what="both workers to listen")
        ids = [u.id for u in k.lawyers]
        subscribe(k, k.contacts, k.lawyers)
        # Meanwhile the host compares the same mailboxes (a manual "Postfächer jetzt abgleichen").
        sweeps: list = []
        stop = threading.Event()

        def sweep_while_pushing() -> None:
            while not stop.is_set():
                sweeps.extend(k.runtime.reconciler.sweep(ids, dry_run=True))

        sweeper = threading.Thread(target=sweep_while_pushing)
        sweeper.start()
        try:
            wait_for(lambda: k.runtime.outbox.pending_count() == 0, timeout=120, what="the queue to drain")
        finally:
            stop.set()
            sweeper.join(60)
        for proc in pool.procs:
            assert proc.poll() is None, pool.output(proc)
    finally:
        pool.kill_all()

    assert graph.concurrency_refusals == {}, "more than 4 requests at once for a mailbox"
    assert max(graph.peak_in_flight.values()) <= 4
    assert sweeps and all(r.outcome == "done" for r in sweeps), [
        r.message for r in sweeps if r.outcome != "done"
    ]
    for user in k.lawyers:
        found = Counter((i.get("extended_properties") or {}).get("tslRecordId") for i in k.items(user))
        assert all(found[c.ref.key] == 1 for c in k.contacts), user.id
    assert k.runtime.outbox.jobs(status="failed") == []
