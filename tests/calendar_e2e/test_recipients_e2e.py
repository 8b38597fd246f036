"""Who receives what: appointments to participants, deadlines and reminders to
the responsible users; changing either moves exactly those items and nothing else."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import pytest

from tsl_hostapi.types import Appointment, Deadline, Reminder

D = dt.date(2026, 6, 15)


@pytest.fixture
def cal(anycal):
    """Every scenario of this module over EWS and again over Microsoft Graph."""
    return anycal


def appointment(aid: str, participants, **kw) -> Appointment:
    values = dict(
        id=aid,
        subject="Mündliche Verhandlung",
        start=dt.datetime(2026, 6, 15, 10, 0),
        end=dt.datetime(2026, 6, 15, 11, 30),
        participant_ids=tuple(u.id for u in participants),
        location="LG Berlin, Saal 2",
        appointment_type="Gerichtstermin",
    )
    values.update(kw)
    return Appointment(**values)


def test_appointment_goes_to_every_participant_and_only_to_them(cal, caplog):
    k = cal.k
    # exchangelib logs each request's XML at DEBUG on this logger: proof of what went over the wire.
    caplog.set_level(logging.DEBUG, logger="exchangelib.util.xml")
    berlin, vienna, zurich, utc = cal.users
    appt = appointment("e2e-a1", [berlin, vienna, utc])
    k.host.save(appt)
    k.drain()
    for user in (berlin, vienna, utc):
        item = cal.one(user, appt.ref.key)
        assert item["subject"] == "Mündliche Verhandlung"
        assert item["location"] == "LG Berlin, Saal 2"
        assert item["categories"] == ["Gerichtstermin"]
        assert item["legacy_free_busy_status"] == "Busy"
    assert k.ours(zurich, appt.ref.key, "calendar") == []
    k.host.save(dataclasses.replace(appt, participant_ids=(berlin.id, vienna.id), location="Saal 3"))
    k.drain()
    if cal.backend == "graph":
        # Graph has no send flag: an event without attendees sends no invitation, cancellation
        # or update. Ours carry none, read back through Graph.
        for user in (berlin, vienna):
            (ev,) = cal.graph_get(user, "/events", {"$filter": cal.graph_key_filter(appt.ref.key)})
            assert not ev.get("attendees") and ev["location"]["displayName"] == "Saal 3"
        assert k.ours(utc, appt.ref.key, "calendar") == []
        return
    # SendToNone on every create, update and delete: five mailboxes, no mail to anyone.
    sent = [
        str(r.args) for r in caplog.records if "CalendarItem" in str(r.args) or "DeleteItem" in str(r.args)
    ]
    creates = [x for x in sent if "<m:CreateItem " in x]
    updates = [x for x in sent if "<m:UpdateItem " in x]
    deletes = [x for x in sent if "<m:DeleteItem " in x]
    assert creates and updates and deletes
    assert all('SendMeetingInvitations="SendToNone"' in x for x in creates)
    assert all('SendMeetingInvitationsOrCancellations="SendToNone"' in x for x in updates)
    assert all('SendMeetingCancellations="SendToNone"' in x for x in deletes)


def test_removing_a_participant_removes_only_their_item_and_adding_adds(cal):
    k = cal.k
    berlin, vienna, zurich, utc = cal.users
    appt = appointment("e2e-a2", [berlin, vienna])
    k.host.save(appt)
    k.drain()
    kept = cal.one(berlin, appt.ref.key)
    vienna_before = len(k.items(vienna, "calendar"))

    k.host.save(dataclasses.replace(appt, participant_ids=(berlin.id, zurich.id)))
    k.drain()
    assert k.ours(vienna, appt.ref.key, "calendar") == []
    assert len(k.items(vienna, "calendar")) == vienna_before - 1  # nothing else went
    assert cal.one(zurich, appt.ref.key)["subject"] == "Mündliche Verhandlung"
    again = cal.one(berlin, appt.ref.key)
    assert again["item_id"] == kept["item_id"]  # the staying participant's item was not recreated
    assert k.ours(utc, appt.ref.key, "calendar") == []


def test_deadline_with_vorfristen_and_reminder_go_to_the_responsible_users(cal):
    k = cal.k
    berlin, vienna, zurich, utc = cal.users
    case = k.firm.cases[0]
    deadline = Deadline(
        id="e2e-d1",
        due_date=D,
        kind="Berufungsbegründungsfrist",
        pre_deadline_dates=(D - dt.timedelta(days=7), D - dt.timedelta(days=3)),
        responsible_ids=(berlin.id, zurich.id),
        case_id=case.id,
    )
    reminder = Reminder(
        id="e2e-r1", due_date=D, subject="Akte vorlegen", responsible_ids=(vienna.id,), case_id=case.id
    )
    k.host.save_many([deadline, reminder])
    k.drain()
    key = deadline.ref.key
    for user in (berlin, zurich):
        assert cal.of(user, key) == [key, f"{key}#vorfrist1", f"{key}#vorfrist2"]
        frist = cal.one(user, key)
        assert frist["subject"].startswith("Frist: Berufungsbegründungsfrist")
        assert f"Az. {case.file_number}" in frist["subject"]
        assert frist["categories"] == ["Frist", "Berufungsbegründungsfrist"]
        assert frist["legacy_free_busy_status"] == "Free"
        vorfrist = cal.one(user, f"{key}#vorfrist1")
        assert vorfrist["subject"].startswith("Vorfrist:")
        assert "tsl://deadline/e2e-d1" in vorfrist["body"]  # linked to its deadline
    for user in (vienna, utc):
        assert cal.of(user, key) == []
    task = cal.one(vienna, reminder.ref.key, "tasks")
    assert task["subject"].startswith("WV: Akte vorlegen")
    for user in (berlin, zurich, utc):
        assert cal.ours(user, reminder.ref.key, "tasks") == []


def test_change_of_responsibility_moves_the_items(cal):
    k = cal.k
    berlin, vienna, zurich, utc = cal.users
    deadline = Deadline(
        id="e2e-d2", due_date=D, pre_deadline_dates=(D - dt.timedelta(days=5),), responsible_ids=(berlin.id,)
    )
    reminder = Reminder(
        id="e2e-r2", due_date=D, subject="Zahlungseingang prüfen", responsible_ids=(berlin.id,)
    )
    k.host.save_many([deadline, reminder])
    k.drain()
    assert len(cal.of(berlin, deadline.ref.key)) == 2
    berlin_calendar = len(k.items(berlin, "calendar"))

    k.host.save_many(
        [
            dataclasses.replace(deadline, responsible_ids=(utc.id, vienna.id)),
            dataclasses.replace(reminder, responsible_ids=(zurich.id,)),
        ]
    )
    k.drain()
    assert cal.of(berlin, deadline.ref.key) == []
    assert len(k.items(berlin, "calendar")) == berlin_calendar - 2
    assert cal.ours(berlin, reminder.ref.key, "tasks") == []
    for user in (utc, vienna):
        assert cal.of(user, deadline.ref.key) == [deadline.ref.key, f"{deadline.ref.key}#vorfrist1"]
    assert len(cal.ours(zurich, reminder.ref.key, "tasks")) == 1
    assert cal.failed() == {}
