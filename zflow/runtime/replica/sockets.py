"""The replica's sockets: built from its SocketSpecs and sorted by role.

Each socket gets one role: a stop_on socket (control.py watches it), a send_on_end socket, a
data input (an Inbox), a data output (a codec.Outbox), or, for custom nodes, the user's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import zmq

from zflow.runtime import codec
from zflow.runtime.replica.errors import NodeFailure
from zflow.runtime.spec import SocketSpec

if TYPE_CHECKING:
    from zflow.runtime.replica.core import Node

RECEIVING = ("PULL", "SUB", "XSUB")
SENDING = ("PUSH", "PUB", "XPUB")


class Inbox:
    """A receiving data socket and what is known about the end of its stream."""

    __slots__ = ("name", "sock", "codec", "end", "senders", "eos", "msgs", "nbytes", "ended",
                 "report", "decode", "held", "zf", "settle", "marker")

    def __init__(self, name: str, sock: zmq.Socket, spec: SocketSpec) -> None:
        self.name = name
        self.sock = sock
        self.codec = spec.codec
        self.end = spec.end
        self.senders = spec.peer_replicas
        self.eos: set[str] = set()
        self.msgs = 0
        self.nbytes = 0
        self.ended = False
        #: ended by zflow's word that its senders exited, not in-band: read what is still on
        #: its way before finishing
        self.settle = False
        self.report = False
        self.decode = codec.decode_one(self.codec)
        #: json/raw: the message that ends one sender's stream (None: there is none)
        self.marker = None if spec.end_marker is None else spec.end_marker.encode()
        self.held: list[bytes] = []  # data that arrived before start (a restarted replica)
        # 0xFF-prefixed frames are zflow's own unless raw bytes may come from outside zflow
        self.zf = self.codec != "raw" or spec.zflow_peers


def build(node: Node) -> dict[str, str]:
    """Create, configure and bind every socket of `node`; returns the endpoints bound."""
    spec = node.spec
    ctl = node.control
    bound: dict[str, str] = {}
    for s in spec.sockets:
        sock = node.ctx.socket(getattr(zmq, s.type))
        sock.setsockopt(zmq.LINGER, s.linger)
        sock.setsockopt(zmq.SNDHWM, s.hwm)
        sock.setsockopt(zmq.RCVHWM, s.hwm)
        if spec.heartbeat:  # a replica on another host (join.py); never on one host
            from zflow.runtime.control import heartbeats

            heartbeats(sock, *spec.heartbeat)
        if spec.curve and s.zflow_peers:  # `security: {curve: true}`: only this run's replicas
            _curve(node, sock, s.mode == "bind")
        if s.type == "SUB":
            for prefix in s.subscribe:
                sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
            if s.probes_from or s.codec == "msgpack":
                sock.setsockopt(zmq.SUBSCRIBE, codec.ZF)
            if s.probes_from:
                ctl.probe_waits[sock] = (set(s.probes_from), set())
        node.sockets[s.name] = sock
        if s.mode == "bind":
            # every peer replica connects at once when the barrier says so: ZeroMQ's default
            # listen backlog (100) refuses the rest, which then retry every 100 ms — hundreds of
            # replicas took seconds to connect. Room for all of them at once (the kernel caps it
            # at net.core.somaxconn).
            sock.setsockopt(zmq.BACKLOG, max(100, s.peer_replicas + 16))
            ep = s.bind_endpoint
            try:
                sock.bind(ep)
            except zmq.ZMQError as e:
                hint = ("another process is using it; stop it or choose another port "
                        "(or `bind: tcp` to let the OS pick one)" if e.errno == zmq.EADDRINUSE
                        else None)
                raise NodeFailure("bind", f"cannot bind {ep}: {zmq.strerror(e.errno)}",
                                  socket=s.name, endpoint=ep, hint=hint) from None
            bound[s.name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            if spec.advertise:  # bound on every interface of another host: reached by name
                from zflow.cluster import advertised

                bound[s.name] = advertised(bound[s.name], spec.advertise)
        if s.stop_on:
            ctl.control_in[sock] = s.stop_on.encode()
        elif spec.shape == "custom":
            pass  # custom code owns its sockets; SocketIO counts what it moves
        elif s.send_on_end:
            node.control_out.append((sock, s.send_on_end.encode()))
        elif s.type in RECEIVING:
            node.inboxes[s.name] = Inbox(s.name, sock, s)
        elif s.type in SENDING:
            box = codec.IdOutbox if node.eo else codec.Outbox
            out = box(s.name, sock, s.codec, s.batch, s.topic)
            out.stride = spec.sources
            out.marker = None if s.end_marker is None else s.end_marker.encode()
            out.blocked = ctl.send_blocked
            sock.setsockopt(zmq.SNDTIMEO, 100)  # a blocked send still hears STOP
            node.outboxes.append(out)
        elif s.type in ("REP", "ROUTER") and spec.shape == "service":
            node.inboxes[s.name] = Inbox(s.name, sock, s)
        if s.probe:
            ctl.probe_socks.append(sock)
            # every probe wakes every subscriber: 5 ms apart for a few, up to 100 ms for
            # hundreds (500 subscribers woken every 5 ms saturated both cores at start)
            ctl.probe_every = max(ctl.probe_every, min(0.1, 0.0005 * s.peer_replicas))
    node.inboxes_by_sock = {b.sock: b for b in node.inboxes.values()}
    node.context.sockets = dict(node.sockets)
    return bound


def _curve(node: Node, sock: zmq.Socket, server: bool) -> None:
    """CURVE with the run's data keypair: a binder admits (through a ZAP handler, started once
    per replica) only clients that hold it; a connector proves it holds it."""
    key = node.spec.curve or {}
    public, secret = key["public"].encode(), key["secret"].encode()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    if not server:
        sock.curve_serverkey = public
        return
    if node.auth is None:
        from zmq.auth.thread import ThreadAuthenticator

        from zflow.runtime.control import AllowList

        node.auth = ThreadAuthenticator(node.ctx)
        node.auth.start()
        node.auth.configure_curve_callback("*", AllowList({key["public"]}))
    sock.curve_server = True


def connect(sockets: dict[str, zmq.Socket], endpoints: dict[str, list[str]]) -> None:
    """Connect each named socket to its endpoints (the supervisor's `connect` message)."""
    for name, eps in endpoints.items():
        sock = sockets[name]
        for ep in eps:
            try:
                sock.connect(ep)
            except zmq.ZMQError as e:
                raise NodeFailure("connect", f"cannot connect to {ep}: {e.strerror}",
                                  socket=name, endpoint=ep) from None


def fair_batches(node: Node, total: int) -> None:
    """A short stream is cut into enough frames to reach every receiving replica (PUSH
    balances per frame): at least 4 frames per receiver, never over `batch`."""
    for o in node.outboxes:
        peers = node.spec.socket(o.name).peer_replicas
        if peers:
            o.batch = max(1, min(o.batch, total // (4 * peers)))
