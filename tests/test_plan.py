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
    assert w["results"].hwm == 100  # msgpack frames: 100 frames per pipe by default
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
