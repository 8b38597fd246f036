"""The journal file: checksummed lines, a torn last line dropped, replay in order, intents."""

from __future__ import annotations

import pytest

from tsl_exchange_plugin.outbox.journal import (
    Journal,
    JournalRecordUnusable,
    JournalReplayStopped,
    encode_line,
)


def event(n: int) -> dict:
    return {"t": "saved", "kind": "contact", "id": str(n), "record": {"n": n}, "user": None}


def test_records_come_back_in_order_and_the_file_is_empty_after_replay(tmp_path):
    j = Journal(str(tmp_path))
    for n in range(3):
        j.append(event(n))
    assert j.needs_replay() and j.info().waiting == 3
    seen = []
    assert j.replay(lambda rec: seen.append(rec["id"])) == 3
    assert seen == ["0", "1", "2"]
    assert not j.needs_replay() and j.info().size_bytes == 0


def test_a_torn_last_line_is_dropped_and_never_applied(tmp_path):
    j = Journal(str(tmp_path))
    j.append(event(1))
    j.append(event(2))
    torn = encode_line(event(3))
    with open(j.path, "ab") as fh:
        fh.write(torn[: len(torn) // 2])  # the crash hit in the middle of the write
    reopened = Journal(str(tmp_path))  # the next start
    assert [r["id"] for r in reopened.records()] == ["1", "2"]
    assert reopened.info().waiting == 2
    reopened.append(event(4))  # does not extend the torn line
    seen = []
    reopened.replay(lambda rec: seen.append(rec["id"]))
    assert seen == ["1", "2", "4"]


def test_a_line_with_a_wrong_checksum_is_skipped(tmp_path):
    j = Journal(str(tmp_path))
    j.append(event(1))
    j.append(event(2))
    data = bytearray(open(j.path, "rb").read())
    first_end = data.index(b"\n")
    data[first_end - 3] ^= 0x01  # one flipped bit inside the first record's JSON
    open(j.path, "wb").write(bytes(data))
    assert [r["id"] for r in Journal(str(tmp_path)).records()] == ["2"]


def test_open_intents_are_replayed_closed_and_live_ones_are_not(tmp_path):
    before = Journal(str(tmp_path))  # the process before a crash
    closed = before.open_intent({"contacts": ["1"]})
    before.close_intent(closed)
    assert not before.needs_replay()
    before.open_intent({"contacts": ["2"]})  # never closed: the process died
    j = Journal(str(tmp_path))  # the next start
    assert j.needs_replay()
    live = j.open_intent({"contacts": ["3"]})  # this process is still completing it
    seen = []
    j.replay(lambda rec: seen.append(rec["contacts"]))
    assert seen == [["2"]]
    # The live intent survived the replay's truncation; it closes itself.
    assert [r.get("id") for r in j.records()] == [live]
    j.close_intent(live)
    assert not j.needs_replay() and j.records() == []


def test_an_abandoned_intent_waits_for_the_replay(tmp_path):
    j = Journal(str(tmp_path))
    ident = j.open_intent({"contacts": ["7"]})
    assert not j.needs_replay()  # being completed right now
    j.abandon_intent(ident)  # the queue failed
    assert j.needs_replay()
    seen = []
    j.replay(lambda rec: seen.append(rec["id"]))
    assert seen == [ident] and not j.needs_replay()


def test_replay_stops_where_the_queue_fails_and_resumes_in_order(tmp_path):
    j = Journal(str(tmp_path))
    for n in range(4):
        j.append(event(n))
    seen = []

    def flaky(rec):
        if rec["id"] == "2":
            raise OSError("database is locked")
        seen.append(rec["id"])

    with pytest.raises(JournalReplayStopped):
        j.replay(flaky)
    assert j.needs_replay() and j.info().waiting == 4
    seen.clear()
    j.replay(lambda rec: seen.append(rec["id"]))
    assert seen == ["0", "1", "2", "3"]  # from the start: the same sequence again, same end state


def test_saves_arriving_during_the_replay_are_replayed_after_it(tmp_path):
    j = Journal(str(tmp_path))
    j.append(event(1))
    seen = []

    def apply(rec):
        seen.append(rec["id"])
        if rec["id"] == "1":
            j.append(event(2))  # a host save while the replay runs

    j.replay(apply)
    assert seen == ["1", "2"] and not j.needs_replay()


def test_an_unreadable_record_is_set_aside_and_does_not_block_the_rest(tmp_path):
    j = Journal(str(tmp_path))
    for n in range(3):
        j.append(event(n))
    seen, told = [], []

    def apply(rec):
        if rec["id"] == "1":
            raise JournalRecordUnusable("kaputt")
        seen.append(rec["id"])

    j.replay(apply, rejected=lambda rec, exc: told.append(rec["id"]))
    assert seen == ["0", "2"] and told == ["1"]
    assert "kaputt" not in open(j.rejected_path, encoding="utf-8").read()
    assert '"id":"1"' in open(j.rejected_path, encoding="utf-8").read()
