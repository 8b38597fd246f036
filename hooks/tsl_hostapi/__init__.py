"""The host side of the timeSensor LEGAL plugin boundary.

A plugin imports its markers from here, as a pluggy plugin imports them from
its host. Nothing in this package imports a plugin.
"""

import pluggy

PROJECT = "tsl"
"""One name for the project, the markers and the entry-point group."""

HOST_API_VERSION = "1.3"
"""The hook API this host implements. A plugin's manifest names the oldest it needs.

1.1: ``RecordEvent.version`` (the record's revision); compatible, plugins that ignore it keep working.
1.2: ``Appointment.recurrence`` (series with exceptions); compatible, a plugin that ignores the
field still sees every appointment, with its first occurrence as start and end.
1.3: ``Host.plugin_state(plugin_id)`` (a dict the host keeps for a plugin while the host object
lives); compatible, a plugin that does not call it keeps working.
"""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["HOST_API_VERSION", "PROJECT", "hookimpl", "hookspec"]
