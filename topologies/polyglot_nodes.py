"""Node code for polyglot.yaml (the middle node is upper.py, a plain pyzmq program)."""

from __future__ import annotations

from collections.abc import Iterator

import zflow


def words(count: int = 500) -> Iterator[dict]:
    for i in range(count):
        yield {"i": i, "word": f"word{i}"}


class Collect:
    def __init__(self) -> None:
        self.ok = 0

    def __call__(self, rec: dict) -> None:
        if rec["word"] == f"WORD{rec['i']}" and rec["by"].startswith("upper."):
            self.ok += 1

    def end(self, totals: zflow.Totals) -> dict:
        return {"received": totals.received, "uppercased": self.ok}
