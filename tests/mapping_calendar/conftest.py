"""Shared sample firm for the calendar mapping tests: two lawyers, one clerk, one case."""

from __future__ import annotations

import pytest

from tsl_exchange_plugin.mapping.context import MappingContext
from tsl_hostapi.types import Case, User

ANNA = User("u1", "Dr. Anna Berg", "anna.berg@kanzlei.example")
MAX = User("u2", "Max Weber", "max.weber@kanzlei.example")
JULIA = User("u3", "Julia Özdemir", "julia.oezdemir@kanzlei.example", role="Fachangestellte")
CASE = Case("c1", "123/26", "Müller ./. Schmidt wegen Forderung", lawyer_id="u1", clerk_id="u3")


def make_ctx(**overrides) -> MappingContext:
    values = dict(
        recipient=ANNA,
        cases={CASE.id: CASE},
        users={u.id: u for u in (ANNA, MAX, JULIA)},
    )
    values.update(overrides)
    return MappingContext(**values)


@pytest.fixture
def ctx() -> MappingContext:
    return make_ctx()


@pytest.fixture
def ctx_factory():
    return make_ctx


@pytest.fixture
def firm():
    """The sample users and case (test modules cannot import conftest under importlib mode)."""

    class Firm:
        anna = ANNA
        max = MAX
        julia = JULIA
        case = CASE

    return Firm
