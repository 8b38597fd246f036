"""Fixtures: a law firm whose queue lives on the real PostgreSQL, pushed by worker processes.

The host and every ``tsl-exchange worker`` subprocess get the same queue URL through
``TSL_EXCHANGE_QUEUE_URL``; the URL names a fresh schema (``?schema=...``), so they
agree on it, and the schema is dropped after the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.core.firm import FIRM_KEY, QUEUE_URL_ENV
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox
from tsl_exchange_plugin.plugin import runtime_for
from tsl_exchange_plugin.worker.runner import IDLE_WAIT_ENV
from tsl_hostapi.reference.sample_firm import generate_firm

PG_URL = os.environ.get("TSL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_schema_name() -> Iterator[str]:
    schema = f"t_pgw_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(schema)


@pytest.fixture
def pg_queue_url(pg_schema_name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The queue URL for the host (set in the environment, as an operator would) and the workers."""
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={pg_schema_name}"
    monkeypatch.setenv(QUEUE_URL_ENV, url)
    return url


class Workers:
    """``tsl-exchange worker`` subprocesses on the firm's data directory; all killed at teardown."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(
        self, *, threads: int = 2, lease: float = 2.0, idle_wait: float | None = None
    ) -> subprocess.Popen:
        env = dict(os.environ)  # carries TSL_EXCHANGE_QUEUE_URL and the trusted licence key
        if idle_wait is not None:
            env[IDLE_WAIT_ENV] = str(idle_wait)
        log_path = self.log_dir / f"worker-{len(self.procs)}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tsl_exchange_plugin.cli",
                    "worker",
                    "--data",
                    str(self.data_dir),
                    "--threads",
                    str(threads),
                    "--lease",
                    str(lease),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def kill_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)

    def output(self, proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


@pytest.fixture
def pg_kanzlei(pg_queue_url: str, request: pytest.FixtureRequest):
    """The ``kanzlei`` firm with its queue on PostgreSQL and worker mode "external".

    ``kanzlei`` is built after the queue URL is in the environment (so the host's
    runtime opens the PostgreSQL store) and torn down before the schema is dropped.
    Its setup drains the sample firm's pushes with the in-host worker; then the firm
    switches to "external" and the plugin is restarted, so from here on only worker
    processes push. The firm gets 100 contacts."""
    k = request.getfixturevalue("kanzlei")
    runtime = k.runtime
    assert isinstance(runtime.outbox, PostgresOutbox)
    assert runtime.outbox.schema == request.getfixturevalue("pg_schema_name")
    firm = k.host.settings.get(PLUGIN_ID, FIRM_KEY, {}) or {}
    k.host.settings.set(PLUGIN_ID, FIRM_KEY, {**firm, "worker": "external"})
    k.host.disable(PLUGIN_ID)
    assert k.host.enable(PLUGIN_ID).allowed
    assert runtime_for(k.host) is not runtime
    k.host.save_many(generate_firm(seed=7, contacts=100).contacts)
    k.contacts = [c for c in k.host.iter_records("contact")]
    assert len(k.contacts) == 100
    return k


@pytest.fixture
def workers(pg_kanzlei, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(Path(pg_kanzlei.host.root), tmp_path)
    try:
        yield pool
    finally:
        pool.kill_all()
