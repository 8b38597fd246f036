"""A mailbox moves from EWS to Microsoft Graph (and back): nothing is pushed twice, nothing goes
missing, and what was there is updated in place."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.backends.graph.wire import TODO_LIST_NAME
from tsl_exchange_plugin.mapping.reminder import linked_record_key
from tsl_exchange_plugin.sandbox.graph.convert import rest_id
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS
from tsl_exchange_plugin.testing import make_kanzlei
from tsl_hostapi.types import Appointment, Deadline, OccurrenceChange, Recurrence, Reminder

SET_SYNC = f"{PLUGIN_ID}.set_sync"


@pytest.fixture
def ekanzlei(tmp_path, sandbox, graph_sandbox, licence_key):  # noqa: F811 - fixtures from conftest
    k = make_kanzlei(tmp_path, sandbox, graph_sandbox, licence_key, backend="ews")
    try:
        yield k
    finally:
        k.host.close()


def snapshot(k, user):
    """record key -> (item id, change key) of everything of ours in the user's mailbox."""
    engine = k.server.engine
    mb = k.mailbox_of[user.id]
    folders = ["contacts", "calendar", "tasks"] + [
        f["id"] for f in engine.list_folders(mb) if f["name"] == TODO_LIST_NAME
    ]
    out: dict[str, list[tuple[str, str]]] = {}
    for folder in folders:
        for item in engine.list_items(mb, folder):
            key = (item.get("extended_properties") or {}).get("tslRecordId")
            if not key and item.get("subject", "").startswith("WV:"):
                key = "task:" + item["subject"]  # To Do tasks carry no extended property
            if key:
                out.setdefault(key, []).append((item["item_id"], item["change_key"]))
    return out


def test_moving_to_graph_adopts_every_item_and_back_again(ekanzlei):
    k = ekanzlei
    alice = k.lawyers[0]
    contacts = [c for c in k.firm.contacts if c.kind == "person"][:8]
    assert k.host.press(k.admin, SET_SYNC, [c.ref for c in contacts], {"users": [alice.id]}).ok
    d = Deadline(
        id="mig-1",
        due_date=dt.date(2026, 12, 14),
        kind="Berufungsfrist",
        pre_deadline_dates=(dt.date(2026, 11, 30), dt.date(2026, 12, 7)),
        responsible_ids=(alice.id,),
    )
    r = Reminder(
        id="mig-wv", due_date=dt.date(2026, 12, 1), subject="Akte Umzug", responsible_ids=(alice.id,)
    )
    series = Appointment(
        id="mig-s",
        subject="Kanzleirunde",
        start=dt.datetime(2026, 11, 2, 9),
        end=dt.datetime(2026, 11, 2, 10),
        participant_ids=(alice.id,),
        recurrence=Recurrence(
            "weekly",
            weekdays=(0,),
            count=6,
            exceptions=(
                OccurrenceChange(dt.date(2026, 11, 9), cancelled=True),
                OccurrenceChange(dt.date(2026, 11, 16), subject="Sonderrunde"),
            ),
        ),
    )
    k.host.save_many([d, r, series])
    k.drain()
    before = snapshot(k, alice)
    assert all(len(v) == 1 for v in before.values())
    assert {c.ref.key for c in contacts} | {d.ref.key, f"{d.ref.key}#vorfrist2", series.ref.key} <= set(
        before
    )
    graph_writes_before = len(k.graph.log())

    # The administrator switches alice to Microsoft 365 (Host "graph"); the resync runs at once.
    k.configure_graph(alice)
    k.drain()
    after = snapshot(k, alice)
    assert set(after) == set(before), "nothing missing, nothing new"
    assert all(len(v) == 1 for v in after.values()), "no duplicates"
    for key, [(item_id, change_key)] in before.items():
        assert after[key][0][0] == item_id, f"{key} was replaced instead of updated"
        assert after[key][0][1] != change_key, f"{key} was not rewritten through Graph"
    assert len(k.graph.log()) > graph_writes_before
    # The series written over EWS is the same series over Graph, with its exceptions.
    (master,) = k.ours(alice, series.ref.key, "calendar")
    assert master["calendar_item_type"] == "RecurringMaster"
    events = {e["id"]: e for e in k.graph.items(k.mailbox_of[alice.id], "events")}
    adopted = events[rest_id(master["item_id"])]
    assert adopted["type"] == "seriesMaster"
    # No create went to Graph for an item that already existed.
    assert not any(r.method == "POST" and "/contacts" in r.path for r in k.graph.log())

    # Later edits and deletes go through Graph to the adopted items.
    k.host.save(dataclasses.replace(contacts[0], job_title="Syndikusanwältin"))
    k.host.delete(contacts[1].ref)
    k.drain()
    (item,) = k.ours(alice, contacts[0].ref.key)
    assert item["job_title"] == "Syndikusanwältin" and item["item_id"] == before[contacts[0].ref.key][0][0]
    assert k.ours(alice, contacts[1].ref.key) == []

    # A Wiedervorlage saved while on Graph is a To Do task in our list: it cannot carry the
    # extended property (todoTask has none), only its linked resource and the record link.
    r2 = Reminder(
        id="mig-wv2", due_date=dt.date(2026, 12, 3), subject="Akte Rückweg", responsible_ids=(alice.id,)
    )
    k.host.save(r2)
    k.drain()
    (on_graph,) = tasks_of(k, alice, r2)
    assert on_graph["folder"] == TODO_LIST_NAME

    # And back to EWS: contacts, calendar items and both Wiedervorlagen are adopted again, the one
    # in the To Do list found by its record link; none is written twice.
    k.configure(alice, password=SANDBOX_PASSWORDS[k.mailbox_of[alice.id]])
    k.drain()
    back = snapshot(k, alice)
    counts = Counter({key: len(v) for key, v in back.items()})
    assert all(n == 1 for n in counts.values()), counts
    for key in set(before) - {contacts[1].ref.key}:
        if key.startswith(("contact:", "deadline:", "reminder:")):
            assert back[key][0][0] == before[key][0][0]
    (adopted,) = tasks_of(k, alice, r2)
    assert adopted["item_id"] == on_graph["item_id"] and adopted["change_key"] != on_graph["change_key"]
    assert [t["item_id"] for t in tasks_of(k, alice, r)] == [before[r.ref.key][0][0]]

    # Later edits over EWS reach the adopted task where it is.
    k.host.save(dataclasses.replace(r2, done=True))
    k.drain()
    (done,) = tasks_of(k, alice, r2)
    assert done["item_id"] == on_graph["item_id"] and done["status"] == "Completed"


def tasks_of(k, user, reminder):
    """Every task in the user's mailbox that carries this Wiedervorlage's record link (Tasks
    folder and our To Do list), with the name of the folder it is in."""
    engine, mb = k.server.engine, k.mailbox_of[user.id]
    folders = {"tasks": "Tasks"} | {
        f["id"]: f["name"] for f in engine.list_folders(mb) if f["name"] == TODO_LIST_NAME
    }
    return [
        {**item, "folder": name}
        for folder, name in folders.items()
        for item in engine.list_items(mb, folder)
        if linked_record_key(item.get("body") or "") == reminder.ref.key
    ]
