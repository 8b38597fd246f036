"""A large claim for one mailbox goes out in slices on two lanes, and still exactly once.

The in-host worker is swapped for one with small slices (10 jobs per request, two lanes),
so the sample firm's 40 contacts make four requests. One lane builds while the other's
request is at the server; the requests to one mailbox go one at a time, so an answer that
pauses the mailbox (or its server) is known before the next request starts.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS
from tsl_exchange_plugin.worker.dispatch import make_mapper
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig

SET_SYNC = f"{PLUGIN_ID}.set_sync"


@pytest.fixture
def small_slices(kanzlei):
    """The kanzlei with its worker replaced by a two-lane one with slices of 10; returns both."""
    rt = kanzlei.runtime
    rt.worker.stop()
    worker = Worker(
        rt.outbox,
        rt.backend,
        rt.config.resolve_account,
        make_mapper(rt.config.mapping_context),
        WorkerConfig(threads=1, batch_size=10, lanes=2, slices_per_claim=8, max_back_off=3),
    )
    try:
        yield kanzlei, worker
    finally:
        worker.stop()


def subscribe_all(k, user) -> list:
    contacts = list(k.firm.contacts)
    assert len(contacts) == 40
    assert k.host.press(k.admin, SET_SYNC, [c.ref for c in contacts], {"users": [user.id]}).ok
    return contacts


def assert_exactly_once(k, user, contacts) -> None:
    keys = Counter((i.get("extended_properties") or {}).get("tslRecordId") for i in k.items(user))
    assert {c.ref.key: keys[c.ref.key] for c in contacts} == {c.ref.key: 1 for c in contacts}


def test_slices_of_one_mailbox_go_one_at_a_time_and_arrive_once(small_slices):
    k, worker = small_slices
    alice = k.lawyers[0]
    # Every create takes 0.3 s on the server: two lanes sending at once would overlap there.
    k.server.inject("delay", seconds=0.3, operation="CreateItem", mailbox=k.mailbox_of[alice.id], count=None)
    contacts = subscribe_all(k, alice)
    before = k.server.engine.request_counts(k.mailbox_of[alice.id]).get("CreateItem", 0)
    k.server.reset_peak_in_flight()
    assert worker.drain(timeout=60)
    assert k.runtime.outbox.pending_count() == 0
    assert k.server.peak_in_flight == 1
    assert k.server.engine.request_counts(k.mailbox_of[alice.id]).get("CreateItem", 0) - before == 4
    assert_exactly_once(k, alice, contacts)
    known = k.runtime.outbox.get_sync(alice.id, [c.ref.key for c in contacts])
    assert set(known) == {c.ref.key for c in contacts}


def one_claim_against(k, worker, status: int):
    """Every create answers ``status`` (ten shots); subscribe all 40, run one claim."""
    alice = k.lawyers[0]
    fault = k.server.inject(
        "http_status", status=status, operation="CreateItem", mailbox=k.mailbox_of[alice.id], count=10
    )
    contacts = subscribe_all(k, alice)
    worker.run_once()
    return alice, fault, contacts


def test_wrong_password_stops_the_claim_after_the_requests_in_flight(small_slices):
    k, worker = small_slices
    alice, fault, contacts = one_claim_against(k, worker, 401)
    # The two lanes' first requests met the 401; no further slice asked again (a locked
    # AD account costs the firm more than a late contact).
    assert 10 - fault.count == 2
    state = next(s for s in k.runtime.outbox.mailbox_states() if s.mailbox == alice.id)
    assert state.parked
    assert k.runtime.outbox.pending_count(alice.id) == 40  # nothing lost
    fault.count = 0
    k.configure(alice, password=SANDBOX_PASSWORDS[k.mailbox_of[alice.id]])  # the admin saves it again
    assert worker.drain(timeout=60)
    assert_exactly_once(k, alice, contacts)


def test_server_error_defers_the_slices_not_yet_begun(small_slices):
    k, worker = small_slices
    alice, fault, contacts = one_claim_against(k, worker, 503)
    # The first request met the 503: the server rests, so the other lane's slice was not sent.
    assert 10 - fault.count == 1
    jobs = k.runtime.outbox.jobs(alice.id)
    # All 40 wait for the server, begun or not, without an attempt of their own.
    assert len(jobs) == 40
    assert all(j.status == "pending" and j.attempts == 0 for j in jobs), jobs[0]
    (pause,) = k.runtime.outbox.server_pauses()
    assert pause.failures == 1 and pause.server == k.server.host_port.lower()
    fault.count = 0
    assert worker.drain(timeout=60)
    assert_exactly_once(k, alice, contacts)
