"""P1: what the plugin adds to the host's save.

Measured in one run, on one disk, all with SQLite WAL and ``synchronous=FULL``:

* baseline: a bare one-row INSERT + COMMIT into a fresh SQLite file;
* hook path: ``pm.hook.tsl_record_saved`` for a contact that three users
  subscribed to (hook call, subscription lookup, snapshot, enqueue of three
  rows in one transaction, commit);
* host save with the plugin enabled vs disabled (the host's own commit plus the hook).

The worker is not started, so only the save path is timed.
Target: hook path p99 <= 3 x baseline p99.

    python benchmarks/p1_save_latency.py [--n 2000] [--json benchmarks/results/p1.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def summary(name: str, samples: list[float]) -> dict:
    ms = [s * 1000 for s in samples]
    return {
        "name": name,
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 4),
        "p99_ms": round(pct(ms, 99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
    }


def bare_insert(path: Path, n: int) -> list[float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, payload TEXT)")
    payload = "x" * 1500  # about the size of a contact snapshot
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (k, payload) VALUES (?, ?)", (f"contact:{i}", payload))
        conn.execute("COMMIT")
        out.append(time.perf_counter() - t0)
    conn.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--json", default="benchmarks/results/p1_save_latency.json")
    args = ap.parse_args()

    from tsl_exchange_plugin import PLUGIN_ID, licence
    from tsl_exchange_plugin.core.accounts import ExchangeSettings
    from tsl_exchange_plugin.core.runtime import SyncRuntime
    from tsl_exchange_plugin.plugin import runtime_for
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import generate_firm
    from tsl_hostapi.types import RecordEvent

    tmp = Path(tempfile.mkdtemp(prefix="tsl-p1-"))
    key = Ed25519PrivateKey.generate()
    os.environ[licence.DEV_KEYS_ENV] = "1"
    os.environ[licence.TRUSTED_KEYS_ENV] = f"bench={licence.public_key_b64(key)}"
    firm = generate_firm(seed=3, contacts=200)
    host = ReferenceHost(tmp / "host")
    host.load_firm(firm)
    host.startup()
    host.install_licence(
        PLUGIN_ID,
        licence.sign(
            licence.LicenceClaims("Bench", (licence.MODULE,), 10, dt.date.today() + dt.timedelta(days=9)),
            key,
            "bench",
        ),
    )
    assert host.enable(PLUGIN_ID).allowed
    runtime: SyncRuntime = runtime_for(host)
    runtime.worker.stop()  # only the save path is timed
    lawyers = [u for u in firm.users if u.role.startswith("Rechtsanw")][:3]
    for u in lawyers:
        runtime.admin.save_account(
            u.id,
            ExchangeSettings(enabled=True, host="mail.kanzlei.test", username=u.email, auth_type="basic"),
            password="bench-secret",
        )
    runtime.worker.stop()
    contacts = firm.contacts[:100]
    runtime.subscriptions.change([c.id for c in contacts], add=[u.id for u in lawyers])

    print(f"synchronous=FULL, WAL, n={args.n}, data on {tmp}")
    baseline = bare_insert(tmp / "bare.sqlite3", args.n)

    hook = host.pm.hook.tsl_record_saved
    hook_times = []
    for i in range(args.n):
        c = contacts[i % len(contacts)]
        event = RecordEvent(c.ref, dataclasses.replace(c, notes=f"Änderung {i}"))
        t0 = time.perf_counter()
        hook(host=host, event=event)
        hook_times.append(time.perf_counter() - t0)
    enqueue_times = []
    from tsl_exchange_plugin.outbox.base import Change

    for i in range(args.n):
        changes = [Change(u.id, f"contact:{i % 100}", "upsert", "x" * 1500) for u in lawyers]
        t0 = time.perf_counter()
        runtime.outbox.enqueue(changes)
        enqueue_times.append(time.perf_counter() - t0)

    save_on = []
    for i in range(args.n // 2):
        c = contacts[i % len(contacts)]
        t0 = time.perf_counter()
        host.save(dataclasses.replace(c, notes=f"Speichern {i}"))
        save_on.append(time.perf_counter() - t0)
    host.disable(PLUGIN_ID)
    save_off = []
    for i in range(args.n // 2):
        c = contacts[i % len(contacts)]
        t0 = time.perf_counter()
        host.save(dataclasses.replace(c, notes=f"Ohne {i}"))
        save_off.append(time.perf_counter() - t0)
    host.close()

    rows = [
        summary("bare one-row insert+commit (baseline)", baseline),
        summary("save-hook path (3 mailboxes)", hook_times),
        summary("outbox.enqueue (3 rows)", enqueue_times),
        summary("host save, plugin enabled", save_on),
        summary("host save, plugin disabled", save_off),
    ]
    ratio = rows[1]["p99_ms"] / rows[0]["p99_ms"]
    print(f"{'measurement':<42} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for r in rows:
        print(f"{r['name']:<42} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} {r['mean_ms']:>9.3f}")
    verdict = "OK" if ratio <= 3 else "MISSED"
    print(f"hook p99 / baseline p99 = {ratio:.2f} (target <= 3.0): {verdict}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps({"synchronous": "FULL", "rows": rows, "ratio_p99": ratio}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
