"""The replica state machine and the restart policy: pure functions, every case."""

from __future__ import annotations

import itertools

import pytest

from zflow.runtime.restarts import RestartPolicy, next_restart
from zflow.runtime.slots import Counters, Slot
from zflow.runtime.states import (
    ALIVE,
    TRANSITIONS,
    InvalidTransition,
    ReplicaState,
    transition,
)

S = ReplicaState

#: the diagram in states.py, written out by hand: a change to TRANSITIONS must change this too
EXPECTED = {
    (S.STARTING, S.BOUND), (S.STARTING, S.READY),
    (S.BOUND, S.CONNECTING), (S.BOUND, S.READY),
    (S.CONNECTING, S.READY),
    (S.READY, S.RUNNING),
    (S.RUNNING, S.FINISHED),
    (S.STOPPED, S.RESTARTING), (S.FAILED, S.RESTARTING),
    (S.RESTARTING, S.STARTING), (S.RESTARTING, S.STOPPED), (S.RESTARTING, S.FAILED),
} | {(live, end) for live in ALIVE for end in (S.STOPPED, S.FAILED)}


@pytest.mark.parametrize("a,b", list(itertools.product(ReplicaState, repeat=2)))
def test_every_transition(a: ReplicaState, b: ReplicaState) -> None:
    if a is b or (a, b) in EXPECTED:
        assert transition(a, b) is b
    else:
        with pytest.raises(InvalidTransition, match=f"{a.value} → {b.value}"):
            transition(a, b)


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(ReplicaState)
    assert {(a, b) for a, bs in TRANSITIONS.items() for b in bs} == EXPECTED


def test_slot_moves_only_through_the_machine() -> None:
    slot = Slot("w", 0, "python")
    assert slot.to(S.BOUND) is True
    assert slot.to(S.BOUND) is False  # no change
    with pytest.raises(InvalidTransition):
        slot.to(S.FINISHED)
    assert slot.state is S.BOUND
    assert slot.alive
    slot.to(S.FAILED)
    assert not slot.alive


def test_new_incarnation_forgets_the_last_one_but_keeps_history() -> None:
    slot = Slot("w", 3, "python", bound={"out": "ipc:///r/w.3.out"})
    slot.incarnation = 1
    slot.finished = True
    slot.fatal = {"phase": "run"}
    slot.counters.cur = {"inp": [5, 5, 50, 50]}
    slot.counters.errors = 2
    slot.counters.fold()
    slot.restarts = [1.0]
    slot.new_incarnation()
    assert slot.identity == b"w.3#2"
    assert (slot.finished, slot.fatal, slot.pid) == (False, None, None)
    assert slot.bound == {"out": "ipc:///r/w.3.out"}  # a restart binds the same endpoint
    assert slot.restarts == [1.0]
    assert slot.counters.total("inp", 0) == 5 and slot.counters.all_errors == 2


def test_counters_fold_adds_incarnations() -> None:
    c = Counters()
    c.cur = {"a": [1, 2, 3, 4]}
    c.errors = 1
    c.fold()
    c.cur = {"a": [10, 20, 30, 40], "b": [1, 0, 0, 0]}
    c.errors = 2
    assert c.cumulative() == {"a": (11, 22, 33, 44), "b": (1, 0, 0, 0)}
    assert c.all_errors == 3
    c.fold()
    assert c.cur == {} and c.base == {"a": [11, 22, 33, 44], "b": [1, 0, 0, 0]}


POLICY = RestartPolicy(mode="on-failure", max_restarts=3, window=10.0, initial=0.1, max_delay=0.3)


def test_backoff_doubles_up_to_the_max() -> None:
    history: list[float] = []
    delays = [next_restart(POLICY, history, t).delay for t in (0.0, 1.0, 2.0)]
    assert delays == [0.1, 0.2, 0.3]
    assert history == [0.0, 1.0, 2.0]


def test_crash_loop_after_max_restarts_within_the_window() -> None:
    history = [0.0, 1.0, 2.0]
    v = next_restart(POLICY, history, 3.0)
    assert v.crash_loop and v.delay is None and v.failures == 4
    assert history == [0.0, 1.0, 2.0]  # a crash loop is not a restart


def test_restarts_outside_the_window_are_forgotten() -> None:
    history = [0.0, 1.0, 2.0]
    v = next_restart(POLICY, history, 10.5)  # 0.0 is more than 10 s ago
    assert not v.crash_loop and v.delay == 0.3
    assert history == [1.0, 2.0, 10.5]
    v = next_restart(POLICY, [0.0], 10.0)  # exactly the window: out
    assert v.delay == 0.1
