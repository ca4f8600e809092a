"""The custom-node API: what `NodeContext.send/recv/request/proxy` do (see context.py).

Custom code owns its loop and its sockets; SocketIO spares it the codecs, skips zflow's probes and
end markers, counts what moves, and keeps serving the control plane while it waits.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

import zmq

from zflow.runtime import codec

if TYPE_CHECKING:
    from zflow.runtime.replica.core import Node

_PIPELINE = (zmq.PUSH, zmq.PULL, zmq.PUB, zmq.SUB)


class SocketIO:
    """What `NodeContext.send/recv/request/proxy` do for custom nodes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.ctl = node.control
        self.codecs = {s.name: s.codec for s in node.spec.sockets}
        self.counts = node.custom_counts
        self.held: dict[str, collections.deque] = {}  # records of a frame not yet returned

    def _count(self, name: str, col: int, nbytes: int) -> None:
        c = self.counts.setdefault(name, [0, 0, 0, 0])
        c[col] += 1
        c[col + 2] += nbytes

    def _sock(self, name: str) -> zmq.Socket:
        try:
            return self.node.sockets[name]
        except KeyError:
            raise KeyError(f"node {self.node.spec.node!r} has no socket {name!r}") from None

    def _batched(self, sock: zmq.Socket, name: str) -> bool:
        """Pipeline sockets between zflow nodes carry msgpack *frames* (lists of records)."""
        return self.codecs[name] == "msgpack" and sock.type in _PIPELINE

    def send(self, name: str, record: Any) -> None:
        sock = self._sock(name)
        if self._batched(sock, name):
            frame = b"\0" + codec._packb([record])
        else:
            frame = codec.encode_one(self.codecs[name])(record)
        if sock.type == zmq.DEALER:
            sock.send_multipart([b"", frame])
        else:
            sock.send(frame)
        self._count(name, 1, len(frame))
        self.ctl.tick()

    def recv(self, name: str, timeout: float | None) -> Any:
        sock = self._sock(name)
        held = self.held.get(name)
        if held:
            return held.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else (deadline - time.monotonic()) * 1000
            wait = 100 if left is None else max(0, min(100, left))
            if sock.poll(wait, zmq.POLLIN):
                parts = sock.recv_multipart()
                body = parts[-1]
                if codec.parse_control_frame(body) is not None or (
                        not body and self.codecs[name] != "msgpack"):
                    continue  # a probe or an end marker
                self._count(name, 0, len(body))
                if self._batched(sock, name):
                    recs = collections.deque(codec.decode_batch(body))
                    first = recs.popleft()
                    if recs:
                        self.held[name] = recs
                    return first
                return codec.decode_one(self.codecs[name])(body)
            if self.ctl.poll_stop() or (deadline is not None and time.monotonic() >= deadline):
                return None

    def proxy(self, frontend: str, backend: str) -> None:
        ctl = self.ctl
        a, b = self._sock(frontend), self._sock(backend)
        names = {a: frontend, b: backend}
        poller = zmq.Poller()
        poller.register(a, zmq.POLLIN)
        poller.register(b, zmq.POLLIN)
        poller.register(ctl.ctrl, zmq.POLLIN)
        while not ctl.stop_requested:
            for sock, _ in poller.poll(ctl.stats_every * 1000):
                if sock is ctl.ctrl:
                    ctl.drain()
                    continue
                other = b if sock is a else a
                while True:
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    other.send_multipart(parts)
                    self._count(names[sock], 0, len(parts[-1]))
                    self._count(names[other], 1, len(parts[-1]))
            ctl.tick()
