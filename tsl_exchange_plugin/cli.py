"""``tsl-exchange``: the demo, the sandbox, a worker process and the operators' commands.

The operators' commands work on a reference host's data directory (``--data``);
a real timeSensor LEGAL installation offers the same through its own shell.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from . import PLUGIN_ID, __version__


def _host(data: str):
    from tsl_hostapi.reference import ReferenceHost

    if not (Path(data) / "host.sqlite3").exists():
        raise SystemExit(f"Kein timeSensor-Datenverzeichnis gefunden: {data} (Option --data prüfen)")
    return ReferenceHost(data)


@contextlib.contextmanager
def _opened(data: str, **runtime_options):
    """The reference host on ``data`` and the plugin's runtime on it (worker not started)."""
    from .runtime import SyncRuntime

    host = _host(data)
    runtime = SyncRuntime(host, start_worker=False, **runtime_options)
    try:
        yield host, runtime
    finally:
        runtime.close()
        host.close()


def _user(host, ident: str):
    for user in host.list_users():
        if ident in (user.id, user.email, user.name):
            return user
    raise SystemExit(f"Benutzer nicht gefunden: {ident}")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(data=args.data, keep=args.keep, contacts=args.contacts, port=args.port)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import cli as sandbox_cli

    return sandbox_cli.run(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from . import signals
    from .worker import WorkerConfig

    if args.per_server < 1:
        print("Fehler: --per-server muss mindestens 1 sein.", file=sys.stderr)
        return 2
    if args.data and args.queue:
        print(
            "Fehler: --data und --queue schließen sich aus: mit --data gilt die Warteschlange des Hosts.",
            file=sys.stderr,
        )
        return 2
    config = WorkerConfig(threads=args.threads, lease_seconds=args.lease)
    signals.mailbox_status_changed.connect(_report_status)
    try:
        if not args.data:
            return _hostless_worker(args, config)
        from .exchange.ews import EwsBackend
        from .exchange.routing import RoutingBackend

        # Microsoft 365 mailboxes go through Graph, the others through EWS.
        backend = RoutingBackend(ews=EwsBackend(max_in_flight_per_server=args.per_server))
        with _opened(args.data, worker_config=config, backend=backend) as (_, runtime):
            return _run_worker(args, runtime.worker, runtime.outbox)
    finally:
        signals.mailbox_status_changed.disconnect(_report_status)


def _report_status(sender, mailbox: str = "", status: str = "", reason: str = "", **_) -> None:
    """Operators see the gate and parked mailboxes on the worker's console."""
    if mailbox == "*" and status == "held":
        print(f"Angehalten: {reason}", flush=True)
    elif mailbox == "*" and status == "resumed":
        print("Übertragung läuft wieder.", flush=True)
    elif status == "parked":
        print(f"Postfach {mailbox} angehalten: {reason}", flush=True)


def _hostless_worker(args: argparse.Namespace, config) -> int:
    """``tsl-exchange worker --queue URL``: a worker on any machine, with only the queue and the key.

    Everything else (accounts, the users' time zones and lead times, the firm's rules, the
    administrator's hold, the licence) the host has written into the queue's store."""
    import os

    from .credentials import VaultError, open_worker_vault
    from .exchange.ews import EwsBackend
    from .exchange.routing import RoutingBackend
    from .mapping.dispatch import make_mapper
    from .outbox.factory import open_outbox
    from .runtime import QUEUE_URL_ENV
    from .shared_state import StoreContext
    from .worker import Worker

    url = (args.queue or os.environ.get(QUEUE_URL_ENV) or "").strip()
    if not url:
        print(
            f"Fehler: Keine Warteschlange angegeben. Bitte --queue postgresql://... angeben oder {QUEUE_URL_ENV} "
            "setzen (auf dem Host-Rechner geht auch --data VERZEICHNIS).",
            file=sys.stderr,
        )
        return 2
    try:
        vault = open_worker_vault(args.key_file)
    except VaultError as exc:
        print(f"Fehler: {exc}", file=sys.stderr)
        return 2
    try:
        outbox = open_outbox(url, os.getcwd())
    except ValueError as exc:
        print(f"Fehler: {exc}", file=sys.stderr)
        return 2

    worker = None
    try:
        context = StoreContext(outbox, vault)
        backend = RoutingBackend(
            ews=EwsBackend(
                max_in_flight_per_server=args.per_server,
                target_folders=context.target_folders(),
                shared_slots=outbox,
            )
        )
        worker = Worker(
            outbox,
            backend,
            context.resolve_account,
            make_mapper(context.mapping_context),
            config,
            gate=context.gate,
        )
        for mailbox in context.unpark_wrong_key():
            print(f"Postfach {mailbox} wieder freigegeben (neuer Schlüssel).", flush=True)
        return _run_worker(args, worker, outbox)
    finally:
        if worker is not None:
            worker.stop()
        outbox.close()


def _run_worker(args: argparse.Namespace, worker, outbox) -> int:
    if args.once:
        drained = worker.drain(timeout=args.timeout)
        left = outbox.pending_count()
        print("Warteschlange leer." if drained else f"Noch {left} Änderungen offen.")
        return 0 if drained else 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    print(f"Exchange-Sync-Worker läuft ({args.threads} Threads). Beenden mit Strg+C.", flush=True)
    stop.wait()
    return 0


def cmd_test_connection(args: argparse.Namespace) -> int:
    from .connection_test import run_test

    with _opened(args.data) as (host, runtime):
        user = _user(host, args.user)
        admin = next((u for u in host.list_users() if u.is_admin), user)
        result = run_test(runtime, admin, {"user_id": user.id})
    print(("OK: " if result.ok else "FEHLER: ") + result.message)
    return 0 if result.ok else 1


def cmd_resync(args: argparse.Namespace) -> int:
    with _opened(args.data) as (host, runtime):
        user = _user(host, args.user)
        count = runtime.resync(user.id)
        print(f"{count} Einträge für {user.name} erneut eingereiht.")
        drained = runtime.worker.drain(timeout=args.timeout)
        left = runtime.outbox.pending_count(user.id)
    print("Übertragen." if drained else f"Noch {left} offen; der Worker überträgt sie.")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .credentials import KEY_FILE_NAME, Vault, rotate_key_file

    with _opened(args.data) as (host, runtime):
        rotate_key_file(Path(runtime.data_dir) / KEY_FILE_NAME)
        vault = Vault.open(runtime.data_dir)
        count = 0
        for user in host.list_users():
            settings = runtime.accounts.load(user.id)
            if settings.password_token:
                data = asdict(settings)
                data["password_token"] = vault.rotate(settings.password_token)
                host.settings.set(PLUGIN_ID, f"user:{user.id}", data)
                count += 1
        runtime.publish_worker_state()  # worker processes read the new tokens (and need the new key file)
    print(f"Neuer Schlüssel aktiv; {count} Passwörter neu verschlüsselt.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsl-exchange", description="Exchange Sync for timeSensor LEGAL")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="ausführliche Protokollausgabe")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="die ganze Geschichte auf einem Rechner vorführen")
    p.add_argument(
        "--data", help="Verzeichnis für Host, Warteschlange und Sandbox (Standard: neues Temp-Verzeichnis)"
    )
    p.add_argument("--keep", action="store_true", help="danach weiterlaufen lassen, zum Ansehen")
    p.add_argument("--contacts", type=int, default=300, help="Anzahl Kontakte der Beispielkanzlei")
    p.add_argument("--port", type=int, default=0, help="Port der Sandbox (Standard: frei)")
    p.set_defaults(func=cmd_demo)

    from .sandbox import cli as sandbox_cli

    p = sub.add_parser("sandbox", help="den EWS-Sandbox-Server starten")
    sandbox_cli.add_arguments(p)
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("worker", help="Worker als eigener Prozess")
    p.add_argument(
        "--data", help="Datenverzeichnis des Hosts (nur wenn der Worker auf dem Host-Rechner läuft)"
    )
    p.add_argument(
        "--queue",
        metavar="URL",
        help="Warteschlange, z. B. postgresql://benutzer@server/datenbank (Standard: TSL_EXCHANGE_QUEUE_URL)",
    )
    p.add_argument(
        "--key-file",
        metavar="DATEI",
        help="Schlüsseldatei für die Passwörter (credentials.key des Hosts; sonst TSL_EXCHANGE_KEY)",
    )
    p.add_argument(
        "--per-server",
        type=int,
        default=10,
        metavar="N",
        help="höchstens so viele Anfragen gleichzeitig je Exchange-Server, über alle Worker (Standard 10)",
    )
    p.add_argument("--threads", type=int, default=4)
    p.add_argument(
        "--lease", type=float, default=60.0, help="Sekunden, nach denen ein toter Worker abgelöst wird"
    )
    p.add_argument("--once", action="store_true", help="nur abarbeiten, was fällig ist, dann beenden")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="Zustand der Postfächer")
    p.add_argument("--data", required=True)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("test-connection", help="Verbindungstest für einen Benutzer")
    p.add_argument("user")
    p.add_argument("--data", required=True)
    p.set_defaults(func=cmd_test_connection)

    p = sub.add_parser("resync", help="alles für ein Postfach erneut übertragen (ohne Dubletten)")
    p.add_argument("user")
    p.add_argument("--data", required=True)
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=cmd_resync)

    p = sub.add_parser("rotate-key", help="Schlüssel für die Passwortverschlüsselung erneuern")
    p.add_argument("--data", required=True)
    p.set_defaults(func=cmd_rotate_key)
    _admin_commands(sub)  # --- admin (issue 7)
    return parser


# --- admin (issue 7): status --audit, audit, cleanup


def cmd_status_admin(args: argparse.Namespace) -> int:
    """``status`` as before, with the summary line (licence hold) and, with ``--audit``, the audit log."""
    from dataclasses import asdict

    from .status import mailbox_rows, summary

    unavailable = _queue_unavailable(args.data)
    if unavailable:
        print(unavailable)
        return 1
    with _opened(args.data) as (host, runtime):
        rows = mailbox_rows(host, runtime)
        entries = runtime.audit.entries(limit=args.limit) if args.audit else []
        if args.json:
            data: dict | list = [r.as_dict() for r in rows]
            if args.audit:
                data = {
                    "summary": summary(runtime),
                    "journal": asdict(runtime.journal.info()),
                    "mailboxes": data,
                    "audit": [e.as_dict() for e in entries],
                }
            print(json.dumps(data, ensure_ascii=False, indent=2))
            return 0
        print(summary(runtime))
        print(
            f"{'Benutzer':<28} {'Zustand':<30} {'offen':>6} {'fehlg.':>6}  {'letzte Übertragung':<20} "
            f"{'Test':<14} letzter Fehler"
        )
        for r in rows:
            print(
                f"{r.user_name[:28]:<28} {r.state_label:<30} {r.pending:>6} {r.failed:>6}  "
                f"{r.last_success:<20} {r.test_label:<14} {r.last_error}"
            )
            for failure in r.failures:
                print(f"    fehlgeschlagen: {failure}")
        if args.audit:
            _print_audit(entries)
        return 0


def _queue_unavailable(data: str) -> str:
    """Why the queue cannot be opened, with what waits in the journal meanwhile ("": it opens)."""
    import os

    from .outbox.factory import open_outbox
    from .outbox.journal import Journal
    from .runtime import FIRM_KEY, QUEUE_URL_ENV

    host = _host(data)
    try:
        firm = host.settings.get(PLUGIN_ID, FIRM_KEY, {})
        url = os.environ.get(QUEUE_URL_ENV) or (firm.get("queue_url") if isinstance(firm, dict) else None)
        data_dir = host.data_dir(PLUGIN_ID)
        try:
            open_outbox(url, data_dir).close()
        except ValueError as exc:
            info = Journal.at(data_dir).info()
            return (
                f"Die Warteschlange ist nicht verfügbar: {exc}\nJournal: {info.waiting} Änderungen "
                f"warten ({info.size_bytes} Byte, {info.path}); sie werden übertragen, sobald die "
                "Warteschlange wieder erreichbar ist."
            )
        return ""
    finally:
        host.close()


def _print_audit(entries: list) -> None:
    from .audit import OP_LABELS

    print()
    print("Protokoll (neueste zuerst):")
    print(f"{'Zeit':<20} {'Postfach':<12} {'Datensatz':<24} {'Vorgang':<12} Ergebnis")
    for e in entries:
        d = e.as_dict()
        detail = f" – {e.detail}" if e.detail else ""
        print(
            f"{d['when']:<20} {e.mailbox[:12]:<12} {e.record_key[:24]:<24} "
            f"{OP_LABELS.get(e.op, e.op):<12} {d['outcome_label']}{detail}"
        )


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Remove the items the plugin created (also works while the plugin is disabled)."""
    from .actions import run_cleanup

    with _opened(args.data) as (host, runtime):
        admin = next((u for u in host.list_users() if u.is_admin), None)
        if admin is None:
            print("Kein Administrator im Host gefunden.")
            return 1
        users = [_user(host, u).id for u in args.user]
        result = run_cleanup(
            runtime,
            admin,
            {"users": users, "all_mailboxes": args.all, "confirm_over_limit": args.confirm_over_limit},
        )
        print(result.message)
        for o in result.outcomes:
            print(f"  [{o.status}] {o.message}")
        return 0 if result.ok else 1


def _admin_commands(sub) -> None:
    p = sub.choices["status"]
    p.add_argument("--audit", action="store_true", help="auch das Protokoll der Übertragungen zeigen")
    p.add_argument("--limit", type=int, default=50, help="so viele Protokolleinträge (Standard 50)")
    p.set_defaults(func=cmd_status_admin)

    p = sub.add_parser("cleanup", help="von Exchange-Sync angelegte Elemente aus Postfächern entfernen")
    p.add_argument("--data", required=True)
    p.add_argument("--user", action="append", default=[], help="nur dieses Postfach (mehrfach möglich)")
    p.add_argument(
        "--all", action="store_true", help="alle Postfächer (vor dem Deaktivieren der Schnittstelle)"
    )
    p.add_argument(
        "--confirm-over-limit", action="store_true", help="auch mehr als den Grenzwert eines Ordners löschen"
    )
    p.set_defaults(func=cmd_cleanup)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
