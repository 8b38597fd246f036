"""The firm's settings as the core reads them: where they are stored, where the queue URL may
come from, and the defaults. The settings tab shows these; the core never imports the tab."""

from __future__ import annotations

from typing import Any

FIRM_KEY = "firm"
"""The host settings key (under the plugin's id) holding the firm's settings as one dict."""

QUEUE_URL_ENV = "TSL_EXCHANGE_QUEUE_URL"
"""An operator's queue URL; it wins over the firm setting ``queue_url``."""

FIRM_DEFAULTS: dict[str, Any] = {
    "target": "default",
    "subfolder": "",
    "done_deadline": "mark",
    "appointment_reminder_minutes": 15,
    "deadline_reminder_minutes": 1440,
    "pre_deadline_reminder_minutes": 1440,
    "queue_url": "",
    "audit_retention_days": 90,
    "cleanup_max_percent": 50,
    "reconcile_time": "02:30",
    "phone_edits": "restore",
}

FIRM_KEYS_SHOWN = (
    "done_deadline",
    "appointment_reminder_minutes",
    "deadline_reminder_minutes",
    "pre_deadline_reminder_minutes",
)
"""Firm settings that change how items look in every mailbox: a change re-queues them."""
