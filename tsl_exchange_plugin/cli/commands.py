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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import PLUGIN_ID, __version__
from .args import GermanArgumentParser, add_verbose_everywhere, existing_file, float_range, int_range, port

if TYPE_CHECKING:
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.types import Host, User

    from ..core.runtime import SyncRuntime
    from ..licence import LicenceClaims
    from ..outbox.base import Outbox
    from ..worker.runner import Worker, WorkerConfig


def host_data_dir(data: str) -> Path:
    """The host's data directory for ``--data``: the directory itself, or the ``host`` folder in
    it when it is a demo's directory (``tsl-exchange demo --data DIR``), so every command accepts
    the same DIR."""
    root = Path(data)
    if (root / "host.sqlite3").exists():
        return root
    if (root / "host" / "host.sqlite3").exists():
        return root / "host"
    raise SystemExit(
        f"Fehler: Kein timeSensor-Datenverzeichnis gefunden: {data}. Bitte mit --data das Datenverzeichnis "
        "des Hosts angeben (oder das Verzeichnis der Vorführung)."
    )


_warned_dirs: set[Path] = set()


def _host(data: str) -> ReferenceHost:
    from tsl_hostapi.reference import ReferenceHost

    from ..licence import dev_warnings

    root = host_data_dir(data)
    host = ReferenceHost(root)
    if root not in _warned_dirs:
        _warned_dirs.add(root)
        for line in dev_warnings(host.data_dir(PLUGIN_ID))[len(dev_warnings()) :]:
            print(line, file=sys.stderr)
    return host


@contextlib.contextmanager
def _opened(data: str, **runtime_options: Any) -> Iterator[tuple[ReferenceHost, SyncRuntime]]:
    """The reference host on ``data`` and the plugin's runtime on it (worker not started)."""
    from ..core.runtime import SyncRuntime

    host = _host(data)
    runtime = SyncRuntime(host, start_worker=False, **runtime_options)
    try:
        yield host, runtime
    finally:
        runtime.close()
        host.close()


def _user(host: Host, ident: str) -> User:
    for user in host.list_users():
        if ident in (user.id, user.email, user.name):
            return user
    raise SystemExit(f"Benutzer nicht gefunden: {ident}")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(data=args.data, keep=args.keep, contacts=args.contacts, port=args.port)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from . import sandbox as sandbox_cli

    return sandbox_cli.run(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from .. import signals
    from ..worker.runner import WorkerConfig

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
        from ..backends.ews.backend import EwsBackend
        from ..backends.routing import RoutingBackend

        # Microsoft 365 mailboxes go through Graph, the others through EWS.
        backend = RoutingBackend(ews=EwsBackend(max_in_flight_per_server=args.per_server))
        with _opened(args.data, worker_config=config, backend=backend) as (_, runtime):
            if runtime.config.worker_mode() != "external":
                print(
                    "Fehler: Der Worker-Modus ist „host“: der Host überträgt selbst, ein eigener Worker-Prozess "
                    "würde ihm nur Arbeit abnehmen, die er schon tut. Für Worker-Prozesse zuerst umstellen: "
                    f"tsl-exchange config --data {args.data} --worker external",
                    file=sys.stderr,
                )
                return 2
            return _run_worker(args, runtime.worker, runtime.outbox, runtime.admin.push_gate)
    finally:
        signals.mailbox_status_changed.disconnect(_report_status)


def _report_status(
    sender: object, mailbox: str = "", status: str = "", reason: str = "", **_: object
) -> None:
    """Operators see the gate and parked mailboxes on the worker's console."""
    if mailbox == "*" and status == "held":
        print(f"Angehalten: {reason}", flush=True)
    elif mailbox == "*" and status == "resumed":
        print("Übertragung läuft wieder.", flush=True)
    elif status == "parked":
        print(f"Postfach {mailbox} angehalten: {reason}", flush=True)


def _hostless_worker(args: argparse.Namespace, config: WorkerConfig) -> int:
    """``tsl-exchange worker --queue URL``: a worker on any machine, with only the queue and the key.

    Everything else (accounts, the users' time zones and lead times, the firm's rules, the
    administrator's hold, the licence) the host has written into the queue's store."""
    import os

    from ..backends.ews.backend import EwsBackend
    from ..backends.routing import RoutingBackend
    from ..core.firm import QUEUE_URL_ENV
    from ..core.shared_state import StoreContext
    from ..credentials import VaultError, open_worker_vault
    from ..outbox.factory import open_outbox
    from ..worker.dispatch import make_mapper
    from ..worker.runner import Worker

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
        return _run_worker(args, worker, outbox, context.gate)
    finally:
        if worker is not None:
            worker.stop()
        outbox.close()


def _run_worker(
    args: argparse.Namespace, worker: Worker, outbox: Outbox, gate: Callable[[], str | None] | None = None
) -> int:
    from ..ui import progress

    held = gate() if gate is not None else None
    if args.once:
        if held:
            print(f"{held} Es wird nichts übertragen.", file=sys.stderr)
            return 1
        drained = progress.drain(worker, outbox, timeout=args.timeout)
        left = outbox.pending_count()
        print("Warteschlange leer." if drained else f"Noch {left} Änderungen offen.")
        return 0 if drained else 1
    if held:
        # A hold ends without a restart ("Jetzt erneut versuchen", a new licence): keep running.
        print(f"{held} Der Worker wartet, bis die Übertragung wieder freigegeben ist.", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    print(f"Exchange-Sync-Worker läuft ({args.threads} Threads). Beenden mit Strg+C.", flush=True)
    _initial_sync(outbox, stop)
    stop.wait()
    return 0


def _initial_sync(outbox: Outbox, stop: threading.Event, every: float = 0.5) -> None:
    """What waited when the worker started (a first sync, a backlog after a pause), as a bar
    until the queue is empty for the first time; after that only the status lines."""
    from ..ui import progress

    start = outbox.pending_count()
    if not start:
        return
    bar = progress.ProgressBar("Erstübertragung", start, "Elemente")
    try:
        while not stop.wait(every):
            left = outbox.pending_count()
            bar.update(max(0, start - left))
            if not left:
                break
    finally:
        bar.close("Warteschlange leer." if bar.done >= start else "")


def cmd_test_connection(args: argparse.Namespace) -> int:
    from ..ui.connection_test import run_test

    with _opened(args.data) as (host, runtime):
        user = _user(host, args.user)
        admin = next((u for u in host.list_users() if u.is_admin), user)
        result = run_test(runtime, admin, {"user_id": user.id})
    print(("OK: " if result.ok else "FEHLER: ") + result.message)
    return 0 if result.ok else 1


def cmd_resync(args: argparse.Namespace) -> int:
    from ..ui import progress

    with _opened(args.data) as (host, runtime):
        user = _user(host, args.user)
        count = runtime.enqueue.resync([user.id])
        print(f"{count} Einträge für {user.name} erneut eingereiht.")
        held = runtime.admin.push_gate()
        if held:
            print(
                f"{held} Es wird nichts übertragen, bis die Übertragung wieder freigegeben ist.",
                file=sys.stderr,
            )
            return 1
        drained = progress.drain(runtime.worker, runtime.outbox, timeout=args.timeout, mailbox=user.id)
        left = runtime.outbox.pending_count(user.id)
        held = runtime.admin.push_gate()
    if drained:
        print("Übertragen.")
        return 0
    reason = f" {held}" if held else " Der Zustand steht in „tsl-exchange status --audit“."
    print(f"Noch {left} offen nach {args.timeout:g} Sekunden.{reason}", file=sys.stderr)
    return 1


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """A new key for the stored secrets: the key actually in use (``TSL_EXCHANGE_KEY``,
    ``TSL_EXCHANGE_KEY_FILE`` or ``credentials.key``) is rotated and every token re-encrypted."""
    from ..core.firm import FIRM_KEY
    from ..credentials import KEY_ENV, rotate_active_key

    with _opened(args.data) as (host, runtime):
        rotated = rotate_active_key(runtime.data_dir)
        if rotated.source == "env":
            # Shown before anything is re-encrypted: should the command die half-way, the
            # administrator already holds the key the new tokens need.
            print(
                f"Der Schlüssel kommt aus der Umgebungsvariable {KEY_ENV}; dieser Befehl kann sie nicht "
                "ändern. Neuer Wert (wird nur jetzt angezeigt, sicher aufbewahren; der neue Schlüssel "
                "steht vorn, die bisherigen dahinter):",
                flush=True,
            )
            print(rotated.env_value, flush=True)
        values: dict[str, object] = {}
        for user in host.list_users():
            key = f"user:{user.id}"
            stored = host.settings.get(PLUGIN_ID, key)
            if isinstance(stored, dict) and stored.get("password_token"):
                values[key] = {**stored, "password_token": rotated.vault.rotate(stored["password_token"])}
        firm = runtime.config.firm_settings()
        secrets = {k: rotated.vault.rotate(firm[k]) for k in GRAPH_TOKENS if firm.get(k)}
        if secrets:
            values[FIRM_KEY] = {**firm, **secrets}
        host.settings.set_many(PLUGIN_ID, values)  # one transaction: all tokens or none
        runtime.publisher.publish()  # worker processes read the new tokens
    count = len(values) - (1 if secrets else 0)
    graph = " und die Microsoft-365-Zugangsdaten" if secrets else ""
    print(f"Neuer Schlüssel aktiv; {count} Passwörter{graph} neu verschlüsselt.")
    if rotated.source == "env":
        print(
            f"Jetzt {KEY_ENV} auf dem Host und auf jedem Worker-Rechner auf den Wert oben setzen und "
            "timeSensor LEGAL und die Worker neu starten; bis dahin können sie die neu verschlüsselten "
            "Passwörter nicht lesen."
        )
    else:
        print(
            f"Schlüsseldatei erneuert: {rotated.path}. Diese Datei auf die Rechner der externen Worker "
            "kopieren und deren Sicherung erneuern; dann timeSensor LEGAL und die Worker neu starten."
        )
    return 0


GRAPH_TOKENS = ("graph_secret_token", "graph_certificate_token")


DATA_HELP = "Datenverzeichnis des Hosts (auch das Verzeichnis einer Vorführung)"


def build_parser() -> argparse.ArgumentParser:
    parser = GermanArgumentParser(prog="tsl-exchange", description="Exchange-Sync für timeSensor LEGAL")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="Version zeigen und beenden"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="ausführliche Protokollausgabe")
    sub = parser.add_subparsers(dest="command", required=True, title="Befehle", metavar="BEFEHL")

    p = sub.add_parser("demo", help="die ganze Geschichte auf einem Rechner vorführen")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="Verzeichnis für Host, Warteschlange und Sandbox, bleibt erhalten (Standard: ein temporäres, "
        "das am Ende gelöscht wird)",
    )
    p.add_argument("--keep", action="store_true", help="danach weiterlaufen lassen, zum Ansehen")
    p.add_argument(
        "--contacts",
        type=int_range(10, 5000),
        default=300,
        metavar="ANZAHL",
        help="Anzahl Kontakte der Beispielkanzlei (10 bis 5000)",
    )
    p.add_argument(
        "--port",
        type=port,
        default=0,
        metavar="PORT",
        help="Port der Sandbox (0 bis 65535; Standard 0: ein freier)",
    )
    p.set_defaults(func=cmd_demo)

    from . import sandbox as sandbox_cli

    p = sub.add_parser("sandbox", help="den EWS-Sandbox-Server starten")
    sandbox_cli.add_arguments(p)
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("worker", help="Worker als eigener Prozess")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="Datenverzeichnis des Hosts (nur wenn der Worker auf dem Host-Rechner läuft)",
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
        type=int_range(1, 100),
        default=10,
        metavar="N",
        help="höchstens so viele Anfragen gleichzeitig je Exchange-Server, über alle Worker (Standard 10)",
    )
    p.add_argument(
        "--threads",
        type=int_range(1, 64),
        default=4,
        metavar="N",
        help="Postfächer, die gleichzeitig bedient werden (1 bis 64)",
    )
    p.add_argument(
        "--lease",
        type=float_range(1, 3600),
        default=60.0,
        metavar="SEKUNDEN",
        help="Sekunden, nach denen ein toter Worker abgelöst wird (1 bis 3600)",
    )
    p.add_argument("--once", action="store_true", help="nur abarbeiten, was fällig ist, dann beenden")
    p.add_argument(
        "--timeout",
        type=float_range(0, 86400),
        default=300.0,
        metavar="SEKUNDEN",
        help="mit --once: höchstens so viele Sekunden",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="Zustand der Postfächer")
    p.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    p.add_argument("--json", action="store_true", help="als JSON ausgeben")

    p = sub.add_parser("test-connection", help="Verbindungstest für einen Benutzer")
    p.add_argument("user", metavar="BENUTZER", help="Kennung, E-Mail-Adresse oder Name des Benutzers")
    p.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    p.set_defaults(func=cmd_test_connection)

    p = sub.add_parser("resync", help="alles für ein Postfach erneut übertragen (ohne Dubletten)")
    p.add_argument("user", metavar="BENUTZER", help="Kennung, E-Mail-Adresse oder Name des Benutzers")
    p.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    p.add_argument(
        "--timeout",
        type=float_range(0, 86400),
        default=300.0,
        metavar="SEKUNDEN",
        help="höchstens so viele Sekunden übertragen",
    )
    p.set_defaults(func=cmd_resync)

    p = sub.add_parser("rotate-key", help="Schlüssel für die Passwortverschlüsselung erneuern")
    p.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    p.set_defaults(func=cmd_rotate_key)
    _admin_commands(sub)
    _setup_commands(sub)
    add_verbose_everywhere(parser)
    return parser


# Administration: status --audit, audit, cleanup


def cmd_status_admin(args: argparse.Namespace) -> int:
    """``status`` as before, with the summary line (licence hold) and, with ``--audit``, the audit log."""
    from dataclasses import asdict

    from ..ui.status import Column, mailbox_addresses, mailbox_rows, summary
    from ..ui.tables import print_table

    unavailable = _queue_unavailable(args.data)
    if unavailable:
        print(unavailable)
        return 1
    with _opened(args.data) as (host, runtime):
        rows = mailbox_rows(host, runtime)
        entries = runtime.admin.audit.entries(limit=args.limit) if args.audit else []
        if args.json and args.parity:
            _print_parity(runtime, True)
            return 0
        if args.json:
            data: dict[str, Any] | list[Any] = [r.as_dict() for r in rows]
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
        columns = [
            Column("Benutzer", 24),
            Column("Postfach", 28),
            Column("Zustand", 24),
            Column("offen", 5, ">", cut=False),
            Column("fehlg.", 6, ">", cut=False),
            Column("letzte Übertragung", 19, cut=False),
            Column("Test", 14),
            Column("letzter Fehler", 0),
        ]
        table = [
            [
                r.user_name,
                r.mailbox,
                r.state_label,
                r.pending,
                r.failed,
                r.last_success,
                r.test_label,
                r.last_error,
            ]
            for r in rows
        ]
        notes = {i: [f"fehlgeschlagen: {f}" for f in r.failures] for i, r in enumerate(rows) if r.failures}
        sys.stdout.flush()
        print_table(columns, table, notes=notes)
        if args.audit:
            _print_audit(entries, mailbox_addresses(host, runtime))
        if args.parity:
            _print_parity(runtime, False)
        return 0


def _queue_unavailable(data: str) -> str:
    """Why the queue cannot be opened, with what waits in the journal meanwhile ("": it opens)."""
    import os

    from ..core.firm import FIRM_KEY, QUEUE_URL_ENV
    from ..outbox.factory import open_outbox
    from ..outbox.journal import Journal

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


def _print_audit(entries: list[Any], addresses: dict[str, str] | None = None) -> None:
    from ..audit import OP_LABELS
    from ..ui.status import Column
    from ..ui.tables import print_table

    addresses = addresses or {}
    print()
    print("Protokoll (neueste zuerst):")
    columns = [
        Column("Zeit", 19, cut=False),
        Column("Postfach", 28),
        Column("Datensatz", 16, cut=False),
        Column("Vorgang", 12),
        Column("Ergebnis", 0),
    ]
    rows = []
    for e in entries:
        d = e.as_dict()
        detail = f" – {e.detail}" if e.detail else ""
        mailbox = addresses.get(e.mailbox, e.mailbox)
        rows.append(
            [d["when"], mailbox, e.record_key, OP_LABELS.get(e.op, e.op), d["outcome_label"] + detail]
        )
    sys.stdout.flush()
    print_table(columns, rows)


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Remove the items the plugin created (also works while the plugin is disabled)."""
    from ..ui import progress
    from ..ui.actions import cleanup_progress, run_cleanup

    with _opened(args.data) as (host, runtime):
        admin = next((u for u in host.list_users() if u.is_admin), None)
        if admin is None:
            print("Kein Administrator im Host gefunden.")
            return 1
        users = [_user(host, u).id for u in args.user]
        bar = progress.ProgressBar("Aufräumen", None, "Postfächer", items_unit="Elemente")

        def on_mailbox(sender: object, *, done: int, total: int, removed: int = 0, **_: object) -> None:
            bar.update(done, total=total, items=bar.items + removed)  # items: elements removed

        cleanup_progress.connect(on_mailbox, weak=False)
        try:
            result = run_cleanup(
                runtime,
                admin,
                {"users": users, "all_mailboxes": args.all, "confirm_over_limit": args.confirm_over_limit},
            )
        finally:
            cleanup_progress.disconnect(on_mailbox)
            bar.close()
        print(result.message)
        for o in result.outcomes:
            print(f"  [{o.status}] {o.message}")
        return 0 if result.ok else 1


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare one or every mailbox with the host now; repairs are queued and pushed."""
    from ..ui import progress

    with _opened(args.data) as (host, runtime):
        users = [_user(host, args.user).id] if args.user else None
        # items: our items compared in the mailboxes
        with progress.ProgressBar("Abgleich", None, "Postfächer", items_unit="Elemente") as bar:
            reports = runtime.reconciler.sweep(
                users,
                dry_run=args.dry_run,
                confirmed=args.confirm_over_limit,
                progress=lambda done, total, report: bar.update(
                    done, total=total, items=bar.items + report.checked
                ),
            )
        if not reports:
            print("Kein Postfach mit aktivem Exchange-Sync.")
            return 0
        for report in reports:
            print(report.summary())
            for f in report.findings:
                mark = "" if f.repaired or report.dry_run else " (nur gemeldet)"
                print(f"  {f.record_key or '-':<28} {f.detail}{mark}")
        if not args.dry_run:
            from ..core.parity import stored

            parity = stored(runtime)
            if parity is not None:
                print(parity.summary())
            drained = progress.drain(runtime.worker, runtime.outbox, timeout=args.timeout)
            left = runtime.outbox.pending_count()
            print("Reparaturen übertragen." if drained else f"Noch {left} offen; der Worker überträgt sie.")
        return 0 if all(r.outcome == "done" for r in reports) else 1


def _print_parity(runtime: SyncRuntime, as_json: bool) -> None:
    from ..core.parity import stored

    report = stored(runtime)
    if as_json:
        print(json.dumps(report.as_dict() if report else None, ensure_ascii=False, indent=2))
        return
    print()
    if report is None:
        print("Fristenabgleich: noch kein Abgleich gelaufen (tsl-exchange reconcile).")
        return
    print(report.summary())
    for diff in report.diffs:
        print("  " + diff.describe())


def _admin_commands(sub: argparse._SubParsersAction[GermanArgumentParser]) -> None:
    p = sub.choices["status"]
    p.add_argument("--audit", action="store_true", help="auch das Protokoll der Übertragungen zeigen")
    p.add_argument(
        "--limit",
        type=int_range(1, 100000),
        default=50,
        metavar="N",
        help="so viele Protokolleinträge (Standard 50)",
    )
    p.add_argument("--parity", action="store_true", help="den Fristenabgleich des letzten Abgleichs zeigen")
    p.set_defaults(func=cmd_status_admin)

    p = sub.add_parser("reconcile", help="Postfächer mit timeSensor abgleichen und reparieren")
    p.add_argument(
        "user", nargs="?", metavar="BENUTZER", help="nur dieses Postfach (Kennung, E-Mail-Adresse oder Name)"
    )
    p.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    p.add_argument("--dry-run", action="store_true", help="nur zeigen, was repariert würde")
    p.add_argument(
        "--confirm-over-limit",
        action="store_true",
        help="auch mehr als den Grenzwert eines Ordners entfernen",
    )
    p.add_argument(
        "--timeout",
        type=float_range(0, 86400),
        default=300.0,
        metavar="SEKUNDEN",
        help="höchstens so viele Sekunden auf die Übertragung der Reparaturen warten",
    )
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("cleanup", help="von Exchange-Sync angelegte Elemente aus Postfächern entfernen")
    p.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    p.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="BENUTZER",
        help="nur dieses Postfach (mehrfach möglich)",
    )
    p.add_argument(
        "--all", action="store_true", help="alle Postfächer (vor dem Deaktivieren der Schnittstelle)"
    )
    p.add_argument(
        "--confirm-over-limit", action="store_true", help="auch mehr als den Grenzwert eines Ordners löschen"
    )
    p.set_defaults(func=cmd_cleanup)


def main(argv: list[str] | None = None) -> int:
    from ..licence import dev_warnings

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for line in dev_warnings():
        print(line, file=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("Abgebrochen.", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a German sentence from a helper such as host_data_dir()
            print(exc.code, file=sys.stderr)
            return 1
        raise
    except Exception as exc:
        # The administrator gets a sentence, not a traceback; -v puts the details in the log.
        logging.getLogger(__name__).info("tsl-exchange %s", args.command, exc_info=True)
        print(
            f"Unerwarteter Fehler: {exc or type(exc).__name__}. Mit -v stehen die technischen Einzelheiten "
            "im Protokoll; bitte dem Hersteller melden.",
            file=sys.stderr,
        )
        return 1


# --- setting up: licence, worker mode and queue


def cmd_licence_install(args: argparse.Namespace) -> int:
    from .. import licence

    try:
        document = Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"Fehler: Die Lizenzdatei ist nicht lesbar: {exc}", file=sys.stderr)
        return 2
    with _opened(args.data) as (host, runtime):
        dev_keys = licence.data_dir_dev_keys(host.data_dir(PLUGIN_ID))
        decision, claims = licence.verify(document, dev_keys=dev_keys)
        if not decision.allowed:
            print(f"Fehler: Lizenz nicht eingespielt. {decision.reason}", file=sys.stderr)
            return 1
        assert claims is not None  # a licence that verifies has its claims
        host.install_licence(PLUGIN_ID, document)
        runtime.publisher.publish()  # worker processes verify the licence from the store
        enabled = PLUGIN_ID in host.enabled_plugin_ids()
    print(f"Lizenz eingespielt: {_licence_line(document, claims)}")
    if not enabled:
        print("Exchange-Sync ist noch nicht aktiviert: Admin › Erweitert › System › Schnittstellen.")
    return 0


def _licence_line(document: str, claims: LicenceClaims) -> str:
    from .. import licence

    kind = (
        "Entwicklungslizenz (nicht vom Hersteller; nur für Vorführung und Entwicklung)"
        if licence.is_development(document)
        else "Lizenz des Herstellers"
    )
    return f"{claims.customer}, {claims.seats} Exchange-Plätze, gültig bis {claims.expires:%d.%m.%Y}; {kind}"


def cmd_licence_show(args: argparse.Namespace) -> int:
    from .. import licence

    host = _host(args.data)
    try:
        lic = host.licence(PLUGIN_ID)
        dev_keys = licence.data_dir_dev_keys(host.data_dir(PLUGIN_ID))
    finally:
        host.close()
    document = lic.document if lic else None
    decision, claims = licence.verify(document, dev_keys=dev_keys)
    if claims is not None:
        print(_licence_line(document or "", claims))
    if decision.allowed:
        print("Die Lizenz ist gültig.")
        return 0
    print(f"Die Lizenz gilt nicht: {decision.reason}")
    return 1


def cmd_config(args: argparse.Namespace) -> int:
    from ..core.firm import FIRM_KEY
    from ..ui.settings import validate_queue_url

    host = _host(args.data)
    try:
        firm = host.settings.get(PLUGIN_ID, FIRM_KEY, {}) or {}
        firm = dict(firm) if isinstance(firm, dict) else {}
        changes: dict[str, Any] = {}
        if args.queue_url is not None:
            problem = validate_queue_url(args.queue_url)
            if problem:
                print(f"Fehler: {problem}", file=sys.stderr)
                return 2
            changes["queue_url"] = args.queue_url.strip()
        if args.worker is not None:
            changes["worker"] = args.worker
        mode = changes.get("worker", firm.get("worker", "host"))
        url = changes.get("queue_url", firm.get("queue_url", "")) or ""
        if mode == "external" and not url.lower().startswith(("postgresql://", "postgres://")):
            print(
                "Hinweis: Im Worker-Modus „external“ teilen sich Host und Worker-Prozesse die Warteschlange; "
                "Worker auf anderen Rechnern brauchen eine PostgreSQL-Warteschlange (--queue-url postgresql://…). "
                "Ohne sie arbeiten nur Worker mit --data auf diesem Rechner.",
                file=sys.stderr,
            )
        if changes:
            host.settings.set(PLUGIN_ID, FIRM_KEY, {**firm, **changes})
    finally:
        host.close()
    print(f"Worker-Modus: {mode}")
    print(f"Warteschlange: {url or 'SQLite im Datenverzeichnis'}")
    if changes:
        print("Gespeichert. Die Einstellungen gelten ab dem nächsten Start des Hosts und der Worker.")
    return 0


def _setup_commands(sub: argparse._SubParsersAction[GermanArgumentParser]) -> None:
    p = sub.add_parser("licence", help="Lizenz einspielen oder anzeigen")
    lic = p.add_subparsers(dest="licence_command", required=True, title="Befehle", metavar="BEFEHL")
    q = lic.add_parser("install", help="eine Lizenzdatei des Herstellers einspielen")
    q.add_argument("file", type=existing_file, metavar="DATEI", help="die Lizenzdatei (JSON, signiert)")
    q.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    q.set_defaults(func=cmd_licence_install)
    q = lic.add_parser("show", help="die eingespielte Lizenz anzeigen und prüfen")
    q.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    q.set_defaults(func=cmd_licence_show)

    p = sub.add_parser("config", help="Worker-Modus und Warteschlange einstellen (ohne Angaben: anzeigen)")
    p.add_argument("--data", required=True, metavar="DIR", help=DATA_HELP)
    p.add_argument(
        "--worker",
        choices=("host", "external"),
        help="host: der Host überträgt selbst; external: eigene Prozesse (tsl-exchange worker)",
    )
    p.add_argument(
        "--queue-url",
        metavar="URL",
        help="Warteschlange: leer für SQLite im Datenverzeichnis, sonst postgresql://benutzer@server/datenbank",
    )
    p.set_defaults(func=cmd_config)


if __name__ == "__main__":
    sys.exit(main())
