"""A squares-shaped model driven by a fake clock: for tests, render timing and eyeballing views.

``python -m zflow.status.demo [live|plain|json|quiet]`` plays a 3-second run through a view;
``python -m zflow.status.demo bench`` times one render of the live screen.
"""

from __future__ import annotations

import sys
import time

from zflow.status.model import EdgeInfo, NodeInfo, StatusModel


class FakeClock:
    """A clock the test moves by hand, so rates, ETAs and throttles are exact."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def squares_model(clock: FakeClock | None = None, workers: int = 10) -> StatusModel:
    """ventilator (1) → worker (N) → results (1), results.control PUB → worker.control."""
    clock = clock or FakeClock()
    nodes = [
        NodeInfo("ventilator", 1, "source", "python"),
        NodeInfo("worker", workers, "transform", "python"),
        NodeInfo("results", 1, "sink", "python"),
    ]
    edges = [
        EdgeInfo("ventilator.work", "worker.work", src_type="PUSH"),
        EdgeInfo("worker.results", "results.answers", src_type="PUSH"),
        EdgeInfo("results.control", "worker.control", control=True, src_type="PUB"),
    ]
    return StatusModel("squares", nodes, edges, clock=clock)


def feed(model: StatusModel, clock: FakeClock, total: int = 10_000, steps: int = 10,
         dt: float = 0.25, workers: int = 10) -> None:
    """Play a whole run: start, barrier, `steps` counter reports of `total/steps` records, end."""
    model.set_total(total, "ventilator")
    for node, n in (("ventilator", 1), ("worker", workers), ("results", 1)):
        for i in range(n):
            model.replica_state(node, i, "starting")
            model.replica_proc(node, i, 1000 + i, 0.0, 20_000_000)
    clock.advance(0.2)
    for node, n in (("ventilator", 1), ("worker", workers), ("results", 1)):
        for i in range(n):
            model.replica_state(node, i, "running")
    model.set_overall("running")
    for step in range(1, steps + 1):
        clock.advance(dt)
        sent = total * step // steps
        model.replica_counters("ventilator", 0, {"work": (0, sent, 0, sent * 8)})
        for i in range(workers):
            share = sent // workers + (1 if i < sent % workers else 0)
            model.replica_counters("worker", i, {"work": (share, 0, share * 8, 0),
                                                 "results": (0, share, 0, share * 8),
                                                 "control": (0, 0, 0, 0)})
            model.replica_proc("worker", i, 1000 + i, 50.0, 25_000_000)
        model.replica_counters("results", 0, {"answers": (sent, 0, sent * 8, 0),
                                              "control": (0, 0, 0, 0)})
    model.set_overall("draining")
    model.replica_counters("results", 0, {"answers": (total, 0, total * 8, 0),
                                          "control": (0, 1, 0, 8)})
    for i in range(workers):
        share = total // workers + (1 if i < total % workers else 0)
        model.replica_counters("worker", i, {"work": (share, 0, share * 8, 0),
                                             "results": (0, share, 0, share * 8),
                                             "control": (1, 0, 8, 0)})
    model.set_result("results", {"answers": total, "total": sum(x * x for x in range(total))})
    clock.advance(0.1)
    for node, n in (("ventilator", 1), ("worker", workers), ("results", 1)):
        for i in range(n):
            model.replica_state(node, i, "stopped")
            model.replica_exit(node, i, 0)
    model.finish("completed", 0)


def bench(n: int = 200) -> float:
    """Mean seconds for one build + render of the live screen (3 nodes, 12 replicas, 120 cols)."""
    import io

    from rich.console import Console

    from zflow.status.render import render_status

    clock = FakeClock()
    model = squares_model(clock)
    model.set_total(10_000, "ventilator")
    for i in range(10):
        model.replica_counters("worker", i, {"work": (500, 0, 0, 0), "results": (0, 499, 0, 0)})
        model.replica_proc("worker", i, 1, 40.0, 30_000_000)
    for i in range(20):
        model.log("worker", i % 10, "stdout", f"Worker {i % 10} answered: {i * i}")
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system="truecolor")
    start = time.perf_counter()
    for _ in range(n):
        clock.advance(0.2)
        console.print(render_status(model))
    return (time.perf_counter() - start) / n


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "live"
    if mode == "bench":
        print(f"one live render: {bench() * 1000:.2f} ms")
        return 0
    from zflow.status.views import make_view

    clock = FakeClock()
    model = squares_model(clock)
    view = make_view(mode, model, sys.stdout)
    view.start()
    total, steps = 10_000, 12
    model.set_total(total, "ventilator")
    for i in range(10):
        model.replica_state("worker", i, "running")
        view.event("state", node="worker", replica=i, state="running", detail=None)
    for step in range(1, steps + 1):
        time.sleep(0.25)
        clock.advance(0.25)
        sent = total * step // steps
        model.replica_counters("ventilator", 0, {"work": (0, sent, 0, 0)})
        for i in range(10):
            model.replica_counters("worker", i, {"work": (sent // 10, 0, 0, 0),
                                                 "results": (0, sent // 10 - 3, 0, 0)})
        model.replica_counters("results", 0, {"answers": (sent - 30, 0, 0, 0)})
        model.log("worker", step % 10, "stdout", f"Worker {step % 10} answered: {step * step}")
        view.log("worker", step % 10, "stdout", f"Worker {step % 10} answered: {step * step}")
        view.refresh()
    model.replica_counters("results", 0, {"answers": (total, 0, 0, 0)})
    for node, n in (("ventilator", 1), ("worker", 10), ("results", 1)):
        for i in range(n):
            model.replica_state(node, i, "stopped")
            model.replica_exit(node, i, 0)
    model.set_result("results", {"total": 333283335000})
    model.finish("completed", 0)
    view.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
