"""The reconcile sweep end to end: reference host, the plugin through pluggy, the sandbox.

Each of these stayed wrong before the sweep existed: nothing compared a mailbox with the host.
Every scenario runs twice: with the lawyers' mailboxes on EWS (exchangelib) and on Microsoft 365
(Graph, httpx and msal). Both sandboxes serve the same store, so a phone edit or delete made
there reaches the mailbox whichever protocol the plugin speaks."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from exchangelib import Contact

from tsl_exchange_plugin import PLUGIN_ID, signals
from tsl_exchange_plugin.backends.graph.wire import TODO_LIST_NAME
from tsl_exchange_plugin.core.parity import stored
from tsl_exchange_plugin.sandbox.graph.testing import graph_sandbox  # noqa: F401 - fixture
from tsl_exchange_plugin.sandbox.testing import exchangelib_account
from tsl_exchange_plugin.testing import kanzlei_on
from tsl_exchange_plugin.ui.settings import RECONCILE_ACTION
from tsl_hostapi.types import RecordRef

SET_SYNC = f"{PLUGIN_ID}.set_sync"
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(params=["ews", "graph"])
def kanzlei(request, tmp_path, sandbox, graph_sandbox, licence_key) -> Iterator:  # noqa: F811
    """This module's firm, with its three lawyers on EWS and again on Microsoft 365."""
    k = kanzlei_on(request.param, tmp_path, sandbox, graph_sandbox, licence_key)
    try:
        yield k
    finally:
        k.host.close()


def _open_deadline(k, user):
    """An open deadline with at least one Vorfrist that ``user`` is responsible for (pushed)."""
    for d in k.host.iter_records("deadline"):
        if user.id in d.responsible_ids and not d.done and d.pre_deadline_dates and d.due_date:
            return d
    raise AssertionError("sample firm without an open deadline for this user")


def _local_day(utc_text: str) -> dt.date:
    """An all-day start as the sandbox lists it (UTC) -> its date in Europe/Berlin."""
    return dt.datetime.fromisoformat(utc_text.replace("Z", "+00:00")).astimezone(BERLIN).date()


def _shifted(utc_text: str, days: int) -> str:
    value = dt.datetime.fromisoformat(utc_text.replace("Z", "+00:00")).astimezone(BERLIN)
    moved = (value + dt.timedelta(days=days)).astimezone(dt.UTC)
    return moved.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sweep(k, user=None, **kw):
    reports = k.runtime.reconciler.sweep([user.id] if user else None, **kw)
    k.drain()
    return reports


def _set_firm(k, **values):
    k.runtime.admin.save_firm_settings(values)


def test_phone_edit_without_host_change_is_restored_by_the_sweep(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = _open_deadline(k, alice)
    (item,) = k.ours(alice, deadline.ref.key, "calendar")
    mailbox = k.mailbox_of[alice.id]
    k.server.engine.phone_edit(mailbox, item["item_id"], subject="am Telefon umbenannt")
    k.runtime.enqueue.resync([alice.id])  # what existed before: unchanged hash, nothing rewritten
    k.drain()
    assert k.ours(alice, deadline.ref.key, "calendar")[0]["subject"] == "am Telefon umbenannt"

    (report,) = _sweep(k, alice)
    assert report.outcome == "done"
    assert [f.kind for f in report.findings] == ["phone_edit"]
    assert "Betreff" in report.findings[0].detail
    assert report.full_reads == 1  # only the item whose ChangeKey differed was read in full
    (after,) = k.ours(alice, deadline.ref.key, "calendar")
    assert after["subject"] == item["subject"]
    # The next sweep finds nothing and reads nothing in full.
    (again,) = _sweep(k, alice)
    assert again.findings == () and again.full_reads == 0


def test_notes_below_the_marker_are_not_a_phone_edit(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = _open_deadline(k, alice)
    (item,) = k.ours(alice, deadline.ref.key, "calendar")
    body = item["body"] + "Mandant anrufen\n"
    k.server.engine.phone_edit(k.mailbox_of[alice.id], item["item_id"], body=body)
    (report,) = _sweep(k, alice)
    assert report.findings == () and report.full_reads == 1
    assert k.ours(alice, deadline.ref.key, "calendar")[0]["body"] == body


def test_phone_delete_is_recreated_or_only_reported_as_the_firm_sets(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = _open_deadline(k, alice)
    vorfrist_key = deadline.ref.key + "#vorfrist1"
    mailbox = k.mailbox_of[alice.id]
    _set_firm(k, phone_edits="report")
    k.server.engine.phone_delete(mailbox, k.ours(alice, vorfrist_key, "calendar")[0]["item_id"])
    (report,) = _sweep(k, alice)
    assert [(f.kind, f.record_key, f.repaired) for f in report.findings] == [
        ("phone_delete", vorfrist_key, False)
    ]
    assert k.ours(alice, vorfrist_key, "calendar") == []
    # The parity report lists the missing Vorfrist with user, case and both dates.
    parity = stored(k.runtime)
    assert not parity.clean
    (diff,) = [d for d in parity.diffs if d.record_key == vorfrist_key]
    assert (diff.user_name, diff.label, diff.mailbox_date) == (alice.name, "Vorfrist", "")
    assert diff.host_date == deadline.pre_deadline_dates[0].isoformat()

    _set_firm(k, phone_edits="restore")
    (report,) = _sweep(k, alice)
    assert [(f.kind, f.repaired) for f in report.findings] == [("phone_delete", True)]
    assert len(k.ours(alice, vorfrist_key, "calendar")) == 1
    (clean,) = _sweep(k, alice)
    assert clean.findings == ()
    assert stored(k.runtime).clean


def test_edit_made_while_disabled_arrives_after_enabling(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = _open_deadline(k, alice)
    k.runtime.admin.save_firm_settings({"reconcile_auto": True})
    k.host.disable(PLUGIN_ID)
    moved = dataclasses.replace(deadline, due_date=deadline.due_date + dt.timedelta(days=7))
    k.host.save(moved)  # nobody listens: the plugin is off
    done: list = []
    signals.sweep_done.connect(lambda sender, report, **_: done.append(report), weak=False)
    try:
        assert k.host.enable(PLUGIN_ID).allowed
        assert k.runtime.sweeper.wait_idle(60)
        k.drain()
    finally:
        signals.sweep_done.receivers.clear()
    assert any(f.kind == "changed" for r in done for f in r.findings)
    (item,) = k.ours(alice, deadline.ref.key, "calendar")
    assert _local_day(item["start"]) == moved.due_date
    # The sweep found the old date and queued its correction; the next one finds it right.
    (diff,) = stored(k.runtime).diffs
    assert diff.record_key == deadline.ref.key and diff.repairing
    _sweep(k)
    assert stored(k.runtime).clean


def test_orphan_and_surplus_copy_are_removed_items_without_our_key_stay(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[3]
    assert k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]}).ok
    k.drain()
    # The subscription goes away behind the plugin's back (as if its removal had been lost).
    from tsl_exchange_plugin.core import subscriptions

    subscriptions.set_subscribers(k.host.settings, contact.id, ())
    # A surplus copy of a key that is wanted, as a retried create could leave.
    deadline = _open_deadline(k, alice)
    (frist,) = k.ours(alice, deadline.ref.key, "calendar")
    session = k.runtime.backend.session(k.runtime.config.resolve_account(alice.id))
    from tsl_exchange_plugin.mapping.items import CalendarEntry

    copy = CalendarEntry(
        record_key=deadline.ref.key, subject=frist["subject"], all_day=True, start_date=deadline.due_date
    )
    assert session.create([copy])[0].item_id
    session.close()
    # The only contact of ours would be all of the folder: the cleanup guard refuses.
    (report,) = _sweep(k, alice)
    assert sorted(f.kind for f in report.findings) == ["refused", "surplus"]
    assert len(k.ours(alice, contact.ref.key)) == 1
    # With the user's own contacts beside it, it is a small share and goes; theirs stay.
    own = exchangelib_account(k.server, k.mailbox_of[alice.id])
    for name in ("Oma", "Zahnarzt"):
        Contact(account=own, folder=own.contacts, display_name=name, surname=name).save()
    mine_before = len(k.items(alice)) - len(k.ours_any(alice))
    (report,) = _sweep(k, alice)
    assert sorted(f.kind for f in report.findings) == ["orphan"]
    assert k.ours(alice, contact.ref.key) == []
    (kept,) = k.ours(alice, deadline.ref.key, "calendar")
    assert kept["item_id"] == frist["item_id"]
    assert len(k.items(alice)) - len(k.ours_any(alice)) == mine_before


def test_dry_run_changes_nothing_and_cli_reconcile_repairs(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = _open_deadline(k, alice)
    (item,) = k.ours(alice, deadline.ref.key, "calendar")
    k.server.engine.phone_edit(k.mailbox_of[alice.id], item["item_id"], subject="geändert")
    (dry,) = k.runtime.reconciler.sweep([alice.id], dry_run=True)
    assert [f.kind for f in dry.findings] == ["phone_edit"]
    assert k.runtime.outbox.pending_count(alice.id) == 0
    assert k.ours(alice, deadline.ref.key, "calendar")[0]["subject"] == "geändert"
    # The button queues a background sweep.
    assert k.host.press(k.admin, RECONCILE_ACTION, [], {"user_id": alice.id}).ok
    assert k.runtime.sweeper.wait_idle(60)
    k.drain()
    assert k.ours(alice, deadline.ref.key, "calendar")[0]["subject"] == item["subject"]


def test_parity_report_lists_a_deadline_moved_on_the_server(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = _open_deadline(k, alice)
    (item,) = k.ours(alice, deadline.ref.key, "calendar")
    received: list = []
    signals.parity_checked.connect(lambda sender, report, **_: received.append(report), weak=False)
    try:
        _set_firm(k, phone_edits="report")
        later = deadline.due_date + dt.timedelta(days=3)
        k.server.engine.phone_edit(
            k.mailbox_of[alice.id],
            item["item_id"],
            start=_shifted(item["start"], 3),
            end=_shifted(item["end"], 3),
        )
        k.runtime.reconciler.sweep()
    finally:
        signals.parity_checked.receivers.clear()
    assert len(received) == 1, [(r.mailboxes, r.at, r.checked) for r in received]
    (report,) = received
    assert not report.clean
    (diff,) = [d for d in report.diffs if d.record_key == deadline.ref.key]
    case = k.host.get_record(RecordRef("case", deadline.case_id))
    assert (diff.user_id, diff.label, diff.case_number) == (alice.id, "Frist", case.file_number)
    assert (diff.host_date, diff.mailbox_date) == (deadline.due_date.isoformat(), later.isoformat())
    assert report.checked >= 2
    # The administrator is told in German, with user, case and both dates.
    (note,) = [n for n in k.host.notifications if "Fristenabgleich" in n.message]
    assert note.level == "warning" and note.user_id is None
    assert alice.name in note.message and case.file_number in note.message
    assert later.strftime("%d.%m.%Y") in note.message


def test_a_mailbox_set_up_again_without_sync_state_ends_with_one_copy_per_key(kanzlei):
    # A new installation (or a lost sync state) meets a mailbox that still holds our items:
    # the push after the account is set up cannot know them, the sweep that follows it can.
    k = kanzlei
    alice = k.lawyers[0]
    k.configure(alice, enabled=False)
    for key in k.runtime.outbox.sync_keys(alice.id):
        k.runtime.outbox.delete_sync(alice.id, key)
    before = {i["extended_properties"]["tslRecordId"] for i in k.ours_any(alice, "calendar")}
    assert before
    k.runtime.admin.save_firm_settings({"reconcile_auto": True})
    done: list = []
    signals.sweep_done.connect(lambda sender, report, **_: done.append(report), weak=False)
    try:
        k.configure(alice, enabled=True)
        assert k.runtime.sweeper.wait_idle(60)
        k.drain()
    finally:
        signals.sweep_done.receivers.clear()
    (report,) = done
    assert report.mailbox == alice.id and report.count("surplus") >= 1
    if k.backend_name == "ews":
        # Graph drops a repeated event create by its transactionId, so there only the tasks doubled.
        assert report.count("surplus") >= len(before)
    keys = [i["extended_properties"]["tslRecordId"] for i in k.ours_any(alice, "calendar")]
    assert sorted(keys) == sorted(set(keys)) and set(keys) == before


def test_a_deadline_reassigned_while_disabled_moves_mailboxes_after_enabling(kanzlei):
    k = kanzlei
    alice, bob = k.lawyers[0], k.lawyers[1]
    deadline = next(
        d
        for d in k.host.iter_records("deadline")
        if alice.id in d.responsible_ids and bob.id not in d.responsible_ids and not d.done
    )
    assert k.ours(alice, deadline.ref.key, "calendar") and not k.ours(bob, deadline.ref.key, "calendar")
    k.runtime.admin.save_firm_settings({"reconcile_auto": True})
    k.host.disable(PLUGIN_ID)
    k.host.save(dataclasses.replace(deadline, responsible_ids=(bob.id,)))  # nobody listens
    assert k.host.enable(PLUGIN_ID).allowed
    assert k.runtime.sweeper.wait_idle(60)
    k.drain()
    assert k.ours(alice, deadline.ref.key, "calendar") == []  # an orphan now: removed
    assert len(k.ours(bob, deadline.ref.key, "calendar")) == 1  # missing there: pushed


def _task_item(k, user, reminder):
    """The Wiedervorlage's task in the mailbox: the Tasks folder over EWS, our To Do list over Graph."""
    engine, mailbox = k.server.engine, k.mailbox_of[user.id]
    folders = ["tasks"] + [f["id"] for f in engine.list_folders(mailbox) if f["name"] == TODO_LIST_NAME]
    link = f"tsl://reminder/{reminder.id}"
    return [
        i for folder in folders for i in engine.list_items(mailbox, folder) if link in (i.get("body") or "")
    ]


def test_a_reminder_edited_on_the_phone_is_restored_and_a_deleted_one_recreated(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    reminder = next(
        r
        for r in k.host.iter_records("reminder")
        if alice.id in r.responsible_ids and not r.done and r.due_date
    )
    (task,) = _task_item(k, alice, reminder)
    mailbox = k.mailbox_of[alice.id]
    k.server.engine.phone_edit(mailbox, task["item_id"], status="Completed", percent_complete=100)
    (report,) = _sweep(k, alice)
    assert [(f.kind, f.record_key) for f in report.findings] == [("phone_edit", reminder.ref.key)]
    assert "Status" in report.findings[0].detail
    (after,) = _task_item(k, alice, reminder)
    assert after["status"] == "NotStarted" and after["item_id"] == task["item_id"]

    k.server.engine.phone_delete(mailbox, after["item_id"])
    (report,) = _sweep(k, alice)
    assert [(f.kind, f.record_key) for f in report.findings] == [("phone_delete", reminder.ref.key)]
    (again,) = _task_item(k, alice, reminder)
    assert again["due_date"] == task["due_date"]
    (clean,) = _sweep(k, alice)
    assert clean.findings == () and clean.full_reads == 0
