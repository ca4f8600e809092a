"""The control plane between the supervisor and its replicas.

The supervisor binds a ROUTER on an ipc endpoint in the run directory; each replica connects a
DEALER whose identity is `node.replica#incarnation`. Messages are msgpack maps with a `t` field.
The user's sockets never carry any of this (except the readiness probes and end markers on PUB/SUB,
see codec.py), so the topology that runs is exactly the one in the YAML.

replica → supervisor                         supervisor → replica
  hello {pid}                                  connect {endpoints: {socket: [ep, ...]}}
  bound {endpoints: {socket: ep}}              probe {on: bool}      (PUB sockets send probes)
  ready                                        start
  total {n}          (source knows its length) drain {socket}        (report counts as they move)
  stats {s: {socket: [in, out, bin, bout]}, e} input_end {socket, expected}
  count {socket, n}                            stop
  finished {s, e, result}
  stopping {reason}
  fatal {phase, message, socket?, endpoint?}
  ack {ids}          (exactly-once: sink/transform)  ack {ids}  (forwarded to the source)
                                               resend              (a replica died: resend unacked)
"""

from __future__ import annotations

from typing import Any

import msgpack

# replica → supervisor
HELLO, BOUND, READY, TOTAL, STATS, COUNT, FINISHED, STOPPING, FATAL = (
    "hello", "bound", "ready", "total", "stats", "count", "finished", "stopping", "fatal",
)
# supervisor → replica
CONNECT, PROBE, START, DRAIN, INPUT_END, STOP = (
    "connect", "probe", "start", "drain", "input_end", "stop",
)
# exactly-once, both ways
ACK, RESEND = "ack", "resend"

ENV_CONTROL = "ZFLOW_CONTROL"
ENV_SPEC = "ZFLOW_SPEC"


def pack(kind: str, **fields: Any) -> bytes:
    fields["t"] = kind
    return msgpack.packb(fields)


def unpack(data: bytes) -> dict[str, Any]:
    msg = msgpack.unpackb(data)
    if not isinstance(msg, dict) or "t" not in msg:
        raise ValueError("not a zflow control message")
    return msg
