"""Node code for soak.yaml (run by zflow, cwd = this directory): squares without an end."""

from __future__ import annotations

from collections.abc import Iterator

import zflow


def numbers_forever() -> Iterator[int]:
    """Source: 0, 1, 2, ... at full speed; wraps at 2**20 so records keep one size forever."""
    i = 0
    while True:
        yield i
        i = (i + 1) & 0xFFFFF


def square(num: int) -> dict:
    return {"worker": zflow.context().replica, "result": num * num}


class Tally:
    """Sink: counts answers and which workers sent them (bounded state, like squares')."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.workers: set[int] = set()

    def __call__(self, answer: dict) -> None:
        self.count += 1
        self.total += answer["result"]
        self.workers.add(answer["worker"])
