"""User Editor › Exchange: the user's own reminder lead times (empty = the firm's default)."""

from __future__ import annotations

from tsl_exchange_plugin import PLUGIN_ID
from tsl_hostapi.types import SettingsContext

USER_TAB = f"{PLUGIN_ID}.user"


def _frist_reminders(k, user) -> set[str]:
    return {
        str(i.get("reminder_minutes_before_start"))
        for i in k.items(user, "calendar")
        if str(i.get("subject", "")).startswith("Frist:")
    }


def test_own_deadline_lead_time_repushes_and_bad_values_are_refused(kanzlei):
    k = kanzlei
    lawyer = next(u for u in k.lawyers if _frist_reminders(k, u))
    assert _frist_reminders(k, lawyer) == {"1440"}  # the firm's default: one day
    ctx = SettingsContext("user", lawyer.id)
    bad = k.host.save_tab(lawyer, "user", USER_TAB, ctx, {"deadline_reminder_minutes": "einen Tag"})
    assert not bad.ok and [e.field for e in bad.errors] == ["deadline_reminder_minutes"]
    assert k.host.save_tab(lawyer, "user", USER_TAB, ctx, {"deadline_reminder_minutes": "2880"}).ok
    k.drain()
    assert _frist_reminders(k, lawyer) == {"2880"}
    shown = k.host.open_tab(lawyer, "user", USER_TAB, ctx).values.values
    assert shown["deadline_reminder_minutes"] == 2880
    # Emptying the field goes back to the firm's default.
    assert k.host.save_tab(lawyer, "user", USER_TAB, ctx, {"deadline_reminder_minutes": ""}).ok
    k.drain()
    assert _frist_reminders(k, lawyer) == {"1440"}
