"""A subscription whose push never arrived is repaired by the administrator's own means, and the
status view shows what waits in the journal."""

from __future__ import annotations

import dataclasses
import json

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.cli.commands import main as cli_main
from tsl_exchange_plugin.core import subscriptions
from tsl_exchange_plugin.plugin import recovery_for
from tsl_exchange_plugin.ui.status import summary
from tsl_hostapi.types import SettingsContext

SET_SYNC = f"{PLUGIN_ID}.set_sync"
CONTACT_TAB = f"{PLUGIN_ID}.contact"


def subscribed_without_push(k, contact, user):
    """The state a crash after the subscription commit left behind in earlier versions:
    the user is on the contact's list, nothing was queued, nothing is in the mailbox."""
    subscriptions.set_subscribers(k.host.settings, contact.id, [user.id])
    assert k.runtime.outbox.jobs(user.id) == [] and k.ours(user, contact.ref.key) == []


def test_pressing_set_sync_again_pushes_a_missing_item(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[11]
    subscribed_without_push(k, contact, alice)
    result = k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]})
    assert result.ok and result.outcomes[0].status == "unchanged"
    assert "erneut übertragen" in result.message
    k.drain()
    assert len(k.ours(alice, contact.ref.key)) == 1


def test_pressing_set_sync_again_rewrites_nothing_that_is_there(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[12]
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
    k.drain()
    before = k.ours(alice, contact.ref.key)
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
    k.drain()
    after = k.ours(alice, contact.ref.key)
    assert (
        len(after) == 1 and after[0]["change_key"] == before[0]["change_key"]
    )  # an unchanged hash writes nothing


def test_saving_the_sync_tab_unchanged_pushes_a_missing_item(kanzlei):
    k = kanzlei
    alice, bob, _ = k.lawyers
    contact = k.firm.contacts[13]
    subscribed_without_push(k, contact, alice)
    ctx = SettingsContext("contact", contact.id)
    result = k.host.save_tab(k.admin, "contact", CONTACT_TAB, ctx, {"users": [alice.id]})
    assert result.ok, result
    k.drain()
    assert len(k.ours(alice, contact.ref.key)) == 1
    assert k.ours(bob, contact.ref.key) == []


class Unwritable:
    def __init__(self, outbox):
        self._outbox = outbox

    def __getattr__(self, name):
        if name in ("enqueue", "holders"):
            raise RuntimeError("Datenträger voll")
        return getattr(self._outbox, name)


def test_status_shows_what_waits_in_the_journal(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[14]
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
    k.drain()
    assert "Journal" not in summary(k.runtime)
    runtime = k.runtime
    good = runtime.enqueue.outbox
    runtime.enqueue.outbox = Unwritable(good)
    try:
        k.host.save(dataclasses.replace(contact, notes="eins"))
        k.host.save(dataclasses.replace(contact, notes="zwei"))
        text = summary(runtime)
        assert "Journal: 2 Änderungen warten" in text and "KB" in text, text
        # The command line on the same data directory shows it too.
        assert cli_main(["status", "--data", str(k.host.root), "--json", "--audit"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["journal"]["waiting"] == 2 and data["journal"]["size_bytes"] > 0
    finally:
        runtime.enqueue.outbox = good
    recovery = recovery_for(k.host)
    recovery.wake()
    assert recovery.wait_idle(60)
    assert "Journal" not in summary(runtime)
    k.drain()
    assert "zwei" in k.ours(alice, contact.ref.key)[0]["body"]
