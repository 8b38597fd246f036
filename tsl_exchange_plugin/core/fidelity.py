"""The server fidelity probe: does this Exchange server keep what the plugin writes?

Some EWS servers that are not Microsoft's answer NoError to every write and silently drop
fields (seen: reminder times of tasks never stored, a reminder switched off on update kept).
Trusting NoError, the status view said "in Ordnung" while lawyers got no reminders. So
"Testen" and every reconcile sweep write probe items of each kind with the fields we rely on
(reminders on and off, due dates, all-day start/end, categories, our extended property),
change them, read them back and delete them. A field the server ignores is named in German
(„Server übernimmt die Erinnerungszeit nicht“), stored per server, and shown in the test
result and the status view. Where a workaround exists the push uses it: a field kept at
create but ignored on update is written by recreating the item (``RecreatingSession``);
a field ignored even at create cannot be worked around and is reported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .. import PLUGIN_ID
from ..backends.base import (
    ExchangeError,
    ItemRef,
    MailboxAccount,
    OutcomeUnknown,
    PerItem,
    Written,
)
from ..mapping.common import compose_body, merge_body
from ..mapping.items import CalendarEntry, ExchangeItem, TaskEntry

if TYPE_CHECKING:
    from .parts import CoreParts

RESULT_KEY = "fidelity:{}"
PROBE_CATEGORY = "timeSensor Test"

FIELD_WORDS = {
    "reminder_due_by": "die Erinnerungszeit",
    "reminder_minutes_before_start": "die Vorlaufzeit der Erinnerung",
    "reminder_is_set": "das Ein- und Ausschalten der Erinnerung",
    "due_date": "das Fälligkeitsdatum",
    "start_date": "das Beginndatum",
    "start": "den Beginn ganztägiger Einträge",
    "end": "das Ende ganztägiger Einträge",
    "is_all_day": "die Kennzeichnung „ganztägig“",
    "categories": "die Kategorien",
    "status": "den Erledigt-Status",
    "percent_complete": "den Erledigt-Anteil",
    "subject": "den Betreff",
    "body": "den Text",
    "legacy_free_busy_status": "die Frei/Gebucht-Anzeige",
    "record_key": "die Kennung der Einträge (erweiterte Eigenschaft)",
}


@dataclass(frozen=True)
class FidelityResult:
    server: str  # host:port of the EWS endpoint
    at: float
    ignored_on_create: tuple[str, ...] = ()  # "task.reminder_due_by", ...
    ignored_on_update: tuple[str, ...] = ()  # kept at create, dropped by an update
    error: str = ""  # the probe itself failed (German)

    @property
    def ok(self) -> bool:
        return not (self.ignored_on_create or self.ignored_on_update or self.error)

    @property
    def recreate_classes(self) -> frozenset[str]:
        """Item classes whose updates must recreate the item (the workaround)."""
        return frozenset(f.split(".", 1)[0] for f in self.ignored_on_update)

    def messages(self) -> list[str]:
        out = []
        for entry in self.ignored_on_create:
            out.append(
                f"Server übernimmt {_word(entry)} nicht{_where(entry)}; betroffene Einträge sind unvollständig."
            )
        for entry in self.ignored_on_update:
            out.append(
                f"Server übernimmt {_word(entry)} beim Ändern nicht{_where(entry)}; "
                "geänderte Einträge werden deshalb neu angelegt."
            )
        if self.error:
            out.append(self.error)
        return list(dict.fromkeys(out))

    def summary(self) -> str:
        if self.ok:
            return "Der Server übernimmt alle Felder, die Exchange-Sync schreibt."
        return " ".join(self.messages())


def _word(entry: str) -> str:
    return FIELD_WORDS.get(entry.split(".", 1)[1], entry)


def _where(entry: str) -> str:
    return {"task": " (Aufgaben/Wiedervorlagen)", "calendar": " (Kalender/Fristen)"}.get(
        entry.split(".", 1)[0], ""
    )


# --------------------------------------------------------------------------- the probe


def _probe_items(tag: str, tz: str) -> tuple[list[ExchangeItem], list[ExchangeItem]]:
    """(what to create, what to change it into): each field we rely on, set and cleared."""
    zone = ZoneInfo(tz)
    day = dt.date.today() + dt.timedelta(days=30)
    body = compose_body(["Verbindungstest von timeSensor LEGAL; wird sofort wieder gelöscht."])
    cats = (PROBE_CATEGORY,)
    at8 = dt.datetime.combine(day, dt.time(8, 0), zone)
    task_1 = TaskEntry(f"probe:{tag}-t1", "timeSensor Test (Aufgabe)", day, day, body, cats, False, at8, tz)
    task_2 = TaskEntry(f"probe:{tag}-t2", "timeSensor Test (Aufgabe)", day, None, body, cats, False, None, tz)
    frist_1 = CalendarEntry(
        f"probe:{tag}-c1",
        "timeSensor Test (Frist)",
        tz,
        None,
        None,
        True,
        day,
        day,
        "",
        body,
        cats,
        "Free",
        600,
    )
    frist_2 = CalendarEntry(
        f"probe:{tag}-c2",
        "timeSensor Test (Frist)",
        tz,
        None,
        None,
        True,
        day,
        day,
        "",
        body,
        cats,
        "Free",
        None,
    )
    created: list[ExchangeItem] = [task_1, task_2, frist_1, frist_2]
    later = day + dt.timedelta(days=1)
    changed: list[ExchangeItem] = [
        dataclasses.replace(task_1, reminder_at=None, completed=True),  # a done Wiedervorlage
        dataclasses.replace(task_2, due_date=later, reminder_at=dt.datetime.combine(later, dt.time(9), zone)),
        dataclasses.replace(frist_1, reminder_minutes=None, start_date=later, end_date=later),  # done Frist
        dataclasses.replace(frist_2, reminder_minutes=1440),
    ]
    return created, changed


def _ignored(session: Any, items: Sequence[ExchangeItem], refs: Sequence[ItemRef]) -> set[str]:
    out: set[str] = set()
    for item, ref in zip(items, refs, strict=True):
        (actual,) = session.read_owned(item.item_class, [ref])
        if isinstance(actual, ExchangeError):
            raise actual
        expected = session.owned_values(item)
        for name, want in expected.items():
            if actual.get(name) != want:
                out.add(f"{item.item_class}.{name}")
    return out


def probe(session: Any, server: str, timezone: str = "Europe/Berlin") -> FidelityResult:
    """Write, change, read back and delete the probe items; raises ExchangeError if the server
    cannot be reached or refuses the probe."""
    created, changed = _probe_items(uuid.uuid4().hex[:12], timezone)
    written = session.create(created)
    refs: list[ItemRef] = []
    try:
        for w in written:
            if not isinstance(w, Written):
                raise w
            refs.append(ItemRef(w.item_id, w.change_key))
        on_create = _ignored(session, created, refs)
        found = session.find_by_keys("task", [created[0].record_key])
        if not found.get(created[0].record_key):
            on_create.add("task.record_key")
        updated = session.update(list(zip(refs, changed, strict=True)))
        new_refs = []
        for u in updated:
            if not isinstance(u, Written):
                raise u
            new_refs.append(ItemRef(u.item_id, u.change_key))
        refs = new_refs
        on_update = _ignored(session, changed, refs) - on_create
    finally:
        if refs:
            session.delete(refs)
    return FidelityResult(server, time.time(), tuple(sorted(on_create)), tuple(sorted(on_update)))


# --------------------------------------------------------------------------- stored per server


def store(runtime: CoreParts, result: FidelityResult) -> None:
    runtime.host.settings.set(PLUGIN_ID, RESULT_KEY.format(result.server), asdict(result))


def stored(runtime: CoreParts, server: str) -> FidelityResult | None:
    raw = runtime.host.settings.get(PLUGIN_ID, RESULT_KEY.format(server))
    if not isinstance(raw, dict):
        return None
    try:
        return FidelityResult(
            raw["server"],
            float(raw["at"]),
            tuple(raw.get("ignored_on_create", ())),
            tuple(raw.get("ignored_on_update", ())),
            str(raw.get("error", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def check_account(runtime: CoreParts, account: MailboxAccount) -> FidelityResult:
    """Probe the server of ``account`` and store the result for it."""
    session = runtime.backend.session(account)
    try:
        result = probe(session, account.server, account.timezone)
    finally:
        session.close()
    store(runtime, result)
    return result


# --------------------------------------------------------------------------- the workaround


class RecreatingSession:
    """A session that writes the updates of the affected item classes as create + delete, for a
    server that keeps a field at create but drops it on update. Everything else passes through.
    The stored probe result is read at each update, so a "Testen" takes effect at once."""

    def __init__(self, inner: Any, runtime: CoreParts, server: str) -> None:
        # Any: whichever backend's session (mailbox and sweep calls), passed through by __getattr__.
        self.inner = inner  # "inner": the worker hands its request guard through to it
        self._runtime = runtime
        self._server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update(self, changes: Sequence[tuple[ItemRef, ExchangeItem]]) -> list[PerItem]:
        result = stored(self._runtime, self._server)
        recreate = result.recreate_classes if result is not None else frozenset()
        if not recreate:
            updated: list[PerItem] = self.inner.update(changes)
            return updated
        results: list[PerItem | None] = [None] * len(changes)
        plain = [(n, c) for n, c in enumerate(changes) if c[1].item_class not in recreate]
        again = [(n, c) for n, c in enumerate(changes) if c[1].item_class in recreate]
        if plain:
            for (n, _), res in zip(plain, self.inner.update([c for _, c in plain]), strict=True):
                results[n] = res
        if again:
            items = self._with_user_notes(again)
            created = self.inner.create(items)
            old = []
            for (n, (ref, _)), res in zip(again, created, strict=True):
                results[n] = res
                if isinstance(res, Written):
                    old.append(ref)
            if old:
                try:
                    self.inner.delete(old)
                except ExchangeError as exc:
                    # The new copies exist; the old ones are surplus the next sweep removes.
                    raise OutcomeUnknown(str(exc)) from None
        return [r if r is not None else ExchangeError("Element wurde nicht verarbeitet.") for r in results]

    def _with_user_notes(self, changes: list[tuple[int, tuple[ItemRef, ExchangeItem]]]) -> list[ExchangeItem]:
        """The new items, each with what the user wrote below the marker in the old one."""
        items = [item for _, (_, item) in changes]
        by_class: dict[str, list[int]] = {}
        for pos, item in enumerate(items):
            by_class.setdefault(item.item_class, []).append(pos)
        for item_class, positions in by_class.items():
            bodies = self.inner.read_bodies(item_class, [changes[p][1][0] for p in positions])
            for pos, body in zip(positions, bodies, strict=True):
                if isinstance(body, str):
                    items[pos] = dataclasses.replace(items[pos], body=merge_body(items[pos].body, body))
        return items


class FidelityBackend:
    """Wraps the backend so that pushes use the workaround for what the probe found."""

    def __init__(self, inner: Any, runtime: CoreParts):
        self._inner = inner
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def session(self, account: MailboxAccount) -> Any:
        return RecreatingSession(self._inner.session(account), self._runtime, account.server)
