"""Node code for squares.yaml: plain functions, no sockets, no counts shared between nodes."""

from __future__ import annotations

from collections.abc import Iterable

import zflow


def numbers(count: int = 10000) -> Iterable[int]:
    """Source: the numbers to square. zflow knows len(range) and shows progress against it."""
    return range(count)


def square(num: int) -> dict:
    """Transform: called once per number on whichever worker replica received it."""
    return {"worker": zflow.context().replica, "result": num * num}


class ResultsManager:
    """Sink: adds the answers up; zflow calls end() once every answer sent has arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.workers: set[int] = set()
        self.verbose = zflow.context().verbose

    def __call__(self, answer: dict) -> None:
        self.count += 1
        self.total += answer["result"]
        self.workers.add(answer["worker"])
        if self.verbose:
            print(f"Worker {answer['worker']} answered: {answer['result']}")

    def end(self, totals: zflow.Totals) -> dict:
        print(
            f"{self.count} answers from {len(self.workers)} workers "
            f"(zflow counted {totals.received} sent to us), sum of squares {self.total}"
        )
        return {"answers": self.count, "workers": len(self.workers), "sum": self.total}
