"""Every hook timeSensor LEGAL calls on its plugins.

The host calls each hook with keyword arguments only, so a plugin's
implementation may accept any subset of the arguments named here (pluggy passes
only the ones it asks for). Payloads are the frozen dataclasses of
:mod:`tsl_hostapi.types`; new fields are added there, never as new arguments.

Kinds of hooks, as the implementer sees them:

- *collect*: every plugin's return value is collected into a list (``None``
  results are dropped). Return your own contribution, usually a list.
- *firstresult*: the host stops at the first implementation that returns
  something other than ``None``. Answer only for your own ``plugin_id`` and
  return ``None`` otherwise, so the plugin it belongs to gets its turn.
- *historic*: the host records the call and replays it to every plugin
  registered later (an administrator enabling your plugin while the host runs),
  so your implementation is called exactly once per host start, whenever you
  join.

No hook may block on a remote system or raise into the host; a plugin that
needs slow work queues it and does it in its own worker.

API versions (``tsl_hostapi.HOST_API_VERSION``; a plugin's manifest names the oldest it needs):

- 1.0: the hooks below and the records of :mod:`tsl_hostapi.types`.
- 1.1: ``RecordEvent.version``, the record's revision (see :func:`tsl_record_saved`).
- 1.2: ``Appointment.recurrence`` (a :class:`~tsl_hostapi.types.Recurrence`, or None for a
  single appointment): Serientermine with daily, weekly, monthly and yearly patterns, an
  interval, an end (none, a number of occurrences, a date) and exceptions (single
  occurrences moved, renamed, relocated or cancelled). The hooks are unchanged. A plugin
  that ignores the field keeps working: it sees each series as its first occurrence.
- 1.3: ``Host.plugin_state(plugin_id)``: a dict the host keeps for each plugin as long as the
  host object lives, for the plugin's in-memory objects of that host (its runtime, its
  threads). The hook's ``host`` argument need not be the same object on every call; the
  dict is. The hooks are unchanged.
"""

from __future__ import annotations

from typing import Any

from tsl_hostapi import hookspec
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

# --------------------------------------------------------------------------- lifecycle


@hookspec(historic=True)
def tsl_startup(host: Host) -> None:
    """The host has started, or your plugin was registered or enabled after it did.

    :param host: the running host (see :class:`tsl_hostapi.types.Host`).

    Called once per host start for every plugin, after the plugin is registered.
    Open your stores under ``host.data_dir(plugin_id)`` and start your worker
    here, not at import time.

    This hook is *historic*: a plugin enabled later on the Interfaces page
    receives the same call, with the same ``host``, at the moment it is
    registered. The return value is ignored.
    """


@hookspec
def tsl_shutdown(host: Host) -> None:
    """The host is about to stop, or an administrator disables your plugin.

    :param host: the running host.

    Drain or park your worker and close your stores; work still queued must be
    kept durably so it resumes on the next start. When only your plugin is
    disabled, only your implementation is called; other plugins keep running.
    The return value is ignored. An exception is logged by the host and does not
    stop the host from unloading the plugin.
    """


# --------------------------------------------------------------------------- licence


@hookspec(firstresult=True)
def tsl_licence_check(host: Host, plugin_id: str, licence: Licence | None) -> LicenceDecision | None:
    """May the plugin ``plugin_id`` run?

    :param host: the running host.
    :param plugin_id: the plugin whose licence is checked (its entry-point name and
        manifest ``id``).
    :param licence: the licence document the host holds for that plugin, or ``None``
        when the firm has installed none.

    Called by the host before it enables a plugin, at startup, and whenever it
    builds the Interfaces page (a plugin that is not allowed is shown greyed out
    with ``reason`` beneath it).

    Return a :class:`~tsl_hostapi.types.LicenceDecision` only for your own
    ``plugin_id``, ``None`` for any other. This hook is *firstresult*: the first
    decision wins. The host registers its own implementation last, which denies,
    so a check nobody claims fails closed.
    """


# --------------------------------------------------------------------------- settings dialogs


@hookspec
def tsl_settings_tabs(host: Host, user: User, scope: str) -> list[SettingsTab] | None:
    """Which tabs do you add to the settings dialog the host is building?

    :param host: the running host.
    :param user: the user opening the dialog (an administrator for the
        ``"interfaces"`` scope).
    :param scope: which dialog: ``"interfaces"`` (Admin › Erweitert › System ›
        Schnittstellen), ``"user"`` (Benutzer-Editor) or ``"contact"`` (the contact
        file).

    Return a list of declarative :class:`~tsl_hostapi.types.SettingsTab` for this
    scope (German labels), or ``None``/an empty list to add nothing. This hook
    collects: the host shows the tabs of every plugin.
    """


@hookspec(firstresult=True)
def tsl_settings_load(
    host: Host, user: User, plugin_id: str, tab_id: str, context: SettingsContext
) -> SettingsValues | None:
    """A tab is opening: what values does it show?

    :param host: the running host.
    :param user: the user opening the tab.
    :param plugin_id: the plugin that declared the tab.
    :param tab_id: the tab's id as you declared it in ``tsl_settings_tabs``.
    :param context: which object the tab is about (the firm, a user, a contact).

    Return :class:`~tsl_hostapi.types.SettingsValues` for your own tabs, ``None``
    for others (*firstresult*). Never send back a stored password; leave the field
    empty and say in ``status`` that one is stored.
    """


@hookspec(firstresult=True)
def tsl_settings_save(
    host: Host,
    user: User,
    plugin_id: str,
    tab_id: str,
    context: SettingsContext,
    values: dict[str, Any],
) -> SaveResult | None:
    """A tab is being saved.

    :param host: the running host.
    :param user: the user saving it.
    :param plugin_id: the plugin that declared the tab.
    :param tab_id: the tab's id.
    :param context: which object the tab is about.
    :param values: field name -> value as entered. An empty password field means
        "keep the stored one".

    Validate, store (in ``host.settings`` or your own store) and return a
    :class:`~tsl_hostapi.types.SaveResult`: ``ok`` or field errors with German
    messages, in which case store nothing. Return ``None`` for tabs that are not
    yours (*firstresult*).
    """


# --------------------------------------------------------------------------- menus and actions


@hookspec
def tsl_context_menu_actions(
    host: Host, user: User, view: str, selection: tuple[RecordRef, ...]
) -> list[MenuAction] | None:
    """The host is building a context or Tools menu: which items do you add?

    :param host: the running host.
    :param user: the user opening the menu.
    :param view: which list the menu belongs to, e.g. ``"contacts"``.
    :param selection: the records selected in that view (may be empty).

    Return a list of plain-data :class:`~tsl_hostapi.types.MenuAction` (for
    example Extras › Auswahl ändern › Exchange-Sync setzen), or ``None``. This
    hook collects the items of every plugin. Do no slow work here; the menu is
    built while the user waits.
    """


@hookspec(firstresult=True)
def tsl_run_action(
    host: Host,
    user: User,
    plugin_id: str,
    action_id: str,
    selection: tuple[RecordRef, ...],
    values: dict[str, Any],
) -> ActionResult | None:
    """A menu item or a tab button of yours was used.

    :param host: the running host.
    :param user: the user who used it.
    :param plugin_id: the plugin that declared the action.
    :param action_id: the ``action_id`` of the menu item or button.
    :param selection: the records it applies to (empty for a tab button).
    :param values: what the host asked before running it (a menu item's
        ``asks``) or the tab's current field values (a button).

    Return an :class:`~tsl_hostapi.types.ActionResult` the host shows (message,
    per-record outcome, status icon), or ``None`` when the action is not yours
    (*firstresult*).
    """


# --------------------------------------------------------------------------- record events


@hookspec
def tsl_record_saved(host: Host, event: RecordEvent) -> None:
    """A record was saved; the host's transaction has committed.

    :param host: the running host.
    :param event: which record, its committed state and who saved it.

    Called once per saved record (also for each record of a bulk save), after the
    commit, so ``host.get_record`` already returns the new state. Return nothing.
    Since host API 1.1 ``event.version`` carries the record's revision (strictly
    increasing per record, deletes included); hooks for two quick saves may run in
    either order, and the version tells which state is newer. Hosts before 1.1
    leave it None. A series (API 1.2) is one record: a change to its pattern or to
    any of its exceptions is a save of the whole appointment with its complete
    ``recurrence``.
    Only enqueue: never block on a remote system and never raise. If you do
    raise, the host logs it and carries on; the save is not undone.
    """


@hookspec
def tsl_record_deleted(host: Host, event: RecordEvent) -> None:
    """A record was deleted; the host's transaction has committed.

    :param host: the running host.
    :param event: which record, its last state and who deleted it.

    Called once per deleted record after the commit. Return nothing. As with
    :func:`tsl_record_saved`: only enqueue, never block, never raise.
    ``event.version`` (host API 1.1) is the revision the delete gave the record, above
    that of every save before it.
    """
