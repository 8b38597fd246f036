"""Series and the Graph backend: refused with a German reason until Graph's recurrence is
mapped, never written as a single event."""

from __future__ import annotations

import datetime as dt

import pytest

from tsl_exchange_plugin.graph import wire
from tsl_exchange_plugin.mapping.recurrence import map_appointment_series
from tsl_hostapi.types import Appointment, Recurrence


def test_a_series_is_refused_for_graph_and_a_single_appointment_is_not(ctx):
    appt = Appointment(
        id="g1",
        subject="Kanzleibesprechung",
        start=dt.datetime(2026, 1, 5, 9),
        end=dt.datetime(2026, 1, 5, 10),
        participant_ids=("u1",),
        recurrence=Recurrence("weekly", weekdays=(0,)),
    )
    with pytest.raises(ValueError, match="Serientermine werden über Microsoft Graph noch nicht übertragen"):
        wire.fields(map_appointment_series(appt, ctx))
    single = map_appointment_series(Appointment(**{**appt.__dict__, "recurrence": None}), ctx)
    assert wire.fields(single)["subject"] == "Kanzleibesprechung"
