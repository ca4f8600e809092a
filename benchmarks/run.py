"""zflow against hand-written baselines, side by side, in one sitting (issue 5).

    python benchmarks/run.py --quick                       # 10k records, 2 workers, ~10 s
    python benchmarks/run.py                               # 10k/100k/1M x 2/10 workers
    python benchmarks/run.py --records 100000 --workers 2,10 --repeat 3 --json out.json

Every run is a fresh process tree (interpreter start, fork/spawn, barrier, stream, shutdown); the
sum of squares of every run is checked against sum(i*i for i in range(N)). Results go to a table on
stdout and to JSON (default benchmarks/results/latest.json).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks import extras  # noqa: E402
from benchmarks.harness import ROOT  # noqa: E402
from benchmarks.variants import RUNNERS, skipped_row, zflow_probe  # noqa: E402

ALL = ("zflow", "zflow-be", "seed", "mpqueue", "batched", "batched-dict", "pool", "dask",
       "bytewax")
ZFLOWS = ("zflow", "zflow-be")
BASES = ("seed", "batched", "batched-dict", "mpqueue")
#: what a user would pick instead of zflow (issue 16); dask, bytewax: `pip install '.[bench]'`
PEERS = ("pool", "dask", "bytewax")
#: peers whose interpreter/cluster start-up alone takes ~0.5-1 s: not run by --quick
SLOW_PEERS = ("dask", "bytewax")
LABELS = {"zflow": "zflow", "zflow-be": "zflow best-effort", "seed": "seed (1 json msg/rec)",
          "mpqueue": "mp.Queue", "batched": "batched (1000/frame)",
          "batched-dict": "batched, squares.py work",
          "pool": "mp.Pool imap_unordered(chunksize=1000)", "dask": "Dask bag, processes",
          "bytewax": "Bytewax, 1 process/worker"}
PHASES = ("cli_s", "barrier_s", "stream_s", "stop_s", "exit_s")
#: where a squares run's CPU goes (variants.zflow_cpu)
CPU_PARTS = ("ventilator", "worker", "results", "zflow")


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="10k records, 2 workers, one repetition, short extras (< 20 s)")
    ap.add_argument("--records", type=_ints, default=[10_000, 100_000, 1_000_000],
                    help="comma-separated record counts (default 10000,100000,1000000)")
    ap.add_argument("--workers", type=_ints, default=[2, 10],
                    help="comma-separated worker counts (default 2,10)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per cell, interleaved; the median wall time is reported")
    ap.add_argument("--variants", default=",".join(ALL),
                    help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--transport", choices=["ipc", "tcp"], default="ipc",
                    help="baselines' transport (zflow's `bind: auto` is ipc)")
    ap.add_argument("--no-extras", action="store_true",
                    help="throughput table only: no latency, start-up or telemetry")
    ap.add_argument("--telemetry-records", type=int, default=1_000_000,
                    help="records per telemetry on/off run (default 1000000)")
    ap.add_argument("--extra-reps", type=int, default=5,
                    help="repetitions of start-up, fixed-cost and telemetry runs (default 5)")
    ap.add_argument("--replicas", type=_ints, default=[10, 50, 200, 500],
                    help="worker counts for zflow's start-up vs replica count (default "
                         "10,50,200,500; --quick: 10,50)")
    ap.add_argument("--replica-reps", type=int, default=3,
                    help="repetitions per replica count, interleaved (default 3; --quick: 1)")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "latest.json"),
                    metavar="FILE")
    a = ap.parse_args(argv)
    if a.quick:
        a.records, a.workers, a.repeat, a.telemetry_records = [10_000], [2], 1, 10_000
        a.extra_reps = 1
        a.replicas, a.replica_reps = [10, 50], 1
    a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad = [v for v in a.variants if v not in ALL]
    if bad:
        ap.error(f"unknown variant(s) {bad}; choose from {ALL}")
    return a


def throughput(a: argparse.Namespace, probe: tuple[bool, str]) -> list[dict[str, Any]]:
    rows = []
    for n in a.records:
        for w in a.workers:
            runs: dict[str, list[dict]] = {v: [] for v in a.variants}
            for _ in range(a.repeat):
                for v in a.variants:
                    if v in SLOW_PEERS and a.quick:
                        if not runs[v]:
                            runs[v].append(skipped_row(v, n, w, "skipped in --quick"))
                        continue
                    if v in ZFLOWS and not probe[0]:
                        if not runs[v]:
                            runs[v].append(_not_run(v, n, w, probe[1]))
                        continue
                    r = RUNNERS[v](n, w, a.transport)
                    runs[v].append(r)
                    _progress(r)
            for v in a.variants:
                rows.append(_median(runs[v]))
    return rows


def _not_run(v: str, n: int, w: int, why: str) -> dict[str, Any]:
    return {"variant": v, "records": n, "workers": w, "ok": False,
            "error": f"not run, zflow up failed its probe (100 records, 1 worker): {why}"}


def _median(runs: list[dict]) -> dict[str, Any]:
    """The run with the median wall time among the good ones (else the first failure); stream
    time and zflow's phases are each the median over the good runs on their own."""
    good = sorted((r for r in runs if r.get("ok")), key=lambda r: r["wall_s"])
    row = dict(good[len(good) // 2]) if good else dict(runs[0])
    if len(runs) > 1:
        row["wall_samples"] = [r.get("wall_s") for r in runs]
        row["stream_samples"] = [r.get("stream_s") for r in runs]
        row["failures"] = sum(1 for r in runs if not r.get("ok"))
        cpus = sorted({k for r in good for k in r if k.startswith("cpu_")})
        for k in ("stream_s", "startup_s", *PHASES, "cpu_s", *cpus):
            xs = [r[k] for r in good if r.get(k) is not None]
            row[k] = statistics.median(xs) if xs else None
        if row.get("stream_s"):
            row["rate_stream"] = row["records"] / row["stream_s"]
    return row


def _status(r: dict) -> str:
    if r.get("ok"):
        return "ok"
    return f"skipped: {r['skipped']}" if r.get("skipped") else f"FAILED: {r.get('error')}"


def _progress(r: dict) -> None:
    status = _status(r)[:100]
    wall = f"{r['wall_s']:.2f}s" if r.get("wall_s") is not None else "-"
    print(f"  {r['variant']:8} {r['records']:>8} rec {r['workers']:>3} workers {wall:>8}  {status}",
          file=sys.stderr, flush=True)


def ratios(rows: list[dict]) -> list[dict[str, Any]]:
    """zflow(-eo)/seed, /batched, /mp.Queue from the same run, on records/s over the wall time
    (start and stop included) and over the stream time; and zflow/zflow-be: the cost of
    redelivery by default (squares runs exactly-once under `delivery: auto`)."""
    out = []
    by = {(r["variant"], r["records"], r["workers"]): r for r in rows}
    for (v, n, w), z in by.items():
        if v not in ZFLOWS:
            continue
        item: dict[str, Any] = {"variant": v, "records": n, "workers": w}
        others = [*BASES, *PEERS, "zflow-be"] if v == "zflow" else [*BASES, *PEERS]
        for base in others:
            b = by.get((base, n, w))
            for kind in ("wall", "stream"):
                key = f"rate_{kind}"
                ok = z.get("ok") and b and b.get("ok") and z.get(key) and b.get(key)
                item[f"{base}_{kind}"] = z[key] / b[key] if ok else None
        out.append(item)
    return out


# ------------------------------------------------------------------------------------ output


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def print_report(res: dict[str, Any]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text fallback
        Console = Table = None  # noqa: N806
    tables = []

    def table(title: str, cols: list[str], rows: list[list[str]]) -> None:
        tables.append((title, cols, rows))

    table("Squares throughput (wall = command start to exit; rec/s on wall; stream = go to last "
          "answer; RSS = peak VmHWM)",
          ["variant", "records", "workers", "wall s", "CPU s", "rec/s", "stream rec/s",
           "start s", "RSS worker max MB", "RSS total MB (procs)", "result"],
          [[LABELS.get(r["variant"], r["variant"]), f"{r['records']:,}", str(r["workers"]),
            _f(r.get("wall_s"), ".3f"), _f(r.get("cpu_s"), ".2f"), _rate(r.get("rate_wall")),
            _rate(r.get("rate_stream")),
            _f(r.get("startup_s"), ".3f"), _f(r.get("rss_worker_max_mb"), ".1f"),
            (f"{r['rss_total_mb']:.0f} ({r['processes']})" if r.get("rss_total_mb") else "-"),
            _status(r)] for r in res["throughput"]])
    if res["ratios"]:
        def pair(x: dict, b: str) -> str:
            w, st = x.get(f"{b}_wall"), x.get(f"{b}_stream")
            return "-" if w is None and st is None else f"{_f(w, '.2f')} / {_f(st, '.2f')}"

        table("Ratios of records/s, same run, as wall (start and stop included) / stream",
              ["variant", "records", "workers", "/seed", "/batched", "/batched squares.py work",
               "/mp.Queue", "/Pool", "/Dask", "/Bytewax", "/best-effort"],
              [[x["variant"], f"{x['records']:,}", str(x["workers"]),
                *(pair(x, b) for b in (*BASES, *PEERS, "zflow-be"))] for x in res["ratios"]])
        peers = [x for x in res["ratios"] if x["variant"] == "zflow"]
        if peers:
            def wall(x: dict, b: str) -> str:  # zflow wall / peer wall = peer rate / zflow rate
                r = x.get(f"{b}_wall")
                return "-" if not r else f"{1 / r:.2f}"

            table("zflow against the peers a user would pick instead (issue 16): zflow wall "
                  "time / peer wall time, same run (< 1: zflow faster; targets: <= 0.8 vs Pool, "
                  "<= 1 vs Bytewax)",
                  ["records", "workers", "zflow/Pool", "zflow/Dask", "zflow/Bytewax"],
                  [[f"{x['records']:,}", str(x["workers"]), *(wall(x, b) for b in PEERS)]
                   for x in peers])
    zrows = [r for r in res["throughput"] if r["variant"] in ZFLOWS and r.get("ok")]
    if zrows:
        table("zflow phases (s): cli = command start to zflow's clock (imports, zygote launch, "
              "load, validate, plan); barrier = to every replica ready; stream = to the sink "
              "finished; stop = to overall completed; exit = to process exit",
              ["variant", "records", "workers", "wall", *(p[:-2] for p in PHASES)],
              [[r["variant"], f"{r['records']:,}", str(r["workers"]), _f(r["wall_s"], ".3f"),
                *(_f(r.get(p), ".3f") for p in PHASES)] for r in zrows])
        table("zflow CPU (s), medians: each node's replicas, exact from their exits; zflow = "
              "the rest of the tree (CLI and supervisor, fork server, orphan guard)",
              ["variant", "records", "workers", "tree", *CPU_PARTS],
              [[r["variant"], f"{r['records']:,}", str(r["workers"]), _f(r.get("cpu_s"), ".3f"),
                *(_f(r.get(f"cpu_{p}_s"), ".3f") for p in CPU_PARTS)] for r in zrows])
    if res.get("idle_latency"):
        table("Idle latency, one record through an idle pipeline (µs)",
              ["variant", "workers", "p50", "p99", "samples", "note"],
              [[r["variant"], str(r["workers"]), _f(r["p50_us"], ".0f"), _f(r["p99_us"], ".0f"),
                _f(r["samples"], "d"), r["skipped"] or r["error"] or ""]
               for r in res["idle_latency"]])
    if res.get("startup"):
        table("Start-up, median of reps: empty stream (0 records), command start to exit; and "
              "command start to every worker ready (zflow: the overall running event; "
              "baselines: their barrier)",
              ["variant", "workers", "reps", "empty run s", "to ready s", "zflow cli s",
               "zflow barrier s", "note"],
              [[r["variant"], str(r["workers"]), str(r.get("reps", "")),
                _f(r["empty_run_s"], ".3f"), _f(r["to_barrier_s"], ".3f"),
                _f(r.get("cli_s"), ".3f"), _f(r.get("barrier_s"), ".3f"),
                r["skipped"] or r["error"] or ""] for r in res["startup"]])
    if res.get("replica_startup"):
        rs = res["replica_startup"]
        top = max((r["to_running_s"] or 0 for r in rs), default=0) or 1

        def bar(x: float | None) -> str:
            return "" if x is None else "#" * max(1, round(40 * x / top))

        table(f"zflow start-up vs replica count: squares ({rs[0]['records']:,} records) with W "
              "workers (W + 2 replicas), command start to the overall running event (every "
              "replica ready), median of interleaved reps",
              ["workers", "replicas", "to running s", "barrier s", "wall s", "samples", "",
               "note"],
              [[str(r["workers"]), str(r["replicas"]), _f(r.get("to_running_s"), ".3f"),
                _f(r.get("barrier_s"), ".3f"), _f(r.get("wall_s"), ".3f"),
                " ".join(f"{x:.2f}" for x in r["samples"]), bar(r.get("to_running_s")),
                r["skipped"] or r["error"] or ""] for r in rs])
    if res.get("fixed_cost"):
        table("Fixed costs of a command, median of reps (wall s)",
              ["command", "median s", "min s", "reps", "note"],
              [[r["label"], _f(r.get("median_s"), ".3f"), _f(r.get("min_s"), ".3f"),
                str(r.get("reps")), r.get("error") or ""] for r in res["fixed_cost"]])
    if res.get("telemetry"):
        tel = res["telemetry"]
        table(f"zflow telemetry and live view cost ({tel[0].get('records', 0):,} records, "
              f"{tel[0].get('workers')} workers; runs interleaved; medians of "
              f"{max((len(r.get('samples') or []) for r in tel), default=0)})",
              ["mode", "wall s", "rec/s wall", "wall ratio", "rec/s lost (wall)", "stream s",
               "rec/s stream", "rec/s lost (stream)", "wall samples", "note"],
              [[r["mode"], _f(r.get("wall_s"), ".3f"), _rate(r.get("rate_wall")),
                _f(r.get("ratio_wall"), ".3f"),
                (f"{r['cost_pct']:+.1f}%" if r.get("cost_pct") is not None else "-"),
                _f(r.get("stream_s"), ".3f"), _rate(r.get("rate_stream")),
                (f"{r['cost_stream_pct']:+.1f}%" if r.get("cost_stream_pct") is not None
                 else "-"),
                " ".join(f"{x:.2f}" for x in r.get("samples") or []),
                r.get("skipped") or r.get("error") or ""] for r in tel])

    if Console is not None:
        console = Console(width=max(160, Console().width))
        for title, cols, rows in tables:
            t = Table(title=title, title_justify="left")
            for c in cols:
                t.add_column(c, overflow="fold")
            for r in rows:
                t.add_row(*r)
            console.print(t)
    else:
        for title, cols, rows in tables:
            print(f"\n{title}")
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
            for r in [cols, *rows]:
                print("  ".join(x.ljust(wd) for x, wd in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.monotonic()
    import zmq

    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "loadavg_before": os.getloadavg(), "args": {k: v for k, v in vars(a).items()}}
    probe = (False, "not requested")
    # zflow's bytecode, as an installed package has it: with PYTHONDONTWRITEBYTECODE set (this
    # machine sets it) a source tree's changed modules would be compiled again in every process.
    # Forced: compileall trusts a .pyc whose recorded mtime matches, but a file rewritten in the
    # same second (git stash pop, checkout) has that mtime with other content; the import then
    # sees the size differ and compiles the source in every process, ~5 ms a module
    for tree in ("zflow", "topologies"):  # squares.py too, as Python leaves it after a first run
        compileall.compile_dir(str(ROOT / tree), quiet=1, force=True)
    if any(v in ZFLOWS for v in a.variants) or not a.no_extras:
        print("probing zflow up ...", file=sys.stderr, flush=True)
        probe = zflow_probe()
        if not probe[0]:
            print(f"  zflow up not usable: {probe[1][:200]}", file=sys.stderr, flush=True)
    res: dict[str, Any] = {"meta": meta, "zflow_probe": {"ok": probe[0], "error": probe[1]}}
    res["throughput"] = throughput(a, probe)
    res["ratios"] = ratios(res["throughput"])
    if not a.no_extras:
        w_lat = min(a.workers)
        print("idle latency ...", file=sys.stderr, flush=True)
        res["idle_latency"] = extras.idle_latency(w_lat, 100 if a.quick else 300, probe,
                                                  a.transport)
        print("start-up ...", file=sys.stderr, flush=True)
        res["startup"] = extras.startup(max(a.workers), a.extra_reps, probe, a.transport)
        print("start-up vs replica count ...", file=sys.stderr, flush=True)
        res["replica_startup"] = extras.replica_startup(a.replicas, a.replica_reps, probe)
        print("fixed costs ...", file=sys.stderr, flush=True)
        res["fixed_cost"] = extras.fixed_cost(a.extra_reps)
        print("telemetry ...", file=sys.stderr, flush=True)
        res["telemetry"] = extras.telemetry(a.telemetry_records, min(a.workers),
                                            a.extra_reps, probe)
    meta["loadavg_after"] = os.getloadavg()
    meta["seconds"] = time.monotonic() - t0
    print_report(res)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    failed = [r for r in res["throughput"]
              if not r.get("ok") and not r.get("skipped") and r["variant"] not in ZFLOWS]
    print(f"\n{meta['seconds']:.1f} s; load average {meta['loadavg_before'][0]:.2f} -> "
          f"{meta['loadavg_after'][0]:.2f}; JSON: {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
