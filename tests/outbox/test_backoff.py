"""retry_delay: exponential ceiling, full jitter, cap, server hint as the floor."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsl_exchange_plugin.outbox.backoff import retry_delay


class Fixed:
    """An rng whose draw is known, so the ceiling can be read off exactly."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_ceiling_doubles_per_attempt_from_base():
    top = Fixed(1.0)
    assert [retry_delay(n, rng=top) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert retry_delay(3, base=0.5, rng=top) == 2.0


def test_full_jitter_spans_zero_to_ceiling():
    assert retry_delay(4, rng=Fixed(0.0)) == 0.0
    assert retry_delay(4, rng=Fixed(0.25)) == pytest.approx(4.0)
    rng = random.Random(7)
    draws = [retry_delay(5, rng=rng) for _ in range(2000)]
    assert min(draws) >= 0.0 and max(draws) <= 32.0
    # Spread over the range, not clustered at one end.
    assert min(draws) < 3.2 and max(draws) > 28.8
    assert 12.0 < sum(draws) / len(draws) < 20.0


def test_cap_limits_the_ceiling_and_huge_attempts_do_not_overflow():
    assert retry_delay(20, rng=Fixed(1.0)) == 900.0
    assert retry_delay(10_000, rng=Fixed(1.0), cap=60.0) == 60.0
    assert retry_delay(10**9, rng=Fixed(0.5)) == 450.0


def test_first_attempt_and_nonsense_counts():
    assert retry_delay(0, rng=Fixed(1.0)) == 2.0
    assert retry_delay(-3, rng=Fixed(1.0)) == 2.0
    with pytest.raises(ValueError):
        retry_delay(1, base=-1.0)


def test_server_hint_is_the_minimum():
    assert retry_delay(1, rng=Fixed(1.0), server_hint=30.0) == 30.0  # hint above our ceiling
    assert retry_delay(8, rng=Fixed(1.0), server_hint=30.0) == 256.0  # our delay already longer
    assert retry_delay(1, rng=Fixed(0.0), server_hint=5.0) == 5.0  # jitter never undercuts it
    assert retry_delay(20, rng=Fixed(1.0), server_hint=3600.0) == 3600.0  # honoured above the cap


@pytest.mark.parametrize("hint", [None, 0.0, -5.0, math.nan, math.inf])
def test_unusable_hints_are_ignored(hint):
    assert retry_delay(3, rng=Fixed(0.5), server_hint=hint) == 4.0


@given(
    attempts=st.integers(min_value=-5, max_value=5000),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=10_000),
    hint=st.one_of(st.none(), st.floats(min_value=0, max_value=10_000)),
    seed=st.integers(0, 2**32),
)
def test_delay_is_bounded(attempts, base, cap, hint, seed):
    delay = retry_delay(attempts, base=base, cap=cap, server_hint=hint, rng=random.Random(seed))
    assert 0.0 <= delay <= max(cap, hint or 0.0)
    if hint:
        assert delay >= hint
