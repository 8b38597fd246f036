"""Times and dates through the whole pipeline, read back with exchangelib.

Task dates and what the sandbox does with them
----------------------------------------------
exchangelib 5.6 sends a task's ``DueDate`` and ``StartDate`` (``DateTimeBackedDateField``)
as UTC midnight of the date, ``2026-03-02T00:00:00Z``, whatever the account's zone, in a
request that also carries ``TimeZoneContext`` (the account's zone). On read it takes the
date part of the returned value: of the UTC instant for a ``Z`` value, or of the local
wall clock for a value with an offset (``2026-03-02T00:00:00+01:00``).

The sandbox stores every dateTime as the instant it received and answers in UTC ``Z``
(NOTES §2, honesty trap 1: canonical typed values). ``TimeZoneContext`` only places a
dateTime sent *without* an offset; exchangelib always sends one. So a task due on
2 March is stored as ``2026-03-02T00:00:00Z`` and read back as 2 March in every zone.

Why that is the right model, and its limit: the sandbox neither invents a shift nor
hides one, so what exchangelib sends is what a reader gets. Whether real Exchange
re-anchors a UTC-midnight ``DueDate`` to the ``TimeZoneContext`` zone (and would then
answer ``2026-03-01T23:00:00Z``, which exchangelib reads as 1 March) is marked
*unverified* in NOTES §2; the test below pins the sandbox's answer and the reminder
moment (08:00 in the user's zone), which does not depend on that question.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo

import pytest

from tsl_hostapi.types import Appointment, Deadline, Reminder

from .conftest import ZONES, dst_switches, local_midnight_utc

YEARS = (2026, 2027, 2028)


@pytest.fixture
def cal(anycal):
    """Every scenario of this module over EWS and again over Microsoft Graph."""
    return anycal


def test_each_user_gets_all_day_items_and_task_reminders_in_their_own_zone(cal):
    k = cal.k
    day = dt.date(2026, 7, 1)
    everyone = tuple(u.id for u in cal.users)
    all_day = Appointment(
        id="tz-a1",
        subject="Kanzleiausflug",
        all_day=True,
        start_date=day,
        end_date=day + dt.timedelta(days=1),
        participant_ids=everyone,
    )
    deadline = Deadline(id="tz-d1", due_date=day, responsible_ids=everyone)
    reminder = Reminder(id="tz-r1", due_date=day, subject="Akte prüfen", responsible_ids=everyone)
    k.host.save_many([all_day, deadline, reminder])
    k.drain()
    assert cal.failed() == {}
    for zone, user in cal.by_zone.items():
        got = cal.read(user, "calendar", "start", "end", "is_all_day")
        (appt,) = got[all_day.ref.key]
        assert (appt.start, appt.end, appt.is_all_day) == (day, day + dt.timedelta(days=1), True)
        raw = cal.read(user, "calendar", "start", "end")
        (a_raw,) = raw[all_day.ref.key]
        assert a_raw.start == local_midnight_utc(day, zone)
        assert a_raw.end == local_midnight_utc(day + dt.timedelta(days=2), zone)
        (d_raw,) = raw[deadline.ref.key]
        assert d_raw.start == local_midnight_utc(day, zone)
        (task,) = cal.read(user, "tasks", "due_date", "reminder_due_by", "reminder_is_set")[reminder.ref.key]
        assert task.due_date == day
        assert task.reminder_is_set is True
        assert task.reminder_due_by.astimezone(zoneinfo.ZoneInfo(zone)).time() == dt.time(8, 0), zone


def test_reminder_due_on_2_march_shows_on_2_march_for_a_berlin_user(cal):
    """See the module docstring for what the sandbox does with task dates and why."""
    k = cal.k
    berlin = cal.by_zone["Europe/Berlin"]
    reminder = Reminder(
        id="tz-r2", due_date=dt.date(2026, 3, 2), subject="Frist notieren", responsible_ids=(berlin.id,)
    )
    k.host.save(reminder)
    k.drain()
    if cal.backend == "graph":
        for reader_zone in ZONES:  # a To Do client in any zone reads the same date
            (task,) = [t["task"] for t in cal.todo_tasks(berlin, reader_zone) if t["key"] == reminder.ref.key]
            assert task["dueDateTime"]["dateTime"][:10] == "2026-03-02", reader_zone
        (seen,) = cal.read(berlin, "tasks")[reminder.ref.key]
        berlin_time = seen.reminder_due_by.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
        assert (berlin_time.date(), berlin_time.time()) == (dt.date(2026, 3, 2), dt.time(8, 0))
        return
    stored = cal.one(berlin, reminder.ref.key, "tasks")
    assert stored["due_date"] == "2026-03-02T00:00:00Z"  # the instant exchangelib sent, unshifted
    for reader_zone in ZONES:  # any client zone reads the same date
        acc = cal.account(berlin, tz=reader_zone)
        (task,) = [t for t in acc.tasks.all() if getattr(t, "tsl_record_id", None) == reminder.ref.key]
        assert task.due_date == dt.date(2026, 3, 2), reader_zone
        assert task.start_date == dt.date(2026, 3, 2), reader_zone
        berlin_time = task.reminder_due_by.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
        assert (berlin_time.date(), berlin_time.time()) == (dt.date(2026, 3, 2), dt.time(8, 0))


def _written_zone(cal, item) -> str:
    """The Windows zone the item was written in, as the reader's protocol names it."""
    return item.start_zone if cal.backend == "graph" else item._start_timezone.ms_id


def _windows_zone(tz: zoneinfo.ZoneInfo) -> str:
    from exchangelib import EWSTimeZone

    return EWSTimeZone.from_timezone(tz).ms_id


def _dst_appointments(users) -> list[Appointment]:
    """10:00-11:30 on the Friday before, the Sunday of and the Monday after each switch, in each
    appointment zone; plus one that spans the switch night (Saturday 22:00 to Sunday 06:00)."""
    out = []
    for zone in ("Europe/Berlin", "Europe/Vienna", "Europe/Zurich"):
        for switch in dst_switches(YEARS, zone):
            for offset in (-2, 0, 1):
                day = switch + dt.timedelta(days=offset)
                out.append(
                    Appointment(
                        id=f"dst-{zone.split('/')[1]}-{day}",
                        subject="Besprechung",
                        start=dt.datetime.combine(day, dt.time(10, 0)),
                        end=dt.datetime.combine(day, dt.time(11, 30)),
                        timezone=zone,
                        participant_ids=tuple(u.id for u in users),
                    )
                )
            night = switch - dt.timedelta(days=1)
            out.append(
                Appointment(
                    id=f"dst-{zone.split('/')[1]}-{switch}-night",
                    subject="Nachtschicht Akteneinsicht",
                    start=dt.datetime.combine(night, dt.time(22, 0)),
                    end=dt.datetime.combine(switch, dt.time(6, 0)),
                    timezone=zone,
                    participant_ids=tuple(u.id for u in users),
                )
            )
    out.append(
        Appointment(
            id="dst-UTC-2027-03-28",
            subject="Telefonkonferenz London",
            start=dt.datetime(2027, 3, 28, 10, 0),
            end=dt.datetime(2027, 3, 28, 11, 0),
            timezone="UTC",
            participant_ids=tuple(u.id for u in users),
        )
    )
    return out


def test_appointments_across_both_dst_switches_keep_their_wall_clock_time(cal):
    k = cal.k
    appts = _dst_appointments(cal.users)
    assert len(appts) == 3 * 6 * 4 + 1
    k.host.save_many(appts)
    k.drain(timeout=60)
    assert cal.failed() == {}
    by_key = {a.ref.key: a for a in appts}
    instants: dict[str, set] = {key: set() for key in by_key}
    for zone, user in cal.by_zone.items():
        got = cal.read(user, "calendar", "start", "end", "is_all_day")
        wrong = []
        for key, appt in by_key.items():
            (item,) = got[key]
            tz = zoneinfo.ZoneInfo(appt.timezone)
            start, end = item.start.astimezone(tz), item.end.astimezone(tz)
            if (
                item.is_all_day
                or start.replace(tzinfo=None) != appt.start
                or end.replace(tzinfo=None) != appt.end
                or _written_zone(cal, item) != _windows_zone(tz)
            ):
                wrong.append(f"{key}: {start} - {end} ({_written_zone(cal, item)})")
            instants[key].add((item.start, item.end))
        assert not wrong, f"mailbox in {zone}: {wrong[:5]}"
    # One meeting is one moment: the same instants in every participant's mailbox.
    assert all(len(v) == 1 for v in instants.values())
    # The switch night really is shorter/longer: 7 h in spring, 9 h in autumn (not 8 h).
    night = {key: next(iter(v)) for key, v in instants.items() if key.endswith("-night")}
    lengths = sorted({(end - start).total_seconds() / 3600 for start, end in night.values()})
    assert lengths == [7.0, 9.0]


def test_a_time_zone_change_moves_all_day_items_to_the_new_zone(cal):
    """A user who moves from Berlin to UTC: their deadlines must follow to UTC midnight,
    or the phone (now in UTC) shows each Frist from 23:00 the evening before."""
    k = cal.k
    user = cal.by_zone["Europe/Berlin"]
    deadline = Deadline(id="tz-d2", due_date=dt.date(2026, 11, 2), responsible_ids=(user.id,))
    k.host.save(deadline)
    k.drain()
    k.configure(user, timezone="UTC")
    k.drain()
    (raw,) = cal.read(user, "calendar", "start", "end")[deadline.ref.key]
    assert raw.start == local_midnight_utc(deadline.due_date, "UTC")
    assert raw.end == local_midnight_utc(deadline.due_date + dt.timedelta(days=1), "UTC")


def test_moving_an_appointment_across_a_switch_and_to_all_day_and_back(cal):
    k = cal.k
    users = (cal.by_zone["Europe/Zurich"], cal.by_zone["UTC"])
    appt = Appointment(
        id="tz-move",
        subject="Verkündungstermin",
        start=dt.datetime(2027, 3, 26, 9, 15),
        end=dt.datetime(2027, 3, 26, 9, 45),
        timezone="Europe/Zurich",
        participant_ids=tuple(u.id for u in users),
    )
    steps = [
        appt,
        dataclasses.replace(appt, start=dt.datetime(2027, 3, 29, 9, 15), end=dt.datetime(2027, 3, 29, 9, 45)),
        dataclasses.replace(
            appt,
            all_day=True,
            start=None,
            end=None,
            start_date=dt.date(2027, 3, 28),
            end_date=dt.date(2027, 3, 28),
        ),
        dataclasses.replace(
            appt, start=dt.datetime(2027, 10, 31, 9, 15), end=dt.datetime(2027, 10, 31, 9, 45)
        ),
    ]
    ids = {}
    for step in steps:
        k.host.save(step)
        k.drain()
        for user in users:
            (item,) = cal.read(user, "calendar", "start", "end", "is_all_day")[appt.ref.key]
            ids.setdefault(user.id, set()).add(item.id)
            if step.all_day:
                assert (item.is_all_day, item.start) == (True, step.start_date)
                (raw,) = cal.read(user, "calendar", "start")[appt.ref.key]
                assert raw.start == local_midnight_utc(step.start_date, cal.zone_of(user))
            else:
                tz = zoneinfo.ZoneInfo(step.timezone)
                assert item.is_all_day is False
                assert item.start.astimezone(tz).replace(tzinfo=None) == step.start
                assert item.end.astimezone(tz).replace(tzinfo=None) == step.end
    assert all(len(v) == 1 for v in ids.values())  # updated in place every time
    assert cal.failed() == {}


def test_lead_times_come_from_the_user_else_the_firm(cal):
    """Reminder lead times: the user's own (reference host side: the account settings),
    else the firm's default, else the plugin's; an appointment's own minutes win."""
    from tsl_exchange_plugin import PLUGIN_ID

    k = cal.k
    own, other = cal.by_zone["Europe/Vienna"], cal.by_zone["UTC"]
    cal.firm(
        deadline_reminder_minutes=2880, pre_deadline_reminder_minutes=4320, appointment_reminder_minutes=30
    )
    raw = k.host.settings.get(PLUGIN_ID, f"user:{own.id}")
    k.host.settings.set(PLUGIN_ID, f"user:{own.id}", {**raw, "deadline_reminder_minutes": 10080})
    both = (own.id, other.id)
    d = Deadline(
        id="lead-d",
        due_date=dt.date(2026, 8, 3),
        pre_deadline_dates=(dt.date(2026, 7, 27),),
        responsible_ids=both,
    )
    a = Appointment(
        id="lead-a",
        subject="Termin",
        start=dt.datetime(2026, 8, 3, 9),
        end=dt.datetime(2026, 8, 3, 10),
        participant_ids=both,
    )
    a2 = dataclasses.replace(a, id="lead-a2", reminder_minutes=120)
    k.host.save_many([d, a, a2])
    k.drain()
    expected = {
        own.id: {d.ref.key: 10080, f"{d.ref.key}#vorfrist1": 4320, a.ref.key: 30, a2.ref.key: 120},
        other.id: {d.ref.key: 2880, f"{d.ref.key}#vorfrist1": 4320, a.ref.key: 30, a2.ref.key: 120},
    }
    for user in (own, other):
        got = cal.read(user, "calendar", "reminder_is_set", "reminder_minutes_before_start")
        seen = {key: got[key][0].reminder_minutes_before_start for key in expected[user.id]}
        assert seen == expected[user.id], user.id
        assert all(got[key][0].reminder_is_set for key in expected[user.id])
