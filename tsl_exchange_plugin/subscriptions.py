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

from . import PLUGIN_ID

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


def change_subscriptions(
    settings: SettingsStore,
    contact_ids: Iterable[str],
    *,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Add/remove users on many contacts in one write. Returns contact id -> (before, after)
    for the contacts whose list changed."""
    add, remove = set(add), set(remove)
    changed: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    updates: dict[str, list[str] | None] = {}
    for cid in contact_ids:
        before = subscribers(settings, cid)
        after = tuple(sorted((set(before) | add) - remove))
        if after != before:
            changed[cid] = (before, after)
            updates[cid] = list(after) if after else None
    if updates:
        settings.set_many(NAMESPACE, updates)
    return changed


def subscribed_contacts(settings: SettingsStore, user_id: str) -> list[str]:
    return [cid for cid in settings.keys(NAMESPACE) if user_id in subscribers(settings, cid)]


def intended_recipients(settings: SettingsStore, record: Record) -> tuple[str, ...]:
    """Users the record concerns, before filtering by account state."""
    if isinstance(record, Contact):
        return subscribers(settings, record.id)
    if isinstance(record, Appointment):
        return tuple(dict.fromkeys(record.participant_ids))
    if isinstance(record, (Deadline, Reminder)):
        return tuple(dict.fromkeys(record.responsible_ids))
    return ()
