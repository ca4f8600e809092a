"""Node: the state of one running replica, shared by the modules that run it.

The state lives here; what is done with it lives in the sibling modules, which take the node:
sockets.build fills its sockets, the runners move its records, `node.control` (control.py) talks
to the supervisor.
"""

from __future__ import annotations

import time
from typing import Any

import zmq

from zflow.runtime import codec
from zflow.runtime import context as zctx
from zflow.runtime.replica.control import Control, dealer
from zflow.runtime.replica.exactly_once import Seen, Unacked
from zflow.runtime.replica.sockets import Inbox
from zflow.runtime.spec import ReplicaSpec


class Node:
    """One replica: its spec, sockets, counters and exactly-once memory; `control` is its link
    to the supervisor."""

    def __init__(self, spec: ReplicaSpec, control: str, ctx: zmq.Context | None = None,
                 ctrl: zmq.Socket | None = None) -> None:
        """`ctx` and `ctrl`: a control socket already connected (a replica that joined from
        another host, replica/join.py), instead of one made for `control`."""
        self.spec = spec
        self.id = spec.id
        self.ctx = ctx if ctx is not None else zmq.Context()
        self.control = Control(self, ctrl if ctrl is not None
                               else dealer(self.ctx, spec.identity, control))
        # the sockets by role (sockets.build fills these; stop_on and probes are control's)
        self.sockets: dict[str, zmq.Socket] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.inboxes_by_sock: dict[zmq.Socket, Inbox] = {}
        self.outboxes: list[codec.Outbox] = []
        self.control_out: list[tuple[zmq.Socket, bytes]] = []  # send_on_end
        self.custom_counts: dict[str, list[int]] = {}  # custom nodes count in SocketIO
        self.errors = 0
        #: the ZAP handler of CURVE data sockets (`security: {curve: true}`), when it binds one
        self.auth: Any = None
        self.t_start = time.monotonic()
        # exactly-once: sources keep what is unacknowledged; sinks remember what they have seen
        self.eo = spec.delivery != "best-effort"  # acknowledged: exactly- or at-least-once
        self.unacked = Unacked(spec.sources)
        self.seen = Seen(spec.sources)
        self.context = zctx.NodeContext(
            topology=spec.topology, node=spec.node, replica=spec.replica,
            replicas=spec.replicas, params=spec.params,
            verbose=spec.verbose, _stop=self.control.poll_stop,
        )
        zctx._set_current(self.context)
