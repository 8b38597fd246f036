"""P4 and P3 under load: an initial sync of 10,000 contacts for 20 lawyers (200,000 items).

One run, the host in this process (SQLite queue, in-host worker), the sandbox as its own
process (as a real Exchange server would be). It measures, side by side:

* P4, memory: the host's peak RSS (goal < 250 MB) and whether it stays flat after the
  first 20,000 items (RSS at 20,000 vs at the end);
* P4, queue on disk (the SQLite queue file with its WAL): at its peak (goal < 100 MB) and
  after the drain (goal < 10 MB); the sync-state file beside it (ItemId, ChangeKey and hash of
  every item written, which stays) is reported on its own, with the total of both;
* P4, cost per item: seconds for the first 20,000 delivered vs the last 20,000 (goal:
  last <= 1.2 x first);
* P3 under load: while the initial sync drains, other contacts are saved at 5 per second;
  each save's arrival in its mailbox is timed (goal p99 < 2 s);
* the interactive path: the host's save call (``tsl_record_saved`` included) with the
  worker busy vs idle (goal p99 busy <= 3 x idle).

    python benchmarks/p4_initial_sync.py [--contacts 10000] [--users 20] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def disk_mb(path: str) -> float:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.path.getsize(path + suffix)
        except OSError:
            pass
    return total / 1e6


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contacts", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="server time added to every request")
    ap.add_argument(
        "--save-rate", type=float, default=5.0, help="interactive saves per second during the drain"
    )
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from tsl_exchange_plugin import PLUGIN_ID, licence, signals
    from tsl_exchange_plugin.cli.demo import sandbox_tab_values
    from tsl_exchange_plugin.plugin import runtime_for
    from tsl_exchange_plugin.sandbox.testing import sandbox_process
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import generate_firm
    from tsl_hostapi.types import SettingsContext, User

    tmp = Path(tempfile.mkdtemp(prefix="tsl-p4-"))
    n_interactive = 100
    boxes = {f"anwalt{i:02d}@kanzlei.test": f"pw-{i:02d}" for i in range(args.users)}
    firm = generate_firm(seed=11, contacts=args.contacts + n_interactive)
    bulk = firm.contacts[: args.contacts]
    interactive = firm.contacts[args.contacts : args.contacts + n_interactive]
    bulk_keys = {c.ref.key for c in bulk}

    delivered = 0
    marks: list[tuple[int, float]] = []  # (delivered, monotonic time) every 1,000 items
    arrivals: dict[str, list[float]] = {}  # every push of an interactive record, in order
    lock = threading.Lock()

    def on_success(sender: Any, **kw: Any) -> None:
        nonlocal delivered
        key = kw.get("record_key", "")
        now = time.monotonic()
        with lock:
            if key in bulk_keys:
                delivered += 1
                if delivered % 1000 == 0:
                    marks.append((delivered, now))
            else:
                arrivals.setdefault(f"{kw.get('mailbox')}|{key}", []).append(now)

    signals.push_succeeded.connect(on_success)

    with sandbox_process(tmp / "sandbox", boxes, delay_ms=args.latency_ms) as server:
        key = Ed25519PrivateKey.generate()
        os.environ[licence.DEV_KEYS_ENV] = "1"
        os.environ[licence.TRUSTED_KEYS_ENV] = f"bench={licence.public_key_b64(key)}"
        host = ReferenceHost(tmp / "host")
        host.load_firm(firm)
        host.startup()
        claims = licence.LicenceClaims(
            "Bench", (licence.MODULE,), args.users + 5, dt.date.today() + dt.timedelta(days=9)
        )
        host.install_licence(PLUGIN_ID, licence.sign(claims, key, "bench"))
        assert host.enable(PLUGIN_ID).allowed
        runtime = runtime_for(host)
        admin = next(u for u in firm.users if u.is_admin)
        lawyers = []
        for i, email in enumerate(boxes):
            user = host.save_user(
                User(id=f"bench{i:02d}", name=f"Anwalt {i:02d}", email=email, role="Rechtsanwalt")
            )
            lawyers.append(user)
            saved = host.save_tab(
                admin,
                "user",
                f"{PLUGIN_ID}.user",
                SettingsContext("user", user.id),
                sandbox_tab_values(server.url, email, boxes[email]),
            )
            assert saved.ok, saved

        def wait_empty(limit: float) -> None:
            deadline = time.monotonic() + limit
            while runtime.outbox.pending_count() and time.monotonic() < deadline:
                time.sleep(0.2)
            if runtime.outbox.pending_count():
                raise RuntimeError("the queue did not drain in time")

        # Every interactive contact goes to one lawyer each, before the bulk starts.
        for i, contact in enumerate(interactive):
            res = host.press(
                admin, f"{PLUGIN_ID}.set_sync", [contact.ref], {"users": [lawyers[i % len(lawyers)].id]}
            )
            assert res.ok, res.message
        wait_empty(120)
        owner = {c.ref.key: lawyers[i % len(lawyers)].id for i, c in enumerate(interactive)}

        def edit(contact: Any, n: int) -> tuple[str, float, float]:
            changed = dataclasses.replace(contact, notes=f"Notiz {n}")
            t0 = time.monotonic()
            host.save(changed, user=admin)
            return contact.ref.key, t0, time.monotonic() - t0

        # Idle: the worker has nothing to do.
        idle_saves = [edit(interactive[n % n_interactive], n)[2] for n in range(200)]
        wait_empty(60)

        path = getattr(runtime.outbox, "path", "")
        sync_path = getattr(runtime.outbox, "sync_path", "")
        samples: list[tuple[float, float, float, int]] = []  # (t, rss, queue disk, delivered)
        sync_samples: list[float] = []  # the sync-state file, at the same moments
        stop = threading.Event()

        def sampler() -> None:
            while not stop.wait(0.5):
                with lock:
                    d = delivered
                samples.append((time.monotonic(), rss_mb(), disk_mb(path) if path else 0.0, d))
                sync_samples.append(disk_mb(sync_path) if sync_path else 0.0)

        busy_saves: list[float] = []
        latencies: list[float] = []
        pending_edits: list[tuple[str, float]] = []

        def saver() -> None:
            n = 1000
            while not stop.wait(1.0 / args.save_rate):
                contact = interactive[n % n_interactive]
                keyname, t0, took = edit(contact, n)
                busy_saves.append(took)
                pending_edits.append((f"{owner[keyname]}|{keyname}", t0))
                n += 1

        threading.Thread(target=sampler, daemon=True).start()
        t_start = time.monotonic()
        rss_start = rss_mb()
        res = host.press(
            admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in bulk], {"users": [u.id for u in lawyers]}
        )
        assert res.ok, res.message
        enqueue_s = time.monotonic() - t_start
        saver_thread = threading.Thread(target=saver, daemon=True)
        saver_thread.start()
        total = len(bulk) * len(lawyers)
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            with lock:
                if delivered >= total:
                    break
            time.sleep(0.5)
        stop.set()
        saver_thread.join()
        wait_empty(120)
        t_end = time.monotonic()
        # Arrival of each interactive edit: the first push of that key after the save.
        with lock:
            got = {k: list(v) for k, v in arrivals.items()}
        for keyname, t0 in pending_edits:
            at = next((t for t in got.get(keyname, ()) if t >= t0), None)
            if at is not None:
                latencies.append(at - t0)
        if path:
            runtime.outbox.pending_count()  # let the store run its after-drain housekeeping
        time.sleep(2.0)
        disk_after = disk_mb(path) if path else 0.0
        sync_after = disk_mb(sync_path) if sync_path else 0.0
        host.close()

    with lock:
        done = delivered
    # The goal's window is 20,000 items of 200,000; smaller runs use a tenth of their items.
    window = max(1000, min(20_000, total // 10 // 1000 * 1000))
    first = next((t for d, t in marks if d >= window), None)
    last_start = next((t for d, t in marks if d >= total - window), None)
    end = marks[-1][1] if marks else t_end
    first_s = (first - t_start) if first else float("nan")
    last_s = (end - last_start) if last_start else float("nan")
    rss_at_20k = next((r for _, r, _, d in samples if d >= window), float("nan"))
    result = {
        "items": total,
        "window": window,
        "delivered": done,
        "seconds": round(t_end - t_start, 1),
        "enqueue_seconds": round(enqueue_s, 2),
        "rss_start_mb": round(rss_start, 1),
        "rss_peak_mb": round(max((r for _, r, _, _ in samples), default=rss_mb()), 1),
        "rss_at_20k_mb": round(rss_at_20k, 1),
        "rss_end_mb": round(samples[-1][1], 1) if samples else None,
        "disk_peak_mb": round(max((dk for _, _, dk, _ in samples), default=0.0), 1),
        "disk_after_drain_mb": round(disk_after, 1),
        "syncstate_peak_mb": round(max(sync_samples, default=0.0), 1),
        "syncstate_after_drain_mb": round(sync_after, 1),
        "both_files_peak_mb": round(
            max((q + st for (_, _, q, _), st in zip(samples, sync_samples, strict=True)), default=0.0), 1
        ),
        "first_20k_s": round(first_s, 2),
        "last_20k_s": round(last_s, 2),
        "last_vs_first": round(last_s / first_s, 2) if first and last_start else None,
        "interactive_arrival_p99_s": round(p99(latencies), 3),
        "interactive_arrivals": len(latencies),
        "interactive_saves": len(pending_edits),
        "save_p99_idle_ms": round(p99(idle_saves) * 1000, 2),
        "save_p99_busy_ms": round(p99(busy_saves) * 1000, 2),
        "save_p50_idle_ms": round(statistics.median(idle_saves) * 1000, 2),
        "save_p50_busy_ms": round(statistics.median(busy_saves) * 1000, 2) if busy_saves else None,
    }
    print(json.dumps(result, indent=1))
    checks = {
        "peak RSS < 250 MB": result["rss_peak_mb"] < 250,
        "queue on disk at peak < 100 MB": result["disk_peak_mb"] < 100,
        "queue on disk after drain < 10 MB": result["disk_after_drain_mb"] < 10,
        "last window <= 1.2 x first window": (result["last_vs_first"] or 99) <= 1.2,
        "interactive arrival p99 < 2 s": result["interactive_arrival_p99_s"] < 2.0,
        "save p99 busy <= 3 x idle": result["save_p99_busy_ms"] <= 3 * result["save_p99_idle_ms"],
    }
    for name, ok in checks.items():
        print(f"  {'OK    ' if ok else 'MISSED'} {name}")
    out = Path(args.json or "benchmarks/results/p4_initial_sync.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0 if done == total else 1


if __name__ == "__main__":
    sys.exit(main())
