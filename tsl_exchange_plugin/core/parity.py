"""The deadline parity report: after each sweep, every open Frist and Vorfrist, host date against mailbox date.

A wrong deadline in a lawyer's calendar is a liability, so the sweep does not only
repair: for every open deadline and pre-deadline it compares the date the host computed
with the date the item shows in each responsible user's mailbox (an all-day item, on its
own local date) and lists every difference with user, case file number and both dates.
A clean report says how many deadlines it verified and when. The report is kept in the
host's settings store, shown in the status view and by ``tsl-exchange status --parity``,
sent as the ``parity_checked`` signal and, when not clean, notified to the administrator.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .. import PLUGIN_ID, signals

if TYPE_CHECKING:
    from .parts import CoreParts

REPORT_KEY = "parity"


@dataclass(frozen=True)
class ParityDiff:
    """One deadline whose date in a mailbox is not the host's."""

    user_id: str
    user_name: str
    record_key: str  # "deadline:4" or "deadline:4#vorfrist1"
    label: str  # "Frist" or "Vorfrist"
    case_number: str  # Aktenzeichen, "" if the deadline has no case
    host_date: str  # ISO date
    mailbox_date: str  # ISO date, "" when the item is missing from the mailbox
    repairing: bool = False  # the sweep queued the correction (it shows after the next sweep)

    def describe(self) -> str:
        az = f"Az. {self.case_number}" if self.case_number else "ohne Akte"
        mailbox = _german(self.mailbox_date) if self.mailbox_date else "fehlt im Postfach"
        fix = " (wird korrigiert)" if self.repairing else " (nicht korrigiert: „nur melden“)"
        return (
            f"{self.user_name}: {self.label} {az} – timeSensor {_german(self.host_date)}, "
            f"Exchange {mailbox}{fix}"
        )


@dataclass(frozen=True)
class ParityReport:
    at: float  # UNIX seconds
    checked: int  # deadline items compared (per responsible user)
    mailboxes: tuple[str, ...] = ()
    diffs: tuple[ParityDiff, ...] = field(default_factory=tuple)

    @property
    def clean(self) -> bool:
        return not self.diffs

    def summary(self) -> str:
        when = dt.datetime.fromtimestamp(self.at).strftime("%d.%m.%Y %H:%M")
        if self.clean:
            return f"Fristenabgleich am {when}: {self.checked} Fristen und Vorfristen geprüft, alle stimmen."
        return (
            f"Fristenabgleich am {when}: {len(self.diffs)} von {self.checked} Fristen und Vorfristen "
            "stimmen im Exchange-Kalender nicht mit timeSensor überein. Bitte prüfen; maßgeblich ist "
            "timeSensor."
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean, "summary": self.summary()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ParityReport:
        diffs = tuple(ParityDiff(**d) for d in raw.get("diffs", ()))
        return cls(float(raw["at"]), int(raw["checked"]), tuple(raw.get("mailboxes", ())), diffs)


def _german(iso: str) -> str:
    try:
        return dt.date.fromisoformat(iso).strftime("%d.%m.%Y")
    except ValueError:
        return iso


def stored(runtime: CoreParts) -> ParityReport | None:
    raw = runtime.host.settings.get(PLUGIN_ID, REPORT_KEY)
    if not isinstance(raw, dict):
        return None
    try:
        return ParityReport.from_dict(raw)
    except (KeyError, TypeError, ValueError):
        return None


def publish(runtime: CoreParts, report: ParityReport) -> None:
    """Keep the report, send the signal, and tell the administrator if a deadline is wrong."""
    runtime.host.settings.set(PLUGIN_ID, REPORT_KEY, report.as_dict())
    signals.parity_checked.send(runtime, report=report)
    if not report.clean:
        lines = [d.describe() for d in report.diffs[:20]]
        more = len(report.diffs) - len(lines)
        if more > 0:
            lines.append(f"… und {more} weitere (tsl-exchange status --parity).")
        runtime.host.notify(
            "Exchange-Sync: " + report.summary() + "\n" + "\n".join(lines),
            level="warning",
        )
