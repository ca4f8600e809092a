"""Every topology in topologies/ runs to its end, through the `zflow_run` fixture (zflow.testing):
sink results, records per edge, exit code and output, and nothing left running."""

from __future__ import annotations

import uuid

import pytest
from test_runtime_e2e import leftovers

#: (file, sink node or node.replica, its end() result, records that reached the sinks)
SHIPPED = [
    ("squares.yaml", "results", {"answers": 10000, "workers": 10, "sum": 333283335000}, 10000),
    # pubsub: paris 750 + south 3000 (two replicas, each every rome and madrid) + everything 3000
    ("pubsub.yaml", "paris", {"received": 750, "paris": 750}, 6750),
    ("pubsub.yaml", "everything",
     {"received": 3000, "paris": 750, "rome": 750, "madrid": 750, "oslo": 750}, 6750),
    ("rpc.yaml", "client", {"replies": 300, "servers": 3, "sum": sum(i * i for i in range(300))},
     300),
    # how many of the 3 servers answer one client is up to the broker's DEALER and timing (under
    # load one server may take them all): `servers` is checked as a range below
    ("broker.yaml", "client.1", {"replies": 200, "sum": sum(i * i for i in range(200))}, 400),
    ("polyglot.yaml", "collect", {"received": 500, "uppercased": 500}, 500),
]


@pytest.mark.parametrize(("topology", "sink", "expected", "done"), SHIPPED)
def test_shipped_topology_runs(zflow_run, topology: str, sink: str, expected: dict,
                               done: int) -> None:
    name = "t" + uuid.uuid4().hex[:10]
    run = zflow_run(f"topologies/{topology}", overrides={"name": name})
    assert run.ok, run.report()
    got = dict(run.results[sink])
    if topology == "broker.yaml":
        assert 1 <= got.pop("servers") <= 3
    assert got == expected
    assert run.progress["done"] == done
    data = [e for e in run.edges.values() if not e.control]
    assert data and all(e.sent or e.received for e in data), data  # records on every edge
    assert all(code == 0 for n in run.nodes.values() for code in n.exit_codes)
    assert leftovers(name) == []


def test_squares_output_and_edges(zflow_run) -> None:
    name = "t" + uuid.uuid4().hex[:10]
    run = zflow_run("topologies/squares.yaml", scale={"worker": 3},
                    overrides={"nodes.ventilator.params.count": 300, "name": name})
    assert run.ok, run.report()
    assert run.edges["ventilator.work", "worker.work"].received == 300
    assert run.edges["worker.results", "results.answers"].received == 300
    assert len(run.nodes["worker"].replicas) == 3
    assert run.output["results.0"][-1].endswith("sum of squares 8955050")
    assert leftovers(name) == []
