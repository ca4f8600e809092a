"""zflow/cluster.py: what the coordinator, the replicas and the manifests must agree on without
talking — ports, names, replica index, topology digest."""

from __future__ import annotations

import textwrap
from pathlib import Path

from zflow import cluster
from zflow.plan import build_plan
from zflow.spec import load


def plan_of(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "t.yaml"
    f.write_text(textwrap.dedent(text))
    res = load(str(f))
    assert res.ok, [d.message for d in res.diagnostics]
    return build_plan(res.topology, str(f)), res.topology


FIXED = """
    version: 1
    name: fixed
    nodes:
      a:
        run: m:f
        sockets:
          x: {type: PUSH, bind: auto}
          y: {type: PUB, bind: "tcp://127.0.0.1:7001"}
      bee:
        run: m:g
        replicas: 3
        sockets:
          x: {type: PULL, connect: a.x}
          y: {type: SUB, connect: a.y, subscribe: ""}
          z: {type: PUSH, bind: tcp}
      c:
        run: m:h
        sockets:
          z: {type: PULL, connect: bee.z}
"""


def test_ports_keep_concrete_ones_and_number_the_rest_around_them(tmp_path: Path) -> None:
    plan, _ = plan_of(tmp_path, FIXED)
    ports = cluster.ports(plan)
    assert ports == {("a", "x"): 7002, ("a", "y"): 7001, ("bee", "z"): 7003}
    assert cluster.CONTROL_PORT not in ports.values()
    remote = cluster.remote_plan(plan)
    assert remote.nodes["a"].sockets["x"].bind == "tcp://*:7002"
    assert plan.nodes["a"].sockets["x"].bind == "auto"  # the original plan is left alone


def test_the_digest_is_of_the_topology_not_of_how_it_was_written(tmp_path: Path) -> None:
    _, topo = plan_of(tmp_path, FIXED)
    reordered = dict(reversed(list(topo.items())))
    assert cluster.digest(reordered) == cluster.digest(topo)
    changed = {**topo, "nodes": {**topo["nodes"], "a": {**topo["nodes"]["a"], "replicas": 2}}}
    assert cluster.digest(changed) != cluster.digest(topo)


def test_the_replica_index_comes_from_the_flag_the_engine_or_the_host_name() -> None:
    assert cluster.replica_index(4, {"JOB_COMPLETION_INDEX": "2"}, "w-1") == 4
    assert cluster.replica_index(None, {"JOB_COMPLETION_INDEX": "2", "SLURM_PROCID": "5"},
                                 "w-1") == 2
    assert cluster.replica_index(None, {"ZFLOW_POD_INDEX": "7"}, "w-1") == 7
    assert cluster.replica_index(None, {"SLURM_PROCID": "5"}, "w-1") == 5
    assert cluster.replica_index(None, {"JOB_COMPLETION_INDEX": ""}, "squares-worker-3") == 3
    assert cluster.replica_index(None, {}, "squares-worker-3.squares.ns.svc") == 3
    assert cluster.replica_index(None, {}, "laptop") is None


def test_names_are_dns_labels_and_replica_hosts_are_the_pods_names() -> None:
    assert cluster.dns_label("Fixed_Ports") == "fixed-ports"
    assert cluster.dns_label("__") == "x"
    assert cluster.workload_name("Fixed_Ports", "b_node") == "fixed-ports-b-node"
    assert cluster.replica_host("squares", "worker", 3) == "squares-worker-3.squares"
    assert cluster.coordinator_name("squares") == "squares-coordinator"


def test_endpoints_are_advertised_under_the_host_name() -> None:
    assert cluster.advertised("tcp://0.0.0.0:7001", "w-0.sq") == "tcp://w-0.sq:7001"
    assert cluster.advertised("tcp://*:7001", "w-0.sq") == "tcp://w-0.sq:7001"
    assert cluster.advertised("ipc:///x", "w-0.sq") == "ipc:///x"
    assert cluster.is_loopback("tcp://127.0.0.1:*") and cluster.is_loopback("tcp://[::1]:5")
    assert not cluster.is_loopback("tcp://0.0.0.0:7000")


def test_long_running_is_what_the_plan_can_tell(tmp_path: Path) -> None:
    plan, _ = plan_of(tmp_path, FIXED)
    assert not cluster.long_running(plan)
    fed = FIXED + """
          feed: {type: PULL, bind: "tcp://127.0.0.1:9000"}
    """
    plan, _ = plan_of(tmp_path, fed)
    assert cluster.long_running(plan)  # fed from outside the topology: no end
