"""`zflow graph`: a topology as a picture — Mermaid, Graphviz dot, or a text drawing.

Everything comes from the plan (`zflow.plan.build_plan`), so the graph shows what `zflow up` would
run, overrides and scaling included: nodes with their replica counts and shapes, their sockets with
types, the edges with their pattern (fan-out, fan-in, pub/sub, request/reply …), and the control
channel (sockets with `stop_on` / `send_on_end`) drawn apart from the data. Endpoints outside the
topology (a `connect: tcp://…`, a fixed `bind:` nobody in the file connects to) become nodes of
their own.

The text drawing stacks the nodes top to bottom in layers (every node below the nodes that feed
it), one box per node with a row per socket; each edge runs in its own lane on the left from the
socket that sends to the socket that receives, and the receiving row says where the records come
from and how.
"""

from __future__ import annotations

import re

from zflow.plan import RECEIVING, SENDING, Plan
from zflow.records import field, record
from zflow.spec import parse_endpoint, split_ref

FORMATS = ("text", "mermaid", "dot")

#: request/reply socket types, and the ones that start a request
REQUEST_REPLY = frozenset({"REQ", "REP", "DEALER", "ROUTER"})
REQUESTERS = frozenset({"REQ", "DEALER"})

#: shapes in Mermaid (open, close) and Graphviz
_MERMAID_SHAPES = {
    "source": ("([", "])"),      # stadium
    "transform": ("[", "]"),     # rectangle
    "sink": ("[(", ")]"),        # cylinder
    "service": ("{{", "}}"),     # hexagon
    "custom": ("[[", "]]"),      # subroutine
    "external": ("[/", "/]"),    # parallelogram
}
_DOT_SHAPES = {"source": "invhouse", "transform": "box", "sink": "cylinder",
               "service": "hexagon", "custom": "component", "external": "parallelogram"}
CONTROL_COLOR = "#888888"


@record
class GraphSocket:
    name: str
    type: str
    mode: str  # "bind" | "connect" | "external"
    role: str = "data"  # "data" | "control"
    #: "stops on FINISHED", "sends FINISHED at end"
    note: str = ""


@record
class GraphNode:
    name: str
    shape: str  # source, transform, sink, service, custom, or "external"
    kind: str  # "python" | "command" | "external"
    replicas: int
    sockets: list[GraphSocket] = field(default_factory=list)

    @property
    def external(self) -> bool:
        return self.kind == "external"

    @property
    def title(self) -> str:
        return "outside" if self.external else f"{self.name} ×{self.replicas}"

    @property
    def subtitle(self) -> str:
        if self.external:
            return "endpoint"
        return self.shape + (" · command" if self.kind == "command" else "")


@record
class GraphEdge:
    """Records (or requests) flow from src.src_socket to dst.dst_socket."""

    src: str
    src_socket: str
    dst: str
    dst_socket: str
    #: "fan-out", "fan-in", "fan-out/fan-in", "pipeline", "pub/sub", "request/reply", "pair",
    #: "external"
    pattern: str
    control: bool = False
    #: sending → receiving replicas, e.g. "1→10"
    replicas: str = ""
    #: socket types, e.g. "PUSH→PULL"
    types: str = ""
    #: the control word (FINISHED), or the SUB's topic filters
    detail: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return f"{self.src}.{self.src_socket}", f"{self.dst}.{self.dst_socket}"

    @property
    def label(self) -> str:
        """One line: what flows and how (`fan-out 1→10`, `control FINISHED · pub/sub`)."""
        if self.control:
            parts = ["control" + (f": {self.detail}" if self.detail else ""), self.pattern]
        else:
            head = self.pattern + (f" {self.replicas}" if self.replicas else "")
            parts = [head] + ([self.detail] if self.detail else [])
        return " · ".join(parts)


@record
class Graph:
    name: str
    nodes: list[GraphNode]
    edges: list[GraphEdge]

    def node(self, name: str) -> GraphNode:
        return next(n for n in self.nodes if n.name == name)


# ---------------------------------------------------------------------------------------------
# the model


def _pattern(src_type: str, dst_type: str, fan_out: bool, fan_in: bool) -> str:
    types = {src_type, dst_type}
    if types & {"PUB", "XPUB", "SUB", "XSUB"}:
        return "pub/sub"
    if types & REQUEST_REPLY:
        return "request/reply"
    if "PAIR" in types:
        return "pair"
    if fan_out and fan_in:
        return "fan-out/fan-in"
    if fan_out:
        return "fan-out"
    if fan_in:
        return "fan-in"
    return "pipeline"


def _subscriptions(prefixes: list[str]) -> str:
    if not prefixes or prefixes == [""]:
        return "all topics"
    return ", ".join(repr(p) for p in prefixes)


def _endpoint_key(endpoint: str, binding: bool = False) -> tuple | None:
    """What a concrete endpoint reaches: a connect to 127.0.0.1:N reaches a bind on *:N."""
    try:
        ep = parse_endpoint(endpoint, binding=binding)
    except Exception:  # auto / ipc / tcp, or not an endpoint at all
        return None
    if ep.transport == "ipc":
        return ("ipc", ep.path)
    if not ep.port:
        return None  # an OS-chosen port: nobody can name it in advance
    return ("tcp", "local" if ep.wildcard_host or ep.loopback else ep.host, ep.port)


def build_graph(plan: Plan) -> Graph:
    """The graph of a plan: every node, socket and edge, external endpoints as nodes."""
    nodes: list[GraphNode] = []
    for n in plan.nodes.values():
        socks = []
        for s in n.sockets.values():
            note = ""
            if s.stop_on:
                note = f"stops on {s.stop_on}"
            elif s.send_on_end:
                note = f"sends {s.send_on_end} at end"
            socks.append(GraphSocket(s.name, s.type, s.mode, s.role, note))
        nodes.append(GraphNode(n.name, n.shape, n.kind, n.replicas, socks))

    def sock(ref: str):  # "node.socket" -> SocketPlan
        node, _, name = ref.partition(".")
        return plan.nodes[node].sockets[name]

    def receivers_of(ref: str) -> int:  # replicas reached by a sending socket
        s = sock(ref)
        return sum(plan.nodes[p].replicas for p, _ in s.peers)

    edges: list[GraphEdge] = []
    for e in plan.edges:
        a, b = sock(e.src), sock(e.dst)
        an, _, asn = e.src.partition(".")
        bn, _, bsn = e.dst.partition(".")
        control = a.role == "control" or b.role == "control"
        fan_out = receivers_of(e.src) > 1
        fan_in = b.senders > 1
        pattern = _pattern(a.type, b.type, fan_out, fan_in)
        detail = ""
        if control:
            detail = a.send_on_end or b.stop_on or ""
        elif pattern == "pub/sub":
            detail = _subscriptions(b.subscribe)
        edges.append(GraphEdge(
            an, asn, bn, bsn, pattern, control,
            replicas=f"{plan.nodes[an].replicas}→{plan.nodes[bn].replicas}",
            types=f"{a.type}→{b.type}", detail=detail))

    # concrete endpoints: a literal `connect:` that some node binds is an edge between them;
    # the rest are endpoints outside the topology, drawn as nodes of their own
    binders: dict[tuple, tuple[str, str]] = {}
    for n in plan.nodes.values():
        for s in n.sockets.values():
            key = _endpoint_key(s.bind or "", binding=True) if s.mode == "bind" else None
            if key is not None:
                binders.setdefault(key, (n.name, s.name))
    outside: dict[str, GraphNode] = {}
    reached: set[tuple[str, str]] = set()

    def external(endpoint: str) -> GraphNode:
        if endpoint not in outside:
            outside[endpoint] = GraphNode(endpoint, "external", "external", 0,
                                          [GraphSocket(endpoint, "", "external")])
        return outside[endpoint]

    def add(src: tuple[str, str], dst: tuple[str, str], pattern: str | None = None) -> None:
        if any((e.src, e.src_socket, e.dst, e.dst_socket) == (*src, *dst) for e in edges):
            return  # the plan links this concrete endpoint already
        a = plan.nodes[src[0]].sockets[src[1]] if src[0] in plan.nodes else None
        b = plan.nodes[dst[0]].sockets[dst[1]] if dst[0] in plan.nodes else None
        ours = a or b
        assert ours is not None
        control = any(x is not None and x.role == "control" for x in (a, b))
        if pattern is None and a is not None and b is not None:
            pattern = _pattern(a.type, b.type, plan.nodes[dst[0]].replicas > 1,
                               plan.nodes[src[0]].replicas > 1)
            edges.append(GraphEdge(
                *src, *dst, pattern, control,
                replicas=f"{plan.nodes[src[0]].replicas}→{plan.nodes[dst[0]].replicas}",
                types=f"{a.type}→{b.type}",
                detail=(a.send_on_end or b.stop_on or "") if control
                else _subscriptions(b.subscribe) if pattern == "pub/sub" else ""))
        else:
            edges.append(GraphEdge(*src, *dst, pattern or "external", control, types=ours.type))

    def sends(sock_type: str, connector: bool) -> bool:
        """Whether this side is where records (or requests) start."""
        if sock_type in SENDING:
            return True
        if sock_type in RECEIVING:
            return False
        return sock_type in REQUESTERS or (sock_type == "PAIR" and connector)

    for n in plan.nodes.values():
        for s in n.sockets.values():
            if s.mode != "connect":
                continue
            for endpoint in s.connect:
                if split_ref(endpoint) is not None:
                    continue
                key = _endpoint_key(endpoint)
                here = (n.name, s.name)
                there = binders.get(key) if key is not None else None
                if there is None or there == here:
                    ext = (external(endpoint).name, endpoint)
                    add(*((here, ext) if sends(s.type, True) else (ext, here)), "external")
                    continue
                reached.add(there)
                add(*((here, there) if sends(s.type, True) else (there, here)))
    for n in plan.nodes.values():
        for s in n.sockets.values():
            here = (n.name, s.name)
            if (s.mode != "bind" or s.peers or here in reached
                    or (s.bind or "auto") in ("auto", "ipc", "tcp")):
                continue
            ext = (external(s.bind or "").name, s.bind or "")
            add(*((here, ext) if sends(s.type, False) else (ext, here)), "external")
    nodes.extend(outside.values())
    graph = Graph(plan.name, nodes, edges)
    order = [name for layer in layers(graph) for name in layer]
    graph.nodes.sort(key=lambda gn: order.index(gn.name))
    return graph


def layers(graph: Graph) -> list[list[str]]:
    """Nodes in layers: each node one layer below the lowest node that feeds it data.

    Control edges do not count (they run back up the pipeline), and a cycle of data edges is
    broken where a depth-first walk in file order closes it. Within a layer, file order.
    """
    names = [n.name for n in graph.nodes]
    succ: dict[str, list[str]] = {n: [] for n in names}
    for e in graph.edges:
        if not e.control and e.src != e.dst:
            succ[e.src].append(e.dst)
    # back edges of a DFS in file order
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()

    def visit(u: str) -> None:
        state[u] = 1
        for v in succ[u]:
            if state.get(v) == 1:
                back.add((u, v))
            elif v not in state:
                visit(v)
        state[u] = 2

    for n in names:
        if n not in state:
            visit(n)
    depth: dict[str, int] = {}
    preds: dict[str, list[str]] = {n: [] for n in names}
    for u in names:
        for v in succ[u]:
            if (u, v) not in back:
                preds[v].append(u)

    def level(v: str) -> int:
        if v not in depth:
            depth[v] = 0  # guard; the graph without back edges is acyclic
            depth[v] = max((level(u) + 1 for u in preds[v]), default=0)
        return depth[v]

    out: dict[int, list[str]] = {}
    for n in names:
        out.setdefault(level(n), []).append(n)
    return [out[k] for k in sorted(out)]


# ---------------------------------------------------------------------------------------------
# Mermaid


def mermaid_ids(graph: Graph) -> dict[str, str]:
    """Node name -> a Mermaid id: letters, digits and `_` only, never a keyword (`end`)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for i, n in enumerate(graph.nodes):
        base = ("x_" if n.external else "n_") + (re.sub(r"[^A-Za-z0-9_]", "_", n.name)
                                                  if not n.external else str(i))
        nid, k = base, 2
        while nid in used:
            nid, k = f"{base}_{k}", k + 1
        used.add(nid)
        ids[n.name] = nid
    return ids


def _mm_text(s: str) -> str:
    """Text inside a quoted Mermaid label: quotes and angle brackets as entity codes."""
    return (s.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
            .replace(">", "#gt;"))


def _edge_sockets(graph: Graph, e: GraphEdge) -> str:
    """`work → work`; an external endpoint is named on its node, so only our socket here."""
    if graph.node(e.src).external:
        return e.dst_socket
    if graph.node(e.dst).external:
        return e.src_socket
    return f"{e.src_socket} → {e.dst_socket}"


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart (renders on GitHub); control edges dotted and grey."""
    ids = mermaid_ids(graph)
    lines = ["flowchart LR", f"  %% zflow graph: {_mm_text(graph.name)}"]
    for n in graph.nodes:
        open_, close = _MERMAID_SHAPES.get(n.shape, ("[", "]"))
        if n.external:
            label = f"outside<br/>{_mm_text(n.name)}"
        else:
            label = "<br/>".join([_mm_text(n.title), _mm_text(n.subtitle),
                                  *(_mm_text(f"{s.name}: {s.type}") for s in n.sockets)])
        lines.append(f'  {ids[n.name]}{open_}"{label}"{close}')
    control: list[int] = []
    for i, e in enumerate(graph.edges):
        arrow = "-.->" if e.control else "-->"
        label = "<br/>".join(_mm_text(x) for x in (_edge_sockets(graph, e), e.label) if x)
        lines.append(f'  {ids[e.src]} {arrow}|"{label}"| {ids[e.dst]}')
        if e.control:
            control.append(i)
    if control:
        lines.append("  linkStyle " + ",".join(map(str, control))
                     + f" stroke:{CONTROL_COLOR},stroke-dasharray:4 3,color:{CONTROL_COLOR}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Graphviz dot


def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph (`zflow graph … --format dot | dot -Tsvg`)."""
    lines = [f"digraph {_dot_str(graph.name)} {{", "  rankdir=LR;",
             '  node [fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for n in graph.nodes:
        if n.external:
            label = f"outside\n{n.name}"
        else:
            label = "\n".join([n.title, n.subtitle, *(f"{s.name}: {s.type}" for s in n.sockets)])
        attrs = [f"label={_dot_str(label)}", f"shape={_DOT_SHAPES.get(n.shape, 'box')}"]
        if n.replicas > 1:
            attrs.append("peripheries=2")
        lines.append(f"  {_dot_str(n.name)} [{', '.join(attrs)}];")
    for e in graph.edges:
        label = "\n".join(x for x in (_edge_sockets(graph, e), e.label) if x)
        attrs = [f"label={_dot_str(label)}"]
        if e.control:
            attrs += ["style=dashed", f'color="{CONTROL_COLOR}"', f'fontcolor="{CONTROL_COLOR}"',
                      "constraint=false"]
        lines.append(f"  {_dot_str(e.src)} -> {_dot_str(e.dst)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# text

_UP, _DOWN, _LEFT, _RIGHT = 1, 2, 4, 8
_BOX = {
    _LEFT | _RIGHT: "─", _UP | _DOWN: "│", _DOWN | _RIGHT: "┌", _DOWN | _LEFT: "┐",
    _UP | _RIGHT: "└", _UP | _LEFT: "┘", _UP | _DOWN | _RIGHT: "├", _UP | _DOWN | _LEFT: "┤",
    _LEFT | _RIGHT | _DOWN: "┬", _LEFT | _RIGHT | _UP: "┴", 15: "┼",
    _LEFT: "─", _RIGHT: "─", _UP: "│", _DOWN: "│",
}
_DOTTED = {_LEFT | _RIGHT: "┄", _UP | _DOWN: "┆", _LEFT: "┄", _RIGHT: "┄", _UP: "┆", _DOWN: "┆"}
LANE_GAP = 2


class _Canvas:
    """Cells of line arms (so crossings and joins pick the right box character) and text."""

    def __init__(self) -> None:
        self.arms: dict[tuple[int, int], int] = {}
        self.solid: set[tuple[int, int]] = set()
        self.text: dict[tuple[int, int], str] = {}

    def line(self, r: int, c: int, arms: int, dotted: bool) -> None:
        self.arms[(r, c)] = self.arms.get((r, c), 0) | arms
        if not dotted:
            self.solid.add((r, c))

    def hline(self, r: int, c0: int, c1: int, dotted: bool) -> None:
        """A horizontal run from column c0 to c1 (inclusive), arms joining its neighbours."""
        lo, hi = min(c0, c1), max(c0, c1)
        for c in range(lo, hi + 1):
            arms = (_LEFT if c > lo else 0) | (_RIGHT if c < hi else 0)
            self.line(r, c, arms, dotted)

    def vline(self, c: int, r0: int, r1: int, dotted: bool) -> None:
        lo, hi = min(r0, r1), max(r0, r1)
        for r in range(lo, hi + 1):
            arms = (_UP if r > lo else 0) | (_DOWN if r < hi else 0)
            self.line(r, c, arms, dotted)

    def put(self, r: int, c: int, s: str) -> None:
        for i, ch in enumerate(s):
            self.text[(r, c + i)] = ch

    def render(self) -> list[str]:
        cells = set(self.arms) | set(self.text)
        if not cells:
            return []
        rows = max(r for r, _ in cells) + 1
        out = []
        for r in range(rows):
            cols = [c for rr, c in cells if rr == r]
            width = max(cols) + 1 if cols else 0
            chars = []
            for c in range(width):
                if (r, c) in self.text:
                    chars.append(self.text[(r, c)])
                elif (r, c) in self.arms:
                    arms = self.arms[(r, c)]
                    dotted = (r, c) not in self.solid
                    chars.append(_DOTTED.get(arms, _BOX.get(arms, "┼")) if dotted
                                 else _BOX.get(arms, "┼"))
                else:
                    chars.append(" ")
            out.append("".join(chars).rstrip())
        return out


def to_text(graph: Graph) -> str:
    """A layered drawing for the terminal: boxes top to bottom, edges in lanes on the left."""
    # rows: each node is a box: top, title, rule, one row per socket, bottom
    socket_row: dict[tuple[str, str], int] = {}
    boxes: list[tuple[GraphNode, int]] = []
    row = 0
    for n in graph.nodes:
        boxes.append((n, row))
        for i, s in enumerate(n.sockets):
            socket_row[(n.name, s.name)] = row + 3 + i
        row += 4 + len(n.sockets) + 1  # box and a blank line
    total_rows = row - 1

    # lanes: short edges nearest the boxes; edges whose rows overlap never share a lane
    spans = []
    for e in graph.edges:
        r0, r1 = socket_row[(e.src, e.src_socket)], socket_row[(e.dst, e.dst_socket)]
        spans.append((e, r0, r1))
    lanes: list[list[tuple[int, int]]] = []
    lane_of: dict[int, int] = {}
    for idx in sorted(range(len(spans)), key=lambda i: (abs(spans[i][1] - spans[i][2]),
                                                        min(spans[i][1:]))):
        _, r0, r1 = spans[idx]
        lo, hi = min(r0, r1), max(r0, r1)
        for k, taken in enumerate(lanes):
            if all(hi < a or lo > b for a, b in taken):
                taken.append((lo, hi))
                lane_of[idx] = k
                break
        else:
            lanes.append([(lo, hi)])
            lane_of[idx] = len(lanes) - 1

    left = 1 + LANE_GAP * len(lanes) + 1  # column of the boxes' left border
    canvas = _Canvas()

    # boxes
    def cell(s: GraphSocket) -> list[str]:
        return [s.name, s.type, s.mode if s.mode != "external" else "", s.note]

    rows_text = [cell(s) for n in graph.nodes for s in n.sockets if not n.external]
    widths = [max((len(r[i]) for r in rows_text), default=0) for i in range(4)]

    def socket_text(n: GraphNode, s: GraphSocket) -> str:
        if n.external:
            return s.name
        parts = cell(s)
        return "  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True) if w).rstrip()

    inner = max([len(socket_text(n, s)) for n in graph.nodes for s in n.sockets]
                + [len(f"{n.title}   {n.subtitle}") for n in graph.nodes] + [10])
    right = left + inner + 3  # column of the right border
    for n, top in boxes:
        title = n.title + " " * (inner - len(n.title) - len(n.subtitle)) + n.subtitle
        canvas.put(top, left, "┌" + "─" * (right - left - 1) + "┐")
        canvas.put(top + 1, left, "│ " + title + " │")
        canvas.put(top + 2, left, "├" + "─" * (right - left - 1) + "┤")
        for i, s in enumerate(n.sockets):
            canvas.put(top + 3 + i, left, "│ " + socket_text(n, s).ljust(inner) + " │")
        bottom = top + 3 + len(n.sockets)
        canvas.put(bottom, left, "└" + "─" * (right - left - 1) + "┘")

    # edges
    incoming: dict[int, list[GraphEdge]] = {}
    for idx, (e, r0, r1) in enumerate(spans):
        col = left - 2 - LANE_GAP * lane_of[idx]
        dotted = e.control
        canvas.vline(col, r0, r1, dotted)
        canvas.line(r0, col, _RIGHT, dotted)
        canvas.line(r1, col, _RIGHT, dotted)
        canvas.hline(r0, col, left - 1, dotted)
        canvas.hline(r1, col, left - 2, dotted)
        canvas.line(r1, left - 2, _RIGHT, dotted)
        canvas.put(r0, left, "┤")
        canvas.put(r1, left - 1, "▷" if dotted else "▶")
        incoming.setdefault(r1, []).append(e)

    # what arrives on each receiving row, right of the box
    for r, es in incoming.items():
        said = []
        for e in es:
            src = e.src if graph.node(e.src).external else f"{e.src}.{e.src_socket}"
            said.append(f"{'◁' if e.control else '◀'} {src}  {e.label}")
        canvas.put(r, right + 2, "   ".join(said))

    data = sum(1 for e in graph.edges if not e.control)
    control = len(graph.edges) - data
    replicas = sum(n.replicas for n in graph.nodes)
    head = (f"{graph.name}: {sum(1 for n in graph.nodes if not n.external)} nodes, "
            f"{replicas} replicas, {data} data edge{'s' if data != 1 else ''}"
            + (f", {control} control" if control else ""))
    body = canvas.render()[: total_rows]
    legend = " " * left + "──▶ data" + ("    ┄┄▷ control channel" if control else "")
    return "\n".join([head, "", *body, "", legend]) + "\n"


def render_graph(graph: Graph, fmt: str) -> str:
    if fmt == "mermaid":
        return to_mermaid(graph)
    if fmt == "dot":
        return to_dot(graph)
    if fmt == "text":
        return to_text(graph)
    raise ValueError(f"unknown graph format {fmt!r}; one of {', '.join(FORMATS)}")
