"""``tsl-exchange sandbox``: run the EWS sandbox, the Graph sandbox or both (one store) in the foreground
until Ctrl-C or SIGTERM.

The lead wires this into the main CLI: ``add_arguments(subparser)`` then ``run(args)``.
User-facing messages are German; passwords are never printed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from .args import GermanArgumentParser, float_range, int_range, port


def _mailbox(value: str) -> tuple[str, str]:
    email, sep, password = value.partition(":")
    if not sep or "@" not in email or not password:
        raise argparse.ArgumentTypeError(
            f"Ungültiges Postfach {email or value!r}: erwartet wird E-MAIL:PASSWORT, z. B. alice@kanzlei.test:Geheim1"
        )
    return email.strip(), password


def _graph_app(value: str) -> tuple[str, str, str]:
    parts = value.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(
            "Ungültige App: erwartet wird MANDANT:CLIENT-ID:GEHEIMNIS (die Werte, die unter Schnittstellen "
            "eingetragen werden)"
        )
    return parts[0], parts[1], parts[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADRESSE",
        help="Adresse, an die der Server bindet (Standard 127.0.0.1)",
    )
    parser.add_argument(
        "--port", type=port, default=8787, help="TCP-Port, 0 bis 65535 (Standard 8787, 0 = freier Port)"
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="Datenverzeichnis der Postfächer (auch das Verzeichnis einer Vorführung)",
    )
    parser.add_argument(
        "--mailbox",
        action="append",
        type=_mailbox,
        default=[],
        metavar="E-MAIL:PASSWORT",
        help="Postfach anlegen (mehrfach möglich)",
    )
    parser.add_argument("--tls", action="store_true", help="HTTPS mit selbstsigniertem Zertifikat")
    parser.add_argument("--no-validate", action="store_true", help="Schema-Prüfung abschalten (schneller)")
    parser.add_argument("--no-ntlm", action="store_true", help="nur Basic-Anmeldung anbieten")
    parser.add_argument("--no-basic", action="store_true", help="nur NTLM-Anmeldung anbieten")
    parser.add_argument(
        "--seed",
        type=int_range(0, 2**32 - 1),
        default=None,
        metavar="ZAHL",
        help="Zufallsstartwert für Fehlerinjektion",
    )
    parser.add_argument(
        "--delay-ms",
        type=float_range(0, 600000),
        default=0.0,
        metavar="MS",
        help="jede Anfrage so viele Millisekunden verzögern (wie die Laufzeit zu einem gehosteten Exchange)",
    )
    parser.add_argument(
        "--serve",
        choices=("ews", "graph", "both"),
        default="ews",
        help="welche Schnittstelle: EWS, Microsoft Graph oder beide über dieselben Postfächer (Standard ews)",
    )
    parser.add_argument(
        "--graph-port", type=int, default=8788, help="TCP-Port der Graph-Sandbox (HTTPS, Standard 8788)"
    )
    parser.add_argument(
        "--graph-app",
        action="append",
        type=_graph_app,
        default=[],
        metavar="MANDANT:CLIENT-ID:GEHEIMNIS",
        help="App-Registrierung der Graph-Sandbox (mehrfach möglich)",
    )
    parser.add_argument(
        "--ignore-field",
        action="append",
        default=[],
        metavar="FELD[:update]",
        help="ein Feld (EWS-Name, z. B. ReminderDueBy) mit NoError beantworten, aber nicht speichern, wie "
        "manche Nicht-Microsoft-Server; mit ':update' nur beim Ändern (mehrfach möglich)",
    )


def run(args: argparse.Namespace, *, out: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """Serve until Ctrl-C/SIGTERM (or ``stop`` is set, for tests). Returns the exit code."""
    from ..sandbox.server import SandboxServer

    out = out or sys.stdout
    if args.no_ntlm and args.no_basic:
        print("Fehler: --no-ntlm und --no-basic schließen jede Anmeldung aus.", file=sys.stderr)
        return 2
    if args.delay_ms < 0:
        print("Fehler: --delay-ms darf nicht negativ sein.", file=sys.stderr)
        return 2
    serve = getattr(args, "serve", "ews")
    if serve in ("graph", "both") and not args.no_validate:
        from ..sandbox.graph.contract import ContractNotFound, find_contract

        try:
            find_contract()
        except ContractNotFound as exc:
            print(f"Fehler: {exc}", file=sys.stderr)
            return 2
    data = Path(args.data)
    if (data / "host").is_dir() and (data / "sandbox").is_dir():
        data = data / "sandbox"  # the directory of a demo: its sandbox's mailboxes
    try:
        server = SandboxServer(
            data,
            mailboxes=dict(args.mailbox),
            host=args.host,
            port=args.port,
            tls=args.tls,
            validate=not args.no_validate,
            ntlm=not args.no_ntlm,
            basic=not args.no_basic,
            seed=args.seed,
        )
    except OverflowError:
        print(f"Fehler: Port {args.port} gibt es nicht (erlaubt: 0 bis 65535).", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"Fehler: Der Server kann nicht an {args.host}:{args.port} binden: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"Fehler: {exc}", file=sys.stderr)
        return 2
    if server.engine.validation_note:
        print(server.engine.validation_note, file=out)
    if args.delay_ms:
        server.inject("delay", seconds=args.delay_ms / 1000.0, count=None)
    graph = None
    if serve in ("graph", "both"):
        from ..sandbox.graph import GraphApp, GraphSandbox

        try:
            graph = GraphSandbox(
                server.engine,
                host=args.host,
                port=getattr(args, "graph_port", 8788),
                validate=not args.no_validate,
                delay_ms=args.delay_ms,
            )
        except OSError as exc:
            server.stop()
            print(f"Fehler: Die Graph-Sandbox kann nicht binden: {exc}", file=sys.stderr)
            return 1
        for tenant, client, secret in getattr(args, "graph_app", []):
            graph.add_app(GraphApp(client, tenant, secret=secret))
    for spec in getattr(args, "ignore_field", []):
        name, _, only = spec.partition(":")
        server.engine.ignore_field(name, on=("update",) if only == "update" else ("create", "update"))
    stop = stop or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if serve != "graph":
        server.start()
    if graph is not None:
        graph.start()
    try:
        if graph is not None:
            print(f"Graph-Sandbox läuft: {graph.graph_url}", file=out)
            print(f"Anmeldedienst (Authority): {graph.url}", file=out)
            print(f"Zertifikat (Graph): {graph.cert_pem_path}", file=out)
            for app in graph.apps.values():
                print(f"App: Mandant {app.tenant}, Client-ID {app.client_id}", file=out)
        if serve == "graph":
            for box in server.mailboxes():
                print(f"Postfach: {box['email']}", file=out)
            print("Beenden mit Strg+C.", file=out, flush=True)
            while not stop.wait(0.5):
                pass
            return 0
        print(f"EWS-Sandbox läuft: {server.url}", file=out)
        if server.cert_pem_path:
            print(f"Zertifikat: {server.cert_pem_path}", file=out)
        methods = [m for m, on in (("NTLM", server.ntlm), ("Basic", server.basic)) if on]
        print(f"Anmeldung: {', '.join(methods)}", file=out)
        if args.delay_ms:
            print(f"Verzögerung je Anfrage: {args.delay_ms:g} ms", file=out)
        for spec in getattr(args, "ignore_field", []):
            print(f"Übernimmt nicht (antwortet trotzdem NoError): {spec}", file=out)
        for box in server.mailboxes():
            print(f"Postfach: {box['email']} (Benutzer {box['domain']}\\{box['username']})", file=out)
        print(f"Inspektion: {server.url.split('/EWS/')[0]}/sandbox/api/stats", file=out)
        print("Beenden mit Strg+C.", file=out, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if graph is not None:
            graph.stop()
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        print("Sandbox beendet.", file=out, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = GermanArgumentParser(prog="tsl-exchange sandbox", description="EWS-Sandbox für Tests und Demo")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
