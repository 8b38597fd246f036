"""MappingContext: defaults, validation, read-only lookups, shared helpers."""

from __future__ import annotations

import datetime as dt

import pytest

from tsl_exchange_plugin.mapping.common import MappingError
from tsl_exchange_plugin.mapping.context import MappingContext, check_date, german_date
from tsl_hostapi.types import Case, User


def test_defaults(firm):
    ctx = MappingContext(recipient=firm.anna)
    assert ctx.timezone == "Europe/Berlin"
    assert ctx.appointment_reminder_minutes == 15
    assert ctx.all_day_reminder_minutes == 1440
    assert ctx.deadline_reminder_minutes == 1440
    assert ctx.pre_deadline_reminder_minutes == 1440
    assert ctx.reminder_time == dt.time(8, 0)
    assert ctx.done_deadline == "mark"
    assert ctx.source_category == ""
    assert dict(ctx.cases) == {} and dict(ctx.users) == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"timezone": "Mitteleuropa"},
        {"timezone": "europe/berlin"},
        {"done_deadline": "delete"},
        {"deadline_reminder_minutes": -1},
        {"all_day_reminder_minutes": -15},
        {"appointment_reminder_minutes": 1.5},
        {"pre_deadline_reminder_minutes": True},
        {"reminder_time": dt.time(8, tzinfo=dt.UTC)},
        {"reminder_time": "08:00"},
    ],
)
def test_invalid_settings_are_refused_in_german(firm, overrides):
    with pytest.raises(ValueError) as err:
        MappingContext(recipient=firm.anna, **overrides)
    assert any(word in str(err.value) for word in ("Zeitzone", "Fristen", "Erinnerung"))


def test_lookups_are_read_only_copies(firm):
    cases = {"c1": firm.case}
    ctx = MappingContext(recipient=firm.anna, cases=cases)
    cases["c2"] = Case("c2", "1/26", "X ./. Y")
    assert ctx.case("c2") is None and ctx.case("c1") == firm.case and ctx.case("") is None
    with pytest.raises(TypeError):
        ctx.cases["c3"] = firm.case  # type: ignore[index]
    hash(ctx)  # usable as a cache key


def test_user_name_fallbacks(firm):
    ctx = MappingContext(recipient=firm.anna, users={"u2": firm.max, "u9": User("u9", "  ")})
    assert ctx.user_name("u2") == "Max Weber"
    assert ctx.user_name("u1") == "Dr. Anna Berg"  # the recipient is always known
    assert ctx.user_name("u7") == "Benutzer u7"
    assert ctx.user_name("u9") == "Benutzer u9"


def test_german_date_and_range():
    assert german_date(dt.date(2026, 4, 14)) == "14.04.2026"
    assert german_date(dt.date(26, 1, 2)) == "02.01.0026"
    check_date(dt.date(1900, 1, 1), "x")
    check_date(dt.date(2100, 12, 31), "x")
    with pytest.raises(MappingError, match="Die Frist 01.01.2101 liegt außerhalb"):
        check_date(dt.date(2101, 1, 1), "Die Frist")
