"""Baseline 4, the practical limit: the same pipeline with records packed BATCH per frame
(msgpack), the worker still calling a Python function once per record."""

from __future__ import annotations

from typing import Any

import msgpack

from benchmarks.baselines.common import FINISHED, run_main, zmq_pipeline

BATCH = 1000


def square(num: int) -> int:
    """The user's function: one Python call per record."""
    return num * num


def ventilate(push: Any, n: int) -> None:
    packb = msgpack.packb
    for start in range(0, n, BATCH):
        push.send(packb(list(range(start, min(start + BATCH, n)))))


def work(pull: Any, push: Any, sub: Any, wid: int) -> int:
    return work_loop(pull, push, sub, square)


def work_loop(pull: Any, push: Any, sub: Any, fn: Any) -> int:
    """Square each frame's records with `fn` until FINISHED; shared by batched_dict."""
    import zmq

    packb, unpackb = msgpack.packb, msgpack.unpackb
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(sub, zmq.POLLIN)
    count = 0
    while True:
        socks = dict(poller.poll())  # once per frame, i.e. per BATCH records
        if socks.get(pull) == zmq.POLLIN:
            out = [fn(x) for x in unpackb(pull.recv())]
            push.send(packb(out))
            count += len(out)
        if socks.get(sub) == zmq.POLLIN and sub.recv() == FINISHED:
            return count


def collect(pull: Any, n: int) -> tuple[int, int]:
    unpackb = msgpack.unpackb
    count = total = 0
    while count < n:
        answers = unpackb(pull.recv())
        count += len(answers)
        total += sum(answers)
    return count, total


def pipeline(records: int, workers: int, transport: str, timeout: float) -> dict:
    return zmq_pipeline(records, workers, transport, timeout, ventilate, work, collect)


if __name__ == "__main__":
    run_main("batched", pipeline)
