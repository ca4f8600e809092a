"""Data-plane frames (zflow/runtime/codec.py) without sockets: a fake socket records what is sent.

Batching, topics, plain-program codecs, end markers, the frame and byte counters telemetry reads,
the blocked-send hook, and the exactly-once id frames.
"""

from __future__ import annotations

import json

import msgpack
import pytest
import zmq

from zflow.runtime import codec
from zflow.runtime.codec import EncodeError, IdOutbox, Outbox


class Sock:
    def __init__(self, full: int = 0) -> None:
        self.frames: list[bytes] = []
        self.full = full  # how many sends fail with zmq.Again first

    def send(self, frame: bytes) -> None:
        if self.full:
            self.full -= 1
            raise zmq.Again()
        self.frames.append(frame)


def batches(sock: Sock) -> list[list]:
    return [codec.decode_batch(f) for f in sock.frames]


def test_outbox_fresh_state() -> None:
    out = Outbox("out", Sock(), "msgpack", 10, None)
    assert (out.name, out.codec, out.batch, out.topic) == ("out", "msgpack", 10, None)
    assert (out.pending, out.msgs, out.nbytes, out.blocked, out.stride) == ([], 0, 0, None, 1)
    plain = Outbox("o", Sock(), "json", 10, "t")
    assert plain.batch == 1 and plain.topic == "t"  # one record per message for plain programs


def test_records_travel_in_frames_of_batch_records() -> None:
    sock = Sock()
    out = Outbox("out", sock, "msgpack", 3, None)
    out.add(1)
    out.add(2)
    assert sock.frames == []  # not a full frame yet
    out.add(3)  # exactly `batch`: sent
    assert batches(sock) == [[1, 2, 3]]
    out.extend([4, 5])
    assert len(sock.frames) == 1
    out.extend([6, 7, 8, 9])  # 6 pending: two full frames at once
    assert batches(sock) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    out.add(10)
    out.flush()
    out.flush()  # nothing pending: nothing sent
    assert batches(sock) == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert all(f[:1] == b"\0" for f in sock.frames)  # no topic
    assert out.msgs == 10
    assert out.nbytes == sum(len(f) for f in sock.frames)
    assert out.pending == []


def test_a_batch_of_one_sends_every_record() -> None:
    sock = Sock()
    out = Outbox("out", sock, "msgpack", 1, None)
    out.extend([1])
    out.add(2)
    assert batches(sock) == [[1], [2]]


def test_topics_group_records_into_one_frame_per_topic() -> None:
    sock = Sock()
    out = Outbox("out", sock, "msgpack", 10, "city")
    out.extend([{"city": "paris", "t": 1}, {"city": "oslo", "t": 2}, {"city": "paris", "t": 3},
                {"t": 4}, 5, {"city": 7}])
    out.flush()
    assert sock.frames[0] == b"paris\0" + msgpack.packb([{"city": "paris", "t": 1},
                                                         {"city": "paris", "t": 3}])
    assert [f.split(b"\0")[0] for f in sock.frames] == [b"paris", b"oslo", b"", b"7"]
    assert batches(sock)[2] == [{"t": 4}, 5]  # no topic field, or not a map: empty topic
    assert out.msgs == 6
    assert out.nbytes == sum(len(f) for f in sock.frames)


@pytest.mark.parametrize("name,records,frames", [
    ("json", [{"a": 1}, [1, 2], "x"], [b'{"a":1}', b"[1,2]", b'"x"']),
    ("raw", [b"\x00\xff", "text", bytearray(b"ab")], [b"\x00\xff", b"text", b"ab"]),
])
def test_plain_codecs_send_one_record_per_message(name: str, records: list,
                                                  frames: list[bytes]) -> None:
    sock = Sock()
    out = Outbox("out", sock, name, 100, None)
    out.extend(records[:1])  # batch is 1 for plain codecs: sent at once
    assert sock.frames == frames[:1]
    out.extend(records[1:])
    assert sock.frames == frames
    assert out.msgs == 3 and out.nbytes == sum(len(f) for f in frames)


def test_an_empty_plain_message_is_never_sent() -> None:
    """An empty message means "end of stream" to a plain program: such a record is not sent."""
    sock = Sock()
    out = Outbox("out", sock, "raw", 1, None)
    out.add(b"")
    out.add(b"x")
    out.add("")
    assert sock.frames == [b"x"]
    assert (out.msgs, out.nbytes) == (1, 1)


def test_end_markers() -> None:
    sock = Sock()
    out = Outbox("out", sock, "msgpack", 10, None)
    out.add(1)
    out.end_marker("w.3", zf=True)  # pending records go first
    assert sock.frames[0] == b"\0" + msgpack.packb([1])
    assert sock.frames[1] == codec.ZF + msgpack.packb({"eos": "w.3"})
    assert codec.parse_control_frame(sock.frames[1]) == {"eos": "w.3"}
    plain = Sock()
    Outbox("out", plain, "json", 1, None).end_marker("w.3", zf=False)
    assert plain.frames == [b""]
    assert out.msgs == 1  # markers are not records


def test_a_full_pipe_lets_the_node_hear_zflow_until_the_send_goes_through() -> None:
    sock = Sock(full=2)
    out = Outbox("out", sock, "msgpack", 1, None)
    heard = []
    out.blocked = lambda: heard.append(len(sock.frames))
    out.add("x")
    assert heard == [0, 0]
    assert batches(sock) == [["x"]]
    quiet = Sock(full=2)
    Outbox("out", quiet, "msgpack", 1, None).add("y")  # no hook: it just retries
    assert batches(quiet) == [["y"]]


def test_the_blocked_hook_may_give_up() -> None:
    class GiveUp(Exception):
        pass

    def give_up() -> None:
        raise GiveUp

    out = Outbox("out", Sock(full=1), "msgpack", 1, None)
    out.blocked = give_up
    with pytest.raises(GiveUp):
        out.add("x")
    assert out.msgs == 0


def test_records_msgpack_cannot_carry_are_said_plainly() -> None:
    out = Outbox("out", Sock(), "msgpack", 1, None)
    with pytest.raises(EncodeError) as e:
        out.add({1, 2})
    assert str(e.value) == (
        "a record cannot be sent with msgpack (can not serialize 'set' object); records are "
        "dicts, lists, str, bytes, float, bool, None and ints within 64 bits")
    assert e.value.__cause__ is None and e.value.__suppress_context__
    with pytest.raises(EncodeError, match=r"^a record cannot be sent with msgpack \(Integer"):
        Outbox("out", Sock(), "msgpack", 1, None).add(2**70)


def test_encode_and_decode_one_record() -> None:
    assert codec.encode_one("json")({"a": [1, 2]}) == b'{"a":[1,2]}'
    assert codec.encode_one("raw")(b"\x01") == b"\x01"
    assert codec.encode_one("raw")("é") == "é".encode()
    assert codec.encode_one("raw")(memoryview(b"mv")) == b"mv"
    with pytest.raises(EncodeError) as e:
        codec.encode_one("raw")({"a": 1})
    assert str(e.value) == (
        "a dict record cannot be sent on a `codec: raw` socket: raw sockets carry bytes or str "
        "(use codec: json or msgpack for structured records)")
    assert codec.encode_one("msgpack")({"a": 1}) == msgpack.packb({"a": 1})
    assert codec.decode_one("json")(b'{"a":1}') == {"a": 1}
    assert codec.decode_one("json") is json.loads
    assert codec.decode_one("raw")(b"\x01") == b"\x01" and codec.decode_one("raw") is bytes
    assert codec.decode_one("msgpack")(msgpack.packb([1])) == [1]


def test_decode_batch_strips_the_topic() -> None:
    body = msgpack.packb([1, "a"])
    assert codec.decode_batch(b"\0" + body) == [1, "a"]
    assert codec.decode_batch(b"paris\0" + body) == [1, "a"]
    assert codec.decode_batch(b"t\0" + msgpack.packb(["x\0y"])) == ["x\0y"]
    with pytest.raises(ValueError, match=r"^not a zflow msgpack frame \(no topic separator\)$"):
        codec.decode_batch(b"topic" + body.replace(b"\0", b""))


def test_control_frames() -> None:
    probe = codec.control_frame("probe", "pub.0")
    assert probe == b"\xff" + msgpack.packb({"probe": "pub.0"})
    assert codec.parse_control_frame(probe) == {"probe": "pub.0"}
    assert codec.parse_control_frame(codec.control_frame("eos", "p.1")) == {"eos": "p.1"}
    assert codec.parse_control_frame(b"\0" + msgpack.packb({"probe": "x"})) is None
    assert codec.parse_control_frame(b"") is None
    # a raw record may start with 0xFF (a JPEG): data unless it is exactly a zflow marker
    assert codec.parse_control_frame(b"\xff\xd8\xff\xe0") is None
    assert codec.parse_control_frame(b"\xff" + msgpack.packb({"other": 1})) is None
    assert codec.parse_control_frame(b"\xff" + msgpack.packb({"eos": 1, "probe": 2})) is None
    assert codec.parse_control_frame(b"\xff" + msgpack.packb(["eos"])) is None
    assert codec.parse_control_frame(b"\xff" + msgpack.packb({})) is None


# -- exactly-once id frames --------------------------------------------------------------------
def id_frames(sock: Sock) -> list[tuple[bytes, list]]:
    return [(f[:1], msgpack.unpackb(f[1:])) for f in sock.frames]


def test_id_outbox_starts_empty() -> None:
    out = IdOutbox("out", Sock(), "msgpack", 4, "t")
    assert (out.name, out.ids, out.pending, out.topic, out.stride) == ("out", [], [], "t", 1)


def test_id_frames_are_ranges_when_ids_are_stride_apart() -> None:
    sock = Sock()
    out = IdOutbox("out", sock, "msgpack", 3, None)
    out.stride = 2
    out.extend_ids([1, 3], ["a", "b"])
    assert sock.frames == []
    out.extend_ids([5, 7, 9, 13, 15], ["c", "d", "e", "f", "g"])  # 7 pending: 3 frames
    out.flush()
    out.flush()
    assert id_frames(sock) == [
        (codec.IDR, [1, 3, ["a", "b", "c"]]),
        (codec.IDS, [[7, 9, 13], ["d", "e", "f"]]),
        (codec.IDR, [15, 1, ["g"]]),
    ]
    assert out.msgs == 7 and out.nbytes == sum(len(f) for f in sock.frames)
    assert (out.ids, out.pending) == ([], [])


def test_id_frames_need_every_id_in_place_not_only_the_last() -> None:
    sock = Sock()
    out = IdOutbox("out", sock, "msgpack", 3, None)
    out.stride = 2
    out.extend_ids([1, 5, 5], ["a", "b", "c"])  # first and last fit a range, the middle does not
    out.stride = 1
    out.extend_ids([10, 11, 13], ["d", "e", "f"])
    assert id_frames(sock) == [(codec.IDS, [[1, 5, 5], ["a", "b", "c"]]),
                               (codec.IDS, [[10, 11, 13], ["d", "e", "f"]])]


# -- column-wise frames --------------------------------------------------------------------------
ANSWERS = [{"worker": i % 3, "result": i * i} for i in range(20)]


def test_same_shaped_dicts_travel_as_columns_and_come_back_equal() -> None:
    sock = Sock()
    out = Outbox("out", sock, "msgpack", 100, None)
    out.extend(ANSWERS)
    out.flush()
    body = msgpack.unpackb(sock.frames[0][1:])
    assert body == {"worker": [r["worker"] for r in ANSWERS],
                    "result": [r["result"] for r in ANSWERS]}
    assert batches(sock) == [ANSWERS]
    assert out.msgs == 20  # records, not columns


def test_columns_need_one_set_of_keys() -> None:
    back = codec.decode_batch(b"\0" + codec.pack_records([{"b": 1, "a": 2}] * 10))
    assert [list(r) for r in back] == [["b", "a"]] * 10
    mixed = ANSWERS[:9] + [{"result": 1, "worker": 2}]  # the same keys in another order
    back = codec.decode_batch(b"\0" + codec.pack_records(mixed))
    assert back == mixed and list(back[-1]) == ["worker", "result"]  # the first record's order
    shapes = {
        "a missing key": ANSWERS[:9] + [{"worker": 1}],
        "another key instead": ANSWERS[:9] + [{"worker": 1, "sum": 2}],
        "an extra key": ANSWERS[:9] + [{"worker": 1, "result": 2, "x": 3}],
        "a record that is not a dict": ANSWERS[:9] + [["worker", "result"]],
        "int keys": [{0: i, 1: i} for i in range(10)],
        "empty dicts": [{}] * 10,
        "too few records": ANSWERS[: codec.COLUMNS_MIN_RECORDS - 1],
        "too many keys": [{f"k{j}": j for j in range(codec.COLUMNS_MAX_KEYS + 1)}] * 10,
    }
    for why, recs in shapes.items():
        assert codec.columns(recs) is None, why
        assert isinstance(msgpack.unpackb(codec.pack_records(recs), strict_map_key=False),
                          list), why


@pytest.mark.parametrize("n", [1, 2, 5, codec.COLUMNS_MAX_KEYS])
def test_rows_rebuilds_any_number_of_keys(n: int) -> None:
    recs = [{f"k{j}": [i, j] for j in range(n)} for i in range(12)]
    assert codec.rows(msgpack.unpackb(codec.pack_records(recs))) == recs


@pytest.mark.parametrize("cols", [{"a": [1, 2], "b": [1]}, {"a": 1}, {}])
def test_columns_that_do_not_line_up_are_refused(cols: dict) -> None:
    with pytest.raises(ValueError):
        codec.decode_batch(b"\0" + msgpack.packb(cols))


def test_id_frames_carry_columns_and_groups_stay_rows() -> None:
    sock = Sock()
    out = IdOutbox("out", sock, "msgpack", 100, None)
    out.extend_ids(range(20), ANSWERS)
    out.flush()
    kind, (first, n, body) = id_frames(sock)[0]
    assert (kind, first, n, codec.rows(body)) == (codec.IDR, 0, 20, ANSWERS)
    assert isinstance(body, dict)
    out.extend_ids(range(20, 30), [[r] for r in ANSWERS[:10]], grouped=True)
    out.flush()
    kind, (_, _, groups) = id_frames(sock)[1]
    assert (kind, groups) == (codec.IDRG, [[r] for r in ANSWERS[:10]])
