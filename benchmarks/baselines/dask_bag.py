"""Peer 2: a Dask bag on the processes scheduler (issue 16; `pip install '.[bench]'`).
`db.from_sequence(range(N), npartitions=100)` `.map(work)` squares each number into
`{"worker", "result"}` in W worker processes (`compute(scheduler="processes", num_workers=W)`,
Dask's default spawn context) and `.reduction(...)` sums them the way Dask sums: one Python step per
answer inside each partition's task, then the partial sums combined in the launcher. (Shipping all
1M answer dicts back to the launcher to sum them in one place took 14 s at 2 workers here.)
Start-up ends when the bag is built (imports included); the worker processes start inside
`compute`, so their start is part of the stream."""

from __future__ import annotations

import os
import resource
import time
from collections import Counter

from benchmarks.baselines.common import peak_rss_kb, report, run_main

#: Dask's docs advise ~100 partitions; its default here (partition_size 100 -> 10,000 partitions at
#: 1M records) spends ~10 s in task overhead at 2 workers.
PARTITIONS = 100


def work(num: int) -> dict:
    return {"worker": os.getpid(), "result": num * num}


def _partial(answers: object) -> tuple[int, Counter]:
    total = 0
    per: Counter = Counter()
    for answer in answers:  # type: ignore[attr-defined]
        total += answer["result"]
        per[answer["worker"]] += 1
    return total, per


def _combine(parts: object) -> tuple[int, Counter]:
    total = 0
    per: Counter = Counter()
    for t, c in parts:  # type: ignore[attr-defined]
        total += t
        per.update(c)
    return total, per


def pipeline(records: int, workers: int, transport: str, timeout: float) -> dict:
    t_launch = time.monotonic()
    import dask.bag as db

    bag = db.from_sequence(range(records), npartitions=PARTITIONS).map(work)
    bag = bag.reduction(_partial, _combine)
    t_go = time.monotonic()
    total, per = bag.compute(scheduler="processes", num_workers=workers)
    t_done = time.monotonic()
    # the pool is gone by now: the largest child's peak RSS stands for every worker
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    s = {"count": sum(per.values()), "sum": total, "t_done": t_done, "rss_kb": 0}
    v = {"t_sent": t_done, "rss_kb": 0}
    w = [{"count": c, "rss_kb": child_kb} for c in per.values()]
    out = report(s, v, w, t_launch, t_go)
    out["rss_kb"]["launcher"] = peak_rss_kb()
    _stop_resource_tracker()
    return out


def _stop_resource_tracker() -> None:
    """The spawn context started multiprocessing's resource tracker; it exits only once it reads
    EOF after the launcher is gone, so the harness would see it as a process left behind. Close its
    pipe and reap it now (Python 3.11 has no public way to stop it)."""
    from multiprocessing import resource_tracker

    rt = resource_tracker._resource_tracker  # noqa: SLF001
    fd, pid = getattr(rt, "_fd", None), getattr(rt, "_pid", None)
    if fd is None or pid is None:
        return
    os.close(fd)
    rt._fd = rt._pid = None  # noqa: SLF001
    os.waitpid(pid, 0)


if __name__ == "__main__":
    run_main("dask", pipeline)
