"""The licence at run time: seats on save, and a gate that holds all pushing when the licence ends.

``licence.verify`` judges a document; this module asks the host for the current one
(the administrator may replace or remove it while the plugin runs, or it may simply
pass its expiry date) and turns the verdict into what the runtime needs:

- ``gate()`` for the worker: a German reason to hold every push, or None. Held work
  stays queued; a valid licence again resumes it.
- ``seat_problem(user_id, enabled_now)``: refuse switching one more user on when all
  seats are taken.

The verdict is cached for ``ttl`` seconds because the worker asks before every claim.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable

from tsl_hostapi.types import Host, LicenceDecision

from .. import PLUGIN_ID, licence


class LicenceState:
    """The current licence verdict for one host, re-read at most every ``ttl`` seconds."""

    def __init__(self, host: Host, *, ttl: float = 1.0, today: Callable[[], dt.date] = dt.date.today):
        self._host = host
        self._ttl = ttl
        self._today = today
        self._lock = threading.Lock()
        self._cached: tuple[float, LicenceDecision] | None = None

    def decision(self) -> LicenceDecision:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self._ttl:
                return self._cached[1]
        lic = self._host.licence(PLUGIN_ID)
        dev_keys = licence.data_dir_dev_keys(self._host.data_dir(PLUGIN_ID))
        decision, _claims = licence.verify(
            lic.document if lic else None, today=self._today(), dev_keys=dev_keys
        )
        with self._lock:
            self._cached = (time.monotonic(), decision)
        return decision

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def gate(self) -> str | None:
        """For the worker: why every push is held now, or None."""
        decision = self.decision()
        if decision.allowed:
            return None
        return f"Übertragung angehalten: {decision.reason} Die Änderungen bleiben in der Warteschlange."

    def seat_problem(self, user_id: str, enabled_now: Iterable[str]) -> str | None:
        """Why ``user_id`` may not be switched on (all seats taken, or no valid licence), or None."""
        decision = self.decision()
        if not decision.allowed:
            return f"Exchange-Sync kann nicht aktiviert werden: {decision.reason}"
        others = set(enabled_now) - {user_id}
        if decision.seats is not None and len(others) >= decision.seats:
            return (
                f"Alle {decision.seats} lizenzierten Exchange-Plätze sind belegt "
                f"({len(others)} Benutzer haben Exchange-Sync aktiv). Bitte bei einem anderen Benutzer "
                "Exchange-Sync abschalten oder weitere Plätze lizenzieren."
            )
        return None
