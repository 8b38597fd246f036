"""Sandbox throughput: exchangelib ``bulk_create`` of 1,000 Contacts (chunks of 100) into one mailbox.

Runs once with schema validation on and once off, prints items per second, and writes
``benchmarks/results/sandbox_throughput.json``. The time spent inside ``engine.handle`` is measured
separately so the report shows whether the engine, the HTTP layer or the client dominates.

    .venv/bin/python benchmarks/sandbox_throughput.py [--items 1000] [--chunk 100] [--profile]

``--profile`` runs cProfile around ``engine.handle`` (the server thread) and prints the top entries.

Both runs above share one process (and its GIL) between exchangelib and the server. A third run
starts the sandbox the way ``tsl-exchange sandbox`` runs it, as its own process, validation off:
that is how a client meets a real server, and the figure the 1,000 items/s target is about.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from exchangelib import Contact
from exchangelib.indexed_properties import EmailAddress, PhoneNumber
from exchangelib.protocol import close_connections

from tsl_exchange_plugin.sandbox.server import SandboxServer
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS, exchangelib_account, sandbox_process

RESULTS = Path(__file__).resolve().parent / "results" / "sandbox_throughput.json"
MAILBOX = "alice@kanzlei.test"


class _HandleTimer:
    """Wraps ``engine.handle``: total seconds inside it, optionally under one cProfile profile."""

    def __init__(self, engine: Any, profile: bool):
        self._inner = engine.handle
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.calls = 0
        self.profiler = cProfile.Profile() if profile else None
        engine.handle = self

    def __call__(self, mailbox: str, body: bytes) -> tuple[int, bytes]:
        with self._lock:  # one connection in the benchmark; the lock keeps the profiler single-threaded
            start = time.perf_counter()
            if self.profiler is not None:
                result = self.profiler.runcall(self._inner, mailbox, body)
            else:
                result = self._inner(mailbox, body)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            return result


def _contacts(account: Any, n: int, tag: str) -> list[Contact]:
    return [
        Contact(
            folder=account.contacts,
            given_name=f"Vorname{i}",
            surname=f"Nachname-{tag}-{i}",
            display_name=f"Nachname-{tag}-{i}, Vorname{i}",
            company_name="Kanzlei Muster & Partner",
            email_addresses=[EmailAddress(label="EmailAddress1", email=f"person{i}@example.test")],
            phone_numbers=[PhoneNumber(label="BusinessPhone", phone_number=f"+49 30 {100000 + i}")],
        )
        for i in range(n)
    ]


def _client_serialize_seconds(account: Any, contacts: list[Contact], chunk: int) -> float:
    """What exchangelib alone needs to turn the contacts into CreateItem XML (no network, no server)."""
    from exchangelib.services import CreateItem
    from exchangelib.util import xml_to_str

    svc = CreateItem(account=account, chunk_size=chunk)
    start = time.perf_counter()
    for i in range(0, len(contacts), chunk):
        payload = svc.get_payload(
            items=contacts[i : i + chunk],
            folder=account.contacts,
            message_disposition="SaveOnly",
            send_meeting_invitations="SendToNone",
        )
        xml_to_str(payload)
    return time.perf_counter() - start


def run_one(validate: bool, items: int, chunk: int, profile: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ews-bench-") as tmp:
        server = SandboxServer(
            tmp, mailboxes={MAILBOX: SANDBOX_PASSWORDS[MAILBOX]}, validate=validate
        ).start()
        try:
            account = exchangelib_account(server, MAILBOX, auth="basic")
            account.contacts  # noqa: B018 - warm-up: folder lookup and connection outside the timing
            serialize = _client_serialize_seconds(account, _contacts(account, items, "s"), chunk)
            contacts = _contacts(account, items, "v" if validate else "n")
            timer = _HandleTimer(server.engine, profile)
            busy_before = server.busy_seconds
            start = time.perf_counter()
            results = account.bulk_create(folder=account.contacts, items=contacts, chunk_size=chunk)
            elapsed = time.perf_counter() - start
            busy = server.busy_seconds - busy_before
            failures = [r for r in results if isinstance(r, Exception)]
            stored = len(server.engine.list_items(MAILBOX, "contacts"))
            out = {
                "validate": validate,
                "items": items,
                "chunk_size": chunk,
                "seconds": round(elapsed, 3),
                "items_per_second": round(items / elapsed, 1),
                "server_seconds": round(busy, 3),
                "server_items_per_second": round(items / busy, 1) if busy else None,
                "engine_seconds": round(timer.seconds, 3),
                "engine_share": round(timer.seconds / elapsed, 3),
                "client_serialize_seconds": round(serialize, 3),
                "client_serialize_share": round(serialize / elapsed, 3),
                "requests": timer.calls,
                "failures": len(failures),
                "stored": stored,
                "violations": server.engine.violations,
            }
            if timer.profiler is not None:
                buf = io.StringIO()
                pstats.Stats(timer.profiler, stream=buf).sort_stats("cumulative").print_stats(25)
                out["profile_top"] = buf.getvalue()
            return out
        finally:
            close_connections()
            server.stop()


def run_separate_process(items: int, chunk: int) -> dict[str, Any]:
    """The sandbox as its own process (``tsl-exchange sandbox --no-validate``), the client here."""
    password = SANDBOX_PASSWORDS[MAILBOX]
    with tempfile.TemporaryDirectory(prefix="ews-bench-proc-") as tmp:
        with sandbox_process(tmp, {MAILBOX: password}) as remote:
            try:
                account = exchangelib_account(remote, MAILBOX, auth="basic", password=password)
                account.contacts  # noqa: B018 - warm-up outside the timing
                contacts = _contacts(account, items, "p")
                start = time.perf_counter()
                results = account.bulk_create(folder=account.contacts, items=contacts, chunk_size=chunk)
                elapsed = time.perf_counter() - start
                failures = [r for r in results if isinstance(r, Exception)]
                stored = account.contacts.all().count()
            finally:
                close_connections()
    return {
        "validate": False,
        "separate_process": True,
        "items": items,
        "chunk_size": chunk,
        "seconds": round(elapsed, 3),
        "items_per_second": round(items / elapsed, 1),
        "failures": len(failures),
        "stored": stored,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile engine.handle and print the top entries"
    )
    args = parser.parse_args(argv)
    runs = [run_one(v, args.items, args.chunk, args.profile) for v in (True, False)]
    for r in runs:
        label = "validation on " if r["validate"] else "validation off"
        print(
            f"{label}: {r['items']} contacts in {r['seconds']:.2f} s = {r['items_per_second']:.0f} items/s "
            f"(server alone {r['server_items_per_second']:.0f} items/s; "
            f"engine {r['engine_share'] * 100:.0f} %, exchangelib building the requests "
            f"{r['client_serialize_share'] * 100:.0f} % of the time; {r['requests']} requests, "
            f"{r['failures']} failures, {r['stored']} stored, {r['violations']} violations)"
        )
        if "profile_top" in r:
            print(r["profile_top"])
    separate = run_separate_process(args.items, args.chunk)
    print(
        f"validation off, sandbox in its own process: {separate['items']} contacts in "
        f"{separate['seconds']:.2f} s = {separate['items_per_second']:.0f} items/s "
        f"({separate['failures']} failures, {separate['stored']} stored)"
    )
    runs.append(separate)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "exchangelib bulk_create of Contacts into one sandbox mailbox (HTTP, Basic, one connection)",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "runs": [{k: v for k, v in r.items() if k != "profile_top"} for r in runs],
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {RESULTS}")
    ok = all(r["failures"] == 0 and r["stored"] == r["items"] for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
