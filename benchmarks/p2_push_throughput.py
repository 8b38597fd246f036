"""P2: 1,000 contacts into one mailbox, three ways, on the same sandbox in the same run.

* plugin: Extras › Auswahl ändern › Exchange-Sync setzen for 1,000 contacts, timed
  until the queue is drained, i.e. the last one is in the mailbox (enqueue, worker,
  mapping, exchangelib, sync state);
* raw: exchangelib ``bulk_create`` of the same 1,000 contacts (chunks of 100, its default);
* naive: one exchangelib ``save()`` per contact.

Each way writes into its own mailbox; the sandbox runs with schema validation off (as for
every benchmark) and, by default, as its own process (``tsl-exchange sandbox``), as an
Exchange server is never inside the client's process: sharing one interpreter would make
the server's work compete with the client's for the one GIL. ``--in-process`` runs it in a
thread of this process instead, for comparison. Targets: plugin >= 0.8 x raw, >= 10 x naive.

``--latency-ms`` adds that much server time to every request (the sandbox's ``delay``
fault, ``tsl-exchange sandbox --delay-ms``), as a hosted Exchange's round trip would: on
loopback a request costs well under a millisecond, which flatters the per-item way.

    python benchmarks/p2_push_throughput.py [--n 1000] [--latency-ms 20] [--in-process] [--json ...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@contextlib.contextmanager
def sandbox_thread(data: Path, boxes: dict[str, str], *, delay_ms: float) -> Iterator[Any]:
    from tsl_exchange_plugin.sandbox.server import SandboxServer

    server = SandboxServer(data, mailboxes=boxes, validate=False).start()
    if delay_ms > 0:
        server.inject("delay", seconds=delay_ms / 1000.0, count=None)
    try:
        yield server
    finally:
        server.stop()


def count_contacts(server: Any, email: str) -> int:
    """Items in the mailbox's contacts folder, through the sandbox's inspection API."""
    base = server.url.split("/EWS/")[0]
    with urllib.request.urlopen(f"{base}/sandbox/api/mailboxes/{email}/items?folder=contacts") as resp:
        return len(json.load(resp))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="server time added to every request")
    ap.add_argument("--in-process", action="store_true", help="the sandbox in a thread of this process")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from exchangelib.protocol import close_connections

    from tsl_exchange_plugin import PLUGIN_ID, licence, signals
    from tsl_exchange_plugin.backends.ews.convert import register_record_id_property, to_exchangelib
    from tsl_exchange_plugin.cli.demo import sandbox_tab_values
    from tsl_exchange_plugin.mapping.contact import map_contact
    from tsl_exchange_plugin.plugin import runtime_for
    from tsl_exchange_plugin.sandbox.testing import exchangelib_account, sandbox_process
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import generate_firm
    from tsl_hostapi.types import SettingsContext

    tmp = Path(tempfile.mkdtemp(prefix="tsl-p2-"))
    boxes = {
        "plugin@kanzlei.test": "pw-plugin",
        "raw@kanzlei.test": "pw-raw",
        "naive@kanzlei.test": "pw-naive",
    }
    serve = sandbox_thread if args.in_process else sandbox_process
    firm = generate_firm(seed=5, contacts=args.n)
    contacts = firm.contacts[: args.n]
    items = [map_contact(c, record_key=c.ref.key) for c in contacts]
    register_record_id_property()
    with serve(tmp / "sandbox", boxes, delay_ms=args.latency_ms) as server:
        # -- raw bulk_create
        raw = exchangelib_account(
            server, "raw@kanzlei.test", auth="basic", password=boxes["raw@kanzlei.test"]
        )
        raw.contacts  # noqa: B018 - the folder lookup is not part of the timing (the plugin caches it too)
        # The same items the plugin writes, with the same record-id property (fair to both sides).
        objs = [to_exchangelib(i, account=raw, tsl_record_id=i.record_key) for i in items]
        t0 = time.perf_counter()
        raw.bulk_create(raw.contacts, objs, chunk_size=100)
        raw_s = time.perf_counter() - t0

        # -- naive per-item save()
        naive = exchangelib_account(
            server, "naive@kanzlei.test", auth="basic", password=boxes["naive@kanzlei.test"]
        )
        objs = [to_exchangelib(i, account=naive, tsl_record_id=i.record_key) for i in items]
        folder = naive.contacts
        t0 = time.perf_counter()
        for obj in objs:
            obj.folder = folder
            obj.save()
        naive_s = time.perf_counter() - t0

        # -- through the plugin
        key = Ed25519PrivateKey.generate()
        os.environ[licence.DEV_KEYS_ENV] = "1"
        os.environ[licence.TRUSTED_KEYS_ENV] = f"bench={licence.public_key_b64(key)}"
        host = ReferenceHost(tmp / "host")
        host.load_firm(firm)
        host.startup()
        claims = licence.LicenceClaims("Bench", (licence.MODULE,), 10, dt.date.today() + dt.timedelta(days=9))
        host.install_licence(PLUGIN_ID, licence.sign(claims, key, "bench"))
        assert host.enable(PLUGIN_ID).allowed
        runtime = runtime_for(host)
        drained = threading.Event()

        def on_drained(sender: Any, **_: Any) -> None:
            drained.set()

        signals.queue_drained.connect(on_drained)
        admin = next(u for u in firm.users if u.is_admin)
        lawyer = next(u for u in firm.users if u.role.startswith("Rechtsanw"))
        saved = host.save_tab(
            admin,
            "user",
            f"{PLUGIN_ID}.user",
            SettingsContext("user", lawyer.id),
            sandbox_tab_values(server.url, "plugin@kanzlei.test", boxes["plugin@kanzlei.test"]),
        )
        assert saved.ok, saved

        def wait_drained(limit: float) -> None:
            """Until the worker reports an empty queue (a signal, so no polling steals CPU)."""
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                drained.wait(max(0.0, deadline - time.monotonic()))
                drained.clear()
                if runtime.outbox.pending_count() == 0:
                    return
            raise RuntimeError("the queue did not drain in time")

        wait_drained(120)  # the firm's own calendar first
        before = count_contacts(server, "plugin@kanzlei.test")
        t0 = time.perf_counter()
        result = host.press(admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts], {"users": [lawyer.id]})
        assert result.ok, result.message
        enqueue_s = time.perf_counter() - t0
        wait_drained(300)
        plugin_s = time.perf_counter() - t0
        arrived = count_contacts(server, "plugin@kanzlei.test") - before
        host.close()
        close_connections()

    n = len(items)
    rows = {
        "plugin": {
            "seconds": round(plugin_s, 3),
            "items_per_s": round(n / plugin_s, 1),
            "arrived": arrived,
            "enqueue_seconds": round(enqueue_s, 3),
        },
        "raw_bulk_create": {"seconds": round(raw_s, 3), "items_per_s": round(n / raw_s, 1)},
        "naive_save": {"seconds": round(naive_s, 3), "items_per_s": round(n / naive_s, 1)},
    }
    vs_raw = raw_s / plugin_s
    vs_naive = naive_s / plugin_s
    where = "in this process" if args.in_process else "own process"
    print(
        f"{n} contacts into one mailbox (sandbox {where}, validation off, "
        f"{args.latency_ms:g} ms added per request)"
    )
    for name, r in rows.items():
        print(f"  {name:<16} {r['seconds']:>8.2f} s  {r['items_per_s']:>8.1f} items/s")
    print(f"plugin vs raw bulk: {vs_raw:.2f} x (target >= 0.8): {'OK' if vs_raw >= 0.8 else 'MISSED'}")
    print(f"plugin vs per-item: {vs_naive:.1f} x (target >= 10): {'OK' if vs_naive >= 10 else 'MISSED'}")
    print(
        f"arrived through the plugin: {arrived} of {n} (of its time, {enqueue_s:.2f} s was the menu action's enqueue)"
    )
    suffix = "_inprocess" if args.in_process else ""
    out = Path(args.json or f"benchmarks/results/p2_push_throughput_{args.latency_ms:g}ms{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "n": n,
        "latency_ms": args.latency_ms,
        "sandbox": where,
        "rows": rows,
        "vs_raw": vs_raw,
        "vs_naive": vs_naive,
    }
    out.write_text(json.dumps(result, indent=2))
    return 0 if arrived == n else 1


if __name__ == "__main__":
    sys.exit(main())
