"""Peer 1: `multiprocessing.Pool` with `imap_unordered(chunksize=1000)` — what a Python user writes
for the squares job without any framework (issue 16). The pool's workers square each number and
return `{"worker", "result"}` (squares.py's answer); the launcher is the one sink, one Python step
per answer. Fork context (the Linux default on Python 3.11). Start-up ends when `Pool(W)` returned
(every worker forked); the stream is the `imap_unordered` loop."""

from __future__ import annotations

import os
import time
from collections import Counter

from benchmarks.baselines.common import MP, peak_rss_kb, report, run_main

_PID = 0


def _init() -> None:
    global _PID
    _PID = os.getpid()


def work(num: int) -> dict:
    return {"worker": _PID, "result": num * num}


def pipeline(records: int, workers: int, transport: str, timeout: float) -> dict:
    t_launch = time.monotonic()
    pool = MP.Pool(workers, initializer=_init)
    try:
        t_go = time.monotonic()
        total = 0
        per: Counter = Counter()
        for answer in pool.imap_unordered(work, range(records), chunksize=1000):
            total += answer["result"]
            per[answer["worker"]] += 1
        t_done = time.monotonic()
        rss = [peak_rss_kb(p.pid) for p in pool._pool]  # noqa: SLF001 - still alive here
        pids = [p.pid for p in pool._pool]  # noqa: SLF001
    finally:
        pool.terminate()
        pool.join()
    s = {"count": sum(per.values()), "sum": total, "t_done": t_done, "rss_kb": 0}
    v = {"t_sent": t_done, "rss_kb": 0}  # the launcher is source and sink (its RSS: launcher)
    w = [{"count": per.get(pid, 0), "rss_kb": kb} for pid, kb in zip(pids, rss, strict=True)]
    out = report(s, v, w, t_launch, t_go)
    out["per_worker"] = [per.get(pid, 0) for pid in pids] + [
        c for pid, c in per.items() if pid not in pids]  # a replaced worker's share (none expected)
    return out


if __name__ == "__main__":
    run_main("pool", pipeline)
