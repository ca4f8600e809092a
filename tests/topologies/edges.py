"""Node code for test_runtime_edges.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import zflow


def words(n: int = 100) -> list[str]:
    return [("apple" if i % 2 else "banana") + str(i) for i in range(n)]


def ints(n: int = 100) -> range:
    return range(n)


class Count:
    def __init__(self) -> None:
        self.n = 0
        self.items: list = []

    def __call__(self, rec: object) -> None:
        self.n += 1
        self.items.append(rec)

    def end(self, totals: zflow.Totals) -> dict:
        first = self.items[0] if self.items else None
        if isinstance(first, bytes):
            first = first.decode(errors="replace")
        return {"n": self.n, "first": first}


def custom_sender(ctx: zflow.NodeContext) -> None:
    for i in range(int(ctx.params.get("n", 100))):
        ctx.send("out", i)


def fail_at_end() -> None:
    """A command-node sink: read until the end marker, then exit 3."""
    import os

    import zmq

    c = zmq.Context()
    s = c.socket(zmq.PULL)
    for ep in os.environ["ZFLOW_SOCKET_INBOX_ENDPOINTS"].split():
        s.bind(ep) if os.environ["ZFLOW_SOCKET_INBOX_MODE"] == "bind" else s.connect(ep)
    while s.recv():
        pass
    print("sink saw the end marker and fails", file=sys.stderr, flush=True)
    sys.exit(3)


if __name__ == "__main__":
    fail_at_end()


def fail_every_tenth(x: int) -> int:
    """Raises on one record in ten (7, 17, 27, …): the issue's 'transform that raises'."""
    if x % 10 == 7:
        raise ValueError(f"cannot take {x}")
    return x


class Tally:
    """A sink that says in its result whether the run was interrupted (Totals.interrupted)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, x: object) -> None:
        self.n += 1

    def end(self, totals: zflow.Totals) -> dict:
        return {"n": self.n, "received": totals.received, "interrupted": totals.interrupted}


class HangAtEnd(Tally):
    """A sink whose end() never returns (the watchdog's case)."""

    def end(self, totals: zflow.Totals) -> dict:
        import time

        while True:
            time.sleep(0.1)


def client_with_params(ctx: zflow.NodeContext, n: int = 100, word: str = "x") -> dict:
    """A custom node that takes its params as keyword arguments, like the other shapes."""
    for i in range(n):
        ctx.send("out", f"{word}{i}")
    return {"sent": n, "word": word}


def dict_records(n: int = 5) -> list[dict]:
    return [{"i": i} for i in range(n)]


def ten_requests(ctx: zflow.NodeContext, n: int = 10) -> dict:
    """A client that makes its requests and is done."""
    total = sum(ctx.request("api", {"n": i})["square"] for i in range(n))
    return {"requests": n, "sum": total}


def tag_worker(x: int) -> dict:
    return {"worker": zflow.context().replica, "n": x}


class PerWorker:
    """Counts records per worker replica."""

    def __init__(self) -> None:
        self.per: dict[int, int] = {}

    def __call__(self, rec: dict) -> None:
        self.per[rec["worker"]] = self.per.get(rec["worker"], 0) + 1

    def end(self, totals: zflow.Totals) -> dict:
        return {"n": sum(self.per.values()), "workers": len(self.per),
                "fewest": min(self.per.values(), default=0)}


class CountEmpty:
    """Counts records, and how many of them are empty (raw bytes)."""

    def __init__(self) -> None:
        self.n = 0
        self.empty = 0

    def __call__(self, rec: bytes) -> None:
        self.n += 1
        self.empty += rec == b""

    def end(self, totals: zflow.Totals) -> dict:
        return {"n": self.n, "empty": self.empty}


def gen_ints(n: int = 5000) -> Iterator[int]:
    """A source without a length (a generator): zflow cannot size its frames up front."""
    yield from range(n)
