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
  count {socket, n}                            stop {abandon}
                                               interrupt  (Ctrl-C: sources stop, the rest drain)
  finished {s, e, result}
  stopping {reason}
  fatal {phase, message, socket?, endpoint?}
  ack {ids}          (exactly-once: sink/transform)  ack {ids}  (forwarded to the source)
  took {ids}         (exactly-once: a transform took a frame)  took {ids, by, hop1} (forwarded)
                                               resend {dead?, live?}  (resend what `dead` held,
                                                 or, without `dead`, all that is unacked)
                                               poison {id, node, error, path}  (dead-letter it)
  low {id}           (exactly-once source: lowest unacknowledged id; forwarded to sinks)

Replicas started by an engine on other hosts (`zflow replica`) join instead of being spawned:
  hello {pid, digest, host}                    welcome {spec}   (the ReplicaSpec, as JSON)
                                               refused {reason} (topology digest differs)
  bye {code}         (its exit code, last)     ping             (is the link there?)
  listening {endpoints}, conns {socket: n},    signal {sig, group}  (delivered where it runs)
  line {stream, text}   (command-node wrapper) release          (stdin: go)
"""

from __future__ import annotations

from typing import Any

import msgpack

# replica → supervisor
HELLO, BOUND, READY, TOTAL, STATS, COUNT, FINISHED, STOPPING, FATAL = (
    "hello", "bound", "ready", "total", "stats", "count", "finished", "stopping", "fatal",
)
# supervisor → replica
CONNECT, PROBE, START, DRAIN, INPUT_END, STOP, INTERRUPT = (
    "connect", "probe", "start", "drain", "input_end", "stop", "interrupt",
)
# exactly-once, both ways
ACK, RESEND, LOW, TOOK, POISON = "ack", "resend", "low", "took", "poison"
# replicas started elsewhere (`zflow replica`): the coordinator admits one (`welcome {spec}`) or
# refuses it (`refused {reason}`); `ping` checks the link is there; `bye {code, cpu, maxrss?}` is
# the exit code a coordinator on another host cannot see, with what the replica used (`usage()`)
WELCOME, REFUSED, PING, BYE = "welcome", "refused", "ping", "bye"
# a command node on another host: its `zflow replica` wrapper says what the local launcher would
# see (`listening {endpoints}`, `conns {socket: n}`, `line {stream, text}`); signals and `stdin:
# go` cannot cross hosts as such, so the launcher sends them (`signal {sig}`, `release`)
LISTENING, CONNS, LINE, SIGNAL, RELEASE = "listening", "conns", "line", "signal", "release"

ENV_CONTROL = "ZFLOW_CONTROL"
ENV_SPEC = "ZFLOW_SPEC"

#: `fatal` phases that mean the replica could not start (exit code 3 for the run, no restart);
#: any other phase is a failure while running (exit code 1, restart policy applies)
START_PHASES = frozenset({"import", "bind", "connect", "spawn"})


def usage(peak: bool = True) -> dict[str, float | int]:
    """`bye`'s `cpu` (seconds, user + system, this process's and its waited-for children's) and
    `maxrss` (this process's peak resident bytes): what the local launcher reads from wait4,
    said by a replica whose exit the coordinator cannot wait for. `peak=False` (a command's
    wrapper) leaves the peak out: neither the wrapper's nor its program's is the program's
    (Linux carries a parent's peak across fork and exec)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out: dict[str, float | int] = {
        "cpu": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 6)}
    if peak:
        out["maxrss"] = me.ru_maxrss * 1024  # Linux counts KiB
    return out


def exit_code_for(phase: str) -> int:
    """The replica's own exit code after a `fatal` report: the one rule both sides follow."""
    return 3 if phase in START_PHASES else 1


def pack(kind: str, **fields: Any) -> bytes:
    fields["t"] = kind
    try:
        return msgpack.packb(fields)
    except (OverflowError, TypeError, ValueError):
        # a user's result msgpack cannot carry (an int over 64 bits, a set, an object):
        # send what it says, not nothing
        return msgpack.packb(_plain(fields))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (float, str, bytes)):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value
    return str(value) if isinstance(value, int) else repr(value)


def unpack(data: bytes) -> dict[str, Any]:
    msg = msgpack.unpackb(data)
    if not isinstance(msg, dict) or "t" not in msg:
        raise ValueError("not a zflow control message")
    return msg
