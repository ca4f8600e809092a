"""Node code for the reliability tests (issue 6): poison records, a source that waits for a go."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator


def poison(x: int) -> int:
    """Fails on every multiple of 10 (0, 10, 20, ...); passes the rest through."""
    if x % 10 == 0:
        raise ValueError(f"poison record {x}")
    return x


def after_marker(marker: str, n: int = 100, timeout: float = 20.0) -> Iterator[int]:
    """Yields 0..n-1 once the test has created `marker` (it sends its own frames first)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} never appeared")
        time.sleep(0.01)
    yield from range(n)


def forever() -> Iterator[int]:
    i = 0
    while True:
        yield i
        i += 1
