"""Reconcile sweep: one mailbox with N items of ours (default 10,000) and 1 % drift.

The sandbox runs as its own process (``tsl-exchange sandbox``, as a server is never inside
the client) with ``--latency-ms`` (default 20) added to every request, as a hosted
Exchange's round trip would. 1 % of the items are then changed by another EWS client (the
"phone": exchangelib updating the display name), so their ChangeKeys differ; the sweep
must read only those in full. Reported: sweep time (goal < 60 s), full reads, requests by
operation, server busy time, and the peak of this process's Python heap during the sweep
(tracemalloc, goal < 100 MB). ``NO_TRACEMALLOC=1`` times the sweep without tracing.

    python benchmarks/reconcile_sweep.py [--n 10000] [--latency-ms 20] [--json results/reconcile.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsl_exchange_plugin import PLUGIN_ID, licence  # noqa: E402
from tsl_exchange_plugin.backends.ews.convert import register_record_id_property  # noqa: E402
from tsl_exchange_plugin.cli.demo import sandbox_tab_values  # noqa: E402
from tsl_exchange_plugin.core.fidelity import check_account  # noqa: E402
from tsl_exchange_plugin.plugin import runtime_for  # noqa: E402
from tsl_exchange_plugin.sandbox.testing import exchangelib_account, sandbox_process  # noqa: E402
from tsl_hostapi.reference import ReferenceHost  # noqa: E402
from tsl_hostapi.reference.sample_firm import generate_firm  # noqa: E402
from tsl_hostapi.types import SettingsContext  # noqa: E402

EMAIL, PASSWORD = "alice@kanzlei.test", "Alice-Bench-1!"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tsl-bench-sweep-"))
    key = Ed25519PrivateKey.generate()
    os.environ[licence.DEV_KEYS_ENV] = "1"  # the benchmark's own key counts only behind this switch
    os.environ[licence.TRUSTED_KEYS_ENV] = f"bench={licence.public_key_b64(key)}"
    claims = licence.LicenceClaims("Bench", (licence.MODULE,), 10, dt.date.today() + dt.timedelta(days=30))
    with sandbox_process(tmp / "ews", {EMAIL: PASSWORD}, delay_ms=args.latency_ms) as server:
        result = _run(args, tmp, key, claims, server)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _stats(server) -> dict:
    with urllib.request.urlopen(server.url.replace("/EWS/Exchange.asmx", "/sandbox/api/stats")) as resp:
        return json.loads(resp.read())


def _run(args, tmp: Path, key, claims, server) -> dict:
    firm = generate_firm(seed=5, contacts=args.n)
    host = ReferenceHost(tmp / "host")
    host.load_firm(firm)
    host.startup()
    host.install_licence(PLUGIN_ID, licence.sign(claims, key, "bench"))
    assert host.enable(PLUGIN_ID).allowed
    runtime = runtime_for(host)
    runtime.admin.save_firm_settings({"reconcile_auto": False, "reconcile_time": ""})
    admin = next(u for u in firm.users if u.is_admin)
    user = next(u for u in firm.users if u.role.startswith("Rechtsanw"))
    values = sandbox_tab_values(server.url, EMAIL, PASSWORD)
    assert host.save_tab(admin, "user", f"{PLUGIN_ID}.user", SettingsContext("user", user.id), values).ok
    t0 = time.monotonic()
    runtime.subscriptions.change_bulk([c.id for c in host.iter_records("contact")], add=[user.id])
    assert runtime.worker.drain(timeout=1800)
    print(f"{args.n} Kontakte übertragen in {time.monotonic() - t0:.1f} s")
    # The phone: another client changes 1 % of our contacts.
    phone = exchangelib_account(server, EMAIL, password=PASSWORD)
    register_record_id_property()
    ours = list(phone.contacts.filter(tsl_record_id__exists=True).only("display_name"))
    drift = ours[::100]
    for item in drift:
        item.display_name = "am Telefon geändert"
    phone.bulk_update([(item, ["display_name"]) for item in drift])
    # The server probe runs at "Testen", not inside the timed sweep.
    check_account(runtime, runtime.config.resolve_account(user.id))
    before = _stats(server)
    trace = not os.environ.get("NO_TRACEMALLOC")
    if trace:
        tracemalloc.start()
    t0 = time.monotonic()
    (report,) = runtime.reconciler.sweep([user.id])
    elapsed = time.monotonic() - t0
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    after = _stats(server)
    ops = {
        op: n - before["operations"].get(op, 0)
        for op, n in after["operations"].items()
        if n - before["operations"].get(op, 0)
    }
    host.close()
    return {
        "items": len(ours),
        "drifted": len(drift),
        "latency_ms": args.latency_ms,
        "sweep_seconds": round(elapsed, 2),
        "server_busy_seconds": round(after["busy_seconds"] - before["busy_seconds"], 2),
        "checked": report.checked,
        "full_reads": report.full_reads,
        "phone_edits_found": report.count("phone_edit"),
        "requests": ops,
        "peak_heap_mb": round(peak / 1e6, 1) if trace else None,
    }


if __name__ == "__main__":
    sys.exit(main())
