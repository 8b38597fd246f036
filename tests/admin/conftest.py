"""Fixtures for the administration tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tsl_exchange_plugin.testing import wait_for as shared_wait_for


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """Poll a predicate with a deadline (never sleep for luck)."""
    return shared_wait_for
