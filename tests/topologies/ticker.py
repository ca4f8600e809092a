"""Node code for tests/topologies/ticker.yaml: a source that never ends by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator

import zflow


def tick(n: int = 200, every: float = 0.002, say: int = 50) -> Iterator[int]:
    """`n` records, one every `every` seconds (slow: one record per frame), printing a line each
    `say` records; then nothing more until zflow asks it to stop (n=0: records forever)."""
    ctx = zflow.context()
    i = 0
    while n == 0 or i < n:
        if ctx.stopping():
            return
        yield i
        i += 1
        if i % say == 0:
            print(f"tick {i}", flush=True)
        time.sleep(every)
    print(f"sent all {n}; idle until stopped", flush=True)
    while not ctx.stopping():
        time.sleep(0.02)


def double(x: int) -> int:
    return 2 * x


class Total:
    def __init__(self) -> None:
        self.n = 0
        self.sum = 0

    def __call__(self, x: int) -> None:
        self.n += 1
        self.sum += x
        if self.n % 100 == 0:
            print(f"total after {self.n}: {self.sum}", flush=True)

    def end(self, totals: zflow.Totals) -> dict:
        return {"n": self.n, "sum": self.sum, "interrupted": totals.interrupted}
