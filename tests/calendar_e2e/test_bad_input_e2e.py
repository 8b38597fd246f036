"""Bad input: a clear German reason in the status, nothing raised into the host,
no half-applied change, and every other record still flows."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.testing import wait_for as wait_until
from tsl_hostapi.types import Appointment, Deadline, Reminder, SettingsContext

from .conftest import local_midnight_utc

D = dt.date(2026, 5, 20)


@pytest.fixture
def cal(anycal):
    """Every scenario of this module over EWS and again over Microsoft Graph."""
    return anycal


def good_and_bad(cal, bad: list, *, user) -> None:
    """Save ``bad`` records together with good ones in one host transaction and push."""
    k = cal.k
    good = [
        Deadline(id="ok-d", due_date=D, responsible_ids=(user.id,)),
        Appointment(
            id="ok-a",
            subject="Termin",
            start=dt.datetime(2026, 5, 20, 9),
            end=dt.datetime(2026, 5, 20, 10),
            participant_ids=(user.id,),
        ),
        Reminder(id="ok-r", due_date=D, subject="WV", responsible_ids=(user.id,)),
    ]
    failures_before = len(k.host.hook_failures)
    k.host.save_many([*bad, *good])  # would raise if a hook raised into the host
    k.drain()
    assert len(k.host.hook_failures) == failures_before
    for rec in good:
        folder = "tasks" if isinstance(rec, Reminder) else "calendar"
        assert len(cal.ours(user, rec.ref.key, folder)) == 1, rec.ref.key


BAD_CASES = {
    "end before start": (
        Appointment(
            id="bad-1",
            subject="Verkehrt",
            start=dt.datetime(2026, 5, 20, 11),
            end=dt.datetime(2026, 5, 20, 10),
            participant_ids=("{u}",),
        ),
        "Das Terminende (20.05.2026 10:00) liegt vor dem Beginn (20.05.2026 11:00)",
    ),
    "deadline without a date": (
        Deadline(id="bad-2", due_date=None, responsible_ids=("{u}",)),
        "Die Frist hat kein Fälligkeitsdatum",
    ),
    "Vorfrist after its deadline": (
        Deadline(
            id="bad-3", due_date=D, pre_deadline_dates=(D + dt.timedelta(days=2),), responsible_ids=("{u}",)
        ),
        "Die Vorfrist 22.05.2026 liegt nach dem Fristende 20.05.2026",
    ),
    "unknown time zone": (
        Appointment(
            id="bad-4",
            subject="Atlantis",
            start=dt.datetime(2026, 5, 20, 9),
            end=dt.datetime(2026, 5, 20, 10),
            timezone="Europe/Atlantis",
            participant_ids=("{u}",),
        ),
        "Unbekannte Zeitzone 'Europe/Atlantis' im Termin",
    ),
    "deadline far in the past": (
        Deadline(id="bad-5", due_date=dt.date(226, 5, 20), responsible_ids=("{u}",)),
        "Das Fristende 20.05.0226 liegt außerhalb des erlaubten Bereichs",
    ),
    "appointment far in the future": (
        Appointment(
            id="bad-6",
            subject="Zukunft",
            start=dt.datetime(9999, 5, 20, 9),
            end=dt.datetime(9999, 5, 20, 10),
            participant_ids=("{u}",),
        ),
        "Der Terminbeginn 20.05.9999 liegt außerhalb des erlaubten Bereichs",
    ),
    "reminder without a date": (
        Reminder(id="bad-7", due_date=None, subject="Ohne Datum", responsible_ids=("{u}",)),
        "Die Wiedervorlage hat kein Datum",
    ),
    "DST gap": (
        Appointment(
            id="bad-8",
            subject="Lücke",
            start=dt.datetime(2026, 3, 29, 2, 30),
            end=dt.datetime(2026, 3, 29, 3, 30),
            participant_ids=("{u}",),
        ),
        "29.03.2026 02:30 Uhr gibt es in der Zeitzone Europe/Berlin nicht",
    ),
}


def _for(record, user):
    field = "participant_ids" if isinstance(record, Appointment) else "responsible_ids"
    return dataclasses.replace(record, **{field: (user.id,)})


def test_each_bad_record_fails_with_its_german_reason_and_the_rest_flows(cal):
    user = cal.by_zone["Europe/Berlin"]
    bad = [_for(rec, user) for rec, _ in BAD_CASES.values()]
    good_and_bad(cal, bad, user=user)
    failed = cal.failed()
    for name, (rec, reason) in BAD_CASES.items():
        folder = "tasks" if isinstance(rec, Reminder) else "calendar"
        assert cal.ours(user, rec.ref.key, folder) == [], name
        message = failed.get((user.id, rec.ref.key), "")
        assert reason in message, f"{name}: {message!r}"
    assert set(failed) == {(user.id, rec.ref.key) for rec, _ in BAD_CASES.values()}


def test_a_bad_edit_leaves_the_mailbox_as_it_was_and_a_fix_flows(cal):
    k = cal.k
    user = cal.by_zone["Europe/Zurich"]
    d = Deadline(
        id="bad-edit",
        due_date=D,
        pre_deadline_dates=(D - dt.timedelta(days=5),),
        responsible_ids=(user.id,),
        kind="Berufungsfrist",
    )
    k.host.save(d)
    k.drain()
    before = {key: cal.one(user, key) for key in cal.of(user, d.ref.key)}
    # A Vorfrist after the deadline, and a moved deadline, in one edit: nothing of it may land.
    k.host.save(
        dataclasses.replace(
            d,
            due_date=D + dt.timedelta(days=1),
            pre_deadline_dates=(D - dt.timedelta(days=5), D + dt.timedelta(days=9)),
        )
    )
    k.drain()
    assert "liegt nach dem Fristende" in cal.failed()[(user.id, d.ref.key)]
    assert {key: cal.one(user, key) for key in cal.of(user, d.ref.key)} == before
    fixed = dataclasses.replace(d, due_date=D + dt.timedelta(days=1))
    k.host.save(fixed)
    k.drain()
    assert cal.failed() == {}
    (raw,) = cal.read(user, "calendar", "start")[d.ref.key]
    assert raw.start == local_midnight_utc(fixed.due_date, "Europe/Zurich")


def test_the_edges_of_the_allowed_range_still_land_on_their_date(cal):
    k = cal.k
    users = (cal.by_zone["Europe/Berlin"], cal.by_zone["UTC"])
    edges = [
        Deadline(id=f"edge-{day}", due_date=day, responsible_ids=tuple(u.id for u in users))
        for day in (dt.date(1900, 1, 1), dt.date(2100, 12, 31))
    ]
    k.host.save_many(edges)
    k.drain()
    assert cal.failed() == {}
    for user in users:
        got = cal.read(user, "calendar", "start", "is_all_day")
        for d in edges:
            (item,) = got[d.ref.key]
            assert (item.start, item.is_all_day) == (d.due_date, True)


def test_participant_without_exchange_account_gets_nothing_and_others_do(cal):
    k = cal.k
    user = cal.by_zone["Europe/Vienna"]
    clerk = next(u for u in k.firm.users if "fachangestellte" in u.role)  # no Exchange account
    appt = Appointment(
        id="bad-np",
        subject="Besprechung",
        start=dt.datetime(2026, 5, 21, 9),
        end=dt.datetime(2026, 5, 21, 10),
        participant_ids=(clerk.id, user.id),
    )
    good_and_bad(cal, [appt], user=user)
    assert len(k.ours(user, appt.ref.key, "calendar")) == 1
    assert [j for j in k.runtime.outbox.jobs() if j.mailbox == clerk.id] == []
    assert cal.failed() == {}


def test_recipients_that_cannot_receive_are_named_in_a_notification(cal):
    k = cal.k
    user = cal.by_zone["Europe/Vienna"]
    clerk = next(u for u in k.firm.users if "fachangestellte" in u.role)
    before = len(k.host.notifications)
    k.host.save_many(
        [
            Appointment(
                id="bad-np2",
                subject="Besprechung",
                start=dt.datetime(2026, 5, 21, 9),
                end=dt.datetime(2026, 5, 21, 10),
                participant_ids=(clerk.id, user.id),
            ),
            Appointment(
                id="bad-np3",
                subject="Niemand",
                start=dt.datetime(2026, 5, 21, 9),
                end=dt.datetime(2026, 5, 21, 10),
                participant_ids=(),
            ),
        ],
        user=k.admin,
    )
    k.drain()
    texts = [n.message for n in k.host.notifications[before:]]
    assert any(clerk.name in t and "kein Exchange-Konto" in t for t in texts), texts
    assert any("keine Teilnehmer" in t for t in texts), texts


@pytest.mark.parametrize(
    "zone",
    [
        "Europe/Atlantis",
        "europe/berlin",
        "Europe",
        "Mitteleuropa",
    ],
)
def test_an_unknown_user_time_zone_is_refused_in_the_user_editor(cal, zone):
    k = cal.k
    user = cal.by_zone["Europe/Berlin"]
    result = k.host.save_tab(
        k.admin, "user", f"{PLUGIN_ID}.user", SettingsContext("user", user.id), {"timezone": zone}
    )
    assert not result.ok
    assert any(e.field == "timezone" and "Unbekannte Zeitzone" in e.message for e in result.errors)
    assert k.runtime.accounts.load(user.id).timezone == "Europe/Berlin"


def _store_zone(k, user, zone: str) -> None:
    """Write a zone past the User Editor's check (settings from an older version or another tool)."""
    raw = k.host.settings.get(PLUGIN_ID, f"user:{user.id}")
    k.host.settings.set(PLUGIN_ID, f"user:{user.id}", {**raw, "timezone": zone})


def _row(k, user):
    from tsl_exchange_plugin.ui.status import mailbox_rows

    return next(r for r in mailbox_rows(k.host, k.runtime) if r.user_id == user.id)


def test_a_stored_unknown_user_zone_holds_that_mailbox_with_a_reason_and_loses_nothing(cal):
    k = cal.k
    user, other = cal.by_zone["Europe/Berlin"], cal.by_zone["UTC"]
    _store_zone(k, user, "Mars/Olympus")
    d = Deadline(id="bad-zone", due_date=D, responsible_ids=(user.id, other.id))
    k.host.save(d)
    wait_until(lambda: len(k.ours(other, d.ref.key, "calendar")) == 1, what="the other mailbox")
    wait_until(lambda: _row(k, user).state == "parked", what="the mailbox to be held")
    assert "Mars/Olympus" in _row(k, user).last_error
    assert [j.record_key for j in k.runtime.outbox.jobs(mailbox=user.id, status="pending")] == [d.ref.key]
    assert k.ours(user, d.ref.key, "calendar") == []


def test_correcting_the_zone_in_the_user_editor_resumes_the_mailbox(cal):
    k = cal.k
    user = cal.by_zone["Europe/Berlin"]
    _store_zone(k, user, "Mars/Olympus")
    d = Deadline(id="bad-zone2", due_date=D, responsible_ids=(user.id,))
    k.host.save(d)
    wait_until(lambda: _row(k, user).state == "parked", what="the mailbox to be held")
    k.configure(user, timezone="Europe/Vienna")
    k.drain(timeout=5)  # short: with the fix this takes well under a second
    (raw,) = cal.read(user, "calendar", "start")[d.ref.key]
    assert raw.start == local_midnight_utc(D, "Europe/Vienna")
