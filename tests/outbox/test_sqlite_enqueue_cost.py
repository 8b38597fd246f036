"""The host's save path calls enqueue: it must cost about what a bare durable
one-row insert costs (target: p99 at most 3x, same WAL + synchronous=FULL)."""

from __future__ import annotations

import sqlite3
import time

from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox

PAYLOAD = '{"kind": "contact", "name": "Müller", "notes": "' + "x" * 1500 + '"}'


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(len(ordered) * 0.99) - 1]


def test_enqueue_p99_within_three_times_a_bare_insert(tmp_path):
    box = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    bare = sqlite3.connect(tmp_path / "bare.sqlite3", isolation_level=None)
    bare.execute("PRAGMA journal_mode = WAL")
    bare.execute("PRAGMA synchronous = FULL")
    bare.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, payload TEXT)")
    # Some history, so the outbox's indexes are not empty.
    box.enqueue([Change(f"user{i % 25}", f"contact:{i}", "upsert", PAYLOAD) for i in range(2000)])
    bare_times: list[float] = []
    enqueue_times: list[float] = []
    try:
        # Interleaved, so disk hiccups hit both series alike.
        for i in range(300):
            t = time.perf_counter()
            bare.execute("BEGIN IMMEDIATE")
            bare.execute("INSERT INTO t (k, payload) VALUES (?, ?)", (str(i), PAYLOAD))
            bare.execute("COMMIT")
            bare_times.append(time.perf_counter() - t)

            change = Change(f"user{i % 25}", f"contact:{i % 400}", "upsert", PAYLOAD)
            t = time.perf_counter()
            box.enqueue([change])
            enqueue_times.append(time.perf_counter() - t)
    finally:
        bare.close()
        box.close()
    ratio = _p99(enqueue_times) / _p99(bare_times)
    assert ratio <= 3.0, (
        f"enqueue p99 {_p99(enqueue_times) * 1e3:.2f} ms vs bare {_p99(bare_times) * 1e3:.2f} ms"
    )
