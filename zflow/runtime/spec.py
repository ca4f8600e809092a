"""What one replica is told about itself: one typed spec, shared by the supervisor and the replica.

The supervisor builds a `ReplicaSpec` from the plan for every incarnation it starts; a Python
replica receives it as JSON (`to_json` / `from_json`, the only place it is serialised); a command
node receives the same facts as `ZFLOW_*` environment variables (`command_env`, the documented
contract in the README). Nothing else crosses that boundary, so a field is either here or does not
exist.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from zflow.records import field, record

if TYPE_CHECKING:  # a replica imports this module: it must not pay for the spec/plan imports
    from zflow.plan import NodePlan, Plan, SocketPlan


@record
class SocketSpec:
    """One socket as a replica builds it."""

    name: str
    type: str
    mode: str  # "bind" | "connect"
    hwm: int
    linger: int
    codec: str
    batch: int
    subscribe: list[str] = field(default_factory=list)
    topic: str | None = None
    stop_on: str | None = None
    send_on_end: str | None = None
    #: how this input learns its stream ended (plan.END_*)
    end: str = "never"
    #: replicas at the other end of this socket, whichever way data flows: end markers to wait
    #: for on an input, receivers to spread a short stream over (and end markers to send) on an
    #: output
    peer_replicas: int = 0
    #: every peer is a zflow node: zflow frames, probes and end markers may be used
    zflow_peers: bool = False
    #: json/raw: the message that ends one sender's stream ("" an empty one; None: none)
    end_marker: str | None = ""
    #: the endpoint to bind (mode "bind"); "tcp://127.0.0.1:*" lets the OS pick a port
    bind_endpoint: str | None = None
    #: PUB sockets that send readiness probes while asked to
    probe: bool = False
    #: SUB sockets: publisher replica ids ("node.i") whose probe must arrive before ready
    probes_from: list[str] = field(default_factory=list)

    @property
    def control(self) -> bool:
        """A control channel (stop_on / send_on_end), not part of the data stream."""
        return bool(self.stop_on or self.send_on_end)


#: the smallest exactly-once window, in records (see eo_window)
WINDOW = 1_000_000


@record
class ReplicaSpec:
    """Everything one incarnation of one replica needs to start, run and report."""

    topology: str
    node: str
    replica: int
    replicas: int
    incarnation: int
    kind: str  # "python" | "command"
    shape: str
    target: str | None
    argv: list[str] | None
    cwd: str
    #: the topology file's directory: Python replicas import their `run:` module from here
    base_dir: str
    env: dict[str, str]
    params: dict[str, Any]
    on_error: str
    dead_letter: str
    sockets: list[SocketSpec]
    delivery: str = "best-effort"
    #: exactly-once: how many source replicas number records (ids are `seq * sources + index`)
    sources: int = 1
    source_index: int = 0
    verbose: bool = False
    telemetry: bool = True
    stats_interval: float = 0.25
    #: exactly-once: records (and their bytes on the wire) a source may have unacknowledged,
    #: and how long before it resends; a source's window is sized by `eo_window`. The source
    #: keeps frames as bytes, so `window_bytes` is what the window costs in memory
    window: int = WINDOW
    window_bytes: int = 32 << 20
    lease: float = 5.0
    #: command nodes: "none" (/dev/null) or "go" (a newline once every node is ready)
    stdin: str = "none"
    #: `run:` nodes: the fork server imports the target's module before it forks this replica
    preload: bool = False
    #: command nodes only: the endpoints each connecting socket connects to, known at spawn
    #: (Python replicas are told later, by the `connect` control message)
    connect_endpoints: dict[str, list[str]] = field(default_factory=dict)
    #: a replica on another host (`zflow replica --advertise`): the host name its tcp endpoints
    #: are reported under, for peers to connect to (None: as bound)
    advertise: str | None = None
    #: (interval, timeout) ms of ZMTP heartbeats on its tcp data sockets too: between hosts, a
    #: peer whose link was cut silently would otherwise keep its pipe (and a PUSH's share of
    #: records) for as long as TCP retransmits
    heartbeat: list[int] | None = None
    #: `security: {curve: true}`: the run's data keypair (z85 `public`, `secret`); `{}` tells
    #: a replica on another host to use its own copy (`data.key_secret` from `zflow keys`)
    curve: dict[str, str] | None = None

    @property
    def id(self) -> str:
        return f"{self.node}.{self.replica}"

    @property
    def identity(self) -> bytes:
        """The control-plane identity of this incarnation (see protocol.py)."""
        return f"{self.id}#{self.incarnation}".encode()

    @property
    def title(self) -> str:
        """The process title `ps` shows."""
        return f"zflow: {self.topology} {self.id}"

    def socket(self, name: str) -> SocketSpec:
        for s in self.sockets:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_json(self) -> str:
        """The spec as JSON. Not `asdict`: it deep-copies every value first, and was most of
        the supervisor's work per replica started (~2 ms of CPU of ~3)."""
        return json.dumps({**vars(self), "sockets": [vars(s) for s in self.sockets]})

    @classmethod
    def from_json(cls, text: str) -> ReplicaSpec:
        d = json.loads(text)
        d["sockets"] = [SocketSpec(**s) for s in d["sockets"]]
        return cls(**d)


def socket_spec(plan: Plan, node: NodePlan, s: SocketPlan, bind_endpoint: str | None) -> SocketSpec:
    probes_from: list[str] = []
    if s.type == "SUB":  # publishers that probe: zflow nodes talking only to zflow nodes
        probes_from = [
            f"{p}.{i}" for p, ps in s.peers
            if plan.nodes[p].kind == "python" and plan.nodes[p].sockets[ps].zflow_peers
            for i in range(plan.nodes[p].replicas)
        ]
    return SocketSpec(
        name=s.name, type=s.type, mode=s.mode, hwm=s.hwm, linger=s.linger, codec=s.codec,
        batch=s.batch, subscribe=list(s.subscribe), topic=s.topic, stop_on=s.stop_on,
        send_on_end=s.send_on_end, end=s.end, peer_replicas=s.senders,
        zflow_peers=s.zflow_peers, bind_endpoint=bind_endpoint if s.mode == "bind" else None,
        end_marker=s.end_marker,
        probe=s.type in ("PUB", "XPUB") and s.zflow_peers, probes_from=probes_from,
    )


def dead_letter_path(plan: Plan, node: NodePlan) -> str:
    return os.path.join(node.cwd, f"{plan.name}.{node.name}.dead-letter.jsonl")


def eo_window(plan: Plan, sources: int) -> int:
    """A source's credit window: twice what the topology's data pipes can hold, its share.

    The window must exceed what the pipes hold, or the credit, not the pipes, paces the source:
    most of it then sits in the last hop's pipes, the transforms' inputs run dry, and every frame
    wakes a transform, its source and the supervisor one at a time (3M squares, 10 workers:
    200,000 records cost 16% more CPU than best-effort, 1,000,000 none measurable; 5M squares,
    40 workers, whose pipes hold 2.6M: 1,000,000 ran at 0.91 of best-effort's wall, 4,000,000
    at 1.12). A pipe holds its sender's and its receiver's high-water mark, in frames of up to
    `batch` records; `window_bytes` still bounds the memory."""
    held = 0
    for e in plan.edges:
        (sn, ss), (dn, ds) = e.src.split(".", 1), e.dst.split(".", 1)
        a, b = plan.nodes[sn].sockets[ss], plan.nodes[dn].sockets[ds]
        if a.role != "data" or not a.hwm or not b.hwm:
            continue
        pipes = plan.nodes[sn].replicas * plan.nodes[dn].replicas
        held += pipes * (a.hwm + b.hwm) * a.batch
    return max(WINDOW, 2 * held // max(1, sources))


def build_replica_spec(
    plan: Plan, node: str, index: int, incarnation: int, *,
    bound: dict[str, str] | None = None,
    connect: dict[str, list[str]] | None = None,
    source_index: int = 0, sources: int = 1,
    verbose: bool = False, telemetry: bool = True, curve: dict[str, str] | None = None,
) -> ReplicaSpec:
    """The spec of one incarnation. `bound` holds endpoints this replica bound before (a restart
    binds the same ones, so connected peers reconnect); `connect` is for command nodes."""
    n = plan.nodes[node]
    bound = bound or {}
    socks = [
        socket_spec(plan, n, s, bound.get(s.name) or plan.bind_endpoint(node, index, s.name))
        for s in n.sockets.values()
    ]
    return ReplicaSpec(
        topology=plan.name, node=node, replica=index, replicas=n.replicas,
        incarnation=incarnation, kind=n.kind, shape=n.shape, target=n.target,
        argv=list(n.argv) if n.argv else None, cwd=n.cwd, base_dir=plan.base_dir,
        env=dict(n.env), params=dict(n.params), on_error=n.on_error,
        dead_letter=dead_letter_path(plan, n), sockets=socks, delivery=plan.delivery,
        sources=max(1, sources), source_index=source_index, verbose=verbose,
        telemetry=telemetry, connect_endpoints=dict(connect or {}), stdin=n.stdin,
        preload=n.preload,
        curve=dict(curve) if curve is not None else None,
        window=eo_window(plan, sources) if plan.delivery != "best-effort" else WINDOW,
    )


def command_env(spec: ReplicaSpec) -> dict[str, str]:
    """The `ZFLOW_*` contract of command nodes (README, Command nodes)."""
    env = {
        "ZFLOW_TOPOLOGY": spec.topology, "ZFLOW_NODE": spec.node,
        "ZFLOW_REPLICA": str(spec.replica), "ZFLOW_REPLICAS": str(spec.replicas),
        "ZFLOW_REPLICA_ID": spec.id, "ZFLOW_PARAMS": json.dumps(spec.params),
        "ZFLOW_SOCKETS": " ".join(s.name for s in spec.sockets),
        "ZFLOW_VERBOSE": "1" if spec.verbose else "",
    }
    for s in spec.sockets:
        key = f"ZFLOW_SOCKET_{s.name.upper()}"
        env[f"{key}_TYPE"] = s.type
        env[f"{key}_MODE"] = s.mode
        env[f"{key}_CODEC"] = s.codec
        env[f"{key}_HWM"] = str(s.hwm)
        env[f"{key}_LINGER"] = str(s.linger)
        env[f"{key}_SENDERS"] = str(s.peer_replicas)
        if s.end_marker is not None:  # absent: no end marker, empty messages are data
            env[f"{key}_END_MARKER"] = s.end_marker
        if s.subscribe:
            env[f"{key}_SUBSCRIBE"] = json.dumps(s.subscribe)
        if s.mode == "bind":
            env[f"{key}_ENDPOINTS"] = s.bind_endpoint or ""
        else:
            env[f"{key}_ENDPOINTS"] = " ".join(spec.connect_endpoints.get(s.name, []))
    return env
