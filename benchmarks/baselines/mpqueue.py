"""Baseline 3: multiprocessing.Queue workers (the seed's "before ZeroMQ"): ventilator -> task
queue -> workers -> result queue -> sink. End of stream: one None per worker (each worker takes
exactly one and stops); the sink knows the count. Same barrier idea: every child reports ready
over its pipe before the ventilator is told to go."""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.baselines.common import MP, Tree, report, run_main


def _ventilator(conn: Connection, tasks: Any, n: int, workers: int) -> dict:
    conn.send(("ready", {}))
    if conn.recv() != "go":
        raise RuntimeError("expected go")
    for num in range(n):
        tasks.put(num)
    for _ in range(workers):
        tasks.put(None)
    t_sent = time.monotonic()
    tasks.close()
    tasks.join_thread()  # the feeder thread has handed everything to the pipe
    return {"t_sent": t_sent}


def _worker(conn: Connection, tasks: Any, results: Any) -> dict:
    conn.send(("ready", {}))
    count = 0
    get, put = tasks.get, results.put
    while (num := get()) is not None:
        put(num * num)
        count += 1
    results.close()
    results.join_thread()
    return {"count": count}


def _sink(conn: Connection, results: Any, n: int) -> dict:
    conn.send(("ready", {}))
    total = 0
    get = results.get
    for _ in range(n):
        total += get()
    return {"count": n, "sum": total, "t_done": time.monotonic()}


def pipeline(records: int, workers: int, transport: str, timeout: float) -> dict:
    t_launch = time.monotonic()
    tasks, results = MP.Queue(), MP.Queue()
    tree = Tree(timeout)
    try:
        sink = tree.start("sink", _sink, results, records)
        conns = [tree.start(f"worker.{i}", _worker, tasks, results) for i in range(workers)]
        vent = tree.start("ventilator", _ventilator, tasks, records, workers)
        for c in [sink, vent, *conns]:
            tree.expect(c, "ready")
        t_go = time.monotonic()
        vent.send("go")
        s = tree.expect(sink, "done")
        v = tree.expect(vent, "done")
        w = [tree.expect(c, "done") for c in conns]
    finally:
        tree.close()
    return report(s, v, w, t_launch, t_go)


if __name__ == "__main__":
    run_main("mpqueue", pipeline)
