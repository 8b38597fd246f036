"""SQLite across processes: a committed enqueue survives SIGKILL, and worker
processes on one file never share a mailbox."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

_PRODUCER = textwrap.dedent(
    """
    import sys, time
    from tsl_exchange_plugin.outbox.base import Change
    from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox

    box = SQLiteOutbox(sys.argv[1])
    n = 0
    while True:  # runs until killed
        n += 1
        box.enqueue([Change("anna", f"contact:{n}", "upsert", '{"n": %d}' % n),
                     Change("anna", "contact:hot", "upsert", '{"n": %d}' % n)])
        print(f"committed {n}", flush=True)
    """
)


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_committed_enqueue_survives_sigkill(tmp_path):
    path = str(tmp_path / "outbox.sqlite3")
    child = _start(_PRODUCER, path)
    reported = 0
    try:
        deadline = time.monotonic() + 20
        while reported < 25 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            assert line.startswith("committed "), line
            reported = int(line.split()[1])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert reported >= 25, child.stderr.read()

    box = SQLiteOutbox(path)
    try:
        keys = {j.record_key: j for j in box.jobs("anna")}
        # Every change the child reported as committed is there (maybe a few more).
        for n in range(1, reported + 1):
            assert f"contact:{n}" in keys
        hot = keys["contact:hot"]
        assert hot.version >= reported and json.loads(hot.payload)["n"] == hot.version
        # The killed writer left no lock behind: the file is fully usable.
        box.enqueue([Change("anna", "contact:after", "upsert", "{}")])
        claim = box.claim("w1")
        assert claim is not None and claim.mailbox == "anna"
    finally:
        box.close()


_WORKER = textwrap.dedent(
    """
    import sys, time
    from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox

    box = SQLiteOutbox(sys.argv[1])
    me = sys.argv[2]
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for _ in range(2000):
        claim = box.claim(me, limit=2)
        if claim is None:
            if box.pending_count() == 0:
                break
            box.wait_for_work(0.02)
            continue
        print(f"claim {claim.mailbox} {time.time()}", flush=True)
        for job in claim.jobs:
            if box.complete(job, None):
                print(f"ack {job.mailbox} {job.record_key}", flush=True)
        print(f"release {claim.mailbox} {time.time()}", flush=True)
        box.release(claim)
    print("done", flush=True)
    """
)


def test_worker_processes_share_one_file_without_overlap(tmp_path):
    path = str(tmp_path / "outbox.sqlite3")
    box = SQLiteOutbox(path)
    changes = [Change(f"user{m}", f"contact:{k}", "upsert", "{}") for m in range(8) for k in range(6)]
    box.enqueue(changes)
    procs = [_start(_WORKER, path, f"p{i}") for i in range(3)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for p in procs:  # all imported and open: go
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    acks: list[tuple[str, str]] = []
    spans: list[tuple[str, float, float]] = []
    for out in outputs:
        lines = out.split("\n")
        assert "done" in lines, out
        open_claims: dict[str, float] = {}
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "ack":
                acks.append((parts[1], parts[2]))
            elif parts[0] == "claim":
                open_claims[parts[1]] = float(parts[2])
            elif parts[0] == "release":
                spans.append((parts[1], open_claims.pop(parts[1]), float(parts[2])))
    assert sorted(acks) == sorted((c.mailbox, c.record_key) for c in changes)
    # No two processes held one mailbox at overlapping times (claim..release
    # windows as each process saw them; the lease covers at least that window).
    by_mailbox: dict[str, list[tuple[float, float]]] = {}
    for mailbox, start, end in spans:
        by_mailbox.setdefault(mailbox, []).append((start, end))
    for mailbox, windows in by_mailbox.items():
        windows.sort()
        for (_, end1), (start2, _) in zip(windows, windows[1:], strict=False):
            assert start2 >= end1, f"{mailbox}: overlapping claims {windows}"
    assert box.jobs() == []
    box.close()


_ONE_ENQUEUE = textwrap.dedent(
    """
    import sys
    from tsl_exchange_plugin.outbox.base import Change
    from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox

    box = SQLiteOutbox(sys.argv[1])
    sys.stdin.readline()
    box.enqueue([Change("anna", "contact:1", "upsert", "{}")])
    print("committed", flush=True)
    """
)


def test_wait_for_work_sees_an_enqueue_from_another_process(tmp_path):
    """No in-process signal can reach across processes: this wake-up comes from
    polling the file's data_version."""
    path = str(tmp_path / "outbox.sqlite3")
    box = SQLiteOutbox(path)
    child = _start(_ONE_ENQUEUE, path)
    try:
        assert box.wait_for_work(0.2) is False
        child.stdin.write("go\n")
        child.stdin.flush()
        t = time.monotonic()
        assert box.wait_for_work(20) is True
        assert time.monotonic() - t < 5
        assert child.stdout.readline().strip() == "committed"
        assert box.pending_count() == 1
    finally:
        child.kill()
        child.wait(10)
        box.close()
