"""The sample firm's Serientermine: only when asked for, deterministic, of every kind."""

from __future__ import annotations

import dataclasses

from tsl_hostapi.reference.sample_firm import generate_firm
from tsl_hostapi.serialize import from_json, to_json
from tsl_hostapi.types import Appointment


def test_series_come_only_when_asked_and_change_nothing_else():
    plain = generate_firm(seed=1)
    with_series = generate_firm(seed=1, series=True)
    assert all(a.recurrence is None for a in plain.appointments)
    extra = with_series.appointments[len(plain.appointments) :]
    assert with_series.appointments[: len(plain.appointments)] == plain.appointments
    assert dataclasses.replace(with_series, appointments=plain.appointments) == plain
    assert [a.id for a in extra] == ["S1", "S2", "S3", "S4", "S5", "S6"]
    assert generate_firm(seed=1, series=True) == with_series


def test_the_series_cover_every_kind_and_survive_the_queue_format():
    series = [a for a in generate_firm(seed=1, series=True).appointments if a.recurrence]
    assert {a.recurrence.frequency for a in series} == {"daily", "weekly", "monthly", "yearly"}
    assert any(c.cancelled for a in series for c in a.recurrence.exceptions)
    assert any(c.start for a in series for c in a.recurrence.exceptions)  # a moved occurrence
    assert any(a.all_day for a in series)
    for appt in series:
        assert from_json(Appointment, to_json(appt)) == appt
