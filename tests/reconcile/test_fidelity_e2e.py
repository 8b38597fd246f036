"""The server fidelity probe: a server that answers NoError but drops reminder fields is named by
"Testen", shown in the status view, and worked around where a workaround exists."""

from __future__ import annotations

import dataclasses

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.core.fidelity import stored
from tsl_exchange_plugin.ui.status import mailbox_rows

TEST = f"{PLUGIN_ID}.test_connection"


def _row(k, user):
    return next(r for r in mailbox_rows(k.host, k.runtime) if r.user_id == user.id)


def _open_deadline(k, user):
    for d in k.host.iter_records("deadline"):
        if user.id in d.responsible_ids and not d.done and d.due_date:
            return d
    raise AssertionError("no open deadline")


def test_a_server_that_never_stores_reminder_times_is_named_by_testen(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    k.server.engine.ignore_field("ReminderDueBy")  # like the grommunio server: NoError, nothing stored
    result = k.host.press(k.admin, TEST, (), {"user_id": alice.id})
    assert not result.ok and result.status_icon == "red"
    assert "Server übernimmt die Erinnerungszeit nicht (Aufgaben/Wiedervorlagen)" in result.message
    note = _row(k, alice).server_note
    assert "Server übernimmt die Erinnerungszeit nicht" in note
    tasks = len([key for key in k.runtime.outbox.sync_keys(alice.id) if key.startswith("reminder:")])
    assert tasks and f"Betroffen in diesem Postfach: {tasks} Aufgaben/Wiedervorlagen." in note
    # The probe cleaned up after itself.
    assert [
        i for i in k.ours_any(alice, "tasks") if i["extended_properties"]["tslRecordId"].startswith("probe:")
    ] == []
    assert [i for i in k.ours_any(alice, "calendar") if "timeSensor Test" in i["subject"]] == []


def test_a_reminder_switch_ignored_on_update_is_worked_around_by_recreating(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = _open_deadline(k, alice)
    (before,) = k.ours(alice, deadline.ref.key, "calendar")
    assert before["reminder_is_set"] is True
    # Switching a reminder off is answered NoError and never stored (a Frist marked done kept it).
    k.server.engine.ignore_field("ReminderIsSet", on=("update",))
    result = k.host.press(k.admin, TEST, (), {"user_id": alice.id})
    assert result.ok and result.status_icon == "green", result.message
    assert "beim Ändern nicht" in result.message and "Erinnerung" in result.message
    server = k.runtime.config.resolve_account(alice.id).server
    assert stored(k.runtime, server).recreate_classes == {"calendar", "task"}

    notes = before["body"] + "Mandant angerufen\n"
    k.server.engine.phone_edit(k.mailbox_of[alice.id], before["item_id"], body=notes)
    k.host.save(dataclasses.replace(deadline, done=True))
    k.drain()
    (after,) = k.ours(alice, deadline.ref.key, "calendar")
    assert after["subject"].startswith("Erledigt")
    assert after["reminder_is_set"] is False  # recreated, not updated
    assert after["item_id"] != before["item_id"]
    assert after["body"].endswith("Mandant angerufen\n")  # the user's notes moved with it
    # The sync state follows the new item: the next sweep finds nothing to repair.
    (report,) = k.runtime.reconciler.sweep([alice.id])
    assert [f for f in report.findings if f.record_key.startswith(deadline.ref.key)] == []
