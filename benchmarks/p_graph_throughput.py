"""P-Graph: 1,000 contacts into one Microsoft 365 mailbox through the Graph backend.

Three ways, against one sandbox process (``tsl-exchange sandbox --serve both``) with the same
latency added to every HTTP request (``--latency-ms``, default 50 ms, a hosted service's round
trip), validation off as for every benchmark:

* graph: Extras › Auswahl ändern › Exchange-Sync setzen for 1,000 contacts for a lawyer whose
  mailbox is on Microsoft 365, timed until the queue is drained (enqueue, worker, mapping, JSON
  $batch of 20, at most 4 requests per mailbox in flight, sync state);
* naive: one POST /users/{id}/contacts per contact, one after the other (the same bodies);
* ews: the same menu action for a lawyer on EWS (the P2 path), at the same latency.

Targets: graph >= 10 x naive, graph >= 0.8 x ews. The latency is added per HTTP request; a real
Graph runs the 20 requests of an unordered batch 4 at a time, so on a real tenant a batch costs
more than one round trip (see the README's decisions).

    python benchmarks/p_graph_throughput.py [--n 1000] [--latency-ms 50] [--json ...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TENANT = "7d1e9c2a-3b4f-4a6d-8e1f-0a2b3c4d5e6f"
CLIENT = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
SECRET = "bench~" + os.urandom(8).hex()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def sandbox(data: Path, boxes: dict[str, str], delay_ms: float) -> Iterator[dict[str, str]]:
    port, gport = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "tsl_exchange_plugin.cli", "sandbox", "--serve", "both", "--no-validate"]
    cmd += ["--port", str(port), "--graph-port", str(gport), "--data", str(data), "--delay-ms", str(delay_ms)]
    cmd += ["--graph-app", f"{TENANT}:{CLIENT}:{SECRET}"]
    cmd += [arg for email, pw in boxes.items() for arg in ("--mailbox", f"{email}:{pw}")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        info: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the sandbox process ended")
            key, _, value = line.strip().partition(": ")
            info[key] = value
            if line.startswith("Beenden"):
                break
        yield {
            "ews": info["EWS-Sandbox läuft"],
            "graph": info["Graph-Sandbox läuft"],
            "authority": info["Anmeldedienst (Authority)"],
            "cert": info["Zertifikat (Graph)"],
        }
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--naive-n", type=int, default=0, help="items for the naive way (default: --n)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    import httpx

    from tsl_exchange_plugin import PLUGIN_ID, licence, signals
    from tsl_exchange_plugin.backends.graph import wire
    from tsl_exchange_plugin.backends.graph.auth import TokenSource
    from tsl_exchange_plugin.backends.graph.backend import CA_FILE_ENV
    from tsl_exchange_plugin.cli.demo import sandbox_tab_values
    from tsl_exchange_plugin.mapping.contact import map_contact
    from tsl_exchange_plugin.plugin import runtime_for
    from tsl_exchange_plugin.sandbox.graph.testing import graph_account
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import generate_firm
    from tsl_hostapi.types import SettingsContext

    tmp = Path(tempfile.mkdtemp(prefix="tsl-pgraph-"))
    boxes = {"graph@kanzlei.test": "pw-g", "naive@kanzlei.test": "pw-n", "ews@kanzlei.test": "pw-e"}
    firm = generate_firm(seed=5, contacts=args.n)
    contacts = firm.contacts[: args.n]
    naive_n = args.naive_n or len(contacts)
    with sandbox(tmp / "sandbox", boxes, args.latency_ms) as sb:
        os.environ[CA_FILE_ENV] = sb["cert"]
        # -- naive: one request per contact
        gs = type("GS", (), {"graph_url": sb["graph"], "url": sb["authority"]})()
        naive_acc = graph_account(
            gs, "naive@kanzlei.test", tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET
        )
        token = TokenSource(verify=sb["cert"]).token(naive_acc)
        bodies = [wire.create_body(map_contact(c, record_key=c.ref.key)) for c in contacts[:naive_n]]
        import ssl

        with httpx.Client(verify=ssl.create_default_context(cafile=sb["cert"])) as client:
            url = f"{sb['graph']}/users/naive@kanzlei.test/contacts"
            headers = {"Authorization": f"Bearer {token}"}
            t0 = time.perf_counter()
            for body in bodies:
                resp = client.post(url, json=body, headers=headers, timeout=30)
                resp.raise_for_status()
            naive_s = (time.perf_counter() - t0) * len(contacts) / naive_n

        # -- the plugin, one lawyer on Graph and one on EWS
        key = Ed25519PrivateKey.generate()
        os.environ[licence.DEV_KEYS_ENV] = "1"  # the benchmark's own licence key is a development key
        os.environ[licence.TRUSTED_KEYS_ENV] = f"bench={licence.public_key_b64(key)}"
        host = ReferenceHost(tmp / "host")
        host.load_firm(firm)
        host.startup()
        claims = licence.LicenceClaims("Bench", (licence.MODULE,), 10, dt.date.today() + dt.timedelta(days=9))
        host.install_licence(PLUGIN_ID, licence.sign(claims, key, "bench"))
        assert host.enable(PLUGIN_ID).allowed
        runtime = runtime_for(host)
        runtime.admin.save_firm_settings({"graph_authority": sb["authority"]})
        drained = threading.Event()
        signals.queue_drained.connect(lambda sender, **_: drained.set(), weak=False)
        admin = next(u for u in firm.users if u.is_admin)
        g_user, e_user = [u for u in firm.users if u.role.startswith("Rechtsanw")][:2]
        iface = host.save_tab(
            admin,
            "interfaces",
            f"{PLUGIN_ID}.interfaces",
            SettingsContext("interfaces"),
            {"graph_tenant_id": TENANT, "graph_client_id": CLIENT, "graph_secret": SECRET},
        )
        assert iface.ok, iface
        for user, values in (
            (g_user, {"enabled": True, "host": sb["graph"], "email": "graph@kanzlei.test"}),
            (e_user, sandbox_tab_values(sb["ews"], "ews@kanzlei.test", boxes["ews@kanzlei.test"])),
        ):
            saved = host.save_tab(
                admin, "user", f"{PLUGIN_ID}.user", SettingsContext("user", user.id), values
            )
            assert saved.ok, saved

        def wait_drained(limit: float) -> None:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                drained.wait(max(0.0, deadline - time.monotonic()))
                drained.clear()
                if runtime.outbox.pending_count() == 0:
                    return
            raise RuntimeError("the queue did not drain in time")

        wait_drained(300)  # the firm's own calendar first

        def run(user: Any) -> float:
            t0 = time.perf_counter()
            result = host.press(
                admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts], {"users": [user.id]}
            )
            assert result.ok, result.message
            wait_drained(600)
            return time.perf_counter() - t0

        graph_s = run(g_user)
        ews_s = run(e_user)
        arrived = sum(1 for k in runtime.outbox.sync_keys(g_user.id) if k.startswith("contact:"))
        failed = runtime.outbox.jobs(status="failed")
        host.close()

    n = len(contacts)
    rows = {
        "graph_plugin": {"seconds": round(graph_s, 3), "items_per_s": round(n / graph_s, 1)},
        "naive_per_item": {
            "seconds": round(naive_s, 3),
            "items_per_s": round(n / naive_s, 1),
            "measured_items": naive_n,
        },
        "ews_plugin": {"seconds": round(ews_s, 3), "items_per_s": round(n / ews_s, 1)},
    }
    vs_naive = naive_s / graph_s
    vs_ews = ews_s / graph_s
    print(
        f"{n} contacts into one mailbox, {args.latency_ms:g} ms added per HTTP request (sandbox in its own process)"
    )
    for name, r in rows.items():
        print(f"  {name:<16} {r['seconds']:>8.2f} s  {r['items_per_s']:>8.1f} items/s")
    print(f"graph vs naive per-item: {vs_naive:.1f} x (target >= 10): {'OK' if vs_naive >= 10 else 'MISSED'}")
    print(f"graph vs ews plugin:     {vs_ews:.2f} x (target >= 0.8): {'OK' if vs_ews >= 0.8 else 'MISSED'}")
    print(f"arrived through Graph: {arrived} of {n}; failed jobs: {len(failed)}")
    out = Path(args.json or f"benchmarks/results/p_graph_throughput_{args.latency_ms:g}ms.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"n": n, "latency_ms": args.latency_ms, "rows": rows, "vs_naive": vs_naive, "vs_ews": vs_ews},
            indent=2,
        )
    )
    return 0 if arrived >= n and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
