"""`zflow graph`: the graph model from the plan, and its Mermaid, dot and text renderings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zflow.graph import (
    Graph,
    GraphNode,
    build_graph,
    layers,
    mermaid_ids,
    render_graph,
    to_dot,
    to_mermaid,
    to_text,
)
from zflow.plan import build_plan
from zflow.spec import load

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies"
VALID = ROOT / "tests" / "spec_corpus" / "valid"


def graph_of(path: Path | str, *sets: str, scale: tuple[str, ...] = ()):
    res = load(str(path), overrides=sets, scale=scale)
    assert res.ok, res.diagnostics
    return build_graph(build_plan(res.topology, str(path)))


def graph_of_text(tmp_path: Path, text: str):
    f = tmp_path / "t.yaml"
    f.write_text(text)
    return graph_of(f)


def zflow(*args: str, env: dict | None = None, stdin: str | None = None,
          cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zflow", *args], capture_output=True, text=True,
                          input=stdin, cwd=cwd, env={**os.environ, **(env or {})})


# --- the model ----------------------------------------------------------------------------------


def test_squares_nodes_replicas_shapes_sockets() -> None:
    g = graph_of(TOPO / "squares.yaml")
    assert [(n.name, n.replicas, n.shape) for n in g.nodes] == [
        ("ventilator", 1, "source"), ("worker", 10, "transform"), ("results", 1, "sink")]
    assert [(s.name, s.type, s.role) for s in g.node("worker").sockets] == [
        ("work", "PULL", "data"), ("results", "PUSH", "data"), ("control", "SUB", "control")]


def test_squares_edges_patterns_and_control() -> None:
    g = graph_of(TOPO / "squares.yaml")
    edges = {e.key: e for e in g.edges}
    assert set(edges) == {("ventilator.work", "worker.work"), ("worker.results", "results.answers"),
                          ("results.control", "worker.control")}
    fan_out = edges["ventilator.work", "worker.work"]
    assert (fan_out.pattern, fan_out.replicas, fan_out.control) == ("fan-out", "1→10", False)
    fan_in = edges["worker.results", "results.answers"]
    assert (fan_in.pattern, fan_in.replicas, fan_in.control) == ("fan-in", "10→1", False)
    ctl = edges["results.control", "worker.control"]
    assert (ctl.pattern, ctl.control, ctl.detail) == ("pub/sub", True, "FINISHED")
    assert ctl.label == "control: FINISHED · pub/sub"


def test_scale_and_set_are_applied() -> None:
    g = graph_of(TOPO / "squares.yaml", "nodes.results.replicas=2", scale=("worker=3",))
    assert g.node("worker").replicas == 3 and g.node("results").replicas == 2
    edges = {e.key: e for e in g.edges}
    assert edges["worker.results", "results.answers"].pattern == "fan-out/fan-in"
    assert edges["worker.results", "results.answers"].replicas == "3→2"
    single = graph_of(TOPO / "squares.yaml", scale=("worker=1",))
    assert {e.key: e.pattern for e in single.edges}["ventilator.work", "worker.work"] == "pipeline"


def test_pubsub_request_reply_and_command_nodes() -> None:
    pubsub = graph_of(TOPO / "pubsub.yaml")
    south = {e.dst: e for e in pubsub.edges}["south"]
    assert south.pattern == "pub/sub" and "'weather.rome', 'weather.madrid'" in south.detail
    assert {e.dst: e for e in pubsub.edges}["everything"].detail == "all topics"
    broker = graph_of(TOPO / "broker.yaml")
    assert {(e.key, e.pattern) for e in broker.edges} == {
        (("client.api", "broker.frontend"), "request/reply"),
        (("broker.backend", "server.api"), "request/reply")}
    poly = graph_of(TOPO / "polyglot.yaml")
    assert poly.node("upper").kind == "command" and "command" in poly.node("upper").subtitle


def test_external_endpoints_become_nodes_and_literal_endpoints_link(tmp_path: Path) -> None:
    ext = graph_of(VALID / "external.yaml")
    outside = [n for n in ext.nodes if n.external]
    assert [n.name for n in outside] == ["tcp://feeds.example.com:7000"]
    assert ("tcp://feeds.example.com:7000.tcp://feeds.example.com:7000", "tap.market") in \
        {e.key for e in ext.edges}
    # features.yaml: shout connects to tcp://127.0.0.1:6201 and an ipc path that collect binds;
    # watcher connects to 127.0.0.1:6202, which collect binds on 0.0.0.0: all edges, not outside
    feat = graph_of(VALID / "features.yaml")
    keys = {e.key for e in feat.edges}
    assert {("shout.out", "collect.tcp_in"), ("shout.out", "collect.ipc_in"),
            ("collect.status", "watcher.status"), ("feed.out", "shout.inp")} <= keys
    assert not any(n.external for n in feat.nodes)
    assert len(keys) == len(feat.edges)  # once each, whether or not the plan links them itself


def test_layers_put_every_node_below_its_feeders_and_survive_cycles(tmp_path: Path) -> None:
    g = graph_of(TOPO / "squares.yaml")
    assert layers(g) == [["ventilator"], ["worker"], ["results"]]
    loop = graph_of_text(tmp_path, """\
version: 1
name: loop
nodes:
  a:
    run: m:a
    sockets:
      out: {type: PUSH, bind: auto}
      back: {type: PULL, bind: auto}
  b:
    run: m:b
    sockets:
      inp: {type: PULL, connect: a.out}
      out: {type: PUSH, connect: a.back}
""")
    assert layers(loop) == [["a"], ["b"]]
    assert to_text(loop).count("▶│") == 2  # one arrow into each receiving socket


# --- Mermaid ------------------------------------------------------------------------------------

_ID = r"[A-Za-z][A-Za-z0-9_]*"
_LABEL = r'"[^"]*"'
_SHAPES = [(r"\(\[", r"\]\)"), (r"\[\(", r"\)\]"), (r"\{\{", r"\}\}"), (r"\[\[", r"\]\]"),
           (r"\[/", r"/\]"), (r"\[", r"\]")]
_NODE = re.compile(rf"^  ({_ID})(?:{'|'.join(f'{o}{_LABEL}{c}' for o, c in _SHAPES)})$")
_EDGE = re.compile(rf"^  ({_ID}) (-->|-\.->)\|{_LABEL}\| ({_ID})$")
_LINKSTYLE = re.compile(r"^  linkStyle (\d+(?:,\d+)*) [a-z-]+:[^;\s]+(?:,[a-z-]+:[^,;]+)*$")
#: words a Mermaid flowchart does not take as node ids
_RESERVED = {"end", "graph", "flowchart", "subgraph", "style", "class", "classDef", "click",
             "linkStyle", "default"}


def check_mermaid(text: str) -> dict:
    """A strict reading of the subset of Mermaid flowchart syntax zflow prints: every line is a
    header, comment, node, edge or linkStyle; ids are safe; edges join declared nodes; linkStyle
    indexes exist. Returns what it found."""
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "flowchart LR"
    nodes: list[str] = []
    edges: list[tuple[str, str, str]] = []
    styles: list[int] = []
    for line in lines[1:]:
        if line.startswith("  %%"):
            continue
        if m := _NODE.match(line):
            assert m.group(1) not in nodes, f"node declared twice: {line}"
            nodes.append(m.group(1))
        elif m := _EDGE.match(line):
            edges.append((m.group(1), m.group(2), m.group(3)))
        elif m := _LINKSTYLE.match(line):
            styles.extend(int(x) for x in m.group(1).split(","))
        else:
            raise AssertionError(f"not Mermaid flowchart syntax zflow prints: {line!r}")
    for a, _, b in edges:
        assert a in nodes and b in nodes
    assert not set(nodes) & _RESERVED and not any(n[0] in "ox" and n[1:2] == "" for n in nodes)
    assert all(0 <= i < len(edges) for i in styles)
    return {"nodes": nodes, "edges": edges, "styles": styles}


@pytest.mark.parametrize("name", ["squares", "pubsub", "rpc", "broker", "polyglot"])
def test_mermaid_is_valid_and_complete_for_every_shipped_topology(name: str) -> None:
    g = graph_of(TOPO / f"{name}.yaml")
    found = check_mermaid(to_mermaid(g))
    assert len(found["nodes"]) == len(g.nodes)
    assert len(found["edges"]) == len(g.edges)
    dotted = [i for i, (_, arrow, _) in enumerate(found["edges"]) if arrow == "-.->"]
    assert dotted == [i for i, e in enumerate(g.edges) if e.control] == found["styles"]


def test_mermaid_squares_shows_replicas_sockets_and_styles_the_control_edge() -> None:
    text = to_mermaid(graph_of(TOPO / "squares.yaml"))
    worker = ('n_worker["worker ×10<br/>transform<br/>work: PULL<br/>results: PUSH<br/>'
              'control: SUB"]')
    assert worker in text
    assert 'n_ventilator -->|"work → work<br/>fan-out 1→10"| n_worker' in text
    assert 'n_results -.->|"control → control<br/>control: FINISHED · pub/sub"| n_worker' in text
    assert re.search(r"^  linkStyle 2 stroke:#\w+,stroke-dasharray:", text, re.M)


def test_mermaid_ids_are_sanitized_and_unique(tmp_path: Path) -> None:
    g = graph_of_text(tmp_path, """\
version: 1
name: names
nodes:
  end:
    run: m:a
    sockets:
      out: {type: PUSH, bind: auto}
  a-b:
    run: m:b
    sockets:
      inp: {type: PULL, connect: end.out}
      out: {type: PUSH, bind: auto}
  graph:
    run: m:c
    sockets:
      inp: {type: PULL, connect: a-b.out}
      out: {type: PUSH, bind: auto}
  o-x:
    run: m:d
    sockets:
      inp: {type: PULL, connect: graph.out}
      tap: {type: SUB, connect: "tcp://10.0.0.1:7000", subscribe: 'say "hi" <b>'}
""")
    ids = mermaid_ids(g)
    outside = ids.pop("tcp://10.0.0.1:7000")
    assert ids == {"end": "n_end", "a-b": "n_a_b", "graph": "n_graph", "o-x": "n_o_x"}
    assert re.fullmatch(r"x_\d+", outside)
    text = to_mermaid(g)
    found = check_mermaid(text)
    assert len(found["nodes"]) == 5 and len(found["edges"]) == 4  # one endpoint outside
    # names that sanitize alike still get ids of their own
    g.nodes.append(GraphNode("a_b", "sink", "python", 1))
    assert len(set(mermaid_ids(g).values())) == 6


def test_mermaid_labels_escape_quotes_and_markup() -> None:
    g = Graph("q", [GraphNode('say "hi" <b>', "sink", "python", 1)], [])
    text = to_mermaid(g)
    assert "#quot;hi#quot; #lt;b#gt;" in text and '"hi"' not in text
    check_mermaid(text)


# --- dot and text -------------------------------------------------------------------------------


def test_dot_has_every_node_and_edge_and_dashes_control() -> None:
    text = to_dot(graph_of(TOPO / "squares.yaml"))
    assert text.startswith('digraph "squares" {') and text.rstrip().endswith("}")
    for node in ("ventilator", "worker", "results"):
        assert re.search(rf'^  "{node}" \[label=', text, re.M)
    assert '"worker" [label="worker ×10\\ntransform' in text and "peripheries=2" in text
    assert re.search(r'^  "results" -> "worker" \[.*style=dashed', text, re.M)
    assert not re.search(r'^  "ventilator" -> "worker" \[.*style=dashed', text, re.M)
    if shutil.which("dot"):  # Graphviz, where installed, must accept it
        p = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


def test_text_drawing_of_squares() -> None:
    text = to_text(graph_of(TOPO / "squares.yaml"))
    lines = text.splitlines()
    assert lines[0] == "squares: 3 nodes, 12 replicas, 2 data edges, 1 control"
    for title in ("ventilator ×1", "worker ×10", "results ×1"):
        assert sum(title in x for x in lines) == 1
    # nodes in layers, top to bottom
    assert text.index("ventilator ×1") < text.index("worker ×10") < text.index("results ×1")
    row = {name: next(x for x in lines if re.search(rf"│ {name}\s+(PU|SU)", x))
           for name in ("work", "answers")}
    assert "▶│" in row["work"] and "◀ ventilator.work  fan-out 1→10" in row["work"]
    assert "◀ worker.results  fan-in 10→1" in row["answers"]
    control = next(x for x in lines if "│ control  SUB" in x)
    assert "▷│" in control and "◁ results.control  control: FINISHED · pub/sub" in control
    assert "┄" in text and "┆" in text  # the control lane is dotted
    assert lines[-1].strip() == "──▶ data    ┄┄▷ control channel"
    # every edge leaves its socket's row: the box border there is ┤
    assert sum(x.count("┤ ") for x in lines if "PUSH" in x or "PUB" in x) == 3


def test_text_lanes_cross_and_branch_readably() -> None:
    text = to_text(graph_of(TOPO / "pubsub.yaml"))
    assert "┌─┬─┬─┤ updates  PUB" in text  # one socket, three subscribers
    assert text.count("▶│ updates  SUB") == 3


def test_render_graph_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError):
        render_graph(graph_of(TOPO / "squares.yaml"), "png")


# --- the command, and the README ----------------------------------------------------------------


def _readme_block(kind: str, after: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(after):]
    m = re.search(rf"```{kind}\n(.*?)```", section, re.S)
    assert m, f"no ```{kind} block after {after!r}"
    return m.group(1)


def test_readme_mermaid_block_is_what_zflow_graph_prints() -> None:
    p = zflow("graph", "topologies/squares.yaml", "--format", "mermaid")
    assert p.returncode == 0, p.stderr
    assert _readme_block("mermaid", "## Graph") == p.stdout


def test_readme_text_block_is_what_zflow_graph_prints() -> None:
    p = zflow("graph", "topologies/squares.yaml")
    assert p.returncode == 0, p.stderr
    assert _readme_block("text", "## Graph") == p.stdout


def test_graph_command_formats_overrides_and_stdin() -> None:
    p = zflow("graph", "--format", "dot", "--scale", "worker=4", "topologies/squares.yaml")
    assert p.returncode == 0 and "worker ×4" in p.stdout and p.stdout.startswith("digraph")
    p = zflow("graph", "-", "--format", "mermaid",
              stdin=(TOPO / "squares.yaml").read_text())
    assert p.returncode == 0, p.stderr
    assert p.stdout == zflow("graph", "topologies/squares.yaml", "--format", "mermaid").stdout


def test_graph_of_an_invalid_file_says_why_without_colour_under_no_color(tmp_path: Path) -> None:
    bad = str(VALID.parent / "invalid" / "bad_codec.yaml")
    p = zflow("graph", bad, env={"FORCE_COLOR": "1"})
    assert p.returncode == 1 and p.stdout == ""
    assert "error[ZF025]" in p.stderr and "\x1b[" in p.stderr  # colour forced …
    p = zflow("graph", bad, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert p.returncode == 1 and "error[ZF025]" in p.stderr
    assert "\x1b[" not in p.stderr  # … but NO_COLOR wins
    p = zflow("graph", "-", stdin=(VALID.parent / "invalid" / "bad_codec.yaml").read_text())
    assert p.returncode == 1 and p.stderr.startswith("<stdin>:8:44: error[ZF025]")
    p = zflow("graph", str(tmp_path / "missing.yaml"))
    assert p.returncode == 2 and "no such file" in p.stderr
