"""Fencing tokens, source-version order, priorities, bulk retries and stored-once snapshots:
the same semantics on both stores."""

from __future__ import annotations

import json
import time

import pytest

from tsl_exchange_plugin.outbox.base import Change, Claim, LeaseLost, SyncEntry


def up(mailbox: str, key: str, n: int = 1, *, version: int = 0, priority: int = 0) -> Change:
    return Change(mailbox, key, "upsert", json.dumps({"n": n}), version, priority)


def rm(mailbox: str, key: str, *, version: int = 0) -> Change:
    return Change(mailbox, key, "delete", "", version)


def entry(mailbox: str, key: str, item: str = "AAMk1", *, version: int = 0) -> SyncEntry:
    return SyncEntry(mailbox, key, item, "CK", "h", "contact", source_version=version)


def taken_over(outbox, worker: str = "w1") -> tuple[Claim, Claim]:
    """w1 claims; w2 takes the mailbox after w1's lease ran out (injected clock)."""
    first = outbox.claim(worker, lease_seconds=30)
    assert first is not None
    second = outbox.claim("w2", lease_seconds=30, now=time.time() + 31)
    assert second is not None and second.mailbox == first.mailbox
    return first, second


def payload_rows(outbox) -> int:
    schema = getattr(outbox, "schema", None)
    table = f'"{schema}".payloads' if schema else "payloads"
    return outbox._conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- fencing ------------------------------------------------------------------------------------
def test_every_claim_of_a_mailbox_gets_a_higher_token(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    first, second = taken_over(outbox)
    assert second.token > first.token
    outbox.release(second)
    third = outbox.claim("w1")
    assert third is not None and third.token > second.token
    assert outbox.check_lease(third)
    assert not outbox.check_lease(first) and not outbox.check_lease(second)


def test_writes_of_a_lost_lease_raise_and_write_nothing(outbox):
    outbox.enqueue([up("anna", "contact:1"), up("anna", "contact:2")])
    old, new = taken_over(outbox)
    job1, job2 = old.jobs
    assert not outbox.check_lease(old) and outbox.check_lease(new)

    with pytest.raises(LeaseLost):
        outbox.complete_many([job1], [entry("anna", "contact:1")], fence=old)
    with pytest.raises(LeaseLost):
        outbox.complete(job1, entry("anna", "contact:1"), fence=old)
    with pytest.raises(LeaseLost):
        outbox.retry(job1, "weg", 60, fence=old)
    with pytest.raises(LeaseLost):
        outbox.retry_many([job1, job2], "weg", [60, 60], fence=old)
    with pytest.raises(LeaseLost):
        outbox.fail(job2, "weg", fence=old)
    with pytest.raises(LeaseLost):
        outbox.put_sync(entry("anna", "contact:1"), fence=old)
    with pytest.raises(LeaseLost):
        outbox.put_sync_many([entry("anna", "contact:2")], fence=old)
    with pytest.raises(LeaseLost):
        outbox.delete_sync("anna", "contact:1", fence=old)
    with pytest.raises(LeaseLost):
        outbox.record_success("anna", fence=old)
    with pytest.raises(LeaseLost):
        outbox.record_error("anna", "weg", fence=old)

    assert [(j.id, j.attempts, j.status) for j in outbox.jobs("anna")] == [
        (job1.id, 0, "pending"),
        (job2.id, 0, "pending"),
    ]
    assert outbox.get_sync("anna", ["contact:1", "contact:2"]) == {}
    (state,) = [s for s in outbox.mailbox_states() if s.mailbox == "anna"]
    assert state.last_success_at is None and state.last_error == ""

    # The holder's writes go through.
    assert outbox.complete_many(list(new.jobs), [entry("anna", "contact:1")], fence=new) == [True, True]
    assert outbox.pending_count("anna") == 0


def test_a_released_lease_fences_its_holder_out(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    claim = outbox.claim("w1")
    outbox.release(claim)
    with pytest.raises(LeaseLost):
        outbox.complete(claim.jobs[0], None, fence=claim)
    assert outbox.pending_count("anna") == 1


def test_a_verify_note_needs_no_lease_and_survives_a_running_ack(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    old, new = taken_over(outbox)
    outbox.note_verify("anna", ["contact:1", "contact:9"])
    # The holder's ack of the version it claimed misses: the note raised the version.
    assert outbox.complete_many(list(new.jobs), fence=new) == [False]
    jobs = {j.record_key: j for j in outbox.jobs("anna")}
    assert jobs["contact:1"].op == "upsert" and jobs["contact:1"].verify
    assert json.loads(jobs["contact:1"].payload) == {"n": 1}
    assert jobs["contact:9"].op == "verify" and jobs["contact:9"].verify and jobs["contact:9"].payload == ""
    # A real change coalesces into a verify row and keeps the flag.
    outbox.enqueue([up("anna", "contact:9", 5)])
    nine = next(j for j in outbox.jobs("anna") if j.record_key == "contact:9")
    assert nine.op == "upsert" and nine.verify and json.loads(nine.payload) == {"n": 5}


# -- order ----------------------------------------------------------------------------------------
def test_an_older_version_never_replaces_a_newer_queued_one(outbox):
    outbox.enqueue([up("anna", "contact:1", 2, version=200)])
    outbox.enqueue([up("anna", "contact:1", 1, version=100)])  # its hook ran last
    (job,) = outbox.jobs("anna")
    assert json.loads(job.payload) == {"n": 2} and job.source_version == 200
    assert outbox.superseded_count("anna") == 1 and outbox.superseded_count() == 1
    outbox.enqueue([up("anna", "contact:1", 3, version=300)])
    (job,) = outbox.jobs("anna")
    assert json.loads(job.payload) == {"n": 3} and job.source_version == 300
    # The same within one batch: its later change of the record is the older version.
    outbox.enqueue([up("anna", "contact:1", 5, version=500), up("anna", "contact:1", 4, version=400)])
    (job,) = outbox.jobs("anna")
    assert json.loads(job.payload) == {"n": 5} and job.source_version == 500
    assert outbox.superseded_count("anna") == 2


def test_a_delete_wins_over_an_older_save_and_loses_to_a_newer_one(outbox):
    outbox.enqueue([rm("anna", "contact:1", version=6)])
    outbox.enqueue([up("anna", "contact:1", version=5)])  # a save racing the delete
    assert [j.op for j in outbox.jobs("anna")] == ["delete"]
    outbox.enqueue([up("anna", "contact:1", version=7)])  # saved again after the delete
    assert [j.op for j in outbox.jobs("anna")] == ["upsert"]
    outbox.enqueue([rm("anna", "contact:1", version=7)])  # tie: the later enqueue wins ...
    assert [j.op for j in outbox.jobs("anna")] == ["delete"]
    outbox.enqueue([up("anna", "contact:1", version=7)])  # ... but a save never replaces a delete
    assert [j.op for j in outbox.jobs("anna")] == ["delete"]
    assert outbox.superseded_count("anna") == 2


def test_unknown_versions_keep_arrival_order_and_never_lower_the_version(outbox):
    outbox.enqueue([up("anna", "contact:1", 1, version=500)])
    outbox.enqueue([up("anna", "contact:1", 2)])  # e.g. a resync reading the host now
    (job,) = outbox.jobs("anna")
    assert json.loads(job.payload) == {"n": 2} and job.source_version == 500
    outbox.enqueue([up("anna", "contact:1", 3, version=400)])
    assert json.loads(outbox.jobs("anna")[0].payload) == {"n": 2}


def test_the_sync_state_keeps_the_newest_version(outbox):
    outbox.put_sync(entry("anna", "contact:1", "NEW", version=10))
    outbox.put_sync(entry("anna", "contact:1", "OLD", version=9))
    outbox.put_sync_many([entry("anna", "contact:1", "OLD", version=8)])
    got = outbox.get_sync("anna", ["contact:1"])["contact:1"]
    assert (got.item_id, got.source_version) == ("NEW", 10)
    # An outcome of unknown version still lands (it describes the mailbox now) and keeps the version.
    outbox.put_sync(entry("anna", "contact:1", "ANY"))
    got = outbox.get_sync("anna", ["contact:1"])["contact:1"]
    assert (got.item_id, got.source_version) == ("ANY", 10)

    outbox.enqueue([up("anna", "contact:1", 1, version=9)])  # older than what the mailbox shows
    assert outbox.jobs("anna") == [] and outbox.superseded_count("anna") == 1
    outbox.enqueue([up("anna", "contact:1", 1, version=10)])  # the same version: harmless, queued
    assert len(outbox.jobs("anna")) == 1


def test_an_ack_of_an_older_snapshot_does_not_replace_newer_sync_state(outbox):
    outbox.put_sync(entry("anna", "contact:1", "NEW", version=10))
    outbox.enqueue([up("anna", "contact:2", version=3)])
    claim = outbox.claim("w1")
    outbox.complete_many(list(claim.jobs), [entry("anna", "contact:1", "OLD", version=4)], fence=claim)
    assert outbox.get_sync("anna", ["contact:1"])["contact:1"].item_id == "NEW"


# -- priorities -------------------------------------------------------------------------------------
def test_an_interactive_save_is_claimed_before_an_older_bulk_backlog(outbox):
    outbox.enqueue([up("bulk", f"contact:{i}", priority=1) for i in range(50)])
    outbox.enqueue([up("anna", "contact:1", priority=2)])
    outbox.enqueue([up("bernd", "contact:1", priority=0)])
    order = []
    for _ in range(3):
        claim = outbox.claim("w1", limit=100)
        order.append(claim.mailbox)
    assert order == ["bernd", "bulk", "anna"]


def test_a_mailbox_hands_out_its_jobs_best_priority_first(outbox):
    outbox.enqueue([up("anna", f"contact:{i}", priority=1) for i in range(5)])
    outbox.enqueue([up("anna", "contact:99", priority=0)])
    claim = outbox.claim("w1", limit=2)
    assert [j.record_key for j in claim.jobs][0] == "contact:99"
    assert [j.priority for j in claim.jobs] == [0, 1]


def test_coalescing_keeps_the_better_priority(outbox):
    outbox.enqueue([up("anna", "contact:1", 1, priority=0)])
    outbox.enqueue([up("anna", "contact:1", 2, priority=1)])
    (job,) = outbox.jobs("anna")
    assert job.priority == 0 and json.loads(job.payload) == {"n": 2}
    outbox.enqueue([up("anna", "contact:2", 1, priority=2)])
    outbox.enqueue([up("anna", "contact:2", 2, priority=1)])
    assert next(j for j in outbox.jobs("anna") if j.record_key == "contact:2").priority == 1


# -- retry_many ----------------------------------------------------------------------------------------
def test_retry_many_reschedules_each_job_with_its_delay_in_one_go(outbox):
    outbox.enqueue([up("anna", f"contact:{i}") for i in range(3)])
    claim = outbox.claim("w1")
    a, b, c = claim.jobs
    outbox.enqueue([up("anna", "contact:2", 9)])  # c is superseded meanwhile
    before = time.time()
    outbox.retry_many([a, b, c], "Server beschäftigt", [100, 1000, 5], fence=claim)
    jobs = {j.id: j for j in outbox.jobs("anna")}
    assert jobs[a.id].attempts == 1 and jobs[b.id].attempts == 1 and jobs[c.id].attempts == 0
    assert jobs[a.id].last_error == "Server beschäftigt" and jobs[c.id].last_error == ""
    assert before + 99 <= jobs[a.id].due_at <= time.time() + 101
    assert before + 999 <= jobs[b.id].due_at <= time.time() + 1001
    with pytest.raises(ValueError):
        outbox.retry_many([a], "x", [1, 2])


# -- payloads stored once --------------------------------------------------------------------------------
def test_one_snapshot_for_twenty_mailboxes_and_none_after_the_acks(outbox):
    snapshot = json.dumps({"kind": "contact", "name": "Müller"})
    outbox.enqueue([Change(f"user{i}", "contact:1", "upsert", snapshot) for i in range(20)])
    assert payload_rows(outbox) == 1
    assert all(j.payload == snapshot for j in outbox.jobs())
    outbox.enqueue([Change("user0", "contact:1", "upsert", snapshot + " ")])  # user0 gets a newer one
    assert payload_rows(outbox) == 2
    while (claim := outbox.claim("w1")) is not None:
        outbox.complete_many(list(claim.jobs), fence=claim)
        outbox.release(claim)
    assert outbox.jobs() == [] and payload_rows(outbox) == 0


def test_a_replaced_snapshot_nobody_references_is_collected(outbox):
    outbox.enqueue([up("anna", "contact:1", 1)])
    outbox.enqueue([up("anna", "contact:1", 2)])
    outbox.enqueue([rm("anna", "contact:1")])
    assert payload_rows(outbox) == 0
    outbox.enqueue([up("anna", "contact:1", 3, version=5), up("anna", "contact:2", 3)])
    outbox.enqueue([up("anna", "contact:1", 4, version=4)])  # superseded: its snapshot is not kept
    assert payload_rows(outbox) == 1


def test_a_pushed_delete_still_beats_an_older_save_that_arrives_later(outbox):
    outbox.put_sync(entry("anna", "contact:1", version=5))
    outbox.enqueue([rm("anna", "contact:1", version=7)])
    claim = outbox.claim("w1")
    outbox.complete_many(list(claim.jobs), removed=[("anna", "contact:1")], fence=claim)
    outbox.release(claim)
    assert outbox.get_sync("anna", ["contact:1"]) == {}
    outbox.enqueue([up("anna", "contact:1", version=6)])  # its hook ran after the delete was pushed
    outbox.enqueue([up("anna", "contact:1", version=7)])  # a tie: the delete wins
    assert outbox.jobs("anna") == [] and outbox.superseded_count("anna") == 2
    outbox.enqueue([up("anna", "contact:1", version=8)])  # saved again after the delete
    assert [j.op for j in outbox.jobs("anna")] == ["upsert"]
