"""The worker writes its mailbox outcome sparingly: every write is a transaction the host's
saves may have to wait for."""

from __future__ import annotations

import dataclasses

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.worker import runner as worker_module
from tsl_exchange_plugin.worker.dispatch import make_mapper
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig


def test_a_mailboxs_success_is_written_once_per_interval_and_at_once_after_an_error(kanzlei, monkeypatch):
    k = kanzlei
    rt = k.runtime
    rt.worker.stop()
    monkeypatch.setattr(worker_module, "SUCCESS_NOTE_EVERY", 3600.0)
    worker = Worker(
        rt.outbox,
        rt.backend,
        rt.config.resolve_account,
        make_mapper(rt.config.mapping_context),
        WorkerConfig(threads=1, batch_size=10, lanes=1, slices_per_claim=8, max_back_off=3),
    )
    written: list[str] = []
    record_success = rt.outbox.record_success

    def counting(mailbox: str, **kw) -> None:  # the real store underneath, only counted
        written.append(mailbox)
        record_success(mailbox, **kw)

    monkeypatch.setattr(rt.outbox, "record_success", counting)
    alice = k.lawyers[0]
    contacts = list(k.firm.contacts)
    try:
        assert k.host.press(
            k.admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts], {"users": [alice.id]}
        ).ok
        assert worker.run_once()  # four slices, four successes: one write
        assert written == [alice.id]
        assert rt.outbox.pending_count(alice.id) == 0
        # The server fails once: the error is recorded, and the success after it at once.
        k.server.inject("http_status", status=503, mailbox=k.mailbox_of[alice.id], count=1)
        k.host.save(dataclasses.replace(contacts[0], notes="neu"), user=k.admin)
        assert worker.drain(timeout=60)
        assert written == [alice.id, alice.id]
        state = next(s for s in rt.outbox.mailbox_states() if s.mailbox == alice.id)
        assert state.last_success_at >= state.last_error_at
    finally:
        worker.stop()
