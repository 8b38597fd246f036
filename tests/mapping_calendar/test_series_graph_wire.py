"""Series and the Graph wire format: a mapped series goes out as one event with Graph's
patternedRecurrence, whose range starts on the date of the event's start (Graph requires it),
and a single appointment clears any recurrence."""

from __future__ import annotations

import datetime as dt

from tsl_exchange_plugin.backends.graph import wire
from tsl_exchange_plugin.mapping.recurrence import map_appointment_series
from tsl_hostapi.types import Appointment, Recurrence


def test_a_series_goes_out_with_its_recurrence_and_a_single_appointment_without(ctx):
    appt = Appointment(
        id="g1",
        subject="Kanzleibesprechung",
        start=dt.datetime(2026, 1, 4, 9),  # a Sunday: the first Monday is the first occurrence
        end=dt.datetime(2026, 1, 4, 10),
        timezone="Europe/Vienna",
        participant_ids=("u1",),
        recurrence=Recurrence("weekly", weekdays=(0,), until=dt.date(2026, 12, 31)),
    )
    body = wire.fields(map_appointment_series(appt, ctx))
    assert body["start"] == {"dateTime": "2026-01-05T09:00:00", "timeZone": "W. Europe Standard Time"}
    assert body["recurrence"] == {
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "monday"},
        "range": {
            "type": "endDate",
            "startDate": "2026-01-05",
            "endDate": "2026-12-31",
            "recurrenceTimeZone": "W. Europe Standard Time",
        },
    }
    single = map_appointment_series(Appointment(**{**appt.__dict__, "recurrence": None}), ctx)
    assert wire.fields(single)["subject"] == "Kanzleibesprechung"
    assert wire.fields(single)["recurrence"] is None
