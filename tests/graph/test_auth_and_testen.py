"""Microsoft 365: "Testen" proves a write; auth failures each give a German cause, park only what they
concern, and never turn into a storm of token requests."""

from __future__ import annotations

import dataclasses

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.sandbox.graph import GraphApp
from tsl_exchange_plugin.sandbox.graph.testing import TENANT
from tsl_exchange_plugin.testing import USER_TAB, wait_for
from tsl_exchange_plugin.ui.status import mailbox_rows
from tsl_hostapi.types import SettingsContext

TEST = f"{PLUGIN_ID}.test_connection"
SET_SYNC = f"{PLUGIN_ID}.set_sync"


def press_test(k, user):
    return k.host.press(k.admin, TEST, (), {"user_id": user.id})


def rows(k):
    return {r.user_id: r for r in mailbox_rows(k.host, k.runtime)}


def wait_parked(k, users):
    ids = {u.id for u in users}
    return wait_for(
        lambda: {s.mailbox for s in k.runtime.outbox.mailbox_states() if s.parked} >= ids and rows(k),
        what="the mailboxes to be parked",
    )


def push_one(k, users, n=0):
    contact = k.firm.contacts[n]
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [u.id for u in users]}).ok
    return contact


def test_testen_on_a_graph_mailbox_writes_and_deletes_a_probe(gkanzlei):
    k = gkanzlei
    alice = k.lawyers[0]
    before = len(k.items(alice))
    result = press_test(k, alice)
    assert result.ok and result.status_icon == "green", result.message
    assert "Microsoft 365 erfolgreich" in result.message and "Uhrzeit stimmt" in result.message
    assert len(k.items(alice)) == before
    posts = [r for r in k.graph.log(k.mailbox_of[alice.id]) if r.path == "/$batch"]
    assert posts, "the probe went through Graph"
    tab = k.host.open_tab(k.admin, "user", USER_TAB, SettingsContext("user", alice.id)).values
    assert tab.values["status_icon"] == "green"


def test_wrong_secret_is_explained_and_parks_without_a_storm(gkanzlei):
    k = gkanzlei
    alice, bob, carol = k.lawyers
    k.configure_app(graph_secret="falsch-kopiert")
    result = press_test(k, alice)
    assert not result.ok and result.status_icon == "red"
    assert "geheime Clientschlüssel ist falsch" in result.message
    asked = k.graph.token_requests
    push_one(k, [alice, bob, carol])
    states = wait_parked(k, [alice, bob, carol])
    for user in (alice, bob, carol):
        assert states[user.id].state in ("wrong_password", "parked")
        assert "geheime Clientschlüssel ist falsch" in states[user.id].last_error
    # One token request for the new secret, not one per mailbox (or per retry).
    assert k.graph.token_requests - asked <= 1
    # The right secret again: every Graph mailbox gets another chance, and the contact arrives.
    k.configure_app()
    k.drain()
    for user in (alice, bob, carol):
        assert len(k.ours(user, k.firm.contacts[0].ref.key)) == 1


def test_missing_admin_consent_is_explained(gkanzlei):
    k = gkanzlei
    alice = k.lawyers[0]
    # A new app registration whose permissions no administrator has consented to yet.
    other = "0b6f1f6e-2c1d-4a39-8f0e-5d4c3b2a1f00"
    k.graph.add_app(GraphApp(other, TENANT, secret="neu~Geheim.42", consented=False))
    k.configure_app(graph_client_id=other, graph_secret="neu~Geheim.42")
    result = press_test(k, alice)
    assert not result.ok
    assert "Administratorzustimmung fehlt" in result.message
    push_one(k, [alice], 1)
    assert "Administratorzustimmung" in wait_parked(k, [alice])[alice.id].last_error


def test_app_limited_to_other_mailboxes_parks_only_those(gkanzlei):
    k = gkanzlei
    alice, bob, _ = k.lawyers
    app = k.graph.apps[next(iter(k.graph.apps))]
    app.mailboxes = {k.mailbox_of[bob.id]}
    result = press_test(k, alice)
    assert not result.ok
    assert f"Die App darf nicht auf das Postfach {k.mailbox_of[alice.id]} zugreifen" in result.message
    contact = push_one(k, [alice, bob], 2)
    wait_parked(k, [alice])
    wait_for(lambda: k.ours(bob, contact.ref.key), what="bob's contact")
    states = rows(k)
    assert states[alice.id].state == "parked" and "RBAC" in states[alice.id].last_error
    assert states[bob.id].state == "ok"
    assert len(k.ours(bob, contact.ref.key)) == 1 and k.ours(alice, contact.ref.key) == []


def test_testen_on_the_ews_address_of_exchange_online_offers_graph(gkanzlei, monkeypatch):
    from tsl_exchange_plugin.ui import connection_test

    k = gkanzlei
    alice = k.lawyers[0]
    values = {
        "user_id": alice.id,
        "host": "https://outlook.office365.com/EWS/Exchange.asmx",
        "backend": "ews",
    }
    values |= {"username": k.mailbox_of[alice.id], "password": "egal"}
    monkeypatch.setattr(connection_test, "_local_now", lambda: connection_test.EWS_ONLINE_END + 60)
    result = k.host.press(k.admin, TEST, (), values)
    assert not result.ok
    assert "endgültig abgeschaltet" in result.message and "„graph“" in result.message
    # Nothing was sent anywhere: the address alone says it.
    assert not [r for r in k.graph.log() if r.at > 0 and r.method == "POST" and "outlook" in r.path]


def test_clock_skew_is_reported(gkanzlei, monkeypatch):
    from tsl_exchange_plugin.ui import connection_test

    k = gkanzlei
    alice = k.lawyers[0]
    real = connection_test._local_now
    monkeypatch.setattr(connection_test, "_local_now", lambda: real() + 3600)
    result = press_test(k, alice)
    assert not result.ok and "Uhr von Microsoft 365 geht" in result.message


def test_secrets_never_reach_the_form(gkanzlei):
    k = gkanzlei
    values = k.host.open_tab(
        k.admin, "interfaces", f"{PLUGIN_ID}.interfaces", SettingsContext("interfaces")
    ).values
    text = repr(dataclasses.asdict(values) if dataclasses.is_dataclass(values) else values)
    assert "sbx~Geheim" not in text
    assert values.values["graph_status"] == "Geheimer Clientschlüssel hinterlegt"


def test_the_app_secret_never_reaches_a_log_line(gkanzlei, caplog):
    import logging

    from tsl_exchange_plugin.sandbox.graph.testing import CLIENT_SECRET

    k = gkanzlei
    caplog.set_level(logging.DEBUG)
    k.configure_app(graph_secret="falsch-" + CLIENT_SECRET)
    press_test(k, k.lawyers[0])
    k.configure_app()
    assert press_test(k, k.lawyers[0]).ok
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "msal" in {r.name.split(".")[0] for r in caplog.records}  # the libraries did log
    assert CLIENT_SECRET not in text


def test_the_exchange_tab_for_microsoft_365_needs_only_the_mailbox_address(gkanzlei):
    k = gkanzlei
    carol = k.lawyers[2]
    ctx = SettingsContext("user", carol.id)
    missing = k.host.save_tab(
        k.admin, "user", USER_TAB, ctx, {"enabled": True, "host": "graph", "email": "", "username": ""}
    )
    assert not missing.ok
    assert [e.field for e in missing.errors] == ["email"]
    ok = k.host.save_tab(
        k.admin, "user", USER_TAB, ctx, {"enabled": True, "host": "graph", "email": "c@kanzlei.test"}
    )
    assert ok.ok, ok
    assert k.runtime.config.resolve_account(carol.id).graph_url == "https://graph.microsoft.com/v1.0"
    # An EWS address on the same tab is EWS again, unless Microsoft 365 is chosen explicitly.
    ews = {
        "enabled": True,
        "host": "https://mail.kanzlei.test/EWS/Exchange.asmx",
        "username": "c@kanzlei.test",
    }
    assert k.host.save_tab(k.admin, "user", USER_TAB, ctx, {**ews, "password": "x"}).ok
    assert k.runtime.config.resolve_account(carol.id).backend == "ews"
    assert k.host.save_tab(k.admin, "user", USER_TAB, ctx, {**ews, "backend": "graph"}).ok
    account = k.runtime.config.resolve_account(carol.id)
    assert account.backend == "graph" and account.graph_url == "https://graph.microsoft.com/v1.0"


def test_the_status_view_names_each_mailboxs_interface(gkanzlei):
    k = gkanzlei
    alice, bob, _ = k.lawyers
    k.configure(bob, password="egal")  # bob back on EWS
    states = rows(k)
    assert states[alice.id].interface == "Microsoft 365" and states[bob.id].interface == "EWS"
