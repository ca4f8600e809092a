"""Progress under churn (issue 10): squares with slowed workers, once undisturbed and once while a
random worker is SIGKILLed every 250 ms, in the same sitting; exact sums checked, and the ratio
of the two wall times printed (the target: about twice the undisturbed time at most).

    python benchmarks/churn.py                      # 1M records, 4 workers, 40 µs per record
    python benchmarks/churn.py --records 200000 --seconds 10 --reps 2
    python benchmarks/churn.py --set delivery=best-effort   # what best-effort loses instead

Every run is a fresh `zflow up --json`; the kills stop after `--seconds` or when the run ends.
Exit status 1 when a sum is wrong, a run failed or a process was left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests" / "topologies"


def _pids(name: str, node: str) -> list[int]:
    """Replicas of `node` (every process of the run for "") in run `name`, by process title."""
    prefix = f"zflow: {name} {node}." if node else f"zflow: {name} "
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmd.startswith(prefix):
            out.append(int(d))
    return out


def run(records: int, workers: int, delay_us: int, churn: bool, every: float, seconds: float,
        extra: list[str], seed: int, max_kills: int | None = None) -> dict:
    """One `zflow up --json` of squares with slowed workers, killing a random worker every
    `every` seconds (if `churn`) for up to `seconds`, or `max_kills` times. Also used by
    tests/test_reliability.py."""
    name = "churn" + uuid.uuid4().hex[:8]
    argv = [sys.executable, "-m", "zflow", "up", str(ROOT / "topologies" / "squares.yaml"),
            "--json", "--set", f"name={name}",
            "--set", f"nodes.ventilator.params.count={records}", "--scale", f"worker={workers}",
            "--set", "nodes.worker.run=faulty:slow_square",
            "--set", f"nodes.worker.params.delay_us={delay_us}",
            "--set", "nodes.worker.max_restarts=1000",
            "--set", "nodes.worker.backoff={initial: 0.01, max: 0.05}", *extra]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if '"overall"' in line and '"running"' in line:
                running.set()
        running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    running.wait(60)
    kills = 0
    rng = random.Random(seed)
    until = time.monotonic() + seconds
    while churn and proc.poll() is None and time.monotonic() < until:
        pids = _pids(name, "worker")
        if pids and (max_kills is None or kills < max_kills):
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(every)  # the pace of the chaos, not synchronisation
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    wall = time.monotonic() - t0
    reader.join(10)
    err = proc.stderr.read()  # type: ignore[union-attr]
    results = [json.loads(x) for x in lines if x.startswith('{"event": "result"')]
    res = results[-1] if results else {}
    got = (res.get("results") or {}).get("results") or {}
    left = _pids(name, "")
    return {
        "churn": churn, "code": proc.returncode, "wall": wall, "kills": kills,
        "answers": got.get("answers"), "sum_ok": got.get("sum") == sum(i * i for i in
                                                                      range(records)),
        "restarts": ((res.get("nodes") or {}).get("worker") or {}).get("restarts"),
        "message": res.get("message") or (err.strip() or "".join(lines[-1:]))[-500:],
        "left": left, "result": res, "out": "".join(lines), "err": err,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--delay-us", type=int, default=40, help="busy work per record (µs)")
    ap.add_argument("--every", type=float, default=0.25, help="seconds between kills")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the kills go on")
    ap.add_argument("--reps", type=int, default=1, help="interleaved pairs of runs")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                    help="passed to zflow up")
    a = ap.parse_args()
    extra = [x for kv in a.set for x in ("--set", kv)]
    rows = []
    for rep in range(a.reps):
        for churn in (False, True):
            r = run(a.records, a.workers, a.delay_us, churn, a.every, a.seconds, extra, rep)
            rows.append(r)
            print(f"  {'churn' if churn else 'calm':5} {r['wall']:7.2f}s  kills {r['kills']:4}"
                  f"  exit {r['code']}  answers {r['answers']}  sum ok {r['sum_ok']}",
                  file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(f"\nsquares, {a.records:,} records, {a.workers} workers, {a.delay_us} µs/record, "
          f"a worker SIGKILLed every {a.every:g} s for up to {a.seconds:g} s; "
          f"load average {load:.1f}; {' '.join(extra) or 'delivery auto'}\n")
    print("| run | wall s | kills | worker restarts | exit | answers | exact sum |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        exact = "yes" if r["sum_ok"] else "NO"
        print(f"| {'churn' if r['churn'] else 'undisturbed'} | {r['wall']:.2f} | {r['kills']} | "
              f"{r['restarts']} | {r['code']} | {r['answers']} | {exact} |")
    calm = statistics.median(r["wall"] for r in rows if not r["churn"])
    hot = statistics.median(r["wall"] for r in rows if r["churn"])
    print(f"\nchurn / undisturbed wall (medians): {hot / calm:.2f} (target: about 2 at most)")
    bad = [r for r in rows if not r["sum_ok"] or r["code"] != 0 or r["left"]]
    for r in bad:
        print(f"NOT OK: {r['message']} (left behind: {r['left']})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
