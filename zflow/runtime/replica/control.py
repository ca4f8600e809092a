"""The replica's control-plane client (see protocol.py): a DEALER to the supervisor, what the
supervisor has told this replica so far, and the probes, end markers and telemetry that go with it.

Incoming messages are dispatched through `handlers` (kind → method); a kind this replica does not
know is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from zflow.runtime import codec
from zflow.runtime import protocol as P
from zflow.runtime.replica.errors import Stop
from zflow.runtime.replica.exactly_once import acknowledge
from zflow.runtime.replica.on_error import write_dead_letter
from zflow.runtime.replica.sockets import connect

if TYPE_CHECKING:
    from zflow.runtime.replica.core import Node


def dealer(ctx: zmq.Context, identity: bytes, endpoint: str) -> zmq.Socket:
    """The replica's control socket, connected to the supervisor's ROUTER."""
    ctrl = ctx.socket(zmq.DEALER)
    ctrl.setsockopt(zmq.IDENTITY, identity)
    ctrl.setsockopt(zmq.LINGER, 2000)
    ctrl.setsockopt(zmq.RCVHWM, 0)  # acks and commands are never dropped
    ctrl.setsockopt(zmq.SNDHWM, 0)
    ctrl.connect(endpoint)
    return ctrl


#: exactly-once reports of fewer records than GATHER_RECORDS wait up to GATHER seconds after the
#: previous report, gathered (Control.report_ranges): a frame's worth goes at once, so a fast
#: stream's reports are as before, and a slow one's come at most every GATHER. Only once the
#: replica has reported for GATHER_AFTER seconds: a short run (a test's ten records) never waits
#: for its last `ack`, and what gathering saves is CPU over a long run
GATHER = 0.02
GATHER_RECORDS = 16
GATHER_AFTER = 0.5


class Control:
    """The control-plane client of `node`: the messages it handles change the node's state."""

    def __init__(self, node: Node, ctrl: zmq.Socket) -> None:
        self.node = node
        self.ctrl = ctrl
        # what the supervisor has said
        self.connected = False
        self.probing = False
        self.started = False
        self.stop_requested = False
        self.stop_reason = ""
        self.abandon = False  # interrupted or failed run: close without lingering
        self.interrupted = False  # the run was interrupted: Totals says so
        self.expected: dict[str, int | None] = {}  # input socket → records its senders sent
        self.resend = False  # exactly-once source: resend what is unacknowledged
        #: exactly-once source: replicas that died (and the receivers alive then), to resend
        #: what each held
        self.deaths: list[tuple[str, list[str]]] = []
        #: exactly-once: [first, n] ranges taken / acknowledged, sent by report_ranges
        self.took_rs: list[list[int]] = []
        self.ack_rs: list[list[int]] = []
        self.ranges_sent = 0.0  # when report_ranges last sent them
        self.ranges_since = 0.0  # when it first did
        self.finished_sent = False
        # sockets with a part in the control plane (sockets.build fills these)
        self.control_in: dict[zmq.Socket, bytes] = {}  # stop_on sockets → the message
        self.probe_socks: list[zmq.Socket] = []
        self.probe_every = 0.005  # seconds between probes (sockets.build raises it for many)
        self.next_probe = 0.0
        #: SUB sockets → (publisher replica ids whose probe must arrive, ids seen so far)
        self.probe_waits: dict[zmq.Socket, tuple[set[str], set[str]]] = {}
        #: monitors of connecting sockets → [handshakes still awaited, socket name]
        self.handshakes: dict[zmq.Socket, list[Any]] = {}
        self.eos_socks: list[zmq.Socket] = []  # PUB sockets whose end marker is repeated
        self.next_eos = 0.0
        # telemetry
        self.telemetry = node.spec.telemetry
        self.stats_every = node.spec.stats_interval
        self.next_stats = 0.0
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            P.STOP: self.on_stop,
            P.START: self.on_start,
            P.PROBE: self.on_probe,
            P.DRAIN: self.on_drain,
            P.INPUT_END: self.on_input_end,
            P.CONNECT: self.on_connect,
            P.ACK: self.on_ack,
            P.RESEND: self.on_resend,
            P.TOOK: self.on_took,
            P.POISON: self.on_poison,
            P.LOW: self.on_low,
            P.INTERRUPT: self.on_interrupt,
            P.SIGNAL: self.on_signal,
        }

    def send(self, kind: str, **fields: Any) -> None:
        self.ctrl.send(P.pack(kind, **fields))

    # -- incoming messages -------------------------------------------------------------------
    def handle(self, msg: dict[str, Any]) -> None:
        handler = self.handlers.get(msg["t"])
        if handler is not None:
            handler(msg)

    def on_stop(self, msg: dict[str, Any]) -> None:
        self.stop_requested = True
        self.abandon = self.abandon or bool(msg.get("abandon"))
        self.stop_reason = self.stop_reason or "stopped by zflow"

    def on_signal(self, msg: dict[str, Any]) -> None:
        """A signal from a coordinator on another host (launchers/remote.py): as if sent here.
        SIGKILL is an immediate exit (PID 1 of a container cannot SIGKILL itself)."""
        import os
        import signal

        sig = int(msg["sig"])
        if sig == signal.SIGKILL:
            os._exit(128 + sig)
        os.kill(os.getpid(), sig)

    def on_interrupt(self, msg: dict[str, Any]) -> None:
        self.interrupted = True

    def on_start(self, msg: dict[str, Any]) -> None:
        self.started = True
        self.probing = False

    def on_probe(self, msg: dict[str, Any]) -> None:
        # only a replica with probing PUB sockets has anything to do (and polls fast for it)
        self.probing = bool(msg.get("on")) and bool(self.probe_socks)

    def on_drain(self, msg: dict[str, Any]) -> None:
        box = self.node.inboxes.get(msg["socket"])
        if box is not None:
            box.report = True
            self.send(P.COUNT, socket=box.name, n=box.msgs)

    def on_input_end(self, msg: dict[str, Any]) -> None:
        box = self.node.inboxes.get(msg["socket"])
        self.expected[msg["socket"]] = msg.get("expected")
        if box is not None:
            box.ended = True
            box.settle = box.end == "markers" and msg.get("expected") is None

    def on_connect(self, msg: dict[str, Any]) -> None:
        for name, n in (msg.get("wait") or {}).items():
            # watched before connecting, so no handshake is missed
            mon = self.node.sockets[name].get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            self.handshakes[mon] = [int(n), name]
        connect(self.node.sockets, msg["endpoints"])
        self.connected = True

    def take_handshakes(self, mon: zmq.Socket) -> None:
        while True:
            try:
                mon.recv_multipart(zmq.NOBLOCK)  # one event: [event id + value, endpoint]
            except zmq.Again:
                return
            self.handshakes[mon][0] -= 1

    def stop_watching_connections(self) -> None:
        for mon, (_, name) in self.handshakes.items():
            self.node.sockets[name].disable_monitor()
            mon.close(linger=0)
        self.handshakes.clear()

    def on_ack(self, msg: dict[str, Any]) -> None:
        acknowledge(self.node.unacked, self.node.seen.stride, msg)

    def on_resend(self, msg: dict[str, Any]) -> None:
        if "dead" in msg:
            self.deaths.append((msg["dead"], msg.get("live") or []))
        else:
            self.resend = True

    def on_poison(self, msg: dict[str, Any]) -> None:
        """A record of ours failed replica after replica: into the dead-letter file, and
        never sent again (it would only fail again, and take its frame with it)."""
        unacked = self.node.unacked
        i = msg["id"]
        if i not in unacked:
            return
        write_dead_letter(msg.get("path") or "", {
            "node": msg.get("node"), "replica": msg.get("replica"), "record": unacked[i],
            "error": msg.get("error"), "attempts": msg.get("attempts"),
            "note": "the record as the source sent it; it failed every time it was tried"})
        del unacked[i]

    def on_took(self, msg: dict[str, Any]) -> None:
        stride = self.node.seen.stride
        by, hop1 = msg.get("by", ""), bool(msg.get("hop1"))
        took = self.node.unacked.took
        if "rs" in msg:
            for first, n in msg["rs"]:
                took(range(first, first + n * stride, stride), by, hop1)
        else:
            took(msg.get("ids") or [], by, hop1)

    def on_low(self, msg: dict[str, Any]) -> None:
        self.node.seen.forget_below(msg["id"])

    def drain(self) -> None:
        """Handle every control message already queued, without waiting."""
        while True:
            try:
                data = self.ctrl.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(P.unpack(data))

    # -- waiting -------------------------------------------------------------------------------
    def send_blocked(self) -> None:
        """A send waits on a full pipe: serve the control plane; give up if told to abandon."""
        self.drain()
        self.probe_tick()  # a restarted subscriber downstream may be waiting for our probe
        self.tick()
        if self.stop_requested and self.abandon:
            raise Stop()

    def poll_stop(self) -> bool:
        self.drain()
        self.check_stop_on()
        return self.stop_requested

    def wait(self, until: Any, timeout: float | None = None) -> None:
        """Serve the control plane (and probes) until `until()` is true."""
        poller = zmq.Poller()
        poller.register(self.ctrl, zmq.POLLIN)
        for s in {*self.control_in, *self.probe_waits, *self.handshakes}:
            poller.register(s, zmq.POLLIN)
        while not until():
            if self.stop_requested:
                raise Stop()
            for ev_sock, _ in poller.poll(self.probe_every * 1000 if self.probing else 100):
                if ev_sock is self.ctrl:
                    self.drain()
                elif ev_sock in self.probe_waits:
                    self.take_probes(ev_sock)
                elif ev_sock in self.handshakes:
                    self.take_handshakes(ev_sock)
                else:
                    self.check_stop_on()
            self.probe_tick()
            self.repeat_end_markers()

    def check_stop_on(self) -> None:
        """Read the stop_on sockets: their message stops the replica."""
        for sock, word in self.control_in.items():
            while True:
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if frame == word:
                    self.stop_requested = True
                    self.stop_reason = f"received {word.decode(errors='replace')}"

    # -- probes and end markers ----------------------------------------------------------------
    def repeat_end_markers(self) -> None:
        """PUB drops at its high-water mark, end markers included: after the end, repeat them
        every 100 ms until zflow stops this node (receivers count each sender once)."""
        now = time.monotonic()
        if self.eos_socks and now >= self.next_eos:
            self.next_eos = now + 0.1
            frame = codec.control_frame("eos", self.node.id)
            for sock in self.eos_socks:
                sock.send(frame)

    def probe_tick(self) -> None:
        """While asked to probe, each PUB socket sends a probe every `probe_every` seconds."""
        if self.probing and self.probe_socks:
            now = time.monotonic()
            if now < self.next_probe:
                return
            self.next_probe = now + self.probe_every
            frame = codec.control_frame("probe", self.node.id)
            for s in self.probe_socks:
                s.send(frame)

    def take_probes(self, sock: zmq.Socket) -> None:
        """Read a SUB before start: note the probes; keep data for the run (stop_on: stop)."""
        seen = self.probe_waits[sock][1]
        word = self.control_in.get(sock)
        box = self.node.inboxes_by_sock.get(sock)
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            mark = codec.parse_control_frame(frame)
            if mark is not None:
                if mark.get("probe"):
                    seen.add(mark["probe"])
                continue
            if word is not None and frame == word:
                self.stop_requested = True
                self.stop_reason = f"received {word.decode(errors='replace')}"
            elif box is not None:
                box.held.append(frame)

    def subscribed(self) -> bool:
        """Every connection to the topology's binders is up (handshaken), and every SUB has seen
        a probe from each zflow publisher: its subscription is live."""
        if any(left > 0 for left, _ in self.handshakes.values()):
            return False
        return all(expected <= seen for expected, seen in self.probe_waits.values())

    # -- telemetry -----------------------------------------------------------------------------
    def counters(self) -> dict[str, list[int]]:
        """Per socket: [records in, records out, bytes in, bytes out]."""
        node = self.node
        out: dict[str, list[int]] = {k: list(v) for k, v in node.custom_counts.items()}
        for b in node.inboxes.values():
            out[b.name] = [b.msgs, 0, b.nbytes, 0]
        for o in node.outboxes:
            out[o.name] = [0, o.msgs, 0, o.nbytes]
        return out

    def report_ranges(self, force: bool = False) -> None:
        """exactly-once: the ranges taken (transforms) and acknowledged (sinks) since the last
        report, as one message each: once per turn of the receive loop, not once per frame; and
        while they cover fewer than GATHER_RECORDS records, not again within GATHER seconds of
        the last report (`ranges_due` says when the loop must come back for them). A slow
        source's one-record frames each brought a `took` and an `ack`, every one relayed by the
        supervisor: at ~340 records/s that was 611 ms of its CPU in 3 s. Not in a replica's
        first GATHER_AFTER seconds of reports. `force`: now (the end of the stream)."""
        if not (self.took_rs or self.ack_rs):
            return
        now = time.monotonic()
        if not self.ranges_since:
            self.ranges_since = now
        elif (not force and now - self.ranges_since >= GATHER_AFTER
              and now < self.ranges_sent + GATHER  # (what ranges_due says)
              and sum(n for _, n in self.took_rs) + sum(n for _, n in self.ack_rs)
              < GATHER_RECORDS):
            return
        self.ranges_sent = now
        if self.took_rs:  # emptied in place: the stream's appliers hold these lists
            self.send(P.TOOK, rs=self.took_rs)
            self.took_rs.clear()
        if self.ack_rs:
            self.send(P.ACK, rs=self.ack_rs)
            self.ack_rs.clear()

    def ranges_due(self) -> float | None:
        """When the ranges `report_ranges` holds must be reported (time.monotonic), or None."""
        held = (self.took_rs or self.ack_rs) and self.ranges_since
        return self.ranges_sent + GATHER if held else None

    def tick(self) -> None:
        """Send the counters when `stats_interval` has passed since the last time."""
        if not self.telemetry:
            return
        now = time.monotonic()
        if now >= self.next_stats:
            self.next_stats = now + self.stats_every
            self.send(P.STATS, s=self.counters(), e=self.node.errors)
