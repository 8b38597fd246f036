"""The reference host numbers each record's revisions (RecordEvent.version, host API 1.1)."""

from __future__ import annotations

from tsl_hostapi import hookimpl
from tsl_hostapi.host import register_plugin
from tsl_hostapi.types import Contact


def test_every_save_and_delete_raises_the_records_version(host):
    seen = []

    class Peek:
        @hookimpl
        def tsl_record_saved(self, event):
            seen.append(("saved", event.ref.key, event.version))

        @hookimpl
        def tsl_record_deleted(self, event):
            seen.append(("deleted", event.ref.key, event.version))

    register_plugin(host.pm, Peek(), "peek")
    host.save(Contact("1", surname="Müller"))
    host.save_many([Contact("1", surname="Müller-Weiß"), Contact("2", surname="Schmidt")])
    host.delete(Contact("1").ref)
    host.save(Contact("1", surname="Müller"))  # the same id again: numbering goes on
    assert seen == [
        ("saved", "contact:1", 1),
        ("saved", "contact:1", 2),
        ("saved", "contact:2", 1),
        ("deleted", "contact:1", 3),
        ("saved", "contact:1", 4),
    ]
