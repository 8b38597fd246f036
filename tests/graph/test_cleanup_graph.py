"""Cleanup of a Microsoft 365 mailbox removes exactly our items: contacts, calendar items and the
To Do tasks of our Wiedervorlagen; what the user made stays."""

from __future__ import annotations

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.backends.graph.wire import TODO_LIST_NAME
from tsl_exchange_plugin.testing import USER_TAB
from tsl_hostapi.types import SettingsContext

CLEANUP = f"{PLUGIN_ID}.cleanup"
SET_SYNC = f"{PLUGIN_ID}.set_sync"


def ours(k, user) -> int:
    engine, mb = k.server.engine, k.mailbox_of[user.id]
    todo = [f["id"] for f in engine.list_folders(mb) if f["name"] == TODO_LIST_NAME]
    count = sum(len(k.ours_any(user, f)) for f in ("contacts", "calendar"))
    return count + sum(len(engine.list_items(mb, f)) for f in todo)


def test_cleanup_of_a_graph_mailbox(gkanzlei, graph_sandbox):
    k = gkanzlei
    alice, bob, _ = k.lawyers
    k.host.press(k.admin, SET_SYNC, [c.ref for c in k.firm.contacts[:5]], {"users": [alice.id, bob.id]})
    k.drain()
    # A contact the user made on the phone: no record key, never touched.
    from exchangelib import Contact

    from tsl_exchange_plugin.sandbox.testing import exchangelib_account

    acc = exchangelib_account(k.server, k.mailbox_of[alice.id])
    Contact(folder=acc.contacts, display_name="Privat Zahnarzt", surname="Zahnarzt").save()
    before, bob_before = ours(k, alice), ours(k, bob)
    # The sample firm's Wiedervorlagen for alice are To Do tasks in our list.
    tasks = graph_sandbox.items(k.mailbox_of[alice.id], "tasks")
    assert before > 5 and any(t["title"].startswith("WV:") for t in tasks)
    off = k.host.save_tab(k.admin, "user", USER_TAB, SettingsContext("user", alice.id), {"enabled": False})
    assert off.ok
    done = k.host.press(k.admin, CLEANUP, (), {"users": [alice.id], "confirm_over_limit": True})
    assert done.ok, done
    (outcome,) = done.outcomes
    assert outcome.status == "done" and f"{before} Elemente entfernt" in outcome.message
    assert ours(k, alice) == 0
    assert [i["surname"] for i in k.items(alice, "contacts")] == ["Zahnarzt"]
    assert ours(k, bob) == bob_before
