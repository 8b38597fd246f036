"""Cleanup: offered when a mailbox loses access (or before disabling), removes exactly our items, guarded."""

from __future__ import annotations

import dataclasses

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.cli import commands as cli
from tsl_exchange_plugin.sandbox.testing import exchangelib_account
from tsl_exchange_plugin.ui.actions import cleanup_progress
from tsl_hostapi.types import SettingsContext

USER_TAB = f"{PLUGIN_ID}.user"
INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
CLEANUP = f"{PLUGIN_ID}.cleanup"
SET_SYNC = f"{PLUGIN_ID}.set_sync"
RETRY = f"{PLUGIN_ID}.retry_now"
IFACE = SettingsContext("interfaces")
FOLDERS = ("contacts", "calendar", "tasks")


def _hand_made_contact(k, user, surname: str) -> None:
    """A contact the user made on the phone: no tslRecordId, must never be touched."""
    from exchangelib import Contact

    acc = exchangelib_account(k.server, k.mailbox_of[user.id])
    Contact(
        folder=acc.contacts, display_name=f"Privat {surname}", given_name="Privat", surname=surname
    ).save()


def _ours(k, user) -> int:
    return sum(len(k.ours_any(user, f)) for f in FOLDERS)


def _foreign(k, user) -> list[str]:
    return [
        i.get("surname", "")
        for i in k.items(user, "contacts")
        if not (i.get("extended_properties") or {}).get("tslRecordId")
    ]


def test_user_losing_access_is_offered_cleanup_which_removes_exactly_our_items(kanzlei):
    k = kanzlei
    alice, bob, _ = k.lawyers
    k.host.press(k.admin, SET_SYNC, [c.ref for c in k.firm.contacts[:5]], {"users": [alice.id, bob.id]})
    k.drain()
    _hand_made_contact(k, alice, "Zahnarzt")
    assert len(k.ours_any(alice, "contacts")) == 5 and _foreign(k, alice) == ["Zahnarzt"]
    ours_before = _ours(k, alice)
    bob_before = _ours(k, bob)

    # Switching the account off keeps the items and says how to remove them.
    off = k.host.save_tab(k.admin, "user", USER_TAB, SettingsContext("user", alice.id), {"enabled": False})
    assert off.ok and "Übertragene Elemente entfernen" in off.message
    offer = k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE).values.values["cleanup_offer"]
    assert offer == [
        {
            "user_id": alice.id,
            "user_name": alice.name,
            "reason": "Exchange-Sync für den Benutzer abgeschaltet",
        }
    ]

    # Only an administrator may run it.
    assert not k.host.press(alice, CLEANUP, (), {"users": [alice.id]}).ok
    assert _ours(k, alice) == ours_before

    # The guard: 5 of 6 contacts (83 %) is more than 50 % of the folder -> refused, nothing deleted.
    refused = k.host.press(k.admin, CLEANUP)
    assert not refused.ok
    (outcome,) = refused.outcomes
    assert outcome.ref.id == alice.id and outcome.status == "failed"
    assert "mehr als 50 %" in outcome.message and "Kontakte: 5 von 6 (83 %)" in outcome.message
    assert _ours(k, alice) == ours_before

    # Confirmed: every item we created goes, in every folder; the hand-made contact and Bob stay.
    events = []

    def on_progress(sender, **kw):
        events.append(kw)

    cleanup_progress.connect(on_progress)
    try:
        done = k.host.press(k.admin, CLEANUP, (), {"confirm_over_limit": True})
    finally:
        cleanup_progress.disconnect(on_progress)
    assert done.ok, done
    (outcome,) = done.outcomes
    assert outcome.status == "done" and f"{ours_before} Elemente entfernt" in outcome.message
    assert _ours(k, alice) == 0
    assert _foreign(k, alice) == ["Zahnarzt"]
    assert _ours(k, bob) == bob_before
    assert k.runtime.outbox.sync_keys(alice.id) == []
    assert [(e["done"], e["total"], e["user_id"], e["outcome"]) for e in events] == [(1, 1, alice.id, "done")]
    assert k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE).values.values["cleanup_offer"] == []
    assert any("Elemente aus 1 Postfächern entfernt" in n.message for n in k.host.notifications)


def test_deactivated_user_is_cleaned_without_confirmation_under_the_limit_and_active_users_are_refused(
    kanzlei,
):
    k = kanzlei
    _, bob, carol = k.lawyers
    assert k.host.save_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE, {"cleanup_max_percent": 100}).ok
    k.host.press(k.admin, SET_SYNC, [c.ref for c in k.firm.contacts[:3]], {"users": [carol.id, bob.id]})
    k.drain()
    k.host.save_user(dataclasses.replace(carol, active=False))
    offer = k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE).values.values["cleanup_offer"]
    assert [(o["user_id"], o["reason"]) for o in offer] == [(carol.id, "Benutzer deaktiviert")]
    bob_before = _ours(k, bob)
    result = k.host.press(k.admin, CLEANUP, (), {"users": [carol.id, bob.id]})
    by_user = {o.ref.id: o for o in result.outcomes}
    assert by_user[carol.id].status == "done"
    assert by_user[bob.id].status == "failed" and "synchronisiert noch" in by_user[bob.id].message
    assert _ours(k, carol) == 0 and _ours(k, bob) == bob_before > 0


def test_cleanup_before_disabling_the_interface_holds_pushing_and_clears_every_mailbox(kanzlei, capsys):
    k = kanzlei
    alice, bob, carol = k.lawyers
    k.host.press(k.admin, SET_SYNC, [c.ref for c in k.firm.contacts[:2]], {"users": [alice.id]})
    k.drain()
    result = k.host.press(k.admin, CLEANUP, (), {"all_mailboxes": True, "confirm_over_limit": True})
    assert result.ok, result
    assert {o.ref.id for o in result.outcomes} == {alice.id, bob.id, carol.id}
    assert all(_ours(k, u) == 0 for u in k.lawyers)
    # Held: a save now stays queued instead of pushing into the cleaned mailbox.
    assert "deaktiviert werden kann" in (k.runtime.admin.push_gate() or "")
    k.host.press(k.admin, SET_SYNC, [k.firm.contacts[7].ref], {"users": [alice.id]})
    assert k.runtime.outbox.pending_count(alice.id) >= 1
    # The administrator disables the interface: the queue survives for a later re-enable.
    k.host.disable(PLUGIN_ID)
    entry = next(e for e in k.host.interfaces_entries() if e.plugin_id == PLUGIN_ID)
    assert not entry.enabled and not entry.greyed_out
    assert _ours(k, alice) == 0
    # The operators' command works while the plugin is disabled (here: nothing left to remove).
    capsys.readouterr()
    assert cli.main(["cleanup", "--data", str(k.host.root), "--all"]) == 0
    out = capsys.readouterr().out
    assert "0 Elemente aus 0 Postfächern entfernt." in out and "Keine von Exchange-Sync angelegten" in out
