"""The proof for several hosts and worker processes on one PostgreSQL queue: nothing lost,
nothing twice, every item in its last version.

Two instances of one installation of the reference host and three ``tsl-exchange worker
--queue URL --key-file F`` processes (no host, no data directory: only the queue URL and a
copy of the host's key) share one PostgreSQL queue and one EWS sandbox (a thread of the test
process, inspected through its engine). Both hosts change contacts and appointments at the
same time (creations, edits, deletions, Exchange-Sync setzen/entfernen from the menu, the
contact's Sync tab, appointments' participants), and both keep editing the same few "hot"
records, so one record changes in quick succession from two processes. While they do, a
random worker process is SIGKILLed at random points of the hosts' progress and a new one
started in its place. When both hosts are done, the test waits for the queue to be empty and
every lease to be free, then compares each mailbox item by item with the hosts' last version
(``test_host_kill.compare``: every subscribed contact and every appointment a user takes part
in is there once, with the last edit's unique mark, and nothing else of ours is).

How two instances share records: a reference host keeps records, revisions and settings
(subscriptions, accounts) in one SQLite file in its data directory. Both instances are
processes opened on the SAME data directory, as two application servers of one firm would
open the firm's database: every save commits with ``BEGIN IMMEDIATE`` in WAL mode (SQLite
serialises the two processes' writes, ``busy_timeout`` waits), and the record's revision is
raised in the same transaction, so ``RecordEvent.version`` stays strictly increasing per
record across both instances. What each instance has to itself is only in memory. They share
the plugin's data directory too: subscription changes of both take turns through its lock
file; the first instance's running marker makes the second queue the host's view once at its
start (harmless: the changes begin only when both are idle); the journal is only touched by
subscription intents (no queue outage here). The hosts are never killed here
(``test_host_kill`` does that for one host); the workers are.

CI runs a bounded variant. The full run (5,000 changes over 20 mailboxes, 30 kills) is one
command:

    TSL_MULTI_HOST_FULL=1 .venv/bin/python -m pytest -q tests/pg_workers/test_multi_host_kill.py -m slow -s
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.credentials import KEY_FILE_NAME
from tsl_exchange_plugin.outbox.factory import open_outbox
from tsl_exchange_plugin.testing import wait_for
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.types import User

from ..integration.test_host_kill import compare
from .test_hostless_workers import HostlessWorkers

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("TSL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHILD = Path(__file__).with_name("host_instance.py")
FULL_ENV = "TSL_MULTI_HOST_FULL"
SEED_ENV = "TSL_MULTI_HOST_SEED"
SET_SYNC = f"{PLUGIN_ID}.set_sync"


@dataclass
class ProofRun:
    changes: int = 0
    kills: list[str] = field(default_factory=list)  # "pid@step" per kill
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def add_lawyers(k, mailboxes: int, licence_key) -> None:
    """Give the firm ``mailboxes`` lawyers with an Exchange account on the sandbox (on a
    licence with enough seats)."""
    k.host.install_licence(PLUGIN_ID, licence_key(seats=mailboxes))
    k.runtime.admin.licensing.invalidate()
    for n in range(len(k.lawyers), mailboxes):
        email = f"anwalt{n}@kanzlei.test"
        password = f"Anwalt-Sandbox-{n}!"
        user = k.host.save_user(User(id=f"mh-u{n}", name=f"Anwalt {n}", email=email, role="Rechtsanwalt"))
        k.server.add_mailbox(email, password)
        k.mailbox_of[user.id] = email
        k.configure(user, password=password)
        k.lawyers.append(user)


def subscribe_some(k, rng: random.Random, per_user: int) -> None:
    """A starting point: each lawyer subscribed to a few contacts (through the menu action)."""
    contacts = k.host.iter_records("contact")
    for user in k.lawyers:
        chosen = rng.sample(contacts, min(per_user, len(contacts)))
        result = k.host.press(k.admin, SET_SYNC, [c.ref for c in chosen], {"users": [user.id]})
        assert result.ok, result


class HostInstance:
    """One ``host_instance.py`` process; its stdout lines are read by a thread into ``lines``."""

    def __init__(self, root: Path, tag: str, users: list[str], seed: int, steps: int, log: Path) -> None:
        self.tag = tag
        self.log = log
        command = [sys.executable, str(CHILD), "--data", str(root), "--tag", tag]
        command += ["--users", ",".join(users), "--seed", str(seed), "--stop", str(steps)]
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.steps_done = 0
        self.finished = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.strip())
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        line = self.lines.get(timeout=timeout)
        if line is None:
            self.finished = True
        elif line.startswith("step "):
            self.steps_done += 1
        return line

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def failure(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def live_leases(schema: str) -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        query = f"SELECT count(*) FROM \"{schema}\".leases WHERE worker_id <> '' AND lease_until > extract(epoch from now())"
        return int(conn.execute(query).fetchone()[0])


def prove(
    k,
    queue_url: str,
    schema: str,
    tmp_path: Path,
    licence_key,
    *,
    changes: int,
    mailboxes: int,
    kills: int,
    seed: int,
    workers: int = 3,
) -> ProofRun:
    rng = random.Random(seed)
    add_lawyers(k, mailboxes, licence_key)
    subscribe_some(k, rng, per_user=max(3, changes // (4 * mailboxes)))
    root = Path(k.host.root)
    host_key = Path(k.runtime.data_dir) / KEY_FILE_NAME
    users = [u.id for u in k.lawyers]
    k.host.close()  # the two host processes are the installation from here on
    outbox = open_outbox(queue_url, str(tmp_path))
    pool = HostlessWorkers(queue_url, tmp_path / "worker-machine", host_key)
    run = ProofRun()
    started = time.monotonic()
    try:
        live = [pool.start("--lease", "3", threads=2) for _ in range(workers)]
        hosts = []
        share = changes // 2
        for n, steps in enumerate((share, changes - share)):
            host = HostInstance(root, f"h{n}-", users, seed, steps, tmp_path / f"host-{n}.log")
            # One after the other: the second queues the host's view at its start (it finds the
            # first one's running marker); both are idle before any change begins.
            assert host.next_line(180) == "started", host.failure()
            hosts.append(host)
        kill_at = sorted(rng.sample(range(1, changes), kills))
        for host in hosts:
            host.go()
        while not all(h.finished for h in hosts):
            for host in hosts:
                while not host.finished:
                    try:
                        host.next_line(0.05)
                    except queue.Empty:
                        break
            done = sum(h.steps_done for h in hosts)
            while kill_at and done >= kill_at[0]:
                kill_at.pop(0)
                victim = rng.choice(live)
                victim.send_signal(signal.SIGKILL)
                assert victim.wait(30) == -signal.SIGKILL, pool.output(victim)
                run.kills.append(f"{victim.pid}@{done}")
                live[live.index(victim)] = pool.start("--lease", "3", threads=2)
        for host in hosts:
            assert host.proc.wait(60) == 0, host.failure()
        run.changes = sum(h.steps_done for h in hosts)
        wait_for(
            lambda: outbox.pending_count() == 0 and live_leases(schema) == 0,
            timeout=max(120, changes / 5),
            step=0.2,
            what="the queue to drain and every worker to be idle",
        )
        run.seconds = time.monotonic() - started
        failed = outbox.jobs(status="failed")
        assert failed == [], [(j.mailbox, j.record_key, j.claims, j.last_error) for j in failed[:5]]
        for proc in live:
            assert proc.poll() is None, pool.output(proc)
        k.host = ReferenceHost(root)  # read-only here: not started, no plugin runs in it
        run.lost, run.duplicated, run.problems = compare(k)
    finally:
        pool.kill_all()
        outbox.close()
    return run


def report(run: ProofRun) -> None:
    print(
        f"{run.changes} changes, {len(run.kills)} worker kills: {run.lost} lost, "
        f"{run.duplicated} duplicated, {len(run.problems)} differences, {run.seconds:.1f} s"
    )


def test_two_hosts_three_killed_workers_lose_and_duplicate_nothing(
    pg_kanzlei, pg_queue_url, pg_schema_name, tmp_path, licence_key
):
    seed = int(os.environ.get(SEED_ENV, "20261130"))
    run = prove(
        pg_kanzlei,
        pg_queue_url,
        pg_schema_name,
        tmp_path,
        licence_key,
        changes=400,
        mailboxes=6,
        kills=5,
        seed=seed,
    )
    report(run)
    assert len(run.kills) == 5
    assert (run.lost, run.duplicated, run.problems) == (0, 0, []), run.problems[:20]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(FULL_ENV), reason=f"the full multi-host run: set {FULL_ENV}=1")
@pytest.mark.timeout(3600)
def test_full_two_hosts_5000_changes_20_mailboxes_30_worker_kills(
    pg_kanzlei, pg_queue_url, pg_schema_name, tmp_path, licence_key
):
    seed = int(os.environ.get(SEED_ENV, "5000"))
    run = prove(
        pg_kanzlei,
        pg_queue_url,
        pg_schema_name,
        tmp_path,
        licence_key,
        changes=5000,
        mailboxes=20,
        kills=30,
        seed=seed,
    )
    report(run)
    assert len(run.kills) == 30
    assert (run.lost, run.duplicated, run.problems) == (0, 0, []), run.problems[:20]
