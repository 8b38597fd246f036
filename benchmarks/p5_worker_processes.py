"""P5: one worker process against four, host-less, on a PostgreSQL queue.

A reference host (worker mode "external") gives 40 lawyers an Exchange account on the
sandbox. N ``tsl-exchange worker --queue URL --key-file F`` processes are started in a
directory of their own; once all of them listen, the host subscribes each lawyer to 100
contacts (4,000 changes over 40 mailboxes, one menu action) and the time until the queue
is empty is taken (the enqueue included, and shown on its own). Each run has a fresh schema, a
fresh host and a fresh sandbox (its own process, validation off, ``--latency-ms`` added to
every request, as a hosted Exchange's round trip would).

The per-server limit holds across processes, so with all 40 mailboxes on one server four
processes of four threads could never have more than ``--per-server`` requests out: the
default here is 40, so that the run measures how pushing scales with processes; pass
``--per-server 10`` to see the product's default limit at work. Goal: >= 3.5 x.

    python benchmarks/p5_worker_processes.py [--mailboxes 40] [--contacts 100] [--latency-ms 200]
        [--threads 4] [--per-server 40] [--processes 1 4] [--timeline]

``--timeline`` adds where the time went to each row of the JSON output: from the sandbox's
request log, per mailbox the first request after the enqueue, the set-up requests before the
first CreateItem and the end of its last request; the requests by operation; how many were in
flight at once; the CPU seconds (utime + stime from /proc) of each worker process, the sandbox,
the PostgreSQL back-ends of the run (the host's enqueue included) and this harness (the host:
enqueue, polling); and the tail between the last answer and the empty
queue.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

PG_URL = os.environ.get("TSL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def listening(schema: str) -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s", (f'LISTEN "{schema}_work"',)
        ).fetchone()
    return int(row[0])


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (0 if it is gone or not readable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def pids_with(arg: str) -> list[int]:
    """Processes whose command line contains ``arg`` (the sandbox, started by the harness)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if arg.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def backend_pids(schema: str) -> list[int]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (f"tsl-exchange:{schema}",)
        ).fetchall()
    return [int(r[0]) for r in rows]


def timeline(records: list[dict], t0: float, t_end: float) -> dict:
    """Where the wall time went, from the sandbox's request log (UNIX seconds)."""
    records = [r for r in records if r["finished"] >= t0]
    by_box: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["started"]):
        by_box.setdefault(r["mailbox"], []).append(r)
    boxes = []
    for box, rs in sorted(by_box.items()):
        first_create = next((r for r in rs if r["operation"] == "CreateItem"), None)
        setup = [r["operation"] for r in rs if first_create is None or r["started"] < first_create["started"]]
        boxes.append(
            {
                "mailbox": box,
                "first": round(rs[0]["started"] - t0, 3),
                "setup": setup,
                "setup_s": round(
                    (first_create["started"] if first_create else rs[-1]["finished"]) - rs[0]["started"], 3
                ),
                "busy_s": round(sum(r["finished"] - r["started"] for r in rs), 3),
                "gaps_s": round(
                    sum(max(0.0, b["started"] - a["finished"]) for a, b in zip(rs, rs[1:], strict=False)), 3
                ),
                "last": round(rs[-1]["finished"] - t0, 3),
                "requests": [
                    (r["operation"], round(r["started"] - t0, 3), round(r["finished"] - r["started"], 3))
                    for r in rs
                ],
            }
        )
    edges = sorted([(r["started"], 1) for r in records] + [(r["finished"], -1) for r in records])
    depth = peak = 0
    for _, step in edges:
        depth += step
        peak = max(peak, depth)
    last = max((r["finished"] for r in records), default=t0)
    return {
        "requests": len(records),
        "by_operation": dict(Counter(r["operation"] for r in records)),
        "peak_in_flight": peak,
        "first_request_s": round(min((r["started"] for r in records), default=t0) - t0, 3),
        "last_answer_s": round(last - t0, 3),
        "tail_after_last_answer_s": round(t_end - last, 3),
        "mailboxes": boxes,
    }


def run(processes: int, args: argparse.Namespace, tmp: Path) -> dict:
    from tsl_exchange_plugin import PLUGIN_ID, licence
    from tsl_exchange_plugin.cli.demo import sandbox_tab_values
    from tsl_exchange_plugin.core.firm import QUEUE_URL_ENV
    from tsl_exchange_plugin.credentials import KEY_ENV, KEY_FILE_ENV, KEY_FILE_NAME
    from tsl_exchange_plugin.plugin import runtime_for
    from tsl_exchange_plugin.sandbox.testing import sandbox_process
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import generate_firm
    from tsl_hostapi.types import SettingsContext, User

    where = tmp / f"run-{processes}"
    schema = f"bench_p5_{uuid.uuid4().hex[:10]}"
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    os.environ[QUEUE_URL_ENV] = url
    boxes = {f"anwalt{n:02d}@kanzlei.test": f"Bench-{n:02d}-pw!" for n in range(args.mailboxes)}
    procs: list[subprocess.Popen] = []
    host = None
    try:
        with sandbox_process(where / "sandbox", boxes, delay_ms=args.latency_ms) as server:
            firm = generate_firm(seed=5, contacts=args.contacts)
            host = ReferenceHost(where / "host")
            host.load_firm(firm)
            host.settings.set(PLUGIN_ID, "firm", {"worker": "external"})
            lawyers = [
                host.save_user(
                    User(id=f"bench{n:02d}", name=f"Anwalt {n:02d}", email=email, role="Rechtsanwalt")
                )
                for n, email in enumerate(boxes)
            ]
            host.startup()
            key = Ed25519PrivateKey.generate()
            os.environ[licence.DEV_KEYS_ENV] = "1"
            os.environ[licence.TRUSTED_KEYS_ENV] = f"bench={licence.public_key_b64(key)}"
            claims = licence.LicenceClaims(
                "Bench", (licence.MODULE,), args.mailboxes + 5, dt.date.today() + dt.timedelta(days=9)
            )
            host.install_licence(PLUGIN_ID, licence.sign(claims, key, "bench"))
            assert host.enable(PLUGIN_ID).allowed
            runtime = runtime_for(host)
            admin = next(u for u in firm.users if u.is_admin)
            for user, (email, password) in zip(lawyers, boxes.items(), strict=True):
                saved = host.save_tab(
                    admin,
                    "user",
                    f"{PLUGIN_ID}.user",
                    SettingsContext("user", user.id),
                    sandbox_tab_values(server.url, email, password),
                )
                assert saved.ok, saved
            contacts = list(host.iter_records("contact"))[: args.contacts]

            # The worker's machine: a copy of the key, nothing of the host.
            machine = where / "worker-machine"
            machine.mkdir()
            shutil.copy(Path(runtime.data_dir) / KEY_FILE_NAME, machine / "exchange.key")
            env = {k: v for k, v in os.environ.items() if k not in (QUEUE_URL_ENV, KEY_ENV, KEY_FILE_ENV)}
            command = [sys.executable, "-m", "tsl_exchange_plugin.cli", "worker", "--queue", url]
            command += ["--key-file", str(machine / "exchange.key"), "--threads", str(args.threads)]
            command += ["--per-server", str(args.per_server)]
            for n in range(processes):
                with open(machine / f"worker-{n}.log", "wb") as out:
                    procs.append(
                        subprocess.Popen(command, env=env, cwd=machine, stdout=out, stderr=subprocess.STDOUT)
                    )
            deadline = time.monotonic() + 120
            while listening(schema) < processes:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"the workers did not start; see {machine}")
                time.sleep(0.1)

            # Timed from the menu action (Extras › Auswahl ändern › Exchange-Sync setzen): its
            # NOTIFY wakes the listening workers at commit.
            sandbox_pids = pids_with(str(where / "sandbox"))
            pg_pids = backend_pids(schema)
            cpu0 = {
                p: cpu_seconds(p) for p in [*(q.pid for q in procs), *sandbox_pids, *pg_pids, os.getpid()]
            }
            wall0 = time.time()
            t0 = time.perf_counter()
            result = host.press(
                admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts], {"users": [u.id for u in lawyers]}
            )
            assert result.ok, result.message
            enqueue_s = time.perf_counter() - t0
            changes = args.contacts * len(lawyers)
            deadline = time.monotonic() + 900
            while runtime.outbox.pending_count() > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the queue did not drain in time")
                time.sleep(0.1)
            seconds = time.perf_counter() - t0
            wall_end = time.time()
            failed = len(runtime.outbox.jobs(status="failed"))
            extra: dict = {}
            if args.timeline:
                pg_pids = sorted(set(pg_pids) | set(backend_pids(schema)))
                used = {p: round(cpu_seconds(p) - cpu0.get(p, 0.0), 2) for p in cpu0.keys() | set(pg_pids)}
                with urllib.request.urlopen(server.url.split("/EWS/")[0] + "/sandbox/api/requests") as answer:
                    records = json.load(answer)
                extra["timeline"] = timeline(records, wall0, wall_end) | {
                    "cpu_s": {
                        "workers": [used[q.pid] for q in procs],
                        "sandbox": round(sum(used[p] for p in sandbox_pids), 2),
                        "postgres": round(sum(used[p] for p in pg_pids), 2),
                        "host": used[os.getpid()],  # the enqueue and the polling of this harness
                        "wall": round(seconds, 2),
                    }
                }
            return extra | {
                "processes": processes,
                "threads": args.threads,
                "changes": changes,
                "seconds": round(seconds, 3),
                "changes_per_s": round(changes / seconds, 1),
                "enqueue_seconds": round(enqueue_s, 3),
                "failed": failed,
            }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        if host is not None:
            host.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailboxes", type=int, default=40)
    ap.add_argument("--contacts", type=int, default=100, help="contacts per mailbox")
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--threads", type=int, default=4, help="worker threads per process")
    ap.add_argument("--per-server", type=int, default=40)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--json", default="")
    ap.add_argument("--timeline", action="store_true", help="add where the time went to the JSON")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tsl-p5-"))
    rows = [run(n, args, tmp) for n in args.processes]
    print(
        f"{rows[0]['changes']} changes over {args.mailboxes} mailboxes, {args.latency_ms:g} ms added per request, "
        f"{args.threads} threads per process, at most {args.per_server} requests per server"
    )
    for r in rows:
        print(
            f"  {r['processes']} process(es): {r['seconds']:>8.2f} s  {r['changes_per_s']:>8.1f} changes/s"
            f"  failed {r['failed']}"
        )
    ratio = rows[0]["seconds"] / rows[-1]["seconds"] if len(rows) > 1 else 1.0
    if len(rows) > 1:
        goal = "OK" if ratio >= 3.5 else "MISSED"
        print(
            f"{rows[-1]['processes']} vs {rows[0]['processes']} process(es): {ratio:.2f} x (goal >= 3.5): {goal}"
        )
    out = Path(args.json or "benchmarks/results/p5_worker_processes.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "ratio": ratio}, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
