"""The status model: what every replica of a running topology is doing, as plain data.

The supervisor feeds it (states, counters, process stats, log lines) from one thread; the views
read it to draw the live screen, the plain lines, the JSON stats and the final summary. It does
no I/O and never blocks, so feeding it costs the message-routing loop almost nothing.

Replica states are the runtime's own (``zflow.runtime.states``: the state machine, its diagram and
what each state means); the model records what the runtime reports and rejects unknown names.

The runtime writes each fact once, here; views subscribe (``subscribe``) and are told of each
state change, error, restart and log line as it is recorded, so the model and what is shown
cannot disagree.

Counters are cumulative per replica slot (the supervisor keeps them monotonic across restarts), so
the model can derive rates from deltas and never double-counts a late report.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from zflow.records import field, record
from zflow.runtime.states import STATES, UP  # the one vocabulary of replica states

OVERALL_STATES = (
    "starting", "running", "draining", "stopping", "completed", "incomplete", "failed",
    "interrupted",
)

#: replica states that count as "up" in the ready/total column
LIVE_STATES = frozenset(s.value for s in UP)

#: socket types whose every subscriber gets a copy: sent and received are not comparable
FANOUT_TYPES = frozenset({"PUB", "XPUB", "RADIO"})

LOG_LINES = 200


@record
class NodeInfo:
    """Static description of a node, from the plan."""

    name: str
    replicas: int
    shape: str  # source | transform | sink | service | custom
    kind: str  # python | command
    #: receiving data sockets that programs outside the topology feed (no edge shows them, but
    #: what they receive is data: it counts as progress)
    outside_in: tuple[str, ...] = ()


@record
class EdgeInfo:
    """One connection, in data-flow direction: ``src`` ("node.socket") sends, ``dst`` receives.

    ``control`` marks control channels (sockets with ``stop_on`` / ``send_on_end``): they are shown
    but are not part of the data stream (progress and sink detection ignore them). ``src_type`` is
    the sending socket's ZeroMQ type when known; PUB fan-out makes "in flight" meaningless.
    """

    src: str
    dst: str
    control: bool = False
    src_type: str | None = None

    @property
    def src_node(self) -> str:
        return self.src.partition(".")[0]

    @property
    def src_socket(self) -> str:
        return self.src.partition(".")[2]

    @property
    def dst_node(self) -> str:
        return self.dst.partition(".")[0]

    @property
    def dst_socket(self) -> str:
        return self.dst.partition(".")[2]


def nodes_from_plan(plan: Any) -> list[NodeInfo]:
    """NodeInfo for every node of a ``zflow.plan.Plan`` (duck-typed: no import cycle)."""
    return [NodeInfo(n.name, n.replicas, n.shape, n.kind,
                     tuple(name for name, s in n.sockets.items()
                           if s.receives and s.role == "data" and s.external))
            for n in plan.nodes.values()]


def edges_from_plan(plan: Any) -> list[EdgeInfo]:
    """EdgeInfo for every plan edge, with the control flag and the sending socket's type.

    Without them the model cannot tell the FINISHED channel from data (it would count it as
    records) nor a PUB fan-out from a one-to-one edge (in flight would read 0, not '-').
    """
    out = []
    for e in plan.edges:
        sn, _, ss = e.src.partition(".")
        dn, _, ds = e.dst.partition(".")
        src = plan.nodes[sn].sockets.get(ss) if sn in plan.nodes else None
        dst = plan.nodes[dn].sockets.get(ds) if dn in plan.nodes else None
        control = any(getattr(x, "role", "data") == "control" for x in (src, dst) if x)
        out.append(EdgeInfo(e.src, e.dst, control=control,
                            src_type=getattr(src, "type", None)))
    return out


@record
class LogLine:
    t: float
    node: str
    replica: int
    stream: str
    line: str


class Ewma:
    """Rate smoothed over time (not over samples), so irregular report intervals weigh fairly.

    Each update folds the instantaneous rate ``delta/dt`` in with weight ``1 - exp(-dt/tau)``: a
    report after 1 s counts more than one after 0.1 s. The first sample is taken as is. When
    reports stop, ``value(now)`` decays towards zero after ``stale`` seconds instead of freezing.
    """

    __slots__ = ("tau", "stale", "rate", "last_t", "last_n")

    def __init__(self, t0: float, tau: float = 2.0, stale: float = 1.0) -> None:
        self.tau = tau
        self.stale = stale
        self.rate: float | None = None
        self.last_t = t0
        self.last_n = 0

    def update(self, now: float, n: int) -> None:
        dt = now - self.last_t
        if dt < 0.02:  # same tick: keep the baseline, the next report carries the delta
            return
        inst = max(0, n - self.last_n) / dt
        if self.rate is None:
            self.rate = inst
        else:
            self.rate += (1.0 - math.exp(-dt / self.tau)) * (inst - self.rate)
        self.last_t, self.last_n = now, n

    def value(self, now: float) -> float:
        if self.rate is None:
            return 0.0
        idle = now - self.last_t - self.stale
        if idle > 0:
            return self.rate * math.exp(-idle / self.tau)
        return self.rate


@record
class Replica:
    node: str
    index: int
    t0: float
    state: str = "starting"
    detail: str | None = None
    since: float = 0.0
    sockets: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    errors: int = 0
    pid: int | None = None
    cpu: float | None = None
    rss: int | None = None
    #: CPU seconds of its exited processes (every incarnation), exact; and of the running one,
    #: as last sampled
    cpu_done: float = 0.0
    cpu_live: float = 0.0
    #: peak resident bytes of any of its processes (exact once one exited; else sampled)
    max_rss: int | None = None
    #: whether any CPU time is known (a replica never sampled nor reaped has none to show)
    cpu_known: bool = False
    exit_code: int | None = None
    exited: bool = False
    restarts: int = 0
    #: (socket, "in"|"out") -> rate
    rates: dict[tuple[str, str], Ewma] = field(default_factory=dict)
    #: active window of this replica's throughput, for the mean rate in the summary
    active_from: float | None = None
    active_to: float | None = None
    running_since: float | None = None

    @property
    def name(self) -> str:
        return f"{self.node}.{self.index}"

    @property
    def cpu_s(self) -> float | None:
        """CPU seconds it used in all, across restarts (None: not known)."""
        return self.cpu_done + self.cpu_live if self.cpu_known else None

    def msgs(self, direction: str, sockets: Iterable[str] | None = None,
             exclude: frozenset[str] = frozenset()) -> int:
        i = 0 if direction == "in" else 1
        if sockets is None:
            return sum(v[i] for s, v in self.sockets.items() if s not in exclude)
        return sum(self.sockets[s][i] for s in sockets if s in self.sockets)

    def bytes(self, direction: str, exclude: frozenset[str] = frozenset()) -> int:
        i = 2 if direction == "in" else 3
        return sum(v[i] for s, v in self.sockets.items() if s not in exclude)

    def rate(self, now: float, direction: str, sockets: Iterable[str] | None = None) -> float:
        if self.state in ("stopped", "failed"):
            return 0.0
        wanted = None if sockets is None else set(sockets)
        return sum(
            e.value(now) for (s, d), e in self.rates.items()
            if d == direction and (wanted is None or s in wanted)
        )


@record
class NodeTotals:
    """Per-node aggregate, derived on demand from the replicas."""

    name: str
    replicas: int
    ready: int
    state: str
    #: None where zflow cannot count (a command node moves records zflow does not see)
    msgs_in: int | None
    msgs_out: int | None
    bytes_in: int | None
    bytes_out: int | None
    rate: float | None
    errors: int
    restarts: int
    cpu: float | None
    rss: int | None
    #: CPU seconds of all its replicas' processes; the largest peak RSS of any of them
    cpu_s: float | None
    max_rss: int | None
    exit_codes: list[int | None]
    mean_rate: float


@record
class EdgeTotals:
    """Per-edge figures; ``None`` where the edge cannot be told apart from its socket's others."""

    src: str
    dst: str
    sent: int | None
    received: int | None
    in_flight: int | None
    rate: float | None
    control: bool


@record
class Progress:
    done: int
    total: int | None
    fraction: float | None
    eta: float | None
    rate: float


def node_state(states: Iterable[str]) -> str:
    """One state for a node from its replicas' states: the most telling one wins."""
    c = Counter(states)
    if not c:
        return "starting"
    for s in ("failed", "restarting"):
        if c[s]:
            return s
    if len(c) == 1:
        return next(iter(c))
    for s in ("starting", "bound", "connecting", "running", "finished", "ready"):
        if c[s]:
            return s
    return "stopped"


class StatusModel:
    """Everything the views show, fed by the supervisor. Pure data, single-threaded."""

    @classmethod
    def from_plan(cls, plan: Any, clock: Callable[[], float] = time.monotonic) -> StatusModel:
        """The model for a ``zflow.plan.Plan``: nodes, and edges with control/fan-out flags."""
        return cls(plan.name, nodes_from_plan(plan), edges_from_plan(plan), clock=clock)

    def __init__(
        self,
        topology: str,
        nodes: list[NodeInfo],
        edges: list[EdgeInfo],
        clock: Callable[[], float] = time.monotonic,
        *,
        rate_tau: float = 2.0,
    ) -> None:
        self.topology = topology
        self.nodes: dict[str, NodeInfo] = {n.name: n for n in nodes}
        self.edges = list(edges)
        self.clock = clock
        self.rate_tau = rate_tau
        self.started_at = clock()
        self.finished_at: float | None = None
        self.overall = "starting"
        self.exit_code: int | None = None
        self.message: str | None = None
        self.total: int | None = None
        self.total_node: str | None = None
        self.results: dict[str, dict[str, Any]] = {}
        #: on_error: dead-letter nodes that wrote records: node → {"path", "records"}
        self.dead_letters: dict[str, dict[str, Any]] = {}
        #: what did not make it: {"lost": N, "places": [text, ...], "skipped": N} (runtime-filled)
        self.losses: dict[str, Any] = {"lost": 0, "places": [], "skipped": 0}
        self.logs: deque[LogLine] = deque(maxlen=LOG_LINES)
        #: every error message reported during the run, in order
        self.errors: list[str] = []
        self._listeners: list[Any] = []
        self.replicas: dict[str, list[Replica]] = {
            n.name: [Replica(n.name, i, self.started_at, since=self.started_at)
                     for i in range(n.replicas)]
            for n in nodes
        }
        self._index_edges()

    # -- topology-derived lookups, computed once -------------------------------------------
    def _index_edges(self) -> None:
        out_count: Counter[str] = Counter(e.src for e in self.edges)
        in_count: Counter[str] = Counter(e.dst for e in self.edges)
        self._out_count = out_count
        self._in_count = in_count
        #: node -> its sockets that receive data (dst of a non-control edge)
        self._data_in: dict[str, set[str]] = {n: set(i.outside_in) for n, i in self.nodes.items()}
        self._data_out: dict[str, set[str]] = {n: set() for n in self.nodes}
        for e in self.edges:
            if not e.control:
                self._data_in.setdefault(e.dst_node, set()).add(e.dst_socket)
                self._data_out.setdefault(e.src_node, set()).add(e.src_socket)
        data_socks = {(n, s) for e in self.edges if not e.control
                      for n, s in ((e.src_node, e.src_socket), (e.dst_node, e.dst_socket))}
        #: node -> sockets used only by control edges: left out of the node's msgs in/out
        self._control: dict[str, frozenset[str]] = {n: frozenset() for n in self.nodes}
        for e in self.edges:
            if e.control:
                for n, sk in ((e.src_node, e.src_socket), (e.dst_node, e.dst_socket)):
                    if (n, sk) not in data_socks:
                        self._control[n] = self._control.get(n, frozenset()) | {sk}
        self._sinks = self._find_sinks(None)

    def _find_sinks(self, node: str | None) -> list[str]:
        """Which nodes' received count measures progress, most explicit rule first.

        An explicit node that receives data; else nodes of shape ``sink``; else nodes that receive
        data and send none; else the nodes farthest from the sources (cyclic topologies).
        """
        if node is not None and self._data_in.get(node):
            return [node]
        sinks = [n for n, info in self.nodes.items() if info.shape == "sink" and self._data_in[n]]
        if sinks:
            return sinks
        sinks = [n for n in self.nodes if self._data_in[n] and not self._data_out[n]]
        if sinks:
            return sinks
        depth = {n: 0 for n in self.nodes if not self._data_in[n]}
        frontier = list(depth)
        while frontier:
            nxt = []
            for e in self.edges:
                if not e.control and e.src_node in frontier and e.dst_node not in depth:
                    depth[e.dst_node] = depth[e.src_node] + 1
                    nxt.append(e.dst_node)
            frontier = nxt
        if not depth or max(depth.values()) == 0:
            return []
        deepest = max(depth.values())
        return [n for n, d in depth.items() if d == deepest]

    def control_sockets(self, node: str) -> frozenset[str]:
        """Sockets of ``node`` that only carry control messages (not counted as records)."""
        return self._control.get(node, frozenset())

    @property
    def sinks(self) -> list[str]:
        return list(self._sinks)

    def _replica(self, node: str, replica: int) -> Replica:
        reps = self.replicas.get(node)
        if reps is None:  # a node the plan did not announce: show it rather than drop data
            self.nodes[node] = NodeInfo(node, 0, "custom", "python")
            reps = self.replicas[node] = []
            self._data_in[node] = set()
            self._data_out[node] = set()
            self._control[node] = frozenset()
        while len(reps) <= replica:  # scaled up at run time
            reps.append(Replica(node, len(reps), self.clock(), since=self.clock()))
        if self.nodes[node].replicas < len(reps):
            self.nodes[node].replicas = len(reps)
        return reps[replica]

    # -- listeners -------------------------------------------------------------------------
    def subscribe(self, listener: Any) -> None:
        """`listener.event(kind, **fields)` and `listener.log(node, replica, stream, line)` are
        called as facts are recorded (the views)."""
        self._listeners.append(listener)

    def announce(self, kind: str, **fields: Any) -> None:
        """An event with nothing to record beyond telling the views (the run's overall state)."""
        for x in self._listeners:
            x.event(kind, **fields)

    def error(self, message: str) -> None:
        self.errors.append(message)
        self.announce("error", message=message)

    # -- feeding ---------------------------------------------------------------------------
    def set_overall(self, state: str) -> None:
        if state not in OVERALL_STATES:
            raise ValueError(f"unknown overall state {state!r}")
        self.overall = state

    def set_total(self, total: int | None, node: str | None = None) -> None:
        """Known stream length. ``node``, when it receives data, is the node whose received count
        measures progress; otherwise (e.g. the source that knows its length) sinks are found."""
        self.total = total
        self.total_node = node
        self._sinks = self._find_sinks(node)

    def replica_state(self, node: str, replica: int, state: str, detail: str | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"unknown replica state {state!r}")
        r = self._replica(node, replica)
        changed = state != r.state
        if changed:
            r.since = self.clock()
            if state == "running" and r.running_since is None:
                r.running_since = r.since
        if state == "starting" and r.state in ("restarting", "failed", "stopped"):
            r.exited, r.exit_code = False, None
        r.state = state
        r.detail = detail
        if changed:
            self.announce("state", node=node, replica=replica, state=state, detail=detail)

    def replica_counters(
        self,
        node: str,
        replica: int,
        sockets: dict[str, tuple[int, int, int, int]],
        errors: int = 0,
    ) -> None:
        """Cumulative per-socket (msgs_in, msgs_out, bytes_in, bytes_out) for one replica slot."""
        r = self._replica(node, replica)
        now = self.clock()
        before = self._throughput(r)
        for sock, vals in sockets.items():
            mi, mo, bi, bo = (int(v) for v in vals)
            r.sockets[sock] = (mi, mo, bi, bo)
            for d, n in (("in", mi), ("out", mo)):
                e = r.rates.get((sock, d))
                if e is None:
                    e = r.rates[(sock, d)] = Ewma(r.t0, self.rate_tau)
                e.update(now, n)
        r.errors = max(r.errors, int(errors))
        after = self._throughput(r)
        if after > before:
            if r.active_from is None:
                # the records moved after the last idle report and after the barrier opened
                r.active_from = max(t for t in (r.t0, r.active_to, r.running_since)
                                    if t is not None)
            r.active_to = now
        elif r.active_from is None:
            r.active_to = now  # remember the last idle report as the start of the window

    def replica_proc(
        self, node: str, replica: int, pid: int | None, cpu: float | None, rss: int | None,
        cpu_s: float | None = None,
    ) -> None:
        """A sample of a running replica: CPU %, RSS, and the CPU seconds its process used."""
        r = self._replica(node, replica)
        r.pid, r.cpu, r.rss = pid, cpu, rss
        if cpu_s is not None:
            r.cpu_live, r.cpu_known = cpu_s, True
        if rss is not None and (r.max_rss is None or rss > r.max_rss):
            r.max_rss = rss

    def replica_usage(self, node: str, replica: int, cpu_s: float,
                      max_rss: int | None) -> None:
        """What one of its processes used, exact, as it exited (it replaces the last sample;
        no `max_rss` for a command: the samples' stands)."""
        r = self._replica(node, replica)
        r.cpu_done += cpu_s
        r.cpu_live, r.cpu_known = 0.0, True
        if max_rss is not None and (r.max_rss is None or max_rss > r.max_rss):
            r.max_rss = max_rss

    def replica_exit(self, node: str, replica: int, code: int | None) -> None:
        r = self._replica(node, replica)
        r.exit_code, r.exited = code, True
        r.cpu = None
        # an exit without its figures (the fork server died first, a remote replica given up
        # on) keeps the last sample's: what it used never goes down
        r.cpu_done, r.cpu_live = r.cpu_done + r.cpu_live, 0.0

    def replica_restart(self, node: str, replica: int, *, delay: float | None = None,
                        code: int | None = None, attempt: int | None = None) -> None:
        self._replica(node, replica).restarts += 1
        self.announce("restart", node=node, replica=replica, delay=delay, code=code,
                      attempt=attempt)

    def log(self, node: str, replica: int, stream: str, line: str) -> None:
        self.logs.append(LogLine(self.elapsed(), node, replica, stream, line))
        for x in self._listeners:
            x.log(node, replica, stream, line)

    def set_result(self, node: str, result: dict[str, Any]) -> None:
        self.results[node] = result

    def set_dead_letter(self, node: str, path: str, records: int) -> None:
        self.dead_letters[node] = {"path": path, "records": records}

    def finish(self, state: str, exit_code: int, message: str | None = None) -> None:
        self.set_overall(state)
        self.exit_code = exit_code
        self.message = message
        self.finished_at = self.clock()

    # -- derived ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds since the model was created (the run started)."""
        return self.clock() - self.started_at

    @property
    def duration(self) -> float:
        end = self.finished_at if self.finished_at is not None else self.clock()
        return end - self.started_at

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def _throughput_dir(self, node: str) -> str:
        """Direction whose count is a node's throughput: what it receives, or sends if a source."""
        return "in" if self._data_in.get(node) else "out"

    def _throughput(self, r: Replica) -> int:
        d = self._throughput_dir(r.node)
        socks = self._data_in[r.node] if d == "in" else self._data_out[r.node] or None
        return r.msgs(d, socks)

    def replica_rate(self, r: Replica) -> float:
        d = self._throughput_dir(r.node)
        socks = self._data_in[r.node] if d == "in" else self._data_out[r.node] or None
        return r.rate(self.clock(), d, socks)

    def node_totals(self, node: str) -> NodeTotals:
        reps = self.replicas[node]
        ctl = self._control.get(node, frozenset())
        now = self.clock()
        cpus = [r.cpu for r in reps if r.cpu is not None]
        rsss = [r.rss for r in reps if r.rss is not None and not r.exited]
        used = [c for c in (r.cpu_s for r in reps) if c is not None]
        peaks = [r.max_rss for r in reps if r.max_rss is not None]
        d = self._throughput_dir(node)
        socks = self._data_in[node] if d == "in" else self._data_out[node] or None
        moved = sum(r.msgs(d, socks) for r in reps)
        starts = [r.active_from for r in reps if r.active_from is not None]
        ends = [r.active_to for r in reps if r.active_from is not None and r.active_to is not None]
        window = (max(ends) - min(starts)) if starts and ends else 0.0
        if window <= 0:
            window = self.duration
        blind = self.nodes[node].kind == "command"  # no telemetry: unknown, not zero
        return NodeTotals(
            name=node,
            replicas=len(reps),
            ready=sum(r.state in LIVE_STATES for r in reps),
            state=node_state(r.state for r in reps),
            msgs_in=None if blind else sum(r.msgs("in", exclude=ctl) for r in reps),
            msgs_out=None if blind else sum(r.msgs("out", exclude=ctl) for r in reps),
            bytes_in=None if blind else sum(r.bytes("in", exclude=ctl) for r in reps),
            bytes_out=None if blind else sum(r.bytes("out", exclude=ctl) for r in reps),
            rate=None if blind else sum(r.rate(now, d, socks) for r in reps),
            errors=sum(r.errors for r in reps),
            restarts=sum(r.restarts for r in reps),
            cpu=sum(cpus) if cpus else None,
            rss=sum(rsss) if rsss else None,
            cpu_s=sum(used) if used else None,
            max_rss=max(peaks) if peaks else None,
            exit_codes=[r.exit_code if r.exited else None for r in reps],
            mean_rate=moved / window if window > 0 else 0.0,
        )

    def all_node_totals(self) -> list[NodeTotals]:
        return [self.node_totals(n) for n in self.replicas]

    def _socket_sum(self, node: str, socket: str, direction: str) -> int:
        return sum(r.msgs(direction, (socket,)) for r in self.replicas.get(node, ()))

    def _socket_rate(self, node: str, socket: str, direction: str) -> float:
        now = self.clock()
        return sum(r.rate(now, direction, (socket,)) for r in self.replicas.get(node, ()))

    def edge_totals(self, edge: EdgeInfo) -> EdgeTotals:
        """Sent/received/in-flight of one edge.

        ``sent`` is the sending socket's count when this is its only edge (or it is a fan-out
        socket: every edge gets all of it); ``received`` is the receiving socket's count when this
        is its only edge. ``in_flight`` needs both, one-to-one, and no fan-out; it is clamped at 0
        because the two counts come from different processes' reports taken at different times.
        """
        fanout = (edge.src_type or "").upper() in FANOUT_TYPES
        # a command node's side of an edge is not counted: unknown, not zero
        sole_out = self._out_count[edge.src] == 1 and not self._blind(edge.src_node)
        sole_in = self._in_count[edge.dst] == 1 and not self._blind(edge.dst_node)
        fanout = fanout and not self._blind(edge.src_node)
        sent = self._socket_sum(edge.src_node, edge.src_socket, "out") if (
            sole_out or fanout) else None
        received = self._socket_sum(edge.dst_node, edge.dst_socket, "in") if sole_in else None
        in_flight = None
        if sent is not None and received is not None and sole_out and not fanout:
            in_flight = max(0, sent - received)
        if sole_in:
            rate: float | None = self._socket_rate(edge.dst_node, edge.dst_socket, "in")
        elif sole_out or fanout:
            rate = self._socket_rate(edge.src_node, edge.src_socket, "out")
        else:
            rate = None
        return EdgeTotals(edge.src, edge.dst, sent, received, in_flight, rate, edge.control)

    def _blind(self, node: str) -> bool:
        info = self.nodes.get(node)
        return info is not None and info.kind == "command"

    def all_edge_totals(self) -> list[EdgeTotals]:
        return [self.edge_totals(e) for e in self.edges]

    def progress(self) -> Progress:
        """Records received by the sinks against the known total; ETA from the smoothed rate."""
        now = self.clock()
        done = 0
        rate = 0.0
        for n in self._sinks:
            socks = self._data_in[n]
            for r in self.replicas[n]:
                done += r.msgs("in", socks)
                rate += r.rate(now, "in", socks)
        total = self.total
        fraction = None
        eta = None
        if total is not None and total > 0:
            fraction = min(1.0, done / total)
            if done >= total:
                eta = 0.0
            elif rate > 0:
                eta = (total - done) / rate
        elif total == 0:
            fraction = 1.0
            eta = 0.0
        return Progress(done, total, fraction, eta, rate)

    def snapshot(self, *, logs: bool = True) -> dict[str, Any]:
        """A JSON-serialisable picture of everything (``logs=False`` leaves out the log tail)."""
        nodes: dict[str, Any] = {}
        for t in self.all_node_totals():
            info = self.nodes[t.name]
            nodes[t.name] = {
                "shape": info.shape,
                "kind": info.kind,
                "state": t.state,
                "replicas": t.replicas,
                "ready": t.ready,
                "msgs_in": t.msgs_in,
                "msgs_out": t.msgs_out,
                "bytes_in": t.bytes_in,
                "bytes_out": t.bytes_out,
                "rate": None if t.rate is None else round(t.rate, 3),
                "mean_rate": round(t.mean_rate, 3),
                "errors": t.errors,
                "restarts": t.restarts,
                "cpu": None if t.cpu is None else round(t.cpu, 1),
                "rss": t.rss,
                "cpu_s": None if t.cpu_s is None else round(t.cpu_s, 3),
                "max_rss": t.max_rss,
                "exit_codes": t.exit_codes,
                "replica": [
                    {
                        "replica": r.index,
                        "state": r.state,
                        "detail": r.detail,
                        "pid": r.pid,
                        "cpu": None if r.cpu is None else round(r.cpu, 1),
                        "rss": r.rss,
                        "cpu_s": None if r.cpu_s is None else round(r.cpu_s, 3),
                        "max_rss": r.max_rss,
                        "msgs_in": r.msgs("in", exclude=self._control[t.name]),
                        "msgs_out": r.msgs("out", exclude=self._control[t.name]),
                        "rate": round(self.replica_rate(r), 3),
                        "errors": r.errors,
                        "restarts": r.restarts,
                        "exit_code": r.exit_code if r.exited else None,
                        "sockets": {s: list(v) for s, v in r.sockets.items()},
                    }
                    for r in self.replicas[t.name]
                ],
            }
        p = self.progress()
        snap: dict[str, Any] = {
            "topology": self.topology,
            "overall": self.overall,
            "duration": round(self.duration, 3),
            "exit_code": self.exit_code,
            "message": self.message,
            "nodes": nodes,
            "edges": [
                {
                    "src": e.src,
                    "dst": e.dst,
                    "control": e.control,
                    "sent": e.sent,
                    "received": e.received,
                    "in_flight": e.in_flight,
                    "rate": None if e.rate is None else round(e.rate, 3),
                }
                for e in self.all_edge_totals()
            ],
            "progress": {
                "done": p.done,
                "total": p.total,
                "fraction": None if p.fraction is None else round(p.fraction, 4),
                "eta": None if p.eta is None else round(p.eta, 1),
                "rate": round(p.rate, 3),
                "sinks": self.sinks,
            },
            "results": jsonable(self.results),
            "dead_letters": dict(self.dead_letters),
            "losses": dict(self.losses),
        }
        if logs:
            snap["logs"] = [
                {"t": round(x.t, 3), "node": x.node, "replica": x.replica, "stream": x.stream,
                 "line": x.line}
                for x in self.logs
            ]
        return snap


def jsonable(value: Any) -> Any:
    """Make a sink's ``end()`` result safe for JSON: unknown objects become their repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return repr(value)
