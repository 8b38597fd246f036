"""The plugin keeps its objects for a host in the host's ``plugin_state`` (host API 1.3), not in a
module global: the hook's ``host`` argument need not be the same object on every call. A host
that hands each call a new adapter object (a bridge from another process or language would)
still reaches the runtime its start built, through the real plugin manager."""

from __future__ import annotations

import dataclasses

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.plugin import runtime_for
from tsl_hostapi.types import RecordEvent

SET_SYNC = f"{PLUGIN_ID}.set_sync"


class Adapter:
    """Stands for the reference host; a new one for every hook call."""

    def __init__(self, host) -> None:
        self._host = host

    def __getattr__(self, name: str):
        return getattr(self._host, name)


def test_a_new_host_object_per_call_reaches_the_runtime_its_start_built(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[11]
    hook = k.host.pm.hook

    result = hook.tsl_run_action(
        host=Adapter(k.host),
        user=k.admin,
        plugin_id=PLUGIN_ID,
        action_id=SET_SYNC,
        selection=(contact.ref,),
        values={"users": [alice.id]},
    )
    assert result is not None and result.ok, result
    k.drain()
    assert len(k.ours(alice, contact.ref.key)) == 1

    # The host committed an edit and tells the plugin through yet another adapter.
    edited = dataclasses.replace(contact, notes="Über einen neuen Host-Adapter gemeldet")
    revision = 10**6  # above every revision the reference host has given this contact
    hook.tsl_record_saved(
        host=Adapter(k.host), event=RecordEvent(ref=edited.ref, record=edited, user=k.admin, version=revision)
    )
    k.drain()
    (item,) = k.ours(alice, contact.ref.key)
    assert "Über einen neuen Host-Adapter gemeldet" in item["body"]

    # Shutting down through an adapter stops the runtime of this host.
    runtime = k.runtime
    hook.tsl_shutdown(host=Adapter(k.host))
    assert runtime_for(k.host) is None
    assert not runtime.worker.running
