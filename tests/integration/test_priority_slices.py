"""A save made while a bulk claim runs reaches the wire within about one slice.

The runtime's worker is replaced by one driven from the test (small slices, one lane), so the
order is decided, not raced: the save is made while the bulk's first slice is at the server,
and what the claim does at its next slice boundary is read from the order in which the items
arrive and from the queue.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from tsl_exchange_plugin import PLUGIN_ID, signals
from tsl_exchange_plugin.worker.dispatch import make_mapper
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig

SET_SYNC = f"{PLUGIN_ID}.set_sync"


def _worker(k, config: WorkerConfig):
    rt = k.runtime
    rt.worker.stop()
    return Worker(
        rt.outbox, rt.backend, rt.config.resolve_account, make_mapper(rt.config.mapping_context), config
    )


@pytest.fixture
def one_lane(kanzlei):
    """The kanzlei with its worker replaced by a one-lane one with slices of 10 (run by the test)."""
    worker = _worker(kanzlei, WorkerConfig(threads=1, batch_size=10, lanes=1, slices_per_claim=8))
    try:
        yield kanzlei, worker
    finally:
        worker.stop()


@pytest.fixture
def two_lanes(kanzlei):
    """As ``one_lane``, with two lanes and slices of 5."""
    worker = _worker(kanzlei, WorkerConfig(threads=1, batch_size=5, lanes=2, slices_per_claim=8))
    try:
        yield kanzlei, worker
    finally:
        worker.stop()


def subscribe(k, user, contacts) -> None:
    assert k.host.press(k.admin, SET_SYNC, [c.ref for c in contacts], {"users": [user.id]}).ok


def arrivals(k, *, save_during_first_push_of, record) -> list[tuple[str, str]]:
    """Record every push; while the first push of ``save_during_first_push_of``'s bulk is being
    answered, save ``record`` once (an interactive save)."""
    seen: list[tuple[str, str]] = []
    edited = dataclasses.replace(record, notes="geändert während des Abgleichs")

    def on_push(sender, **kw) -> None:
        seen.append((kw["mailbox"], kw["record_key"]))
        if len(seen) == 1 and kw["mailbox"] == save_during_first_push_of:
            k.host.save(edited, user=k.admin)

    signals.push_succeeded.connect(on_push, weak=False)
    return seen, lambda: signals.push_succeeded.disconnect(on_push)


def test_a_save_for_the_claimed_mailbox_goes_out_in_the_next_slice(one_lane):
    k, worker = one_lane
    alice = k.lawyers[0]
    contacts = list(k.firm.contacts)
    bulk, other = contacts[:39], contacts[39]
    subscribe(k, alice, [other])
    assert worker.drain(timeout=60)
    subscribe(k, alice, bulk)  # one claim: 39 jobs in four slices
    seen, done = arrivals(k, save_during_first_push_of=alice.id, record=other)
    try:
        assert worker.run_once()
    finally:
        done()
    keys = [key for _, key in seen]
    # The first slice, then the save (a slice of its own), then the rest of the bulk.
    assert keys.index(other.ref.key) == 10, keys
    assert Counter(keys) == Counter([c.ref.key for c in contacts])
    assert k.runtime.outbox.pending_count() == 0


def test_a_bulk_claim_makes_room_for_a_save_of_another_mailbox(one_lane):
    k, worker = one_lane
    alice, bernd = k.lawyers[0], k.lawyers[1]
    contacts = list(k.firm.contacts)
    bulk, other = contacts[:39], contacts[39]
    subscribe(k, bernd, [other])
    assert worker.drain(timeout=60)
    subscribe(k, alice, bulk)
    seen, done = arrivals(k, save_during_first_push_of=alice.id, record=other)
    try:
        # No thread is free for bernd's save: the bulk claim ends after its first slice ...
        assert worker.run_once()
        outbox = k.runtime.outbox
        left = outbox.jobs(alice.id)
        assert len(left) == 29
        # ... and gives its unsent jobs back as if never handed out: no look-ups before creating.
        assert {j.claims for j in left} == {0}
        assert [j.record_key for j in outbox.jobs(bernd.id)] == [other.ref.key]
        # The next claim is bernd's save, then the bulk goes on.
        assert worker.run_once()
        assert seen[10] == (bernd.id, other.ref.key)
        assert worker.drain(timeout=60)
    finally:
        done()
    assert Counter(key for box, key in seen if box == alice.id) == Counter(c.ref.key for c in bulk)
    mine = Counter((i.get("extended_properties") or {}).get("tslRecordId") for i in k.items(alice))
    assert all(mine[c.ref.key] == 1 for c in bulk)


def test_every_claim_that_meets_a_save_elsewhere_makes_room_whichever_lane_sees_it(two_lanes):
    k, worker = two_lanes
    alice, bernd, carla = k.lawyers
    contacts = list(k.firm.contacts)
    bulk, for_bernd, for_carla = contacts[:38], contacts[38], contacts[39]
    subscribe(k, bernd, [for_bernd])
    subscribe(k, carla, [for_carla])
    assert worker.drain(timeout=60)
    subscribe(k, alice, bulk)
    outbox = k.runtime.outbox
    left = len(bulk)
    for other, record in ((bernd, for_bernd), (carla, for_carla)):
        seen, done = arrivals(k, save_during_first_push_of=alice.id, record=record)
        try:
            assert worker.run_once()  # alice's bulk, ended early for the other mailbox's save
            assert 0 < len(outbox.jobs(alice.id)) < left
            left = len(outbox.jobs(alice.id))
            assert worker.run_once()  # the save
            assert seen[-1] == (other.id, record.ref.key)
            assert outbox.jobs(other.id) == []
        finally:
            done()
    assert worker.drain(timeout=60)
    mine = Counter((i.get("extended_properties") or {}).get("tslRecordId") for i in k.items(alice))
    assert all(mine[c.ref.key] == 1 for c in bulk)
