"""Recurring masters in the sandbox, each rule replayed with unmodified exchangelib over HTTP.

What real Exchange documents (Microsoft Learn, "Access a recurring series by using EWS",
"Update a recurring series by using EWS", "Delete appointments in a recurring series by using
EWS", and the CalendarItem element reference) is cited at each rule in sandbox/series.py.
The day kinds of relative patterns (Day, Weekday, WeekendDay) follow [MS-OXOCAL] 2.2.1.44.1.6
(PatternTypeSpecific MonthNth: the Nth, or the last, of the days in a day mask) and the
DayOfWeekIndex element reference.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import itertools
import types

import pytest
from dateutil import rrule
from exchangelib import CalendarItem, EWSDate, EWSDateTime, EWSTimeZone
from exchangelib.errors import (
    ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange,
    ErrorCalendarOccurrenceIsDeletedFromRecurrence,
    ErrorOccurrenceCrossingBoundary,
    ErrorRecurrenceHasNoOccurrence,
)
from exchangelib.fields import DAY, FIRST, LAST, SECOND, WEEK_DAY, WEEKEND_DAY
from exchangelib.recurrence import (
    AbsoluteYearlyPattern,
    DailyPattern,
    Recurrence,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsl_exchange_plugin.sandbox import series, xmlio
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS, exchangelib_account

BERLIN = EWSTimeZone("Europe/Berlin")


@pytest.fixture
def acc(sandbox):
    return exchangelib_account(sandbox, sorted(SANDBOX_PASSWORDS)[0])


def at(y, m, d, h=0, mi=0, tz=BERLIN) -> EWSDateTime:
    return EWSDateTime(y, m, d, h, mi, tzinfo=tz)


def weekly_master(acc, *, number: int | None = 6, start=None) -> CalendarItem:
    start = start or at(2026, 3, 16, 9)
    rec = (
        Recurrence(pattern=WeeklyPattern(interval=1, weekdays=[1]), start=start.date(), number=number)
        if number
        else Recurrence(pattern=WeeklyPattern(interval=1, weekdays=[1]), start=start.date())
    )
    item = CalendarItem(
        account=acc,
        folder=acc.calendar,
        subject="Kanzleibesprechung",
        start=start,
        end=start + dt.timedelta(hours=1),
        recurrence=rec,
    )
    item.save()
    item.refresh()
    return item


def test_a_series_is_one_recurring_master_with_first_and_last_occurrence(acc):
    master = weekly_master(acc)
    assert master.type == "RecurringMaster"
    # FindItem without a CalendarView: the master only, not its occurrences.
    assert [i.type for i in acc.calendar.all().only("type")] == ["RecurringMaster"]
    assert master.first_occurrence.start == at(2026, 3, 16, 9)
    # Six Mondays later, after the spring switch: still 09:00 in Berlin.
    assert master.last_occurrence.start == at(2026, 4, 20, 9)
    assert master.last_occurrence.start.astimezone(BERLIN).hour == 9
    # The range dates come back as dates (Exchange writes them with the zone offset,
    # "2026-03-16+01:00"; a bare date would reach exchangelib as a UTC datetime).
    assert type(master.recurrence.boundary.start) is EWSDate
    assert master.recurrence.boundary.start == EWSDate(2026, 3, 16)
    assert master.recurrence.boundary.number == 6


def test_range_dates_carry_the_series_offset_in_the_raw_answer(sandbox, acc):
    master = weekly_master(acc)
    ctx = types.SimpleNamespace(tz=None)
    row = sandbox.engine.store.item(acc.primary_smtp_address.lower(), master.id)
    view: dict = {}
    series.master_view(view, row, ctx.tz)
    assert view["Recurrence"]["NumberedRecurrence"]["StartDate"] == "2026-03-16+01:00"
    assert row["data"]["Recurrence"]["NumberedRecurrence"]["StartDate"] == "2026-03-16"  # stored bare


def test_the_master_moves_to_its_first_occurrence(acc):
    # Starts on a Sunday, repeats on Mondays: Exchange shows the master on the first Monday.
    master = weekly_master(acc, start=at(2026, 3, 15, 9))
    assert master.start == at(2026, 3, 16, 9) and master.end == at(2026, 3, 16, 10)


def test_occurrences_by_index_update_and_delete(acc):
    master = weekly_master(acc)
    second = master.occurrence(2)
    second.refresh()
    assert (second.type, second.start) == ("Occurrence", at(2026, 3, 23, 9))
    second.subject = "Verlegt"
    second.start, second.end = at(2026, 3, 24, 14), at(2026, 3, 24, 15)
    second.save(update_fields=["subject", "start", "end"])
    master.occurrence(4).delete()
    master.refresh()
    (mod,) = master.modified_occurrences
    assert (mod.start, mod.original_start) == (at(2026, 3, 24, 14), at(2026, 3, 23, 9))
    assert [d.start for d in master.deleted_occurrences] == [at(2026, 4, 6, 9)]
    again = acc.calendar.get(id=mod.id)
    assert (again.type, again.subject) == ("Exception", "Verlegt")
    # From an occurrence back to its master.
    back = again.recurring_master()
    back.refresh()
    assert back.id == master.id and back.type == "RecurringMaster"
    # CalendarView: five items left, the exception where it was moved to.
    got = [
        (i.type, i.start, i.subject)
        for i in acc.calendar.view(start=at(2026, 3, 1), end=at(2026, 5, 1)).only("type", "start", "subject")
    ]
    assert got == [
        ("Occurrence", at(2026, 3, 16, 9), "Kanzleibesprechung"),
        ("Exception", at(2026, 3, 24, 14), "Verlegt"),
        ("Occurrence", at(2026, 3, 30, 9), "Kanzleibesprechung"),
        ("Occurrence", at(2026, 4, 13, 9), "Kanzleibesprechung"),
        ("Occurrence", at(2026, 4, 20, 9), "Kanzleibesprechung"),
    ]


def test_occurrence_errors_as_exchange_names_them(acc):
    master = weekly_master(acc)
    master.occurrence(3).delete()
    with pytest.raises(ErrorCalendarOccurrenceIsDeletedFromRecurrence):
        master.occurrence(3).delete()
    with pytest.raises(ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange):
        master.occurrence(7).refresh()
    occ = master.occurrence(2)
    occ.refresh()
    occ.start, occ.end = at(2026, 3, 16, 12), at(2026, 3, 16, 13)  # onto the first occurrence's day
    with pytest.raises(ErrorOccurrenceCrossingBoundary):
        occ.save(update_fields=["start", "end"])


def test_saving_the_recurrence_again_drops_the_exceptions(acc):
    master = weekly_master(acc)
    master.occurrence(2).delete()
    occ = master.occurrence(3)
    occ.refresh()
    occ.subject = "Anders"
    occ.save(update_fields=["subject"])
    master.refresh()
    assert master.deleted_occurrences and master.modified_occurrences
    master.recurrence = Recurrence(
        pattern=WeeklyPattern(interval=2, weekdays=[1]), start=EWSDate(2026, 3, 16), number=3
    )
    master.save(update_fields=["recurrence"])
    master.refresh()
    assert master.deleted_occurrences is None and master.modified_occurrences is None
    assert [i.start for i in acc.calendar.view(start=at(2026, 3, 1), end=at(2026, 6, 1)).only("start")] == [
        at(2026, 3, 16, 9),
        at(2026, 3, 30, 9),
        at(2026, 4, 13, 9),
    ]
    # Removing the recurrence makes a single item again.
    master.recurrence = None
    master.save(update_fields=["recurrence"])
    master.refresh()
    assert master.type == "Single"
    assert [i.type for i in acc.calendar.view(start=at(2026, 3, 1), end=at(2026, 6, 1)).only("type")] == [
        "Single"
    ]


def test_calendar_view_mixes_all_day_and_timed_series_and_single_items(acc):
    fk = CalendarItem(
        account=acc,
        folder=acc.calendar,
        subject="Fristenkontrolle",
        start=EWSDate(2026, 12, 1),
        end=EWSDate(2026, 12, 1),
        is_all_day=True,
        recurrence=Recurrence(
            pattern=AbsoluteYearlyPattern(day_of_month=1, month=12), start=EWSDate(2026, 12, 1)
        ),
    )
    fk.save()
    sprech = CalendarItem(
        account=acc,
        folder=acc.calendar,
        subject="Sprechstunde",
        start=at(2026, 11, 3, 16),
        end=at(2026, 11, 3, 18),
        recurrence=Recurrence(
            pattern=RelativeMonthlyPattern(interval=1, weekday=2, week_number=1),
            start=EWSDate(2026, 11, 1),
            number=3,
        ),
    )
    sprech.save()
    CalendarItem(
        account=acc,
        folder=acc.calendar,
        subject="Verhandlung",
        start=at(2026, 12, 1, 10),
        end=at(2026, 12, 1, 11),
    ).save()
    got = [
        (i.subject, i.type, i.start, i.end, i.is_all_day)
        for i in acc.calendar.view(start=at(2026, 11, 1), end=at(2028, 1, 1)).only(
            "subject", "type", "start", "end", "is_all_day"
        )
    ]
    got.sort(key=lambda g: (str(g[2])[:10], g[0]))
    assert got == [
        ("Sprechstunde", "Occurrence", at(2026, 11, 3, 16), at(2026, 11, 3, 18), False),
        ("Fristenkontrolle", "Occurrence", EWSDate(2026, 12, 1), EWSDate(2026, 12, 1), True),
        ("Sprechstunde", "Occurrence", at(2026, 12, 1, 16), at(2026, 12, 1, 18), False),
        ("Verhandlung", "Single", at(2026, 12, 1, 10), at(2026, 12, 1, 11), False),
        ("Sprechstunde", "Occurrence", at(2027, 1, 5, 16), at(2027, 1, 5, 18), False),
        ("Fristenkontrolle", "Occurrence", EWSDate(2027, 12, 1), EWSDate(2027, 12, 1), True),
    ]


def test_a_daily_series_without_end_expands_only_into_the_window(acc):
    item = CalendarItem(
        account=acc,
        folder=acc.calendar,
        subject="Post",
        start=at(2026, 1, 1, 8),
        end=at(2026, 1, 1, 8, 30),
        recurrence=Recurrence(pattern=DailyPattern(interval=3), start=EWSDate(2026, 1, 1)),
    )
    item.save()
    item.refresh()
    assert item.last_occurrence is None  # no end, no last occurrence
    got = [i.start for i in acc.calendar.view(start=at(2027, 10, 30), end=at(2027, 11, 2)).only("start")]
    # 1 Nov 2027 is day 669 after 1 Jan 2026 (30 and 31 Oct are 667 and 668): at 08:00 Berlin,
    # winter time again since 31 Oct, as on 1 Jan.
    assert got == [at(2027, 11, 1, 8)]


# ------------------------------------------------------------------ relative patterns with day kinds


def series_of(acc, subject, pattern, start: EWSDate, hour: int = 17, **rng) -> CalendarItem:
    item = CalendarItem(
        account=acc,
        folder=acc.calendar,
        subject=subject,
        start=at(start.year, start.month, start.day, hour),
        end=at(start.year, start.month, start.day, hour, 30),
        recurrence=Recurrence(pattern=pattern, start=start, **rng),
    )
    item.save()
    item.refresh()
    return item


def view_starts(acc, subject, lo, hi) -> list:
    return [
        i.start for i in acc.calendar.view(start=lo, end=hi).only("start", "subject") if i.subject == subject
    ]


def test_the_last_weekday_of_the_month(acc):
    # DayOfWeekIndex Last with DaysOfWeek Weekday: the month's last Monday-to-Friday day. 31 March
    # 2026 is a Tuesday and 30 April a Thursday; 31 May is a Sunday, so May's is Friday the 29th.
    master = series_of(
        acc,
        "Monatsabschluss",
        RelativeMonthlyPattern(interval=1, weekday=WEEK_DAY, week_number=LAST),
        EWSDate(2026, 3, 1),
        number=3,
    )
    assert master.type == "RecurringMaster"
    assert master.start == at(2026, 3, 31, 17)  # moved from Sunday 1 March to the first occurrence
    assert master.first_occurrence.start == at(2026, 3, 31, 17)
    assert master.last_occurrence.start == at(2026, 5, 29, 17)
    assert view_starts(acc, "Monatsabschluss", at(2026, 3, 1), at(2026, 7, 1)) == [
        at(2026, 3, 31, 17),
        at(2026, 4, 30, 17),
        at(2026, 5, 29, 17),
    ]
    third = master.occurrence(3)
    third.refresh()
    assert third.start == at(2026, 5, 29, 17)


def test_the_second_weekend_day_of_the_month_without_end(acc):
    # WeekendDay counts Saturdays and Sundays together: 1 March 2026 is a Sunday, so March's
    # second weekend day is Saturday the 7th; April starts on a Wednesday (Sat 4, Sun 5), May on
    # a Friday (Sat 2, Sun 3).
    master = series_of(
        acc,
        "Kanzleiputz",
        RelativeMonthlyPattern(interval=1, weekday=WEEKEND_DAY, week_number=SECOND),
        EWSDate(2026, 3, 1),
        hour=10,
    )
    assert master.last_occurrence is None
    assert view_starts(acc, "Kanzleiputz", at(2026, 3, 1), at(2026, 6, 1)) == [
        at(2026, 3, 7, 10),
        at(2026, 4, 5, 10),
        at(2026, 5, 3, 10),
    ]


def test_day_kinds_in_yearly_patterns_and_every_other_month(acc):
    # "The last day of February": 28th in 2026 and 2027, the 29th in the leap year 2028, which
    # the end date makes the last occurrence.
    feb = series_of(
        acc,
        "Jahresfrist",
        RelativeYearlyPattern(weekday=DAY, week_number=LAST, month=2),
        EWSDate(2026, 1, 1),
        hour=9,
        end=EWSDate(2028, 12, 31),
    )
    assert feb.first_occurrence.start == at(2026, 2, 28, 9)
    assert feb.last_occurrence.start == at(2028, 2, 29, 9)
    # "The last weekday of December": 31 Dec 2026 is a Thursday, 2027 a Friday; 31 Dec 2028 is a
    # Sunday, so Friday the 29th.
    dec = series_of(
        acc,
        "Jahresabschluss",
        RelativeYearlyPattern(weekday=WEEK_DAY, week_number=LAST, month=12),
        EWSDate(2026, 1, 1),
        hour=9,
        number=3,
    )
    assert dec.last_occurrence.start == at(2028, 12, 29, 9)
    assert view_starts(acc, "Jahresabschluss", at(2026, 1, 1), at(2029, 1, 1)) == [
        at(2026, 12, 31, 9),
        at(2027, 12, 31, 9),
        at(2028, 12, 29, 9),
    ]
    # "The first day of every second month", from mid-June: 1 August, then 1 October.
    first = series_of(
        acc,
        "Quartalsakte",
        RelativeMonthlyPattern(interval=2, weekday=DAY, week_number=FIRST),
        EWSDate(2026, 6, 15),
        hour=8,
        number=2,
    )
    assert (first.first_occurrence.start, first.last_occurrence.start) == (
        at(2026, 8, 1, 8),
        at(2026, 10, 1, 8),
    )


def test_a_range_without_any_occurrence_is_refused(acc):
    # ResponseCode reference: ErrorRecurrenceHasNoOccurrence, "the specified recurrence does not
    # have any occurrence instances in the specified range": Sundays between Monday and Friday.
    with pytest.raises(ErrorRecurrenceHasNoOccurrence):
        series_of(
            acc, "Nie", WeeklyPattern(interval=1, weekdays=[7]), EWSDate(2026, 3, 2), end=EWSDate(2026, 3, 6)
        )
    assert acc.calendar.all().count() == 0


_NS = (
    'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
    'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"'
)
_WEEKLY_DAY_KIND = """<t:WeeklyRecurrence><t:Interval>1</t:Interval><t:DaysOfWeek>{kind}</t:DaysOfWeek>
  </t:WeeklyRecurrence><t:NoEndRecurrence><t:StartDate>2026-03-02</t:StartDate></t:NoEndRecurrence>"""
_ITEMS = {
    "calendar": """<t:CalendarItem><t:Subject>Woche</t:Subject><t:Start>2026-03-02T08:00:00Z</t:Start>
      <t:End>2026-03-02T09:00:00Z</t:End><t:Recurrence>{rec}</t:Recurrence></t:CalendarItem>""",
    "tasks": """<t:Task><t:Subject>Woche</t:Subject><t:DueDate>2026-03-02T00:00:00Z</t:DueDate>
      <t:Recurrence>{rec}</t:Recurrence></t:Task>""",
}


@pytest.mark.parametrize("folder", sorted(_ITEMS))
@pytest.mark.parametrize("kind", [DAY, WEEK_DAY, WEEKEND_DAY])
def test_a_weekly_pattern_cannot_use_a_day_kind(sandbox, folder, kind):
    # ResponseCode reference: ErrorCalendarInvalidDayForWeeklyRecurrence, "invalid values of Day,
    # WeekDay, and WeekendDay are used to specify the weekly recurrence". The schema allows them
    # (DaysOfWeekType is a list of DayOfWeekType), exchangelib refuses them before sending, so
    # this request goes out as raw SOAP.
    item = _ITEMS[folder].format(rec=_WEEKLY_DAY_KIND.format(kind=kind))
    body = f"""<?xml version="1.0" encoding="utf-8"?><s:Envelope {_NS}><s:Header>
      <t:RequestServerVersion Version="Exchange2016"/></s:Header><s:Body>
      <m:CreateItem MessageDisposition="SaveOnly" SendMeetingInvitations="SendToNone">
      <m:SavedItemFolderId><t:DistinguishedFolderId Id="{folder}"/></m:SavedItemFolderId>
      <m:Items>{item}</m:Items></m:CreateItem></s:Body></s:Envelope>""".encode()
    email = sorted(SANDBOX_PASSWORDS)[0]
    auth = base64.b64encode(f"{email}:{SANDBOX_PASSWORDS[email]}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=30)
    conn.request(
        "POST",
        "/EWS/Exchange.asmx",
        body=body,
        headers={"Content-Type": "text/xml; charset=utf-8", "Authorization": f"Basic {auth}"},
    )
    resp = conn.getresponse()
    answer = resp.read().decode()
    conn.close()
    assert resp.status == 200
    assert "<m:ResponseCode>ErrorCalendarInvalidDayForWeeklyRecurrence</m:ResponseCode>" in answer
    assert sandbox.engine.list_items(email, folder) == []


# ------------------------------------------------------------------ the expansion against dateutil

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_RR = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)
INDEX = ("First", "Second", "Third", "Fourth", "Last")
# Written out here, not taken from the sandbox: Monday = 0.
DAY_KINDS = {"Day": range(7), "Weekday": range(5), "WeekendDay": (5, 6)}


@st.composite
def patterns(draw):
    """(EWS Recurrence as the sandbox stores it, dateutil rule keywords)."""
    kind = draw(st.sampled_from(series.PATTERNS))
    start = draw(st.dates(dt.date(2026, 1, 1), dt.date(2028, 12, 31)))
    interval = draw(st.integers(1, 12))
    p: dict = {}
    rr: dict = {"interval": interval, "wkst": rrule.MO}
    if kind == "DailyRecurrence":
        p["Interval"] = interval
        rr["freq"] = rrule.DAILY
    elif kind == "WeeklyRecurrence":
        days = sorted(draw(st.sets(st.integers(0, 6), min_size=1)))
        p.update(Interval=interval, DaysOfWeek=" ".join(DAYS[d] for d in days), FirstDayOfWeek="Monday")
        rr.update(freq=rrule.WEEKLY, byweekday=[_RR[d] for d in days])
    else:
        yearly = "Yearly" in kind
        rr["freq"] = rrule.YEARLY if yearly else rrule.MONTHLY
        if yearly:
            month = draw(st.integers(1, 12))
            p["Month"] = series.MONTHS[month - 1]
            rr.update(bymonth=month, interval=1)
        else:
            p["Interval"] = interval
        if kind.startswith("Absolute"):
            dom = draw(st.integers(1, 31))
            p["DayOfMonth"] = dom
            rr.update(bymonthday=tuple(range(min(dom, 28), dom + 1)), bysetpos=-1)
        else:
            # A weekday, or a day kind: the Nth (or last) of several weekdays in the month.
            wd, n = draw(st.sampled_from((*range(7), *DAY_KINDS))), draw(st.integers(1, 5))
            p.update(DaysOfWeek=DAYS[wd] if isinstance(wd, int) else wd, DayOfWeekIndex=INDEX[n - 1])
            if isinstance(wd, int):
                rr["byweekday"] = _RR[wd](-1 if n == 5 else n)
            else:
                rr.update(byweekday=[_RR[d] for d in DAY_KINDS[wd]], bysetpos=-1 if n == 5 else n)
    end = draw(st.one_of(st.none(), st.integers(1, 30), st.dates(start, dt.date(2030, 12, 31))))
    if end is None:
        rng = {"NoEndRecurrence": {"StartDate": start.isoformat()}}
    elif isinstance(end, int):
        rng = {"NumberedRecurrence": {"StartDate": start.isoformat(), "NumberOfOccurrences": end}}
        rr["count"] = end
    else:
        rng = {"EndDateRecurrence": {"StartDate": start.isoformat(), "EndDate": end.isoformat()}}
        rr["until"] = dt.datetime.combine(end, dt.time(23, 59))
    return {kind: p, **rng}, rr, start


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pat=patterns(), hour=st.integers(0, 23).filter(lambda h: h != 2), data=st.data()
)  # 02:xx: no DST gap starts
def test_the_sandbox_expansion_equals_dateutils(pat, hour, data):
    rec, rr, start = pat
    zone = "W. Europe Standard Time"
    first_utc = xmlio.format_datetime(
        dt.datetime.combine(start, dt.time(hour)).replace(tzinfo=series.ZoneInfo("Europe/Berlin"))
    )
    row = {
        "id": "VFNMSQAAAAAAAAAAAAAAAAAAAAA=",
        "kind": "CalendarItem",
        "change_key": "ck",
        "data": {
            "Start": first_utc,
            "End": first_utc,
            "Recurrence": rec,
            "StartTimeZone": {"@Id": zone},
        },
    }
    ctx = types.SimpleNamespace(tz=zone)
    freq = rr.pop("freq")
    window = (dt.date(2025, 12, 1), dt.date(2031, 1, 1))  # UTC midnights; every start is inside
    rule = rrule.rrule(freq, dtstart=dt.datetime.combine(start, dt.time(hour)), **rr)
    berlin = series.ZoneInfo("Europe/Berlin")
    hi_at = dt.datetime.combine(window[1], dt.time()).replace(tzinfo=dt.UTC)
    want = list(itertools.islice(itertools.takewhile(lambda d: d.replace(tzinfo=berlin) < hi_at, rule), 200))
    try:
        series.normalize_master(row["data"], {"Recurrence"}, zone)
    except Exception:
        assert want == []  # a series without any occurrence is refused
        return
    # Random exceptions: some occurrences deleted, some moved by half an hour.
    n = len(want)
    deleted = data.draw(st.sets(st.integers(1, max(n, 1))), label="deleted") if n else set()
    for index in sorted(i for i in deleted if i <= n):
        series.delete_occurrence(ctx, row, index)
    moved = data.draw(st.sets(st.integers(1, max(n, 1))), label="moved") - deleted if n else set()
    for index in sorted(i for i in moved if i <= n):
        occ = series.occurrence(row, index, ctx.tz)
        after = dict(occ.data)
        for k in ("Start", "End"):
            after[k] = xmlio.format_datetime(xmlio.parse_datetime(occ.data[k]) + dt.timedelta(minutes=30))
        series.store_exception(ctx, row, index, occ.data, after)
    half = dt.timedelta(minutes=30)
    kept = [(i, d + half if i in moved else d) for i, d in enumerate(want, start=1) if i not in deleted]
    lo = xmlio.format_datetime(dt.datetime.combine(window[0], dt.time()).replace(tzinfo=dt.UTC))
    hi = xmlio.format_datetime(dt.datetime.combine(window[1], dt.time()).replace(tzinfo=dt.UTC))
    got = []
    for o in series.expand(row, ctx.tz, lo, hi):
        if o.index > n:
            assert n == 200, f"an occurrence dateutil does not have: {o.index} {o.data['Start']}"
            break
        got.append((o.index, o.data["Start"]))
    # A moved occurrence is 30 minutes later as an instant (its wall clock may differ across a switch).
    assert got == [
        (
            i,
            xmlio.format_datetime(
                d.replace(tzinfo=berlin) if i not in moved else (d - half).replace(tzinfo=berlin) + half
            ),
        )
        for i, d in kept
    ]
