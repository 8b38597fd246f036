"""Who receives which record.

Contacts go to the users who subscribed to them (contact file › Sync tab, or the
bulk menu actions); the subscription list lives in the host's settings store so
that every host instance sees the same. Appointments go to their participants,
deadlines and reminders to the users responsible for them. In every case only
active users with Exchange Sync enabled receive anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from tsl_hostapi.types import Appointment, Contact, Deadline, Record, Reminder, SettingsStore

from .. import PLUGIN_ID

NAMESPACE = f"{PLUGIN_ID}.subscriptions"


def subscribers(settings: SettingsStore, contact_id: str) -> tuple[str, ...]:
    raw = settings.get(NAMESPACE, contact_id, [])
    if not isinstance(raw, list):
        return ()
    return tuple(str(u) for u in raw)


def set_subscribers(settings: SettingsStore, contact_id: str, user_ids: Iterable[str]) -> tuple[str, ...]:
    ids = tuple(sorted(set(user_ids)))
    settings.set_many(NAMESPACE, {contact_id: list(ids) if ids else None})
    return ids


def plan_subscriptions(
    settings: SettingsStore,
    contact_ids: Iterable[str],
    *,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """What adding/removing users on these contacts would change, without writing:
    contact id -> (before, after) for the contacts whose list changes.

    Reads only the contacts that have a list at all (one ``keys`` query first), so a
    selection of thousands of never-subscribed contacts costs one query, not thousands."""
    add, remove = set(add), set(remove)
    listed = set(settings.keys(NAMESPACE))
    changed: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for cid in dict.fromkeys(contact_ids):
        before = subscribers(settings, cid) if cid in listed else ()
        after = tuple(sorted((set(before) | add) - remove))
        if after != before:
            changed[cid] = (before, after)
    return changed


def write_subscriptions(
    settings: SettingsStore,
    changed: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
    *,
    undo: bool = False,
) -> None:
    """Write the ``after`` lists of a plan in one transaction (``undo``: the ``before`` lists)."""
    pick = 0 if undo else 1
    updates = {cid: (list(pair[pick]) if pair[pick] else None) for cid, pair in changed.items()}
    if updates:
        settings.set_many(NAMESPACE, updates)


def intended_recipients(settings: SettingsStore, record: Record) -> tuple[str, ...]:
    """Users the record concerns, before filtering by account state."""
    if isinstance(record, Contact):
        return subscribers(settings, record.id)
    if isinstance(record, Appointment):
        return tuple(dict.fromkeys(record.participant_ids))
    if isinstance(record, (Deadline, Reminder)):
        return tuple(dict.fromkeys(record.responsible_ids))
    return ()
