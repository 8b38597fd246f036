"""``tsl-exchange demo``: the whole story on one machine with nothing else installed.

Sandbox Exchange server, a reference host with a sample firm, the plugin loaded
through its entry point and enabled with a demo licence, three lawyers with
Exchange accounts, subscriptions, edits and a deletion, progress while the queue
drains, and at the end a table per mailbox of what arrived.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsl_hostapi.types import Host, RecordRef, SettingsContext, User

from .. import PLUGIN_ID, licence, signals

if TYPE_CHECKING:
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import Firm

    from ..core.runtime import SyncRuntime
    from ..sandbox.graph import GraphApp, GraphSandbox
    from ..sandbox.server import SandboxServer

DEMO_PASSWORD_PREFIX = "Demo-Passwort-"


def sandbox_tab_values(url: str, username: str, password: str) -> dict[str, Any]:
    """What an administrator enters on the Exchange tab for a sandbox mailbox."""
    return {
        "enabled": True,
        "host": url,
        "username": username,
        "password": password,
        "auth_type": "basic",
        "allow_insecure": True,  # the sandbox speaks plain HTTP on loopback
    }


def _say(text: str = "") -> None:
    print(text, flush=True)


def _install_demo_licence(host: ReferenceHost) -> None:
    """A development licence signed with a key made now; its public half is recorded in the
    plugin's data directory, so every later command on this directory accepts it, and says that
    it is a development licence. A real installation trusts only the vendor's keys."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    key_id = "demo"
    licence.record_dev_key(host.data_dir(PLUGIN_ID), key_id, key)
    claims = licence.LicenceClaims(
        customer="Demo-Kanzlei (Vorführlizenz)",
        modules=(licence.MODULE,),
        seats=5,
        expires=dt.date.today() + dt.timedelta(days=30),
    )
    host.install_licence(PLUGIN_ID, licence.sign(claims, key, key_id))


def _progress(runtime: SyncRuntime, timeout: float = 300.0) -> bool:
    """Wait until the queue is empty (or the timeout passes). On a terminal a live bar shows it
    draining (counts, rate); otherwise (a log, a pipe) only the outcome is printed, so two runs
    print the same."""
    from ..ui.progress import ProgressBar

    done = threading.Event()

    def on_drained(sender: object, **extra: object) -> None:
        done.set()

    signals.queue_drained.connect(on_drained, weak=False)
    try:
        deadline = time.monotonic() + timeout
        start = pending = runtime.outbox.pending_count()
        bar = ProgressBar("  Übertragen", start, "Elemente", plain="quiet") if start else None
        while pending and time.monotonic() < deadline:
            done.wait(0.3)  # woken at once when the worker reports an empty queue
            done.clear()
            pending = runtime.outbox.pending_count()
            if bar is not None:
                bar.update(max(0, start - pending))
        if bar is not None:
            bar.close()
        failed = len(runtime.outbox.jobs(status="failed"))
        if pending:
            _say(f"  Warteschlange: noch {pending} offen, {failed} fehlgeschlagen")
        else:
            _say(f"  Warteschlange leer ({failed} fehlgeschlagen).")
        return pending == 0
    finally:
        signals.queue_drained.disconnect(on_drained)


def _phones(runtime: SyncRuntime, lawyers: list[User], today: dt.date) -> None:
    """Each mailbox as the lawyer's phone shows it, read back through EWS or Graph."""
    from ..ui.tables import print_table
    from . import demo_phone

    _say(
        f"\n8. So zeigen die Telefone der drei ihre Postfächer. „Heute“ ist in der Vorführung "
        f"{demo_phone.day_of(today)} (der Tag der Beispielkanzlei, damit jeder Lauf dasselbe zeigt)."
    )
    for lawyer in lawyers:
        phone = demo_phone.read(runtime, lawyer.id, today)
        sys.stdout.flush()
        demo_phone.show(_say, print_table, lawyer.email, lawyer.name, phone, today)


def _start_graph(server: SandboxServer) -> tuple[GraphSandbox, GraphApp]:
    """The Graph sandbox over the EWS sandbox's mailboxes, with an app registration made up now."""
    import secrets
    import uuid

    from ..backends.graph.backend import CA_FILE_ENV
    from ..sandbox.graph import GraphApp, GraphSandbox
    from ..sandbox.graph.contract import ContractNotFound, find_contract

    try:
        find_contract()
        validate = True
    except ContractNotFound:
        validate = False
    graph = GraphSandbox(server.engine, validate=validate).start()
    app = graph.add_app(GraphApp(str(uuid.uuid4()), str(uuid.uuid4()), secret=secrets.token_urlsafe(24)))
    # The demo trusts its own sandbox's certificate for Graph, as it trusts its own licence key.
    os.environ[CA_FILE_ENV] = graph.cert_pem_path or ""
    return graph, app


def run_demo(*, data: str | None = None, keep: bool = False, contacts: int = 300, port: int = 0) -> int:
    """Run the demo. Without ``data`` everything lives in a temporary folder that is removed at
    the end (also on Strg+C or SIGTERM); with ``data`` the files stay for later commands."""
    import shutil

    root = Path(data) if data else Path(tempfile.mkdtemp(prefix="tsl-exchange-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM ends the demo like Strg+C, so the clean-up below runs.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(root, keep=keep, contacts=contacts, port=port, kept=bool(data))
    except KeyboardInterrupt:
        _say("\nVorführung abgebrochen.")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if not data:
            shutil.rmtree(root, ignore_errors=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _run(root: Path, *, keep: bool, contacts: int, port: int, kept: bool) -> int:
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import generate_firm

    from ..backends.ews import backend as ews  # noqa: F401 - see below
    from ..plugin import runtime_for
    from ..sandbox.server import SandboxServer

    # exchangelib and requests are imported above, before the worker threads start: their
    # first import from two threads at once (a worker's push and "Testen") can fail on their
    # circular imports ("partially initialized module").

    _say("Exchange Sync für timeSensor LEGAL: Vorführung")
    _say(f"Daten: {root}" + ("" if kept else " (wird am Ende gelöscht; --data VERZEICHNIS behält sie)"))

    firm = generate_firm(seed=1, contacts=contacts, series=True)  # with its Serientermine
    lawyers = [u for u in firm.users if u.role.startswith("Rechtsanw")][:3]
    mailboxes = {u.email: f"{DEMO_PASSWORD_PREFIX}{i}" for i, u in enumerate(lawyers, 1)}

    server = SandboxServer(root / "sandbox", mailboxes=mailboxes, port=port).start()
    host = None
    graph = None
    try:
        _say(f"1. EWS-Sandbox läuft: {server.url}")
        graph, app = _start_graph(server)
        _say(f"   Microsoft-Graph-Sandbox über dieselben Postfächer: {graph.graph_url}")
        if server.engine.validation_note:
            _say(f"   {server.engine.validation_note}")
        host = ReferenceHost(root / "host")
        return _story(
            host, server, graph, app, firm, lawyers, mailboxes, root, keep=keep, runtime_for=runtime_for
        )
    finally:
        if host is not None:
            host.close()
        if graph is not None:
            graph.stop()
        server.stop()


def _story(
    host: ReferenceHost,
    server: SandboxServer,
    graph: GraphSandbox,
    app: GraphApp,
    firm: Firm,
    lawyers: list[User],
    mailboxes: dict[str, str],
    root: Path,
    *,
    keep: bool,
    runtime_for: Callable[[Host], SyncRuntime | None],
) -> int:
    host.load_firm(firm)
    admin = next(u for u in firm.users if u.is_admin)
    _say(
        f"2. Beispielkanzlei geladen: {len(firm.users)} Benutzer, {len(firm.contacts)} Kontakte, {len(firm.cases)} Akten"
    )

    _install_demo_licence(host)
    decision = host.enable(PLUGIN_ID)
    if not decision.allowed:
        _say(f"Exchange-Sync konnte nicht aktiviert werden: {decision.reason}")
        return 1
    if not host.started:
        host.startup()
    runtime = runtime_for(host)
    if runtime is None:  # enabled and started above: the plugin runs unless its start failed
        _say("Exchange-Sync läuft im Host nicht; bitte die Meldungen oben und das Protokoll prüfen.")
        return 1
    _say(
        "3. Exchange-Sync unter Admin › Erweitert › System › Schnittstellen aktiviert "
        "(Entwicklungslizenz der Vorführung, 30 Tage; nicht vom Hersteller)"
    )
    # The sandbox's identity provider stands in for login.microsoftonline.com.
    runtime.admin.save_firm_settings({"graph_authority": graph.url})
    host.save_tab(
        admin,
        "interfaces",
        f"{PLUGIN_ID}.interfaces",
        SettingsContext("interfaces"),
        {"graph_tenant_id": app.tenant, "graph_client_id": app.client_id, "graph_secret": app.secret},
    )
    _say(
        "   Microsoft 365: App-Registrierung (Mandanten-ID, Client-ID, Geheimnis) unter Schnittstellen hinterlegt"
    )

    for n, lawyer in enumerate(lawyers):
        # The last lawyer's mailbox is on Microsoft 365: Host "graph" (here the sandbox's Graph URL).
        values = (
            {"enabled": True, "host": graph.graph_url, "email": lawyer.email}
            if n == len(lawyers) - 1
            else sandbox_tab_values(server.url, lawyer.email, mailboxes[lawyer.email])
        )
        result = host.save_tab(
            admin,
            "user",
            f"{PLUGIN_ID}.user",
            SettingsContext("user", lawyer.id),
            values,
        )
        if not result.ok:
            _say(f"   Exchange-Konto für {lawyer.name} abgelehnt: {[e.message for e in result.errors]}")
            return 1
        test = host.press(admin, f"{PLUGIN_ID}.test_connection", (), {"user_id": lawyer.id})
        outcome = "grün" if test.status_icon == "green" else f"rot ({test.message})"
        _say(f"4. Exchange-Konto für {lawyer.name} <{lawyer.email}> gespeichert; Testen: {outcome}")
    _say("   Termine, Fristen und Wiedervorlagen der drei werden übertragen …")
    _progress(runtime)

    contact_ids = [c.id for c in firm.contacts]
    per_lawyer = max(10, len(contact_ids) // 4)
    for i, lawyer in enumerate(lawyers):
        chosen = contact_ids[i * per_lawyer // 2 : i * per_lawyer // 2 + per_lawyer]
        pressed = host.press(
            admin, f"{PLUGIN_ID}.set_sync", [RecordRef("contact", c) for c in chosen], {"users": [lawyer.id]}
        )
        _say(f"5. {lawyer.name}: {_without_duration(pressed.message)}")

    _say("6. Kontakte werden übertragen …")
    _progress(runtime)

    edited = firm.contacts[0]
    host.save(
        replace(edited, notes="Geändert in der Vorführung: neue Durchwahl.", phones=edited.phones[:1]),
        user=admin,
    )
    host.save(replace(firm.contacts[1], job_title="Geschäftsführerin"), user=admin)
    gone = firm.contacts[2]
    host.delete(RecordRef("contact", gone.id), user=admin)
    removed_user = lawyers[0]
    host.press(
        admin,
        f"{PLUGIN_ID}.remove_sync",
        [RecordRef("contact", firm.contacts[3].id)],
        {"users": [removed_user.id]},
    )
    _say(
        f"7. Bearbeitet: {edited.surname or edited.company}, {firm.contacts[1].surname or firm.contacts[1].company}; "
        f"gelöscht: {gone.surname or gone.company}; Sync entfernt für {removed_user.name}"
    )
    drained = _progress(runtime)

    _phones(runtime, lawyers, firm.today)

    from ..ui.status import Column, mailbox_rows
    from ..ui.tables import print_table

    _say("\nStatus (wie unter Schnittstellen › Exchange-Synchronisation):")
    rows = mailbox_rows(host, runtime)
    sys.stdout.flush()
    print_table(
        [
            Column("Benutzer", 24),
            Column("Zustand", 22),
            Column("offen", 5, ">", cut=False),
            Column("fehlgeschlagen", 0),
        ],
        [[r.user_name, r.state_label, r.pending, r.failed] for r in rows],
        # what the office must correct, with the reason
        notes={i: [f"fehlgeschlagen: {f}" for f in r.failures] for i, r in enumerate(rows) if r.failures},
        indent=2,
    )

    if keep:
        _say(
            f"\nLäuft weiter. Sandbox: {server.url}, Einblick: {server.url.split('/EWS')[0]}/sandbox/api/mailboxes"
        )
        _say(f"Status in einem zweiten Fenster: tsl-exchange status --data {root}. Beenden mit Strg+C.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    _say("\nVorführung beendet." if drained else "\nVorführung beendet; es waren noch Änderungen offen.")
    return 0 if drained else 1


def _without_duration(message: str) -> str:
    """The bulk action's message without its run time, so two runs print the same."""
    import re

    return re.sub(r"\s*\(\d+(?:[.,]\d+)? s\)", "", message)
