"""Baseline 5, the like-for-like limit for topologies/squares.yaml: hand-batched pyzmq (1000 records
per msgpack frame, as `batched`), doing the squares topology's per-record work: the worker calls
`square(num) -> {"worker": id, "result": num * num}` once per record and the sink calls a
ResultsManager object once per answer (count, sum, set of workers) — the same Python calls per
record that zflow makes on topologies/squares.py, with no framework around them."""

from __future__ import annotations

from typing import Any

import msgpack

from benchmarks.baselines.batched import ventilate, work_loop
from benchmarks.baselines.common import run_main, zmq_pipeline

BATCH = 1000


class ResultsManager:
    """The sink of topologies/squares.py, without zflow: one call per answer."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.workers: set[int] = set()

    def __call__(self, answer: dict) -> None:
        self.count += 1
        self.total += answer["result"]
        self.workers.add(answer["worker"])


def work(pull: Any, push: Any, sub: Any, wid: int) -> int:

    def square(num: int) -> dict:  # the user's function: one Python call per record
        return {"worker": wid, "result": num * num}

    return work_loop(pull, push, sub, square)


def collect(pull: Any, n: int) -> tuple[int, int]:
    unpackb = msgpack.unpackb
    rm = ResultsManager()
    while rm.count < n:
        for answer in unpackb(pull.recv()):
            rm(answer)
    return rm.count, rm.total


def pipeline(records: int, workers: int, transport: str, timeout: float) -> dict:
    return zmq_pipeline(records, workers, transport, timeout, ventilate, work, collect)


if __name__ == "__main__":
    run_main("batched_dict", pipeline)
