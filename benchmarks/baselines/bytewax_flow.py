"""Peer 3: Bytewax (issue 16; `pip install '.[bench]'`), one process per worker as its docs run a
local cluster: `python -m bytewax.testing benchmarks.baselines.bytewax_flow:get_flow(N) -p W`.
The dataflow: `TestingSource(range(N), batch_size=1000)` -> `redistribute` (spread over every
worker) -> `map` square into `{"worker", "result"}` -> `key_on` one key -> `fold_final` (the one
sink: one Python step per answer) -> the sum and per-worker counts as a JSON line on stdout.
The launcher starts that command and reads the line; Bytewax has no readiness hook, so start-up is
not split from the stream (t_go = t_launch: the stream time is the whole command)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from benchmarks.baselines.common import peak_rss_kb, report, run_main


def work(num: int) -> dict:
    return {"worker": os.getpid(), "result": num * num}


def _fold(acc: list, answer: dict) -> list:
    acc[0] += answer["result"]
    acc[1][answer["worker"]] = acc[1].get(answer["worker"], 0) + 1
    return acc


def _line(kv: tuple[str, list]) -> str:
    return json.dumps({"sum": kv[1][0], "per_worker": kv[1][1], "t_done": time.monotonic()})


def get_flow(records: int) -> Any:
    import bytewax.operators as op
    from bytewax.connectors.stdio import StdOutSink
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource

    flow = Dataflow("squares")
    nums = op.input("numbers", flow, TestingSource(range(records), batch_size=1000))
    nums = op.redistribute("spread", nums)
    answers = op.map("square", nums, work)
    keyed = op.key_on("one_sink", answers, lambda _: "all")
    total = op.fold_final("sum", keyed, lambda: [0, {}], _fold)
    op.output("out", op.map("json", total, _line), StdOutSink())
    return flow


def pipeline(records: int, workers: int, transport: str, timeout: float) -> dict:
    t_launch = time.monotonic()
    argv = [sys.executable, "-m", "bytewax.testing",
            f"benchmarks.baselines.bytewax_flow:get_flow({records})", "-p", str(workers)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bytewax exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if not lines:
        # 0 records: fold_final emits nothing
        got: dict[str, Any] = {"sum": 0, "per_worker": {}, "t_done": time.monotonic()}
    else:
        got = json.loads(lines[-1])
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    per = list(got["per_worker"].values())
    s = {"count": sum(per), "sum": got["sum"], "t_done": got["t_done"], "rss_kb": 0}
    v = {"t_sent": got["t_done"], "rss_kb": 0}
    w = [{"count": c, "rss_kb": child_kb} for c in per] or [{"count": 0, "rss_kb": child_kb}]
    out = report(s, v, w, t_launch, t_launch)
    out["rss_kb"]["launcher"] = peak_rss_kb()
    out["per_worker"] = per
    return out


if __name__ == "__main__":
    run_main("bytewax", pipeline)
