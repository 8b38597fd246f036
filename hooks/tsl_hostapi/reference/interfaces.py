"""Admin › Erweitert › System › Schnittstellen: the list of plugins and their state."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tsl_hostapi.host import (
    HOST_DEFAULTS_NAME,
    PluginLoadError,
    check_licence,
    check_manifest,
    plugin_entry_points,
)

if TYPE_CHECKING:
    from tsl_hostapi.reference.host import ReferenceHost


@dataclass(frozen=True)
class InterfaceEntry:
    """One row of the Interfaces page. ``greyed_out`` rows cannot be enabled; ``reason`` says why."""

    plugin_id: str
    name: str
    version: str
    enabled: bool
    greyed_out: bool
    reason: str = ""
    seats: int | None = None
    expires: dt.date | None = None


def interfaces_entries(host: ReferenceHost) -> list[InterfaceEntry]:
    """Every plugin the host knows: installed entry points and directly registered plugins."""
    pm = host.pm
    ids: set[str] = set(pm.manifests) | set(pm.known_plugins)
    ids |= {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    eps = {ep.name: ep for ep in plugin_entry_points()}
    ids |= set(eps)
    ids.discard(HOST_DEFAULTS_NAME)
    entries = []
    for plugin_id in sorted(ids):
        problem = ""
        if plugin_id in eps:
            # Re-read every time: the page shows the installed state, not the one at startup.
            try:
                check_manifest(pm, eps[plugin_id])
            except PluginLoadError as exc:
                problem = str(exc)
        manifest = pm.manifests.get(plugin_id)
        enabled = pm.get_plugin(plugin_id) is not None
        if problem:
            entries.append(
                InterfaceEntry(
                    plugin_id=plugin_id,
                    name=manifest.display_name if manifest else plugin_id,
                    version=manifest.version if manifest else "",
                    enabled=enabled,
                    greyed_out=True,
                    reason=problem,
                )
            )
            continue
        decision = check_licence(pm, plugin_id, host)
        entries.append(
            InterfaceEntry(
                plugin_id=plugin_id,
                name=manifest.display_name if manifest else plugin_id,
                version=manifest.version if manifest else "",
                enabled=enabled,
                greyed_out=not decision.allowed,
                reason="" if decision.allowed else decision.reason,
                seats=decision.seats,
                expires=decision.expires,
            )
        )
    return entries
