"""Better work does not wait for a running bulk claim to end (both stores).

``claim_urgent`` hands a claim its own mailbox's newer, better jobs under the same lease;
``urgent_waiting`` counts the other mailboxes whose better work could be claimed; ``release``
gives back the hand-out count of jobs a claim ended without sending.
"""

from __future__ import annotations

import json
import time

import pytest

from tsl_exchange_plugin.outbox.base import Change, LeaseLost


def up(mailbox: str, key: str, n: int = 1, *, priority: int = 1) -> Change:
    return Change(mailbox, key, "upsert", json.dumps({"n": n}), 0, priority)


def claims_of(outbox, mailbox: str) -> dict[str, int]:
    return {j.record_key: j.claims for j in outbox.jobs(mailbox)}


def test_a_claim_takes_its_own_mailboxs_better_jobs_under_its_lease(outbox):
    outbox.enqueue([up("anna", f"contact:{i}") for i in range(6)])
    claim = outbox.claim("w1", limit=4)
    assert claim is not None and claim.mailbox == "anna"
    begun, waiting = claim.jobs[0], claim.jobs[3]
    assert outbox.claim_urgent(claim, below=1) == ()  # nothing better yet
    # While the claim runs: a save for anna, a save of a job the claim holds but has not begun
    # (its queued version is now the better one), a save of the job it has begun, and bernd's.
    outbox.enqueue(
        [
            up("anna", "contact:new", priority=0),
            up("anna", waiting.record_key, 2, priority=0),
            up("anna", begun.record_key, 2, priority=0),
            up("bernd", "contact:1", priority=0),
        ]
    )
    urgent = outbox.claim_urgent(claim, below=1, skip=[begun.id])
    assert sorted((j.record_key, j.priority) for j in urgent) == sorted(
        [("contact:new", 0), (waiting.record_key, 0)]
    )
    assert next(j for j in urgent if j.id == waiting.id).version == waiting.version + 1
    assert claims_of(outbox, "anna")["contact:new"] == 1  # counted like any hand-out
    assert claims_of(outbox, "bernd") == {"contact:1": 0}
    # Nothing better than the best: below=0 finds nothing.
    assert outbox.claim_urgent(claim, below=0) == ()


def test_claim_urgent_is_fenced_by_the_lease(outbox):
    outbox.enqueue([up("anna", f"contact:{i}") for i in range(3)])
    first = outbox.claim("w1", lease_seconds=30)
    assert first is not None
    second = outbox.claim("w2", lease_seconds=30, now=time.time() + 31)  # w1's lease ran out
    assert second is not None and second.mailbox == "anna"
    outbox.enqueue([up("anna", "contact:new", priority=0)])
    with pytest.raises(LeaseLost):
        outbox.claim_urgent(first, below=1)
    assert claims_of(outbox, "anna")["contact:new"] == 0
    assert [j.record_key for j in outbox.claim_urgent(second, below=1)] == ["contact:new"]


def test_urgent_waiting_sees_only_mailboxes_a_claim_could_take(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    assert not outbox.urgent_waiting(below=1)  # bulk work only
    assert outbox.urgent_waiting(below=2)
    outbox.enqueue([up("bernd", "contact:1", priority=0)])
    assert outbox.urgent_waiting(below=1)
    assert not outbox.urgent_waiting(below=1, exclude=["bernd"])
    assert not outbox.urgent_waiting(below=0)
    claim = outbox.claim("w1", exclude=["anna"])
    assert claim is not None and claim.mailbox == "bernd"
    assert not outbox.urgent_waiting(below=1)  # leased: its own claim takes it in
    outbox.enqueue([up("carla", "contact:1", priority=0)])
    outbox.pause_mailbox("carla", 60)
    assert not outbox.urgent_waiting(below=1)  # paused
    outbox.release(claim)
    assert outbox.urgent_waiting(below=1)
    # Counted per mailbox, up to the limit asked for.
    outbox.enqueue([up("bernd", "contact:2", priority=0), up("dora", "contact:1", priority=0)])
    assert outbox.urgent_waiting(below=1, limit=5) == 2
    assert outbox.urgent_waiting(below=1, limit=1) == 1


def test_release_gives_back_the_count_of_jobs_never_sent(outbox):
    outbox.enqueue([up("anna", f"contact:{i}") for i in range(4)])
    claim = outbox.claim("w1")
    assert claim is not None
    sent, unsent = claim.jobs[:1], claim.jobs[1:]
    outbox.release(claim, unsent=unsent)
    counts = claims_of(outbox, "anna")
    assert counts[sent[0].record_key] == 1
    assert all(counts[j.record_key] == 0 for j in unsent)


def test_release_of_a_lost_lease_leaves_the_count_alone(outbox):
    outbox.enqueue([up("anna", f"contact:{i}") for i in range(2)])
    first = outbox.claim("w1", lease_seconds=30)
    assert first is not None
    second = outbox.claim("w2", lease_seconds=30, now=time.time() + 31)
    assert second is not None
    outbox.release(first, unsent=first.jobs)  # w2 was handed them since: its count stays
    assert set(claims_of(outbox, "anna").values()) == {2}
