"""Fixtures for the calendar and task end-to-end proofs.

Everything goes the real way: reference host -> hooks -> queue -> worker -> unmodified
exchangelib over HTTP -> EWS sandbox, and is read back with a second, independent
exchangelib account, as a phone or Outlook would read the mailbox.

``cal``: the ``kanzlei`` firm plus a fourth lawyer with a mailbox of their own, so that
each of the four zones has one mailbox (``cal.by_zone``).

``anycal``: the same, once with the lawyers on EWS and once on Microsoft Graph (the Graph
sandbox over the same store). Over Graph the mailboxes are read back as a phone app on
Microsoft 365 would: ``calendarView`` over plain HTTP with its own app token (``cal.graph_get``).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tsl_exchange_plugin.backends.ews.convert import RECORD_ID_FIELD, register_record_id_property
from tsl_exchange_plugin.backends.graph.wire import TODO_LIST_NAME
from tsl_exchange_plugin.sandbox.graph.convert import rest_id
from tsl_exchange_plugin.sandbox.graph.testing import (  # noqa: F401 - the fixture
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    graph_sandbox,
)
from tsl_exchange_plugin.sandbox.testing import exchangelib_account
from tsl_exchange_plugin.testing import Kanzlei, make_kanzlei
from tsl_hostapi.types import User

ZONES = ("Europe/Berlin", "Europe/Vienna", "Europe/Zurich", "UTC")
FOURTH_MAILBOX = ("dave@kanzlei.test", "Dave-Sandbox-4!")
# What a reader asks Graph to show times in (Prefer: outlook.timezone), per reader's zone.
WINDOWS = {
    "Europe/Berlin": "W. Europe Standard Time",
    "Europe/Vienna": "W. Europe Standard Time",
    "Europe/Zurich": "W. Europe Standard Time",
    "UTC": "UTC",
}
RECORD_ID = "String {00020329-0000-0000-C000-000000000046} Name tslRecordId"


@dataclass
class Cal:
    k: Kanzlei
    by_zone: dict[str, User] = field(default_factory=dict)  # zone -> the user living in it
    _accounts: dict[tuple[str, str], Any] = field(default_factory=dict)
    backend: str = "ews"
    _http: Any = None

    # ------------------------------------------------------------------ Graph, as a phone app
    def graph_client(self) -> Any:
        """Plain HTTP with an app token of its own from the sandbox's token endpoint."""
        import ssl

        import httpx

        if self._http is None:
            gs = self.k.graph
            verify = ssl.create_default_context(cafile=gs.cert_pem_path)
            form = {
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scope": "https://graph.microsoft.com/.default",
            }
            token = httpx.post(f"{gs.url}/{TENANT}/oauth2/v2.0/token", data=form, verify=verify)
            token.raise_for_status()
            self._http = httpx.Client(
                base_url=gs.graph_url,
                verify=verify,
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                timeout=30,
            )
        return self._http

    def graph_get(self, user: User, path: str, params: dict | None = None, zone: str = "UTC") -> list[dict]:
        """Every item of a Graph collection below the user's mailbox, pages followed, with
        times shown in ``zone``."""
        client = self.graph_client()
        headers = {"Prefer": f'outlook.timezone="{WINDOWS[zone]}"'}
        resp = client.get(f"/users/{self.k.mailbox_of[user.id]}{path}", params=params, headers=headers)
        out = []
        while True:
            assert resp.status_code == 200, resp.text
            body = resp.json()
            out += body["value"]
            if not body.get("@odata.nextLink"):
                return out
            resp = client.get(body["@odata.nextLink"], headers=headers)

    def graph_key_filter(self, key: str) -> str:
        return f"singleValueExtendedProperties/Any(ep: ep/id eq '{RECORD_ID}' and ep/value eq '{key}')"

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

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
        """Our items in one folder read back through the user's protocol, as a phone would read
        them: record key -> items (all copies). Over EWS exchangelib's items; over Graph the
        calendarView and the To Do tasks, shown as ``GraphSeen`` (exchangelib's field names)."""
        if self.backend == "graph":
            return self._graph_read(user, folder, dates="is_all_day" in fields)
        return self.read_ews(user, folder, *fields)

    def read_ews(self, user: User, folder: str, *fields: str) -> dict[str, list[Any]]:
        """Our items read back with exchangelib whatever the backend (how Outlook on EWS sees
        items Graph wrote): record key -> items (all copies)."""
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

    def _graph_read(self, user: User, folder: str, *, dates: bool) -> dict[str, list[Any]]:
        zone = self.zone_of(user)
        tz = zoneinfo.ZoneInfo(zone)
        out: dict[str, list[Any]] = {}
        if folder == "tasks":
            for task in self.todo_tasks(user):
                out.setdefault(task["key"], []).append(GraphSeen.of_task(task["task"], tz))
            return out
        window = {
            "startDateTime": GRAPH_WINDOW[0],
            "endDateTime": GRAPH_WINDOW[1],
            "$expand": f"singleValueExtendedProperties($filter=id eq '{RECORD_ID}')",
            "$top": "200",
        }
        for ev in self.graph_get(user, "/calendarView", window, zone):
            key = next((p["value"] for p in ev.get("singleValueExtendedProperties") or []), "")
            if key:
                out.setdefault(key, []).append(GraphSeen.of_event(ev, tz, dates=dates))
        return out

    def todo_tasks(self, user: User, zone: str = "UTC") -> list[dict[str, Any]]:
        """Our Wiedervorlagen in the user's To Do list: {"key", "task"} (key: the linked resource's
        externalId, which a To Do task carries instead of the extended property)."""
        lists = self.graph_get(user, "/todo/lists")
        out = []
        for lst in lists:
            if lst["displayName"] != TODO_LIST_NAME:
                continue
            path = f"/todo/lists/{lst['id']}/tasks"
            for task in self.graph_get(user, path, {"$expand": "linkedResources"}, zone):
                key = next((str(r.get("externalId") or "") for r in task.get("linkedResources") or []), "")
                if key:
                    out.append({"key": key, "task": task})
        return out

    def items(self, user: User, folder: str) -> list[dict[str, Any]]:
        """Every stored item of the folder the user's backend writes to (over Graph, Wiedervorlagen:
        our To Do list)."""
        if folder == "tasks" and self.backend == "graph":
            mb = self.k.mailbox_of[user.id]
            engine = self.k.server.engine
            lists = [f["id"] for f in engine.list_folders(mb) if f["name"] == TODO_LIST_NAME]
            return [i for f in lists for i in engine.list_items(mb, f)]
        return self.k.items(user, folder)

    def all_ours(self, user: User, folder: str) -> list[tuple[str, dict[str, Any]]]:
        """(record key, stored item) of each of our items in the folder the backend writes to."""
        if folder == "tasks" and self.backend == "graph":
            keys = {t["task"]["id"]: t["key"] for t in self.todo_tasks(user)}
            return [
                (keys[rest_id(i["item_id"])], i)
                for i in self.items(user, folder)
                if rest_id(i["item_id"]) in keys
            ]
        return [(i["extended_properties"]["tslRecordId"], i) for i in self.k.ours_any(user, folder)]

    def ours(self, user: User, key: str, folder: str = "contacts") -> list[dict[str, Any]]:
        """Our stored items with ``key`` in the folder the user's backend writes to (sandbox view).
        Over Graph a Wiedervorlage is a task in our To Do list, found by its linked resource."""
        if folder == "tasks" and self.backend == "graph":
            return [i for k, i in self.all_ours(user, folder) if k == key]
        return self.k.ours(user, key, folder)

    def one(self, user: User, key: str, folder: str = "calendar") -> dict[str, Any]:
        """The single stored item with ``key`` (sandbox view); fails on none or duplicates."""
        found = self.ours(user, key, folder)
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


# The calendarView window the Graph reader asks for: every date the scenarios use.
GRAPH_WINDOW = ("1899-12-30T00:00:00Z", "2101-01-02T00:00:00Z")
GRAPH_STATUS = {"notStarted": "NotStarted", "inProgress": "InProgress", "completed": "Completed"}


@dataclass
class GraphSeen:
    """An item as a Graph client sees it, under exchangelib's field names so that one scenario
    reads both protocols. All-day items: dates, the end inclusive (as exchangelib shows them);
    timed ones: aware datetimes. Tasks: the To Do fields (To Do has no percentage)."""

    start: Any = None
    end: Any = None
    is_all_day: bool | None = None
    subject: str = ""
    reminder_is_set: bool | None = None
    reminder_minutes_before_start: int | None = None
    status: str | None = None
    is_complete: bool | None = None
    due_date: dt.date | None = None
    reminder_due_by: dt.datetime | None = None
    id: str = ""
    start_zone: str = ""  # the zone the event was written in (originalStartTimeZone)

    @classmethod
    def of_event(cls, ev: dict[str, Any], tz: zoneinfo.ZoneInfo, *, dates: bool = True) -> GraphSeen:
        """``dates``: all-day items as dates (exchangelib does so when ``is_all_day`` is read);
        else every start and end as an instant: a timed event's in the reader's zone, an all-day
        event's midnights in the zone it was written in (Graph shows its dates in any zone)."""
        if ev["isAllDay"] and dates:
            start: Any = dt.date.fromisoformat(ev["start"]["dateTime"][:10])
            end: Any = dt.date.fromisoformat(ev["end"]["dateTime"][:10]) - dt.timedelta(days=1)
        elif ev["isAllDay"]:
            from exchangelib import EWSTimeZone

            own = zoneinfo.ZoneInfo(EWSTimeZone.from_ms_id(ev["originalStartTimeZone"]).key)
            start = (
                dt.datetime.fromisoformat(ev["start"]["dateTime"][:19]).replace(tzinfo=own).astimezone(dt.UTC)
            )
            end = dt.datetime.fromisoformat(ev["end"]["dateTime"][:19]).replace(tzinfo=own).astimezone(dt.UTC)
        else:
            # As instants in UTC (as exchangelib gives them): arithmetic across a switch is real time.
            start = (
                dt.datetime.fromisoformat(ev["start"]["dateTime"][:19]).replace(tzinfo=tz).astimezone(dt.UTC)
            )
            end = dt.datetime.fromisoformat(ev["end"]["dateTime"][:19]).replace(tzinfo=tz).astimezone(dt.UTC)
        return cls(
            start=start,
            end=end,
            is_all_day=bool(ev["isAllDay"]),
            subject=str(ev.get("subject") or ""),
            reminder_is_set=ev.get("isReminderOn"),
            reminder_minutes_before_start=ev.get("reminderMinutesBeforeStart"),
            id=str(ev["id"]),
            start_zone=str(ev.get("originalStartTimeZone") or ""),
        )

    @classmethod
    def of_task(cls, task: dict[str, Any], tz: zoneinfo.ZoneInfo) -> GraphSeen:
        due = task.get("dueDateTime")
        remind = task.get("reminderDateTime")
        status = GRAPH_STATUS.get(str(task.get("status")), str(task.get("status")))
        return cls(
            subject=str(task.get("title") or ""),
            status=status,
            is_complete=status == "Completed",
            reminder_is_set=bool(task.get("isReminderOn")),
            due_date=dt.date.fromisoformat(due["dateTime"][:10]) if due else None,
            reminder_due_by=_graph_instant(remind) if remind else None,
            id=str(task["id"]),
        )


def _graph_instant(value: dict[str, Any]) -> dt.datetime:
    """A dateTimeTimeZone as an aware instant (the reader asks for UTC or a Windows zone name)."""
    naive = dt.datetime.fromisoformat(value["dateTime"][:19])
    windows = {v: k for k, v in WINDOWS.items()}
    return naive.replace(tzinfo=zoneinfo.ZoneInfo(windows.get(value.get("timeZone"), "UTC")))


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


@pytest.fixture(params=["ews", "graph"])
def anycal(request, tmp_path, licence_key) -> Iterator[Cal]:
    """``cal`` with the four lawyers on EWS, and again on Microsoft Graph."""
    if request.param == "ews":
        yield request.getfixturevalue("cal")
        return
    sandbox = request.getfixturevalue("sandbox")
    gs = request.getfixturevalue("graph_sandbox")
    k = make_kanzlei(tmp_path, sandbox, gs, licence_key, backend="graph")
    c = None
    try:
        users = list(k.lawyers)
        fourth = next(u for u in k.firm.users if u.role.startswith("Rechtsanw") and u not in users)
        email, password = FOURTH_MAILBOX
        sandbox.add_mailbox(email, password)
        k.mailbox_of[fourth.id] = email
        users.append(fourth)
        c = Cal(k, dict(zip(ZONES, users, strict=True)), backend="graph")
        # A scenario's change to a lawyer's Exchange tab keeps the mailbox on Microsoft 365.
        k.configure = lambda user, password=None, **values: k.configure_graph(user, **values)  # type: ignore[method-assign]
        for zone, user in c.by_zone.items():
            k.configure_graph(user, timezone=zone)
        k.drain()
        yield c
    finally:
        if c is not None:
            c.close()
        k.host.close()
