"""Node code for latency.yaml (run by zflow, cwd = this directory)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator


def paced(count: int = 300, gap_ms: float = 2.0) -> Iterator[dict]:
    """Source: `count` records, `gap_ms` apart, each stamped when it is handed to zflow."""
    for i in range(count):
        if i:
            time.sleep(gap_ms / 1000)  # pacing of the input, not synchronisation
        yield {"i": i, "t": time.perf_counter_ns()}


def passthrough(record: dict) -> dict:
    return record


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


class Latency:
    """Sink: source-to-sink latency of every record after `warmup`; p50/p99 at the end."""

    def __init__(self, warmup: int = 20) -> None:
        self.warmup = warmup
        self.samples: list[float] = []

    def __call__(self, record: dict) -> None:
        us = (time.perf_counter_ns() - record["t"]) / 1000
        if record["i"] >= self.warmup:
            self.samples.append(us)

    def end(self, totals: object) -> dict:
        s = sorted(self.samples)
        out = {"latency": {"p50_us": percentile(s, 50), "p99_us": percentile(s, 99),
                           "samples": len(s)}}
        print(json.dumps(out), flush=True)
        return out
