"""The supervisor's end of the control plane: a ROUTER that replicas' DEALERs connect to.

Transport only: messages go in and out as bytes, the coordinator decides what they mean
(protocol.py lists them). The ROUTER never drops: acknowledgements can come in bursts, and a lost
`input_end` would hang a run.

On one machine it listens on an ipc path in the private run directory. Beyond one machine
(`zflow coordinator`) it listens on tcp with CURVE: a ZAP authenticator admits only the public keys
of the topology's nodes, and each message carries the key its connection authenticated with
(`User-Id`), which the coordinator checks against the identity the replica claims. ZMTP
heartbeats drop a link that died silently; `reachable` then tells the identity is gone.
"""

from __future__ import annotations

from typing import Any

import zmq

from zflow.runtime import protocol as P

#: ZMTP heartbeats on tcp control links (ms): a silent peer is dropped after TIMEOUT
HEARTBEAT_IVL, HEARTBEAT_TIMEOUT = 1000, 5000


def heartbeats(sock: zmq.Socket, ivl: int = HEARTBEAT_IVL,
               timeout: int = HEARTBEAT_TIMEOUT) -> None:
    """Ping the peer every `ivl` ms; drop the connection when nothing came for `timeout` ms."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)
    sock.setsockopt(zmq.HEARTBEAT_TTL, timeout)


class ControlServer:
    def __init__(self, endpoint: str, curve: Any = None,
                 heartbeat: tuple[int, int] | None = None) -> None:
        """`curve`: keys.Keys (server keypair and the nodes' public keys) for a tcp control
        plane; `heartbeat`: (interval, timeout) in ms."""
        self.ctx = zmq.Context()
        self.auth = None
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.setsockopt(zmq.RCVHWM, 0)
        #: a remote control plane must learn when an identity has gone (see `reachable`)
        self.remote = curve is not None or heartbeat is not None
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1 if self.remote else 0)
        if heartbeat is not None:
            heartbeats(self.router, *heartbeat)
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve_callback("*", AllowList(set(curve.nodes.values())))
            self.router.curve_secretkey = curve.secret
            self.router.curve_publickey = curve.public
            self.router.curve_server = True
        try:
            self.router.bind(endpoint)
        except zmq.ZMQError:
            self.close()  # the authenticator's thread too: the caller reports it and exits
            raise
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)

    def receive(self) -> list[tuple[bytes, bytes, str | None]]:
        """Every (identity, message, authenticated public key or None) waiting now."""
        out = []
        while True:
            try:
                if self.auth is None:
                    parts = self.router.recv_multipart(zmq.NOBLOCK)
                    if len(parts) == 2:
                        out.append((parts[0], parts[1], None))
                    continue
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return out
            if len(frames) == 2:
                out.append((frames[0].bytes, frames[1].bytes, frames[1].get("User-Id")))

    def send(self, identity: bytes, kind: str, fields: dict[str, Any]) -> None:
        try:
            self.router.send_multipart([identity, P.pack(kind, **fields)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the replica is gone: its exit is reported by the launcher (or `reachable`)

    def reachable(self, identity: bytes) -> bool:
        """Whether the link of `identity` is still up (remote control planes only): the ROUTER
        forgets an identity once its connection closed or its heartbeats stopped."""
        try:
            self.router.send_multipart([identity, P.pack(P.PING)], zmq.NOBLOCK)
        except zmq.ZMQError as e:
            return e.errno != zmq.EHOSTUNREACH
        return True

    def close(self) -> None:
        self.router.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()


class AllowList:
    """ZAP credentials check: only the topology's node keys (z85) may connect."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        return key.decode() in self.allowed  # pyzmq hands the key over in z85 already
