"""A claim's slices (pure unit: jobs in, slices out)."""

from __future__ import annotations

from tsl_exchange_plugin.outbox.base import Job
from tsl_exchange_plugin.worker.claimplan import ClaimPlan


def job(n: int, priority: int = 1, version: int = 1) -> Job:
    return Job(n, "anna", f"contact:{n}", "upsert", "{}", version, 0, priority=priority)


def test_slices_hold_one_priority_each_best_first():
    plan = ClaimPlan([job(1, 0), job(2, 0), job(3), job(4), job(5), job(6, 2)], size=2)
    assert [[j.id for j in s] for s in iter(plan.take, None)] == [[1, 2], [3, 4], [5], [6]]


def test_jobs_handed_out_during_the_claim_go_next_replacing_older_versions_not_yet_begun():
    plan = ClaimPlan([job(n) for n in range(1, 7)], size=2)
    assert [j.id for j in plan.take()] == [1, 2]
    assert plan.next_priority() == 1
    # A save of a new record, a newer version of job 5 (not begun) and one of job 2 (begun).
    plan.put_first([job(9, 0), job(5, 0, version=2), job(2, 0, version=2)])
    assert plan.next_priority() == 0
    first = plan.take()
    assert [(j.id, j.version) for j in first] == [(9, 1), (5, 2)]
    assert sorted(plan.begun()) == [1, 2, 5, 9]
    assert [[j.id for j in s] for s in iter(plan.take, None)] == [[3, 4], [6]]


def test_a_claim_ending_early_gives_back_what_it_has_not_begun():
    plan = ClaimPlan([job(n) for n in range(1, 6)], size=2)
    plan.take()
    plan.end_early()
    assert plan.ended_early and [j.id for j in plan.unsent] == [3, 4, 5]
    assert plan.take() is None and plan.next_priority() is None
