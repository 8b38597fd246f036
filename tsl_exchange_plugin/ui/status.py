"""The mailbox status shown on the Interfaces tab and by ``tsl-exchange status``.

One row per user mailbox the plugin knows: its state in words an administrator
understands (ok, never tested, wrong password, unreachable, throttled, parked,
held by the licence), the last successful push, the queue depth, the last error in
plain German and the last connection test.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tsl_hostapi.types import Host, User

if TYPE_CHECKING:
    from ..core.runtime import SyncRuntime

STATE_LABELS = {
    "ok": "in Ordnung",
    "never": "noch nichts übertragen",
    "never_tested": "noch nie getestet",
    "wrong_password": "Passwort falsch",
    "unreachable": "Server nicht erreichbar",
    "throttled": "vom Server gedrosselt",
    "parked": "angehalten",
    "held": "angehalten (Lizenz/Administrator)",
    "error": "Fehler, wird wiederholt",
    "disabled": "nicht aktiviert",
}
TEST_LABELS = {"green": "erfolgreich", "red": "fehlgeschlagen", "": "nie getestet"}
FAILURES_SHOWN = 20

_PASSWORD = re.compile(r"Passwort falsch|Anmeldung .*fehlgeschlagen|Anmeldung abgelehnt|gesperrt", re.I)
_THROTTLED = re.compile(r"drosselt|ausgelastet|ServerBusy|HTTP 429", re.I)
_UNREACHABLE = re.compile(
    r"nicht erreichbar|vorübergehend nicht verfügbar|Keine Antwort|Zeitüberschreitung|nicht gefunden"
    r"|antwortet nicht|Verbindung zu",
    re.I,
)


@dataclass(frozen=True)
class MailboxRow:
    user_id: str
    user_name: str
    state: str
    state_label: str
    pending: int
    failed: int
    last_success: str
    last_error: str
    test: str = ""  # "green", "red", "" (never tested since the credentials last changed)
    test_label: str = "nie getestet"
    test_message: str = ""
    # The failed entries with their reasons ("appointment:7: Die Erinnerung … bitte … korrigieren"),
    # at most FAILURES_SHOWN: a failed entry waits for its record to change, so the office must see why.
    failures: tuple[str, ...] = ()
    interface: str = ""  # "EWS" or "Microsoft 365": the backend this mailbox is reached through
    mailbox: str = ""  # the Exchange address (the account's username, else the user's e-mail)
    error_details: str = ""  # the raw text behind ``last_error`` (for the details view only)
    server_note: str = ""  # German: fields the mailbox's server does not keep (fidelity probe)
    reconcile: str = ""  # German: the last reconcile sweep of this mailbox

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%d.%m.%Y %H:%M:%S")


def classify_error(text: str) -> str:
    if _PASSWORD.search(text):
        return "wrong_password"
    if _THROTTLED.search(text):
        return "throttled"
    if _UNREACHABLE.search(text):
        return "unreachable"
    return "error"


def mailbox_rows(host: Host, runtime: SyncRuntime) -> list[MailboxRow]:
    from .connection_test import stored_outcome

    states = {s.mailbox: s for s in runtime.outbox.mailbox_states()}
    enabled = runtime.config.enabled_users()
    held = runtime.admin.push_gate()
    rows = []
    for user in host.list_users():
        s = states.get(user.id)
        if user.id not in enabled and s is None:
            continue
        test = stored_outcome(runtime, user.id)
        if user.id not in enabled:
            state = "disabled"
        elif held:
            state = "held"
        elif s is not None and s.parked:
            state = "wrong_password" if _PASSWORD.search(s.parked_reason) else "parked"
        elif s is not None and s.last_error and (s.last_error_at or 0) >= (s.last_success_at or 0):
            state = classify_error(s.last_error)
        elif s is not None and s.last_success_at:
            state = "ok"
        elif test is None:
            state = "never_tested"
        elif not test.ok:
            state = classify_error(test.message)
        else:
            state = "never"
        last_error = (s.parked_reason or s.last_error) if s else ""
        if s is not None and not s.parked and (s.last_success_at or 0) > (s.last_error_at or 0):
            last_error = ""  # pushed successfully since: the error is over
        details = last_error
        last_error = german_only(last_error)  # the raw transport text only in error_details
        if not last_error and s is not None and s.failed:
            # A change that failed for good keeps its reason on the job, not on the mailbox.
            failed = runtime.outbox.jobs(mailbox=user.id, status="failed")
            last_error = next((j.last_error for j in failed if j.last_error), "")
        # While everything is held the reason is the summary's, said once above the table.
        rows.append(
            MailboxRow(
                user_id=user.id,
                user_name=user.name,
                state=state,
                state_label=STATE_LABELS[state],
                pending=s.pending if s else 0,
                failed=s.failed if s else 0,
                last_success=_when(s.last_success_at if s else None),
                last_error=last_error,
                test=test.icon if test else "",
                test_label=TEST_LABELS[test.icon if test else ""],
                test_message=test.message if test else "",
                failures=_failures(runtime, user.id) if s is not None and s.failed else (),
                interface="Microsoft 365" if runtime.accounts.load(user.id).uses_graph else "EWS",
                mailbox=mailbox_address(runtime, user),
                error_details=details if details != last_error else "",
                server_note=_server_note(runtime, user.id),
                reconcile=_reconcile_note(runtime, user.id),
            )
        )
    return rows


def _failures(runtime: SyncRuntime, user_id: str) -> tuple[str, ...]:
    failed = runtime.outbox.jobs(user_id, status="failed")[:FAILURES_SHOWN]
    return tuple(f"{job.record_key}: {job.last_error}" for job in failed)


def mailbox_address(runtime: SyncRuntime, user: User) -> str:
    """The Exchange mailbox an administrator recognises: the account's username (an e-mail
    address), else the user's e-mail."""
    try:
        username = runtime.accounts.load(user.id).username
    except Exception:  # an unreadable account row must not break the status view
        username = ""
    return username or user.email or user.id


def mailbox_addresses(host: Host, runtime: SyncRuntime) -> dict[str, str]:
    """User id -> mailbox address, for the audit log (which records user ids)."""
    return {u.id: mailbox_address(runtime, u) for u in host.list_users()}


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    align: str = "<"
    cut: bool = True  # False: never shortened (numbers, case numbers, keys); the column widens


def format_table(columns: list[Column], rows: list[list[object]]) -> list[str]:
    """Lines of a plain-text table. A text column too narrow for a value ends in "…"; a column
    marked ``cut=False`` widens to its longest value instead, so no digit is ever lost. The last
    column is never padded or cut (an error message may run on)."""
    widths = []
    for i, col in enumerate(columns):
        width = max(col.width, len(col.title))
        if not col.cut:
            width = max([width, *(len(str(r[i])) for r in rows)])
        widths.append(width)

    def cell(i: int, value: object) -> str:
        text = " ".join(str(value if value is not None else "").split())
        if i == len(columns) - 1:
            return text
        width = widths[i]
        if len(text) > width:
            text = text[: width - 1] + "…"
        return f"{text:{columns[i].align}{width}}"

    out = ["  ".join(cell(i, c.title) for i, c in enumerate(columns)).rstrip()]
    for row in rows:
        out.append("  ".join(cell(i, v) for i, v in enumerate(row)).rstrip())
    return out


def summary(runtime: SyncRuntime) -> str:
    """One German line above the table: running, or why everything is held."""
    held = runtime.admin.push_gate()
    pending = runtime.outbox.pending_count()
    if held:
        return f"{held} ({pending} Änderungen warten.){journal_line(runtime)}"
    return (
        f"Exchange-Sync läuft{development_note(runtime)}. {pending} Änderungen in der Warteschlange."
        f"{journal_line(runtime)}"
    )


def development_note(runtime: SyncRuntime) -> str:
    """Said wherever the licence is judged valid: a development licence is not the vendor's."""
    from .. import PLUGIN_ID, licence

    lic = runtime.host.licence(PLUGIN_ID)
    if lic is not None and licence.is_development(lic.document):
        return " mit einer Entwicklungslizenz (nicht vom Hersteller; nur für Vorführung und Entwicklung)"
    return ""


def journal_line(runtime: SyncRuntime) -> str:
    """The journal's size (changes the queue could not take yet), empty while it is empty."""
    info = runtime.journal.info()
    if not info.waiting and not info.size_bytes:
        return ""
    return (
        f" Journal: {info.waiting} Änderungen warten auf die Warteschlange ({_size(info.size_bytes)}, "
        f"{info.path}); sie werden automatisch nachgeholt."
    )


def _size(n: int) -> str:
    return f"{n} Byte" if n < 1024 else f"{n / 1024:.1f} KB".replace(".", ",")


# --- reconcile sweep and server fidelity
_TECHNICAL = re.compile(
    r"[A-Za-z]+(Error|Exception)\b|Errno|HTTP(S)?Connection|Pool|Max retries|://|<[a-z]", re.I
)


def german_only(text: str) -> str:
    """The administrator's line without the transport's raw text (which goes to the details):
    technical parentheses and a technical tail after a colon are cut."""
    if not text or not _TECHNICAL.search(text):
        return text
    out = re.sub(
        r"\s*\((?:[^()]|\([^()]*\))*\)", lambda m: "" if _TECHNICAL.search(m.group(0)) else m.group(0), text
    )
    head, sep, tail = out.partition(": ")
    if sep and _TECHNICAL.search(tail):
        out = head
    out = out.strip().rstrip(".:") + "."
    return out + " Einzelheiten in den Details; es wird automatisch wiederholt."


def _server_note(runtime: SyncRuntime, user_id: str) -> str:
    from urllib.parse import urlsplit

    from ..core.accounts import AccountError, ews_url
    from ..core.fidelity import stored

    settings = runtime.accounts.load(user_id)
    if not settings.host:
        return ""
    try:
        server = urlsplit(ews_url(settings.host, allow_insecure=settings.allow_insecure)).netloc.lower()
    except AccountError:
        return ""
    result = stored(runtime, server)
    if result is None or result.ok:
        return ""
    # The items of this mailbox that miss what the server drops (no workaround at create).
    from ..worker.push import item_class_of

    classes = {entry.split(".", 1)[0] for entry in result.ignored_on_create}
    affected = sum(1 for key in runtime.outbox.sync_keys(user_id) if item_class_of(key) in classes)
    words = {"task": "Aufgaben/Wiedervorlagen", "calendar": "Kalendereinträge", "contact": "Kontakte"}
    note = result.summary()
    if affected:
        kinds = ", ".join(words[c] for c in sorted(classes) if c in words)
        note += f" Betroffen in diesem Postfach: {affected} {kinds}."
    return note


def _reconcile_note(runtime: SyncRuntime, user_id: str) -> str:
    reconciler = getattr(runtime, "reconciler", None)
    return reconciler.last_summary(user_id) if reconciler is not None else ""
