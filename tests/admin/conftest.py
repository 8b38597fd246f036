"""Fixtures for the administration tests (issue 7)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def _wait_for(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """Poll a predicate with a deadline (never sleep for luck)."""
    return _wait_for
