"""PostgreSQL queue: how fast workers go round, and whether a deep queue slows a claim.

1. Cycles per second: ``--threads`` threads (10) each loop claim (one mailbox, up to
   ``--jobs-per-claim`` jobs) -> push (no-op) -> fenced ack -> release, until the queue
   is empty. Goal: >= 1,000 cycles/s.
2. Claim time against queue depth: the same single-thread claim -> ack -> release cycle
   with 2,000 and with 200,000 jobs queued (over ``--mailboxes`` mailboxes, each job due
   at its own moment, as a long initial sync queues them). Goal: 200,000 <= 1.5 x 2,000.

Each run uses its own schema, dropped afterwards.

    python benchmarks/pg_claim_cycles.py [--url postgresql://postgres@127.0.0.1:5432/test]
        [--json benchmarks/results/pg_claim_cycles.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsl_exchange_plugin.outbox.base import Change  # noqa: E402
from tsl_exchange_plugin.outbox.postgres import PostgresOutbox  # noqa: E402

DEFAULT_URL = os.environ.get("TSL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def fill(store: PostgresOutbox, jobs: int, mailboxes: int, chunk: int = 5000) -> None:
    """``jobs`` changes spread round-robin over ``mailboxes``; each enqueue call is one transaction."""
    for start in range(0, jobs, chunk):
        store.enqueue(
            [
                Change(f"user{i % mailboxes}", f"contact:{i}", "upsert", json.dumps({"n": i}), 0, 1)
                for i in range(start, min(jobs, start + chunk))
            ]
        )


def cycle(store: PostgresOutbox, worker: str, limit: int) -> int:
    """One claim -> no-op push -> fenced ack -> release; returns the jobs acked (0: nothing claimable)."""
    claim = store.claim(worker, limit=limit)
    if claim is None:
        return 0
    try:
        store.complete_many(list(claim.jobs), fence=claim)
    finally:
        store.release(claim)
    return len(claim.jobs)


def cycles_per_second(url: str, threads: int, jobs: int, mailboxes: int, limit: int) -> dict:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = PostgresOutbox(url, schema=schema)
    try:
        fill(store, jobs, mailboxes)
        counts = [0] * threads
        acked = [0] * threads
        start = threading.Barrier(threads + 1)

        def run(n: int) -> None:
            start.wait()
            idle = 0
            while idle < 3:  # a few empty claims in a row: the queue is drained
                got = cycle(store, f"w{n}", limit)
                if got:
                    counts[n] += 1
                    acked[n] += got
                    idle = 0
                else:
                    idle += 1

        pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - t0
        assert store.pending_count() == 0, "queue not drained"
        return {
            "threads": threads,
            "jobs": jobs,
            "mailboxes": mailboxes,
            "jobs_per_claim": limit,
            "cycles": sum(counts),
            "jobs_acked": sum(acked),
            "seconds": round(elapsed, 3),
            "cycles_per_s": round(sum(counts) / elapsed, 1),
        }
    finally:
        store.close()
        drop(url, schema)


def claim_time(url: str, depth: int, mailboxes: int, limit: int, samples: int) -> dict:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = PostgresOutbox(url, schema=schema)
    try:
        fill(store, depth, mailboxes)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("ANALYZE {}.jobs").format(sql.Identifier(schema)))
        claims, cycles = [], []
        for n in range(20 + samples):  # the first 20 warm up connections, prepared statements, caches
            t0 = time.perf_counter()
            claim = store.claim("w", limit=limit)
            t1 = time.perf_counter()
            assert claim is not None
            store.complete_many(list(claim.jobs), fence=claim)
            store.release(claim)
            t2 = time.perf_counter()
            # The same records change again: the queue keeps its depth (untimed).
            store.enqueue([Change(j.mailbox, j.record_key, "upsert", j.payload, 0, 1) for j in claim.jobs])
            if n >= 20:
                claims.append((t1 - t0) * 1000)
                cycles.append((t2 - t0) * 1000)
        return {
            "queued_jobs": depth,
            "mailboxes": mailboxes,
            "jobs_per_claim": limit,
            "samples": samples,
            "claim_ms_median": round(statistics.median(claims), 3),
            "claim_ms_p90": round(sorted(claims)[int(0.9 * (len(claims) - 1))], 3),
            "cycle_ms_median": round(statistics.median(cycles), 3),
        }
    finally:
        store.close()
        drop(url, schema)


def drop(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--cycle-jobs", type=int, default=20000, help="jobs drained in the cycles/s run")
    parser.add_argument("--cycle-mailboxes", type=int, default=2000)
    parser.add_argument("--jobs-per-claim", type=int, default=1)
    parser.add_argument(
        "--mailboxes", type=int, default=20, help="mailboxes of the depth runs (each holds >= a claim)"
    )
    parser.add_argument("--claim-limit", type=int, default=100, help="jobs per claim in the depth runs")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    result = {
        "cycles": cycles_per_second(
            args.url, args.threads, args.cycle_jobs, args.cycle_mailboxes, args.jobs_per_claim
        )
    }
    print(f"claim-push(no-op)-ack cycles: {result['cycles']}", flush=True)
    small = claim_time(args.url, 2_000, args.mailboxes, args.claim_limit, args.samples)
    print(f"claim at 2,000 queued: {small}", flush=True)
    big = claim_time(args.url, 200_000, args.mailboxes, args.claim_limit, args.samples)
    print(f"claim at 200,000 queued: {big}", flush=True)
    result |= {"depth_2000": small, "depth_200000": big}
    result["claim_ratio_200k_vs_2k"] = round(big["claim_ms_median"] / small["claim_ms_median"], 2)
    print(f"claim time ratio 200,000 vs 2,000: {result['claim_ratio_200k_vs_2k']} (goal <= 1.5)")
    print(f"cycles/s with {args.threads} threads: {result['cycles']['cycles_per_s']} (goal >= 1000)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
