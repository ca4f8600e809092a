"""Node code for the runtime corpus: small, correct callables and a few deliberately wrong ones."""

from __future__ import annotations

from collections.abc import Iterator


def count(n: int = 20) -> range:
    return range(n)


def identity(x: object) -> object:
    return x


class Sum:
    def __init__(self) -> None:
        self.total = 0

    def __call__(self, x: int) -> None:
        self.total += x

    def end(self, totals: object) -> dict:
        return {"sum": self.total}


def forever() -> Iterator[int]:
    i = 0
    while True:
        yield i
        i += 1


#: `run: corpus_nodes:not_callable` names this: a module attribute that cannot be called
not_callable = {"answer": 42}
