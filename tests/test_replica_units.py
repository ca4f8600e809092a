"""The replica's logic without processes: the control dispatch table on a node-like object with a
fake DEALER, exactly-once ids through IdOutbox frames into a sink, Inbox end-of-stream counting,
on_error, and resolving `run:` targets."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import zmq

from zflow.runtime import codec
from zflow.runtime import protocol as P
from zflow.runtime.replica import control, exactly_once, runners, target
from zflow.runtime.replica.control import Control
from zflow.runtime.replica.errors import NodeFailure, Stop
from zflow.runtime.replica.exactly_once import Seen, Unacked
from zflow.runtime.replica.on_error import record_error
from zflow.runtime.replica.sockets import Inbox
from zflow.runtime.spec import SocketSpec


# -- fakes -------------------------------------------------------------------------------------
class FakeDealer:
    """The control DEALER: `sent` holds what the replica said (unpacked), `queue` what it will
    receive."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.queue: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(P.unpack(data))

    def recv(self, flags: int = 0) -> bytes:
        if not self.queue:
            raise zmq.Again()
        return self.queue.pop(0)


class FakeSock:
    """A data socket: records what is sent and connected; `recv` serves `frames`."""

    def __init__(self, type: int = zmq.PUSH, fail_connect: bool = False) -> None:
        self.type = type
        self.sent: list[bytes] = []
        self.frames: list[bytes] = []
        self.connected: list[str] = []
        self.fail_connect = fail_connect

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def recv(self, flags: int = 0) -> bytes:
        if not self.frames:
            raise zmq.Again()
        return self.frames.pop(0)

    def connect(self, ep: str) -> None:
        if self.fail_connect:
            raise zmq.ZMQError(zmq.EINVAL)
        self.connected.append(ep)


def socket_spec(**kw: Any) -> SocketSpec:
    base: dict[str, Any] = dict(name="in", type="PULL", mode="connect", hwm=1000, linger=0,
                                codec="msgpack", batch=100)
    base.update(kw)
    return SocketSpec(**base)


def fake_node(stride: int = 1, on_error: str = "fail", dead_letter: str = "",
              eo: bool = False) -> Any:
    node = SimpleNamespace(eo=eo,
        id="n.0", spec=SimpleNamespace(telemetry=True, stats_interval=0.25, on_error=on_error,
                                       dead_letter=dead_letter, node="n", replica=0),
        inboxes={}, inboxes_by_sock={}, sockets={}, outboxes=[], custom_counts={}, errors=0,
        unacked=Unacked(stride), seen=Seen(stride),
    )
    node.control = Control(node, FakeDealer())
    return node


def inbox(node: Any, name: str = "in", **kw: Any) -> Inbox:
    sock = FakeSock(zmq.PULL)
    box = Inbox(name, sock, socket_spec(name=name, **kw))
    node.inboxes[name] = box
    node.inboxes_by_sock[sock] = box
    return box


# -- the control dispatch table ----------------------------------------------------------------
def test_every_supervisor_message_has_a_handler() -> None:
    ctl = fake_node().control
    assert set(ctl.handlers) == {P.CONNECT, P.PROBE, P.START, P.DRAIN, P.INPUT_END, P.STOP,
                                 P.ACK, P.RESEND, P.TOOK, P.POISON, P.LOW, P.INTERRUPT,
                                 P.SIGNAL}
    ctl.handle({"t": "no-such-kind"})  # ignored, not an error
    assert ctl.ctrl.sent == [] and not ctl.stop_requested
    ctl.handle({"t": P.INTERRUPT})  # the run was interrupted: keep going, but Totals says so
    assert ctl.interrupted and not ctl.stop_requested


def test_ready_waits_for_every_connection_to_be_handshaken() -> None:
    """A replica is not ready before its connections to the topology's binders are up."""
    ctx = zmq.Context()
    node = fake_node()
    ctl = node.control
    binder = ctx.socket(zmq.PULL)
    node.sockets["out"] = ctx.socket(zmq.PUSH)
    try:
        port = binder.bind_to_random_port("tcp://127.0.0.1")
        ctl.handle({"t": P.CONNECT, "endpoints": {"out": [f"tcp://127.0.0.1:{port}"]},
                    "wait": {"out": 1}})
        (mon,) = ctl.handshakes
        assert ctl.connected and ctl.handshakes[mon][0] == 1  # connect() returned: not up yet
        assert not ctl.subscribed()
        assert mon.poll(10_000)  # the handshake event (a hang is a failure, not a wait)
        ctl.take_handshakes(mon)
        assert ctl.subscribed()
    finally:
        ctl.stop_watching_connections()
        for s in (node.sockets["out"], binder):
            s.close(linger=0)
        ctx.term()


def test_stop_start_probe_resend() -> None:
    ctl = fake_node().control
    ctl.handle({"t": P.PROBE, "on": True})
    assert not ctl.probing  # nothing to probe with: it would only poll fast for nothing
    ctl.probe_socks.append(FakeSock(zmq.PUB))
    ctl.handle({"t": P.PROBE, "on": True})
    assert ctl.probing
    ctl.handle({"t": P.START})
    assert ctl.started and not ctl.probing  # start ends probing
    ctl.handle({"t": P.RESEND})
    assert ctl.resend
    ctl.stop_reason = "received FINISHED"
    ctl.handle({"t": P.STOP})
    assert ctl.stop_requested and not ctl.abandon
    assert ctl.stop_reason == "received FINISHED"  # the first reason stays
    ctl.handle({"t": P.STOP, "abandon": True})
    assert ctl.abandon
    ctl.handle({"t": P.STOP})
    assert ctl.abandon  # a later plain stop does not take abandon back


def test_stop_without_a_reason_says_zflow_stopped_it() -> None:
    ctl = fake_node().control
    ctl.handle({"t": P.STOP})
    assert ctl.stop_reason == "stopped by zflow"


def test_drain_and_input_end() -> None:
    node = fake_node()
    box = inbox(node)
    box.msgs = 7
    ctl = node.control
    ctl.handle({"t": P.DRAIN, "socket": "in"})
    assert box.report and ctl.ctrl.sent == [{"t": P.COUNT, "socket": "in", "n": 7}]
    ctl.handle({"t": P.DRAIN, "socket": "other"})  # not an input of this replica
    assert len(ctl.ctrl.sent) == 1
    ctl.handle({"t": P.INPUT_END, "socket": "in", "expected": 40})
    ctl.handle({"t": P.INPUT_END, "socket": "other"})
    assert box.ended and ctl.expected == {"in": 40, "other": None}


def test_connect_and_its_located_failure() -> None:
    node = fake_node()
    node.sockets = {"a": FakeSock(), "b": FakeSock()}
    ctl = node.control
    ctl.handle({"t": P.CONNECT, "endpoints": {"a": ["ipc://x", "ipc://y"], "b": []}})
    assert ctl.connected
    assert node.sockets["a"].connected == ["ipc://x", "ipc://y"] and not node.sockets["b"].connected
    node.sockets["bad"] = FakeSock(fail_connect=True)
    ctl.connected = False
    with pytest.raises(NodeFailure) as e:
        ctl.handle({"t": P.CONNECT, "endpoints": {"bad": ["tcp://nowhere:1"]}})
    assert e.value.phase == "connect" and not ctl.connected
    assert e.value.extra == {"socket": "bad", "endpoint": "tcp://nowhere:1"}
    assert str(e.value).startswith("cannot connect to tcp://nowhere:1: ")


def test_ack_by_range_and_by_ids_and_low() -> None:
    node = fake_node(stride=3)
    node.unacked.update({i: f"r{i}" for i in range(0, 30)})
    ctl = node.control
    ctl.handle({"t": P.ACK, "r": [3, 4]})  # ids 3, 6, 9, 12 of source 0
    assert not {3, 6, 9, 12} & set(node.unacked) and {0, 4, 15} <= set(node.unacked)
    ctl.handle({"t": P.ACK, "ids": [0, 4, 99]})  # 99 was never sent: ignored
    assert len(node.unacked) == 30 - 6
    for i in range(0, 12, 3):
        node.seen.add(i)
    node.seen.add(18)
    ctl.handle({"t": P.LOW, "id": 15})  # source 0 forgets below seq 5
    assert node.seen.los[0] == [0, 6] and node.seen.his[0] == [5, 7]


def test_drain_dispatches_everything_queued() -> None:
    ctl = fake_node().control
    ctl.ctrl.queue = [P.pack(P.PROBE, on=True), P.pack(P.START), P.pack(P.STOP)]
    ctl.drain()
    assert ctl.started and ctl.stop_requested and not ctl.probing and ctl.ctrl.queue == []


def test_a_blocked_send_gives_up_only_when_told_to_abandon() -> None:
    ctl = fake_node().control
    ctl.ctrl.queue = [P.pack(P.STOP)]
    ctl.send_blocked()  # a plain stop: the send keeps trying (the stream may still drain)
    ctl.ctrl.queue = [P.pack(P.STOP, abandon=True)]
    with pytest.raises(Stop):
        ctl.send_blocked()


def test_probes_and_held_data_before_start() -> None:
    node = fake_node()
    box = inbox(node, type="SUB", codec="msgpack")
    ctl = node.control
    ctl.probe_waits[box.sock] = ({"pub.0", "pub.1"}, set())
    data = b"\0" + msgpack.packb([1, 2])
    box.sock.frames = [codec.control_frame("probe", "pub.0"), data,
                       codec.control_frame("probe", "pub.0")]
    ctl.take_probes(box.sock)
    assert not ctl.subscribed()  # pub.1 not heard yet
    assert box.held == [data]  # data before start is kept for the run, not lost
    box.sock.frames = [codec.control_frame("probe", "pub.1")]
    ctl.take_probes(box.sock)
    assert ctl.subscribed()


def test_a_stop_on_word_on_a_probed_sub_stops() -> None:
    node = fake_node()
    sock = FakeSock(zmq.SUB)
    ctl = node.control
    ctl.probe_waits[sock] = (set(), set())
    ctl.control_in[sock] = b"FINISHED"
    sock.frames = [b"NOT YET", b"FINISHED"]
    ctl.take_probes(sock)
    assert ctl.stop_requested and ctl.stop_reason == "received FINISHED"


def test_probe_tick_and_repeated_end_markers() -> None:
    ctl = fake_node().control
    pub = FakeSock(zmq.PUB)
    ctl.probe_socks.append(pub)
    ctl.probe_tick()
    assert pub.sent == []  # not asked to probe
    ctl.probing = True
    ctl.probe_tick()
    assert pub.sent == [codec.control_frame("probe", "n.0")]
    pub.sent.clear()
    ctl.eos_socks.append(pub)
    ctl.repeat_end_markers()
    ctl.repeat_end_markers()  # within 100 ms: not again
    assert pub.sent == [codec.control_frame("eos", "n.0")]
    ctl.next_eos = 0.0
    ctl.repeat_end_markers()
    assert len(pub.sent) == 2


def test_counters_and_telemetry_ticks() -> None:
    node = fake_node()
    box = inbox(node)
    box.msgs, box.nbytes = 5, 50
    out = codec.Outbox("out", FakeSock(), "msgpack", 10, None)
    out.msgs, out.nbytes = 4, 40
    node.outboxes.append(out)
    node.custom_counts["req"] = [1, 2, 3, 4]
    node.errors = 2
    ctl = node.control
    want = {"in": [5, 0, 50, 0], "out": [0, 4, 0, 40], "req": [1, 2, 3, 4]}
    assert ctl.counters() == want
    ctl.tick()
    ctl.tick()  # within stats_interval: nothing more
    assert ctl.ctrl.sent == [{"t": P.STATS, "s": want, "e": 2}]
    ctl.telemetry = False
    ctl.next_stats = 0.0
    ctl.tick()
    assert len(ctl.ctrl.sent) == 1


# -- Seen.forget_below -------------------------------------------------------------------------
def test_forget_below_inside_an_interval_in_a_gap_and_per_source() -> None:
    s = Seen(stride=2)
    for seq in (0, 1, 4, 5, 6, 9):  # source 0: ids 0, 2, 8, 10, 12, 18
        assert s.add(seq * 2)
    assert s.add(1)  # source 1
    assert (s.los[0], s.his[0]) == ([0, 4, 9], [2, 7, 10])
    s.forget_below(10)  # seq 5 lies inside [4, 7): merged into [0, 7)
    assert (s.los[0], s.his[0]) == ([0, 9], [7, 10])
    s.forget_below(16)  # seq 8 lies in the gap [7, 9): [0, 8) then [9, 10)
    assert (s.los[0], s.his[0]) == ([0, 9], [8, 10])
    s.forget_below(18)  # seq 9 touches [9, 10): one interval
    assert (s.los[0], s.his[0]) == ([0], [10])
    assert (s.los[1], s.his[1]) == ([0], [1])  # source 1 untouched
    s.forget_below(0)
    s.forget_below(4)  # at or below what is already one interval from 0: nothing changes
    assert (s.los[0], s.his[0]) == ([0], [10])
    assert not s.add(14) and s.add(20)


def test_forget_below_on_an_empty_source() -> None:
    s = Seen(stride=1)
    s.forget_below(5)
    assert (s.los[0], s.his[0]) == ([0], [5])
    assert not s.add(4) and s.add(5)
    assert (s.los[0], s.his[0]) == ([0], [6])


# -- exactly-once frames, end to end without sockets --------------------------------------------
def frames_of(ids_batches: list[list[int]], stride: int, batch: int) -> list[bytes]:
    sock = FakeSock()
    out = codec.IdOutbox("out", sock, "msgpack", batch, None)
    out.stride = stride
    for ids in ids_batches:
        out.extend_ids(ids, [f"r{i}" for i in ids])
    out.flush()
    return sock.sent


def test_id_frames_from_two_interleaved_sources() -> None:
    # a transform's output: frames from source 0 (even ids) and source 1 (odd ids) interleave
    frames = frames_of([[0, 2], [1, 3], [4, 6, 8, 10], [0, 4, 2, 6], [5]], stride=2, batch=4)
    assert [f[:1] for f in frames] == [codec.IDS, codec.IDR, codec.IDS, codec.IDR]
    assert msgpack.unpackb(frames[0][1:]) == [[0, 2, 1, 3], ["r0", "r2", "r1", "r3"]]
    assert msgpack.unpackb(frames[1][1:]) == [4, 4, ["r4", "r6", "r8", "r10"]]
    # first + (n-1) * stride matches the last id, but the ids are out of order: not a range
    assert msgpack.unpackb(frames[2][1:])[0] == [0, 4, 2, 6]
    assert msgpack.unpackb(frames[3][1:]) == [5, 1, ["r5"]]  # one record of source 1


def sink_node(stride: int) -> tuple[Any, list[Any], Any, Inbox]:
    node = fake_node(stride=stride, eo=True)
    got: list[Any] = []

    def apply(recs: list[Any]) -> None:
        got.extend(recs)

    apply_ids = exactly_once.ids_applier(node, None, apply, generator=False, tolerant=False)
    return node, got, apply_ids, inbox(node, end="count")


def test_a_sink_applies_each_id_once_and_acknowledges_every_frame() -> None:
    node, got, apply_ids, box = sink_node(stride=2)
    frames = frames_of([[0, 2, 4, 6], [1, 3], [4, 6, 8], [7, 5]], stride=2, batch=4)
    frames.append(frames[0])  # a resend of the first frame after a worker died
    for f in frames:
        runners._ingest(node, box, f, None, apply_ids)
    assert sorted(got) == sorted({f"r{i}" for i in range(9)}) and len(got) == 9
    assert box.msgs == 9  # duplicates are not counted
    assert node.control.ctrl.sent == [
        {"t": P.ACK, "ids": [1, 3, 4, 6]},  # 4 and 6 were duplicates: acknowledged all the same
        {"t": P.ACK, "ids": [7, 5]},
        {"t": P.ACK, "ids": [0, 2, 4, 6]},  # the resend: nothing new, but the source must forget
    ]
    # fresh ranges, each checked and acknowledged as one, wait for the end of the loop's turn:
    # then one message carries them all
    node.control.report_ranges()
    assert node.control.ctrl.sent[-1] == {"t": P.ACK, "rs": [[0, 4], [8, 1]]}
    node.control.report_ranges()
    assert len(node.control.ctrl.sent) == 4  # nothing new: nothing sent
    assert node.seen.adds == 9
    for f in frames_of([[10, 12]], stride=2, batch=4):  # the next turn: its own message
        runners._ingest(node, box, f, None, apply_ids)
    node.control.report_ranges()
    assert node.control.ctrl.sent[4:] == [{"t": P.ACK, "rs": [[10, 2]]}]


def test_small_reports_are_gathered_and_a_frames_worth_goes_at_once(monkeypatch) -> None:
    """A slow source's one-record frames each made an `ack` (and a `took` at each worker), all
    relayed by the supervisor. Once a replica has reported for GATHER_AFTER, fewer than
    GATHER_RECORDS records wait within GATHER of the last report (ranges_due says until when);
    a frame's worth, a quiet spell, or the end of the stream (force) sends them. Before, every
    report goes at once: a short run never waits for its last `ack`."""
    clock = [100.0]  # the replica's clock, moved by hand: no test depends on real time
    monkeypatch.setattr(control, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    node, got, apply_ids, box = sink_node(stride=1)
    ctl = node.control
    sent = ctl.ctrl.sent

    def ingest(first: int, n: int) -> None:
        for f in frames_of([list(range(first, first + n))], stride=1, batch=1000):
            runners._ingest(node, box, f, None, apply_ids)

    ingest(0, 1)
    ctl.report_ranges()
    clock[0] += 0.001
    ingest(1, 1)
    ctl.report_ranges()  # the replica's first reports: each at once
    assert sent == [{"t": P.ACK, "rs": [[0, 1]]}, {"t": P.ACK, "rs": [[1, 1]]}]
    assert ctl.ranges_due() is None
    clock[0] += control.GATHER_AFTER  # it has reported for a while, not in the last GATHER
    del sent[:]
    ingest(1000, 1)
    ctl.report_ranges()  # the first after a quiet spell: at once
    assert sent == [{"t": P.ACK, "rs": [[1000, 1]]}] and ctl.ranges_due() is None
    clock[0] += 0.001
    ingest(1001, 1)
    ingest(1002, 1)
    ctl.report_ranges()  # 2 records, 1 ms after the last report: held
    assert len(sent) == 1
    due = ctl.ranges_due()
    assert due is not None and due == pytest.approx(ctl.ranges_sent + control.GATHER)
    ingest(1003, control.GATHER_RECORDS)  # a frame's worth: all of it at once
    clock[0] += 0.001
    ctl.report_ranges()
    assert sent[1:] == [{"t": P.ACK, "rs": [[1001, 1], [1002, 1],
                                             [1003, control.GATHER_RECORDS]]}]
    ingest(2000, 1)
    clock[0] += 0.001
    ctl.report_ranges()
    assert len(sent) == 2
    clock[0] = ctl.ranges_due()  # due now
    ctl.report_ranges()
    assert sent[2:] == [{"t": P.ACK, "rs": [[2000, 1]]}]
    ingest(2001, 1)
    ctl.report_ranges(force=True)  # the end of the stream: now
    assert sent[3:] == [{"t": P.ACK, "rs": [[2001, 1]]}] and ctl.ranges_due() is None


def test_a_sink_gets_records_of_column_wise_id_frames_and_refuses_a_wrong_count() -> None:
    node, got, apply_ids, box = sink_node(stride=1)
    answers = [{"worker": i % 2, "result": i * i} for i in range(10)]
    sock = FakeSock()
    out = codec.IdOutbox("out", sock, "msgpack", 100, None)
    out.extend_ids(range(10), answers)
    out.flush()
    assert isinstance(msgpack.unpackb(sock.sent[0][1:])[2], dict)  # it travelled as columns
    runners._ingest(node, box, sock.sent[0], None, apply_ids)
    assert got == answers and box.msgs == 10
    cols = {"worker": [0] * 10, "result": [1] * 10}
    lying = codec.IDR + msgpack.packb([10, 11, cols])  # claims 11 records, carries 10
    runners._ingest(node, box, lying, None, apply_ids)
    assert got == answers and box.msgs == 10


def test_a_transform_says_what_it_took_once_per_turn_of_its_receive_loop() -> None:
    node = fake_node(stride=1, eo=True)
    node.outboxes.append(codec.IdOutbox("out", FakeSock(), "msgpack", 100, None))
    apply_ids = exactly_once.ids_applier(node, lambda x: x, None, generator=False,
                                         tolerant=False)
    box = inbox(node, end="count")
    for f in frames_of([[0, 1], [2, 3, 4], [9, 7]], stride=1, batch=3):
        runners._ingest(node, box, f, None, apply_ids)
    # a frame of scattered ids is said at once; ranges wait for the end of the turn
    assert node.control.ctrl.sent == [{"t": P.TOOK, "ids": [9, 7]}]
    node.control.report_ranges()
    assert node.control.ctrl.sent[-1] == {"t": P.TOOK, "rs": [[0, 3], [3, 2]]}
    assert box.msgs == 7


def test_a_transform_keeps_ids_and_acknowledges_what_it_drops() -> None:
    node = fake_node(stride=1)
    sock = FakeSock()
    out = codec.IdOutbox("out", sock, "msgpack", 100, None)
    node.outboxes.append(out)

    def half(x: int) -> int | None:
        return x // 2 if x % 2 == 0 else None

    apply_ids = exactly_once.ids_applier(node, half, None, generator=False, tolerant=False)
    assert apply_ids(range(10, 14), [10, 11, 12, 13]) == 4
    # sent on at once, a frame per frame taken: the source's frames stay whole
    assert [msgpack.unpackb(f[1:]) for f in sock.sent] == [[[10, 12], [5, 6]]]
    assert sock.sent[0][:1] == codec.IDS and out.pending == []
    assert node.control.ctrl.sent == [{"t": P.ACK, "ids": [11, 13]}]


# -- Inbox: end of stream ----------------------------------------------------------------------
def test_end_markers_count_each_sender_once() -> None:
    node = fake_node()
    box = inbox(node, type="SUB", end="markers", peer_replicas=2, zflow_peers=True)
    got: list[Any] = []
    ingest = runners._ingest
    ingest(node, box, codec.control_frame("probe", "pub.0"), got.extend, None)
    ingest(node, box, codec.control_frame("eos", "pub.0"), got.extend, None)
    ingest(node, box, codec.control_frame("eos", "pub.0"), got.extend, None)  # repeated
    assert not box.ended
    ingest(node, box, b"\0" + msgpack.packb([1, 2, 3]), got.extend, None)
    ingest(node, box, codec.control_frame("eos", "pub.1"), got.extend, None)
    assert box.ended and got == [1, 2, 3] and box.msgs == 3


def test_markers_do_not_end_a_stream_that_ends_otherwise() -> None:
    node = fake_node()
    box = inbox(node, end="count", peer_replicas=1)
    runners._ingest(node, box, codec.control_frame("eos", "a.0"), None, None)
    assert box.eos == {"a.0"} and not box.ended


def test_plain_programs_end_with_an_empty_message_each() -> None:
    node = fake_node()
    box = inbox(node, codec="raw", end="markers", peer_replicas=2, zflow_peers=False)
    got: list[Any] = []
    marker_like = codec.control_frame("eos", "x")  # raw data from outside zflow: a record
    for f in (b"a", b"", marker_like):
        runners._ingest(node, box, f, got.extend, None)
    assert not box.ended and got == [b"a", marker_like]
    runners._ingest(node, box, b"", got.extend, None)
    assert box.ended and box.msgs == 2


def test_an_undecodable_frame_is_counted_never_fatal(capsys: pytest.CaptureFixture) -> None:
    """Whatever on_error says: a frame anyone could have sent must not restart the node."""
    node = fake_node(on_error="fail")
    box = inbox(node, codec="json")
    for _ in range(5):
        runners._ingest(node, box, b"{not json", None, None)
    assert node.errors == 5 and box.msgs == 0
    assert capsys.readouterr().err.count("cannot decode a 9-byte frame on socket 'in'") == 3


def test_an_undecodable_frame_is_dead_lettered(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    node = fake_node(on_error="dead-letter", dead_letter=str(path))
    runners._ingest(node, inbox(node), b"\0\xc1", None, None)  # 0xc1: never valid msgpack
    line = json.loads(path.read_text())
    assert line["record"] == repr(b"\0\xc1") and "cannot decode a 2-byte frame" in line["error"]


HOSTILE = {
    "a range claiming 10**12 records": codec.IDR + msgpack.packb([0, 10**12, []]),
    "ids and records that differ": codec.IDS + msgpack.packb([[1, 2, 3], ["a"]]),
    "ids that are not numbers": codec.IDS + msgpack.packb([["x"], ["a"]]),
    "a plain frame": b"\0" + msgpack.packb(["a", "b"]),
    "garbage": b"\x02garbage",
    "nothing": b"",
}


@pytest.mark.parametrize("what", list(HOSTILE))
def test_an_exactly_once_sink_takes_only_honest_id_frames(what: str) -> None:
    node, got, apply_ids, box = sink_node(stride=1)
    runners._ingest(node, box, HOSTILE[what], None, apply_ids)
    assert got == [] and box.msgs == 0 and node.seen.adds == 0 and node.errors == 1
    assert node.control.ctrl.sent == []  # nothing acknowledged


@pytest.mark.parametrize("kind", [codec.IDR, codec.IDS])
def test_a_best_effort_sink_refuses_id_frames(kind: bytes) -> None:
    node = fake_node()
    box = inbox(node, end="count")
    got: list[Any] = []
    frame = kind + msgpack.packb([0, 1, ["a"]] if kind == codec.IDR else [[0], ["a"]])
    runners._ingest(node, box, frame, got.extend, None)
    assert got == [] and box.msgs == 0 and node.errors == 1


# -- on_error ----------------------------------------------------------------------------------
def test_dead_letter_appends_a_json_line(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    node = fake_node(on_error="dead-letter", dead_letter=str(path))
    record_error(node, {"x": 1}, ValueError("bad x"))
    record_error(node, object(), KeyError("k"))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert node.errors == 2 and len(lines) == 2
    assert lines[0]["record"] == {"x": 1} and lines[0]["error"] == "ValueError: bad x"
    assert lines[0]["node"] == "n" and lines[0]["replica"] == 0
    assert lines[1]["record"].startswith("<object object")
    node.spec.on_error = "fail"
    with pytest.raises(ValueError):
        record_error(node, 1, ValueError("again"))
    assert node.errors == 2


def test_an_unwritable_dead_letter_file_fails_the_run(tmp_path: Path) -> None:
    node = fake_node(on_error="dead-letter", dead_letter=str(tmp_path / "no" / "dir" / "dl"))
    with pytest.raises(NodeFailure, match="cannot write dead letter") as e:
        record_error(node, 1, ValueError("x"))
    assert e.value.phase == "run"


# -- run: targets ------------------------------------------------------------------------------
@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write a module under a fresh name; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"m_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(source)
        return name

    return write


def test_resolve_target_each_failure_and_its_code(modules: Any) -> None:
    ok = modules("class A:\n    class B:\n        def f(self): pass\nVALUE = {}\n"
                 "def g(): pass\n")
    assert target.resolve_target(f"{ok}:g").__name__ == "g"
    assert target.resolve_target(f"{ok}:A.B").__name__ == "B"
    cases = {
        "nope_" + ok + ":f": (target.NOT_FOUND, "cannot import module 'nope_"),
        f"{ok}.sub:f": (target.NOT_FOUND, f"cannot import module '{ok}.sub'"),
        f"{modules('import no_such_dependency_zz')}:f": (target.RAISED, "no_such_dependency_zz"),
        f"{modules('raise RuntimeError(1 + 1)')}:f": (target.RAISED, "raised RuntimeError: 2"),
        f"{ok}:A.C": (target.NO_ATTRIBUTE, f"module '{ok}' has no attribute 'A.C'"),
        f"{ok}:VALUE": (target.NOT_CALLABLE, f"'{ok}:VALUE' is dict, not callable"),
    }
    for t, (code, text) in cases.items():
        with pytest.raises(target.TargetError) as e:
            target.resolve_target(t)
        assert e.value.code == code and e.value.phase == "import", t
        assert text in str(e.value), (t, str(e.value))
    with pytest.raises(target.TargetError) as e:
        target.resolve_target(f"{modules('x = 1 / 0')}:f")
    assert "ZeroDivisionError" in e.value.extra["traceback"]


def test_check_targets_reports_sys_exit_at_import(modules: Any) -> None:
    bye, ok = modules("import sys\nsys.exit(4)\n"), modules("def f(): pass\n")
    assert target.check_targets([f"{bye}:f", f"{ok}:f", f"{ok}:g"]) == [
        [target.RAISED, f"importing '{bye}' raised SystemExit: 4"], None,
        [target.NO_ATTRIBUTE, f"module '{ok}' has no attribute 'g'"]]


def test_check_params() -> None:
    class Window:
        def __init__(self, size: int, step: int = 1) -> None:
            pass

        def __call__(self, record: object) -> object:
            return record

    def numbers(count: int) -> list[int]:
        return list(range(count))

    target.check_params(Window, "transform", {"size": 3})
    target.check_params(numbers, "source", {"count": 3})
    target.check_params(numbers, "transform", {"anything": 1})  # functions get records, not params
    def client(ctx: object) -> None:
        pass

    def client_n(ctx: object, n: int = 100) -> None:
        pass

    target.check_params(client, "custom", {"anything": 1})  # ctx only: params in ctx.params
    target.check_params(client_n, "custom", {"n": 5})  # params as keyword arguments
    with pytest.raises(NodeFailure, match=r"\[.count.\] do not fit .*client_n"):
        target.check_params(client_n, "custom", {"count": 5})  # a typo is not ignored
    with pytest.raises(NodeFailure) as e:
        target.check_params(Window, "sink", {"size": 3, "colour": "red"})
    assert e.value.phase == "import" and "['colour', 'size'] do not fit" in str(e.value)
    assert e.value.extra["hint"].startswith("params are passed as keyword arguments")
    with pytest.raises(NodeFailure, match="do not fit"):
        target.check_params(numbers, "source", {})


def test_the_import_check_child_and_the_validator_do_not_import_zmq() -> None:
    code = ("import sys, zflow.spec.importcheck, zflow.runtime.replica.target\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('zmq', 'msgpack')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_fork_server_stays_light() -> None:
    """Every replica forks from the fork server: what it imports, each start waits for. The
    validator's and the views' libraries (jsonschema, yaml, rich) must not be among them."""
    import subprocess
    import sys

    code = ("import sys, zflow.runtime.launchers.zygote, zflow.runtime.replica.main; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'jsonschema', 'yaml', 'rich'}), sorted(m for m in sys.modules "
            "if m.startswith(('zflow.spec', 'zflow.plan', 'zflow.status'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


# -- security: {curve: true} -------------------------------------------------------------------
def test_curve_data_sockets_admit_only_holders_of_the_runs_key(tmp_path) -> None:
    """A binder built with the run's data key answers a client holding it, and a plain client's
    handshake fails (seen on its monitor: no waiting for something not to happen)."""
    import textwrap

    from zmq.utils.monitor import recv_monitor_message

    from zflow.plan import build_plan
    from zflow.runtime.replica import sockets as zsockets
    from zflow.runtime.replica.core import Node
    from zflow.runtime.spec import build_replica_spec
    from zflow.runtime.up import data_keypair
    from zflow.spec import load

    f = tmp_path / "t.yaml"
    f.write_text(textwrap.dedent("""
        version: 1
        name: sec
        security: {curve: true}
        nodes:
          src:
            run: m:numbers
            sockets:
              out: {type: PUSH, connect: sink.inp}
          sink:
            run: m:Sink
            sockets:
              inp: {type: PULL, bind: tcp}
    """))
    res = load(str(f))
    assert res.ok, res.diagnostics
    plan = build_plan(res.topology, str(f))
    assert plan.curve
    key = data_keypair()
    spec = build_replica_spec(plan, "sink", 0, 1, curve=key)
    node = Node(spec, "inproc://no-control")
    ctx = zmq.Context()
    try:
        ep = zsockets.build(node)["inp"]
        inp = node.sockets["inp"]
        assert inp.getsockopt(zmq.MECHANISM) == zmq.CURVE
        plain = ctx.socket(zmq.PUSH)
        mon = plain.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                       | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                       | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        plain.connect(ep)
        assert mon.poll(5000)
        assert recv_monitor_message(mon)["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED
        insider = ctx.socket(zmq.PUSH)
        insider.curve_publickey = key["public"].encode()
        insider.curve_secretkey = key["secret"].encode()
        insider.curve_serverkey = key["public"].encode()
        insider.connect(ep)
        insider.send(b"from the run")
        assert inp.poll(5000) and inp.recv() == b"from the run"
        for s in (mon, plain, insider):
            s.close(0)
    finally:
        ctx.term()
        for s in node.sockets.values():
            s.close(0)
        node.control.ctrl.close(0)
        node.auth.stop()
        node.ctx.term()


def test_the_node_api_is_loaded_on_first_use_then_a_plain_attribute() -> None:
    """`import zflow` stays light for the CLI, yet node code calling zflow.context() per record
    must not go through the module's __getattr__ each time (it once cost 1.5 s per 1M records)."""
    code = ("import sys, zflow; print('zflow.runtime.context' in sys.modules); zflow.context; "
            "print(all(n in vars(zflow) for n in ('context', 'Totals', 'NodeContext')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]


def test_a_replica_spec_crosses_to_the_replica_unchanged(tmp_path: Path) -> None:
    """to_json (no deep copy) writes what asdict would, and from_json gives the same spec back."""
    from zflow.plan import build_plan
    from zflow.records import asdict
    from zflow.runtime.spec import ReplicaSpec, build_replica_spec
    from zflow.spec import load

    topo = Path(__file__).parent.parent / "topologies" / "squares.yaml"
    result = load(str(topo), overrides=["nodes.worker.params={a: [1, {b: null}], c: 2.5}"])
    plan = build_plan(result.topology, str(topo), run_dir=str(tmp_path))
    for node in ("ventilator", "worker", "results"):
        spec = build_replica_spec(plan, node, 0, 2, curve={"public": "p", "secret": "s"})
        assert spec.to_json() == json.dumps(asdict(spec))
        assert ReplicaSpec.from_json(spec.to_json()) == spec
    assert spec.sockets and json.loads(spec.to_json())["sockets"][0]["name"] == "answers"


def test_a_replica_that_loses_its_coordinator_says_so_even_if_killed_at_once() -> None:
    """The link watcher's line goes to the stderr the replica started with. Through fd 2 it went
    into the Tee's pipe, and the SIGTERM that follows, arriving before the replica's handler,
    killed it with the line unread (the cluster e2e test saw exit -15 and no line)."""
    code = (
        "import os, signal, struct, threading, zmq\n"
        "from zflow.runtime.replica import join\n"
        "ctx = zmq.Context()\n"
        "a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)\n"
        "a.bind('inproc://monitor'); b.connect('inproc://monitor')\n"
        "join.watch_link(b, threading.Event())\n"
        "r, w = os.pipe(); os.dup2(w, 2)  # what the Tee does next; nobody copies it here\n"
        "a.send_multipart([struct.pack('=hi', zmq.EVENT_DISCONNECTED, 0), b'tcp://10.0.0.1:1'])\n"
        "signal.pause()  # SIGTERM, default action: as before the replica's handler\n")
    root = str(Path(__file__).resolve().parent.parent)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "PYTHONPATH": root})
    assert r.returncode == -15
    assert r.stderr == "zflow replica: lost the coordinator; stopping\n"


def test_a_class_nodes_call_is_bound_once_as_a_call_would_find_it() -> None:
    """A stream node's instance is called through its type's `__call__`, bound once (the type
    lookup of every `obj(x)` is ~35 ns a record); inherited ones and C slots too; an instance
    attribute named `__call__` is not what `obj(x)` runs, so it is not taken either; an instance
    without one stays as it is, to fail on its first record as not callable."""
    import functools

    from zflow.runtime.replica.runners import _call_of

    class Add:
        def __init__(self, n: int) -> None:
            self.n = n

        def __call__(self, x: int) -> int:
            return x + self.n

    class Sub(Add):
        pass

    class Partial(functools.partial):
        pass

    class Plain:
        pass

    class Held:  # a class attribute that is not a descriptor is called without self
        __call__ = functools.partial(pow, 3)

    sub = Sub(2)
    sub.__call__ = lambda x: -1  # type: ignore[method-assign]
    assert _call_of(Add(1))(1) == 2 and _call_of(sub)(1) == sub(1) == 3
    assert _call_of(Partial(pow, 2))(5) == 32
    assert _call_of(Held())(2) == Held()(2) == 9
    plain = Plain()
    assert _call_of(plain) is plain


def test_a_stream_nodes_class_without_a_call_fails_at_start() -> None:
    """A class whose instances are not callable (none on its MRO, or `__call__ = None` over an
    inherited one) is refused before the replica binds, as a start failure; a source's class
    is iterated, not called, and needs none."""
    from zflow.runtime.replica.errors import NodeFailure
    from zflow.runtime.replica.target import check_params

    class Plain:
        pass

    class Base:
        def __call__(self, x: int) -> int:
            return x

    class Off(Base):
        __call__ = None  # type: ignore[assignment]

    for cls in (Plain, Off):
        for shape in ("transform", "sink", "service"):
            with pytest.raises(NodeFailure) as e:
                check_params(cls, shape, {})
            assert e.value.phase == "import" and "not callable" in str(e.value)
    check_params(Base, "sink", {})
    check_params(Plain, "source", {})
