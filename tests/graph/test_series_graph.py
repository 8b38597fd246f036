"""Series over Microsoft Graph: the wire format, the sandbox's series rules, one store for both
protocols, and the backend bringing a mailbox's series back to the host's whatever Graph does
with existing exceptions when a recurrence is written again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
import zoneinfo

import httpx
import pytest
from exchangelib import CalendarItem, EWSDate, EWSDateTime, EWSTimeZone
from exchangelib.fields import WEEK_DAY, WEEKDAYS
from exchangelib.recurrence import NumberedPattern, Recurrence, RelativeMonthlyPattern

from tsl_exchange_plugin.backends.base import ItemRef, Written
from tsl_exchange_plugin.backends.graph import wire
from tsl_exchange_plugin.mapping.items import CalendarEntry, OccurrenceEdit, Series, SeriesPattern
from tsl_exchange_plugin.sandbox.graph.testing import graph_account
from tsl_exchange_plugin.sandbox.testing import exchangelib_account

ALICE = "alice@kanzlei.test"
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
W_EUROPE = "W. Europe Standard Time"


@pytest.fixture
def raw(graph_sandbox, gsession):
    """Plain HTTP with a valid token: a second client on the mailbox, as a phone would be."""
    token = gsession._backend.tokens.token(graph_account(graph_sandbox))
    with httpx.Client(
        base_url=f"{graph_sandbox.graph_url}/users/{ALICE}",
        verify=ssl.create_default_context(cafile=graph_sandbox.cert_pem_path),
        headers={"Authorization": f"Bearer {token}", "Prefer": f'outlook.timezone="{W_EUROPE}"'},
    ) as client:
        yield client


def series_body(**range_kw) -> dict:
    rng = {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 6, **range_kw}
    return {
        "subject": "Jour fixe",
        "start": {"dateTime": "2026-03-02T09:00:00", "timeZone": W_EUROPE},
        "end": {"dateTime": "2026-03-02T10:00:00", "timeZone": W_EUROPE},
        "recurrence": {
            "pattern": {
                "type": "weekly",
                "interval": 1,
                "daysOfWeek": ["monday"],
                "firstDayOfWeek": "monday",
            },
            "range": rng,
        },
    }


def instances(raw, master_id: str, lo: str = "2026-01-01", hi: str = "2027-01-01") -> list[dict]:
    resp = raw.get(
        f"/events/{master_id}/instances",
        params={"startDateTime": f"{lo}T00:00:00Z", "endDateTime": f"{hi}T00:00:00Z", "$top": "500"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["value"]


# ----------------------------------------------------------------------------- wire format


def entry(edits=(), **pattern) -> CalendarEntry:
    values = dict(kind="weekly", interval=1, weekdays=(0,), start_date=dt.date(2026, 1, 5), count=8)
    values.update(pattern)
    return CalendarEntry(
        "appointment:gs-1",
        "Runde",
        "Europe/Berlin",
        start=dt.datetime(2026, 1, 5, 9),
        end=dt.datetime(2026, 1, 5, 10),
        location="Raum 1",
        recurrence=Series(SeriesPattern(**values), tuple(edits)),
    )


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (dict(kind="daily", interval=3, weekdays=()), {"type": "daily", "interval": 3}),
        (
            dict(kind="weekly", interval=2, weekdays=(0, 3)),
            {
                "type": "weekly",
                "interval": 2,
                "daysOfWeek": ["monday", "thursday"],
                "firstDayOfWeek": "monday",
            },
        ),
        (
            dict(kind="absolute_monthly", weekdays=(), day_of_month=31),
            {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
        ),
        (
            dict(kind="relative_monthly", interval=2, weekdays=(2,), week_index=5),
            {"type": "relativeMonthly", "interval": 2, "daysOfWeek": ["wednesday"], "index": "last"},
        ),
        (
            dict(kind="absolute_yearly", weekdays=(), day_of_month=1, month=12),
            {"type": "absoluteYearly", "interval": 1, "dayOfMonth": 1, "month": 12},
        ),
        (
            dict(kind="relative_yearly", weekdays=(0,), week_index=1, month=3),
            {"type": "relativeYearly", "interval": 1, "daysOfWeek": ["monday"], "index": "first", "month": 3},
        ),
    ],
)
def test_each_pattern_sends_only_the_properties_its_type_uses(pattern, expected):
    rec = wire.recurrence(entry(**pattern).recurrence, "Europe/Zurich")
    assert rec["pattern"] == expected
    assert rec["range"] == {
        "type": "numbered",
        "numberOfOccurrences": 8,
        "startDate": "2026-01-05",
        "recurrenceTimeZone": W_EUROPE,
    }


def test_ranges_a_single_appointment_and_an_unknown_zone():
    until = wire.recurrence(entry(count=None, end_date=dt.date(2026, 6, 30)).recurrence, "UTC")["range"]
    assert until == {
        "type": "endDate",
        "endDate": "2026-06-30",
        "startDate": "2026-01-05",
        "recurrenceTimeZone": "UTC",
    }
    assert wire.recurrence(entry(count=None).recurrence, "UTC")["range"]["type"] == "noEnd"
    # A single appointment clears a recurrence it may have had; its create leaves the field out.
    single = dataclasses.replace(entry(), recurrence=None)
    assert wire.fields(single)["recurrence"] is None and "recurrence" not in wire.create_body(single)
    assert wire.create_body(entry())["recurrence"]["pattern"]["type"] == "weekly"
    # In UTC wall-clock time a series would drift by an hour at every switch: refused, in German.
    with pytest.raises(ValueError, match="Zeitzone America/Bogota"):
        wire.fields(dataclasses.replace(entry(), timezone="America/Bogota"))


# ----------------------------------------------------------------------------- the sandbox's rules


def test_series_rules_of_the_sandbox(raw, graph_sandbox):
    made = raw.post("/events", json=series_body())
    assert made.status_code == 201, made.text
    master = made.json()
    assert master["type"] == "seriesMaster" and master["recurrence"]["range"]["numberOfOccurrences"] == 6
    # /events lists the master once; calendarView shows its six instances instead.
    assert [e["type"] for e in raw.get("/events").json()["value"]] == ["seriesMaster"]
    got = instances(raw, master["id"])
    assert [i["start"]["dateTime"][:16] for i in got] == [
        "2026-03-02T09:00",
        "2026-03-09T09:00",
        "2026-03-16T09:00",
        "2026-03-23T09:00",
        "2026-03-30T09:00",  # after the switch to summer time: still nine o'clock
        "2026-04-06T09:00",
    ]
    assert {i["seriesMasterId"] for i in got} == {master["id"]} and {i["type"] for i in got} == {"occurrence"}
    assert [i["originalStart"] for i in got[3:5]] == ["2026-03-23T08:00:00Z", "2026-03-30T07:00:00Z"]

    # An instance moved onto its neighbour's day is refused; moved within its own days it is an exception.
    def span(day: str) -> dict:
        return {
            "start": {"dateTime": f"{day}T15:00:00", "timeZone": W_EUROPE},
            "end": {"dateTime": f"{day}T16:00:00", "timeZone": W_EUROPE},
        }

    crossing = raw.patch(f"/events/{got[1]['id']}", json=span("2026-03-16"))
    assert (
        crossing.status_code == 400 and crossing.json()["error"]["code"] == "ErrorOccurrenceCrossingBoundary"
    )
    moved = raw.patch(f"/events/{got[1]['id']}", json={"subject": "Verlegt", **span("2026-03-10")})
    assert moved.status_code == 200 and moved.json()["type"] == "exception"
    # Cancelled: gone from the instances; once more: not found.
    assert raw.delete(f"/events/{got[2]['id']}").status_code == 204
    assert raw.delete(f"/events/{got[2]['id']}").status_code == 404
    after = instances(raw, master["id"])
    assert [(i["type"], i["subject"]) for i in after[:2]] == [
        ("occurrence", "Jour fixe"),
        ("exception", "Verlegt"),
    ]
    assert len(after) == 5
    shown = raw.get(
        f"/events/{master['id']}",
        params={"$select": "cancelledOccurrences,subject", "$expand": "exceptionOccurrences"},
    ).json()
    assert [c.rsplit(".", 1)[1] for c in shown["cancelledOccurrences"]] == ["2026-03-16"]
    assert [e["subject"] for e in shown["exceptionOccurrences"]] == ["Verlegt"]
    # What Graph refuses: a range not starting on the start's date, a weekly pattern without days,
    # a recurrence on an instance.
    assert raw.post("/events", json=series_body(startDate="2026-03-01")).status_code == 400
    no_days = series_body()
    del no_days["recurrence"]["pattern"]["daysOfWeek"]
    assert raw.post("/events", json=no_days).status_code == 400
    assert raw.patch(f"/events/{after[0]['id']}", json={"recurrence": None}).status_code == 400
    # recurrence null: a single event again, on the first occurrence's time.
    single = raw.patch(f"/events/{master['id']}", json={"recurrence": None}).json()
    assert (single["type"], single["start"]["dateTime"][:16]) == ("singleInstance", "2026-03-02T09:00")


def test_a_series_written_over_one_protocol_is_read_over_the_other(raw, graph_sandbox, sandbox):
    acc = exchangelib_account(sandbox, ALICE, auth="basic", tz="Europe/Berlin")
    tz = EWSTimeZone("Europe/Berlin")
    # Over EWS: the first Wednesday of every month, four times; the second one renamed, the third deleted.
    item = CalendarItem(
        account=acc,
        folder=acc.calendar,
        subject="Mandantensprechstunde",
        start=EWSDateTime(2026, 1, 7, 16, tzinfo=tz),
        end=EWSDateTime(2026, 1, 7, 18, tzinfo=tz),
        recurrence=Recurrence(
            pattern=RelativeMonthlyPattern(interval=1, weekday=3, week_number=1),
            boundary=NumberedPattern(start=EWSDate(2026, 1, 7), number=4),
        ),
    )
    item.save()
    occ = item.occurrence(2)
    occ.refresh()
    occ.subject = "Sprechstunde im Februar"
    occ.save(update_fields=["subject"])
    item.occurrence(3).delete()
    (master,) = raw.get("/events").json()["value"]
    assert master["recurrence"]["pattern"] == {
        "type": "relativeMonthly",
        "interval": 1,
        "daysOfWeek": ["wednesday"],
        "index": "first",
    }
    got = instances(raw, master["id"])
    assert [(i["start"]["dateTime"][:16], i["type"]) for i in got] == [
        ("2026-01-07T16:00", "occurrence"),
        ("2026-02-04T16:00", "exception"),
        ("2026-04-01T16:00", "occurrence"),
    ]
    assert got[1]["subject"] == "Sprechstunde im Februar"
    # Over Graph: a weekly series with one exception and one cancellation, read with exchangelib.
    made = raw.post("/events", json=series_body()).json()
    first, second, third = instances(raw, made["id"])[:3]
    raw.patch(f"/events/{second['id']}", json={"subject": "Anders"})
    raw.delete(f"/events/{third['id']}")
    ews_master = next(i for i in acc.calendar.all() if i.subject == "Jour fixe")
    assert ews_master.type == "RecurringMaster" and ews_master.recurrence.boundary.number == 6
    assert len(ews_master.modified_occurrences) == 1 and len(ews_master.deleted_occurrences) == 1
    view = acc.calendar.view(
        start=EWSDateTime(2026, 3, 1, tzinfo=tz), end=EWSDateTime(2026, 4, 1, tzinfo=tz)
    ).only("subject", "start", "type")
    shown = [(i.start.astimezone(BERLIN).strftime("%d.%m. %H:%M"), i.type, i.subject) for i in view]
    assert shown == [
        ("02.03. 09:00", "Occurrence", "Jour fixe"),
        ("09.03. 09:00", "Exception", "Anders"),
        ("23.03. 09:00", "Occurrence", "Jour fixe"),
        ("30.03. 09:00", "Occurrence", "Jour fixe"),
    ]
    assert first["type"] == "occurrence"


def test_a_relative_pattern_on_several_days_is_the_day_kind_of_ews(raw, graph_sandbox, sandbox):
    body = series_body()
    body["start"]["dateTime"], body["end"]["dateTime"] = "2026-01-30T09:00:00", "2026-01-30T10:00:00"
    body["recurrence"] = {
        "pattern": {
            "type": "relativeMonthly",
            "interval": 1,
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "index": "last",
        },
        "range": {"type": "numbered", "startDate": "2026-01-30", "numberOfOccurrences": 3},
    }
    made = raw.post("/events", json=body)
    assert made.status_code == 201, made.text
    # The last weekday of January, February and March 2026 (a Friday, a Friday, a Tuesday).
    got = instances(raw, made.json()["id"])
    assert [i["start"]["dateTime"][:10] for i in got] == ["2026-01-30", "2026-02-27", "2026-03-31"]
    acc = exchangelib_account(sandbox, ALICE, auth="basic", tz="Europe/Berlin")
    (master,) = list(acc.calendar.all().only("recurrence"))
    pattern = master.recurrence.pattern
    assert (pattern.weekday, pattern.week_number) == (WEEKDAYS.index(WEEK_DAY) + 1, 5)  # "Weekday", "Last"
    assert raw.get(f"/events/{made.json()['id']}").json()["recurrence"]["pattern"]["daysOfWeek"] == [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
    ]


# ----------------------------------------------------------------------------- the backend


def seen(raw, written: Written) -> list[tuple[str, str, str]]:
    """The series' instances as (type, local start, subject)."""
    master = written.item_id.partition(":")[2]
    return [(i["type"], i["start"]["dateTime"][:16], i["subject"]) for i in instances(raw, master)]


MOVED = OccurrenceEdit(
    3, dt.date(2026, 1, 19), start=dt.datetime(2026, 1, 20, 14), end=dt.datetime(2026, 1, 20, 15)
)
CANCELLED = OccurrenceEdit(2, dt.date(2026, 1, 12), deleted=True)
RENAMED = OccurrenceEdit(4, dt.date(2026, 1, 26), subject="Sonderrunde")


@pytest.mark.parametrize("edits", ["keep", "reset"])
def test_the_backend_brings_the_series_back_to_the_hosts_whatever_graph_keeps(
    edits, gsession, graph_sandbox, raw
):
    """Graph does not document what writing a recurrence again does to exceptions; the sandbox
    plays both answers and the mailbox must end equal to the host either way."""
    graph_sandbox.recurrence_edits = edits

    def ours() -> list[dict]:
        return [
            e
            for e in graph_sandbox.items(ALICE, "events")
            if wire.record_key_of("calendar", e) == "appointment:gs-1"
        ]

    (w,) = gsession.create([entry([CANCELLED, MOVED, RENAMED])])
    assert isinstance(w, Written)
    assert seen(raw, w)[:4] == [
        ("occurrence", "2026-01-05T09:00", "Runde"),
        ("exception", "2026-01-20T14:00", "Runde"),
        ("exception", "2026-01-26T09:00", "Sonderrunde"),
        ("occurrence", "2026-02-02T09:00", "Runde"),
    ]
    # The host takes the cancellation back: Graph cannot restore one occurrence, so the series
    # is written anew (a new id, still one master), with its other exceptions.
    (w2,) = gsession.update([(ItemRef(w.item_id, w.change_key), entry([MOVED, RENAMED]))])
    assert isinstance(w2, Written) and w2.item_id != w.item_id and len(ours()) == 1
    assert seen(raw, w2)[:3] == [
        ("occurrence", "2026-01-05T09:00", "Runde"),
        ("occurrence", "2026-01-12T09:00", "Runde"),
        ("exception", "2026-01-20T14:00", "Runde"),
    ]
    # A new pattern without exceptions: every second Monday and Thursday, no exception left over.
    plain = entry(interval=2, weekdays=(0, 3))
    (w3,) = gsession.update([(ItemRef(w2.item_id, w2.change_key), plain)])
    assert isinstance(w3, Written) and len(ours()) == 1
    assert [s[:2] for s in seen(raw, w3)] == [
        ("occurrence", "2026-01-05T09:00"),
        ("occurrence", "2026-01-08T09:00"),
        ("occurrence", "2026-01-19T09:00"),
        ("occurrence", "2026-01-22T09:00"),
        ("occurrence", "2026-02-02T09:00"),
        ("occurrence", "2026-02-05T09:00"),
        ("occurrence", "2026-02-16T09:00"),
        ("occurrence", "2026-02-19T09:00"),
    ]
    # On the phone: one occurrence renamed, one deleted. The next push restores both.
    got = instances(raw, w3.item_id.partition(":")[2])
    raw.patch(f"/events/{got[1]['id']}", json={"subject": "Vom Handy"})
    raw.delete(f"/events/{got[2]['id']}")
    again = dataclasses.replace(plain, body="Tagesordnung folgt")
    (w4,) = gsession.update([(ItemRef(w3.item_id, w3.change_key), again)])
    assert isinstance(w4, Written) and len(ours()) == 1
    assert [(t, subject) for t, _, subject in seen(raw, w4)] == [("occurrence", "Runde")] * 8
