"""One test per hook, each called through the real plugin manager the way the host calls it."""

from __future__ import annotations

import dataclasses
import datetime as dt

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.plugin import runtime_for
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.types import Licence, RecordEvent, RecordRef, SettingsContext, User

USER_TAB = f"{PLUGIN_ID}.user"


def test_tsl_startup_opens_stores_and_starts_worker(kanzlei):
    runtime = kanzlei.runtime
    assert runtime.worker.running
    assert runtime.outbox.pending_count() == 0


def test_tsl_shutdown_stops_worker_and_keeps_queue(kanzlei):
    k = kanzlei
    runtime = k.runtime
    runtime.worker.stop()
    k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", [k.firm.contacts[0].ref], {"users": [k.lawyers[0].id]})
    assert runtime.outbox.pending_count() == 1
    k.host.pm.hook.tsl_shutdown(host=k.host)
    assert runtime_for(k.host) is None
    assert not runtime.worker.running
    # The queue survives: the host's next start finds the change and pushes it.
    k.host.close()
    k.host = ReferenceHost(k.host.root)
    k.host.startup()
    assert runtime_for(k.host) is not None
    k.drain()
    assert len(k.ours(k.lawyers[0], k.firm.contacts[0].ref.key)) == 1


def test_tsl_licence_check(kanzlei, licence_key):
    hook = kanzlei.host.pm.hook.tsl_licence_check
    good = hook(host=kanzlei.host, plugin_id=PLUGIN_ID, licence=Licence(PLUGIN_ID, licence_key()))
    assert good.allowed and good.seats == 10
    expired = hook(
        host=kanzlei.host,
        plugin_id=PLUGIN_ID,
        licence=Licence(PLUGIN_ID, licence_key(expires=dt.date.today() - dt.timedelta(days=1))),
    )
    assert not expired.allowed and "abgelaufen" in expired.reason
    wrong_module = hook(
        host=kanzlei.host, plugin_id=PLUGIN_ID, licence=Licence(PLUGIN_ID, licence_key(modules=("dms",)))
    )
    assert not wrong_module.allowed
    tampered = licence_key().replace('"seats": 10', '"seats": 1000')
    assert not hook(host=kanzlei.host, plugin_id=PLUGIN_ID, licence=Licence(PLUGIN_ID, tampered)).allowed
    assert not hook(host=kanzlei.host, plugin_id=PLUGIN_ID, licence=None).allowed
    # Another plugin's licence is not ours to judge: the host's default denies it.
    other = hook(host=kanzlei.host, plugin_id="someone_else", licence=Licence("someone_else", licence_key()))
    assert not other.allowed


def test_unlicensed_plugin_is_not_enabled(tmp_path, licence_key):
    host = ReferenceHost(tmp_path / "h")
    host.startup()
    decision = host.enable(PLUGIN_ID)
    assert not decision.allowed
    assert runtime_for(host) is None
    entry = next(e for e in host.interfaces_entries() if e.plugin_id == PLUGIN_ID)
    assert not entry.enabled
    host.close()


def test_tsl_settings_tabs(kanzlei):
    k = kanzlei
    tabs = k.host.pm.hook.tsl_settings_tabs(host=k.host, user=k.admin, scope="user")
    (tab,) = [
        t
        for group in tabs
        for t in (group if isinstance(group, list) else [group])
        if t.plugin_id == PLUGIN_ID
    ]
    labels = {f.name: f.label for f in tab.fields}
    assert labels["host"] == "Host" and labels["password"] == "Passwort"
    assert [b.label for b in tab.buttons] == ["Testen"]


def test_tsl_settings_load_never_returns_password(kanzlei):
    k = kanzlei
    lawyer = k.lawyers[0]
    values = k.host.pm.hook.tsl_settings_load(
        host=k.host,
        user=k.admin,
        plugin_id=PLUGIN_ID,
        tab_id=USER_TAB,
        context=SettingsContext("user", lawyer.id),
    )
    from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS

    assert values.values["password_set"] is True
    assert "password" not in values.values and "password_token" not in values.values
    assert SANDBOX_PASSWORDS[k.mailbox_of[lawyer.id]] not in repr(values)


def test_tsl_settings_save_validates_and_checks_permission(kanzlei):
    k = kanzlei
    lawyer, other, _ = k.lawyers
    hook = k.host.pm.hook.tsl_settings_save
    ctx = SettingsContext("user", lawyer.id)
    bad = hook(
        host=k.host,
        user=k.admin,
        plugin_id=PLUGIN_ID,
        tab_id=USER_TAB,
        context=ctx,
        values={"enabled": True, "host": "", "username": ""},
    )
    assert not bad.ok and {e.field for e in bad.errors} >= {"host", "username"}
    refused = hook(
        host=k.host, user=other, plugin_id=PLUGIN_ID, tab_id=USER_TAB, context=ctx, values={"timezone": "UTC"}
    )
    assert not refused.ok and "Berechtigung" in refused.message
    own = hook(
        host=k.host,
        user=lawyer,
        plugin_id=PLUGIN_ID,
        tab_id=USER_TAB,
        context=ctx,
        values={"timezone": "Europe/Vienna"},
    )
    assert own.ok
    assert k.runtime.accounts.load(lawyer.id).timezone == "Europe/Vienna"


def test_tsl_context_menu_actions(kanzlei):
    k = kanzlei
    items = k.host.menu(k.admin, "contacts", [k.firm.contacts[0].ref])
    labels = {m.label for m in items if m.plugin_id == PLUGIN_ID}
    assert labels == {"Exchange-Sync setzen", "Exchange-Sync entfernen"}
    assert all(m.menu_path == ("Extras", "Auswahl ändern") for m in items if m.plugin_id == PLUGIN_ID)
    assert [m for m in k.host.menu(k.admin, "calendar", []) if m.plugin_id == PLUGIN_ID] == []


def test_tsl_run_action_reports_per_record(kanzlei):
    k = kanzlei
    refs = [c.ref for c in k.firm.contacts[:3]]
    first = k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", refs[:2], {"users": [k.lawyers[1].id]})
    second = k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", refs, {"users": [k.lawyers[1].id]})
    assert [o.status for o in first.outcomes] == ["done", "done"]
    assert [o.status for o in second.outcomes] == ["unchanged", "unchanged", "done"]
    none = k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", refs, {"users": []})
    assert not none.ok


def test_tsl_record_saved_enqueues_without_touching_exchange(kanzlei):
    k = kanzlei
    k.runtime.worker.stop()
    contact = k.firm.contacts[10]
    k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", [contact.ref], {"users": [k.lawyers[0].id]})
    before = sum(k.server.engine.request_counts().values())
    k.host.pm.hook.tsl_record_saved(
        host=k.host, event=RecordEvent(contact.ref, dataclasses.replace(contact, notes="neu"))
    )
    assert sum(k.server.engine.request_counts().values()) == before
    (job,) = k.runtime.outbox.jobs(k.lawyers[0].id)
    assert job.version == 2  # the subscription's push and this save coalesced into one row
    assert "neu" in job.payload


def test_tsl_record_deleted_enqueues_removal(kanzlei):
    k = kanzlei
    contact = k.firm.contacts[11]
    k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", [contact.ref], {"users": [k.lawyers[2].id]})
    k.drain()
    k.runtime.worker.stop()
    k.host.pm.hook.tsl_record_deleted(host=k.host, event=RecordEvent(contact.ref, contact))
    (job,) = k.runtime.outbox.jobs(k.lawyers[2].id)
    assert job.op == "delete" and job.record_key == contact.ref.key
    assert RecordRef.parse(job.record_key) == contact.ref
    assert isinstance(k.admin, User)
