"""Helpers for the administration tests (issue 7): tabs, buttons and actions through the host."""

from __future__ import annotations

import time
from collections.abc import Callable

from tsl_hostapi.types import SettingsContext

from tsl_exchange_plugin import PLUGIN_ID

USER_TAB = f"{PLUGIN_ID}.user"
INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
TEST_ACTION = f"{PLUGIN_ID}.test_connection"
RETRY_ACTION = f"{PLUGIN_ID}.retry_now"
CLEANUP_ACTION = f"{PLUGIN_ID}.cleanup"
SET_SYNC = f"{PLUGIN_ID}.set_sync"
REMOVE_SYNC = f"{PLUGIN_ID}.remove_sync"
IFACE = SettingsContext("interfaces")


def user_ctx(user_id: str) -> SettingsContext:
    return SettingsContext("user", user_id)


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Poll with a deadline (never sleep for luck)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
