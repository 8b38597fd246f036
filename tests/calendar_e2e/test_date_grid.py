"""Every all-day deadline lands on its own date, in four zones, read back as a phone would.

The grid: deadlines due on each date of 2026-01-01..2028-12-31, each with all four
zone users responsible, saved in one host transaction, pushed by the plugin's worker
through unmodified exchangelib into the sandbox (``ews``), or through Microsoft Graph into
Microsoft 365 mailboxes (``graph``: the Graph sandbox over the same store), then read back in
bulk with a second exchangelib account per mailbox: what a lawyer sees does not depend on the
protocol that wrote it.

Default (CI): every day on which Europe/Berlin, Vienna or Zurich switch DST in
2026-2028 plus the days either side, 29 February 2028 and its neighbours, the first
and last day of each year, and a seeded random sample. Full grid, one command::

    TSL_DATE_GRID=full .venv/bin/python -m pytest tests/calendar_e2e/test_date_grid.py -q

Two readings per item:

1. What exchangelib makes of it (``is_all_day`` requested): ``start`` must be the host's
   date as an ``EWSDate``. ``end`` too, except on the spring-forward day. There
   exchangelib 5.6 subtracts 24 absolute hours from the stored End (local midnight after
   a 23-hour day) before converting it to local time, which lands on 23:00 of the day
   before (``CalendarItem.from_xml``). The stored instants are right (reading 2 proves
   it; Outlook and phones compute the span in local time), so this test pins exactly
   that client quirk instead of hiding it: end == due - 1 day on those days and only there.
2. The raw instants (``is_all_day`` not requested, so exchangelib does not convert):
   Start is local midnight of the due date and End local midnight of the next day, in
   the user's zone, with the user's zone as StartTimeZone: that is what Outlook and
   ActiveSync phones show as "all day on that date".
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import random
import time
import zoneinfo

import pytest
from exchangelib import EWSDate, EWSDateTime

from tsl_exchange_plugin.backends.ews.convert import RECORD_ID_FIELD
from tsl_exchange_plugin.sandbox.graph.testing import graph_sandbox  # noqa: F401 - fixture
from tsl_hostapi.types import Deadline

from .conftest import ZONES, dst_switches, local_midnight_utc

FULL = os.environ.get("TSL_DATE_GRID", "").lower() == "full"
FIRST, LAST = dt.date(2026, 1, 1), dt.date(2028, 12, 31)
SAMPLE_SEED = 20260101
SAMPLE_SIZE = 30


def all_days() -> list[dt.date]:
    return [FIRST + dt.timedelta(days=n) for n in range((LAST - FIRST).days + 1)]


def ci_days() -> list[dt.date]:
    years = range(FIRST.year, LAST.year + 1)
    days: set[dt.date] = set()
    for zone in ZONES:
        for switch in dst_switches(years, zone):
            days |= {switch - dt.timedelta(days=1), switch, switch + dt.timedelta(days=1)}
    leap = dt.date(2028, 2, 29)
    days |= {leap - dt.timedelta(days=1), leap, leap + dt.timedelta(days=1)}
    for year in years:
        days |= {dt.date(year, 1, 1), dt.date(year, 12, 31)}
    rest = [d for d in all_days() if d not in days]
    days |= set(random.Random(SAMPLE_SEED).sample(rest, SAMPLE_SIZE))
    return sorted(days)


def spring_forward(day: dt.date, zone: str) -> bool:
    """A 23-hour day in ``zone``."""
    tz = zoneinfo.ZoneInfo(zone)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return end.astimezone(dt.UTC) - start.astimezone(dt.UTC) < dt.timedelta(hours=24)


def test_ci_sample_covers_what_the_issue_names():
    days = set(ci_days())
    assert dt.date(2028, 2, 29) in days
    for zone in ("Europe/Berlin", "Europe/Vienna", "Europe/Zurich"):
        switches = dst_switches(range(2026, 2029), zone)
        assert len(switches) == 6, (zone, switches)  # two a year
        assert set(switches) <= days
    assert dst_switches(range(2026, 2029), "UTC") == []
    assert {dt.date(y, m, d) for y in (2026, 2027, 2028) for m, d in ((1, 1), (12, 31))} <= days


@pytest.mark.timeout(1800 if FULL else 120)
def test_all_day_deadlines_land_on_their_own_date(anycal):
    cal = anycal
    k = cal.k
    days = all_days() if FULL else ci_days()
    deadlines = [
        Deadline(
            id=f"grid-{day.isoformat()}",
            due_date=day,
            kind="Berufungsfrist",
            responsible_ids=tuple(u.id for u in cal.users),
        )
        for day in days
    ]
    due = {d.ref.key: d.due_date for d in deadlines}

    started = time.monotonic()
    k.host.save_many(deadlines)
    k.drain(timeout=1500 if FULL else 90)
    pushed = time.monotonic() - started
    assert cal.failed() == {}
    if cal.backend == "graph":  # written through Graph only: the EWS endpoint saw no create
        assert not any(
            k.server.engine.request_counts(k.mailbox_of[u.id]).get("CreateItem") for u in cal.users
        )
        assert len([r for r in k.graph.log() if r.method == "POST" and r.inner]) >= len(days) * 4 // 20

    for zone, user in cal.by_zone.items():
        # Read with exchangelib on both backends: its view of the stored zone and instants; over
        # Graph the same items are what an EWS client (Outlook on premises, a phone) sees.
        as_read = cal.read_ews(user, "calendar", "start", "end", "is_all_day", "subject")
        raw = cal.read_ews(user, "calendar", "start", "end")
        wrong: list[str] = []
        for key, day in due.items():
            items = as_read.get(key, [])
            assert len(items) == 1, f"{zone} {key}: {len(items)} items"
            item = items[0]
            expected_end = day - dt.timedelta(days=1) if spring_forward(day, zone) else day
            if not (
                item.is_all_day is True
                and type(item.start) is EWSDate
                and item.start == day
                and item.end == expected_end
            ):
                wrong.append(f"{key}: start={item.start!r} end={item.end!r} all_day={item.is_all_day}")
            (stored,) = raw[key]
            if not (
                stored.start == local_midnight_utc(day, zone)
                and stored.end == local_midnight_utc(day + dt.timedelta(days=1), zone)
                and stored._start_timezone is not None
                and stored._start_timezone.key == _ews_zone_for(zone)
            ):
                wrong.append(f"{key} raw: start={stored.start} end={stored.end} tz={stored._start_timezone}")
        assert not wrong, f"{zone}: {len(wrong)} of {len(due)} wrong, e.g. {wrong[:5]}"
        # A phone's day view (CalendarView from local midnight to local midnight) around each
        # DST switch shows that day's Frist and no neighbour's.
        acc = cal.account(user)
        tz = zoneinfo.ZoneInfo(zone)
        for day in [d for d in days if _near_switch(d)]:
            lo = EWSDateTime.from_datetime(dt.datetime.combine(day, dt.time(0), tzinfo=tz))
            hi = EWSDateTime.from_datetime(
                dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
            )
            seen = {
                key
                for it in acc.calendar.view(start=lo, end=hi).only(RECORD_ID_FIELD)
                if (key := getattr(it, RECORD_ID_FIELD, None) or "").startswith("deadline:grid-")
            }
            assert seen == {f"deadline:grid-{day.isoformat()}"}, (zone, day, seen)
    read_back = time.monotonic() - started - pushed
    print(
        f"\ndate grid ({'full' if FULL else 'CI sample'}): {len(days)} dates x {len(cal.by_zone)} zones "
        f"= {len(days) * len(cal.by_zone)} items; push {pushed:.1f}s, read back {read_back:.1f}s"
    )
    # Nothing else of ours appeared (no duplicates under other keys).
    for user in cal.users:
        assert len(cal.keys(user, prefix="deadline:grid-")) == len(days)


@functools.cache
def _switches(year: int) -> frozenset[dt.date]:
    return frozenset(s for z in ZONES for s in dst_switches([year], z))


def _near_switch(day: dt.date) -> bool:
    return any(abs((day - s).days) <= 1 for s in _switches(day.year))


def _ews_zone_for(zone: str) -> str:
    """The IANA name exchangelib gives back for the Windows zone it sent for ``zone``.

    Berlin, Vienna and Zurich are all "W. Europe Standard Time", which exchangelib reads
    back as Europe/Berlin; their rules are the same for 2026-2028, so every date holds.
    """
    from exchangelib import EWSTimeZone

    return EWSTimeZone.from_ms_id(EWSTimeZone(zone).ms_id).key
