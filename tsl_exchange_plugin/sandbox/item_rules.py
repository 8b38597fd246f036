"""Two normalisations real Exchange applies to what a client writes, kept apart from the
generic store so each has its source next to it.

- **All-day items span whole local days.** An all-day item whose Start or End is not at
  midnight is widened to the local midnights around it, in its StartTimeZone/EndTimeZone (the
  request's TimeZoneContext otherwise). exchangelib's own test suite, written against real
  Exchange, asserts this: ``test_all_day_datetimes`` saves an all-day item with random times
  and reads back Start and End at 00:00 in the account's zone, on the start's date and on the
  day after the end's date.
- **Short text properties hold at most 255 characters.** Exchange cuts a longer Subject to 255
  characters ending in "..." instead of refusing it, as exchangelib's maintainer describes it
  (exchangelib refuses such subjects client-side for that reason: CharField max_length=255;
  nylas/exchangelib pull request 68).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from . import xmlio

SHORT_TEXT_LIMIT = 255
SHORT_TEXT_FIELDS = ("Subject",)
ELLIPSIS = "..."


def _zone(data: dict[str, Any], key: str, fallback: str | None) -> ZoneInfo | None:
    """The item's zone, or None for a Windows zone id the sandbox cannot map (then nothing is
    widened: guessing UTC would move the item's day)."""
    tz = (data.get(key) or {}).get("@Id") or fallback or "UTC"
    known = xmlio.WINDOWS_ZONES.get(tz)
    return ZoneInfo(known[0]) if known else None


def _midnight(day: dt.date, zone: ZoneInfo) -> str:
    return xmlio.format_datetime(dt.datetime.combine(day, dt.time()).replace(tzinfo=zone))


def whole_days(data: dict[str, Any], tz: str | None) -> None:
    """Widen an all-day item's Start/End to local midnights (no change for a timed item)."""
    if not data.get("IsAllDayEvent") or not data.get("Start"):
        return
    start_zone = _zone(data, "StartTimeZone", tz)
    end_zone = _zone(data, "EndTimeZone", tz) if data.get("EndTimeZone") else start_zone
    if start_zone is None or end_zone is None:
        return
    start = xmlio.parse_datetime(data["Start"]).astimezone(start_zone)
    data["Start"] = _midnight(start.date(), start_zone)
    if not data.get("End"):
        return
    end = xmlio.parse_datetime(data["End"]).astimezone(end_zone)
    day = end.date() if end.time() == dt.time() else end.date() + dt.timedelta(days=1)
    day = max(day, start.date() + dt.timedelta(days=1))  # at least the start's whole day
    data["End"] = _midnight(day, end_zone)


def short_texts(data: dict[str, Any]) -> None:
    for name in SHORT_TEXT_FIELDS:
        value = data.get(name)
        if isinstance(value, str) and len(value) > SHORT_TEXT_LIMIT:
            data[name] = value[: SHORT_TEXT_LIMIT - len(ELLIPSIS)] + ELLIPSIS


def apply(kind_element: str, data: dict[str, Any], tz: str | None) -> None:
    short_texts(data)
    if kind_element == "CalendarItem":
        whole_days(data, tz)
