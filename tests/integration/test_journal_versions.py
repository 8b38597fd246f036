"""A change that goes through the journal keeps the source version it had at its hook."""

from __future__ import annotations

import datetime as dt

from tsl_exchange_plugin.core.enqueue import event_from_journal, event_to_journal, source_version
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.types import Contact, RecordEvent

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def test_journal_keeps_the_version_of_a_save_and_of_a_delete(tmp_path):
    host = ReferenceHost(tmp_path / "host")
    try:
        contact = Contact("7", surname="Müller", modified_at=AT)
        with_revision = RecordEvent(ref=contact.ref, record=contact, version=12)
        without = RecordEvent(ref=contact.ref, record=contact, at=AT + dt.timedelta(hours=1))
        for event, hook in ((with_revision, "saved"), (without, "saved"), (without, "deleted")):
            replayed = event_from_journal(host, event_to_journal(event, hook))
            deleted = hook == "deleted"
            assert source_version(replayed, deleted=deleted) == source_version(event, deleted=deleted)
        # A line journalled before versions were: unknown (0), not the time of the replay.
        old_line = {k: v for k, v in event_to_journal(without, "deleted").items() if k != "v"}
        assert source_version(event_from_journal(host, old_line), deleted=True) == 0
    finally:
        host.close()
