"""The status model: state machine, counters, EWMA rates, edges, progress, snapshot."""

from __future__ import annotations

import json
import math

import pytest

from zflow.status.demo import FakeClock, feed, squares_model
from zflow.status.model import (
    EdgeInfo,
    Ewma,
    NodeInfo,
    StatusModel,
    node_state,
)


def test_views_hear_each_recorded_fact_once() -> None:
    m = squares_model()
    heard: list[tuple] = []

    class Listener:
        def event(self, kind: str, **fields: object) -> None:
            heard.append((kind, fields.get("state") or fields.get("message")))

        def log(self, node: str, replica: int, stream: str, line: str) -> None:
            heard.append(("log", line))

    m.subscribe(Listener())
    m.replica_state("worker", 0, "running")
    m.replica_state("worker", 0, "running")  # no change: nothing to tell
    m.error("boom")
    m.log("worker", 0, "stdout", "hello")
    m.replica_restart("worker", 0, delay=0.1, code=1, attempt=1)
    assert heard == [("state", "running"), ("error", "boom"), ("log", "hello"),
                     ("restart", None)]
    assert m.errors == ["boom"]
    assert m.replicas["worker"][0].restarts == 1


def test_unknown_states_rejected() -> None:
    m = squares_model()
    with pytest.raises(ValueError):
        m.replica_state("worker", 0, "sleeping")
    with pytest.raises(ValueError):
        m.set_overall("done")


def test_ewma_is_time_weighted() -> None:
    e = Ewma(0.0, tau=2.0, stale=1.0)
    e.update(1.0, 1000)
    assert e.value(1.0) == pytest.approx(1000.0)  # first sample taken as is
    e.update(2.0, 3000)  # instantaneous 2000/s, weight 1 - e^-0.5
    expected = 1000 + (1 - math.exp(-0.5)) * 1000
    assert e.value(2.0) == pytest.approx(expected)
    e.update(2.01, 3500)  # too close to the last report: baseline kept
    assert e.value(2.01) == pytest.approx(expected)
    e.update(2.5, 3500)  # 500 over 0.5 s = 1000/s
    expected2 = expected + (1 - math.exp(-0.25)) * (1000 - expected)
    assert e.value(2.5) == pytest.approx(expected2)
    # no reports: rate holds for `stale` seconds, then decays with tau
    assert e.value(3.5) == pytest.approx(expected2)
    assert e.value(5.5) == pytest.approx(expected2 * math.exp(-1.0))


def test_node_rate_sums_replicas_and_drops_when_stopped() -> None:
    clock = FakeClock()
    m = squares_model(clock)
    for i in range(10):
        m.replica_state("worker", i, "running")
    clock.advance(1.0)
    for i in range(10):
        m.replica_counters("worker", i, {"work": (100, 0, 0, 0), "results": (0, 100, 0, 0)})
    t = m.node_totals("worker")
    assert t.rate == pytest.approx(1000.0)  # inbound data rate: 10 × 100/s
    assert (t.msgs_in, t.msgs_out, t.ready) == (1000, 1000, 10)
    m.replica_state("worker", 0, "stopped")
    assert m.node_totals("worker").rate == pytest.approx(900.0)


def test_source_rate_counts_what_it_sends() -> None:
    clock = FakeClock()
    m = squares_model(clock)
    clock.advance(0.5)
    m.replica_counters("ventilator", 0, {"work": (0, 2000, 0, 0)})
    assert m.node_totals("ventilator").rate == pytest.approx(4000.0)


def test_edge_in_flight_one_to_one() -> None:
    clock = FakeClock()
    m = squares_model(clock)
    clock.advance(1.0)
    m.replica_counters("ventilator", 0, {"work": (0, 700, 0, 0)})
    for i in range(10):
        m.replica_counters("worker", i, {"work": (60, 0, 0, 0), "results": (0, 58, 0, 0),
                                         "control": (0, 0, 0, 0)})
    m.replica_counters("results", 0, {"answers": (570, 0, 0, 0), "control": (0, 0, 0, 0)})
    e = {x.src: x for x in m.all_edge_totals()}
    assert (e["ventilator.work"].sent, e["ventilator.work"].received) == (700, 600)
    assert e["ventilator.work"].in_flight == 100
    assert e["worker.results"].in_flight == 580 - 570
    assert e["worker.results"].rate == pytest.approx(570.0)
    # PUB fan-out: each SUB replica gets a copy, in flight is meaningless
    m.replica_counters("results", 0, {"answers": (570, 0, 0, 0), "control": (0, 1, 0, 8)})
    for i in range(10):
        m.replica_counters("worker", i, {"control": (1, 0, 8, 0)})
    ctl = m.edge_totals(m.edges[2])
    assert (ctl.sent, ctl.received, ctl.in_flight) == (1, 10, None)


def test_edge_in_flight_clamped_and_shared_sockets() -> None:
    nodes = [NodeInfo("a", 1, "source", "python"), NodeInfo("b", 1, "source", "python"),
             NodeInfo("c", 1, "sink", "python"), NodeInfo("d", 1, "sink", "python")]
    edges = [EdgeInfo("a.out", "c.in"), EdgeInfo("b.out", "c.in"), EdgeInfo("a.out", "d.in")]
    m = StatusModel("t", nodes, edges, clock=FakeClock())
    m.replica_counters("a", 0, {"out": (0, 10, 0, 0)})
    m.replica_counters("b", 0, {"out": (0, 5, 0, 0)})
    m.replica_counters("c", 0, {"in": (12, 0, 0, 0)})
    m.replica_counters("d", 0, {"in": (3, 0, 0, 0)})
    e = m.all_edge_totals()
    # a.out feeds two edges: its count cannot be split; c.in has two senders
    assert (e[0].sent, e[0].received, e[0].in_flight) == (None, None, None)
    assert (e[1].sent, e[1].received, e[1].in_flight) == (5, None, None)
    assert (e[2].sent, e[2].received, e[2].in_flight) == (None, 3, None)
    # a receiver's report newer than the sender's: never a negative in-flight
    m2 = squares_model()
    m2.replica_counters("ventilator", 0, {"work": (0, 10, 0, 0)})
    m2.replica_counters("worker", 0, {"work": (15, 0, 0, 0)})
    assert m2.edge_totals(m2.edges[0]).in_flight == 0


def test_sinks_found_from_shape_then_graph() -> None:
    m = squares_model()
    assert m.sinks == ["results"]  # shape sink
    nodes = [NodeInfo("v", 1, "source", "python"), NodeInfo("w", 2, "transform", "python"),
             NodeInfo("r", 1, "custom", "python")]
    cyc = [EdgeInfo("v.o", "w.i"), EdgeInfo("w.o", "r.i"), EdgeInfo("r.c", "w.c")]
    assert StatusModel("t", nodes, cyc).sinks == ["r"]  # deepest node of a cyclic graph
    flagged = [EdgeInfo("v.o", "w.i"), EdgeInfo("w.o", "r.i"), EdgeInfo("r.c", "w.c", control=True)]
    assert StatusModel("t", nodes, flagged).sinks == ["r"]  # no outgoing data edges
    m3 = StatusModel("t", nodes, flagged)
    m3.set_total(5, "w")  # an explicit receiving node wins
    assert m3.sinks == ["w"]
    m3.set_total(5, "v")  # a source that knows its length: sinks are found again
    assert m3.sinks == ["r"]


def test_progress_and_eta() -> None:
    clock = FakeClock()
    m = squares_model(clock)
    assert m.progress().fraction is None
    m.set_total(10_000, "ventilator")
    clock.advance(2.0)
    m.replica_counters("results", 0, {"answers": (2000, 0, 0, 0)})
    p = m.progress()
    assert (p.done, p.total, p.fraction) == (2000, 10_000, 0.2)
    assert p.eta == pytest.approx(8000 / 1000)
    m.replica_counters("results", 0, {"answers": (10_000, 0, 0, 0)})
    assert m.progress().fraction == 1.0 and m.progress().eta == 0.0


def test_squares_run_totals() -> None:
    clock = FakeClock()
    m = squares_model(clock)
    feed(m, clock)
    totals = {t.name: t for t in m.all_node_totals()}
    assert totals["worker"].replicas == 10
    assert totals["worker"].msgs_in == 10_000  # the control message is not a record
    assert totals["worker"].msgs_out == 10_000
    assert totals["results"].msgs_out == 0
    assert totals["worker"].exit_codes == [0] * 10
    for e in m.all_edge_totals()[:2]:
        assert e.sent == e.received == 10_000 and e.in_flight == 0
    assert m.progress().fraction == 1.0
    assert m.overall == "completed" and m.exit_code == 0
    assert m.duration == pytest.approx(0.2 + 10 * 0.25 + 0.1)
    # mean rate over the time records moved (2.5 s), not the whole run
    assert totals["worker"].mean_rate == pytest.approx(10_000 / 2.5)


def test_node_state_aggregation() -> None:
    assert node_state(["running"] * 3) == "running"
    assert node_state(["running", "failed"]) == "failed"
    assert node_state(["running", "restarting"]) == "restarting"
    assert node_state(["ready", "running"]) == "running"
    assert node_state(["starting", "ready"]) == "starting"
    assert node_state(["finished", "stopped"]) == "finished"
    assert node_state(["stopped"] * 2) == "stopped"


def test_restart_exit_and_unknown_replicas() -> None:
    m = squares_model()
    m.replica_state("worker", 3, "failed", "exit 1")
    m.replica_exit("worker", 3, 1)
    m.replica_restart("worker", 3)
    m.replica_state("worker", 3, "restarting")
    m.replica_state("worker", 3, "starting")
    t = m.node_totals("worker")
    assert t.restarts == 1 and t.exit_codes[3] is None  # a new attempt clears the old code
    m.replica_state("worker", 12, "running")  # scaled beyond the plan
    assert m.node_totals("worker").replicas == 13
    m.replica_state("late", 0, "running")  # a node the plan did not list
    assert "late" in m.snapshot()["nodes"]


def test_cpu_time_and_peak_memory_add_up_over_restarts() -> None:
    """A sample gives the running process's CPU seconds so far; an exit replaces it with the
    exact figure; a restart's new process adds to it. Peak memory is the largest seen."""
    m = squares_model()
    assert m.replicas["worker"][0].cpu_s is None  # neither sampled nor exited: unknown, not 0
    assert m.node_totals("worker").cpu_s is None and m.node_totals("worker").max_rss is None
    m.replica_proc("worker", 0, 100, 50.0, 30_000_000, 0.4)
    assert m.replicas["worker"][0].cpu_s == pytest.approx(0.4)
    m.replica_usage("worker", 0, 0.5, 32_000_000)  # it exits: exact, not 0.4 + 0.5
    m.replica_exit("worker", 0, 1)
    m.replica_restart("worker", 0)
    m.replica_proc("worker", 0, 101, 10.0, 20_000_000, 0.1)  # its next process, running
    r = m.replicas["worker"][0]
    assert r.cpu_s == pytest.approx(0.6) and r.max_rss == 32_000_000
    m.replica_usage("worker", 0, 0.25, 21_000_000)
    assert r.cpu_s == pytest.approx(0.75) and r.max_rss == 32_000_000
    m.replica_usage("worker", 1, 0.125, 40_000_000)
    t = m.node_totals("worker")
    assert t.cpu_s == pytest.approx(0.875) and t.max_rss == 40_000_000
    snap = m.snapshot()["nodes"]["worker"]
    assert snap["cpu_s"] == 0.875 and snap["max_rss"] == 40_000_000
    assert [x["cpu_s"] for x in snap["replica"][:3]] == [0.75, 0.125, None]
    # an exit that brings no figures (its fork server died first) keeps the last sample's,
    # and the next process's samples add to it: the total never goes down
    m.replica_proc("worker", 2, 102, 10.0, 20_000_000, 0.3)
    m.replica_exit("worker", 2, -9)
    m.replica_restart("worker", 2)
    m.replica_proc("worker", 2, 103, 10.0, 20_000_000, 0.1)
    assert m.replicas["worker"][2].cpu_s == pytest.approx(0.4)
    # a command's exit brings its CPU time but no peak: the samples' stands
    m.replica_usage("worker", 2, 0.2, None)
    assert m.replicas["worker"][2].max_rss == 20_000_000


def test_snapshot_is_json() -> None:
    clock = FakeClock()
    m = squares_model(clock)
    feed(m, clock)
    m.log("worker", 1, "stderr", "warning")
    m.set_result("results", {"obj": object(), "nan": float("nan"), "list": (1, 2)})
    snap = json.loads(json.dumps(m.snapshot()))
    assert snap["nodes"]["worker"]["msgs_in"] == 10_000
    assert len(snap["nodes"]["worker"]["replica"]) == 10
    assert snap["progress"]["fraction"] == 1.0
    assert snap["edges"][0]["received"] == 10_000
    assert snap["logs"][-1]["line"] == "warning"
    assert snap["results"]["results"]["list"] == [1, 2]
    assert "logs" not in m.snapshot(logs=False)


def test_log_tail_is_bounded() -> None:
    m = squares_model()
    for i in range(500):
        m.log("worker", 0, "stdout", str(i))
    assert len(m.logs) == 200 and m.logs[-1].line == "499"


def test_from_plan_flags_control_and_fanout() -> None:
    from types import SimpleNamespace as NS

    def sock(type_: str, role: str = "data", external: bool = False) -> NS:
        return NS(type=type_, role=role, receives=type_ in ("PULL", "SUB"), external=external)

    plan = NS(
        name="squares",
        nodes={
            "ventilator": NS(name="ventilator", replicas=1, shape="source", kind="python",
                             sockets={"work": sock("PUSH")}),
            "worker": NS(name="worker", replicas=10, shape="transform", kind="python",
                         sockets={"work": sock("PULL"), "results": sock("PUSH"),
                                  "control": sock("SUB", "control")}),
            "results": NS(name="results", replicas=1, shape="sink", kind="python",
                          sockets={"answers": sock("PULL"), "control": sock("PUB", "control"),
                                   "tap": sock("PULL", external=True)}),
        },
        edges=[NS(src="ventilator.work", dst="worker.work"),
               NS(src="worker.results", dst="results.answers"),
               NS(src="results.control", dst="worker.control")],
    )
    m = StatusModel.from_plan(plan, clock=FakeClock())
    assert m.topology == "squares" and m.nodes["worker"].replicas == 10
    assert [(e.control, e.src_type) for e in m.edges] == [
        (False, "PUSH"), (False, "PUSH"), (True, "PUB")]
    assert m.control_sockets("worker") == {"control"}
    assert m.sinks == ["results"]
    # what outside programs send to a concrete endpoint is data too (progress counts it)
    assert m.nodes["results"].outside_in == ("tap",) and m.nodes["worker"].outside_in == ()


def test_a_command_node_is_unknown_not_zero() -> None:
    """zflow cannot count what a command node moves: its totals and its side of an edge are
    None (shown as "-"), not 0."""
    m = StatusModel("t", [NodeInfo("src", 1, "source", "python"),
                          NodeInfo("cmd", 1, "transform", "command"),
                          NodeInfo("snk", 1, "sink", "python")],
                    [EdgeInfo("src.out", "cmd.inp", src_type="PUSH"),
                     EdgeInfo("cmd.out", "snk.inp", src_type="PUSH")])
    m.replica_counters("src", 0, {"out": (0, 10, 0, 100)})
    m.replica_counters("snk", 0, {"inp": (10, 0, 100, 0)})
    t = m.node_totals("cmd")
    assert (t.msgs_in, t.msgs_out, t.rate) == (None, None, None)
    assert m.node_totals("src").msgs_out == 10
    first, second = m.all_edge_totals()
    assert (first.sent, first.received, first.in_flight) == (10, None, None)
    assert (second.sent, second.received, second.in_flight) == (None, 10, None)
    assert m.snapshot()["nodes"]["cmd"]["rate"] is None
