"""A tiny UI shell: what the host's dialogs and menus do with the hooks.

Thin on purpose: it calls the hooks with the arguments the real host passes and
turns "no answer" or a plugin's exception into what the host would show, so a
broken plugin never takes a dialog down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tsl_hostapi.host import HookFailure
from tsl_hostapi.types import (
    ActionResult,
    MenuAction,
    RecordRef,
    SaveResult,
    SettingsContext,
    SettingsTab,
    SettingsValues,
    User,
)

if TYPE_CHECKING:
    from tsl_hostapi.reference.host import ReferenceHost

log = logging.getLogger(__name__)

SCOPES = ("interfaces", "user", "contact")


@dataclass(frozen=True)
class OpenedTab:
    """A tab as the dialog shows it: its declaration and the values loaded into it."""

    tab: SettingsTab
    values: SettingsValues


def _flatten(results: list[Any], cls: type) -> list[Any]:
    out = []
    for item in results:
        if item is None:
            continue
        if isinstance(item, cls):
            out.append(item)
        else:
            out.extend(x for x in item if isinstance(x, cls))
    return out


def _failed(host: ReferenceHost, plugin_id: str, hook: str, exc: Exception) -> str:
    log.exception("Modul %s: %s ist fehlgeschlagen", plugin_id, hook)
    host.hook_failures.append(HookFailure(plugin_id, hook, repr(exc)))
    return f"Im Modul {plugin_id} ist ein Fehler aufgetreten: {exc}"


def settings_tabs(host: ReferenceHost, user: User, scope: str) -> list[SettingsTab]:
    """Every plugin's tabs for a dialog of ``scope``."""
    try:
        results = host.pm.hook.tsl_settings_tabs(host=host, user=user, scope=scope)
    except Exception as exc:
        _failed(host, "?", "tsl_settings_tabs", exc)
        return []
    return [t for t in _flatten(results, SettingsTab) if t.scope == scope]


def _find_tab(host: ReferenceHost, user: User, scope: str, tab_id: str) -> SettingsTab:
    for tab in settings_tabs(host, user, scope):
        if tab.tab_id == tab_id:
            return tab
    raise LookupError(f"Reiter {tab_id!r} gibt es im Dialog {scope!r} nicht.")


def open_tab(host: ReferenceHost, user: User, scope: str, tab_id: str, context: SettingsContext) -> OpenedTab:
    """Open a tab: find its declaration, then ``tsl_settings_load``. Raises LookupError for an unknown tab."""
    tab = _find_tab(host, user, scope, tab_id)
    try:
        values = host.pm.hook.tsl_settings_load(
            host=host, user=user, plugin_id=tab.plugin_id, tab_id=tab_id, context=context
        )
    except Exception as exc:
        return OpenedTab(tab, SettingsValues(status=_failed(host, tab.plugin_id, "tsl_settings_load", exc)))
    return OpenedTab(tab, values if isinstance(values, SettingsValues) else SettingsValues())


def save_tab(
    host: ReferenceHost, user: User, scope: str, tab_id: str, context: SettingsContext, values: dict[str, Any]
) -> SaveResult:
    """Save a tab through ``tsl_settings_save``."""
    tab = _find_tab(host, user, scope, tab_id)
    try:
        result = host.pm.hook.tsl_settings_save(
            host=host, user=user, plugin_id=tab.plugin_id, tab_id=tab_id, context=context, values=dict(values)
        )
    except Exception as exc:
        return SaveResult(ok=False, message=_failed(host, tab.plugin_id, "tsl_settings_save", exc))
    if not isinstance(result, SaveResult):
        return SaveResult(ok=False, message="Dieser Reiter konnte nicht gespeichert werden (keine Antwort).")
    return result


def menu(host: ReferenceHost, user: User, view: str, selection: tuple[RecordRef, ...]) -> list[MenuAction]:
    """The plugin items of a context or Tools menu."""
    try:
        results = host.pm.hook.tsl_context_menu_actions(host=host, user=user, view=view, selection=selection)
    except Exception as exc:
        _failed(host, "?", "tsl_context_menu_actions", exc)
        return []
    return _flatten(results, MenuAction)


def _owner(host: ReferenceHost, user: User, action_id: str) -> str | None:
    """Which plugin declared ``action_id``: its manifest, then its tab buttons, then the id's prefix."""
    for plugin_id, manifest in host.pm.manifests.items():
        if any(a.action_id == action_id for a in manifest.menu_actions):
            return plugin_id
    for scope in SCOPES:
        for tab in settings_tabs(host, user, scope):
            if any(b.action_id == action_id for b in tab.buttons):
                return tab.plugin_id
    prefix, sep, _ = action_id.partition(".")
    return prefix if sep and host.pm.get_plugin(prefix) is not None else None


def press(
    host: ReferenceHost,
    user: User,
    action_id: str,
    selection: tuple[RecordRef, ...],
    values: dict[str, Any],
    *,
    plugin_id: str | None = None,
) -> ActionResult:
    """Use a menu item or tab button: ``tsl_run_action``."""
    plugin_id = plugin_id or _owner(host, user, action_id)
    if plugin_id is None or host.pm.get_plugin(plugin_id) is None:
        return ActionResult(ok=False, message=f"Die Aktion {action_id!r} ist nicht verfügbar.")
    try:
        result = host.pm.hook.tsl_run_action(
            host=host,
            user=user,
            plugin_id=plugin_id,
            action_id=action_id,
            selection=tuple(selection),
            values=dict(values),
        )
    except Exception as exc:
        return ActionResult(
            ok=False, message=_failed(host, plugin_id, "tsl_run_action", exc), status_icon="red"
        )
    if not isinstance(result, ActionResult):
        return ActionResult(ok=False, message=f"Die Aktion {action_id!r} wurde von keinem Modul ausgeführt.")
    return result
