"""What the baselines share: forked children with a pipe each, a readiness barrier, peak RSS, and
the launcher that prints one JSON line for the harness.

Protocol between the launcher (the process the harness starts) and each forked child, over one
`multiprocessing.Pipe` per child: the child sends `("bound", endpoints)` when it binds, `("ready",
info)` when its side of the barrier holds, and `("done", info)` (with its peak RSS) before it exits,
or `("error", traceback)`. The launcher sends `"go"` to the sink and the ventilator once both are
ready; the ventilator reports `("sent", ...)` and stays connected until the launcher sends `"stop"`
(after the sink has every answer): a PUSH peer that exits early loses records still in socket
buffers.
No sleeps anywhere: the barrier is

- the ventilator's PUSH has completed the ZMTP handshake with every worker (socket monitor), and
- the sink's control XPUB has seen every worker's subscription (XPUB_VERBOSE),

so no record is sent before every worker is connected (fair PUSH distribution) and the FINISHED
broadcast cannot be lost to a slow joiner. End of stream: the sink knows the count (the seed's
design) and publishes FINISHED to the workers once it has every answer.

All timestamps are `time.monotonic()` (CLOCK_MONOTONIC: one clock for every process on the host),
so the harness can subtract its own start time from the launcher's `t_go`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

#: fork, not spawn: what the seed (and most hand-written code on Linux) does, and the fastest start.
#: Each child creates its own zmq.Context after the fork; the launcher never creates one.
MP = mp.get_context("fork")

FINISHED = b"FINISHED"


def expected_sum(n: int) -> int:
    """sum(i*i for i in range(n)), in closed form (the smoke test checks the two agree)."""
    return (n - 1) * n * (2 * n - 1) // 6 if n > 0 else 0


def peak_rss_kb(pid: int | str = "self") -> int:
    """VmHWM of a process in kB (peak resident set size), 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ChildFailed(RuntimeError):
    pass


# --------------------------------------------------------------------------------------- children


def _child_main(conn: Connection, body: Callable[..., dict | None], args: tuple) -> None:
    """Run `body(conn, *args)` in a forked child; report done (with peak RSS) or the traceback."""
    try:
        info = body(conn, *args) or {}
        info["rss_kb"] = peak_rss_kb()
        info.setdefault("pid", os.getpid())
        conn.send(("done", info))
    except BaseException:  # noqa: BLE001 - everything goes back to the launcher
        try:
            conn.send(("error", traceback.format_exc()))
        finally:
            os._exit(1)
    finally:
        conn.close()


class Tree:
    """The launcher's forked children: one pipe each, reaped on every path (join, then kill)."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.children: list[tuple[str, mp.Process, Connection]] = []

    def start(self, name: str, body: Callable[..., dict | None], *args: Any) -> Connection:
        parent_end, child_end = MP.Pipe()
        p = MP.Process(target=_child_main, args=(child_end, body, args), name=name, daemon=True)
        p.start()
        child_end.close()
        self.children.append((name, p, parent_end))
        return parent_end

    def _name(self, conn: Connection) -> tuple[str, mp.Process]:
        for name, p, c in self.children:
            if c is conn:
                return name, p
        raise KeyError(conn)

    def expect(self, conn: Connection, kind: str) -> dict:
        """Wait (until the deadline) for message `kind` from the child at the end of `conn`."""
        name, p = self._name(conn)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or not conn.poll(remaining):
            raise TimeoutError(f"{name}: no {kind!r} before the timeout")
        try:
            tag, info = conn.recv()
        except EOFError:
            p.join(1)
            raise ChildFailed(f"{name} exited (code {p.exitcode}) before {kind!r}") from None
        if tag == "error":
            raise ChildFailed(f"{name} failed:\n{info}")
        if tag != kind:
            raise ChildFailed(f"{name}: expected {kind!r}, got {tag!r}")
        return info

    def close(self) -> None:
        """Join every child until the deadline (min 1 s); terminate, then kill, what is left."""
        for _, p, _ in self.children:
            p.join(max(1.0, self.deadline - time.monotonic()))
        for _, p, _ in self.children:
            if p.is_alive():
                p.terminate()
                p.join(2)
            if p.is_alive():
                p.kill()
                p.join(2)
        for _, _, c in self.children:
            c.close()


# ------------------------------------------------------------------------------- zmq pipeline


def make_endpoint(transport: str, rundir: str, name: str) -> str:
    return f"ipc://{rundir}/{name}" if transport == "ipc" else "tcp://127.0.0.1:*"


def bind(sock: Any, transport: str, rundir: str, name: str) -> str:
    """Bind to a fresh endpoint (no fixed ports) and return the concrete one."""
    import zmq

    sock.bind(make_endpoint(transport, rundir, name))
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def wait_handshakes(monitor: Any, n: int, timeout_ms: int) -> None:
    """Block until `n` ZMTP handshakes succeeded on the monitored socket."""
    import zmq
    from zmq.utils.monitor import recv_monitor_message

    seen = 0
    deadline = time.monotonic() + timeout_ms / 1000
    while seen < n:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0 or not monitor.poll(left):
            raise TimeoutError(f"only {seen} of {n} peers connected")
        if recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            seen += 1


def wait_subscriptions(xpub: Any, n: int, timeout_ms: int) -> None:
    """Block until `n` subscribe messages arrived on an XPUB_VERBOSE socket."""
    seen = 0
    deadline = time.monotonic() + timeout_ms / 1000
    while seen < n:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0 or not xpub.poll(left):
            raise TimeoutError(f"only {seen} of {n} subscribers")
        if xpub.recv()[:1] == b"\x01":
            seen += 1


#: ventilate(push, n) sends records 0..n-1; work(pull, push, sub, worker_id) -> records handled,
#: returns when FINISHED arrives on `sub`; collect(pull, n) -> (records, sum of squares).
Ventilate = Callable[[Any, int], None]
Work = Callable[[Any, Any, Any, int], int]
Collect = Callable[[Any, int], tuple[int, int]]

LINGER_MS = 10_000  # finite (never hang), long enough to deliver what was queued


def _sink(conn: Connection, transport: str, rundir: str, n: int, workers: int,
          collect: Collect, timeout_ms: int) -> dict:
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
    eps = {"results": bind(pull, transport, rundir, "results"),
           "control": bind(xpub, transport, rundir, "control")}
    conn.send(("bound", eps))
    wait_subscriptions(xpub, workers, timeout_ms)
    conn.send(("ready", {}))
    if conn.recv() != "go":  # not before the ventilator is ready too: with 0 records we would
        raise RuntimeError("expected go")  # publish FINISHED before every worker connected
    count, total = collect(pull, n)
    t_done = time.monotonic()
    xpub.send(FINISHED)
    pull.close(0)
    xpub.close(LINGER_MS)
    ctx.term()
    return {"count": count, "sum": total, "t_done": t_done}


def _ventilator(conn: Connection, transport: str, rundir: str, n: int, workers: int,
                ventilate: Ventilate, timeout_ms: int) -> dict:
    import zmq

    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    ep = bind(push, transport, rundir, "work")
    monitor = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    conn.send(("bound", {"work": ep}))
    wait_handshakes(monitor, workers, timeout_ms)
    push.disable_monitor()
    monitor.close(0)
    conn.send(("ready", {}))
    if conn.recv() != "go":
        raise RuntimeError("expected go")
    ventilate(push, n)
    t_sent = time.monotonic()
    # Stay connected until the sink has every answer: a PUSH peer that exits while records sit in
    # socket buffers loses some of them on the PULL side (seen here: ~200 of 3000 on ipc).
    conn.send(("sent", {"t_sent": t_sent}))
    if conn.recv() != "stop":
        raise RuntimeError("expected stop")
    push.close(0)
    ctx.term()
    return {"t_sent": t_sent}


def worker_sockets(ctx: Any, eps: dict) -> tuple[Any, Any, Any]:
    import zmq

    pull = ctx.socket(zmq.PULL)
    pull.connect(eps["work"])
    push = ctx.socket(zmq.PUSH)
    push.connect(eps["results"])
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(eps["control"])
    return pull, push, sub


def _worker(conn: Connection, wid: int, eps: dict, work: Work) -> dict:
    import zmq

    ctx = zmq.Context()
    pull, push, sub = worker_sockets(ctx, eps)
    count = work(pull, push, sub, wid)
    pull.close(0)
    sub.close(0)
    push.close(LINGER_MS)
    ctx.term()
    return {"count": count}


def zmq_pipeline(records: int, workers: int, transport: str, timeout: float,
                 ventilate: Ventilate, work: Work, collect: Collect) -> dict:
    """ventilator PUSH -> `workers` x (PULL -> PUSH) -> sink PULL, behind the barrier above."""
    t_launch = time.monotonic()
    rundir = tempfile.mkdtemp(prefix="zflow-bench-")  # 0700; ipc sockets live here
    tree = Tree(timeout)
    tmo = int(timeout * 1000)
    try:
        sink = tree.start("sink", _sink, transport, rundir, records, workers, collect, tmo)
        vent = tree.start("ventilator", _ventilator, transport, rundir, records, workers,
                          ventilate, tmo)
        eps = tree.expect(sink, "bound") | tree.expect(vent, "bound")
        conns = [tree.start(f"worker.{i}", _worker, i, eps, work) for i in range(workers)]
        tree.expect(sink, "ready")
        tree.expect(vent, "ready")
        t_go = time.monotonic()
        sink.send("go")
        vent.send("go")
        tree.expect(vent, "sent")
        s = tree.expect(sink, "done")
        vent.send("stop")
        v = tree.expect(vent, "done")
        w = [tree.expect(c, "done") for c in conns]
    finally:
        tree.close()
        shutil.rmtree(rundir, ignore_errors=True)
    return report(s, v, w, t_launch, t_go)


def report(s: dict, v: dict, w: list[dict], t_launch: float, t_go: float) -> dict:
    """One run's result from what its sink, ventilator and workers said (every baseline)."""
    return {
        "count": s["count"], "sum": s["sum"], "t_launch": t_launch, "t_go": t_go,
        "t_done": s["t_done"], "t_sent": v["t_sent"],
        "per_worker": [x["count"] for x in w],
        "rss_kb": {"launcher": peak_rss_kb(), "ventilator": v["rss_kb"], "sink": s["rss_kb"],
                   "workers": [x["rss_kb"] for x in w]},
    }


# ---------------------------------------------------------------------------------- command


def main(variant: str, pipeline: Callable[[int, int, str, float], dict],
         argv: list[str] | None = None) -> int:
    """`python -m benchmarks.baselines.<variant> --records N --workers W`: one JSON line out."""
    ap = argparse.ArgumentParser(prog=f"benchmarks.baselines.{variant}")
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--transport", choices=["ipc", "tcp"], default="ipc")
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    out: dict[str, Any] = {"variant": variant, "records": a.records, "workers": a.workers,
                           "transport": a.transport}
    try:
        out |= pipeline(a.records, a.workers, a.transport, a.timeout)
        out["error"] = None
    except Exception as e:  # noqa: BLE001 - reported as the row's error
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)
    return 0 if out["error"] is None else 1


def run_main(variant: str, pipeline: Callable[[int, int, str, float], dict]) -> None:
    sys.exit(main(variant, pipeline))
