"""Lanes take turns at the CPU, a lane pushing saves first (pure unit: threads and the turn, no server)."""

from __future__ import annotations

import threading

from tsl_exchange_plugin.backends import turns
from tsl_exchange_plugin.backends.turns import Turns
from tsl_exchange_plugin.testing import wait_for


def test_outside_a_turn_pause_and_resume_do_nothing():
    turns.pause()
    turns.resume()
    with turns.sitting_out():
        pass  # nothing to give back, nothing to wait for


def lane(
    shared: Turns,
    entered: threading.Event,
    leave: threading.Event,
    pause_first: threading.Event | None = None,
):
    def run() -> None:
        with shared.taking_part():
            entered.set()
            if pause_first is not None:
                pause_first.wait(5)
                turns.pause()
            leave.wait(5)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_lane_waits_for_the_turn_until_the_other_sends_its_request():
    shared = Turns()
    a_in, a_leave, a_pause = threading.Event(), threading.Event(), threading.Event()
    b_in, b_leave = threading.Event(), threading.Event()
    a = lane(shared, a_in, a_leave, pause_first=a_pause)
    assert a_in.wait(5)
    b = lane(shared, b_in, b_leave)
    assert not b_in.wait(0.3)  # A has the turn and has not sent anything
    a_pause.set()  # A's request goes on the wire
    assert b_in.wait(5)
    b_leave.set()
    a_leave.set()
    a.join(5)
    b.join(5)
    assert not a.is_alive() and not b.is_alive()


def test_a_turn_never_held_back_longer_than_patience(monkeypatch):
    monkeypatch.setattr(turns, "PATIENCE", 0.05)
    shared = Turns()
    a_in, a_leave = threading.Event(), threading.Event()
    b_in, b_leave = threading.Event(), threading.Event()
    a = lane(shared, a_in, a_leave)  # takes the turn and keeps it
    assert a_in.wait(5)
    b = lane(shared, b_in, b_leave)
    assert b_in.wait(5)  # B goes on without the turn instead of waiting for ever
    b_leave.set()
    b.join(5)
    a_leave.set()
    a.join(5)
    # B never had the turn, so it gave nothing back; A gave back its own: the turn is free.
    assert shared.free()


def test_sitting_out_frees_the_turn_and_takes_it_back():
    shared = Turns()
    inside, done = threading.Event(), threading.Event()
    other_in, other_leave = threading.Event(), threading.Event()
    seen: list[bool] = []

    def run() -> None:
        with shared.taking_part():
            with turns.sitting_out():
                inside.set()
                assert other_in.wait(5)  # the other lane got the turn meanwhile
                turns.resume()  # no effect while sitting out: must not wait for the other lane
                seen.append(True)
                other_leave.set()
            seen.append(turns._mine.held)  # back in: this lane holds the turn again
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert inside.wait(5)
    o = lane(shared, other_in, other_leave)
    assert done.wait(5)
    t.join(5)
    o.join(5)
    assert seen == [True, True]


def test_a_lane_pushing_saves_gets_the_turn_before_the_bulk_lanes_waiting_for_it():
    shared = Turns()
    a_in, a_leave, a_pause = threading.Event(), threading.Event(), threading.Event()
    a = lane(shared, a_in, a_leave, pause_first=a_pause)  # holds the turn
    assert a_in.wait(5)
    order: list[str] = []
    done = {name: threading.Event() for name in ("bulk", "saves")}

    def waiting_lane(name: str, first: bool) -> threading.Thread:
        def run() -> None:
            with shared.taking_part(first=first):
                order.append(name)
                done[name].wait(5)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    bulk = waiting_lane("bulk", False)
    wait_for(lambda: shared._rest._waiters, 5, "the bulk lane waiting")
    saves = waiting_lane("saves", True)
    wait_for(lambda: shared._waiting_first == 1, 5, "the lane of saves waiting")
    a_pause.set()  # A's request goes out: the turn is handed on
    wait_for(lambda: order, 5, "a lane to get the turn")
    assert order == ["saves"]
    done["saves"].set()
    wait_for(lambda: len(order) == 2, 5, "the bulk lane to get the turn")
    assert order == ["saves", "bulk"]
    done["bulk"].set()
    a_leave.set()
    for t in (a, bulk, saves):
        t.join(5)
    assert shared.free()


def test_a_slice_of_saves_takes_its_turns_first_and_later_slices_do_not():
    shared = Turns()
    seen: list[bool] = []

    def run() -> None:
        with shared.taking_part(first=True):
            seen.append(turns._mine.first)  # the start went first, the lane itself does not
            with turns.going_first():
                seen.append(turns._mine.first)
            seen.append(turns._mine.first)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert seen == [False, True, False]
