"""Licence at run time: seats on save, a licence that ends while running, bad licences greyed out."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tsl_exchange_plugin import PLUGIN_ID, licence
from tsl_exchange_plugin.plugin import runtime_for
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.types import SettingsContext

USER_TAB = f"{PLUGIN_ID}.user"
INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
RETRY = f"{PLUGIN_ID}.retry_now"
SET_SYNC = f"{PLUGIN_ID}.set_sync"


def _enable_values(k, email: str) -> dict:
    return {
        "enabled": True,
        "host": k.server.url,
        "username": email,
        "password": SANDBOX_PASSWORDS[email],
        "auth_type": "basic",
        "allow_insecure": True,
    }


def test_seats_refuse_the_extra_user_with_a_clear_message(kanzlei, licence_key):
    k = kanzlei
    # Three lawyers use Exchange; the firm now holds a licence for three seats.
    k.host.install_licence(PLUGIN_ID, licence_key(seats=3))
    k.runtime.admin.licensing.invalidate()
    fourth = next(u for u in k.firm.users if u.active and u.id not in {x.id for x in k.lawyers})
    email = k.mailbox_of[k.lawyers[0].id]
    result = k.host.save_tab(
        k.admin, "user", USER_TAB, SettingsContext("user", fourth.id), _enable_values(k, email)
    )
    assert not result.ok
    (err,) = result.errors
    assert err.field == "enabled" and "Alle 3 lizenzierten Exchange-Plätze sind belegt" in err.message
    assert not k.runtime.accounts.load(fourth.id).enabled
    # Nothing else broke: a seat holder can still save, and pushes still flow.
    again = k.host.save_tab(
        k.admin, "user", USER_TAB, SettingsContext("user", k.lawyers[1].id), {"timezone": "Europe/Berlin"}
    )
    assert again.ok, again
    k.host.press(k.admin, SET_SYNC, [k.firm.contacts[0].ref], {"users": [k.lawyers[0].id]})
    k.drain()
    assert len(k.ours(k.lawyers[0], k.firm.contacts[0].ref.key)) == 1
    # Freeing a seat lets the fourth user in.
    off = k.host.save_tab(
        k.admin, "user", USER_TAB, SettingsContext("user", k.lawyers[2].id), {"enabled": False}
    )
    assert off.ok
    assert k.host.save_tab(
        k.admin, "user", USER_TAB, SettingsContext("user", fourth.id), _enable_values(k, email)
    ).ok


def test_licence_ending_while_running_holds_pushes_keeps_queue_and_resumes(kanzlei, licence_key, wait_for):
    k = kanzlei
    alice = k.lawyers[0]
    good = licence_key()
    k.host.install_licence(PLUGIN_ID, licence_key(expires=dt.date.today() - dt.timedelta(days=1)))
    wait_for(lambda: k.runtime.admin.push_gate(), what="gate closed")
    contact = k.firm.contacts[3]
    k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]})
    k.runtime.worker.wake()
    wait_for(lambda: "abgelaufen" in k.runtime.worker.held_reason, what="worker held")
    assert k.runtime.outbox.pending_count(alice.id) == 1
    assert k.ours(alice, contact.ref.key) == []
    # Why: on the Interfaces tab, in the status rows and greyed out on the Interfaces page.
    tab = k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, SettingsContext("interfaces"))
    assert "abgelaufen" in tab.values.values["summary"] and "Warteschlange" in tab.values.values["summary"]
    row = next(r for r in tab.values.values["mailboxes"] if r["user_id"] == alice.id)
    # The reason stands once, in the summary; each row says "held", not the reason again.
    assert row["state"] == "held" and "abgelaufen" not in row["last_error"] and row["pending"] == 1
    entry = next(e for e in k.host.interfaces_entries() if e.plugin_id == PLUGIN_ID)
    assert entry.greyed_out and "abgelaufen" in entry.reason
    # The retry button cannot override a missing licence.
    assert not k.host.press(k.admin, RETRY).ok
    # Restoring the licence resumes: the queued change arrives.
    k.host.install_licence(PLUGIN_ID, good)
    k.drain()
    assert len(k.ours(alice, contact.ref.key)) == 1
    assert k.runtime.admin.push_gate() is None
    entry = next(e for e in k.host.interfaces_entries() if e.plugin_id == PLUGIN_ID)
    assert not entry.greyed_out and entry.reason == ""


def _other_key_licence() -> str:
    key = Ed25519PrivateKey.generate()
    claims = licence.LicenceClaims("Fremd", (licence.MODULE,), 5, dt.date.today() + dt.timedelta(days=30))
    return licence.sign(claims, key, "test")  # same key id, wrong key: a forgery


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("none", "Keine Lizenz"),
        ("forged", "Signatur passt nicht"),
        ("altered", "Signatur passt nicht"),
        ("wrong_module", "umfasst das Modul Exchange-Sync nicht"),
        ("expired", "abgelaufen"),
        ("garbage", "beschädigt"),
    ],
)
def test_bad_licence_is_not_enabled_and_greyed_out_with_reason(tmp_path, licence_key, kind, expected):
    docs = {
        "none": None,
        "forged": _other_key_licence(),
        "altered": licence_key(seats=2).replace('"seats": 2', '"seats": 200'),
        "wrong_module": licence_key(modules=("dms",)),
        "expired": licence_key(expires=dt.date.today() - dt.timedelta(days=1)),
        "garbage": "{not json",
    }
    host = ReferenceHost(tmp_path / "h")
    try:
        host.startup()
        if docs[kind] is not None:
            host.install_licence(PLUGIN_ID, docs[kind])
        decision = host.enable(PLUGIN_ID)
        assert not decision.allowed and expected in decision.reason
        assert runtime_for(host) is None
        entry = next(e for e in host.interfaces_entries() if e.plugin_id == PLUGIN_ID)
        assert entry.greyed_out and not entry.enabled and expected in entry.reason
    finally:
        host.close()
