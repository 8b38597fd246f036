"""Back-off belongs to the mailbox and the server, not to a job; judged from the server's side.

Real worker threads push through the unmodified exchangelib to the EWS sandbox, and through
httpx and msal to the Graph sandbox (``graph``); the sandbox's request log says what arrived
when. Each scenario runs against both backends: the worker decides alike for both. No assertion
is about how long anything took: only counts, and the order of arrivals against the pauses the
worker recorded.

* Outage: every request answers 503 without a hint. The whole server rests, longer with
  each failure; after the first failure, at most one request (the probe) per step reaches
  it. The jobs keep their attempts, and once the server is back one probe goes first, then
  everything, exactly once. (Graph: graph.microsoft.com is one server for every mailbox.)
* Throttling: 30 % of the requests answer busy (EWS: ErrorServerBusy with BackOffMilliseconds;
  Graph: HTTP 429 with Retry-After, to the whole $batch or, ``graph-inner``, to one request
  inside it). No request to that mailbox starts before the back-off has passed: with one
  worker, and with two workers on one PostgreSQL queue that learn of each other's pauses only
  through it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from tsl_exchange_plugin import signals
from tsl_exchange_plugin.backends.base import MailboxAccount
from tsl_exchange_plugin.backends.ews.backend import EwsBackend
from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.outbox.snapshot import Snapshot, dump
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.sandbox.graph.testing import graph_account, graph_sandbox  # noqa: F401 - fixture
from tsl_exchange_plugin.sandbox.server import SandboxServer
from tsl_exchange_plugin.sandbox.testing import SANDBOX_BUILD, SANDBOX_PASSWORDS
from tsl_exchange_plugin.testing import wait_for
from tsl_exchange_plugin.worker.dispatch import make_mapper
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig
from tsl_hostapi.types import Contact

MAILBOXES = {email.split("@")[0]: email for email in SANDBOX_PASSWORDS}  # host user id -> address
PG_URL = os.environ.get("TSL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Arrival:
    """One request as the sandbox logged it, the same for both backends."""

    started: float
    finished: float
    mailbox: str  # the address, lower case; "" if the request named none
    status: int
    busy: bool  # the answer asked this mailbox to back off (wholly or for a request inside it)
    back_off: float | None
    outage: bool  # refused by the injected outage


@dataclass
class Side:
    """A backend and its sandbox: how the test makes faults and reads the request log."""

    name: str
    backend: Callable[[], Any]
    resolve: Callable[[str], MailboxAccount]
    outage: Callable[[], Any]  # arms 503 without a hint for every request; returns the fault
    busy: Callable[[float], Any]  # arms a busy answer with this probability; returns the fault
    arrivals: Callable[[], list[Arrival]]
    busy_back_off: float  # what the busy answers ask for


def _ews_side(server: SandboxServer) -> Side:
    def resolve(mailbox: str) -> MailboxAccount:
        email = MAILBOXES[mailbox]
        return MailboxAccount(mailbox, email, server.url, email, SANDBOX_PASSWORDS[email], auth_type="basic")

    def arrivals() -> list[Arrival]:
        return sorted(
            (
                Arrival(
                    r.started,
                    r.finished,
                    r.mailbox,
                    r.status,
                    r.response == "ErrorServerBusy",
                    r.back_off,
                    "http_status" in r.faults,
                )
                for r in server.requests()
                if r.mailbox
            ),
            key=lambda a: a.started,
        )

    return Side(
        "ews",
        lambda: EwsBackend(version=SANDBOX_BUILD),
        resolve,
        lambda: server.inject("http_status", status=503, count=None),  # no Retry-After: no hint
        lambda p: server.inject("server_busy", probability=p, count=None, back_off_ms=300),
        arrivals,
        0.3,
    )


def _graph_side(gs: Any, *, inner: bool) -> Side:
    from tsl_exchange_plugin.backends.graph.backend import GraphBackend

    def resolve(mailbox: str) -> MailboxAccount:
        return graph_account(gs, MAILBOXES[mailbox], mailbox=mailbox)

    def arrivals() -> list[Arrival]:
        return sorted(
            (
                Arrival(
                    r.started,
                    r.finished,
                    r.mailbox,
                    r.status,
                    r.status == 429 or r.throttled > 0,
                    r.back_off,
                    "status" in r.faults and r.status == 503,
                )
                for r in gs.log()
                if r.mailbox and r.finished
            ),
            key=lambda a: a.started,
        )

    return Side(
        "graph-inner" if inner else "graph",
        GraphBackend,
        resolve,
        lambda: gs.inject("status", status=503, count=None),
        # Inside a batch only the creates meet it: a look-up of n keys is n requests in one
        # batch, and one refused among them would hold every retried slice back for long.
        lambda p: gs.inject(
            "status",
            status=429,
            retry_after=1,
            probability=p,
            count=None,
            inner=inner,
            method="POST" if inner else None,
        ),
        arrivals,
        1.0,
    )


@dataclass
class Rig:
    side: Side
    server: SandboxServer
    store: SQLiteOutbox | PostgresOutbox
    worker: Worker
    others: list[Worker] = field(default_factory=list)  # more workers, each with its own store handle
    steps: list[tuple[float, float]] = field(default_factory=list)  # (recorded at, paused until)
    failed_pushes: list[dict] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def enqueue(self, per_mailbox: int) -> None:
        changes = []
        for i in range(per_mailbox):
            snap = Snapshot(
                kind="contact", record=Contact(id=str(i), given_name="Eva", surname=f"Müller {i}")
            )
            changes += [Change(mailbox, f"contact:{i}", "upsert", dump(snap)) for mailbox in MAILBOXES]
        self.store.enqueue(changes)

    def assert_delivered_once(self, per_mailbox: int) -> None:
        for email in MAILBOXES.values():
            keys = Counter(
                (item.get("extended_properties") or {}).get("tslRecordId")
                for item in self.server.engine.list_items(email, "contacts")
            )
            assert keys == Counter({f"contact:{i}": 1 for i in range(per_mailbox)}), email


@pytest.fixture
def side(request, sandbox) -> Side:
    """The backend under test, by the test's parameter (the EWS sandbox's store holds the
    mailboxes of both)."""
    if request.param == "ews":
        return _ews_side(sandbox)
    return _graph_side(request.getfixturevalue("graph_sandbox"), inner=request.param == "graph-inner")


@pytest.fixture
def make_rig(tmp_path, sandbox, side) -> Iterator:
    rigs: list[Rig] = []
    receivers = []
    stores: list = []
    schemas: list[str] = []

    def open_store(postgres: bool):
        if not postgres:
            store = SQLiteOutbox(tmp_path / "outbox.sqlite3")
        else:
            if not schemas:
                schemas.append(f"t_backoff_{uuid.uuid4().hex[:12]}")
            store = PostgresOutbox(PG_URL, schema=schemas[0])
        stores.append(store)
        return store

    def make(config: WorkerConfig, *, workers: int = 1, postgres: bool = False) -> Rig:
        # Each worker has its own store handle and backend, as a worker process of its own would.
        made = [
            Worker(open_store(postgres), side.backend(), side.resolve, make_mapper(), config)
            for _ in range(workers)
        ]
        worker = made[0]
        rig = Rig(side, sandbox, worker.outbox, worker, made[1:])

        def on_server(sender, **extra):
            if sender is worker and extra["status"] == "paused":
                with rig.changed:
                    rig.steps.append((time.time(), extra["until"]))
                    rig.changed.notify_all()

        def on_failed(sender, **extra):
            if sender in made:
                rig.failed_pushes.append(extra)

        signals.server_status_changed.connect(on_server)
        signals.push_failed.connect(on_failed)
        receivers.extend([(signals.server_status_changed, on_server), (signals.push_failed, on_failed)])
        rigs.append(rig)
        return rig

    yield make
    for signal, receiver in receivers:
        signal.disconnect(receiver)
    for rig in rigs:
        for worker in (rig.worker, *rig.others):
            worker.stop()
            close = getattr(worker.backend, "close", None)
            if close is not None:
                close()
    for store in stores:
        store.close()
    for schema in schemas:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema))
            )


@pytest.mark.parametrize("side", ["ews", "graph"], indirect=True)
def test_outage_pauses_the_server_one_probe_per_step_then_everything_once(make_rig):
    per_mailbox = 20
    config = WorkerConfig(
        threads=3, batch_size=10, lanes=2, server_back_off=0.5, server_max_back_off=1.0, probe_size=5
    )
    rig = make_rig(config)
    outage = rig.side.outage()
    rig.enqueue(per_mailbox)
    rig.worker.start()
    with rig.changed:
        assert rig.changed.wait_for(lambda: len(rig.steps) >= 4, timeout=60), rig.steps
        # The server comes back; jobs waited for it without an attempt of their own.
        outage.count = 0
        steps = list(rig.steps)
    jobs = rig.store.jobs()
    assert len(jobs) == per_mailbox * len(MAILBOXES)
    assert all(j.status == "pending" and j.attempts == 0 for j in jobs), jobs[0]
    assert rig.failed_pushes and all(f["paused"] and not f["permanent"] for f in rig.failed_pushes)
    wait_for(lambda: rig.store.pending_count() == 0, timeout=60, what="the queue drained after the outage")
    rig.worker.stop()

    log = rig.side.arrivals()
    refused = [r for r in log if r.outage]
    assert refused and all(r.status == 503 for r in refused)
    # Steps 2, 3, ...: each began with one probe that arrived after the previous pause had ended;
    # nothing arrived while a pause ran. (Into the first pause, requests that were already on
    # their way when the first 503 came back may still arrive: at most one per worker thread.)
    for (recorded, until), (next_recorded, _) in zip(steps, steps[1:], strict=False):
        inside = [r for r in log if recorded < r.started < until]
        between = [r for r in log if until <= r.started <= next_recorded]
        if recorded != steps[0][0]:
            assert inside == [], (recorded, until, inside)
        assert len(between) == 1 and between[0].status == 503, between
    assert len(refused) <= config.threads + len(steps)
    # The return: the first answered request went alone (the probe); only after its answer did
    # the rest follow, and everything arrived exactly once.
    answered = [r for r in log if r.started > refused[-1].started]
    probe, *rest = answered
    assert probe.status == 200 and all(r.started >= probe.finished for r in rest)
    rig.assert_delivered_once(per_mailbox)
    assert [s for s in rig.store.server_pauses() if s.failures] == []


@pytest.mark.parametrize(
    "workers,postgres",
    [(1, False), pytest.param(2, True, marks=pytest.mark.postgres)],
    ids=["one-worker-sqlite", "two-workers-postgres"],
)
@pytest.mark.parametrize("side", ["ews", "graph", "graph-inner"], indirect=True)
def test_busy_mailbox_gets_no_request_inside_its_back_off(make_rig, side, workers, postgres):
    # Two workers (each with its own store handle and pause board, as two processes) learn of
    # each other's pauses only through the store.
    per_mailbox = 60  # six slices a mailbox: enough requests that several meet a busy answer
    rig = make_rig(WorkerConfig(threads=2, batch_size=10, lanes=2), workers=workers, postgres=postgres)
    busy = side.busy(0.3)
    rig.enqueue(per_mailbox)
    for worker in (rig.worker, *rig.others):
        worker.start()
    wait_for(lambda: rig.store.pending_count() == 0, timeout=90, what="the queue drained under throttling")
    for worker in (rig.worker, *rig.others):
        worker.stop()
    busy.count = 0

    log = side.arrivals()
    answers = [r for r in log if r.busy]
    assert len(answers) >= 5 and all(r.back_off == side.busy_back_off for r in answers)
    for b in answers:
        early = [r for r in log if r.mailbox == b.mailbox and b.started < r.started < b.finished + b.back_off]
        assert early == [], (b, early)
    rig.assert_delivered_once(per_mailbox)
    # The busy answers were the mailbox's, not the jobs': every failed push waited for a pause.
    assert rig.failed_pushes and all(f["paused"] and not f["permanent"] for f in rig.failed_pushes)
