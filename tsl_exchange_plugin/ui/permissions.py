"""Who may see or change what in the plugin's tabs and buttons (the tabs and the "Testen" button
share this rule)."""

from __future__ import annotations

from tsl_hostapi.types import User


def may_edit_user(actor: User, user_id: str) -> bool:
    """Only an administrator or the user themself may see or change a user's Exchange tab."""
    return actor.is_admin or actor.id == user_id
