"""Baseline 2: the seed's design written properly: one JSON message per record, a poller in every
worker (work + control, as in the seed), FINISHED published by the sink once it has counted every
answer; no sleeps (the readiness barrier of `common.zmq_pipeline` replaces them)."""

from __future__ import annotations

from typing import Any

from benchmarks.baselines.common import FINISHED, run_main, zmq_pipeline


def ventilate(push: Any, n: int) -> None:
    for num in range(n):
        push.send_json({"num": num})


def work(pull: Any, push: Any, sub: Any, wid: int) -> int:
    import zmq

    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(sub, zmq.POLLIN)
    count = 0
    while True:
        socks = dict(poller.poll())
        if socks.get(pull) == zmq.POLLIN:
            msg = pull.recv_json()
            push.send_json({"worker": wid, "result": msg["num"] * msg["num"]})
            count += 1
        if socks.get(sub) == zmq.POLLIN and sub.recv() == FINISHED:
            return count


def collect(pull: Any, n: int) -> tuple[int, int]:
    total = 0
    for _ in range(n):
        total += pull.recv_json()["result"]
    return n, total


def pipeline(records: int, workers: int, transport: str, timeout: float) -> dict:
    return zmq_pipeline(records, workers, transport, timeout, ventilate, work, collect)


if __name__ == "__main__":
    run_main("seed", pipeline)
