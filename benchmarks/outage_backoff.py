"""Outage: 300 queued changes while the Exchange server answers nothing but 503 for 60 s.

The worker (real threads, exchangelib, the EWS sandbox in a thread of this process so its
request log can be read) pushes 300 contact changes into 5 mailboxes. During the outage
every request answers HTTP 503 without Retry-After. Printed:

* requests that reached the server during the outage, in all, in its first 10 s, and per
  back-off step of the server (goal: one per step after the first failures);
* seconds from the server's return to the last delivery (goal: <= 10 s);
* duplicates in the mailboxes (goal: 0) and the most attempts any job had collected when the
  server came back (goal: 0, the outage was the server's, not the jobs').

    python benchmarks/outage_backoff.py [--outage 60] [--changes 300] [--mailboxes 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outage", type=float, default=60.0, help="seconds the server answers 503")
    ap.add_argument("--changes", type=int, default=300)
    ap.add_argument("--mailboxes", type=int, default=5)
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from tsl_exchange_plugin import signals
    from tsl_exchange_plugin.backends.base import MailboxAccount
    from tsl_exchange_plugin.backends.ews.backend import EwsBackend
    from tsl_exchange_plugin.outbox.base import Change
    from tsl_exchange_plugin.outbox.snapshot import Snapshot, dump
    from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
    from tsl_exchange_plugin.sandbox.server import SandboxServer
    from tsl_exchange_plugin.sandbox.testing import SANDBOX_BUILD
    from tsl_exchange_plugin.worker.dispatch import make_mapper
    from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig
    from tsl_hostapi.types import Contact

    emails = {f"user{n}": f"user{n}@kanzlei.test" for n in range(args.mailboxes)}
    password = "Sandbox-Passwort-1!"
    per_mailbox = max(1, args.changes // args.mailboxes)
    steps: list[tuple[float, int]] = []  # (recorded at, failures in a row)
    waits: Counter[str] = Counter()  # "waits for a pause" notices per job (no attempt counted)
    lock = threading.Lock()

    with tempfile.TemporaryDirectory() as tmp:
        server = SandboxServer(
            Path(tmp) / "ews", mailboxes=dict.fromkeys(emails.values(), password), validate=False
        ).start()
        store = SQLiteOutbox(Path(tmp) / "outbox.sqlite3")

        def resolve(mailbox: str) -> MailboxAccount:
            email = emails[mailbox]
            return MailboxAccount(mailbox, email, server.url, email, password, auth_type="basic")

        worker = Worker(store, EwsBackend(version=SANDBOX_BUILD), resolve, make_mapper(), WorkerConfig())

        def on_server(sender, **extra):
            if sender is worker and extra["status"] == "paused":
                with lock:
                    steps.append((time.time(), extra["failures"]))

        def on_failed(sender, **extra):
            if sender is worker and extra.get("paused"):
                with lock:
                    waits[f"{extra['mailbox']}/{extra['record_key']}"] += 1

        signals.server_status_changed.connect(on_server)
        signals.push_failed.connect(on_failed)
        try:
            outage = server.inject("http_status", status=503, count=None)
            changes = []
            for i in range(per_mailbox):
                snap = Snapshot(
                    kind="contact", record=Contact(id=str(i), given_name="Eva", surname=f"Müller {i}")
                )
                changes += [Change(m, f"contact:{i}", "upsert", dump(snap)) for m in emails]
            store.enqueue(changes)
            began = time.time()
            worker.start()
            time.sleep(args.outage)
            # The jobs' own attempts when the server comes back: what delays them once it is up.
            max_attempts = max((j.attempts for j in store.jobs()), default=0)
            outage.count = 0
            returned = time.time()
            print(f"Server zurück nach {returned - began:.1f} s; warte auf die Zustellung …", flush=True)
            deadline = time.monotonic() + 600
            while store.pending_count() and time.monotonic() < deadline:
                time.sleep(0.05)
            drained = store.pending_count() == 0
            worker.stop()
            log = sorted((r for r in server.requests() if r.mailbox), key=lambda r: r.started)
            delivered = [r for r in log if r.operation == "CreateItem" and r.status == 200]
            last_delivery = max((r.finished for r in delivered), default=returned)
            duplicates = 0
            for email in emails.values():
                keys = Counter(
                    (item.get("extended_properties") or {}).get("tslRecordId")
                    for item in server.engine.list_items(email, "contacts")
                )
                duplicates += sum(n - 1 for n in keys.values() if n > 1)
        finally:
            signals.server_status_changed.disconnect(on_server)
            signals.push_failed.disconnect(on_failed)
            store.close()
            server.stop()

    during = [r for r in log if r.started < returned]
    per_step = []
    bounds = [s[0] for s in steps] + [returned]
    for n, (start, failures) in enumerate(steps):
        end = bounds[n + 1]
        if start >= returned:
            break
        count = sum(1 for r in during if start <= r.started < end)
        per_step.append({"step": failures, "from_s": round(start - began, 2), "requests": count})
    first = sum(1 for r in during if r.started < (steps[0][0] if steps else returned))
    result = {
        "outage_s": args.outage,
        "changes": per_mailbox * len(emails),
        "requests_during_outage": len(during),
        "requests_first_10s": sum(1 for r in during if r.started < began + 10),
        "requests_before_first_pause": first,
        "per_step": per_step,
        "seconds_return_to_last_delivery": round(last_delivery - returned, 2),
        "drained": drained,
        "duplicates": duplicates,
        "max_attempts_per_job_at_return": max_attempts,
        "max_pause_notices_per_job": max(waits.values(), default=0),
    }
    print(
        f"Anfragen während des Ausfalls: {result['requests_during_outage']} "
        f"(erste 10 s: {result['requests_first_10s']}, vor der ersten Pause: {first})"
    )
    for step in per_step:
        print(f"  Stufe {step['step']:>2} ab {step['from_s']:>6.2f} s: {step['requests']} Anfrage(n)")
    print(
        f"Von der Rückkehr des Servers bis zur letzten Zustellung: {result['seconds_return_to_last_delivery']} s "
        f"(Ziel <= 10 s); alles zugestellt: {drained}"
    )
    print(
        f"Duplikate: {duplicates} (Ziel 0); meiste Fehlversuche eines Auftrags bei der Rückkehr: {max_attempts} "
        f"(Ziel 0; Hinweise 'wartet auf die Pause' je Auftrag höchstens {result['max_pause_notices_per_job']})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    ok = drained and duplicates == 0 and result["seconds_return_to_last_delivery"] <= 10
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
