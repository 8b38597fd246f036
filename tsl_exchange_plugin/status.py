"""The mailbox status shown on the Interfaces tab and by ``tsl-exchange status``."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from tsl_hostapi.types import Host

if TYPE_CHECKING:
    from .runtime import SyncRuntime

STATE_LABELS = {
    "ok": "in Ordnung",
    "never": "noch nie übertragen",
    "parked": "angehalten",
    "error": "Fehler, wird wiederholt",
    "disabled": "nicht aktiviert",
}


@dataclass(frozen=True)
class MailboxRow:
    user_id: str
    user_name: str
    state: str
    state_label: str
    pending: int
    failed: int
    last_success: str
    last_error: str

    def as_dict(self) -> dict:
        return asdict(self)


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%d.%m.%Y %H:%M:%S")


def mailbox_rows(host: Host, runtime: SyncRuntime) -> list[MailboxRow]:
    states = {s.mailbox: s for s in runtime.outbox.mailbox_states()}
    enabled = runtime.enabled_users()
    rows = []
    for user in host.list_users():
        s = states.get(user.id)
        if user.id not in enabled and s is None:
            continue
        if user.id not in enabled:
            state = "disabled"
        elif s is None:
            state = "never"
        elif s.parked:
            state = "parked"
        elif s.last_error and (s.last_error_at or 0) >= (s.last_success_at or 0):
            state = "error"
        elif s.last_success_at:
            state = "ok"
        else:
            state = "never"
        rows.append(
            MailboxRow(
                user_id=user.id,
                user_name=user.name,
                state=state,
                state_label=STATE_LABELS[state],
                pending=s.pending if s else 0,
                failed=s.failed if s else 0,
                last_success=_when(s.last_success_at if s else None),
                last_error=(s.parked_reason or s.last_error) if s else "",
            )
        )
    return rows
