"""Races: many workers (threads, each with its own store handle and connections)
claiming at once must never hold the same mailbox, and every job is acked once."""

from __future__ import annotations

import json
import threading
from collections import Counter

from tsl_exchange_plugin.outbox.base import Change, SyncEntry


def _fill(store, mailboxes: int, per_mailbox: int) -> int:
    store.enqueue(
        [
            Change(f"user{m}", f"contact:{k}", "upsert", json.dumps({"k": k}))
            for m in range(mailboxes)
            for k in range(per_mailbox)
        ]
    )
    return mailboxes * per_mailbox


def test_simultaneous_claims_never_share_a_mailbox(open_store):
    threads, mailboxes, rounds = 8, 6, 12
    stores = [open_store() for _ in range(threads)]
    _fill(stores[0], mailboxes, 3)
    barrier = threading.Barrier(threads)
    results: list[list] = [[] for _ in range(rounds)]
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        store = stores[i]
        try:
            for r in range(rounds):
                barrier.wait(timeout=20)  # everybody claims at the same moment
                claim = store.claim(f"w{i}")
                with lock:
                    results[r].append(claim)
                barrier.wait(timeout=20)  # everybody has claimed; now give back
                if claim is not None:
                    store.release(claim)
        except BaseException as exc:  # reported below; a broken barrier frees the others
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    for r, claims in enumerate(results):
        taken = [c.mailbox for c in claims if c is not None]
        assert len(taken) == len(set(taken)), f"round {r}: a mailbox was claimed twice: {taken}"
        # Eight workers, six mailboxes: every mailbox is taken, two workers get None.
        assert len(taken) == mailboxes, f"round {r}: {taken}"
        for c in claims:
            if c is not None:
                assert {j.mailbox for j in c.jobs} == {c.mailbox}


def test_workers_drain_the_queue_exactly_once(open_store):
    threads, mailboxes, per_mailbox = 6, 10, 8
    stores = [open_store() for _ in range(threads)]
    total = _fill(stores[0], mailboxes, per_mailbox)
    active: set[str] = set()
    overlaps: list[str] = []
    acked: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        store = stores[i]
        try:
            barrier.wait(timeout=20)
            for _ in range(200):  # bounded: far more rounds than the work needs
                claim = store.claim(f"w{i}", limit=3)
                if claim is None:
                    if store.pending_count() == 0:
                        return
                    store.wait_for_work(0.05)
                    continue
                with lock:
                    if claim.mailbox in active:
                        overlaps.append(claim.mailbox)
                    active.add(claim.mailbox)
                for job in claim.jobs:
                    sync = SyncEntry(job.mailbox, job.record_key, f"id-{job.id}", "ck", "h")
                    if store.complete(job, sync):
                        with lock:
                            acked[(job.mailbox, job.record_key)] += 1
                with lock:
                    active.discard(claim.mailbox)  # before release: then nobody can have it yet
                store.release(claim)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    assert not overlaps, f"two workers held one mailbox at once: {overlaps}"
    assert len(acked) == total and set(acked.values()) == {1}
    assert stores[0].jobs() == []
    assert len(stores[0].sync_keys("user0")) == per_mailbox
