"""Node code for the runtime tests: sources that never end, functions that fail on purpose."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import zflow


def forever(**_: object) -> Iterator[int]:
    i = 0
    while True:
        yield i
        i += 1


def count(n: int = 100) -> range:
    return range(n)


def identity(x: object) -> object:
    return x


def boom(x: int) -> int:
    if x == 7:
        raise ValueError(f"cannot take {x}")
    return x


def crash_at_start(n: int = 10) -> range:
    print("about to fail at start", file=sys.stderr)
    raise SystemExit(4)


def crash_once(x: int) -> int:
    """Exits the process hard on the first record the first time; the restart then succeeds."""
    marker = zflow.context().params["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        print("crashing once", file=sys.stderr, flush=True)
        os._exit(9)
    return x


class Sum:
    def __init__(self) -> None:
        self.n = 0
        self.total = 0

    def __call__(self, x: int) -> None:
        self.n += 1
        self.total += x

    def end(self, totals: zflow.Totals) -> dict:
        return {"n": self.n, "sum": self.total, "expected": totals.expected}


raise_at_import = None
if os.environ.get("FAULTY_RAISE_AT_IMPORT"):
    raise RuntimeError("configured to fail at import")


_delay: float | None = None


def slow_square(num: int) -> dict:
    """squares' worker with a busy delay per record, so a chaos test can kill it mid-stream."""
    global _delay
    if _delay is None:
        _delay = float(zflow.context().params.get("delay_us", 20)) / 1e6
    end = time.perf_counter() + _delay
    while time.perf_counter() < end:
        pass
    return {"worker": zflow.context().replica, "result": num * num}


class BigResult(Sum):
    """A sink whose end() result does not fit msgpack's 64-bit integers."""

    def end(self, totals: zflow.Totals) -> dict:
        return {"n": self.n, "big": 2**70 + self.total}


def to_set(x: int) -> set:
    return {x}


def jpegs(n: int = 50) -> list[bytes]:
    """Raw records that start with 0xFF, like JPEG data: data, not zflow control frames."""
    return [b"\xff\xd8\xff\xe0" + i.to_bytes(2, "big") for i in range(n)]


def int_keys(x: int) -> object:
    """msgpack packs int map keys but refuses to unpack them: the frame with record 5 is
    undecodable at the receiver."""
    return {42: x} if x == 5 else x
