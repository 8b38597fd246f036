"""Queue payloads: the record as it was committed, plus the context the mapping needs.

The snapshot is taken at enqueue so that a worker (maybe in another process)
needs nothing from the host to push it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tsl_hostapi import serialize
from tsl_hostapi.types import Appointment, Case, Contact, Deadline, Record, Reminder, User

RECORD_TYPES: dict[str, type] = {
    "contact": Contact,
    "appointment": Appointment,
    "deadline": Deadline,
    "reminder": Reminder,
    "case": Case,
}

ITEM_CLASS_BY_KIND = {
    "contact": "contact",
    "appointment": "calendar",
    "deadline": "calendar",
    "reminder": "task",
}


class SnapshotError(ValueError):
    """A queued payload cannot be read back (corrupt or from an unknown version)."""


@dataclass(frozen=True)
class Snapshot:
    kind: str
    record: Record
    case: Case | None = None
    users: dict[str, User] = field(default_factory=dict)  # names of people the item mentions


def dump(snapshot: Snapshot) -> str:
    data: dict[str, Any] = {
        "v": 1,
        "kind": snapshot.kind,
        "record": serialize.to_data(snapshot.record),
    }
    if snapshot.case is not None:
        data["case"] = serialize.to_data(snapshot.case)
    if snapshot.users:
        data["users"] = {uid: serialize.to_data(u) for uid, u in snapshot.users.items()}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def load(payload: str) -> Snapshot:
    try:
        data = json.loads(payload)
        kind = data["kind"]
        cls = RECORD_TYPES[kind]
        record = serialize.from_data(cls, data["record"])
        case = serialize.from_data(Case, data["case"]) if data.get("case") else None
        users = {uid: serialize.from_data(User, u) for uid, u in (data.get("users") or {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"Gespeicherter Datensatz in der Warteschlange ist nicht lesbar: {exc}") from exc
    return Snapshot(kind=kind, record=record, case=case, users=users)
