"""Fixtures for the calendar and task end-to-end proofs.

Everything goes the real way: reference host -> hooks -> queue -> worker -> unmodified
exchangelib over HTTP -> EWS sandbox, and is read back with a second, independent
exchangelib account, as a phone or Outlook would read the mailbox.

``cal``: the ``kanzlei`` firm plus a fourth lawyer with a mailbox of their own, so that
each of the four zones the issue names has one mailbox (``cal.by_zone``).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tsl_exchange_plugin.exchange.ews import RECORD_ID_FIELD, register_record_id_property
from tsl_exchange_plugin.sandbox.testing import exchangelib_account
from tsl_exchange_plugin.testing import Kanzlei
from tsl_hostapi.types import User

ZONES = ("Europe/Berlin", "Europe/Vienna", "Europe/Zurich", "UTC")
FOURTH_MAILBOX = ("dave@kanzlei.test", "Dave-Sandbox-4!")


@dataclass
class Cal:
    k: Kanzlei
    by_zone: dict[str, User] = field(default_factory=dict)  # zone -> the user living in it
    _accounts: dict[tuple[str, str], Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ host side
    @property
    def users(self) -> list[User]:
        return list(self.by_zone.values())

    def zone_of(self, user: User) -> str:
        return next(z for z, u in self.by_zone.items() if u.id == user.id)

    def firm(self, **values: Any) -> None:
        """Set firm-wide plugin settings (namespace exchange_sync, key firm)."""
        from tsl_exchange_plugin import PLUGIN_ID

        current = self.k.host.settings.get(PLUGIN_ID, "firm", {}) or {}
        self.k.host.settings.set(PLUGIN_ID, "firm", {**current, **values})

    def failed(self) -> dict[tuple[str, str], str]:
        """(mailbox, record key) -> the German reason, for jobs that failed for good."""
        return {(j.mailbox, j.record_key): j.last_error for j in self.k.runtime.outbox.jobs(status="failed")}

    # ------------------------------------------------------------------ mailbox side
    def account(self, user: User, tz: str | None = None) -> Any:
        """An exchangelib account on the user's mailbox (a second client, like a phone)."""
        email = self.k.mailbox_of[user.id]
        tz = tz or self.zone_of(user)
        key = (email, tz)
        if key not in self._accounts:
            register_record_id_property()
            self._accounts[key] = exchangelib_account(self.k.server, email, auth="basic", tz=tz)
        return self._accounts[key]

    def read(self, user: User, folder: str, *fields: str) -> dict[str, list[Any]]:
        """Our items in one folder read back with exchangelib: record key -> items (all copies)."""
        acc = self.account(user)
        source = {"calendar": acc.calendar, "tasks": acc.tasks}[folder]
        out: dict[str, list[Any]] = {}
        for item in source.all().only(RECORD_ID_FIELD, *fields):
            if isinstance(item, BaseException):
                raise item
            key = getattr(item, RECORD_ID_FIELD, None)
            if key:
                out.setdefault(key, []).append(item)
        return out

    def one(self, user: User, key: str, folder: str = "calendar") -> dict[str, Any]:
        """The single stored item with ``key`` (sandbox view); fails on none or duplicates."""
        found = self.k.ours(user, key, folder)
        assert len(found) == 1, f"{key} in {self.k.mailbox_of[user.id]}: {len(found)} items"
        return found[0]

    def keys(self, user: User, folder: str = "calendar", prefix: str = "") -> list[str]:
        """Record keys of our items in a folder (each copy listed), optionally by prefix."""
        return sorted(
            k
            for i in self.k.ours_any(user, folder)
            if (k := i["extended_properties"]["tslRecordId"]).startswith(prefix)
        )

    def of(self, user: User, record_key: str, folder: str = "calendar") -> list[str]:
        """Keys of the items one record shows in a mailbox: itself and its ``#`` sub-items."""
        return [
            k
            for k in self.keys(user, folder, record_key)
            if k == record_key or k.startswith(record_key + "#")
        ]


def local_midnight_utc(day: dt.date, zone: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(dt.UTC)


def dst_switches(years: Iterable[int], zone: str = "Europe/Berlin") -> list[dt.date]:
    """The days on which ``zone`` changes its UTC offset (computed, not typed in)."""
    tz = zoneinfo.ZoneInfo(zone)
    out = []
    for year in years:
        day = dt.date(year, 1, 1)
        while day.year == year:
            noon_before = dt.datetime.combine(day, dt.time(0), tzinfo=tz).utcoffset()
            end_of_day = dt.datetime.combine(day, dt.time(23, 59), tzinfo=tz).utcoffset()
            if noon_before != end_of_day:
                out.append(day)
            day += dt.timedelta(days=1)
    return out


@pytest.fixture
def cal(kanzlei: Kanzlei) -> Cal:
    k = kanzlei
    users = list(k.lawyers)
    fourth = next(u for u in k.firm.users if u.role.startswith("Rechtsanw") and u not in users)
    email, password = FOURTH_MAILBOX
    k.server.add_mailbox(email, password)
    k.mailbox_of[fourth.id] = email
    k.configure(fourth, password=password)
    users.append(fourth)
    c = Cal(k, dict(zip(ZONES, users, strict=True)))
    for zone, user in c.by_zone.items():
        k.configure(user, timezone=zone)
    k.drain()
    return c
