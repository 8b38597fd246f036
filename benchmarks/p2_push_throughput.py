"""P2: 1,000 contacts into one mailbox, three ways, on the same sandbox in the same run.

* plugin: Extras › Auswahl ändern › Exchange-Sync setzen for 1,000 contacts, timed
  until the last one is in the mailbox (enqueue, worker, mapping, exchangelib, sync state);
* raw: exchangelib ``bulk_create`` of the same 1,000 contacts (chunks of 100, its default);
* naive: one exchangelib ``save()`` per contact.

Each way writes into its own mailbox; the sandbox runs with schema validation off
(as for every benchmark). Targets: plugin >= 0.8 x raw, plugin >= 10 x naive.

``--latency-ms`` adds that much server time to every request (the sandbox's ``delay``
fault), as a hosted Exchange's round trip would: on loopback a request costs well under a
millisecond, which flatters the per-item way; hosted Exchange answers in tens of ms.

    python benchmarks/p2_push_throughput.py [--n 1000] [--latency-ms 20] [--json ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="server time added to every request")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from tsl_exchange_plugin import PLUGIN_ID, licence
    from tsl_exchange_plugin.demo import sandbox_tab_values
    from tsl_exchange_plugin.exchange.ews import register_record_id_property, to_exchangelib
    from tsl_exchange_plugin.mapping.contact import map_contact
    from tsl_exchange_plugin.plugin import runtime_for
    from tsl_exchange_plugin.sandbox.server import SandboxServer
    from tsl_exchange_plugin.sandbox.testing import exchangelib_account
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import generate_firm
    from tsl_hostapi.types import SettingsContext

    tmp = Path(tempfile.mkdtemp(prefix="tsl-p2-"))
    boxes = {
        "plugin@kanzlei.test": "pw-plugin",
        "raw@kanzlei.test": "pw-raw",
        "naive@kanzlei.test": "pw-naive",
    }
    server = SandboxServer(tmp / "sandbox", mailboxes=boxes, validate=False).start()
    if args.latency_ms > 0:
        server.inject("delay", seconds=args.latency_ms / 1000.0, count=None)
    firm = generate_firm(seed=5, contacts=args.n)
    contacts = firm.contacts[: args.n]
    items = [map_contact(c, record_key=c.ref.key) for c in contacts]
    register_record_id_property()

    # -- raw bulk_create
    raw = exchangelib_account(server, "raw@kanzlei.test", auth="basic", password=boxes["raw@kanzlei.test"])
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
    t0 = time.perf_counter()
    for obj in objs:
        obj.folder = naive.contacts
        obj.save()
    naive_s = time.perf_counter() - t0

    # -- through the plugin
    key = Ed25519PrivateKey.generate()
    os.environ[licence.TRUSTED_KEYS_ENV] = f"bench={licence.public_key_b64(key)}"
    host = ReferenceHost(tmp / "host")
    host.load_firm(firm)
    host.startup()
    claims = licence.LicenceClaims("Bench", (licence.MODULE,), 10, dt.date.today() + dt.timedelta(days=9))
    host.install_licence(PLUGIN_ID, licence.sign(claims, key, "bench"))
    assert host.enable(PLUGIN_ID).allowed
    runtime = runtime_for(host)
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
    deadline = time.monotonic() + 120
    while runtime.outbox.pending_count() and time.monotonic() < deadline:  # the firm's own calendar first
        time.sleep(0.05)
    before = len(server.engine.list_items("plugin@kanzlei.test", "contacts"))
    t0 = time.perf_counter()
    result = host.press(admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts], {"users": [lawyer.id]})
    assert result.ok, result.message
    enqueue_s = time.perf_counter() - t0
    while time.monotonic() < deadline:
        if runtime.outbox.pending_count() == 0:
            break
        time.sleep(0.05)  # coarse, so the polling does not compete with the worker for the GIL
    plugin_s = time.perf_counter() - t0
    arrived = len(server.engine.list_items("plugin@kanzlei.test", "contacts")) - before
    host.close()
    server.stop()

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
    print(
        f"{n} contacts into one mailbox (sandbox, validation off, {args.latency_ms:g} ms added per request)"
    )
    for name, r in rows.items():
        print(f"  {name:<16} {r['seconds']:>8.2f} s  {r['items_per_s']:>8.1f} items/s")
    print(f"plugin vs raw bulk: {vs_raw:.2f} x (target >= 0.8): {'OK' if vs_raw >= 0.8 else 'MISSED'}")
    print(f"plugin vs per-item: {vs_naive:.1f} x (target >= 10): {'OK' if vs_naive >= 10 else 'MISSED'}")
    print(
        f"arrived through the plugin: {arrived} of {n} (of its time, {enqueue_s:.2f} s was the menu action's enqueue)"
    )
    out = Path(args.json or f"benchmarks/results/p2_push_throughput_{args.latency_ms:g}ms.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"n": n, "latency_ms": args.latency_ms, "rows": rows, "vs_raw": vs_raw, "vs_naive": vs_naive}
    out.write_text(json.dumps(result, indent=2))
    return 0 if arrived == n else 1


if __name__ == "__main__":
    sys.exit(main())
