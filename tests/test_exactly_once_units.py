"""Units of exactly-once delivery: the sink's memory of ids and the id encoding of frames."""

from __future__ import annotations

import random

import msgpack
import zmq

from zflow.runtime import codec
from zflow.runtime.replica.exactly_once import Seen


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
