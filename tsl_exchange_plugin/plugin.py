"""The hook implementations: thin, each hands over to the module that owns the concern.

Nothing here may raise into the host's save path or block on Exchange.
"""

from __future__ import annotations

import logging
from typing import Any

from tsl_hostapi import hookimpl
from tsl_hostapi.types import (
    ActionResult,
    Host,
    Licence,
    LicenceDecision,
    MenuAction,
    RecordEvent,
    RecordRef,
    SaveResult,
    SettingsContext,
    SettingsTab,
    SettingsValues,
    User,
)

from . import PLUGIN_ID, licence
from .core.recovery import Recovery
from .core.runtime import SyncRuntime
from .ui import actions, settings

log = logging.getLogger(__name__)

RECOVERY = "recovery"
"""Where this host's Recovery (and through it the runtime) lives in the host's ``plugin_state``."""


def _state(host: Host) -> dict[str, Any]:
    # The host keeps the plugin's objects (host API 1.3): several hosts in one process (tests,
    # the demo) never share them, and a host that hands over a new adapter object on every
    # call still finds its runtime.
    return host.plugin_state(PLUGIN_ID)


def recovery_for(host: Host) -> Recovery | None:
    """The Recovery of this host: it holds the runtime and keeps the host's changes in the
    journal while the runtime cannot be built."""
    return _state(host).get(RECOVERY)


def runtime_for(host: Host) -> SyncRuntime | None:
    recovery = recovery_for(host)
    return recovery.runtime if recovery is not None else None


@hookimpl
def tsl_startup(host: Host) -> None:
    state = _state(host)
    if RECOVERY in state:
        return
    recovery = state[RECOVERY] = Recovery(host)
    recovery.start()  # never raises: a failed start keeps journaling and retrying


@hookimpl
def tsl_shutdown(host: Host) -> None:
    recovery = _state(host).pop(RECOVERY, None)
    if recovery is not None:
        recovery.close()


@hookimpl
def tsl_licence_check(host: Host, plugin_id: str, licence: Licence | None) -> LicenceDecision | None:
    if plugin_id != PLUGIN_ID:
        return None
    return licence_module_check(licence, host)


def licence_module_check(lic: Licence | None, host: Host | None = None) -> LicenceDecision:
    dev_keys = licence.data_dir_dev_keys(host.data_dir(PLUGIN_ID)) if host is not None else None
    decision, _claims = licence.verify(lic.document if lic else None, dev_keys=dev_keys)
    return decision


@hookimpl
def tsl_settings_tabs(host: Host, user: User, scope: str) -> list[SettingsTab]:
    return settings.tabs(host, user, scope)


@hookimpl
def tsl_settings_load(
    host: Host, user: User, plugin_id: str, tab_id: str, context: SettingsContext
) -> SettingsValues | None:
    if plugin_id != PLUGIN_ID:
        return None
    return settings.load(host, runtime_for(host), user, tab_id, context)


@hookimpl
def tsl_settings_save(
    host: Host, user: User, plugin_id: str, tab_id: str, context: SettingsContext, values: dict[str, Any]
) -> SaveResult | None:
    if plugin_id != PLUGIN_ID:
        return None
    waiting = _waiting_for_queue(host)
    if waiting:
        return SaveResult(False, message=waiting)
    return settings.save(host, runtime_for(host), user, tab_id, context, values)


@hookimpl
def tsl_context_menu_actions(
    host: Host, user: User, view: str, selection: tuple[RecordRef, ...]
) -> list[MenuAction]:
    return actions.menu(host, user, view, selection)


@hookimpl
def tsl_run_action(
    host: Host,
    user: User,
    plugin_id: str,
    action_id: str,
    selection: tuple[RecordRef, ...],
    values: dict[str, Any],
) -> ActionResult | None:
    if plugin_id != PLUGIN_ID:
        return None
    waiting = _waiting_for_queue(host)
    if waiting:
        return ActionResult(False, waiting)
    return actions.run(host, runtime_for(host), user, action_id, selection, values)


def _waiting_for_queue(host: Host) -> str:
    """Why settings and actions cannot be used while the start keeps failing ("": they can)."""
    recovery = recovery_for(host)
    if recovery is None or recovery.runtime is not None:
        return ""
    return (
        f"Exchange-Sync ist noch nicht bereit: {recovery.reason} Nichts wurde geändert; bitte "
        "versuchen Sie es erneut, sobald die Warteschlange wieder erreichbar ist. Änderungen an "
        "Datensätzen gehen bis dahin nicht verloren."
    )


@hookimpl
def tsl_record_saved(host: Host, event: RecordEvent) -> None:
    _enqueue_for(host, event, "record_saved", "Änderung an")


@hookimpl
def tsl_record_deleted(host: Host, event: RecordEvent) -> None:
    _enqueue_for(host, event, "record_deleted", "Löschung von")


def _enqueue_for(host: Host, event: RecordEvent, method: str, what: str) -> None:
    recovery = recovery_for(host)
    if recovery is None:
        return  # not started: the plugin is not enabled for this host
    try:
        recovery.handle(event, method)  # the queue, or the journal when the queue cannot take it
    except Exception:  # never into the host's save; the administrator is told instead
        log.exception("Exchange-Sync: %s %s konnte nicht eingereiht werden", what, event.ref.key)
        host.notify(f"Exchange-Sync: {what} {event.ref.key} konnte nicht eingereiht werden.", level="error")
