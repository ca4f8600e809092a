"""Idle latency of the hand-written pyzmq pipelines: one record at a time through an idle pipeline.

`python -m benchmarks.latency --variant seed|batched --workers W --samples K` prints one JSON line.
One process holds the ventilator PUSH and the sink PULL (so one clock stamps both ends); W forked
workers run the variant's own worker loop. Same barrier as the throughput runs. Each sample: stamp,
send one record (seed: one JSON message; batched: a frame holding that single record, i.e. what a
count-and-time-bounded batcher sends when the pipe is idle), block until its answer arrives, stamp.
Between samples the pipeline idles for `--gap-ms` so the workers are asleep in poll when the next
record comes, as on a quiet production pipe.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from typing import Any

import msgpack

from benchmarks.baselines import batched, seed
from benchmarks.baselines.common import (
    FINISHED,
    Tree,
    _worker,
    bind,
    wait_handshakes,
    wait_subscriptions,
)
from benchmarks.topologies.zlatency import percentile

VARIANTS = {
    "seed": (seed.work,
             lambda s, i: s.send_json({"num": i}),
             lambda s: s.recv_json()["result"]),
    "batched": (batched.work,
                lambda s, i: s.send(msgpack.packb([i])),
                lambda s: msgpack.unpackb(s.recv())[0]),
}


def _late_worker(conn: Any, wid: int, work: Any) -> dict:
    return _worker(conn, wid, conn.recv(), work)


def measure(variant: str, workers: int, samples: int, warmup: int, gap_ms: float,
            transport: str, timeout: float) -> dict[str, Any]:
    import zmq

    work, send_one, recv_one = VARIANTS[variant]
    rundir = tempfile.mkdtemp(prefix="zflow-bench-")
    tree = Tree(timeout)
    ctx = None
    try:
        # Fork first (a zmq context must not cross a fork), bind after, and hand the workers the
        # endpoints through their pipes.
        conns = [tree.start(f"worker.{i}", _late_worker, i, work) for i in range(workers)]
        ctx_eps: dict[str, str] = {}
        ctx = zmq.Context()
        push, pull, xpub = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL), ctx.socket(zmq.XPUB)
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        ctx_eps["work"] = bind(push, transport, rundir, "work")
        ctx_eps["results"] = bind(pull, transport, rundir, "results")
        ctx_eps["control"] = bind(xpub, transport, rundir, "control")
        monitor = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        for c in conns:
            c.send(ctx_eps)
        tmo = int(timeout * 1000)
        wait_handshakes(monitor, workers, tmo)
        wait_subscriptions(xpub, workers, tmo)
        push.disable_monitor()
        monitor.close(0)
        lat_us = []
        for i in range(warmup + samples):
            time.sleep(gap_ms / 1000)  # idle between records: pacing, not synchronisation
            t0 = time.perf_counter_ns()
            send_one(push, i)
            got = recv_one(pull)
            dt = (time.perf_counter_ns() - t0) / 1000
            if got != i * i:
                raise RuntimeError(f"record {i}: got {got}")
            if i >= warmup:
                lat_us.append(dt)
        xpub.send(FINISHED)
        for c in conns:
            tree.expect(c, "done")
    finally:
        tree.close()
        if ctx is not None:
            ctx.destroy(linger=0)
        shutil.rmtree(rundir, ignore_errors=True)
    s = sorted(lat_us)
    return {"variant": variant, "workers": workers, "samples": len(s),
            "p50_us": percentile(s, 50), "p99_us": percentile(s, 99), "max_us": s[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.latency")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="seed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--gap-ms", type=float, default=2.0)
    ap.add_argument("--transport", choices=["ipc", "tcp"], default="ipc")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    try:
        out = measure(a.variant, a.workers, a.samples, a.warmup, a.gap_ms, a.transport, a.timeout)
        out["error"] = None
    except Exception as e:  # noqa: BLE001 - reported, not raised
        out = {"variant": a.variant, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
    return 0 if out["error"] is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
