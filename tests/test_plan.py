"""The plan: a pure function of the topology (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zflow.plan import END_COUNT, END_MARKERS, END_NEVER, END_PEERS, build_plan, format_plan
from zflow.spec import load

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies"


def plan_of(name: str, *overrides: str, scale: tuple[str, ...] = ()):
    res = load(str(TOPO / name), overrides=overrides, scale=scale)
    assert res.ok, res.diagnostics
    return build_plan(res.topology, str(TOPO / name), run_dir="/tmp/zflow-test")


def test_squares_replicas_endpoints_and_edges() -> None:
    plan = plan_of("squares.yaml")
    assert [(n, i) for n, i in plan.replica_ids() if n == "worker"] == [
        ("worker", i) for i in range(10)
    ]
    assert plan.bind_endpoint("results", 0, "answers") == "ipc:///tmp/zflow-test/results.0.answers"
    assert {(e.src, e.dst) for e in plan.edges} == {
        ("ventilator.work", "worker.work"),
        ("worker.results", "results.answers"),
        ("results.control", "worker.control"),
    }
    worker = plan.nodes["worker"]
    assert worker.shape == "transform" and worker.kind == "python"
    assert worker.sockets["work"].end == END_COUNT
    assert worker.sockets["control"].role == "control"
    assert worker.sockets["control"].stop_on == "FINISHED"
    assert plan.nodes["results"].sockets["control"].send_on_end == "FINISHED"
    # records are compared per PUSH/PULL component at end of stream
    assert sorted(plan.count_groups) == [
        (["ventilator.work"], ["worker.work"]),
        (["worker.results"], ["results.answers"]),
    ]


def test_defaults_merge_and_codec_aware_hwm() -> None:
    plan = plan_of("squares.yaml", "defaults.linger=250", "nodes.worker.sockets.work.hwm=7")
    w = plan.nodes["worker"].sockets
    assert w["work"].hwm == 7
    # msgpack frames, exactly-once (delivery auto): 16 frames per pipe; the window bounds flow
    assert w["results"].hwm == 16
    assert plan.nodes["worker"].sockets["control"].hwm == 1000  # a SUB drops at its hwm
    be = plan_of("squares.yaml", "delivery=best-effort").nodes["worker"].sockets
    assert be["results"].hwm == 100  # best-effort: 100 frames per pipe by default
    assert w["results"].linger == 250
    assert plan.nodes["worker"].restart == "on-failure"
    assert plan.nodes["worker"].backoff_initial == pytest.approx(0.1)


def test_scale_and_senders() -> None:
    plan = plan_of("squares.yaml", scale=("worker=3",))
    assert plan.nodes["worker"].replicas == 3
    # the results PULL is fed by three replicas; the SUB hears one publisher
    assert plan.nodes["results"].sockets["answers"].senders == 3
    assert plan.nodes["worker"].sockets["control"].senders == 1


def test_tcp_auto_is_left_to_the_os() -> None:
    plan = plan_of("squares.yaml", "nodes.results.sockets.answers.bind=tcp")
    assert plan.bind_endpoint("results", 0, "answers") == "tcp://127.0.0.1:*"
    assert "port chosen by the OS at start" in format_plan(plan)


def test_end_modes_by_socket_kind() -> None:
    assert plan_of("pubsub.yaml").nodes["paris"].sockets["updates"].end == END_MARKERS
    assert plan_of("rpc.yaml").nodes["server"].sockets["api"].end == END_PEERS
    assert plan_of("rpc.yaml").nodes["server"].shape == "service"
    assert plan_of("broker.yaml").nodes["broker"].shape == "custom"
    poly = plan_of("polyglot.yaml")
    assert poly.nodes["collect"].sockets["inbox"].end == END_MARKERS  # json from a command node
    assert poly.nodes["upper"].kind == "command"
    ext = plan_of("squares.yaml", "nodes.worker.sockets.work.connect=tcp://127.0.0.1:9")
    assert ext.nodes["worker"].sockets["work"].end == END_NEVER  # fed from outside


def test_delivery_auto_is_exactly_once_where_the_topology_allows_it() -> None:
    plan = plan_of("squares.yaml")
    assert (plan.delivery, plan.delivery_asked, plan.delivery_reason) == (
        "exactly-once", "auto", "")
    assert "delivery: exactly-once (auto)" in format_plan(plan)
    # and best-effort, saying why, where it does not
    why = {
        "pubsub.yaml": "'weather.updates' is PUB",
        "rpc.yaml": "no source node",
        "polyglot.yaml": "'upper' is a command node",
    }
    for name, reason in why.items():
        p = plan_of(name)
        assert (p.delivery, p.delivery_reason) == ("best-effort", reason), name
        assert f"delivery: best-effort (auto: {reason})" in format_plan(p)
    two = plan_of("squares.yaml", scale=("results=2",))  # acks work, one place to dedupe not
    assert (two.delivery, two.delivery_reason) == ("at-least-once", "sink 'results' has 2 replicas")
    assert "delivery: at-least-once (auto: sink 'results' has 2 replicas)" in format_plan(two)
    asked = plan_of("squares.yaml", "delivery=best-effort")
    assert (asked.delivery, asked.delivery_reason) == ("best-effort", "")
    assert "delivery: best-effort\n" in format_plan(asked)


def test_delivery_in_plan_and_dry_run_text() -> None:
    plan = plan_of("squares.yaml", "delivery=exactly-once")
    assert plan.delivery == "exactly-once"
    text = format_plan(plan)
    assert "delivery: exactly-once" in text
    assert "worker  ×10  transform" in text
    assert "stops on 'FINISHED'" in text


def test_dry_run_json_is_the_plan() -> None:
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "zflow", "up", "--dry-run", "--json",
                        str(TOPO / "squares.yaml")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["nodes"]["worker"]["replicas"] == 10
    assert plan["nodes"]["worker"]["sockets"]["work"]["end"] == END_COUNT
    assert {"src": "ventilator.work", "dst": "worker.work"} in plan["edges"]


# -- the plan does not depend on the order of nodes in the file ----------------------------------

CONCRETE = """\
version: 1
name: concrete
nodes:
  results:
    run: squares:ResultsManager
    sockets:
      answers: {type: PULL, bind: "tcp://127.0.0.1:5601"}
      tally: {type: PULL, bind: "ipc:///tmp/zflow-test-tally"}
      control: {type: PUB, bind: auto, send_on_end: FINISHED}
  ventilator:
    run: squares:numbers
    sockets:
      work: {type: PUSH, bind: auto}
  worker:
    run: squares:square
    replicas: 3
    sockets:
      work: {type: PULL, connect: ventilator.work}
      results: {type: PUSH, connect: "tcp://127.0.0.1:5601"}
      tally: {type: PUSH, connect: results.tally}
      control: {type: SUB, connect: results.control, subscribe: "", stop_on: FINISHED}
"""


def _signature(plan) -> dict:
    socks = {
        f"{n.name}.{s.name}": (s.end, frozenset(s.peers), s.senders, s.external, s.zflow_peers,
                               s.role)
        for n in plan.nodes.values() for s in n.sockets.values()
    }
    return {
        "sockets": socks,
        "links": {(lk.connector, lk.binder) for lk in plan.links},
        "edges": {(e.src, e.dst) for e in plan.edges},
        "groups": {(frozenset(s), frozenset(r)) for s, r in plan.count_groups},
        "shapes": {n.name: n.shape for n in plan.nodes.values()},
    }


def _permuted_plans(topology: dict, file: str):
    import itertools

    names = list(topology["nodes"])
    orders = list(itertools.permutations(names)) if len(names) <= 4 else [
        names, names[::-1], names[1:] + names[:1], names[-1:] + names[:-1]]
    for order in orders:
        topo = {**topology, "nodes": {k: topology["nodes"][k] for k in order}}
        yield order, build_plan(topo, file, run_dir="/tmp/zflow-test")


@pytest.mark.parametrize("name", ["squares.yaml", "pubsub.yaml", "rpc.yaml", "broker.yaml",
                                  "polyglot.yaml", "<concrete>"])
def test_plan_does_not_depend_on_node_order(name: str, tmp_path: Path) -> None:
    if name == "<concrete>":
        path = tmp_path / "concrete.yaml"
        path.write_text(CONCRETE)
    else:
        path = TOPO / name
    res = load(str(path), env={})
    assert res.ok, res.diagnostics
    first = None
    for order, plan in _permuted_plans(res.topology, str(path)):
        sig = _signature(plan)
        if first is None:
            first = sig
        assert sig == first, order


def test_a_concrete_endpoint_connected_inside_the_topology_is_a_link(tmp_path: Path) -> None:
    path = tmp_path / "concrete.yaml"
    path.write_text(CONCRETE)
    res = load(str(path), env={})
    assert res.ok, res.diagnostics
    plan = build_plan(res.topology, str(path), run_dir="/tmp/zflow-test")
    answers = plan.nodes["results"].sockets["answers"]
    results = plan.nodes["worker"].sockets["results"]
    tally = plan.nodes["results"].sockets["tally"]
    # connected by the literal endpoint: a link, not an outside program
    assert not results.external and results.peers == [("results", "answers")]
    assert not answers.external and answers.peers == [("worker", "results")]
    assert answers.end == END_COUNT and answers.senders == 3 and answers.zflow_peers
    # connected by reference to a concrete bind listed earlier in the file
    assert not tally.external and tally.end == END_COUNT and tally.senders == 3
    assert {(e.src, e.dst) for e in plan.edges} >= {("worker.results", "results.answers"),
                                                    ("worker.tally", "results.tally")}
    assert (["worker.results"], ["results.answers"]) in plan.count_groups
    assert (["worker.tally"], ["results.tally"]) in plan.count_groups
    # an endpoint nobody in the topology binds stays external
    ext = CONCRETE.replace('connect: "tcp://127.0.0.1:5601"', 'connect: "tcp://127.0.0.1:5609"')
    path.write_text(ext)
    res = load(str(path), env={})
    plan = build_plan(res.topology, str(path), run_dir="/tmp/zflow-test")
    assert plan.nodes["worker"].sockets["results"].external
    assert plan.nodes["results"].sockets["answers"].external
    assert plan.nodes["results"].sockets["answers"].end == END_NEVER


def test_dry_run_shows_the_concrete_link(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "concrete.yaml"
    path.write_text(CONCRETE)
    p = subprocess.run([sys.executable, "-m", "zflow", "up", "--dry-run", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    answers = next(x for x in p.stdout.splitlines() if x.strip().startswith("answers"))
    assert "end of stream by count" in answers
    assert "  worker.results → results.answers" in p.stdout.splitlines()
    assert "  worker.tally → results.tally" in p.stdout.splitlines()


def test_one_binder_named_twice_is_one_link_and_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(CONCRETE.replace('connect: "tcp://127.0.0.1:5601"',
                                     'connect: [results.answers, "tcp://localhost:5601"]'))
    res = load(str(path), env={})
    assert res.ok
    (w,) = res.warnings
    assert w.code == "ZF070" and w.path == "nodes.worker.sockets.results.connect[1]"
    assert w.message == ("'worker.results' connects to 'results.answers' twice: as "
                         "results.answers and as tcp://localhost:5601")
    plan = build_plan(res.topology, str(path), run_dir="/tmp/zflow-test")
    assert plan.nodes["results"].sockets["answers"].peers == [("worker", "results")]
    assert plan.nodes["results"].sockets["answers"].senders == 3


def test_an_input_fed_by_a_program_that_exits_keeps_everything() -> None:
    """libzmq drops what is still in a connection when the receiving pipe is full as the sender
    exits (libzmq#4660): a zflow input fed by command nodes gets an unbounded queue, unless the
    topology sets hwm itself."""
    path = ROOT / "tests" / "topologies" / "plain_sender.yaml"
    res = load(str(path))
    plan = build_plan(res.topology, str(path), run_dir="/tmp/zflow-test")
    assert plan.nodes["sink"].sockets["inbox"].hwm == 0
    assert plan.nodes["sink"].sockets["inbox"].end == END_MARKERS
    res = load(str(path), overrides=["nodes.sink.sockets.inbox.hwm=50"])
    plan = build_plan(res.topology, str(path), run_dir="/tmp/zflow-test")
    assert plan.nodes["sink"].sockets["inbox"].hwm == 50


def test_node_env_includes_env_file_values_explicit_env_winning(tmp_path: Path) -> None:
    (tmp_path / "shared.env").write_text("TOKEN=from-file\nLEVEL=debug\n")
    (tmp_path / "t.yaml").write_text(
        "version: 1\nname: t\nenv_file: shared.env\nnodes:\n"
        "  src:\n    run: m:f\n    env: {LEVEL: info}\n    sockets:\n"
        "      out: {type: PUSH, bind: auto}\n"
        "  dst:\n    run: m:g\n    sockets:\n      inp: {type: PULL, connect: src.out}\n")
    res = load(str(tmp_path / "t.yaml"), env={})
    assert res.ok, res.diagnostics
    plan = build_plan(res.topology, str(tmp_path / "t.yaml"), run_dir="/tmp/zflow-test")
    assert plan.nodes["src"].env == {"TOKEN": "from-file", "LEVEL": "info"}
    assert plan.nodes["dst"].env == {"TOKEN": "from-file", "LEVEL": "debug"}
