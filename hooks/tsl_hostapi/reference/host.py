"""A reference host on SQLite: records, users, licences, settings, notifications.

It behaves like timeSensor LEGAL where the plugin can tell: a save commits
first and only then calls ``tsl_record_saved``; a plugin that raises is logged
and never undoes or breaks the save; the Interfaces page enables and disables
plugins at run time.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsl_hostapi import HOST_API_VERSION
from tsl_hostapi.host import (
    HOST_DEFAULTS_NAME,
    HookFailure,
    LoadError,
    TslPluginManager,
    call_each,
    check_licence,
    disable_plugin,
    enable_plugin,
    get_plugin_manager,
    plugin_callers,
    plugin_entry_points,
    start_plugins,
    stop_plugins,
)
from tsl_hostapi.reference import shell
from tsl_hostapi.reference.db import Database
from tsl_hostapi.reference.interfaces import InterfaceEntry, interfaces_entries
from tsl_hostapi.reference.settings import SqliteSettingsStore
from tsl_hostapi.serialize import from_json, to_json
from tsl_hostapi.types import (
    ActionResult,
    Appointment,
    Case,
    Contact,
    Deadline,
    Licence,
    LicenceDecision,
    MenuAction,
    Record,
    RecordEvent,
    RecordRef,
    Reminder,
    SaveResult,
    SettingsContext,
    SettingsTab,
    User,
    _Record,
)

if TYPE_CHECKING:
    from tsl_hostapi.reference.sample_firm import Firm

log = logging.getLogger(__name__)

RECORD_CLASSES: dict[str, type[_Record]] = {
    "contact": Contact,
    "case": Case,
    "appointment": Appointment,
    "deadline": Deadline,
    "reminder": Reminder,
}

HOST_NAMESPACE = "tsl.host"
"""Settings namespace of the host itself (which plugins the administrator enabled)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
-- Each record's revision, raised by every save and delete in the same transaction and kept
-- after a delete: RecordEvent.version, strictly increasing per record.
CREATE TABLE IF NOT EXISTS revisions (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    rev INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS licences (
    plugin_id TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    installed_at TEXT NOT NULL
);
"""


def _next_revision(conn: sqlite3.Connection, ref: RecordRef) -> int:
    """Raise and return ``ref``'s revision, inside the caller's transaction."""
    rev: int = conn.execute(
        "INSERT INTO revisions(kind, id, rev) VALUES (?, ?, 1) "
        "ON CONFLICT(kind, id) DO UPDATE SET rev = rev + 1 RETURNING rev",
        (ref.kind, ref.id),
    ).fetchone()[0]
    return rev


_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Notification:
    """What a plugin asked the host to show (``user_id`` None: the administrator)."""

    message: str
    user_id: str | None = None
    level: str = "info"
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def _record_ref(record: Any) -> RecordRef:
    for kind, cls in RECORD_CLASSES.items():
        if type(record) is cls:
            if not record.id:
                raise ValueError(f"Datensatz ({kind}) ohne Kennung kann nicht gespeichert werden.")
            return RecordRef(kind, record.id)
    raise TypeError(f"Unbekannte Datensatzart: {type(record).__name__}")


class ReferenceHost:
    """Implements :class:`tsl_hostapi.types.Host` on one SQLite file in ``data_dir``.

    Without ``pm`` a plugin manager is built from the installed entry points;
    plugins the administrator has not enabled (stored in the settings, namespace
    ``"tsl.host"``) are blocked, as a fresh installation would have them.
    """

    api_version: str = HOST_API_VERSION

    def __init__(self, data_dir: str | Path, pm: TslPluginManager | None = None) -> None:
        self.root = Path(data_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "host.sqlite3"
        self._db = Database(self.db_path)
        self._db.executescript(_SCHEMA)
        self._settings = SqliteSettingsStore(self._db)
        self.notifications: list[Notification] = []
        self.hook_failures: list[HookFailure] = []
        self.licence_decisions: dict[str, LicenceDecision] = {}
        self._notify_lock = threading.Lock()
        self._plugin_state: dict[str, dict[str, Any]] = {}
        self._state_lock = threading.Lock()
        if pm is None:
            enabled = set(self._settings.get(HOST_NAMESPACE, "enabled_plugins", []))
            disabled = [ep.name for ep in plugin_entry_points() if ep.name not in enabled]
            pm = get_plugin_manager(disabled=disabled)
        self.pm: TslPluginManager = pm
        self.started = False

    # ----------------------------------------------------------------- Host protocol

    def get_record(self, ref: RecordRef) -> Record | None:
        cls = RECORD_CLASSES.get(ref.kind)
        if cls is None:
            return None
        rows = self._db.query("SELECT data FROM records WHERE kind=? AND id=?", (ref.kind, ref.id))
        return from_json(cls, rows[0][0]) if rows else None

    def iter_records(self, kind: str) -> list[Record]:
        cls = RECORD_CLASSES.get(kind)
        if cls is None:
            raise ValueError(f"Unbekannte Datensatzart: {kind!r}")
        # Numeric ids sort naturally (2 before 10) when ordered by length first.
        rows = self._db.query("SELECT data FROM records WHERE kind=? ORDER BY length(id), id", (kind,))
        return [from_json(cls, r[0]) for r in rows]

    def get_user(self, user_id: str) -> User | None:
        rows = self._db.query("SELECT data FROM users WHERE id=?", (user_id,))
        return from_json(User, rows[0][0]) if rows else None

    def list_users(self) -> list[User]:
        rows = self._db.query("SELECT data FROM users ORDER BY length(id), id")
        return [from_json(User, r[0]) for r in rows]

    def data_dir(self, plugin_id: str) -> str:
        if not _SAFE_ID.match(plugin_id) or plugin_id in (".", ".."):
            raise ValueError(f"Ungültige Modulkennung für ein Datenverzeichnis: {plugin_id!r}")
        path = self.root / "plugins" / plugin_id
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    @property
    def settings(self) -> SqliteSettingsStore:
        return self._settings

    def licence(self, plugin_id: str) -> Licence | None:
        rows = self._db.query("SELECT document FROM licences WHERE plugin_id=?", (plugin_id,))
        return Licence(plugin_id=plugin_id, document=rows[0][0]) if rows else None

    def notify(self, message: str, *, user_id: str | None = None, level: str = "info") -> None:
        log.info("Hinweis an %s (%s): %s", user_id or "Administrator", level, message)
        with self._notify_lock:
            self.notifications.append(Notification(message, user_id, level))

    def plugin_state(self, plugin_id: str) -> dict[str, Any]:
        with self._state_lock:
            return self._plugin_state.setdefault(plugin_id, {})

    # ----------------------------------------------------------------- administration

    def install_licence(self, plugin_id: str, document: str) -> None:
        """Store (or replace) the licence document the vendor issued for ``plugin_id``."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO licences(plugin_id, document, installed_at) VALUES (?, ?, ?) "
                "ON CONFLICT(plugin_id) DO UPDATE SET document=excluded.document, "
                "installed_at=excluded.installed_at",
                (plugin_id, document, now),
            )

    def remove_licence(self, plugin_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM licences WHERE plugin_id=?", (plugin_id,))

    def save_user(self, user: User) -> User:
        """Insert or update a user. (There is no hook for users in API 1.0.)"""
        if not user.id:
            raise ValueError("Benutzer ohne Kennung kann nicht gespeichert werden.")
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO users(id, data) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET data=excluded.data",
                (user.id, to_json(user)),
            )
        return user

    add_user = save_user

    # ----------------------------------------------------------------- records

    def _events(self, hook_name: str, events: list[RecordEvent]) -> None:
        """Tell every plugin, each on its own, so one that raises neither stops the others nor the save."""
        if not events:
            return
        callers = plugin_callers(self.pm, hook_name)
        for event in events:
            self.hook_failures.extend(call_each(callers, hook_name, host=self, event=event))

    def save(self, record: Record, *, user: User | None = None) -> Record:
        """Commit ``record`` (insert or replace), then call ``tsl_record_saved``. Returns the record."""
        self.save_many([record], user=user)
        return record

    def save_many(self, records: Iterable[Record], user: User | None = None) -> list[RecordRef]:
        """Commit all records in one transaction, then one ``tsl_record_saved`` per record."""
        items = [(_record_ref(r), r) for r in records]
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO records(kind, id, data) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, id) DO UPDATE SET data=excluded.data",
                [(ref.kind, ref.id, to_json(r)) for ref, r in items],
            )
            versions = [_next_revision(conn, ref) for ref, _ in items]
        self._events(
            "tsl_record_saved",
            [
                RecordEvent(ref=ref, record=r, user=user, version=v)
                for (ref, r), v in zip(items, versions, strict=True)
            ],
        )
        return [ref for ref, _ in items]

    def delete(self, ref: RecordRef, *, user: User | None = None) -> bool:
        """Delete and commit, then call ``tsl_record_deleted`` with the last state. False if absent."""
        cls = RECORD_CLASSES.get(ref.kind)
        if cls is None:
            raise ValueError(f"Unbekannte Datensatzart: {ref.kind!r}")
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT data FROM records WHERE kind=? AND id=?", (ref.kind, ref.id)
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM records WHERE kind=? AND id=?", (ref.kind, ref.id))
            version = _next_revision(conn, ref)
        self._events(
            "tsl_record_deleted",
            [RecordEvent(ref=ref, record=from_json(cls, row[0]), user=user, version=version)],
        )
        return True

    def load_firm(self, firm: Firm, *, events: bool = False) -> None:
        """Put a generated firm into the store in one transaction.

        By default no record events are sent: this is the data the host already
        had before any plugin was there. ``events=True`` sends one per record.
        """
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO users(id, data) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET data=excluded.data",
                [(u.id, to_json(u)) for u in firm.users],
            )
        records: list[Record] = [
            *firm.contacts,
            *firm.cases,
            *firm.appointments,
            *firm.deadlines,
            *firm.reminders,
        ]
        if events:
            self.save_many(records)
            return
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO records(kind, id, data) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, id) DO UPDATE SET data=excluded.data",
                [(_record_ref(r).kind, r.id, to_json(r)) for r in records],
            )

    # ----------------------------------------------------------------- lifecycle

    def startup(self) -> None:
        """Check each enabled plugin's licence, then call the historic ``tsl_startup(host=self)``.

        A plugin whose licence is no longer valid keeps running (it must be able
        to clean up what it pushed); the administrator is notified.
        """
        for plugin_id in self.enabled_plugin_ids():
            decision = check_licence(self.pm, plugin_id, self)
            self.licence_decisions[plugin_id] = decision
            if not decision.allowed:
                self.notify(f"Modul {plugin_id}: {decision.reason}", level="warning")
        start_plugins(self.pm, self)
        self.started = True

    def shutdown(self) -> None:
        """Call every plugin's ``tsl_shutdown(host=self)``; one that raises does not stop the others."""
        if self.started:
            self.hook_failures.extend(stop_plugins(self.pm, self))
            self.started = False

    def close(self) -> None:
        """Shut down (if running) and close the database."""
        self.shutdown()
        self._db.close()

    def __enter__(self) -> ReferenceHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- Interfaces page

    def enabled_plugin_ids(self) -> list[str]:
        return sorted(
            name
            for name, plugin in self.pm.list_name_plugin()
            if plugin is not None and name != HOST_DEFAULTS_NAME
        )

    @property
    def load_errors(self) -> list[LoadError]:
        return self.pm.load_errors

    def interfaces_entries(self) -> list[InterfaceEntry]:
        """Admin › Erweitert › System › Schnittstellen: one entry per known plugin."""
        return interfaces_entries(self)

    def enable(self, plugin_id: str) -> LicenceDecision:
        """Enable a plugin as the administrator does; remembered across restarts if allowed."""
        decision = enable_plugin(self.pm, plugin_id, self)
        self.licence_decisions[plugin_id] = decision
        if decision.allowed:
            enabled = set(self._settings.get(HOST_NAMESPACE, "enabled_plugins", []))
            self._settings.set(HOST_NAMESPACE, "enabled_plugins", sorted(enabled | {plugin_id}))
        return decision

    def disable(self, plugin_id: str) -> None:
        """Disable a plugin as the administrator does (its shutdown runs, then it is unloaded)."""
        disable_plugin(self.pm, plugin_id, self)
        enabled = set(self._settings.get(HOST_NAMESPACE, "enabled_plugins", []))
        self._settings.set(HOST_NAMESPACE, "enabled_plugins", sorted(enabled - {plugin_id}))

    # ----------------------------------------------------------------- UI shell (see shell.py)

    def settings_tabs(self, user: User, scope: str) -> list[SettingsTab]:
        return shell.settings_tabs(self, user, scope)

    def open_tab(self, user: User, scope: str, tab_id: str, context: SettingsContext) -> shell.OpenedTab:
        return shell.open_tab(self, user, scope, tab_id, context)

    def save_tab(
        self, user: User, scope: str, tab_id: str, context: SettingsContext, values: dict[str, Any]
    ) -> SaveResult:
        return shell.save_tab(self, user, scope, tab_id, context, values)

    def menu(self, user: User, view: str, selection: Iterable[RecordRef] = ()) -> list[MenuAction]:
        return shell.menu(self, user, view, tuple(selection))

    def press(
        self,
        user: User,
        action_id: str,
        selection: Iterable[RecordRef] = (),
        values: dict[str, Any] | None = None,
        *,
        plugin_id: str | None = None,
    ) -> ActionResult:
        return shell.press(self, user, action_id, tuple(selection), values or {}, plugin_id=plugin_id)
