"""Who may change what: every tab, menu action and button for the administrator, the user himself
and another (non-admin) user. The rules: an administrator may change anyone; a user only himself;
the Interfaces page, "Jetzt erneut versuchen" and the clean-up are for administrators only."""

from __future__ import annotations

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.core.subscriptions import subscribers
from tsl_exchange_plugin.ui.actions import NOT_ADMIN, REMOVE_SYNC, SET_SYNC
from tsl_exchange_plugin.ui.settings import (
    CLEANUP_ACTION,
    INTERFACES_TAB,
    RETRY_ACTION,
    TEST_ACTION,
    USER_TAB,
)
from tsl_hostapi.types import RecordRef, SettingsContext

CONTACT_TAB = f"{PLUGIN_ID}.contact"


def _parties(k):
    owner, other, third = k.lawyers
    assert not owner.is_admin and not other.is_admin and k.admin.is_admin
    return owner, other, third


def _subs(k, contact_id: str) -> set[str]:
    return set(subscribers(k.host.settings, contact_id))


def _load(k, actor, tab_id: str, ctx: SettingsContext):
    # The hook itself, not the host's dialog: a host that offers a tab to the wrong user (or a
    # crafted call) must still be refused by the plugin.
    return k.host.pm.hook.tsl_settings_load(
        host=k.host, user=actor, plugin_id=PLUGIN_ID, tab_id=tab_id, context=ctx
    )


def _save(k, actor, tab_id: str, ctx: SettingsContext, values: dict):
    return k.host.pm.hook.tsl_settings_save(
        host=k.host, user=actor, plugin_id=PLUGIN_ID, tab_id=tab_id, context=ctx, values=values
    )


def _save_sync(k, actor, contact_id: str, users: list[str]):
    return _save(k, actor, CONTACT_TAB, SettingsContext("contact", contact_id), {"users": users})


def test_sync_tab_admin_may_change_anyone(kanzlei):
    k = kanzlei
    owner, other, _ = _parties(k)
    contact = k.firm.contacts[0].id
    assert _save_sync(k, k.admin, contact, [owner.id, other.id]).ok
    assert _subs(k, contact) == {owner.id, other.id}
    assert _save_sync(k, k.admin, contact, []).ok
    assert _subs(k, contact) == set()


def test_sync_tab_user_may_change_only_himself(kanzlei):
    k = kanzlei
    owner, other, third = _parties(k)
    contact = k.firm.contacts[1].id
    assert _save_sync(k, owner, contact, [owner.id]).ok
    assert _subs(k, contact) == {owner.id}
    # Ticking himself while leaving the others as they are is his own change only.
    assert _save_sync(k, k.admin, contact, [owner.id, third.id]).ok
    assert _save_sync(k, other, contact, [owner.id, third.id, other.id]).ok
    assert _subs(k, contact) == {owner.id, third.id, other.id}
    assert _save_sync(k, other, contact, [owner.id, third.id]).ok
    assert _subs(k, contact) == {owner.id, third.id}


def test_sync_tab_refuses_subscribing_another_user(kanzlei):
    k = kanzlei
    owner, other, _ = _parties(k)
    contact = k.firm.contacts[2].id
    result = _save_sync(k, other, contact, [owner.id])
    assert not result.ok
    assert "nur für sich selbst" in (result.errors[0].message if result.errors else result.message)
    assert _subs(k, contact) == set()


def test_sync_tab_saved_empty_by_another_user_keeps_colleagues(kanzlei):
    k = kanzlei
    owner, other, third = _parties(k)
    contact = k.firm.contacts[3].id
    assert _save_sync(k, k.admin, contact, [owner.id, third.id]).ok
    result = _save_sync(k, other, contact, [])
    assert not result.ok
    assert _subs(k, contact) == {owner.id, third.id}


def test_menu_actions_set_and_remove_sync(kanzlei):
    k = kanzlei
    owner, other, _ = _parties(k)
    refs = [RecordRef("contact", k.firm.contacts[4].id)]
    contact = refs[0].id
    assert k.host.press(k.admin, SET_SYNC, refs, {"users": [owner.id]}).ok
    assert not k.host.press(other, SET_SYNC, refs, {"users": [owner.id, other.id]}).ok
    assert _subs(k, contact) == {owner.id}
    assert not k.host.press(other, REMOVE_SYNC, refs, {"users": [owner.id]}).ok
    assert _subs(k, contact) == {owner.id}
    assert k.host.press(other, SET_SYNC, refs, {"users": [other.id]}).ok
    assert k.host.press(owner, REMOVE_SYNC, refs, {"users": [owner.id]}).ok
    assert _subs(k, contact) == {other.id}
    assert k.host.press(k.admin, REMOVE_SYNC, refs, {"users": [other.id]}).ok
    assert _subs(k, contact) == set()


def test_exchange_tab_and_testen_button(kanzlei):
    k = kanzlei
    owner, other, _ = _parties(k)
    ctx = SettingsContext("user", owner.id)
    assert _load(k, k.admin, USER_TAB, ctx).values
    assert _load(k, owner, USER_TAB, ctx).values
    assert not _load(k, other, USER_TAB, ctx).values
    before = k.runtime.accounts.load(owner.id)
    assert not _save(k, other, USER_TAB, ctx, {"enabled": False}).ok
    assert k.runtime.accounts.load(owner.id) == before
    assert k.host.press(k.admin, TEST_ACTION, (), {"user_id": owner.id}).ok
    assert k.host.press(owner, TEST_ACTION, (), {"user_id": owner.id}).ok
    refused = k.host.press(other, TEST_ACTION, (), {"user_id": owner.id})
    assert not refused.ok and "Berechtigung" in refused.message


def test_interfaces_tab_retry_and_cleanup_are_for_administrators(kanzlei):
    k = kanzlei
    owner, other, _ = _parties(k)
    ctx = SettingsContext("interfaces", "")
    assert _load(k, k.admin, INTERFACES_TAB, ctx).values
    for user in (owner, other):
        assert not _load(k, user, INTERFACES_TAB, ctx).values
        assert not _save(k, user, INTERFACES_TAB, ctx, {"worker": "external"}).ok
        assert not k.host.press(user, RETRY_ACTION, (), {"user_id": owner.id}).ok
        assert k.host.press(user, CLEANUP_ACTION, (), {"users": [owner.id]}).message == NOT_ADMIN
    assert k.host.press(k.admin, RETRY_ACTION, (), {"user_id": owner.id}).ok
    # The administrator passes the check (the clean-up itself then refuses a mailbox still syncing).
    cleanup = k.host.press(k.admin, CLEANUP_ACTION, (), {"users": [owner.id]})
    assert cleanup.message != NOT_ADMIN and "noch" in cleanup.outcomes[0].message
