"""Units of exactly-once delivery: the sink's memory of ids and the id encoding of frames."""

from __future__ import annotations

import random

import msgpack
import zmq

from zflow.runtime import codec
from zflow.runtime.replica.exactly_once import Seen, Unacked


def test_seen_ranges_and_duplicates() -> None:
    s = Seen(stride=2)
    assert s.add_range(0, 5)  # source 0: seq 0..4 (ids 0, 2, 4, 6, 8)
    assert not s.add_range(8, 3)  # overlaps seq 4: nothing recorded
    assert s.add_range(10, 3)  # seq 5..7, adjacent: merged into one interval
    assert s.los[0] == [0] and s.his[0] == [8]
    assert s.add(1)  # source 1 is separate
    assert not s.add(1)
    assert not s.add(6)
    assert s.adds == 9


def test_seen_matches_a_set_under_random_order() -> None:
    rng = random.Random(3)
    stride = 3
    seen, ref = Seen(stride), set()
    for _ in range(3000):
        start, n = rng.randrange(600), rng.randrange(1, 8)
        ids = [start + j * stride for j in range(n)]
        fresh = not any(i in ref for i in ids)
        assert seen.add_range(start, n) == fresh
        if fresh:
            ref.update(ids)
    assert seen.adds == len(ref)
    for k in range(stride):  # intervals stay disjoint, sorted and merged
        pairs = list(zip(seen.los[k], seen.his[k], strict=True))
        assert all(lo < hi for lo, hi in pairs)
        assert all(a[1] < b[0] for a, b in zip(pairs, pairs[1:], strict=False))


class _Sock:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.type = zmq.PUSH

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def test_id_frames_use_ranges_when_contiguous() -> None:
    sock = _Sock()
    out = codec.IdOutbox("out", sock, "msgpack", 4, None)
    out.stride = 2
    out.extend_ids([1, 3, 5, 7], ["a", "b", "c", "d"])  # a full frame: a range
    out.extend_ids([9, 13], ["e", "f"])  # a gap: explicit ids
    out.flush()
    assert sock.frames[0][:1] == codec.IDR
    assert msgpack.unpackb(sock.frames[0][1:]) == [1, 4, ["a", "b", "c", "d"]]
    assert sock.frames[1][:1] == codec.IDS
    assert msgpack.unpackb(sock.frames[1][1:]) == [[9, 13], ["e", "f"]]
    assert out.msgs == 6


def test_forget_below_keeps_a_filtered_stream_small() -> None:
    """A transform that drops every other record leaves gaps; the source's low-water mark closes
    them, so the sink's memory does not grow with the stream."""
    s = Seen(stride=1)
    for i in range(0, 10_000, 2):
        assert s.add(i)
    assert len(s.los[0]) == 5000
    s.forget_below(9_000)
    assert len(s.los[0]) == 500 and s.los[0][0] == 0 and s.his[0][0] == 9_001
    assert not s.add(8_999)  # below the mark: acknowledged long ago, a late duplicate
    assert s.add(9_001)  # fills the gap: [0, 9001) and [9002, 9003) become one
    s.forget_below(100)  # an older mark changes nothing
    assert s.los[0][0] == 0 and s.his[0][0] == 9_003


# -- Unacked: what a source holds, per frame, and who holds it ----------------------------------
def _frames(u: Unacked, *sizes: int) -> list:
    out, first = [], 0
    for n in sizes:
        out.append(u.add(first, [f"r{first + k}" for k in range(n)]))
        first += n
    return out


def test_whole_frames_are_acknowledged_at_once_and_single_ids_one_by_one() -> None:
    u = Unacked(1)
    _frames(u, 3, 3)
    assert (len(u), u.low()) == (6, 0)
    u.ack_range(0, 3)
    assert (len(u), list(u.frames), u.low()) == (3, [3], 3)
    u.ack_ids([4, 99])  # 99 was never sent
    assert (len(u), u.low(), dict(u)) == (2, 3, {3: "r3", 5: "r5"})
    u.ack_range(3, 3)  # a range over a frame already partly acknowledged
    assert (len(u), u.frames, u.low()) == (0, {}, None)


def test_a_dead_replica_s_frames_are_resent_and_untaken_ones_once_proven_in_its_pipe() -> None:
    u = Unacked(1)
    a, b, c, d = _frames(u, 2, 2, 2, 2)  # sent in this order: 0, 1, 2, 3
    u.took(range(0, 2), "w.0", first_hop=True)
    u.took(range(2, 4), "w.1", first_hop=True)
    # c and d: nobody said they took them (in a pipe, or just not reported yet)
    assert u.died("w.0", ["w.1", "w.2"]) == [a]
    assert u.cleared() == []  # w.1 and w.2 have not taken anything sent after c or d
    e = u.add(8, ["r8", "r9"])
    u.took(range(8, 10), "w.1", first_hop=True)
    assert u.cleared() == []  # w.2 could still have c and d in its pipe
    u.took(range(6, 8), "w.2", first_hop=True)  # w.2 took d: c, sent before, was not w.2's
    assert u.cleared() == [c]
    assert (c.holder, d.holder, e.holder) == (None, "w.2", "w.1")
    assert u.suspects == {}


def test_a_suspect_acknowledged_or_taken_meanwhile_is_not_resent() -> None:
    u = Unacked(1)
    a, b = _frames(u, 1, 1)
    u.died("w.9", ["w.1"])
    u.ack_range(0, 1)
    u.took(range(1, 2), "w.1", first_hop=True)
    c = u.add(2, ["r2"])
    u.took(range(2, 3), "w.1", first_hop=True)
    assert u.cleared() == [] and c.holder == "w.1"


def test_a_resent_frame_counts_as_sent_again() -> None:
    u = Unacked(1)
    (a,) = _frames(u, 1)
    u.took(range(0, 1), "w.0", first_hop=True)
    assert u.died("w.0", []) == [a]
    u.resent(a)
    assert (a.holder, a.sent) == (None, 1)
    # receivers that took it deeper in the pipeline hold it, but say nothing of pipe order
    u.took(range(0, 1), "t.0", first_hop=False)
    assert a.holder == "t.0" and u.taken == {}


def test_partly_taken_frames_are_held_by_whoever_took_a_part() -> None:
    u = Unacked(2)
    b = u.add(0, ["x", "y", "z"])  # ids 0, 2, 4
    u.took([2, 4], "t.1", first_hop=False)
    assert b.holder == "t.1"
    assert u.pending(b) == ([0, 2, 4], ["x", "y", "z"])
    u.ack_ids([2])
    assert u.pending(b) == ([0, 4], ["x", "z"])


def test_a_range_taken_marks_exactly_the_frames_it_spans() -> None:
    u = Unacked(2)  # ids of source 1 of 2: 1, 3, 5, ...
    a = u.add(1, ["a1", "a3"])
    b = u.add(5, ["b5", "b7"])
    c = u.add(9, ["c9", "c11"])
    u.took(range(3, 9, 2), "t.0", first_hop=False)  # 3, 5, 7: the end of a, all of b
    assert (a.holder, b.holder, c.holder) == ("t.0", "t.0", None)
    u.ack_range(9, 2)
    u.took(range(9, 13, 2), "t.1", first_hop=True)  # after its ack: nothing to mark
    assert (a.holder, b.holder, u.taken) == ("t.0", "t.0", {})
    u.took(range(13, 17, 2), "t.1", first_hop=True)  # never sent
    assert (a.holder, b.holder) == ("t.0", "t.0")


def test_a_source_frame_keeps_its_bytes_and_gives_back_the_records(monkeypatch) -> None:
    out = codec.IdOutbox("work", _Sink(), "msgpack", 3, None)
    out.stride = 2
    out.kept = kept = []
    recs = [{"n": i, "s": "x" * i} for i in range(8)]  # columns, in frames of 3
    out.extend_ids(range(1, 17, 2), recs)
    out.flush()
    assert len(kept) == 3 and kept == out.sock.frames
    u = Unacked(2)
    f = u.add(1, recs, sum(map(len, kept)), kept)
    assert f.wire is kept and f.size == sum(map(len, kept))
    assert u.pending(f) == (list(range(1, 17, 2)), recs)
    u.ack_ids([3])
    decoded = []
    real = codec.id_frame_records
    monkeypatch.setattr(codec, "id_frame_records", lambda w: decoded.append(w) or real(w))
    assert u.pending(f) == ([1, *range(5, 17, 2)], [recs[0], *recs[2:]])
    assert len(decoded) == 3  # each kept frame once per resend, not once per record
    assert u[7] == recs[3] and 3 not in u
    assert u.low() == 1
    u.ack_ids([1])
    assert u.low() == 5 and len(u) == 6


class _Sink:
    """A socket that keeps what is sent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def test_acknowledge_takes_ranges_one_range_or_ids() -> None:
    from zflow.runtime.replica.exactly_once import acknowledge

    u = Unacked(1)
    _frames(u, 2, 2, 2, 2)
    acknowledge(u, 1, {"rs": [[0, 2], [4, 2]]})
    assert list(u.frames) == [2, 6]
    acknowledge(u, 1, {"r": [2, 2]})
    acknowledge(u, 1, {"ids": [7]})
    assert dict(u) == {6: "r6"}


def test_a_second_death_does_not_resend_a_suspect_twice() -> None:
    u = Unacked(1)
    (a,) = _frames(u, 1)
    u.died("w.0", ["w.1", "w.2"])
    u.died("w.1", ["w.2"])  # the frame now waits only for w.2
    assert list(u.suspects) == [0] and u.suspects[0][2] == {"w.2"}
    b = u.add(1, ["r1"])
    u.took(range(1, 2), "w.2", first_hop=True)
    assert u.cleared() == [a] and b.holder == "w.2"
    assert u.cleared() == [] and u.suspects == {}


def test_a_source_s_window_is_twice_what_the_pipes_hold() -> None:
    from pathlib import Path

    from zflow.plan import build_plan
    from zflow.runtime.spec import WINDOW, build_replica_spec, eo_window
    from zflow.spec import load

    squares = str(Path(__file__).resolve().parent.parent / "topologies" / "squares.yaml")

    def plan(*opts: str, workers: int) -> object:
        res = load(squares, env={}, overrides=list(opts), scale=[f"worker={workers}"])
        assert res.ok
        return build_plan(res.topology, squares)

    # 40 workers: two hops of 40 pipes, 16 frames at each end, 1,000 records a frame (the
    # control channel's PUB/SUB is not data)
    p40 = plan(workers=40)
    assert eo_window(p40, 1) == 2 * (40 + 40) * (16 + 16) * 1000
    assert eo_window(p40, 4) == eo_window(p40, 1) // 4  # sources share the pipes
    assert eo_window(plan(workers=2), 1) == WINDOW  # never below the default
    assert build_replica_spec(p40, "ventilator", 0, 1).window == 5_120_000
    # best-effort keeps no window
    be = plan("delivery=best-effort", workers=40)
    assert build_replica_spec(be, "ventilator", 0, 1).window == WINDOW
