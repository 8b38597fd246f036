"""The end-to-end scenarios, once with the lawyers on EWS and once on Microsoft Graph.

Both backends write into the same sandbox store, so every check reads the mailbox the same way
(the sandbox's view) whichever protocol wrote it: what a lawyer sees does not depend on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from collections import Counter

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.backends.graph.wire import TODO_LIST_NAME
from tsl_hostapi.types import Deadline, RecordRef, Reminder

SET_SYNC = f"{PLUGIN_ID}.set_sync"


def subscribe(k, contacts, users):
    result = k.host.press(k.admin, SET_SYNC, [c.ref for c in contacts], {"users": [u.id for u in users]})
    assert result.ok, result.message


def set_zone(k, user, zone):
    if k.backend_name == "graph":
        k.configure_graph(user, timezone=zone)
    else:
        k.configure(user, timezone=zone)
    k.drain()


def keys(items):
    return Counter((i.get("extended_properties") or {}).get("tslRecordId") for i in items)


def tasks(k, user):
    """Our reminders: over EWS in the Tasks folder, over Graph in our own To Do list."""
    mb = k.mailbox_of[user.id]
    engine = k.server.engine
    if k.backend_name == "ews":
        return engine.list_items(mb, "tasks")
    (folder,) = [f for f in engine.list_folders(mb) if f["name"] == TODO_LIST_NAME]
    return engine.list_items(mb, folder["id"])


def local_date(item, zone):
    start = dt.datetime.fromisoformat(item["start"].replace("Z", "+00:00"))
    return start.astimezone(zoneinfo.ZoneInfo(zone)).date()


def test_contacts_create_update_delete(anykanzlei):
    k = anykanzlei
    alice, bob, _ = k.lawyers
    contacts = [c for c in k.firm.contacts if c.kind == "person" and c.surname][:6]
    subscribe(k, contacts, [alice, bob])
    k.drain()
    for user in (alice, bob):
        counts = keys(k.items(user))
        assert all(counts[c.ref.key] == 1 for c in contacts)
    first = contacts[0]
    (before,) = k.ours(alice, first.ref.key)
    k.host.save(dataclasses.replace(first, department="Prozessabteilung"))
    k.drain()
    (after,) = k.ours(alice, first.ref.key)
    assert after["item_id"] == before["item_id"] and after["department"] == "Prozessabteilung"
    k.host.delete(first.ref)
    k.drain()
    assert k.ours(alice, first.ref.key) == [] and k.ours(bob, first.ref.key) == []
    assert keys(k.items(alice))[contacts[1].ref.key] == 1


ZONES = ("Europe/Berlin", "America/New_York", "Pacific/Auckland")


def test_deadline_and_vorfristen_on_their_dates_in_each_users_zone(anykanzlei):
    k = anykanzlei
    for user, zone in zip(k.lawyers, ZONES, strict=True):
        set_zone(k, user, zone)
    due = dt.date(2026, 3, 30)  # the day after Europe's switch to summer time
    pre = (dt.date(2026, 3, 16), dt.date(2026, 3, 29))
    d = Deadline(
        id="gx-1",
        due_date=due,
        kind="Berufungsfrist",
        pre_deadline_dates=pre,
        responsible_ids=tuple(u.id for u in k.lawyers),
    )
    k.host.save(d)
    k.drain()
    expected = {d.ref.key: due, f"{d.ref.key}#vorfrist1": pre[0], f"{d.ref.key}#vorfrist2": pre[1]}
    for user, zone in zip(k.lawyers, ZONES, strict=True):
        items = {i["extended_properties"]["tslRecordId"]: i for i in k.ours_any(user, "calendar")}
        assert {key: local_date(items[key], zone) for key in expected} == expected, zone
        for key in expected:
            item = items[key]
            assert item["is_all_day_event"] is True
            assert item["legacy_free_busy_status"] == "Free"
            # One day long, midnight to midnight in the user's zone.
            tz = zoneinfo.ZoneInfo(zone)
            start = dt.datetime.fromisoformat(item["start"].replace("Z", "+00:00")).astimezone(tz)
            end = dt.datetime.fromisoformat(item["end"].replace("Z", "+00:00")).astimezone(tz)
            assert (start.time(), end.time(), end.date() - start.date()) == (
                dt.time(0),
                dt.time(0),
                dt.timedelta(days=1),
            )
        assert "Frist" in items[d.ref.key]["categories"]
    # Deleting the deadline takes its Vorfristen with it, in every mailbox.
    k.host.delete(d.ref)
    k.drain()
    for user in k.lawyers:
        assert not [
            i for i in k.ours_any(user, "calendar") if i["extended_properties"]["tslRecordId"] in expected
        ]


def test_reminder_is_a_task_due_on_its_date_with_an_eight_oclock_reminder(anykanzlei):
    k = anykanzlei
    user = k.lawyers[2]
    set_zone(k, user, "America/New_York")
    r = Reminder(
        id="gx-wv", due_date=dt.date(2026, 11, 2), subject="Akte vorlegen", responsible_ids=(user.id,)
    )
    k.host.save(r)
    k.drain()
    (task,) = [t for t in tasks(k, user) if t["subject"].startswith("WV: Akte vorlegen")]
    assert task["due_date"].startswith("2026-11-02")
    reminder = dt.datetime.fromisoformat(task["reminder_due_by"].replace("Z", "+00:00"))
    assert reminder.astimezone(zoneinfo.ZoneInfo("America/New_York")).replace(tzinfo=None) == dt.datetime(
        2026, 11, 2, 8, 0
    )
    assert task["reminder_is_set"] is True and task["status"] == "NotStarted"
    k.host.save(dataclasses.replace(r, done=True))
    k.drain()
    (task,) = [t for t in tasks(k, user) if t["subject"].startswith("WV: Akte vorlegen")]
    assert task["status"] == "Completed" and task["reminder_is_set"] is False
    k.host.delete(RecordRef("reminder", "gx-wv"))
    k.drain()
    assert not [t for t in tasks(k, user) if t["subject"].startswith("WV: Akte vorlegen")]


def test_a_create_whose_answer_is_lost_is_not_duplicated(anykanzlei):
    k = anykanzlei
    alice = k.lawyers[0]
    mb = k.mailbox_of[alice.id]
    settings = k.host.settings.get(PLUGIN_ID, "firm", {}) or {}
    k.host.settings.set(PLUGIN_ID, "firm", {**settings, "request_timeout": 2})
    if k.backend_name == "ews":
        fault = k.server.inject("commit_then_hang", operation="CreateItem", seconds=4, mailbox=mb)
    else:
        fault = k.graph.inject("drop_after_commit", method="POST", mailbox=mb, path_contains="/contacts")
    contacts = k.firm.contacts[:5]
    subscribe(k, contacts, [alice])
    k.drain(timeout=40)
    assert fault.fired == 1
    counts = keys(k.items(alice))
    assert [counts[c.ref.key] for c in contacts] == [1] * 5


def test_throttled_and_unavailable_answers_are_retried_after_their_wait(anykanzlei):
    k = anykanzlei
    alice = k.lawyers[0]
    mb = k.mailbox_of[alice.id]
    if k.backend_name == "ews":
        k.server.inject("server_busy", operation="CreateItem", back_off_ms=1000, mailbox=mb)
    else:
        faults = [
            k.graph.inject("status", status=503, retry_after=1, mailbox=mb),
            k.graph.inject("status", status=429, retry_after=1, mailbox=mb, inner=True, method="POST"),
        ]
    contacts = k.firm.contacts[5:9]
    subscribe(k, contacts, [alice])
    k.drain(timeout=40)
    if k.backend_name == "graph":
        assert [f.fired for f in faults] == [1, 1]
    counts = keys(k.items(alice))
    assert [counts[c.ref.key] for c in contacts] == [1] * 4
    assert not k.runtime.outbox.jobs(status="failed")
