"""Admin › Erweitert › System › Schnittstellen: firm settings, validation, status section, retry."""

from __future__ import annotations

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.plugin import runtime_for
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.types import SettingsContext

INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
USER_TAB = f"{PLUGIN_ID}.user"
RETRY = f"{PLUGIN_ID}.retry_now"
SET_SYNC = f"{PLUGIN_ID}.set_sync"
TEST = f"{PLUGIN_ID}.test_connection"
IFACE = SettingsContext("interfaces")


def _save(k, values, user=None):
    return k.host.save_tab(user or k.admin, "interfaces", INTERFACES_TAB, IFACE, values)


def test_only_an_administrator_sees_or_changes_the_interfaces_tab(kanzlei):
    k = kanzlei
    lawyer = k.lawyers[0]
    assert [t for t in k.host.settings_tabs(lawyer, "interfaces") if t.plugin_id == PLUGIN_ID] == []
    tab = k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE)
    names = {f.name for f in tab.tab.fields}
    assert {"target", "subfolder", "done_deadline", "queue_url", "mailboxes", "audit"} <= names
    assert [b.label for b in tab.tab.buttons] == [
        "Jetzt erneut versuchen",
        "Übertragene Elemente entfernen …",
        "Postfächer jetzt abgleichen",
    ]
    # A non-admin calling the hooks directly (as a buggy or hostile host menu might) is refused.
    hook = k.host.pm.hook
    loaded = hook.tsl_settings_load(
        host=k.host, user=lawyer, plugin_id=PLUGIN_ID, tab_id=INTERFACES_TAB, context=IFACE
    )
    assert loaded.values == {} and "Administrator" in loaded.status
    saved = hook.tsl_settings_save(
        host=k.host,
        user=lawyer,
        plugin_id=PLUGIN_ID,
        tab_id=INTERFACES_TAB,
        context=IFACE,
        values={"done_deadline": "remove"},
    )
    assert not saved.ok and "Administrator" in saved.message
    assert k.runtime.config.firm_settings().get("done_deadline") != "remove"
    assert not k.host.press(lawyer, RETRY).ok
    assert not k.host.press(lawyer, f"{PLUGIN_ID}.cleanup", (), {"all_mailboxes": True}).ok
    assert k.runtime.admin.push_gate() is None


BAD_SETTINGS = [
    ({"target": "subfolder", "subfolder": ""}, "subfolder", "Namen"),
    ({"target": "subfolder", "subfolder": "a/b"}, "subfolder", "Schrägstrich"),
    ({"target": "anywhere"}, "target", "wählen"),
    ({"done_deadline": "burn"}, "done_deadline", "markieren"),
    ({"deadline_reminder_minutes": "zwei"}, "deadline_reminder_minutes", "ganze Zahl"),
    ({"appointment_reminder_minutes": -5}, "appointment_reminder_minutes", "erlaubt sind 0"),
    ({"cleanup_max_percent": 0}, "cleanup_max_percent", "erlaubt sind 1"),
    ({"queue_url": "mysql://db/x"}, "queue_url", "Unbekannte Warteschlange"),
    ({"queue_url": "sqlite://relative"}, "queue_url", "SQLite-Adresse ungültig"),
    ({"queue_url": "postgresql://u:geheim123@127.0.0.1/test"}, "queue_url", "kein Passwort"),
    ({"queue_url": "postgresql://postgres@127.0.0.1:1/test"}, "queue_url", "nicht erreichbar"),
]


def test_bad_firm_settings_are_refused_field_by_field_and_nothing_is_lost(kanzlei):
    k = kanzlei
    before = k.runtime.config.firm_settings()
    for values, field, words in BAD_SETTINGS:
        result = _save(k, values)
        assert not result.ok, values
        assert [e.field for e in result.errors] == [field], values
        assert words in result.errors[0].message, (values, result.errors)
        assert "geheim123" not in repr(result)
        assert k.runtime.config.firm_settings() == before


def test_firm_settings_are_saved_loaded_and_used_by_the_mapping(kanzlei):
    k = kanzlei
    result = _save(
        k,
        {
            "done_deadline": "remove",
            "appointment_reminder_minutes": "30",
            "deadline_reminder_minutes": 2880,
            "pre_deadline_reminder_minutes": 60,
            "audit_retention_days": 30,
            "queue_url": "postgresql://postgres@127.0.0.1:5432/test",
        },
    )
    assert result.ok, result
    assert "nächsten Start" in result.message
    values = k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE).values.values
    assert values["done_deadline"] == "remove"
    assert values["appointment_reminder_minutes"] == 30 and values["deadline_reminder_minutes"] == 2880
    assert values["queue_url"] == "postgresql://postgres@127.0.0.1:5432/test"
    # The running queue is unchanged (takes effect on the next start), and the mapping uses the rest.
    assert type(k.runtime.outbox).__name__ == "SQLiteOutbox"
    from tsl_exchange_plugin.outbox import snapshot

    lawyer = k.lawyers[0]
    ctx = k.runtime.config.mapping_context(
        lawyer.id, snapshot.Snapshot(kind="deadline", record=None, case=None, users={})
    )
    assert ctx.done_deadline == "remove"
    assert (
        ctx.appointment_reminder_minutes,
        ctx.deadline_reminder_minutes,
        ctx.pre_deadline_reminder_minutes,
    ) == (
        30,
        2880,
        60,
    )
    # Back to SQLite so the restart in other tests is not affected.
    assert _save(k, {"queue_url": ""}).ok


def test_subfolder_target_takes_effect_on_next_start(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    result = _save(k, {"target": "subfolder", "subfolder": "timeSensor LEGAL"})
    assert result.ok and "nächsten Start" in result.message
    k.host.close()
    k.host = ReferenceHost(k.host.root)
    k.host.startup()
    assert runtime_for(k.host).backend.target_folders["contact"] == "timeSensor LEGAL"
    contact = k.firm.contacts[5]
    k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]})
    k.drain()
    mailbox = k.mailbox_of[alice.id]
    sub = next(
        f
        for f in k.server.engine.list_folders(mailbox)
        if f["name"] == "timeSensor LEGAL" and f["folder_class"] == "IPF.Contact"
    )
    keys = [
        (i.get("extended_properties") or {}).get("tslRecordId")
        for i in k.server.engine.list_items(mailbox, sub["id"])
    ]
    assert keys == [contact.ref.key]
    assert k.ours(alice, contact.ref.key) == []  # not in the default Contacts folder


def test_status_section_names_each_mailbox_state_and_retry_now_unparks(kanzlei, wait_for):
    k = kanzlei
    alice, bob, carol = k.lawyers
    # Bob: wrong password (parked). Carol: server answers 503 (error, retried). Alice: ok.
    k.configure(bob, password="Xy-wrong-77")
    k.server.inject("http_status", status=503, mailbox=k.mailbox_of[carol.id], count=None)
    refs = [k.firm.contacts[i].ref for i in (1, 2)]
    for user in (alice, bob, carol):
        k.host.press(k.admin, SET_SYNC, refs, {"users": [user.id]})
    k.runtime.worker.wake()

    def rows():
        tab = k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE)
        return {r["user_id"]: r for r in tab.values.values["mailboxes"]}

    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = rows()
        if (
            r[alice.id]["state"] == "ok"
            and r[bob.id]["state"] == "wrong_password"
            and r[carol.id]["state"] == "unreachable"
        ):
            break
        time.sleep(0.1)
    r = rows()
    assert r[alice.id]["state"] == "ok" and r[alice.id]["last_success"] and r[alice.id]["pending"] == 0
    assert r[bob.id]["state"] == "wrong_password" and r[bob.id]["state_label"] == "Passwort falsch"
    assert "Passwort falsch" in r[bob.id]["last_error"] and r[bob.id]["pending"] == 2
    assert (
        r[carol.id]["state"] == "unreachable" and "vorübergehend nicht verfügbar" in r[carol.id]["last_error"]
    )
    assert r[carol.id]["pending"] == 2
    # Fix both causes, then "Jetzt erneut versuchen".
    k.server.faults.clear()
    k.server.set_password(k.mailbox_of[bob.id], "Xy-wrong-77")  # the server now agrees with the stored one
    result = k.host.press(k.admin, RETRY)
    assert result.ok and "1 Postfächer freigegeben" in result.message
    wait_for(lambda: k.runtime.outbox.pending_count(bob.id) == 0, what="bob pushed")
    r = rows()
    assert r[bob.id]["state"] == "ok" and r[bob.id]["pending"] == 0
    assert len(k.ours(bob, refs[0].key)) == 1
    # Throttling (HTTP 429) is named as such.
    k.server.inject("http_status", status=429, retry_after=30, mailbox=k.mailbox_of[alice.id], count=None)
    k.host.press(k.admin, SET_SYNC, [k.firm.contacts[4].ref], {"users": [alice.id]})
    wait_for(lambda: rows()[alice.id]["state"] == "throttled", what="alice throttled")
    assert rows()[alice.id]["state_label"] == "vom Server gedrosselt"
    k.server.faults.clear()


def test_never_tested_and_test_outcome_show_in_status(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    rows = {
        r["user_id"]: r
        for r in k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE).values.values["mailboxes"]
    }
    assert rows[alice.id]["test"] == "" and rows[alice.id]["test_label"] == "nie getestet"
    assert k.host.press(alice, TEST, (), {"user_id": alice.id}).ok
    rows = {
        r["user_id"]: r
        for r in k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE).values.values["mailboxes"]
    }
    assert rows[alice.id]["test"] == "green" and rows[alice.id]["test_label"] == "erfolgreich"
