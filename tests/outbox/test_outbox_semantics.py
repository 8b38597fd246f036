"""The outbox contract (base.py), run against the SQLite and the PostgreSQL store."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tsl_exchange_plugin.outbox.base import Change, LeaseLost, SyncEntry


def up(mailbox: str, key: str, n: int = 0) -> Change:
    return Change(mailbox, key, "upsert", json.dumps({"key": key, "n": n}))


# -- enqueue ------------------------------------------------------------------------


def test_ten_enqueues_coalesce_into_one_row_with_latest_snapshot(outbox):
    for n in range(1, 11):
        outbox.enqueue([up("anna", "contact:17", n)])
    jobs = outbox.jobs()
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.mailbox, job.record_key, job.version, job.op) == ("anna", "contact:17", 10, "upsert")
    assert json.loads(job.payload)["n"] == 10
    assert outbox.pending_count() == 1

    outbox.enqueue([Change("anna", "contact:17", "delete")])
    (job,) = outbox.jobs()
    assert (job.version, job.op, job.payload) == (11, "delete", "")


def test_enqueue_batch_is_one_transaction(outbox):
    batch = [up(f"u{i % 3}", f"contact:{i}", i) for i in range(30)]
    batch.append(up("u0", "contact:0", 99))  # the same record twice in one batch: last wins
    outbox.enqueue(batch)
    assert outbox.pending_count() == 30
    (job,) = [j for j in outbox.jobs("u0") if j.record_key == "contact:0"]
    assert job.version == 2 and json.loads(job.payload)["n"] == 99

    # A change the database refuses in the middle of a batch takes the whole batch back.
    broken = [
        up("u9", "contact:100"),
        Change("u9", "contact:101", "upsert", object()),
        up("u9", "contact:102"),
    ]
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own binding error
        outbox.enqueue(broken)
    assert outbox.jobs("u9") == []
    assert outbox.pending_count() == 30


def test_enqueue_rejects_bad_changes_and_stores_nothing(outbox):
    with pytest.raises(ValueError):
        outbox.enqueue([up("anna", "contact:1"), Change("anna", "contact:2", "patch", "{}")])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        outbox.enqueue([Change("", "contact:2", "upsert", "{}")])
    assert outbox.jobs() == []
    outbox.enqueue([])  # nothing to do is fine
    assert outbox.pending_count() == 0


# -- claim and leases -------------------------------------------------------------------


def test_claim_gives_one_mailbox_to_one_worker(outbox):
    outbox.enqueue([up("anna", "contact:1"), up("anna", "contact:2")])
    outbox.enqueue([up("bernd", "contact:1")])

    first = outbox.claim("w1")
    assert first is not None
    assert first.mailbox == "anna"  # its jobs are the oldest
    assert [j.record_key for j in first.jobs] == ["contact:1", "contact:2"]
    assert all(j.mailbox == "anna" for j in first.jobs)

    second = outbox.claim("w2")
    assert second is not None and second.mailbox == "bernd"
    assert outbox.claim("w3") is None
    assert outbox.claim("w1") is None  # a worker does not get its own leased mailbox twice


def test_claim_honours_limit_order_and_exclude(outbox):
    outbox.enqueue([up("anna", f"contact:{i}") for i in range(5)])
    outbox.enqueue([up("bernd", "contact:1")])
    claim = outbox.claim("w1", limit=3)
    assert claim is not None and claim.mailbox == "anna"
    ids = [j.id for j in claim.jobs]
    assert len(ids) == 3 and ids == sorted(ids)
    outbox.release(claim)

    other = outbox.claim("w1", exclude=["anna"])
    assert other is not None and other.mailbox == "bernd"
    assert outbox.claim("w2", exclude=["anna"]) is None


def test_expired_lease_lets_another_worker_take_the_mailbox(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    t0 = time.time()
    first = outbox.claim("w1", lease_seconds=30, now=t0)
    assert first is not None

    assert outbox.claim("w2", now=t0 + 29) is None
    second = outbox.claim("w2", lease_seconds=30, now=t0 + 31)
    assert second is not None and second.mailbox == "anna"
    assert [j.id for j in second.jobs] == [j.id for j in first.jobs]

    with pytest.raises(LeaseLost):
        outbox.renew(first)
    outbox.release(first)  # not ours any more: must not free w2's lease
    assert outbox.claim("w3", now=t0 + 32) is None


def test_renew_extends_and_release_frees(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    claim = outbox.claim("w1", lease_seconds=5)
    assert claim is not None
    renewed = outbox.renew(claim, lease_seconds=600)
    assert renewed.lease_until > claim.lease_until + 500
    assert renewed.jobs == claim.jobs
    # The old lease would have run out; the renewed one has not.
    assert outbox.claim("w2", now=time.time() + 60) is None

    outbox.release(renewed)
    with pytest.raises(LeaseLost):
        outbox.renew(renewed)
    again = outbox.claim("w2")
    assert again is not None and again.mailbox == "anna"


def test_claims_counter_counts_handouts_across_versions(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    claim = outbox.claim("w1")
    assert claim is not None and claim.jobs[0].claims == 1
    outbox.release(claim)
    claim = outbox.claim("w2")
    assert claim is not None and claim.jobs[0].claims == 2
    outbox.release(claim)
    # A newer version keeps the count: an earlier hand-out may already have written.
    outbox.enqueue([up("anna", "contact:1", 2)])
    claim = outbox.claim("w3")
    assert claim is not None and claim.jobs[0].claims == 3 and claim.jobs[0].version == 2


# -- ack, retry, fail ------------------------------------------------------------------------


def entry(mailbox: str, key: str, item: str = "AAMk1", ck: str = "CK1", h: str = "h1") -> SyncEntry:
    return SyncEntry(mailbox, key, item, ck, h, "contact")


def test_ack_of_superseded_version_keeps_the_newer_row(outbox):
    outbox.enqueue([up("anna", "contact:1", 1)])
    claim = outbox.claim("w1")
    assert claim is not None
    (old,) = claim.jobs
    outbox.enqueue([up("anna", "contact:1", 2)])  # edited while the push was in flight

    assert outbox.complete(old, entry("anna", "contact:1")) is False
    (row,) = outbox.jobs("anna")
    assert row.id == old.id and row.version == 2 and json.loads(row.payload)["n"] == 2
    # The sync state still records what was written.
    assert outbox.get_sync("anna", ["contact:1"])["contact:1"].item_id == "AAMk1"

    # retry and fail of the superseded version change nothing either.
    outbox.retry(old, "busy", 300)
    outbox.fail(old, "kaputt")
    (row,) = outbox.jobs("anna")
    assert (row.status, row.attempts, row.last_error, row.version) == ("pending", 0, "", 2)

    outbox.release(claim)
    claim = outbox.claim("w1")
    assert claim is not None
    assert outbox.complete(claim.jobs[0], entry("anna", "contact:1", ck="CK2")) is True
    assert outbox.jobs() == []
    assert outbox.get_sync("anna", ["contact:1"])["contact:1"].change_key == "CK2"


def test_retry_makes_job_due_later_and_claim_skips_it(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    claim = outbox.claim("w1")
    assert claim is not None
    before = time.time()
    outbox.retry(claim.jobs[0], "ErrorServerBusy", 120)
    outbox.release(claim)

    (job,) = outbox.jobs()
    assert job.status == "pending" and job.attempts == 1 and job.last_error == "ErrorServerBusy"
    assert before + 119 <= job.due_at <= time.time() + 121
    assert outbox.claim("w1") is None
    assert outbox.next_due_at() == pytest.approx(job.due_at)

    later = outbox.claim("w1", now=job.due_at + 1)
    assert later is not None and later.jobs[0].id == job.id and later.jobs[0].attempts == 1

    # A new change to the record resets the back-off: due now, attempts and error cleared.
    outbox.release(later)
    outbox.enqueue([up("anna", "contact:1", 5)])
    (job,) = outbox.jobs()
    assert job.attempts == 0 and job.last_error == "" and job.due_at <= time.time()


def test_fail_keeps_the_row_and_a_new_change_revives_it(outbox):
    outbox.enqueue([up("anna", "contact:1"), up("anna", "contact:2")])
    claim = outbox.claim("w1")
    assert claim is not None
    outbox.fail(claim.jobs[0], "ErrorInvalidPropertyValue: Geburtstag")
    assert outbox.complete(claim.jobs[1], entry("anna", "contact:2"))
    outbox.release(claim)

    (failed,) = outbox.jobs(status="failed")
    assert failed.record_key == "contact:1" and "Geburtstag" in failed.last_error
    assert outbox.pending_count() == 0
    assert outbox.claim("w1") is None
    assert outbox.next_due_at() is None
    (state,) = outbox.mailbox_states()
    assert (state.mailbox, state.pending, state.failed) == ("anna", 0, 1)

    outbox.enqueue([up("anna", "contact:1", 2)])
    (job,) = outbox.jobs()
    assert (job.status, job.version, job.attempts, job.last_error) == ("pending", 2, 0, "")
    claim = outbox.claim("w1")
    assert claim is not None and claim.jobs[0].id == failed.id


def test_requeue_failed(outbox):
    outbox.enqueue([up("anna", "contact:1"), up("bernd", "contact:1")])
    for worker in ("w1", "w2"):
        claim = outbox.claim(worker)
        assert claim is not None
        outbox.fail(claim.jobs[0], "kaputt")
        outbox.release(claim)
    assert outbox.requeue_failed("anna") == 1
    assert [j.mailbox for j in outbox.jobs(status="failed")] == ["bernd"]
    claim = outbox.claim("w1")
    assert claim is not None and claim.mailbox == "anna" and claim.jobs[0].attempts == 0
    assert outbox.requeue_failed() == 1
    assert outbox.jobs(status="failed") == []


# -- mailboxes ------------------------------------------------------------------------------------


def test_park_and_unpark(outbox):
    outbox.enqueue([up("anna", "contact:1"), up("bernd", "contact:1")])
    outbox.park("anna", "Anmeldung fehlgeschlagen (401)")
    claim = outbox.claim("w1")
    assert claim is not None and claim.mailbox == "bernd"
    assert outbox.claim("w2") is None
    outbox.release(claim)
    assert outbox.complete(claim.jobs[0], None)

    states = {s.mailbox: s for s in outbox.mailbox_states()}
    assert states["anna"].parked and states["anna"].parked_reason == "Anmeldung fehlgeschlagen (401)"
    assert states["anna"].pending == 1
    assert not states["bernd"].parked
    assert outbox.next_due_at() is None  # parked work is not claimable

    outbox.unpark("anna")
    claim = outbox.claim("w2")
    assert claim is not None and claim.mailbox == "anna"
    assert not {s.mailbox: s for s in outbox.mailbox_states()}["anna"].parked


def test_unpark_makes_backed_off_jobs_due_now(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    claim = outbox.claim("w1")
    assert claim is not None
    outbox.retry(claim.jobs[0], "401", 900)
    outbox.park("anna", "401")
    outbox.release(claim)
    outbox.unpark("anna")
    claim = outbox.claim("w1")
    assert claim is not None and claim.mailbox == "anna"


def test_mailbox_states_success_error_and_counts(outbox):
    outbox.enqueue([up("carla", "contact:1"), up("carla", "contact:2")])  # only jobs, no state yet
    outbox.record_success("anna")
    outbox.record_error("anna", "ErrorServerBusy")
    before = time.time()
    outbox.record_success("bernd")

    states = {s.mailbox: s for s in outbox.mailbox_states()}
    assert set(states) == {"anna", "bernd", "carla"}
    assert states["carla"].pending == 2 and states["carla"].failed == 0
    assert states["carla"].last_success_at is None
    anna = states["anna"]
    assert anna.last_error == "ErrorServerBusy" and anna.last_error_at is not None
    assert anna.last_success_at is not None and anna.last_success_at <= anna.last_error_at
    assert states["bernd"].last_success_at >= before - 1
    assert outbox.pending_count("carla") == 2 and outbox.pending_count("anna") == 0


def test_jobs_filters(outbox):
    outbox.enqueue([up("anna", "contact:1"), up("anna", "deadline:4#pre1"), up("bernd", "contact:1")])
    assert {j.record_key for j in outbox.jobs("anna")} == {"contact:1", "deadline:4#pre1"}
    assert len(outbox.jobs(status="pending")) == 3
    assert outbox.jobs(status="failed") == []
    assert outbox.jobs("nobody") == []


# -- sync state ---------------------------------------------------------------------------------------


def test_sync_state_round_trip(outbox):
    outbox.put_sync(entry("anna", "contact:1"))
    outbox.put_sync(entry("anna", "contact:2", item="AAMk2"))
    outbox.put_sync(entry("anna", "deadline:4#pre1", item="AAMk3"))
    outbox.put_sync(entry("bernd", "contact:1", item="AAMk9"))
    outbox.put_sync(SyncEntry("anna", "contact:1", "AAMk1", "CK7", "h7", "contact", updated_at=1234.5))

    got = outbox.get_sync("anna", ["contact:1", "contact:2", "contact:404"])
    assert set(got) == {"contact:1", "contact:2"}
    assert got["contact:1"] == SyncEntry("anna", "contact:1", "AAMk1", "CK7", "h7", "contact", 1234.5)
    assert got["contact:2"].updated_at > 0
    assert outbox.get_sync("anna", []) == {}

    assert outbox.sync_keys("anna") == ["contact:1", "contact:2", "deadline:4#pre1"]
    assert outbox.sync_keys("anna", "contact:") == ["contact:1", "contact:2"]
    assert outbox.sync_keys("anna", "deadline:4") == ["deadline:4#pre1"]
    assert outbox.sync_keys("anna", "%") == []  # a prefix is literal, not a pattern

    outbox.delete_sync("anna", "contact:2")
    assert outbox.sync_keys("anna", "contact:") == ["contact:1"]
    assert outbox.sync_keys("bernd") == ["contact:1"]

    outbox.put_sync_many([entry("carla", f"contact:{i}") for i in range(5)])
    assert len(outbox.sync_keys("carla")) == 5


def test_holders_are_mailboxes_with_the_item_or_a_queued_upsert(outbox):
    outbox.put_sync(entry("anna", "appointment:7"))
    outbox.put_sync(entry("anna", "appointment:70"))  # another record, same prefix
    outbox.enqueue([up("bernd", "appointment:7"), Change("carla", "appointment:7", "delete")])
    outbox.enqueue([up("dora", "appointment:7")])
    claim = outbox.claim("w1", exclude=["anna", "bernd", "carla"])
    assert claim is not None and claim.mailbox == "dora"
    outbox.fail(claim.jobs[0], "kaputt")  # failed upserts may still land later
    assert outbox.holders("appointment:7") == ["anna", "bernd", "dora"]
    assert outbox.holders("appointment:8") == []


def test_holders_include_sub_items_and_take_keys_literally(outbox):
    outbox.put_sync(entry("anna", "deadline:4#pre1"))
    outbox.enqueue(
        [up("bernd", "deadline:4#pre2"), up("carla", "deadline:40#pre1"), up("dora", "deadline:4")]
    )
    outbox.put_sync(entry("erik", "dead_line%:4#pre1"))
    assert outbox.holders("deadline:4") == ["anna", "bernd", "dora"]
    assert outbox.holders("deadline:4#pre2") == ["bernd"]
    assert outbox.holders("dead_line%:4") == ["erik"]
    assert outbox.holders("deadXline%:4") == []  # "_" and "%" are not wildcards


def test_complete_writes_or_removes_sync_state_in_the_same_transaction(outbox):
    outbox.enqueue([up("anna", "contact:1"), Change("anna", "contact:2", "delete")])
    outbox.put_sync(entry("anna", "contact:2", item="AAMkOld"))
    claim = outbox.claim("w1")
    assert claim is not None
    create, delete = claim.jobs

    # The sync write fails inside complete(): the ack is rolled back with it.
    with pytest.raises(Exception):  # noqa: B017 - NOT NULL violation, driver-specific class
        outbox.complete(create, SyncEntry("anna", "contact:1", None, "CK", "h"))  # type: ignore[arg-type]
    assert [j.id for j in outbox.jobs()] == [create.id, delete.id]
    assert outbox.get_sync("anna", ["contact:1"]) == {}

    assert outbox.complete(create, entry("anna", "contact:1"))
    assert outbox.complete(delete, None, remove_sync=True)
    assert outbox.jobs() == []
    assert set(outbox.get_sync("anna", ["contact:1", "contact:2"])) == {"contact:1"}
    with pytest.raises(ValueError):
        outbox.complete(create, entry("anna", "contact:1"), remove_sync=True)


def test_complete_many(outbox):
    outbox.enqueue([up("anna", f"contact:{i}") for i in range(4)])
    outbox.put_sync(entry("anna", "contact:3"))
    claim = outbox.claim("w1")
    assert claim is not None
    outbox.enqueue([up("anna", "contact:2", 2)])  # superseded in flight
    acked = outbox.complete_many(
        claim.jobs,
        [entry("anna", "contact:0"), entry("anna", "contact:1"), entry("anna", "contact:2")],
        [("anna", "contact:3")],
    )
    assert acked == [True, True, False, True]
    assert [(j.record_key, j.version) for j in outbox.jobs()] == [("contact:2", 2)]
    assert outbox.sync_keys("anna") == ["contact:0", "contact:1", "contact:2"]
    # In the order given: a pair written twice keeps the later entry; written and removed, it is gone.
    outbox.complete_many(
        [],
        [entry("anna", "contact:5", "A"), entry("anna", "contact:5", "B"), entry("anna", "contact:6")],
        [("anna", "contact:6")],
    )
    assert {k: e.item_id for k, e in outbox.get_sync("anna", ["contact:5", "contact:6"]).items()} == {
        "contact:5": "B"
    }


# -- waking workers ----------------------------------------------------------------------------------------


def test_wait_for_work_times_out_without_work(outbox):
    t = time.monotonic()
    assert outbox.wait_for_work(0.3) is False
    assert time.monotonic() - t >= 0.29


def test_wait_for_work_returns_at_once_when_work_is_due(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    t = time.monotonic()
    assert outbox.wait_for_work(120) is True
    assert time.monotonic() - t < 30  # at once, not after the 120 s timeout


def test_wait_for_work_ignores_parked_and_leased_work(outbox):
    outbox.enqueue([up("anna", "contact:1"), up("bernd", "contact:1")])
    outbox.park("anna", "401")
    assert outbox.claim("w1") is not None  # bernd, leased for 60 s
    assert outbox.wait_for_work(0.3) is False


def test_wait_for_work_wakes_on_enqueue_from_another_handle(open_store):
    waiter, producer = open_store(), open_store()
    result: list[bool] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        result.append(waiter.wait_for_work(20))

    thread = threading.Thread(target=wait)
    t = time.monotonic()
    thread.start()
    started.wait(5)
    producer.enqueue([up("anna", "contact:1")])
    thread.join(20)
    assert result == [True]
    assert time.monotonic() - t < 5  # woken, not timed out


def test_wait_for_work_wakes_when_a_retry_falls_due(outbox):
    outbox.enqueue([up("anna", "contact:1")])
    claim = outbox.claim("w1")
    assert claim is not None
    outbox.retry(claim.jobs[0], "busy", 0.4)
    outbox.release(claim)
    t = time.monotonic()
    assert outbox.wait_for_work(20) is True
    assert time.monotonic() - t < 5
    assert outbox.claim("w1") is not None


@pytest.mark.postgres
def test_postgres_store_reconnects_after_the_server_drops_its_connection(pg_schema, pg_url):

    from tsl_exchange_plugin.outbox.postgres import PostgresOutbox

    outbox = PostgresOutbox(pg_url, schema=pg_schema)
    try:
        _reconnects(outbox, pg_url)
    finally:
        outbox.close()


def _reconnects(outbox, pg_url: str) -> None:
    import psycopg

    outbox.enqueue([up("anna", "contact:1")])
    pid = outbox._conn().info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        outbox.pending_count()  # the call that finds the connection dead fails ...
    assert outbox.pending_count() == 1  # ... the next one runs on a fresh connection
