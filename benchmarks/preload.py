"""What `preload: true` saves: squares whose node module imports jsonschema, rich and PyYAML at
the top (benchmarks/topologies/heavy.py), run with and without `preload: true` on every node,
interleaved in the same sitting; sums checked, medians and the ratio printed.

    python benchmarks/preload.py                          # 10k records, 10 workers, 7 pairs
    python benchmarks/preload.py --records 1000000 --workers 2 --reps 5

Every run is a fresh `zflow up --json`. Exit status 1 when a run failed or a sum is wrong.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
NODES = ("ventilator", "worker", "results")


def run(records: int, workers: int, preload: bool) -> dict:
    """One run: wall seconds and each node's CPU seconds (exact, from the replicas' exits)."""
    argv = [sys.executable, "-m", "zflow", "up", str(ROOT / "topologies" / "squares.yaml"),
            "--json", "--set", f"nodes.ventilator.params.count={records}",
            "--scale", f"worker={workers}"]
    for n in NODES:
        argv += ["--set", f"nodes.{n}.run=heavy:" + {"ventilator": "numbers", "worker": "square",
                                                    "results": "ResultsManager"}[n],
                 "--set", f"nodes.{n}.env={{PYTHONPATH: {ROOT / 'benchmarks' / 'topologies'}}}"]
        if preload:
            argv += ["--set", f"nodes.{n}.preload=true"]
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    results = [json.loads(x) for x in p.stdout.splitlines() if x.startswith('{"event": "result"')]
    if p.returncode != 0 or not results:
        raise SystemExit(f"run failed (exit {p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    res = results[-1]
    want = sum(i * i for i in range(records))
    if res["results"]["results"]["sum"] != want:
        raise SystemExit(f"wrong sum: {res['results']['results']['sum']} != {want}")
    return {"wall": wall, **{n: res["nodes"][n]["cpu_s"] for n in NODES}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--reps", type=int, default=7, help="interleaved pairs (default 7)")
    a = ap.parse_args()
    rows: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(a.reps):
        for pre in ((False, True) if i % 2 == 0 else (True, False)):
            rows[pre].append(run(a.records, a.workers, pre))
    med = {pre: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for pre, rs in rows.items()}
    t = Table(title=f"squares with heavy imports, {a.records:,} records, {a.workers} workers: "
                    f"medians of {a.reps} interleaved pairs (s)")
    for col in ("", "wall", *[f"CPU {n}" for n in NODES]):
        t.add_column(col, justify="right" if col else "left")
    for pre, label in ((False, "each replica imports"), (True, "preload: true")):
        t.add_row(label, *(f"{med[pre][k]:.3f}" for k in ("wall", *NODES)))
    t.add_row("ratio (preload / not)", *(f"{med[True][k] / med[False][k]:.2f}"
                                          for k in ("wall", *NODES)))
    Console().print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
