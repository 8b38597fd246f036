"""Retry delays for the worker: exponential back-off with full jitter.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the
retries of many mailboxes that failed at the same moment (a server restart, a
throttling burst), so they do not come back in lock-step. A delay the server asks
for (EWS ``BackOffMilliseconds``, HTTP ``Retry-After``) is a floor: retrying earlier
only earns another refusal and, with some servers, a longer penalty.
"""

from __future__ import annotations

import math
import random
from typing import Protocol


class _Uniform(Protocol):
    def random(self) -> float: ...


def retry_delay(
    attempts: int,
    *,
    base: float = 2.0,
    cap: float = 900.0,
    server_hint: float | None = None,
    rng: _Uniform = random,  # the module satisfies the protocol
) -> float:
    """Seconds to wait before the next try after ``attempts`` failed tries (1 = the first failure).

    The ceiling is ``base * 2 ** (attempts - 1)`` capped at ``cap``; the delay is a
    uniform draw in ``[0, ceiling]``. ``server_hint`` (seconds) is honoured as the
    minimum, also above ``cap``, because the server decides when it accepts work again.
    A missing, negative or non-finite hint is ignored.
    """
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    attempts = max(1, attempts)
    # Past 2**60 every realistic cap is reached; stop there so huge attempt counts
    # cannot overflow the float arithmetic.
    exponent = min(attempts - 1, 60)
    ceiling = min(cap, base * (2.0**exponent))
    delay = rng.random() * ceiling
    if server_hint is not None and math.isfinite(server_hint) and server_hint > 0:
        delay = max(delay, float(server_hint))
    return delay


def pause_delay(
    failures: int,
    *,
    base: float = 1.0,
    cap: float = 8.0,
    rng: _Uniform = random,
) -> float:
    """How long a server rests after ``failures`` transport failures in a row (1 = the first).

    Exponential with "equal" jitter: a uniform draw in ``[ceiling / 2, ceiling]``. Unlike a
    job's full jitter, the pause never shrinks to nothing, so an unreachable server sees at
    most one probe per step; the jitter still spreads several processes apart. The cap is
    low on purpose: it bounds how long the queue waits after the server is back, and one
    probe per ``cap`` seconds costs an unreachable server nothing.
    """
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    exponent = min(max(1, failures) - 1, 60)
    ceiling = min(cap, base * (2.0**exponent))
    return ceiling / 2 + rng.random() * ceiling / 2
