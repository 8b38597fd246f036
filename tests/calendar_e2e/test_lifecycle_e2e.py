"""Deadlines, Vorfristen and reminders over their life: moved, done, reopened, deleted,
renamed case, edited on the phone."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.mapping.common import USER_NOTES_MARKER
from tsl_hostapi.types import Appointment, Case, Deadline, Reminder, SettingsContext

from .conftest import local_midnight_utc

D = dt.date(2026, 9, 30)


@pytest.fixture
def cal(anycal):
    """Every scenario of this module over EWS and again over Microsoft Graph."""
    return anycal


def frist(did: str, users, **kw) -> Deadline:
    values = dict(
        id=did,
        due_date=D,
        kind="Klageerwiderungsfrist",
        pre_deadline_dates=(D - dt.timedelta(days=14), D - dt.timedelta(days=7)),
        responsible_ids=tuple(u.id for u in users),
    )
    values.update(kw)
    return Deadline(**values)


def dates(cal, user, prefix: str) -> dict[str, dt.date]:
    return {
        key: items[0].start
        for key, items in cal.read(user, "calendar", "start", "is_all_day").items()
        if (key == prefix or key.startswith(prefix + "#")) and len(items) == 1
    }


def test_a_vorfrist_moves_when_its_date_changes(cal):
    k = cal.k
    user = cal.by_zone["Europe/Vienna"]
    d = frist("lc-1", [user])
    k.host.save(d)
    k.drain()
    key = d.ref.key
    before = {i["extended_properties"]["tslRecordId"]: i["item_id"] for i in k.ours_any(user, "calendar")}
    moved = dataclasses.replace(d, pre_deadline_dates=(D - dt.timedelta(days=10), D - dt.timedelta(days=7)))
    k.host.save(moved)
    k.drain()
    assert dates(cal, user, key) == {
        key: D,
        f"{key}#vorfrist1": D - dt.timedelta(days=10),
        f"{key}#vorfrist2": D - dt.timedelta(days=7),
    }
    # Moved in place: same items, no new ones next to stale ones.
    after = {i["extended_properties"]["tslRecordId"]: i["item_id"] for i in k.ours_any(user, "calendar")}
    assert {x: after[x] for x in dates(cal, user, key)} == {x: before[x] for x in dates(cal, user, key)}
    assert "Fristende: 30.09.2026" in cal.one(user, f"{key}#vorfrist1")["body"]
    # The deadline itself moves too, and its Vorfristen say the new Fristende.
    k.host.save(dataclasses.replace(moved, due_date=D + dt.timedelta(days=1), pre_deadline_dates=(D,)))
    k.drain()
    assert dates(cal, user, key) == {key: D + dt.timedelta(days=1), f"{key}#vorfrist1": D}
    assert "01.10.2026" in cal.one(user, f"{key}#vorfrist1")["subject"]
    assert cal.of(user, key) == [key, f"{key}#vorfrist1"]  # the second Vorfrist went


def test_deleting_a_deadline_removes_all_its_items(cal):
    k = cal.k
    berlin, vienna = cal.by_zone["Europe/Berlin"], cal.by_zone["Europe/Vienna"]
    d = frist("lc-2", [berlin, vienna])
    other = frist("lc-2b", [berlin])
    k.host.save_many([d, other])
    k.drain()
    assert len(cal.of(berlin, d.ref.key)[1:]) == 2
    k.host.delete(d.ref)
    k.drain()
    for user in (berlin, vienna):
        assert cal.of(user, d.ref.key) == []
    assert len(cal.of(berlin, other.ref.key)) == 3  # the other deadline stays


def test_done_deadline_is_marked_and_reopened_restores(cal):
    k = cal.k
    user = cal.by_zone["Europe/Zurich"]
    d = frist("lc-3", [user])
    k.host.save(d)
    k.drain()
    original = {
        key: (cal.one(user, key)["subject"], cal.one(user, key)["categories"])
        for key in cal.of(user, d.ref.key)
    }
    k.host.save(dataclasses.replace(d, done=True))
    k.drain()
    for key in original:
        item = cal.one(user, key)
        assert item["subject"].startswith("Erledigt: ")
        assert "Erledigt" in item["categories"]
        assert item["reminder_is_set"] is False
    k.host.save(d)  # reopened
    k.drain()
    for key, (subject, categories) in original.items():
        item = cal.one(user, key)
        assert (item["subject"], item["categories"]) == (subject, categories)
        assert item["reminder_is_set"] is True


def test_done_deadline_is_removed_when_the_firm_says_so_and_reopened_restores(cal):
    k = cal.k
    cal.firm(done_deadline="remove")
    user, other = cal.by_zone["UTC"], cal.by_zone["Europe/Berlin"]
    d = frist("lc-4", [user, other])
    k.host.save(d)
    k.drain()
    assert len(cal.of(user, d.ref.key)) == 3
    k.host.save(dataclasses.replace(d, done=True))
    k.drain()
    assert cal.of(user, d.ref.key) == [] and cal.of(other, d.ref.key) == []
    k.host.save(d)
    k.drain()
    assert len(cal.of(user, d.ref.key)) == 3 and len(cal.of(other, d.ref.key)) == 3
    assert cal.failed() == {}


def test_reminder_done_is_completed_and_reopened_is_not_started(cal):
    k = cal.k
    user = cal.by_zone["Europe/Berlin"]
    r = Reminder(id="lc-5", due_date=D, subject="Akte wieder vorlegen", responsible_ids=(user.id,))
    k.host.save(r)
    k.drain()
    key = r.ref.key

    def task():
        (t,) = cal.read(user, "tasks", "status", "percent_complete", "is_complete", "reminder_is_set")[key]
        return t

    assert (task().status, task().reminder_is_set) == ("NotStarted", True)
    k.host.save(dataclasses.replace(r, done=True))
    k.drain()
    t = task()
    assert (t.status, t.is_complete, t.reminder_is_set) == ("Completed", True, False)
    if cal.backend == "ews":  # a To Do task has no percentage
        assert t.percent_complete == 100
    k.host.save(r)
    k.drain()
    t = task()
    assert (t.status, t.is_complete, t.reminder_is_set) == ("NotStarted", False, True)
    if cal.backend == "ews":
        assert t.percent_complete == 0
    assert len(cal.ours(user, key, "tasks")) == 1


def test_case_rename_repushes_every_item_showing_it_in_every_mailbox_without_duplicates(cal):
    k = cal.k
    berlin, vienna, zurich, utc = cal.users
    case = Case(
        id="lc-case",
        file_number="417/26",
        rubrum="Huber ./. Maier wegen Räumung",
        lawyer_id=berlin.id,
        clerk_id="",
    )
    k.host.save(case)
    records = [
        Appointment(
            id="lc-6a",
            subject="Ortstermin",
            start=dt.datetime(2026, 10, 5, 9),
            end=dt.datetime(2026, 10, 5, 10),
            participant_ids=(berlin.id, vienna.id),
            case_id=case.id,
        ),
        frist("lc-6d", [zurich, berlin], case_id=case.id),
        Reminder(
            id="lc-6r", due_date=D, subject="Räumungstitel prüfen", responsible_ids=(utc.id,), case_id=case.id
        ),
        Reminder(id="lc-6x", due_date=D, subject="Andere Akte", responsible_ids=(utc.id,)),
    ]
    k.host.save_many(records)
    k.drain()

    def showing(text):
        out = []
        for user in cal.users:
            for folder in ("calendar", "tasks"):
                for key, item in cal.all_ours(user, folder):
                    if text in (item.get("body") or ""):
                        out.append((user.id, key))
        return sorted(out)

    before = showing("Huber ./. Maier")
    assert len(before) == 2 + 3 * 2 + 1  # appointment x2, Frist+2 Vorfristen x2, one reminder
    untouched = cal.one(utc, "reminder:lc-6x", "tasks")["change_key"]
    totals = {u.id: (len(k.items(u, "calendar")), len(cal.items(u, "tasks"))) for u in cal.users}

    k.host.save(dataclasses.replace(case, rubrum="Huber ./. Maier wegen Räumung und Zahlung"))
    k.drain()
    assert showing("wegen Räumung und Zahlung") == before
    assert {u.id: (len(k.items(u, "calendar")), len(cal.items(u, "tasks"))) for u in cal.users} == totals
    assert cal.one(utc, "reminder:lc-6x", "tasks")["change_key"] == untouched  # not about this case
    # The file number is in subjects: renumbering reaches them too.
    k.host.save(dataclasses.replace(case, file_number="418/26"))
    k.drain()
    assert "Az. 418/26" in cal.one(zurich, "deadline:lc-6d#vorfrist2")["subject"]
    assert "Az. 418/26" in cal.one(vienna, "appointment:lc-6a")["subject"]
    assert cal.failed() == {}


def test_phone_edit_host_fields_come_back_user_notes_stay(cal):
    k = cal.k
    user = cal.by_zone["Europe/Berlin"]
    email = k.mailbox_of[user.id]
    d = frist("lc-7", [user], notes="Gegner hat Verlängerung beantragt")
    appt = Appointment(
        id="lc-7a",
        subject="Mandantengespräch",
        start=dt.datetime(2026, 10, 6, 14),
        end=dt.datetime(2026, 10, 6, 15),
        participant_ids=(user.id,),
        location="Büro",
    )
    r = Reminder(id="lc-7r", due_date=D, subject="Rückruf", responsible_ids=(user.id,))
    k.host.save_many([d, appt, r])
    k.drain()
    targets = [(d.ref.key, "calendar"), (appt.ref.key, "calendar"), (r.ref.key, "tasks")]
    originals = {}
    for key, folder in targets:
        item = cal.one(user, key, folder)
        originals[key] = item
        assert USER_NOTES_MARKER in item["body"]
        k.server.engine.phone_edit(
            email, item["item_id"], subject="Vom Handy", body=item["body"] + "Meine Notiz"
        )
    k.server.engine.phone_edit(email, cal.one(user, appt.ref.key)["item_id"], location="Café")
    # The Frist dragged to the next day on the phone.
    frist_item = cal.one(user, d.ref.key)
    k.server.engine.phone_edit(
        email,
        frist_item["item_id"],
        start=local_midnight_utc(D + dt.timedelta(days=1), "Europe/Berlin"),
        end=local_midnight_utc(D + dt.timedelta(days=2), "Europe/Berlin"),
    )
    assert cal.read(user, "calendar", "start", "is_all_day")[d.ref.key][0].start == D + dt.timedelta(days=1)
    # Next push of the records (any save; unchanged host data is pushed again only if the
    # item changed on the phone, so edit the host side too).
    k.host.save_many(
        [
            dataclasses.replace(d, notes="Verlängerung gewährt"),
            dataclasses.replace(appt, notes="Unterlagen mitbringen"),
            dataclasses.replace(r, notes="Nummer in der Akte"),
        ]
    )
    k.drain()
    for key, folder in targets:
        item = cal.one(user, key, folder)
        assert item["item_id"] == originals[key]["item_id"]
        assert item["subject"] == originals[key]["subject"]  # host-owned: back
        head, _, tail = item["body"].partition(USER_NOTES_MARKER)
        assert tail.strip() == "Meine Notiz"  # below the marker: kept
        assert item["body"].count(USER_NOTES_MARKER) == 1
    assert cal.one(user, appt.ref.key)["location"] == "Büro"
    (back,) = cal.read(user, "calendar", "start", "end", "is_all_day")[d.ref.key]
    assert (back.start, back.end, back.is_all_day) == (D, D, True)  # the host's date, not the phone's
    assert "Verlängerung gewährt" in cal.one(user, d.ref.key)["body"]
    assert cal.failed() == {}


def test_switching_the_firm_to_remove_done_deadlines_removes_those_already_marked(cal):
    k = cal.k
    user = cal.by_zone["Europe/Berlin"]
    d = frist("lc-8", [user], done=True)
    k.host.save(d)
    k.drain()
    assert cal.one(user, d.ref.key)["subject"].startswith("Erledigt: ")
    result = k.host.save_tab(
        k.admin,
        "interfaces",
        f"{PLUGIN_ID}.interfaces",
        SettingsContext("interfaces"),
        {"done_deadline": "remove"},
    )
    assert result.ok, result
    k.drain(timeout=5)  # short: with the fix this takes well under a second
    assert cal.of(user, d.ref.key) == []
