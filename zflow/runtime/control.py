"""The supervisor's end of the control plane: a ROUTER that replicas' DEALERs connect to.

Transport only: messages go in and out as bytes, the coordinator decides what they mean
(protocol.py lists them). The ROUTER never drops: acknowledgements can come in bursts, and a lost
`input_end` would hang a run.
"""

from __future__ import annotations

from typing import Any

import zmq

from zflow.runtime import protocol as P


class ControlServer:
    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.setsockopt(zmq.RCVHWM, 0)
        self.router.bind(endpoint)
        self.endpoint = endpoint

    def receive(self) -> list[tuple[bytes, bytes]]:
        """Every (identity, message) waiting now."""
        out = []
        while True:
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            if len(parts) == 2:
                out.append((parts[0], parts[1]))

    def send(self, identity: bytes, kind: str, fields: dict[str, Any]) -> None:
        try:
            self.router.send_multipart([identity, P.pack(kind, **fields)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the replica is gone: its exit is reported by the launcher

    def close(self) -> None:
        self.router.close(0)
        self.ctx.term()
