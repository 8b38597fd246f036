"""The host's plugin manager: hookspecs, manifest checks, loading, enable/disable.

A host (the real timeSensor LEGAL or :mod:`tsl_hostapi.reference`) calls
:func:`get_plugin_manager` once, then :func:`start_plugins` when it is ready,
and :func:`enable_plugin` / :func:`disable_plugin` from its Interfaces page.

Plugins come from the entry-point group ``"tsl"``. Before a plugin is imported
its ``manifest.toml`` is read (without running the plugin's code) and a plugin
that needs a newer host API is refused; the reason is logged and kept in
``pm.load_errors`` for the host to show.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from tsl_hostapi import HOST_API_VERSION, PROJECT, hookimpl, hookspecs
from tsl_hostapi.manifest import ManifestError, PluginManifest, host_api_problem, manifest_for_entry_point
from tsl_hostapi.types import Host, LicenceDecision

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT
"""Plugins register under the entry-point group of the project's one name."""

HOST_DEFAULTS_NAME = "tsl_host_defaults"
"""Name under which the host's own default hook implementations are registered."""

NO_LICENCE_REASON = "Keine gültige Lizenz für dieses Modul gefunden."


class PluginLoadError(Exception):
    """A plugin could not be loaded or enabled. The message is meant for the administrator."""


@dataclass(frozen=True)
class LoadError:
    """Why a plugin was not loaded, as the host shows it (German, then English)."""

    plugin_id: str
    message: str


@dataclass(frozen=True)
class HookFailure:
    """A plugin's hook raised; the host logged it and carried on."""

    plugin_id: str
    hook: str
    error: str


class TslPluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers what the host needs to show about plugins."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.load_errors: list[LoadError] = []
        self.manifests: dict[str, PluginManifest] = {}
        # Plugin objects by id, kept while a plugin is disabled so enabling it again
        # does not depend on re-importing (and so tests can register plugins directly).
        self.known_plugins: dict[str, Any] = {}
        # The host the historic tsl_startup was called with; a later registration
        # replays that call, so it must be the host that enables the plugin.
        self.started_host: Host | None = None


class HostDefaults:
    """The host's own hook implementations, registered in every plugin manager."""

    @hookimpl(trylast=True)
    def tsl_licence_check(self, plugin_id: str) -> LicenceDecision:
        # Runs only if no plugin claimed the check, so an unclaimed check fails closed.
        return LicenceDecision(allowed=False, reason=NO_LICENCE_REASON)


# --------------------------------------------------------------------------- loading


def get_plugin_manager(*, load_entrypoints: bool = True, disabled: Iterable[str] = ()) -> TslPluginManager:
    """A plugin manager with the hookspecs and the host's defaults, plugins loaded.

    ``disabled`` names plugins that are blocked (not imported, not registered)
    until :func:`enable_plugin`. With ``load_entrypoints`` the group ``"tsl"`` is
    loaded; refused plugins end up in ``pm.load_errors``.
    """
    pm = TslPluginManager()
    pm.add_hookspecs(hookspecs)
    pm.register(HostDefaults(), name=HOST_DEFAULTS_NAME)
    for name in disabled:
        pm.set_blocked(name)
    if load_entrypoints:
        load_entrypoint_plugins(pm)
    return pm


def _record_error(pm: TslPluginManager, plugin_id: str, message: str) -> None:
    log.error("Plugin %s: %s", plugin_id, message)
    pm.load_errors.append(LoadError(plugin_id, message))


def _clear_errors(pm: TslPluginManager, plugin_id: str) -> None:
    pm.load_errors[:] = [e for e in pm.load_errors if e.plugin_id != plugin_id]


def plugin_entry_points() -> list[EntryPoint]:
    """The installed entry points of group ``"tsl"``."""
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _entry_point(plugin_id: str) -> EntryPoint | None:
    for ep in plugin_entry_points():
        if ep.name == plugin_id:
            return ep
    return None


def check_manifest(pm: TslPluginManager, ep: EntryPoint) -> PluginManifest:
    """Read ``ep``'s manifest without importing it; raise :class:`PluginLoadError` if refused."""
    try:
        manifest = manifest_for_entry_point(ep)
    except ManifestError as exc:
        raise PluginLoadError(str(exc)) from exc
    pm.manifests[ep.name] = manifest
    problem = host_api_problem(manifest, HOST_API_VERSION)
    if problem:
        raise PluginLoadError(problem)
    return manifest


def _import(pm: TslPluginManager, plugin_id: str) -> Any:
    """The plugin object for ``plugin_id``: a known one, or imported after its manifest passed."""
    if plugin_id in pm.known_plugins:
        return pm.known_plugins[plugin_id]
    ep = _entry_point(plugin_id)
    if ep is None:
        raise PluginLoadError(
            f"Modul {plugin_id!r} ist nicht installiert. / Plugin {plugin_id!r} is not installed."
        )
    check_manifest(pm, ep)
    try:
        plugin = ep.load()
    except Exception as exc:
        raise PluginLoadError(
            f"Modul {plugin_id!r} konnte nicht geladen werden: {exc!r}. / "
            f"Plugin {plugin_id!r} failed to import: {exc!r}."
        ) from exc
    pm.known_plugins[plugin_id] = plugin
    return plugin


def _register(pm: TslPluginManager, plugin: Any, plugin_id: str) -> None:
    """Register and validate; on any failure leave the plugin unregistered."""
    try:
        pm.register(plugin, name=plugin_id)
        pm.check_pending()
    except Exception as exc:
        if pm.get_plugin(plugin_id) is plugin:
            pm.unregister(plugin=plugin, name=plugin_id)
        raise PluginLoadError(
            f"Modul {plugin_id!r} konnte nicht registriert werden: {exc}. / "
            f"Plugin {plugin_id!r} could not be registered: {exc}."
        ) from exc


def load_entrypoint_plugins(pm: TslPluginManager) -> list[str]:
    """Load every plugin of group ``"tsl"`` that is not blocked; return the ids loaded.

    The manifest of a blocked plugin is still read (it names the plugin on the
    Interfaces page), but its code is not imported.
    """
    loaded: list[str] = []
    for ep in plugin_entry_points():
        if pm.has_plugin(ep.name):
            continue
        if pm.is_blocked(ep.name):
            try:
                check_manifest(pm, ep)
            except PluginLoadError as exc:
                _record_error(pm, ep.name, str(exc))
            continue
        try:
            plugin = _import(pm, ep.name)
            _register(pm, plugin, ep.name)
        except PluginLoadError as exc:
            _record_error(pm, ep.name, str(exc))
            continue
        loaded.append(ep.name)
    return loaded


# --------------------------------------------------------------------------- running


def start_plugins(pm: TslPluginManager, host: Host) -> None:
    """Call the historic ``tsl_startup(host=...)``: now for registered plugins, later on registration.

    Calling it again with the same host does nothing, because every call of a
    historic hook would be replayed to plugins enabled later.
    """
    if pm.started_host is host:
        return
    if pm.started_host is not None:
        raise RuntimeError("Dieser Plugin-Manager wurde bereits mit einem anderen Host gestartet.")
    pm.started_host = host
    try:
        pm.hook.tsl_startup.call_historic(kwargs={"host": host})
    except Exception:
        # Historic calls cannot be isolated per plugin (pluggy forbids wrappers on
        # them); the host keeps running and the failure is logged.
        log.exception("tsl_startup eines Moduls ist fehlgeschlagen")


def plugin_callers(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, Any]]:
    """One caller per plugin implementing ``hook_name``, each calling only that plugin."""
    hook = getattr(pm.hook, hook_name)
    plugins = []
    for impl in hook.get_hookimpls():
        if impl.plugin not in plugins:
            plugins.append(impl.plugin)
    callers = []
    for plugin in plugins:
        others = [p for p in pm.get_plugins() if p is not plugin]
        callers.append((pm.get_name(plugin) or "?", pm.subset_hook_caller(hook_name, remove_plugins=others)))
    return callers


def call_each(callers: list[tuple[str, Any]], hook_name: str, **kwargs: Any) -> list[HookFailure]:
    """Call each plugin's implementation on its own; one that raises is logged, the rest still run."""
    failed: list[HookFailure] = []
    for name, caller in callers:
        try:
            caller(**kwargs)
        except Exception as exc:
            log.exception("Modul %s: %s ist fehlgeschlagen", name, hook_name)
            failed.append(HookFailure(name, hook_name, repr(exc)))
    return failed


def stop_plugins(pm: TslPluginManager, host: Host) -> list[HookFailure]:
    """Call every plugin's ``tsl_shutdown(host=...)``, each isolated from the others."""
    return call_each(plugin_callers(pm, "tsl_shutdown"), "tsl_shutdown", host=host)


# --------------------------------------------------------------------------- licence, enable, disable


def _deny(reason: str) -> LicenceDecision:
    return LicenceDecision(allowed=False, reason=reason)


def check_licence(pm: TslPluginManager, plugin_id: str, host: Host) -> LicenceDecision:
    """Ask ``tsl_licence_check`` about ``plugin_id``; fails closed on any error.

    A plugin that is not registered (disabled) is asked through a separate,
    throwaway manager holding only it and the host's default, so asking does
    not register or start it.
    """
    licence = host.licence(plugin_id)
    if pm.get_plugin(plugin_id) is not None:
        caller = pm.hook.tsl_licence_check
    else:
        try:
            plugin = _import(pm, plugin_id)
        except PluginLoadError as exc:
            return _deny(str(exc))
        probe = pluggy.PluginManager(PROJECT)
        probe.add_hookspecs(hookspecs)
        probe.register(HostDefaults(), name=HOST_DEFAULTS_NAME)
        try:
            probe.register(plugin, name=plugin_id)
        except Exception as exc:
            return _deny(f"Modul {plugin_id!r} ist fehlerhaft: {exc}")
        caller = probe.hook.tsl_licence_check
    try:
        decision = caller(host=host, plugin_id=plugin_id, licence=licence)
    except Exception as exc:
        log.exception("Lizenzprüfung für %s ist fehlgeschlagen", plugin_id)
        return _deny(f"Die Lizenzprüfung ist fehlgeschlagen: {exc}")
    if not isinstance(decision, LicenceDecision):
        return _deny(NO_LICENCE_REASON)
    return decision


def enable_plugin(pm: TslPluginManager, plugin_id: str, host: Host) -> LicenceDecision:
    """Enable ``plugin_id`` at run time, if its licence allows it; return the licence decision.

    Unblocks, imports (after the manifest check) and registers the plugin. If the
    host has already started, pluggy replays the historic ``tsl_startup`` to it
    with that host; if it has not, the plugin starts with the others. A plugin
    that is already enabled stays as it is. Raises :class:`PluginLoadError` when
    the plugin cannot be loaded or its startup fails (it is then blocked again).
    """
    if pm.started_host is not None and pm.started_host is not host:
        raise RuntimeError("Der Plugin-Manager gehört zu einem anderen Host.")
    if pm.get_plugin(plugin_id) is not None:
        return check_licence(pm, plugin_id, host)
    plugin = _import(pm, plugin_id)
    decision = check_licence(pm, plugin_id, host)
    if not decision.allowed:
        log.info("Modul %s nicht aktiviert: %s", plugin_id, decision.reason)
        return decision
    pm.unblock(plugin_id)
    try:
        _register(pm, plugin, plugin_id)
    except PluginLoadError as exc:
        pm.set_blocked(plugin_id)
        _record_error(pm, plugin_id, str(exc))
        raise
    _clear_errors(pm, plugin_id)
    log.info("Modul %s aktiviert", plugin_id)
    return decision


def disable_plugin(pm: TslPluginManager, plugin_id: str, host: Host) -> None:
    """Disable ``plugin_id``: its ``tsl_shutdown`` only (if the host started), then unregister and block.

    A shutdown that raises is logged; the plugin is unloaded all the same,
    because the administrator asked for it to stop.
    """
    plugin = pm.get_plugin(plugin_id)
    if plugin is not None:
        pm.known_plugins[plugin_id] = plugin
        if pm.started_host is not None:
            others = [p for p in pm.get_plugins() if p is not plugin]
            try:
                pm.subset_hook_caller("tsl_shutdown", remove_plugins=others)(host=host)
            except Exception:
                log.exception("Modul %s: tsl_shutdown ist fehlgeschlagen", plugin_id)
    pm.set_blocked(plugin_id)
    log.info("Modul %s deaktiviert", plugin_id)


def register_plugin(pm: TslPluginManager, plugin: Any, plugin_id: str) -> None:
    """Register a plugin object directly (tests, embedded plugins), remembering it for enable/disable."""
    pm.known_plugins[plugin_id] = plugin
    _register(pm, plugin, plugin_id)


__all__ = [
    "ENTRY_POINT_GROUP",
    "HOST_DEFAULTS_NAME",
    "NO_LICENCE_REASON",
    "HookFailure",
    "HostDefaults",
    "LoadError",
    "PluginLoadError",
    "TslPluginManager",
    "call_each",
    "check_licence",
    "check_manifest",
    "disable_plugin",
    "enable_plugin",
    "get_plugin_manager",
    "load_entrypoint_plugins",
    "plugin_callers",
    "plugin_entry_points",
    "register_plugin",
    "start_plugins",
    "stop_plugins",
]
