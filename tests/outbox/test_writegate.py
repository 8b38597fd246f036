"""The host's save takes SQLite's write lock before the worker's writes that wait for it
(threads and the gate only; the order is observed, not timed)."""

from __future__ import annotations

import json
import threading

from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.outbox.writegate import WriteGate
from tsl_exchange_plugin.testing import wait_for


def writer(gate: WriteGate, order: list[str], name: str, *, first: bool) -> threading.Thread:
    def run() -> None:
        with gate.hold(first=first):
            order.append(name)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_waiting_save_goes_before_the_worker_writes_that_waited_longer():
    gate = WriteGate()
    order: list[str] = []
    release = threading.Event()
    holder_in = threading.Event()

    def holder() -> None:
        with gate.hold():
            holder_in.set()
            release.wait(10)
            order.append("holder")

    h = threading.Thread(target=holder, daemon=True)
    h.start()
    assert holder_in.wait(10)
    workers = [writer(gate, order, f"ack{n}", first=False) for n in range(3)]
    wait_for(lambda: gate.waiting() == (0, 3), 10, "three worker writes waiting")
    save = writer(gate, order, "save", first=True)
    wait_for(lambda: gate.waiting() == (1, 3), 10, "the save waiting")
    release.set()
    for t in [h, save, *workers]:
        t.join(10)
    assert order[:2] == ["holder", "save"]
    assert sorted(order[2:]) == ["ack0", "ack1", "ack2"]
    assert gate.waiting() == (0, 0)


def test_the_gate_lets_one_writer_in_at_a_time():
    gate = WriteGate()
    inside = 0
    most = 0
    lock = threading.Lock()

    def run(first: bool) -> None:
        nonlocal inside, most
        for _ in range(200):
            with gate.hold(first=first):
                with lock:
                    inside += 1
                    most = max(most, inside)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=run, args=(n % 2 == 0,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most == 1
    assert gate.waiting() == (0, 0)


def test_the_sqlite_store_lets_a_save_in_before_a_waiting_ack(tmp_path):
    """The same order through the store: the save's newer version is queued first, so the ack of
    the version the worker pushed finds it replaced and leaves it queued."""
    box = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    try:
        box.enqueue([Change("anna", "contact:1", "upsert", json.dumps({"n": 1}), 1, 1)])
        claim = box.claim("w1")
        assert claim is not None
        release, holding = threading.Event(), threading.Event()
        results: dict[str, object] = {}

        def hold() -> None:  # another write of the worker, in progress
            with box._write():
                holding.set()
                release.wait(10)

        def ack() -> None:
            results["ack"] = box.complete_many(list(claim.jobs), fence=claim)

        def save() -> None:
            box.enqueue([Change("anna", "contact:1", "upsert", json.dumps({"n": 2}), 2, 0)])

        threads = [threading.Thread(target=hold, daemon=True)]
        threads[0].start()
        assert holding.wait(10)
        threads.append(threading.Thread(target=ack, daemon=True))
        threads[1].start()
        wait_for(lambda: box._gate.waiting() == (0, 1), 10, "the ack waiting")
        threads.append(threading.Thread(target=save, daemon=True))
        threads[2].start()
        wait_for(lambda: box._gate.waiting() == (1, 1), 10, "the save waiting")
        release.set()
        for t in threads:
            t.join(10)
        assert results["ack"] == [False]
        (job,) = box.jobs("anna")
        assert job.source_version == 2 and json.loads(job.payload) == {"n": 2}
    finally:
        box.close()
