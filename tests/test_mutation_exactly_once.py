"""An exactly-once source (replica/exactly_once.run_source) driven without processes or sleeps: a
scripted control plane says what is acknowledged each time the source listens, and a fake clock
moves 1/8 s each time (exact in binary, so boundaries are exact). Also `acknowledge`, and `Seen`
at its edges.

Written against mutants that survived the other unit tests (docs/mutation.md).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import zmq

from zflow.runtime import codec
from zflow.runtime import protocol as P
from zflow.runtime.replica import exactly_once
from zflow.runtime.replica.exactly_once import Seen, Unacked, acknowledge


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic  # a source's chunk is read in no time: chunks grow at once


class Sock:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def decoded(self) -> list[tuple[str, Any]]:
        return [("r" if f[:1] == codec.IDR else "ids", msgpack.unpackb(f[1:])) for f in self.frames]


class Ctl:
    """The source's control client. `on_listen(ctl, unacked)` runs each time the source reads
    the control socket (an ack arriving, a resend, a stop); then the clock moves `step`."""

    def __init__(self, clock: Clock, on_listen: Callable[[Ctl, dict], None]) -> None:
        self.clock = clock
        self.on_listen = on_listen
        self.stop_requested = False
        self.resend = False
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.polls: list[tuple[int, int]] = []
        self.listens = 0
        self.ticks = 0
        self.probe_ticks = 0
        self.unacked = Unacked(1)
        self.deaths: list = []
        self.interrupted = self.abandon = False
        self.ctrl = SimpleNamespace(poll=self.poll)
        self.max_unacked = 0

    step = 0.125

    def poll(self, timeout: int, flags: int) -> bool:
        self.polls.append((timeout, flags))
        return True

    def drain(self) -> None:
        self.listens += 1
        self.max_unacked = max(self.max_unacked, len(self.unacked))
        self.on_listen(self, self.unacked)
        self.clock.now += self.step

    def send(self, kind: str, **fields: Any) -> None:
        self.sent.append((kind, fields))

    def probe_tick(self) -> None:
        self.probe_ticks += 1

    def tick(self) -> None:
        self.ticks += 1

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f in self.sent if k == kind]


def source(monkeypatch: pytest.MonkeyPatch, on_listen: Callable[[Ctl, dict], None], *,
           sources: int = 1, index: int = 0, window: int = 100, lease: float = 5.0,
           batches: tuple[int, ...] = (2,), receivers: int = 0, window_bytes: int = 1 << 30,
           ) -> tuple[Any, Ctl, list[Sock], Clock]:
    clock = Clock()
    monkeypatch.setattr(exactly_once, "time", clock)
    ctl = Ctl(clock, on_listen)
    ctl.unacked.stride = sources
    socks = [Sock() for _ in batches]
    outs = []
    for sock, b in zip(socks, batches, strict=True):
        o = codec.IdOutbox("out", sock, "msgpack", b, None)
        o.stride = sources
        outs.append(o)
    node = SimpleNamespace(control=ctl, outboxes=outs, unacked=ctl.unacked,
                           spec=SimpleNamespace(sources=sources, source_index=index,
                                                window=window, lease=lease,
                                                window_bytes=window_bytes,
                                                socket=lambda name: SimpleNamespace(
                                                    peer_replicas=receivers)))
    return node, ctl, socks, clock


def ack_all(ctl: Ctl, unacked: dict) -> None:
    unacked.clear()


def test_a_source_numbers_sends_and_waits_for_every_ack(monkeypatch) -> None:
    node, ctl, (sock,), _ = source(monkeypatch, ack_all, sources=3, index=1)
    exactly_once.run_source(node, ["a", "b", "c", "d", "e"])
    assert sock.decoded() == [("r", [1, 2, ["a", "b"]]), ("r", [7, 2, ["c", "d"]]),
                              ("r", [13, 1, ["e"]])]
    assert ctl.sent[0] == (P.TOTAL, {"n": 5})
    assert node.unacked == {}
    assert ctl.polls == []  # never waited: the window never filled


def test_records_stay_unacknowledged_until_acked(monkeypatch) -> None:
    held: list[dict] = []

    def snapshot(ctl: Ctl, unacked: dict) -> None:
        held.append(dict(unacked))
        if len(held) == 3:
            ctl.stop_requested = True

    node, ctl, (sock,), _ = source(monkeypatch, snapshot, batches=(2,))
    exactly_once.run_source(node, iter(["a", "b", "c", "d", "e"]))
    # a generator may be slow: its first chunk is one record, and chunks grow while it is fast
    assert held[0] == {0: "a"} and held[2] == {0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}
    assert ctl.kinds(P.TOTAL) == []  # a generator has no length


def test_every_output_socket_gets_every_record_and_batches_follow_the_largest(
        monkeypatch) -> None:
    node, ctl, (a, b), _ = source(monkeypatch, ack_all, batches=(3, 1))
    exactly_once.run_source(node, range(4))
    assert a.decoded() == [("r", [0, 3, [0, 1, 2]]), ("r", [3, 1, [3]])]
    assert b.decoded() == [("r", [0, 1, [0]]), ("r", [1, 1, [1]]), ("r", [2, 1, [2]]),
                           ("r", [3, 1, [3]])]


def test_an_empty_source_is_done_at_once(monkeypatch) -> None:
    node, ctl, (sock,), _ = source(monkeypatch, ack_all)
    exactly_once.run_source(node, [])
    assert sock.frames == [] and ctl.sent == [(P.TOTAL, {"n": 0})]
    assert ctl.listens == 0


def test_the_window_bounds_what_is_unacknowledged(monkeypatch) -> None:
    def ack_slowly(ctl: Ctl, unacked: dict) -> None:
        if len(unacked) >= 3:  # the sink acknowledges only once the window is full
            del unacked[min(unacked)]

    node, ctl, (sock,), _ = source(monkeypatch, ack_slowly, window=3, batches=(2,))
    ctl.on_listen = lambda c, u: (ack_slowly(c, u), u.clear() if c.listens > 20 else None)
    exactly_once.run_source(node, range(7))
    assert ctl.max_unacked == 3
    assert sorted(i for _, d in sock.decoded() for i in range(d[0], d[0] + d[1])) == list(
        range(7))
    assert set(ctl.polls) == {(50, zmq.POLLIN)}  # a full window waits for acks


def test_an_exhausted_source_waits_for_its_last_acks(monkeypatch) -> None:
    def late(ctl: Ctl, unacked: dict) -> None:
        if len(ctl.polls) >= 3:
            unacked.clear()

    node, ctl, _, clock = source(monkeypatch, late, lease=10.0)
    exactly_once.run_source(node, ["a"])
    assert ctl.polls == [(50, zmq.POLLIN)] * 3  # once exhausted it waits for acks
    assert ctl.ticks == ctl.probe_ticks == ctl.listens == 4


def test_nothing_acknowledged_for_a_lease_resends(monkeypatch) -> None:
    def never_until_resent(ctl: Ctl, unacked: dict) -> None:
        if len(sock.frames) == 2:
            unacked.clear()

    node, ctl, (sock,), clock = source(monkeypatch, never_until_resent, lease=0.25)
    exactly_once.run_source(node, ["a", "b"])
    assert sock.decoded() == [("r", [0, 2, ["a", "b"]]), ("r", [0, 2, ["a", "b"]])]
    # sent at 0 s; the clock reads .125, .25, .375 after each listen: only .375 is over the
    # lease (resent then), and the resent frame is acknowledged at the 4th listen
    assert ctl.listens == 4
    assert not ctl.resend


def test_acks_restart_the_lease(monkeypatch) -> None:
    def one_by_one(ctl: Ctl, unacked: dict) -> None:
        if ctl.listens in (2, 4):
            del unacked[min(unacked)]
        if ctl.listens == 6:
            unacked.clear()

    node, ctl, (sock,), clock = source(monkeypatch, one_by_one, lease=0.25, batches=(3,))
    exactly_once.run_source(node, ["a", "b", "c"])
    assert len(sock.frames) == 1  # never more than 0.25 s without an ack: no resend


def test_a_resend_request_resends_what_is_unacknowledged(monkeypatch) -> None:
    def resend_once(ctl: Ctl, unacked: dict) -> None:
        if ctl.listens == 1:
            del unacked[1]
            ctl.resend = True
        else:
            unacked.clear()

    node, ctl, (sock,), _ = source(monkeypatch, resend_once, sources=2, index=1)
    exactly_once.run_source(node, ["a", "b", "c"])
    assert sock.decoded() == [("r", [1, 2, ["a", "b"]]), ("r", [3, 1, ["b"]]),
                              ("r", [5, 1, ["c"]])]
    assert not ctl.resend


def test_low_water_marks_every_quarter_second(monkeypatch) -> None:
    def slow(ctl: Ctl, unacked: dict) -> None:
        if ctl.listens == 3:
            del unacked[2]  # the lowest unacknowledged id becomes 5 (source 2 of 3)
        if ctl.listens == 5:
            unacked.clear()

    node, ctl, _, clock = source(monkeypatch, slow, sources=3, index=2, lease=10.0)
    exactly_once.run_source(node, ["a", "b"])
    # listening moves the clock to .125, .25, .375, .5, .625: a mark at .25 (id 2), then at
    # .5 (id 5); the next one would be due at .75
    assert ctl.kinds(P.LOW) == [{"id": 2}, {"id": 5}]


def test_the_low_mark_of_a_source_with_everything_acknowledged_is_its_next_id(
        monkeypatch) -> None:
    def stop_later(ctl: Ctl, unacked: dict) -> None:
        unacked.clear()
        ctl.clock.now += 0.25
        if ctl.listens == 2:
            ctl.stop_requested = True

    node, ctl, _, _ = source(monkeypatch, stop_later, sources=2, index=1)
    exactly_once.run_source(node, iter(range(100)))
    assert ctl.kinds(P.LOW)[0] == {"id": 1 * 2 + 1}  # one record sent: seq 1 is next


def test_a_stop_ends_the_source_at_once(monkeypatch) -> None:
    node, ctl, (sock,), _ = source(monkeypatch, ack_all)
    ctl.stop_requested = True
    exactly_once.run_source(node, ["a"])
    assert sock.frames == [] and ctl.listens == 0


# -- acknowledge ---------------------------------------------------------------------------------
def test_acknowledge_a_range_with_a_stride() -> None:
    unacked = Unacked(2)
    unacked.update({i: str(i) for i in range(1, 12, 2)} | {2: "2"})
    acknowledge(unacked, 2, {"r": [3, 3]})  # 3, 5, 7
    assert unacked == {1: "1", 9: "9", 11: "11", 2: "2"}
    acknowledge(unacked, 2, {"ids": [2, 11, 99]})  # unknown ids are fine (already acked)
    assert unacked == {1: "1", 9: "9"}
    acknowledge(unacked, 2, {"r": [9, 5]})
    assert unacked == {1: "1"}


# -- Seen at its edges ---------------------------------------------------------------------------
def test_seen_merges_with_both_neighbours() -> None:
    s = Seen(1)
    assert s.add_range(0, 2) and s.add_range(4, 2)
    assert s.add_range(2, 2)  # fills the gap exactly: one interval
    assert (s.los[0], s.his[0]) == ([0], [6])
    assert not s.add_range(5, 1) and not s.add_range(0, 1) and not s.add_range(5, 3)
    assert s.add_range(6, 1) and (s.los[0], s.his[0]) == ([0], [7])
    assert s.add_range(9, 1) and s.add_range(8, 1)  # adjacent on the right only
    assert (s.los[0], s.his[0]) == ([0, 8], [7, 10])
    assert s.adds == 9


def test_seen_forget_below() -> None:
    s = Seen(1)
    s.forget_below(0)
    s.forget_below(-3)
    assert (s.los[0], s.his[0]) == ([], [])
    s.forget_below(5)
    assert (s.los[0], s.his[0]) == ([0], [5])
    s.forget_below(5)  # nothing new
    s.forget_below(3)
    assert (s.los[0], s.his[0]) == ([0], [5])
    assert s.add_range(7, 2) and s.add_range(12, 1)
    s.forget_below(8)  # inside [7, 9): everything up to 9 is one interval
    assert (s.los[0], s.his[0]) == ([0, 12], [9, 13])
    s.forget_below(10)  # in a gap: [0, 10)
    assert (s.los[0], s.his[0]) == ([0, 12], [10, 13])
    s.forget_below(12)  # at the start of [12, 13)
    assert (s.los[0], s.his[0]) == ([0], [13])
    s2 = Seen(2)
    s2.add(7)
    s2.forget_below(5)  # source 1, seq 2
    assert (s2.los, s2.his) == ([[], [0, 3]], [[], [2, 4]])


# -- ids_applier: transforms that fail on a record ---------------------------------------------
def test_a_tolerant_transform_skips_what_fails_and_acknowledges_it(tmp_path) -> None:
    import json

    from test_replica_units import FakeSock, fake_node

    node = fake_node(stride=1, on_error="dead-letter", dead_letter=str(tmp_path / "dl.jsonl"))
    out = codec.IdOutbox("out", FakeSock(), "msgpack", 100, None)
    node.outboxes.append(out)

    def inv(x: int) -> float:
        return 1 / x

    apply_ids = exactly_once.ids_applier(node, inv, None, generator=False, tolerant=True)
    apply_ids([5, 6, 7, 8], [1, 0, 2, 0])
    assert sent(out) == [[[5, 7], [1.0, 0.5]]]
    assert node.control.ctrl.sent == [{"t": P.ACK, "ids": [6, 8]}]
    assert node.errors == 2
    lines = [json.loads(x) for x in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert [x["record"] for x in lines] == [0, 0]
    assert all("ZeroDivisionError" in json.dumps(x) for x in lines)
    apply_ids([9, 10], [4, 5])  # nothing dropped: nothing acknowledged
    assert sent(out)[1:] == [[9, 2, [0.25, 0.2]]]  # contiguous ids: sent as a range
    assert len(node.control.ctrl.sent) == 1
    apply_ids([11], [0])  # all dropped: nothing sent on
    assert len(sent(out)) == 2 and out.pending == []
    assert node.control.ctrl.sent[-1] == {"t": P.ACK, "ids": [11]}


def sent(out: codec.IdOutbox) -> list:
    """What an outbox sent, each frame decoded (its kind byte stripped)."""
    return [msgpack.unpackb(f[1:]) for f in out.sock.sent]


def test_an_intolerant_transform_fails_the_node_on_the_first_error() -> None:
    from test_replica_units import fake_node

    from zflow.runtime.replica.errors import NodeFailure

    node = fake_node(stride=1)
    node.outboxes.append(codec.IdOutbox("out", Sock(), "msgpack", 100, None))
    apply_ids = exactly_once.ids_applier(node, lambda x: 1 / x, None, generator=False,
                                         tolerant=False)
    with pytest.raises(NodeFailure) as e:
        apply_ids([1, 2], [1, 0])
    assert (e.value.phase, str(e.value)) == ("run", "ZeroDivisionError: division by zero")
    assert "Traceback" in e.value.extra["traceback"]



# -- generators: what one record makes travels as a group under its id ---------------------------
def _repeat(r: int):
    yield from [r] * r


def test_a_generator_transform_sends_groups_under_the_ids_it_was_given() -> None:
    from test_replica_units import fake_node

    node = fake_node(stride=1)
    out = codec.IdOutbox("out", Sock(), "msgpack", 100, None)
    node.outboxes.append(out)
    gen = exactly_once.ids_applier(node, _repeat, None, generator=True, tolerant=False)
    assert gen(range(5, 8), [2, 0, 1]) == 3
    # 6 made nothing: acknowledged at once, like a None result
    assert node.control.ctrl.sent == [{"t": P.ACK, "ids": [6]}]
    out.flush()
    assert out.sock.decoded() == [("ids", [[5, 7], [[2, 2], [1]]])]
    assert out.sock.frames[0][:1] == codec.IDSG and out.msgs == 3  # records, not groups
    assert gen(range(8, 10), [1, 3]) == 2
    out.flush()
    assert out.sock.frames[1][:1] == codec.IDRG
    assert msgpack.unpackb(out.sock.frames[1][1:]) == [8, 2, [[1], [3, 3, 3]]]


def test_groups_pass_through_transforms_and_a_sink_takes_each_group_once() -> None:
    from test_replica_units import fake_node

    node = fake_node(stride=1)
    out = codec.IdOutbox("out", Sock(), "msgpack", 100, None)
    node.outboxes.append(out)
    double = exactly_once.ids_applier(node, lambda x: None if x == 0 else 2 * x, None,
                                      generator=False, tolerant=False)
    assert double(range(0, 3), [[1, 2], [0], [0, 3]], grouped=True) == 5
    out.flush()
    assert out.sock.decoded() == [("ids", [[0, 2], [[2, 4], [6]]])]
    assert node.control.ctrl.sent == [{"t": P.ACK, "ids": [1]}]  # its group came to nothing

    sink = fake_node(stride=1)
    got: list = []
    take = exactly_once.ids_applier(sink, None, got.extend, generator=False, tolerant=False)
    assert take(range(0, 2), [[2, 4], [6]], grouped=True) == 3
    assert take([1, 2], [[6], [8, 8]], grouped=True) == 2  # id 1 again: dropped whole
    assert got == [2, 4, 6, 8, 8]
    assert sink.control.ctrl.sent == [{"t": P.ACK, "ids": [1, 2]}]
    assert sink.control.ack_rs == [[0, 2]]  # sent at the end of the receive loop's turn


def test_a_death_resends_only_what_the_dead_replica_held(monkeypatch) -> None:
    def script(ctl: Ctl, unacked: Unacked) -> None:
        if ctl.listens == 3:  # three frames out: w.0 took 0, w.1 took 1 and 2
            unacked.took(range(0, 1), "w.0", first_hop=True)
            unacked.took(range(1, 3), "w.1", first_hop=True)
            ctl.deaths.append(("w.0", ["w.1"]))
        elif ctl.listens == 6:
            unacked.clear()

    node, ctl, (sock,), _ = source(monkeypatch, script, batches=(1,), lease=10.0)
    exactly_once.run_source(node, ["a", "b", "c", "d", "e"])
    sent = [d[0] for _, d in sock.decoded()]
    assert sent == [0, 1, 2, 0, 3, 4]  # frame 0 again, then on; not 1 and 2 (w.1 has them)
    assert ctl.deaths == []


def test_frames_in_a_dead_pipe_are_resent_once_the_live_receivers_prove_it(monkeypatch) -> None:
    def script(ctl: Ctl, unacked: Unacked) -> None:
        if ctl.listens == 2:  # frames 0 and 1 out, nobody said they took them; w.0 dies
            ctl.deaths.append(("w.0", ["w.1"]))
        elif ctl.listens == 3:  # w.1 takes frame 2, sent after both: 0 and 1 were w.0's
            unacked.took(range(2, 3), "w.1", first_hop=True)
        elif ctl.listens == 6:
            unacked.clear()

    node, ctl, (sock,), _ = source(monkeypatch, script, batches=(1,), lease=10.0)
    exactly_once.run_source(node, ["a", "b", "c", "d", "e"])
    sent = [d[0] for _, d in sock.decoded()]
    assert sent == [0, 1, 2, 0, 1, 3, 4]


def test_a_short_stream_is_cut_to_reach_every_receiver(monkeypatch) -> None:
    node, ctl, (sock,), _ = source(monkeypatch, ack_all, batches=(100,), receivers=2)
    exactly_once.run_source(node, list(range(16)))
    assert [d[1] for _, d in sock.decoded()] == [2] * 8  # 4 frames per receiver
    node, ctl, (sock,), _ = source(monkeypatch, ack_all, batches=(100,), receivers=2)
    exactly_once.run_source(node, iter(range(16)))  # no length: nothing to cut by
    assert [d[1] for _, d in sock.decoded()] == [1, 2, 4, 8, 1]  # chunks grow while it is fast


def test_an_interrupted_source_sends_nothing_new_but_waits_for_what_is_in_flight(
        monkeypatch) -> None:
    def script(ctl: Ctl, unacked: Unacked) -> None:
        if ctl.listens == 2:  # Ctrl-C: zflow says interrupt, then stop
            ctl.interrupted = ctl.stop_requested = True
        elif ctl.listens == 4:
            unacked.ack_range(0, 1)
        elif ctl.listens == 5:
            unacked.ack_range(1, 1)

    node, ctl, (sock,), _ = source(monkeypatch, script, batches=(1,), lease=10.0)
    exactly_once.run_source(node, iter("abcdef"))
    assert [d[0] for _, d in sock.decoded()] == [0, 1]  # two frames out, no third
    assert ctl.listens == 5 and len(node.unacked) == 0  # returned once both were acknowledged
    node, ctl, (sock,), _ = source(monkeypatch, script, batches=(1,), lease=10.0)
    ctl.abandon = True  # a failed run: nothing in flight is worth waiting for
    exactly_once.run_source(node, iter("abcdef"))
    assert ctl.listens == 2 and len(node.unacked) == 2


def test_the_window_bounds_the_bytes_unacknowledged_too(monkeypatch) -> None:
    def ack_when_full(ctl: Ctl, unacked: Unacked) -> None:
        if len(ctl.polls) > len(acked):  # it waited: the oldest frame gets acknowledged
            f = next(iter(unacked.frames.values()))
            acked.append(f.size)
            unacked.ack_range(f.first, f.n)

    acked: list[int] = []
    big = "x" * 100  # a frame of one record is 105 bytes on the wire
    node, ctl, (sock,), _ = source(monkeypatch, ack_when_full, batches=(1,), window_bytes=250)
    exactly_once.run_source(node, [big] * 6)
    assert len(sock.frames) == 6 and set(acked) == {len(sock.frames[0])}
    assert ctl.max_unacked == 3  # 3 frames pass 250 bytes: it waits before the 4th
    assert len(ctl.polls) >= 3


def test_a_slow_generator_sends_each_record_as_it_comes(monkeypatch) -> None:
    """A chunk that takes over 1 ms to produce halves the next one: a slow source is never held
    back for a full frame (best-effort's source does the same)."""
    def slow():
        for x in range(12):
            clock.now += 0.002 if x >= 3 else 0.0  # the source gets slow after three records
            yield x

    node, ctl, (sock,), clock = source(monkeypatch, ack_all, batches=(100,), lease=100.0)
    exactly_once.run_source(node, slow())
    assert [d[1] for _, d in sock.decoded()] == [1, 2, 4, 2, 1, 1, 1]


def test_at_the_end_of_the_stream_suspects_are_resent_without_waiting_for_the_lease(
        monkeypatch) -> None:
    def script(ctl: Ctl, unacked: Unacked) -> None:
        if ctl.listens == 2:  # both frames out and untaken when w.0 dies; nobody takes more
            ctl.deaths.append(("w.0", ["w.1"]))
        elif len(sock.frames) == 4:  # the two were resent: acknowledged now
            unacked.clear()

    node, ctl, (sock,), clock = source(monkeypatch, script, batches=(1,), lease=100.0)
    exactly_once.run_source(node, ["a", "b"])
    assert [d[0] for _, d in sock.decoded()] == [0, 1, 0, 1]
    # sent at 0; exhausted and silent since: resent once SUSPECT_WAIT (0.5 s) had passed
    assert 0.5 < clock.now - 100.0 <= 0.5 + 2 * Ctl.step
