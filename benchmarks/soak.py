"""Soak: squares at full speed without an end; every replica's RSS must stay flat (issue 6).

    python benchmarks/soak.py                 # 120 s (10 s warm-up), 10 workers
    python benchmarks/soak.py --seconds 30 --workers 4 --json samples.json

Runs `zflow up benchmarks/topologies/soak.yaml --json` (an infinite source → workers → a tallying
sink), and once the topology is running samples the resident set size of the supervisor and of
every replica once a second from /proc (replicas are found by their process title
`zflow: <name> <node>.<i>`, so restarts would show as a new pid and fail the run). At the end it
interrupts zflow (expects exit 130 and nothing left running) and prints, per node, the RSS just
after the warm-up and at the end (each the median of a few samples, so one sample's noise does
not decide) and the growth. Exit status 1 when any node's total or any single process grew by
GROWTH_LIMIT or more, when the stream stalled, a replica restarted, or zflow misbehaved at the
end; 0 otherwise. Throughput (records/s reaching the sink, from zflow's own stats) is printed
for the first and the last part of the run too, so a slowdown shows next to a leak.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "benchmarks" / "topologies" / "soak.yaml"
GROWTH_LIMIT = 10.0  # percent
WINDOW = 3  # samples (seconds) taken for "after warm-up" and for "at the end"
SUPERVISOR = "(zflow up)"


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def replicas(name: str) -> dict[str, int]:
    """replica id → pid, for every live process whose title is `zflow: <name> <id>`."""
    prefix = f"zflow: {name} ".encode()
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(prefix):
            rid = cmd[len(prefix):].split(b"\0")[0].strip().decode(errors="replace")
            out[rid] = int(entry)
    return out


class Reader(threading.Thread):
    """Reads zflow's --json stream: when it is running, and the sink's count over time."""

    def __init__(self, stream, sink: str) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.sink = sink
        self.running = threading.Event()
        self.counts: list[tuple[float, int]] = []  # (monotonic, records received by the sink)
        #: edge → [(monotonic, records sent but not yet received: queued in ZeroMQ)]
        self.in_flight: dict[str, list[tuple[float, int]]] = {}
        self.errors: list[str] = []
        self.result: dict | None = None

    def run(self) -> None:
        for line in self.stream:
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("event")
            if kind == "overall" and ev.get("state") == "running":
                self.running.set()
            elif kind == "stats":
                now = time.monotonic()
                node = (ev.get("nodes") or {}).get(self.sink) or {}
                self.counts.append((now, int(node.get("msgs_in") or 0)))
                for e in ev.get("edges") or []:
                    key = f"{e['src']} → {e['dst']}"
                    self.in_flight.setdefault(key, []).append((now, int(e.get("in_flight") or 0)))
            elif kind == "error":
                self.errors.append(str(ev.get("message")))
            elif kind == "result":
                self.result = ev


def rate_between(counts: list[tuple[float, int]], t0: float, t1: float) -> float | None:
    pts = [(t, n) for t, n in counts if t0 <= t <= t1]
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return None
    return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def soak(seconds: float, warmup: float, workers: int, quiet: bool = False,
         dump: str | None = None, sets: list[str] | None = None) -> int:
    def say(text: str = "") -> None:
        if not quiet:
            print(text, flush=True)

    if seconds < warmup + 2 * WINDOW:
        raise SystemExit(f"--seconds must be at least warm-up + {2 * WINDOW} s")
    name = "soak" + uuid.uuid4().hex[:8]
    argv = [sys.executable, "-m", "zflow", "up", str(TOPOLOGY), "--json",
            "--set", f"name={name}", "--scale", f"worker={workers}"]
    for x in sets or []:
        argv += ["--set", x]
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    reader = Reader(proc.stdout, "results")
    reader.start()
    err_chunks: list[str] = []
    err_thread = threading.Thread(target=lambda: err_chunks.extend(proc.stderr), daemon=True)
    err_thread.start()
    problems: list[str] = []
    # node → replica id → [(t, rss_kb)]
    samples: dict[str, dict[str, list[tuple[float, int]]]] = {}
    pids: dict[str, int] = {}
    try:
        if not reader.running.wait(60):
            tail = "".join(err_chunks)[-2000:]
            raise RuntimeError(f"zflow did not reach running in 60 s: {tail}")
        t0 = time.monotonic()
        say(f"soak: {name}, {workers} workers, {seconds:g} s ({warmup:g} s warm-up); "
            f"sampling RSS every second")
        next_t = t0
        while True:
            now = time.monotonic()
            if now - t0 > seconds:
                break
            if proc.poll() is not None:
                problems.append(f"zflow exited early with code {proc.returncode}")
                break
            found = replicas(name)
            found[SUPERVISOR] = proc.pid
            for rid, pid in found.items():
                if rid in pids and pids[rid] != pid:
                    problems.append(f"{rid} restarted (pid {pids[rid]} → {pid})")
                pids[rid] = pid
                kb = rss_kb(pid)
                if kb is not None:
                    node = rid if rid == SUPERVISOR else rid.rsplit(".", 1)[0]
                    samples.setdefault(node, {}).setdefault(rid, []).append((now - t0, kb))
            if not quiet and int(now - t0) % 10 == 0 and now - t0 >= 1:
                done = reader.counts[-1][1] if reader.counts else 0
                say(f"  {now - t0:5.0f} s  {done:,} records at the sink")
            next_t += 1.0
            time.sleep(max(0.0, next_t - time.monotonic()))  # the sampling period, not a sync
        t_end = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
            problems.append("zflow did not stop within 30 s of SIGINT")
        reader.join(5)
        err_thread.join(5)
    if code != 130 and not problems:
        problems.append(f"zflow exited {code} on SIGINT (expected 130)")
    deadline = time.monotonic() + 2.0
    while replicas(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = replicas(name)
    if left:
        problems.append(f"left running after zflow exited: {sorted(left)}")
        for pid in left.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    problems.extend(f"zflow reported: {e}" for e in reader.errors if e != "interrupted")

    # -- the table -----------------------------------------------------------------------
    def window(series: list[tuple[float, int]], start: float | None) -> float | None:
        if start is None:
            pts = [kb for _, kb in series[-WINDOW:]]
        else:
            pts = [kb for t, kb in series if t >= start][:WINDOW]
        return statistics.median(pts) if len(pts) == WINDOW else None

    rows = []
    worst_proc: tuple[float, str] = (0.0, "")
    for node, reps in samples.items():
        warm_sum = end_sum = 0.0
        complete = True
        for rid, series in reps.items():
            w, e = window(series, warmup), window(series, None)
            if w is None or e is None:
                complete = False
                continue
            warm_sum += w
            end_sum += e
            g = 100.0 * (e - w) / w
            if g > worst_proc[0]:
                worst_proc = (g, rid)
            if g >= GROWTH_LIMIT:
                problems.append(f"{rid}: RSS grew {g:.1f}% ({w / 1024:.1f} → {e / 1024:.1f} MiB)")
        if not complete:
            problems.append(f"{node}: not enough RSS samples")
        growth = 100.0 * (end_sum - warm_sum) / warm_sum if warm_sum else float("nan")
        if warm_sum and growth >= GROWTH_LIMIT:
            problems.append(f"{node}: total RSS grew {growth:.1f}%")
        rows.append((node, len(reps), warm_sum, end_sum, growth))
    order = {SUPERVISOR: 0, "ventilator": 1, "worker": 2, "results": 3}
    rows.sort(key=lambda r: order.get(r[0], 9))
    say()
    say(f"RSS after {warmup:g} s warm-up vs at the end ({t_end - t0:.0f} s), median of {WINDOW} "
        f"samples each")
    say(f"{'node':<12} {'procs':>5} {'warm-up MiB':>12} {'end MiB':>10} {'growth':>8}")
    for node, n, w, e, g in rows:
        say(f"{node:<12} {n:>5} {w / 1024:>12.1f} {e / 1024:>10.1f} {g:>+7.1f}%")
    if worst_proc[1]:
        say(f"largest single-process growth: {worst_proc[1]} {worst_proc[0]:+.1f}%")
    say("records in flight (sent, not yet received: queued in ZeroMQ), same windows")
    for edge, series in reader.in_flight.items():
        w = window([(t - t0, n) for t, n in series], warmup)
        e = window([(t - t0, n) for t, n in series], None)
        if w is not None and e is not None:
            say(f"  {edge:<32} {w:>12,.0f} {e:>12,.0f}")
    if dump:
        with open(dump, "w", encoding="utf-8") as f:
            json.dump({"rss_kb": samples, "sink_count": [(t - t0, n) for t, n in reader.counts],
                       "in_flight": {k: [(t - t0, n) for t, n in v]
                                     for k, v in reader.in_flight.items()}}, f)
    first = rate_between(reader.counts, t0 + warmup, t0 + warmup + 10)
    last = rate_between(reader.counts, t_end - 10, t_end)
    total = rate_between(reader.counts, t0 + warmup, t_end)
    if total is None or not total > 0:
        problems.append("no records reached the sink after the warm-up (stalled?)")
    elif last is not None and last <= 0:
        problems.append("the stream stalled at the end")
    fmt = lambda r: "n/a" if r is None else f"{r:,.0f}/s"  # noqa: E731
    done = reader.counts[-1][1] if reader.counts else 0
    say(f"throughput at the sink: {fmt(first)} after warm-up, {fmt(last)} at the end, "
        f"{fmt(total)} overall; {done:,} records")
    say(f"zflow exit code on SIGINT: {code}")
    if problems:
        say("FAIL:")
        for p in problems:
            say(f"  {p}")
        return 1
    say(f"OK: every node's and every process's RSS grew less than {GROWTH_LIMIT:g}%")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0,
                    help="how long to run once the topology is up (default 120)")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds before the baseline RSS is taken (default 10)")
    ap.add_argument("--workers", type=int, default=10, help="worker replicas (default 10)")
    ap.add_argument("--json", metavar="PATH", help="also write every sample to PATH")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                    help="passed to zflow up (e.g. defaults.hwm=100)")
    args = ap.parse_args(argv)
    return soak(args.seconds, args.warmup, args.workers, dump=args.json, sets=args.set)


if __name__ == "__main__":
    sys.exit(main())
