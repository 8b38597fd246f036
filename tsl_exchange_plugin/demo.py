"""``tsl-exchange demo``: the whole story on one machine with nothing else installed.

Sandbox Exchange server, a reference host with a sample firm, the plugin loaded
through its entry point and enabled with a demo licence, three lawyers with
Exchange accounts, subscriptions, edits and a deletion, progress while the queue
drains, and at the end a table per mailbox of what arrived.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

from tsl_hostapi.types import RecordRef, SettingsContext

from . import PLUGIN_ID, licence, signals

DEMO_PASSWORD_PREFIX = "Demo-Passwort-"


def sandbox_tab_values(url: str, username: str, password: str) -> dict:
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


def _install_demo_licence(host) -> None:
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


def _progress(runtime, total_hint: int, timeout: float = 300.0) -> bool:
    """Show the queue draining until it is empty (or the timeout passes)."""
    interactive = sys.stdout.isatty()
    pushed = {"n": 0}
    lock = threading.Lock()

    def on_push(sender, **extra):
        with lock:
            pushed["n"] += 1

    signals.push_succeeded.connect(on_push, weak=False)
    try:
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            pending = runtime.outbox.pending_count()
            failed = len(runtime.outbox.jobs(status="failed"))
            if pending != last or interactive:
                line = f"  Warteschlange: {pending:5d} offen, {pushed['n']:5d} übertragen, {failed} fehlgeschlagen"
                if interactive:
                    print("\r" + line, end="", flush=True)
                elif pending != last:
                    _say(line)
                last = pending
            if pending == 0:
                if interactive:
                    print()
                return True
            time.sleep(0.3)
        if interactive:
            print()
        return False
    finally:
        signals.push_succeeded.disconnect(on_push)


def _local_day(value: object, zone: str = "Europe/Berlin") -> str:
    """The sandbox stores UTC instants; a lawyer reads the date in the firm's zone."""
    try:
        instant = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)[:10]
    return instant.astimezone(ZoneInfo(zone)).strftime("%d.%m.%Y")


def _sort_key(text: object) -> str:
    return str(text or "").casefold().translate(str.maketrans({"ä": "a", "ö": "o", "ü": "u", "ß": "ss"}))


def _first_email(item: dict) -> str:
    emails = item.get("email_addresses") or {}
    if isinstance(emails, dict):
        return str(next(iter(emails.values()), ""))
    return str(emails[0]) if emails else ""


def _table(engine, mailbox: str, name: str) -> None:
    contacts = engine.list_items(mailbox, "contacts")
    calendar = engine.list_items(mailbox, "calendar")
    tasks = engine.list_items(mailbox, "tasks")
    # A Microsoft 365 mailbox keeps the Wiedervorlagen in our To Do list.
    for folder in engine.list_folders(mailbox):
        if folder["folder_class"] == "IPF.Task" and folder["distinguished_id"] is None:
            tasks += engine.list_items(mailbox, folder["id"])
    _say(
        f"\nPostfach {mailbox} ({name}): {len(contacts)} Kontakte, "
        f"{len(calendar)} Kalendereinträge (Termine, Fristen, Vorfristen), {len(tasks)} Aufgaben (Wiedervorlagen)"
    )
    _say(f"  {'Speichern unter':<34} {'Firma':<30} {'E-Mail':<36}")
    for item in sorted(contacts, key=lambda i: _sort_key(i.get("file_as")))[:8]:
        file_as = str(item.get("file_as") or "")[:34]
        company = str(item.get("company_name") or "")[:30]
        _say(f"  {file_as:<34} {company:<30} {_first_email(item)[:36]:<36}")
    if len(contacts) > 8:
        _say(f"  … und {len(contacts) - 8} weitere Kontakte")
    for item in sorted(calendar, key=lambda i: str(i.get("start") or ""))[:4]:
        _say(f"  Kalender: {_local_day(item.get('start'))}  {str(item.get('subject') or '')[:70]}")


def _start_graph(server):
    """The Graph sandbox over the EWS sandbox's mailboxes, with an app registration made up now."""
    import secrets
    import uuid

    from .graph.backend import CA_FILE_ENV
    from .sandbox.graph import GraphApp, GraphSandbox
    from .sandbox.graph.contract import ContractNotFound, find_contract

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
    from tsl_hostapi.reference import ReferenceHost
    from tsl_hostapi.reference.sample_firm import generate_firm

    from .plugin import runtime_for
    from .sandbox.server import SandboxServer

    root = Path(data or tempfile.mkdtemp(prefix="tsl-exchange-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    _say("Exchange Sync für timeSensor LEGAL: Vorführung")
    _say(f"Daten: {root}")

    firm = generate_firm(seed=1, contacts=contacts)
    lawyers = [u for u in firm.users if u.role.startswith("Rechtsanw")][:3]
    mailboxes = {u.email: f"{DEMO_PASSWORD_PREFIX}{i}" for i, u in enumerate(lawyers, 1)}

    server = SandboxServer(root / "sandbox", mailboxes=mailboxes, port=port).start()
    _say(f"1. EWS-Sandbox läuft: {server.url}")
    graph, app = _start_graph(server)
    _say(f"   Microsoft-Graph-Sandbox über dieselben Postfächer: {graph.graph_url}")
    if server.engine.validation_note:
        _say(f"   {server.engine.validation_note}")

    host = ReferenceHost(root / "host")
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
    _say(
        "3. Exchange-Sync unter Admin › Erweitert › System › Schnittstellen aktiviert (Vorführlizenz, 30 Tage)"
    )
    # The sandbox's identity provider stands in for login.microsoftonline.com.
    runtime.save_firm_settings({"graph_authority": graph.url})
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
        icon = "grün" if test.status_icon == "green" else "rot"
        _say(
            f"4. Exchange-Konto für {lawyer.name} <{lawyer.email}> gespeichert; Testen: {icon} ({test.message})"
        )

    contact_ids = [c.id for c in firm.contacts]
    per_lawyer = max(10, len(contact_ids) // 4)
    for i, lawyer in enumerate(lawyers):
        chosen = contact_ids[i * per_lawyer // 2 : i * per_lawyer // 2 + per_lawyer]
        result = host.press(
            admin, f"{PLUGIN_ID}.set_sync", [RecordRef("contact", c) for c in chosen], {"users": [lawyer.id]}
        )
        _say(f"5. {lawyer.name}: {result.message}")

    _say("6. Kontakte werden übertragen …")
    _progress(runtime, 0)

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
    drained = _progress(runtime, 0)

    for lawyer in lawyers:
        _table(server.engine, lawyer.email, lawyer.name)

    from .status import mailbox_rows

    _say("\nStatus (wie unter Schnittstellen › Exchange-Synchronisation):")
    for row in mailbox_rows(host, runtime):
        _say(f"  {row.user_name:<30} {row.state_label:<22} offen {row.pending}, fehlgeschlagen {row.failed}")

    if keep:
        _say(
            f"\nLäuft weiter. Sandbox: {server.url}, Einblick: {server.url.split('/EWS')[0]}/sandbox/api/mailboxes"
        )
        _say(f"Status in einem zweiten Fenster: tsl-exchange status --data {root}. Beenden mit Strg+C.")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    host.close()
    graph.stop()
    server.stop()
    _say("\nVorführung beendet." if drained else "\nVorführung beendet; es waren noch Änderungen offen.")
    return 0 if drained else 1
