"""Pauses in the store, for every worker process: a paused mailbox, a paused server, one probe.

Both stores. Claims are given an explicit ``now`` to stand before or after a pause;
the pauses themselves are taken at the store's own clock.
"""

from __future__ import annotations

import time

from tsl_exchange_plugin.outbox.base import Change

SERVER = "mail.kanzlei.de:443"


def _enqueue(box, *mailboxes: str, jobs: int = 3) -> None:
    box.enqueue([Change(m, f"contact:{i}", "upsert", "{}") for m in mailboxes for i in range(jobs)])


def _wait_past(moment: float) -> None:
    """Until the clock has passed ``moment`` (a few hundredths of a second here)."""
    while time.time() <= moment:
        time.sleep(max(0.001, moment - time.time()))


def test_a_paused_mailbox_is_not_claimed_until_its_pause_ends(outbox):
    _enqueue(outbox, "anna")
    until = outbox.pause_mailbox("anna", 60)
    assert until >= time.time() + 50
    assert outbox.claim("w1") is None
    assert outbox.next_due_at() >= until - 0.001  # idle workers sleep through the pause
    # A shorter pause asked for later does not cut the running one short.
    assert outbox.pause_mailbox("anna", 1) == until
    claim = outbox.claim("w1", now=until + 1)
    assert claim is not None and claim.mailbox == "anna" and len(claim.jobs) == 3 and not claim.probe
    assert outbox.mailbox_pauses() == {"anna": until}


def test_a_paused_server_holds_all_its_mailboxes_and_counts_one_step_per_pause(outbox):
    _enqueue(outbox, "anna", "bernd", "clara")
    outbox.note_server("anna", SERVER)
    outbox.note_server("bernd", SERVER)
    outbox.note_server("clara", "other.kanzlei.de:443")
    step = outbox.server_failed(SERVER, lambda failures: 30.0 * failures)
    assert step.counted and step.failures == 1 and step.paused_until >= time.time() + 25
    # A failure of a request that was already out: the same step.
    again = outbox.server_failed(SERVER, lambda failures: 30.0 * failures)
    assert not again.counted and again.failures == 1 and again.paused_until == step.paused_until
    claim = outbox.claim("w1")
    assert claim is not None and claim.mailbox == "clara"
    assert outbox.claim("w2") is None  # anna and bernd wait for their server
    outbox.release(claim)
    outbox.complete_many(claim.jobs)
    assert outbox.next_due_at() >= step.paused_until - 0.001
    [pause] = outbox.server_pauses()
    assert (pause.server, pause.failures) == (SERVER, 1)


def test_after_the_pause_one_probe_goes_and_only_its_success_opens_the_server(outbox):
    _enqueue(outbox, "anna", "bernd", jobs=5)
    outbox.note_server("anna", SERVER)
    outbox.note_server("bernd", SERVER)
    step = outbox.server_failed(SERVER, lambda failures: 0.05)
    _wait_past(step.paused_until)  # the store's own clock decides when the next failure counts
    probe = outbox.claim("w1", probe_limit=2, lease_seconds=60)
    assert probe is not None and probe.probe and len(probe.jobs) == 2
    # While the probe is out, no other claim reaches the server, though bernd's work is due.
    assert outbox.claim("w2") is None
    # The probe failed: the next, longer step.
    outbox.release(probe)
    failed = outbox.server_failed(SERVER, lambda failures: 30.0 * failures)
    assert failed.counted and failed.failures == 2 and failed.paused_until >= time.time() + 50
    assert outbox.claim("w2") is None
    probe = outbox.claim("w2", now=failed.paused_until + 1, probe_limit=2)
    assert probe is not None and probe.probe
    outbox.server_ok(SERVER)  # it answered
    outbox.release(probe)
    rest = outbox.claim("w3", now=failed.paused_until + 1, probe_limit=2)
    assert rest is not None and not rest.probe and len(rest.jobs) == 5
    assert [p.failures for p in outbox.server_pauses()] == [0]


def test_a_probe_without_a_verdict_lets_the_next_claim_probe(outbox):
    _enqueue(outbox, "anna", "bernd")
    outbox.note_server("anna", SERVER)
    outbox.note_server("bernd", SERVER)
    step = outbox.server_failed(SERVER, lambda failures: 5.0)
    later = step.paused_until + 1
    probe = outbox.claim("w1", now=later, probe_limit=1)
    assert probe is not None and probe.probe
    outbox.release(probe)
    assert outbox.claim("w2", now=later) is None
    outbox.end_probe(SERVER, "w1")  # e.g. its account could not be resolved: no request went out
    second = outbox.claim("w2", now=later, probe_limit=1)
    assert second is not None and second.probe


def test_a_probe_counts_a_hand_out_only_for_the_jobs_it_hands_out(outbox):
    # A job counted as handed out before may have been written by its last holder, so the next
    # holder looks it up in the mailbox first: jobs a probe leaves behind must not look like that.
    _enqueue(outbox, "anna", jobs=5)
    outbox.note_server("anna", SERVER)
    step = outbox.server_failed(SERVER, lambda failures: 5.0)
    later = step.paused_until + 1
    probe = outbox.claim("w1", now=later, probe_limit=2)
    assert probe is not None and probe.probe and len(probe.jobs) == 2
    outbox.release(probe)
    outbox.end_probe(SERVER, "w1")
    handed_out = {job.record_key for job in probe.jobs}
    assert {job.record_key: job.claims for job in outbox.jobs()} == {
        f"contact:{i}": int(f"contact:{i}" in handed_out) for i in range(5)
    }


def test_a_pause_survives_reopening_the_store(open_store):
    first = open_store()
    _enqueue(first, "anna")
    until = first.pause_mailbox("anna", 60)
    second = open_store()  # another worker process
    assert second.claim("w2") is None
    assert second.next_due_at() >= until - 0.001
