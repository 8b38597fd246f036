"""The reference host: commit before events, failing plugins, settings, users, licences, shell, interfaces."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from tsl_hostapi import hookimpl
from tsl_hostapi.host import register_plugin
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.serialize import from_json
from tsl_hostapi.types import (
    Appointment,
    Case,
    Contact,
    Deadline,
    Host,
    RecordRef,
    Reminder,
    SettingsContext,
    SettingsStore,
    User,
)

ADMIN = User("8", "Peter Schulze", is_admin=True)


def _committed(db_path, ref: RecordRef):
    """Read a record through a fresh connection: what another process would see."""
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT data FROM records WHERE kind=? AND id=?", (ref.kind, ref.id)).fetchone()
    return row[0] if row else None


def test_reference_host_implements_the_protocol(host):
    assert isinstance(host, Host)
    assert isinstance(host.settings, SettingsStore)
    # 1.1: RecordEvent.version; 1.2: Appointment.recurrence; 1.3: Host.plugin_state
    assert host.api_version == "1.3"


def test_save_commits_before_the_hook_is_called(host):
    seen = []

    class Peek:
        @hookimpl
        def tsl_record_saved(self, host, event):
            seen.append((event.ref, _committed(host.db_path, event.ref), host.get_record(event.ref)))

    register_plugin(host.pm, Peek(), "peek")
    c = Contact("1", surname="Müller", given_name="Jürgen", title="Dr.")
    host.save(c, user=ADMIN)
    ((ref, raw, via_host),) = seen
    assert ref == c.ref
    assert raw is not None and from_json(Contact, raw) == c
    assert via_host == c

    # an update: the hook sees the new state, not the old one
    seen.clear()
    c2 = Contact("1", surname="Müller-Weiß")
    host.save(c2)
    assert from_json(Contact, seen[0][1]).surname == "Müller-Weiß"


def test_raising_plugin_does_not_break_the_save_or_other_plugins(host, plug):
    class Explodes:
        @hookimpl(tryfirst=True)
        def tsl_record_saved(self, event):
            raise RuntimeError("Warteschlange voll")

        @hookimpl(tryfirst=True)
        def tsl_record_deleted(self, event):
            raise RuntimeError("auch kaputt")

    register_plugin(host.pm, Explodes(), "explodes")
    good = plug.Recorder()
    register_plugin(host.pm, good, "good")
    d = Deadline("5", due_date=None, kind="Berufungsfrist")
    returned = host.save(d)
    assert returned == d
    assert host.get_record(d.ref) == d
    assert _committed(host.db_path, d.ref) is not None
    assert good.names() == ["tsl_record_saved"]  # the other plugin still got its event
    assert [(f.plugin_id, f.hook) for f in host.hook_failures] == [("explodes", "tsl_record_saved")]
    assert "Warteschlange voll" in host.hook_failures[0].error

    assert host.delete(d.ref) is True
    assert host.get_record(d.ref) is None
    assert good.names()[-1] == "tsl_record_deleted"
    assert len(host.hook_failures) == 2


def test_save_many_commits_once_then_one_event_per_record(host):
    seen = []

    class Peek:
        @hookimpl
        def tsl_record_saved(self, host, event):
            # every record of the batch is committed before the first event
            seen.append(
                (event.ref, [_committed(host.db_path, RecordRef("reminder", str(i))) for i in range(1, 4)])
            )

    register_plugin(host.pm, Peek(), "peek")
    records = [Reminder(str(i), due_date=None, subject=f"WV {i}") for i in range(1, 4)]
    refs = host.save_many(records, user=ADMIN)
    assert refs == [r.ref for r in records]
    assert [ref for ref, _ in seen] == refs
    assert all(all(raw is not None for raw in states) for _, states in seen)


def test_failed_save_commits_nothing_and_sends_nothing(host, plug):
    rec = plug.Recorder()
    register_plugin(host.pm, rec, "rec")
    with pytest.raises(TypeError):
        host.save_many([Reminder("1", due_date=None), object()])  # type: ignore[list-item]
    assert host.get_record(RecordRef("reminder", "1")) is None
    assert rec.calls == []
    with pytest.raises(ValueError, match="ohne Kennung"):
        host.save(Contact(""))


def test_delete_sends_the_last_state_and_user(host, plug):
    rec = plug.Recorder()
    register_plugin(host.pm, rec, "rec")
    case = Case("3", "123/26", "Müller ./. Schmidt wegen Forderung", lawyer_id="1")
    host.save(case)
    assert host.delete(case.ref, user=ADMIN)
    assert not host.delete(case.ref)  # already gone: no second event
    deleted = [kw["event"] for name, kw in rec.calls if name == "tsl_record_deleted"]
    assert len(deleted) == 1
    assert deleted[0].record == case and deleted[0].user == ADMIN and deleted[0].ref == case.ref


def test_records_and_users_round_trip(host):
    a = Appointment("2", "Gerichtstermin", all_day=True, participant_ids=("1", "3"))
    host.save(a)
    for i in (10, 2, 1):
        host.save(Contact(str(i), surname=f"N{i}"))
    assert [c.id for c in host.iter_records("contact")] == ["1", "2", "10"]
    assert host.get_record(a.ref) == a
    assert host.get_record(RecordRef("contact", "99")) is None
    assert host.get_record(RecordRef("spaceship", "1")) is None
    with pytest.raises(ValueError):
        host.iter_records("spaceship")
    host.add_user(User("2", "Dr. Julia Weiß", "j.weiss@example.de"))
    host.save_user(User("2", "Dr. Julia Weiß", "j.weiss@example.de", active=False))
    assert host.get_user("2").active is False
    assert [u.id for u in host.list_users()] == ["2"]
    assert host.get_user("nobody") is None


def test_data_dir_is_created_per_plugin_and_safe(host):
    path = host.data_dir("exchange_sync")
    assert path.endswith("exchange_sync")
    import os

    assert os.path.isdir(path)
    for bad in ("../etc", "a/b", "", ".."):
        with pytest.raises(ValueError):
            host.data_dir(bad)


def test_licence_and_notifications(host):
    assert host.licence("exchange_sync") is None
    host.install_licence("exchange_sync", "-----BEGIN LICENCE-----\nabc\n")
    assert host.licence("exchange_sync").document == "-----BEGIN LICENCE-----\nabc\n"
    host.remove_licence("exchange_sync")
    assert host.licence("exchange_sync") is None
    host.notify("Postfach gesperrt", user_id="1", level="warning")
    host.notify("Warteschlange leer")
    assert [(n.message, n.user_id, n.level) for n in host.notifications] == [
        ("Postfach gesperrt", "1", "warning"),
        ("Warteschlange leer", None, "info"),
    ]


# --------------------------------------------------------------------------- settings store


def test_settings_store_round_trip(host):
    s = host.settings
    assert s.get("p", "missing", "dflt") == "dflt"
    s.set("p", "url", "https://mail.kanzlei.de/EWS/Exchange.asmx")
    s.set("p", "nested", {"a": [1, 2, {"ä": "ß"}], "b": None, "c": 1.5, "d": True})
    s.set("q", "url", "other namespace")
    assert s.get("p", "url") == "https://mail.kanzlei.de/EWS/Exchange.asmx"
    assert s.get("p", "nested") == {"a": [1, 2, {"ä": "ß"}], "b": None, "c": 1.5, "d": True}
    s.set_many("p", {"user:1:host": "a", "user:1:name": "b", "user:10:host": "c", "url": None})
    assert s.get("p", "url") is None  # None deletes
    assert s.keys("p") == ["nested", "user:10:host", "user:1:host", "user:1:name"]
    assert s.keys("p", prefix="user:1:") == ["user:1:host", "user:1:name"]
    assert s.keys("p", prefix="user:%") == []  # prefix is literal, not a LIKE pattern
    s.delete("p", "nested")
    assert s.get("p", "nested") is None
    assert s.keys("q") == ["url"]


def test_settings_set_many_is_all_or_nothing(host):
    s = host.settings
    s.set("p", "keep", 1)
    with pytest.raises(TypeError, match="kein JSON-Wert"):
        s.set_many("p", {"keep": 2, "bad": object()})
    assert s.get("p", "keep") == 1
    assert s.keys("p") == ["keep"]


def test_settings_persist_and_are_visible_to_other_connections(tmp_path, pm):
    with ReferenceHost(tmp_path / "h", pm=pm) as h:
        h.settings.set("p", "k", ["ä", 1])
        db = h.db_path
    with sqlite3.connect(db) as conn:
        (raw,) = conn.execute("SELECT value FROM settings WHERE namespace='p' AND key='k'").fetchone()
    assert json.loads(raw) == ["ä", 1]
    with ReferenceHost(tmp_path / "h", pm=pm) as h2:
        assert h2.settings.get("p", "k") == ["ä", 1]


def test_settings_from_threads(host):
    errors = []

    def work(n):
        try:
            for i in range(50):
                host.settings.set("t", f"{n}:{i}", i)
                assert host.settings.get("t", f"{n}:{i}") == i
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(host.settings.keys("t")) == 200


# --------------------------------------------------------------------------- lifecycle, interfaces, shell


def test_startup_and_shutdown(host, plug):
    rec = plug.Recorder()
    register_plugin(host.pm, rec, "rec")
    host.startup()
    host.shutdown()
    host.shutdown()  # idempotent
    assert rec.names() == ["tsl_startup", "tsl_shutdown"]
    assert rec.calls[0][1]["host"] is host


def test_startup_notifies_admin_when_a_licence_is_gone(host, plug):
    register_plugin(host.pm, plug.Recorder("rec"), "rec")
    host.startup()
    assert host.licence_decisions["rec"].allowed is False
    assert any("rec" in n.message and n.level == "warning" for n in host.notifications)


def test_interfaces_page_and_persistent_enable(tmp_path, pm, plug):
    rec = plug.Recorder("rec")
    pm.known_plugins["rec"] = rec
    pm.set_blocked("rec")
    with ReferenceHost(tmp_path / "h", pm=pm) as h:
        h.startup()
        (entry,) = [e for e in h.interfaces_entries() if e.plugin_id == "rec"]
        assert (entry.enabled, entry.greyed_out, entry.reason) == (
            False,
            True,
            "Lizenz ungültig oder abgelaufen.",
        )
        assert not h.enable("rec").allowed
        h.install_licence("rec", plug.VALID)
        (entry,) = [e for e in h.interfaces_entries() if e.plugin_id == "rec"]
        assert (entry.enabled, entry.greyed_out, entry.seats) == (False, False, 5)
        assert h.enable("rec").allowed
        assert [e.enabled for e in h.interfaces_entries() if e.plugin_id == "rec"] == [True]
        assert h.settings.get("tsl.host", "enabled_plugins") == ["rec"]
        assert "tsl_host_defaults" not in [e.plugin_id for e in h.interfaces_entries()]
        h.disable("rec")
        assert h.settings.get("tsl.host", "enabled_plugins") == []
        assert rec.names() == ["tsl_startup", "tsl_shutdown"]


def test_shell_tabs_menus_and_buttons(host, plug):
    rec = plug.Recorder("rec")
    register_plugin(host.pm, rec, "rec")
    ctx = SettingsContext("user", "3")
    opened = host.open_tab(ADMIN, "user", "rec.user", ctx)
    assert opened.tab.title == "Test" and opened.values.values == {"url": ""}
    bad = host.save_tab(ADMIN, "user", "rec.user", ctx, {"url": ""})
    assert not bad.ok and bad.errors[0].message == "Bitte eine Adresse angeben."
    assert host.save_tab(ADMIN, "user", "rec.user", ctx, {"url": "https://x.de"}).ok
    assert host.open_tab(ADMIN, "user", "rec.user", ctx).values.values == {"url": "https://x.de"}
    with pytest.raises(LookupError):
        host.open_tab(ADMIN, "user", "nope", ctx)
    items = host.menu(ADMIN, "contacts", [RecordRef("contact", "1")])
    assert [(m.action_id, m.menu_path) for m in items] == [("rec.mark", ("Extras", "Auswahl ändern"))]
    assert host.menu(ADMIN, "cases") == []
    # a tab button: the owner is found from the tabs
    assert host.press(ADMIN, "rec.test").ok
    unknown = host.press(ADMIN, "nobody.nothing")
    assert not unknown.ok and "nicht verfügbar" in unknown.message


def test_shell_survives_a_raising_plugin(host, plug):
    class Broken(plug.Recorder):
        @hookimpl
        def tsl_run_action(self, **kw):
            raise RuntimeError("Verbindung abgelehnt")

        @hookimpl
        def tsl_settings_load(self, **kw):
            raise RuntimeError("Tresor gesperrt")

    register_plugin(host.pm, Broken("brk"), "brk")
    result = host.press(ADMIN, "brk.test")
    assert not result.ok and "Verbindung abgelehnt" in result.message and result.status_icon == "red"
    opened = host.open_tab(ADMIN, "user", "brk.user", SettingsContext("user", "1"))
    assert "Tresor gesperrt" in opened.values.status


def test_default_host_blocks_uninstalled_choice_of_plugins(tmp_path):
    """Without a pm the host builds one; nothing the administrator has not enabled is imported."""
    import sys

    before = set(sys.modules)
    with ReferenceHost(tmp_path / "h") as h:
        assert h.enabled_plugin_ids() == []
        assert "exchange_sync" in h.pm.manifests
    assert "tsl_exchange_plugin.plugin" not in set(sys.modules) - before
