"""Serientermine through the whole pipeline, over both backends: reference host -> hooks ->
queue -> worker -> unmodified exchangelib -> EWS sandbox, or httpx + msal -> Graph sandbox. Each
participant's calendar is read back in the participant's zone by a second, independent client
(exchangelib's CalendarView, or Graph's calendarView over plain HTTP) and compared with an
independent expansion (dateutil.rrule) of the host's series."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass

from dateutil import rrule

from tsl_hostapi.types import Appointment, OccurrenceChange, Recurrence

from .conftest import WINDOWS, ZONES, dst_switches

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
_RR_DAYS = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)


def expected(
    appt: Appointment, lo: dt.date, hi: dt.date
) -> list[tuple[dt.datetime, dt.datetime, str | None]]:
    """The host's series as (aware start, aware end, subject of an exception or None), by dateutil, in [lo, hi)."""
    rec = appt.recurrence
    assert rec is not None
    zone = zoneinfo.ZoneInfo(appt.timezone)
    freq = {"daily": rrule.DAILY, "weekly": rrule.WEEKLY, "monthly": rrule.MONTHLY, "yearly": rrule.YEARLY}
    kw: dict = dict(dtstart=appt.start, interval=rec.interval, wkst=rrule.MO)
    if rec.weekdays and rec.frequency == "weekly":
        kw["byweekday"] = [_RR_DAYS[d] for d in rec.weekdays]
    if rec.week_of_month:
        kw["byweekday"] = _RR_DAYS[rec.weekdays[0]](-1 if rec.week_of_month == 5 else rec.week_of_month)
    if rec.count:
        kw["count"] = rec.count
    if rec.until:
        kw["until"] = dt.datetime.combine(rec.until, dt.time(23, 59))
    length = appt.end - appt.start
    changes = {c.original_date: c for c in rec.exceptions}
    out = []
    for start in rrule.rrule(freq[rec.frequency], **kw):
        chg = changes.get(start.date())
        if chg is not None and chg.cancelled:
            continue
        s, e, subject = start, start + length, None
        if chg is not None:
            s = chg.start or s
            e = chg.end or (s + length)
            subject = chg.subject
        if lo <= s.date() < hi:
            out.append((s.replace(tzinfo=zone), e.replace(tzinfo=zone), subject))
    return out


@dataclass(frozen=True)
class Seen:
    """One entry of a calendar view as a reader sees it: aware start/end in the reader's zone
    (dates for all-day entries, the end inclusive), its subject and its type in EWS words."""

    start: object
    end: object
    subject: str
    type: str


GRAPH_TYPES = {"occurrence": "Occurrence", "exception": "Exception", "singleInstance": "Single"}


def view(cal, user, lo: dt.date, hi: dt.date, key: str) -> list:
    if cal.backend == "graph":
        return graph_view(cal, user, lo, hi, key)
    acc = cal.account(user)
    tz = acc.default_timezone
    from exchangelib import EWSDateTime

    items = acc.calendar.view(
        start=EWSDateTime(lo.year, lo.month, lo.day, tzinfo=tz),
        end=EWSDateTime(hi.year, hi.month, hi.day, tzinfo=tz),
    ).only("start", "end", "is_all_day", "subject", "type", "tsl_record_id")
    got = []
    for item in items:
        if isinstance(item, BaseException):
            raise item
        if item.tsl_record_id == key:
            got.append(item)
    return sorted(got, key=lambda i: i.start)


def graph_view(cal, user, lo: dt.date, hi: dt.date, key: str) -> list[Seen]:
    """Graph's calendarView of [lo, hi) in the user's zone, shown in that zone."""
    zone = cal.zone_of(user)
    tz = zoneinfo.ZoneInfo(zone)
    window = {
        "startDateTime": dt.datetime.combine(lo, dt.time(0), tzinfo=tz).isoformat(),
        "endDateTime": dt.datetime.combine(hi, dt.time(0), tzinfo=tz).isoformat(),
        "$filter": cal.graph_key_filter(key),
        "$top": "100",
    }
    got = []
    for ev in cal.graph_get(user, "/calendarView", window, zone):
        if ev["isAllDay"]:
            # Midnight dates whatever the zone; the end is exclusive.
            start = dt.date.fromisoformat(ev["start"]["dateTime"][:10])
            end = dt.date.fromisoformat(ev["end"]["dateTime"][:10]) - dt.timedelta(days=1)
        else:
            # Shown in the zone asked for: the wall clock there is the reader's.
            assert ev["start"]["timeZone"] == ev["end"]["timeZone"] == WINDOWS[zone]
            start = dt.datetime.fromisoformat(ev["start"]["dateTime"][:19]).replace(tzinfo=tz)
            end = dt.datetime.fromisoformat(ev["end"]["dateTime"][:19]).replace(tzinfo=tz)
        got.append(Seen(start, end, ev["subject"], GRAPH_TYPES[ev["type"]]))
    return sorted(got, key=lambda i: i.start)


def master_types(cal, user, key: str) -> list[str]:
    """The type of each item carrying ``key`` in the calendar folder (a series: its master)."""
    if cal.backend == "graph":
        found = cal.graph_get(user, "/events", {"$filter": cal.graph_key_filter(key)})
        return [{"seriesMaster": "RecurringMaster", "singleInstance": "Single"}[e["type"]] for e in found]
    return [i.type for i in cal.read(user, "calendar", "type", "recurrence").get(key, [])]


def assert_view_equals_host(cal, appt: Appointment, lo: dt.date, hi: dt.date, users=None) -> None:
    want = expected(appt, lo, hi)
    for zone, user in cal.by_zone.items():
        if users is not None and user not in users:
            continue
        got = view(cal, user, lo, hi, appt.ref.key)
        shown = [(i.start, i.end) for i in got]
        assert shown == [(s, e) for s, e, _ in want], f"{zone}: {len(shown)} vs {len(want)}"
        local = zoneinfo.ZoneInfo(zone)
        for item, (s, _, suffix) in zip(got, want, strict=True):
            # The same instant; in the reader's zone the wall clock follows from it.
            assert item.start.astimezone(local) == s.astimezone(local)
            if suffix is not None:
                assert item.subject.endswith(suffix or appt.subject) and item.type == "Exception"
            else:
                assert item.subject == appt.subject and item.type == "Occurrence"


def weekly(**kw) -> Appointment:
    values = dict(
        id="ser-1",
        subject="Kanzleibesprechung",
        start=dt.datetime(2026, 1, 5, 9, 0),
        end=dt.datetime(2026, 1, 5, 10, 0),
        timezone="Europe/Berlin",
        recurrence=Recurrence("weekly", weekdays=(0,), until=dt.date(2028, 12, 31)),
    )
    values.update(kw)
    return Appointment(**values)


def test_a_weekly_series_is_one_master_and_every_occurrence_stays_at_nine_across_dst(anycal):
    cal = anycal
    k = cal.k
    appt = weekly(participant_ids=tuple(u.id for u in cal.users))
    k.host.save(appt)
    k.drain()
    assert cal.failed() == {}
    for user in cal.users:
        assert master_types(cal, user, appt.ref.key) == ["RecurringMaster"]
    for year in (2026, 2027, 2028):
        lo, hi = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
        assert_view_equals_host(cal, appt, lo, hi)
        # Berlin wall clock: 09:00 every Monday, before and after each switch.
        berlin = cal.by_zone["Europe/Berlin"]
        got = view(cal, berlin, lo, hi, appt.ref.key)
        assert {i.start.astimezone(BERLIN).time() for i in got} == {dt.time(9)}
        switches = dst_switches([year])
        assert any(i.start.date() < switches[0] for i in got) and any(
            i.start.date() > switches[1] for i in got
        )
    assert ZONES  # the four zones of the fixture each read the series


def test_exceptions_and_every_kind_of_change_leave_the_mailbox_equal_to_the_host(anycal):
    cal = anycal
    k = cal.k
    users = tuple(u.id for u in cal.users)
    appt = weekly(id="ser-2", participant_ids=users)
    lo, hi = dt.date(2026, 1, 1), dt.date(2027, 1, 1)
    k.host.save(appt)
    k.drain()
    # Move one, change one's subject, cancel one (one of them across the spring switch).
    rec = dataclasses.replace(
        appt.recurrence,
        exceptions=(
            OccurrenceChange(
                dt.date(2026, 3, 23), start=dt.datetime(2026, 3, 24, 14), end=dt.datetime(2026, 3, 24, 15)
            ),
            OccurrenceChange(dt.date(2026, 3, 30), cancelled=True),
            OccurrenceChange(dt.date(2026, 10, 26), subject="Sonderbesprechung", location="Raum 2"),
        ),
    )
    steps = [
        dataclasses.replace(appt, recurrence=rec),
        # the pattern changes: every second Monday and Thursday
        dataclasses.replace(
            appt, recurrence=dataclasses.replace(rec, interval=2, weekdays=(0, 3), exceptions=())
        ),
        # shortened (the exception after the new end goes with it)
        dataclasses.replace(
            appt,
            recurrence=dataclasses.replace(rec, until=dt.date(2026, 6, 30), exceptions=rec.exceptions[:2]),
        ),
        # an exception dropped again
        dataclasses.replace(
            appt,
            recurrence=dataclasses.replace(rec, until=dt.date(2026, 6, 30), exceptions=rec.exceptions[1:2]),
        ),
    ]
    for step in steps:
        k.host.save(step)
        k.drain()
        assert cal.failed() == {}
        assert_view_equals_host(cal, step, lo, hi)
        for user in cal.users:
            assert len(cal.k.ours(user, appt.ref.key, "calendar")) == 1  # one master, no duplicates
    # Back to a single appointment: one Single item, no occurrences left over.
    single = dataclasses.replace(appt, recurrence=None)
    k.host.save(single)
    k.drain()
    for user in cal.users:
        got = view(cal, user, lo, hi, appt.ref.key)
        assert [(i.type, i.start) for i in got] == [("Single", dt.datetime(2026, 1, 5, 9, tzinfo=BERLIN))]
    # A series again, then deleted in the host: nothing of it stays in any calendar.
    k.host.save(steps[0])
    k.drain()
    assert len(view(cal, cal.users[0], lo, hi, appt.ref.key)) > 40
    k.host.delete(appt.ref)
    k.drain()
    for user in cal.users:
        assert view(cal, user, lo, hi, appt.ref.key) == []
        assert cal.k.ours(user, appt.ref.key, "calendar") == []


def test_series_in_each_zone_keep_their_local_time_across_every_switch_2026_to_2028(anycal):
    cal = anycal
    k = cal.k
    made = []
    for n, (zone, user) in enumerate(cal.by_zone.items()):
        made += [
            Appointment(
                id=f"ser-z{n}-w",
                subject="Gerichtstag",
                start=dt.datetime(2026, 1, 6, 8, 30),
                end=dt.datetime(2026, 1, 6, 12, 0),
                timezone=zone,
                participant_ids=(user.id,),
                recurrence=Recurrence("weekly", interval=2, weekdays=(1,), until=dt.date(2028, 12, 31)),
            ),
            Appointment(
                id=f"ser-z{n}-m",
                subject="Mandantensprechstunde",
                start=dt.datetime(2026, 1, 7, 16, 0),
                end=dt.datetime(2026, 1, 7, 18, 0),
                timezone=zone,
                participant_ids=(user.id,),
                recurrence=Recurrence("monthly", week_of_month=1, weekdays=(2,), count=36),
            ),
        ]
    k.host.save_many(made)
    k.drain()
    assert cal.failed() == {}
    for appt in made:
        user = k.host.get_user(appt.participant_ids[0])
        zone = zoneinfo.ZoneInfo(appt.timezone)
        for year in (2026, 2027, 2028):
            lo, hi = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
            assert_view_equals_host(cal, appt, lo, hi, users=[user])
            got = view(cal, user, lo, hi, appt.ref.key)
            assert {i.start.astimezone(zone).time() for i in got} == {appt.start.time()}
            assert len(got) == (26 if appt.id.endswith("w") else 12)


def test_an_all_day_yearly_series_lands_on_its_day_in_every_zone(anycal):
    cal = anycal
    k = cal.k
    fk = Appointment(
        id="ser-fk",
        subject="Fristenkontrolle",
        all_day=True,
        start_date=dt.date(2026, 12, 1),
        end_date=dt.date(2026, 12, 1),
        participant_ids=tuple(u.id for u in cal.users),
        recurrence=Recurrence(
            "yearly",
            until=dt.date(2030, 12, 31),
            exceptions=(
                OccurrenceChange(
                    dt.date(2027, 12, 1), start_date=dt.date(2027, 12, 2), end_date=dt.date(2027, 12, 2)
                ),
                OccurrenceChange(dt.date(2029, 12, 1), cancelled=True),
            ),
        ),
    )
    k.host.save(fk)
    k.drain()
    assert cal.failed() == {}
    for zone, user in cal.by_zone.items():
        got = view(cal, user, dt.date(2026, 1, 1), dt.date(2031, 1, 1), fk.ref.key)
        assert [(i.start, i.end, i.type) for i in got] == [
            (dt.date(2026, 12, 1), dt.date(2026, 12, 1), "Occurrence"),
            (dt.date(2027, 12, 2), dt.date(2027, 12, 2), "Exception"),
            (dt.date(2028, 12, 1), dt.date(2028, 12, 1), "Occurrence"),
            (dt.date(2030, 12, 1), dt.date(2030, 12, 1), "Occurrence"),
        ], zone


def test_phone_edits_to_one_occurrence_are_restored_with_the_next_push(anycal):
    cal = anycal
    k = cal.k
    user = cal.by_zone["Europe/Vienna"]
    appt = weekly(
        id="ser-ph", participant_ids=(user.id,), recurrence=Recurrence("weekly", weekdays=(0,), count=10)
    )
    k.host.save(appt)
    k.drain()
    lo, hi = dt.date(2026, 1, 1), dt.date(2026, 4, 1)
    # On the phone: one occurrence renamed and moved, another one deleted.
    if cal.backend == "graph":
        graph_phone_edits(cal, user, appt.ref.key, lo, hi)
    else:
        (master,) = cal.read(user, "calendar", "subject")[appt.ref.key]
        occ = master.occurrence(3)
        occ.refresh()
        occ.subject, occ.start, occ.end = (
            "Vom Handy",
            occ.start + dt.timedelta(hours=3),
            occ.end + dt.timedelta(hours=3),
        )
        occ.save(update_fields=["subject", "start", "end"])
        master.occurrence(5).delete()
    got = view(cal, user, lo, hi, appt.ref.key)
    assert len(got) == 9 and sum(i.subject == "Vom Handy" for i in got) == 1
    # The next push of the series (the host changed something) brings the host's series back.
    changed = dataclasses.replace(appt, notes="Tagesordnung folgt")
    k.host.save(changed)
    k.drain()
    assert cal.failed() == {}
    assert_view_equals_host(cal, changed, lo, hi, users=[user])


def graph_phone_edits(cal, user, key: str, lo: dt.date, hi: dt.date) -> None:
    """Outlook on a phone, through Graph: the third occurrence renamed and moved three hours,
    the fifth deleted."""
    (master,) = cal.graph_get(user, "/events", {"$filter": cal.graph_key_filter(key)})
    window = {"startDateTime": f"{lo.isoformat()}T00:00:00Z", "endDateTime": f"{hi.isoformat()}T00:00:00Z"}
    instances = cal.graph_get(user, f"/events/{master['id']}/instances", window)
    third, fifth = instances[2], instances[4]

    def later(value: dict) -> dict:
        moved = dt.datetime.fromisoformat(value["dateTime"][:19]) + dt.timedelta(hours=3)
        return {"dateTime": moved.isoformat(), "timeZone": value["timeZone"]}

    client = cal.graph_client()
    base = f"/users/{cal.k.mailbox_of[user.id]}/events"
    body = {"subject": "Vom Handy", "start": later(third["start"]), "end": later(third["end"])}
    assert client.patch(f"{base}/{third['id']}", json=body).status_code == 200
    assert client.delete(f"{base}/{fifth['id']}").status_code == 204


def test_bad_series_fail_with_a_german_reason_and_the_rest_flows(anycal):
    cal = anycal
    k = cal.k
    user = cal.by_zone["Europe/Berlin"]
    bad = [
        weekly(
            id="ser-bad1",
            participant_ids=(user.id,),
            recurrence=Recurrence("weekly", interval=0, weekdays=(0,)),
        ),
        weekly(
            id="ser-bad2",
            participant_ids=(user.id,),
            recurrence=Recurrence(
                "weekly",
                weekdays=(0,),
                exceptions=(
                    OccurrenceChange(
                        dt.date(2026, 3, 30),
                        start=dt.datetime(2026, 3, 29, 2, 15),
                        end=dt.datetime(2026, 3, 29, 3, 15),
                    ),
                ),
            ),
        ),
        weekly(id="ser-bad3", participant_ids=(user.id,), recurrence=Recurrence("daily", count=10_000)),
    ]
    good = weekly(
        id="ser-good", participant_ids=(user.id,), recurrence=Recurrence("weekly", weekdays=(4,), count=3)
    )
    failures = len(k.host.hook_failures)
    k.host.save_many([*bad, good])  # would raise if a hook raised into the host
    k.drain()
    assert len(k.host.hook_failures) == failures
    failed = cal.failed()
    assert "mindestens 1" in failed[(user.id, "appointment:ser-bad1")]
    assert (
        "02:15 Uhr gibt es in der Zeitzone Europe/Berlin nicht" in failed[(user.id, "appointment:ser-bad2")]
    )
    assert "höchstens 999" in failed[(user.id, "appointment:ser-bad3")]
    assert len(failed) == 3
    for appt in bad:
        assert k.ours(user, appt.ref.key, "calendar") == []
    assert len(view(cal, user, dt.date(2026, 1, 1), dt.date(2026, 2, 1), good.ref.key)) == 3


def test_the_sample_firms_series_arrive_as_one_master_each(anycal):
    cal = anycal
    from tsl_hostapi.reference.sample_firm import generate_firm

    k = cal.k
    series = [a for a in generate_firm(seed=7, contacts=40, series=True).appointments if a.recurrence]
    k.host.save_many(series)
    k.drain()
    assert cal.failed() == {}
    for user in cal.users:
        mine = [a for a in series if user.id in a.participant_ids]
        for appt in mine:
            (item,) = cal.k.ours(user, appt.ref.key, "calendar")
            assert item["calendar_item_type"] == "RecurringMaster"
    court = next(a for a in series if a.id == "S3")
    readers = [u for u in cal.users if u.id in court.participant_ids]
    assert readers  # the sample firm's court day belongs to a lawyer with a mailbox
    # Every second Tuesday at 08:30 Berlin time, before and after both switches; one cancelled.
    lo, hi = court.start.date(), court.recurrence.until + dt.timedelta(days=1)
    assert_view_equals_host(cal, court, lo, hi, users=readers)
    got = view(cal, readers[0], lo, hi, court.ref.key)
    assert {i.start.astimezone(BERLIN).time() for i in got} == {dt.time(8, 30)}
    assert len(got) == len(expected(court, lo, hi)) > 25


def test_the_exceptions_of_a_batch_of_series_go_in_one_request_per_kind(anycal):
    cal = anycal
    k = cal.k
    user = cal.by_zone["Europe/Berlin"]
    email = k.mailbox_of[user.id]
    rec = Recurrence(
        "weekly",
        weekdays=(0,),
        exceptions=(
            OccurrenceChange(dt.date(2026, 1, 12), cancelled=True),
            OccurrenceChange(dt.date(2026, 1, 19), subject="Sondersitzung"),
        ),
    )
    many = [weekly(id=f"ser-b{i}", participant_ids=(user.id,), recurrence=rec) for i in range(12)]
    before = dict(k.server.engine.request_counts(email))
    logged = len(k.graph.log(email)) if cal.backend == "graph" else 0
    k.host.save_many(many)
    k.drain()
    assert cal.failed() == {}
    if cal.backend == "graph":
        # Over Graph: the cancellations and exceptions of each pushed batch of series in $batch
        # requests of up to 20, not one request per series.
        requests = k.graph.log(email)[logged:]
        creates = [r for r in requests if any(m == "POST" and p.endswith("/events") for m, p in r.parts)]
        writes = [
            [(m, p) for m, p in r.parts if m in ("DELETE", "PATCH") and "/events/" in p] for r in requests
        ]
        assert sum(len(w) for w in writes) == 2 * len(many)  # one of each per series, nothing else
        posted = [sum(m == "POST" for m, _ in r.parts) for r in creates]
        assert sum(1 for w in writes if w) == sum(math.ceil(2 * n / 20) for n in posted)
        assert len(creates) < len(many)
    else:
        after = k.server.engine.request_counts(email)
        sent = {op: after.get(op, 0) - before.get(op, 0) for op in ("CreateItem", "DeleteItem", "UpdateItem")}
        # One DeleteItem and one UpdateItem for the exceptions of each pushed batch, not one per series.
        assert sent["DeleteItem"] <= sent["CreateItem"] < len(many)
        assert sent["UpdateItem"] <= sent["CreateItem"]
    for appt in many:
        got = view(cal, user, dt.date(2026, 1, 1), dt.date(2026, 2, 1), appt.ref.key)
        assert [i.subject.endswith("Sondersitzung") for i in got] == [False, True, False]  # 12 Jan cancelled


def test_a_failed_exception_request_is_retried_without_a_second_master(anycal):
    cal = anycal
    k = cal.k
    user = cal.by_zone["Europe/Zurich"]
    rec = Recurrence(
        "weekly",
        weekdays=(0,),
        count=8,
        exceptions=(
            OccurrenceChange(dt.date(2026, 1, 12), cancelled=True),
            OccurrenceChange(
                dt.date(2026, 1, 19), start=dt.datetime(2026, 1, 20, 9), end=dt.datetime(2026, 1, 20, 10)
            ),
        ),
    )
    appts = [weekly(id=f"ser-f{i}", participant_ids=(user.id,), recurrence=rec) for i in range(3)]
    # The masters are created, then the request for their cancelled occurrences is refused.
    if cal.backend == "graph":
        fault = k.graph.inject(
            "status", status=503, retry_after=1, inner=True, method="DELETE", path_contains="/events/"
        )
    else:
        fault = k.server.inject(
            "server_busy", operation="DeleteItem", back_off_ms=200, mailbox=k.mailbox_of[user.id]
        )
    k.host.save_many(appts)
    k.drain(timeout=60)
    assert fault.fired == 1
    assert cal.failed() == {}
    for appt in appts:
        assert len(k.ours(user, appt.ref.key, "calendar")) == 1  # found by key and written again
        assert_view_equals_host(cal, appt, dt.date(2026, 1, 1), dt.date(2026, 4, 1), users=[user])
