"""A validated topology becomes a plan: pure data, no processes.

The plan expands replicas, merges defaults, gives every binding socket a concrete endpoint (ipc
paths in the run directory now; loopback tcp ports are chosen by the OS when the replica binds, so
no port can be stolen between planning and binding), and works out who talks to whom: the links
(connector → binder), the data-flow edges the status screen shows, and how each input learns that
its stream ended. `zflow up --dry-run` prints it.
"""

from __future__ import annotations

import os
from typing import Any

from zflow.records import asdict, field, record
from zflow.spec import Endpoint, infer_shape, parse_endpoint, split_ref
from zflow.spec.rules import AUTO_BINDS, EndpointError, reaches

#: Socket types whose messages flow *into* the node; the rest send, or do both (REQ/REP family).
RECEIVING = frozenset({"PULL", "SUB", "XSUB"})
SENDING = frozenset({"PUSH", "PUB", "XPUB"})
#: Receiving sides of request/reply: their stream ends when every peer node has finished.
REQUEST_RECEIVING = frozenset({"REP", "ROUTER", "PAIR"})

NODE_DEFAULTS: dict[str, Any] = {
    "restart": "on-failure",
    "max_restarts": 5,
    "restart_window": 60.0,
    "backoff": {"initial": 0.1, "max": 5.0},
    "grace": 5.0,
    "on_error": "fail",
}
SOCKET_DEFAULTS: dict[str, Any] = {"hwm": None, "linger": 1000, "codec": "msgpack", "batch": 1000}
#: hwm counts ZeroMQ messages; a msgpack message is a frame of up to `batch` records, so its
#: default is lower: 100 frames still keep a pipe full, and a stalled stage holds 100k records,
#: not 1M, per pipe.
HWM_DEFAULT = {"msgpack": 100}
#: exactly-once: the credit window already bounds what is in flight, and what a replica's pipes
#: hold is resent when it dies; shallow pipes keep that small (benchmarks/churn.py, 600k records,
#: a worker killed every 250 ms: 2.11x the undisturbed time at 100 frames per pipe, 2.01x at 16,
#: 1.70x at 8, under load 4-5; 16 costs no rec/s against best-effort at 1M records, 8 was not
#: measured on a quiet enough machine)
EO_HWM = 16
#: sockets that drop, not block, at their high-water mark (and their SUB peers)
LOSSY = frozenset({"PUB", "XPUB", "SUB", "XSUB"})

#: How an input socket learns its stream ended (see docs/runtime.md):
#: count   - PUSH→PULL between zflow nodes: the supervisor compares records sent and received
#: markers - PUB→SUB, and json/raw sockets: each sender replica sends an end marker in-band
#: peers   - request/reply and custom sockets: the stream ends when every peer node finished
#: never   - fed from outside the topology: runs until interrupted
END_COUNT, END_MARKERS, END_PEERS, END_NEVER = "count", "markers", "peers", "never"


@record
class SocketPlan:
    """One socket of one node; `bind` is per replica (see ReplicaPlan.binds)."""

    name: str
    type: str
    mode: str  # "bind" | "connect"
    bind: str | None = None  # the YAML value: endpoint, "auto", "ipc" or "tcp"
    connect: list[str] = field(default_factory=list)  # YAML values: endpoints or node.socket
    subscribe: list[str] = field(default_factory=list)
    hwm: int = 1000
    linger: int = 1000
    codec: str = "msgpack"
    batch: int = 1000
    topic: str | None = None
    stop_on: str | None = None
    send_on_end: str | None = None
    role: str = "data"  # "data" | "control"
    #: (node, socket) on the other end of every link of this socket
    peers: list[tuple[str, str]] = field(default_factory=list)
    #: how many sender replicas feed this socket (end markers to wait for)
    senders: int = 0
    end: str = END_NEVER
    external: bool = False  # also talks to an endpoint outside the topology
    #: every peer is a zflow (python) node inside the topology: zflow frames, probes and end
    #: markers may be used on this socket
    zflow_peers: bool = False
    #: hwm was not set in the topology (zflow may choose it)
    hwm_default: bool = True
    #: json/raw: the message ending one sender's stream ("" an empty one; None: there is none)
    end_marker: str | None = ""
    #: end markers expected from senders outside the topology
    external_senders: int = 0

    @property
    def receives(self) -> bool:
        return self.type in RECEIVING or self.type in REQUEST_RECEIVING


@record
class NodePlan:
    name: str
    kind: str  # "python" | "command"
    target: str | None
    argv: list[str] | None
    shape: str
    replicas: int
    params: dict[str, Any]
    env: dict[str, str]
    cwd: str
    restart: str
    max_restarts: int
    restart_window: float
    backoff_initial: float
    backoff_max: float
    grace: float
    on_error: str
    sockets: dict[str, SocketPlan]
    #: command nodes: "none" or "go" (a newline when every node is ready)
    stdin: str = "none"
    #: "task" (ends its stream) or "service" (stopped once every node linked to it finished)
    lifetime: str = "task"
    #: command nodes: {"log": regex} or {"delay": seconds}, besides listening and connections
    ready: dict[str, Any] = field(default_factory=dict)
    #: what each replica needs from its host, for engines that place it: {"cpus", "mem"}
    resources: dict[str, Any] = field(default_factory=dict)
    #: `run:` nodes: import the module once in the fork server, before forking the replicas
    preload: bool = False


@record
class Link:
    """A connection inside the topology: a `connect: node.socket` reference, or a concrete
    endpoint that a socket of the topology binds."""

    connector: tuple[str, str]
    binder: tuple[str, str]


@record
class Edge:
    """Data flows src → dst (sender socket to receiver socket), whichever side binds."""

    src: str
    dst: str


@record
class Plan:
    name: str
    file: str
    base_dir: str
    run_dir: str
    nodes: dict[str, NodePlan]
    links: list[Link]
    edges: list[Edge]
    #: count groups: each a (sender sockets, receiver sockets) set of "node.socket" ids whose
    #: records are compared at end of stream
    count_groups: list[tuple[list[str], list[str]]]
    #: "best-effort", "at-least-once" or "exactly-once", as it runs (docs/format.md, Delivery)
    delivery: str = "best-effort"
    #: what the topology asked for: "auto" (the default), or one of the above
    delivery_asked: str = "auto"
    #: auto that could not be exactly-once: why (shown by --dry-run)
    delivery_reason: str = ""
    #: `security: {curve: true}`: data sockets between zflow nodes use CURVE
    curve: bool = False

    def bind_endpoint(self, node: str, replica: int, socket: str) -> str:
        """The endpoint a replica binds: ipc paths are fixed here; tcp auto binds to port *."""
        sp = self.nodes[node].sockets[socket]
        value = sp.bind or "auto"
        if value in ("auto", "ipc"):
            return f"ipc://{self.run_dir}/{node}.{replica}.{socket}"
        if value == "tcp":
            return "tcp://127.0.0.1:*"
        return value

    def replica_ids(self) -> list[tuple[str, int]]:
        return [(n.name, i) for n in self.nodes.values() for i in range(n.replicas)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def build_plan(
    topology: dict[str, Any], file: str, run_dir: str | None = None
) -> Plan:
    """Expand a validated topology dict (as returned by zflow.spec.load) into a Plan."""
    base_dir = os.path.dirname(os.path.abspath(file))
    defaults = topology.get("defaults") or {}
    run_dir = run_dir or os.path.join("/tmp", "zflow-<run>")
    nodes: dict[str, NodePlan] = {}
    for name, nd in topology["nodes"].items():
        merged = {**NODE_DEFAULTS, **{k: v for k, v in defaults.items() if k in NODE_DEFAULTS}}
        merged.update({k: v for k, v in nd.items() if k in NODE_DEFAULTS})
        backoff = {**NODE_DEFAULTS["backoff"], **(merged.get("backoff") or {})}
        sockets: dict[str, SocketPlan] = {}
        for sname, sd in (nd.get("sockets") or {}).items():
            sdef = {**SOCKET_DEFAULTS,
                    **{k: v for k, v in defaults.items() if k in SOCKET_DEFAULTS}}
            sdef.update({k: v for k, v in sd.items() if k in SOCKET_DEFAULTS})
            sockets[sname] = SocketPlan(
                name=sname,
                type=sd["type"],
                mode="bind" if "bind" in sd else "connect",
                bind=sd.get("bind"),
                connect=_as_list(sd.get("connect")),
                subscribe=_as_list(sd.get("subscribe")),
                hwm=int(sdef["hwm"] if sdef["hwm"] is not None
                        else 1000 if sd["type"] in LOSSY  # PUB/SUB drop at hwm: keep 1000
                        else HWM_DEFAULT.get(str(sdef["codec"]), 1000)),
                hwm_default=sdef["hwm"] is None,
                linger=int(sdef["linger"]),
                codec=str(sdef["codec"]),
                batch=int(sdef["batch"]),
                topic=sd.get("topic"),
                stop_on=sd.get("stop_on"),
                send_on_end=sd.get("send_on_end"),
                role="control" if (sd.get("stop_on") or sd.get("send_on_end")) else "data",
                end_marker=sd.get("end_marker", ""),
                external_senders=int(sd.get("external_senders") or 0),
            )
        cwd = nd.get("cwd") or base_dir
        nodes[name] = NodePlan(
            name=name,
            kind="python" if "run" in nd else "command",
            target=nd.get("run"),
            argv=list(nd["command"]) if "command" in nd else None,
            shape=infer_shape(nd),
            replicas=int(nd.get("replicas", 1)),
            params=dict(nd.get("params") or {}),
            env={str(k): str(v) for k, v in (nd.get("env") or {}).items()},
            cwd=os.path.join(base_dir, cwd) if not os.path.isabs(cwd) else cwd,
            restart=str(merged["restart"]),
            max_restarts=int(merged["max_restarts"]),
            restart_window=float(merged["restart_window"]),
            backoff_initial=float(backoff["initial"]),
            backoff_max=float(backoff["max"]),
            grace=float(merged["grace"]),
            on_error=str(merged["on_error"]),
            sockets=sockets,
            stdin=str(nd.get("stdin", "none")),
            lifetime=str(nd.get("lifetime", "task")),
            ready=dict(nd.get("ready") or {}),
            resources={k: v for k, v in (nd.get("resources") or {}).items()
                       if not str(k).startswith("x-")},
            preload=nd.get("preload") is True and "run" in nd,
        )

    links = _links(nodes)
    for lk in links:
        a = nodes[lk.connector[0]].sockets[lk.connector[1]]
        b = nodes[lk.binder[0]].sockets[lk.binder[1]]
        a.peers.append(lk.binder)
        b.peers.append(lk.connector)

    edges: list[Edge] = []
    for lk in links:
        a = nodes[lk.connector[0]].sockets[lk.connector[1]]
        src, dst = (lk.connector, lk.binder) if a.type in SENDING else (lk.binder, lk.connector)
        if a.type in SENDING or a.type in RECEIVING:
            edges.append(Edge(".".join(src), ".".join(dst)))
        else:  # request/reply: show the requester → replier direction
            first = lk.connector if a.type in ("REQ", "DEALER") else lk.binder
            second = lk.binder if first == lk.connector else lk.connector
            edges.append(Edge(".".join(first), ".".join(second)))

    _assign_end_modes(nodes)
    asked = str(topology.get("delivery", "auto"))
    delivery, reason = asked, ""
    if asked == "auto":
        reason = exactly_once_blocker(nodes)
        delivery = "exactly-once" if not reason else "at-least-once" \
            if reason.startswith(SINK_REPLICAS) else "best-effort"
    if delivery != "best-effort":
        for n in nodes.values():
            for s in n.sockets.values():
                if s.hwm_default and s.role == "data" and s.codec == "msgpack":
                    s.hwm = EO_HWM
    return Plan(
        name=str(topology["name"]),
        file=os.path.abspath(file),
        base_dir=base_dir,
        run_dir=run_dir,
        nodes=nodes,
        links=links,
        edges=edges,
        count_groups=_count_groups(nodes),
        delivery=delivery,
        delivery_asked=asked,
        delivery_reason=reason,
        curve=bool((topology.get("security") or {}).get("curve", False)),
    )


def exactly_once_blocker(nodes: dict[str, NodePlan]) -> str:
    """Why this topology cannot run exactly-once ("" if it can): `delivery: auto` then runs it
    at-least-once if the only reason is a sink with several replicas (each drops only the
    duplicates it sees), best-effort otherwise. The conditions are ZF073's (spec/rules.py),
    which says the same of a topology that asks for exactly-once, with locations."""
    sinks = [n for n in nodes.values() if n.shape == "sink"]
    if not any(n.shape == "source" for n in nodes.values()):
        return "no source node"
    for n in nodes.values():
        if n.kind == "command":
            return f"'{n.name}' is a command node"
        if n.shape in ("custom", "service"):
            return f"'{n.name}' is a {n.shape} node"
    for n in nodes.values():
        for s in n.sockets.values():
            if s.role == "control":
                continue
            if s.type not in ("PUSH", "PULL"):
                return f"'{n.name}.{s.name}' is {s.type}"
            if s.codec != "msgpack":
                return f"'{n.name}.{s.name}' uses codec {s.codec}"
            if s.external or (s.receives and s.end != END_COUNT):
                return f"'{n.name}.{s.name}' talks to programs outside the topology"
    if len(sinks) != 1:
        return f"{len(sinks)} sink nodes" if sinks else "no sink node"
    if sinks[0].replicas > 1:  # acknowledgements work; dropping duplicates does not
        return f"{SINK_REPLICAS} '{sinks[0].name}' has {sinks[0].replicas} replicas"
    return ""


#: the one blocker that leaves acknowledgements and resends (at-least-once) in place
SINK_REPLICAS = "sink"


def _endpoint(value: str, *, binding: bool) -> Endpoint | None:
    try:
        return parse_endpoint(value, binding=binding)
    except EndpointError:
        return None


def _links(nodes: dict[str, NodePlan]) -> list[Link]:
    """Every connection inside the topology, and which sockets also face the outside.

    All binders are known before any connector is looked at, so the result does not depend on
    the order of nodes in the file. A connector reaches a binder by reference (`node.socket`) or
    by a concrete endpoint that the binder binds (the same rule the validator uses); any other
    endpoint is outside the topology (`external`), and so is a fixed bind nobody here connects
    to.
    """
    fixed: list[tuple[Endpoint, tuple[str, str]]] = []
    for n in nodes.values():
        for s in n.sockets.values():
            if s.mode == "bind" and s.bind not in AUTO_BINDS and s.bind:
                ep = _endpoint(s.bind, binding=True)
                if ep is not None:
                    fixed.append((ep, (n.name, s.name)))
    links: list[Link] = []
    for n in nodes.values():
        for s in n.sockets.values():
            reached: list[tuple[str, str]] = []
            for target in s.connect:
                ref = split_ref(target)
                if ref is None:
                    ep = _endpoint(target.strip(), binding=False)
                    ref = next((b for bep, b in fixed if ep is not None and reaches(bep, ep)),
                               None)
                if ref is None:
                    s.external = True
                elif ref not in reached:  # one link per binder (ZF070 warns of a second)
                    reached.append(ref)
                    links.append(Link((n.name, s.name), ref))
    linked = {lk.binder for lk in links}
    for _ep, (node, sock) in fixed:
        # a fixed endpoint nobody here connects to is there for programs outside the topology
        nodes[node].sockets[sock].external = (node, sock) not in linked
    return links


def _assign_end_modes(nodes: dict[str, NodePlan]) -> None:
    for n in nodes.values():
        for s in n.sockets.values():
            s.senders = sum(nodes[p].replicas for p, _ in s.peers) + s.external_senders
            s.zflow_peers = (bool(s.peers) and not s.external
                             and all(nodes[p].kind == "python" for p, _ in s.peers))
            if not s.receives or s.role == "control":
                continue
            if (s.hwm_default and s.type == "PULL" and n.kind == "python"
                    and any(nodes[p].kind == "command" for p, _ in s.peers)):
                # a program that sends and exits: libzmq drops what is still in the connection
                # when the receiving pipe is at its high-water mark (libzmq#4660); an unbounded
                # receive queue keeps every record
                s.hwm = 0
            if s.external_senders and s.end_marker is not None:
                s.end = END_MARKERS  # outside senders say when they are done
            elif s.external or not s.peers:
                s.end = END_NEVER
            elif n.kind == "command" or n.shape in ("custom", "service"):
                s.end = END_PEERS
            elif s.type == "PULL" and all(nodes[p].kind == "python" for p, _ in s.peers):
                s.end = END_COUNT  # any codec: both ends count the records they moved
            elif s.type in ("SUB", "XSUB") or s.codec != "msgpack":
                s.end = END_MARKERS
            else:
                s.end = END_PEERS


def _count_groups(nodes: dict[str, NodePlan]) -> list[tuple[list[str], list[str]]]:
    """Connected PUSH/PULL components whose totals must match before receivers end."""
    seen: set[str] = set()
    groups = []
    for n in nodes.values():
        for s in n.sockets.values():
            sid = f"{n.name}.{s.name}"
            if s.end != END_COUNT or sid in seen:
                continue
            senders: set[str] = set()
            receivers: set[str] = set()
            todo = [sid]
            while todo:
                cur = todo.pop()
                if cur in seen:
                    continue
                seen.add(cur)
                cn, cs = cur.split(".")
                sock = nodes[cn].sockets[cs]
                (receivers if sock.type == "PULL" else senders).add(cur)
                todo.extend(f"{p}.{ps}" for p, ps in sock.peers)
            groups.append((sorted(senders), sorted(receivers)))
    return groups


def describe_delivery(plan: Plan) -> str:
    """`exactly-once (auto)`, `best-effort (auto: 'w.out' is PUB)`, or what was asked."""
    if plan.delivery_asked != "auto":
        return plan.delivery
    why = f": {plan.delivery_reason}" if plan.delivery_reason else ""
    return f"{plan.delivery} (auto{why})"


def format_plan(plan: Plan) -> str:
    """Human-readable plan for `zflow up --dry-run`."""
    lines = [f"topology {plan.name}  ({plan.file})", f"run directory: {plan.run_dir} (mode 0700)",
             f"delivery: {describe_delivery(plan)}"]
    for n in plan.nodes.values():
        what = n.target if n.kind == "python" else " ".join(n.argv or [])
        lines.append("")
        lines.append(
            f"{n.name}  ×{n.replicas}  {n.shape}  {n.kind}: {what}  "
            f"restart={n.restart} on_error={n.on_error}" + ("  preload" if n.preload else "")
        )
        for s in n.sockets.values():
            if s.mode == "bind":
                eps = sorted({plan.bind_endpoint(n.name, i, s.name) for i in range(n.replicas)})
                where = "bind " + ", ".join(eps)
                if s.bind == "tcp":
                    where += " (port chosen by the OS at start)"
            else:
                where = "connect " + ", ".join(s.connect)
            extra = []
            if s.subscribe:
                extra.append("subscribe " + ", ".join(repr(x) for x in s.subscribe))
            if s.stop_on:
                extra.append(f"stops on {s.stop_on!r}")
            if s.send_on_end:
                extra.append(f"sends {s.send_on_end!r} at end")
            if s.receives and s.role == "data":
                extra.append(f"end of stream by {s.end}")
            extra.append(f"codec {s.codec}" + (f"/{s.batch}" if s.codec == "msgpack" else ""))
            lines.append(f"  {s.name:<12} {s.type:<6} {where}   [{'; '.join(extra)}]")
    if plan.edges:
        lines.append("")
        lines.append("data flow:")
        lines.extend(f"  {e.src} → {e.dst}" for e in plan.edges)
    return "\n".join(lines) + "\n"
