"""The other measurements of issue 5, one function each; each returns a list of row dicts and turns
every failure (including "zflow up is not available yet") into a row with `skipped` or `error`.

- idle_latency: one record through an idle pipeline, p50/p99 (baselines: benchmarks/latency.py;
  zflow: benchmarks/topologies/latency.yaml, whose sink prints its percentiles);
- startup: an empty stream (0 records) with W workers, command start to exit, per variant; the
  baselines also report the time to their readiness barrier ("every worker ready");
- fixed_cost: the CLI's fixed cost (`python -c pass`, `zflow --version`, `zflow validate`);
- telemetry: zflow squares with --no-telemetry, with telemetry, and with telemetry plus the live
  view (zflow given a pseudo-terminal and no --quiet), repetitions interleaved (off, on, live,
  off, on, live, ...), medians and ratios to the no-telemetry median.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from typing import Any

from benchmarks.harness import ROOT, run_tree
from benchmarks.variants import (
    SQUARES,
    _json_values,
    run_baseline,
    run_zflow,
    zflow_argv,
    zflow_phases,
    zflow_row,
)

LATENCY_TOPOLOGY = ROOT / "benchmarks" / "topologies" / "latency.yaml"


def idle_latency(workers: int, samples: int, zflow_ok: tuple[bool, str],
                 transport: str = "ipc") -> list[dict[str, Any]]:
    rows = []
    for variant in ("seed", "batched"):
        argv = [sys.executable, "-m", "benchmarks.latency", "--variant", variant, "--workers",
                str(workers), "--samples", str(samples), "--transport", transport]
        run = run_tree(argv, 60.0)
        try:
            rep = json.loads(run.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            rep = {"error": f"exit {run.returncode}: {run.tail()}"}
        rows.append({"variant": variant, "workers": workers, "p50_us": rep.get("p50_us"),
                     "p99_us": rep.get("p99_us"), "samples": rep.get("samples"),
                     "error": rep.get("error"), "skipped": None})
    rows.append(zflow_idle_latency(workers, samples, zflow_ok))
    return rows


def zflow_idle_latency(workers: int, samples: int, zflow_ok: tuple[bool, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": "zflow", "workers": workers, "p50_us": None,
                           "p99_us": None, "samples": None, "error": None, "skipped": None}
    if not zflow_ok[0]:
        row["skipped"] = f"zflow up not available: {zflow_ok[1]}"
        return row
    warmup = 20
    argv = [sys.executable, "-m", "zflow", "up", str(LATENCY_TOPOLOGY), "--json",
            "--set", f"nodes.ventilator.params.count={samples + warmup}",
            "--set", f"nodes.results.params.warmup={warmup}", "--scale", f"worker={workers}"]
    run = run_tree(argv, 60.0)
    # the sink prints a JSON line; zflow --json wraps node output in {"event": "log", "line": ...}
    logged = "\n".join(str(v) for v in _json_values(run.stdout, "line"))
    found = [v for v in _json_values(run.stdout + "\n" + logged, "latency")
             if isinstance(v, dict) and "p50_us" in v]
    if run.returncode != 0 or not found:
        row["error"] = f"exit {run.returncode}: {run.tail()}" if run.returncode else \
            "no latency line in the output"
        return row
    row.update({k: found[-1].get(k) for k in ("p50_us", "p99_us", "samples")})
    return row


def startup(workers: int, reps: int, zflow_ok: tuple[bool, str],
            transport: str = "ipc") -> list[dict[str, Any]]:
    rows = []
    for variant in ("zflow", "seed", "mpqueue", "batched"):
        row: dict[str, Any] = {"variant": variant, "workers": workers, "reps": reps,
                               "empty_run_s": None, "to_barrier_s": None, "error": None,
                               "skipped": None}
        if variant == "zflow" and not zflow_ok[0]:
            row["skipped"] = f"zflow up not available: {zflow_ok[1]}"
            rows.append(row)
            continue
        walls, barriers = [], []
        phases: dict[str, list[float]] = {"cli_s": [], "barrier_s": []}
        for _ in range(reps):
            r = zflow_startup(workers) if variant == "zflow" else \
                run_baseline(variant, 0, workers, transport)
            if not r["ok"]:
                row["error"] = r["error"]
                break
            walls.append(r["wall_s"])
            if r["startup_s"] is not None:
                barriers.append(r["startup_s"])
            for k, xs in phases.items():
                if r.get(k) is not None:
                    xs.append(r[k])
        if walls and not row["error"]:
            row["empty_run_s"] = statistics.median(walls)
            row["to_barrier_s"] = statistics.median(barriers) if barriers else None
            row["samples"] = barriers
            for k, xs in phases.items():
                row[k] = statistics.median(xs) if xs else None
        rows.append(row)
    return rows


def zflow_startup(workers: int, records: int = 0, timeout: float = 60.0) -> dict[str, Any]:
    """zflow squares with `records` (default 0) and `--json`: wall time, and command start to the
    first `{"event": "overall", "state": "running"}` line (every replica ready, the barrier
    passed)."""
    argv = zflow_argv(records, workers, quiet=False, extra=("--json",))
    run = run_tree(argv, timeout, timed_lines=True)
    row = zflow_row(run, argv, records, workers)
    ph = zflow_phases(run, records)
    row.update({k: ph[k] for k in ("cli_s", "barrier_s")})
    for t, line in run.lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == "overall" and ev.get("state") == "running":
            row["startup_s"] = t - run.t_start  # as read: includes the pipe's few µs
            break
    return row


def replica_startup(counts: list[int], reps: int, zflow_ok: tuple[bool, str],
                    records: int = 1000) -> list[dict[str, Any]]:
    """Start-up vs replica count (issue 16): squares with `records` and W workers, command start
    to `overall running` (every replica ready), reps interleaved over the counts (10, 50, ..., 10,
    50, ...), median per count. The barrier phase (zflow's clock to running) is reported too."""
    rows: dict[int, dict[str, Any]] = {
        w: {"workers": w, "replicas": w + 2, "records": records, "samples": [], "barrier": [],
            "walls": [], "error": None, "skipped": None} for w in counts}
    if not zflow_ok[0]:
        for row in rows.values():
            row["skipped"] = f"zflow up not available: {zflow_ok[1]}"
        return list(rows.values())
    for _ in range(reps):
        for w in counts:
            row = rows[w]
            if row["error"]:
                continue
            r = zflow_startup(w, records, timeout=60.0 + w * 0.5)
            if not r["ok"] or r.get("startup_s") is None:
                err = str(r["error"] or "no overall running event")
                msg = re.findall(r'"message": "([^"]*)"', err)  # zflow's reason, not the status
                row["error"] = msg[-1] if msg else err[:300]
                continue
            row["samples"].append(r["startup_s"])
            row["walls"].append(r["wall_s"])
            if r.get("barrier_s") is not None:
                row["barrier"].append(r["barrier_s"])
    for row in rows.values():
        xs = row["samples"]
        row["to_running_s"] = statistics.median(xs) if xs else None
        row["barrier_s"] = statistics.median(row["barrier"]) if row["barrier"] else None
        row["wall_s"] = statistics.median(row["walls"]) if row["walls"] else None
    return list(rows.values())


FIXED = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import zmq, msgpack'": [sys.executable, "-c", "import zmq, msgpack"],
    "python -m zflow --version": [sys.executable, "-m", "zflow", "--version"],
    "python -m zflow validate topologies/squares.yaml": [
        sys.executable, "-m", "zflow", "validate", str(SQUARES)],
    "python -m zflow up --dry-run topologies/squares.yaml": [
        sys.executable, "-m", "zflow", "up", "--dry-run", str(SQUARES)],
}


def fixed_cost(reps: int) -> list[dict[str, Any]]:
    """Wall time of commands that do no streaming: what every `zflow up` pays before its clock."""
    walls: dict[str, list[float]] = {k: [] for k in FIXED}
    errors: dict[str, str | None] = dict.fromkeys(FIXED)
    for _ in range(reps):
        for label, argv in FIXED.items():
            run = run_tree(argv, 30.0)
            if run.returncode != 0:
                errors[label] = errors[label] or f"exit {run.returncode}: {run.tail(1)}"
            walls[label].append(run.wall_s)
    return [{"label": k, "median_s": statistics.median(v) if v else None,
             "min_s": min(v) if v else None, "reps": len(v), "samples": v, "error": errors[k]}
            for k, v in walls.items()]


TELEMETRY_MODES = {
    "no telemetry": {"telemetry": False},
    "telemetry": {"telemetry": True},
    "telemetry + live view": {"telemetry": True, "live": True},
}


def telemetry(records: int, workers: int, reps: int,
              zflow_ok: tuple[bool, str]) -> list[dict[str, Any]]:
    """Interleaved (off, on, live, off, on, live, ...) so drift in machine load hits every mode
    alike; medians per mode, wall ratio and cost to the no-telemetry median. The two non-live
    modes run with --json, so they also get a stream time; the live view cannot (its terminal
    is the screen), so its cost is on wall time only."""
    if not zflow_ok[0]:
        return [{"mode": m, "skipped": f"zflow up not available: {zflow_ok[1]}"}
                for m in TELEMETRY_MODES]
    walls: dict[str, list[float]] = {m: [] for m in TELEMETRY_MODES}
    streams: dict[str, list[float]] = {m: [] for m in TELEMETRY_MODES}
    errors: dict[str, str | None] = dict.fromkeys(TELEMETRY_MODES)
    for _ in range(reps):
        for mode, kw in TELEMETRY_MODES.items():
            if errors[mode]:
                continue
            r = run_zflow(records, workers, variant=f"zflow ({mode})", **kw)
            if r["ok"]:
                walls[mode].append(r["wall_s"])
                if r.get("stream_s"):
                    streams[mode].append(r["stream_s"])
            else:
                errors[mode] = r["error"]
    base = statistics.median(walls["no telemetry"]) if walls["no telemetry"] else None
    sbase = statistics.median(streams["no telemetry"]) if streams["no telemetry"] else None
    rows = []
    for mode in TELEMETRY_MODES:
        w = statistics.median(walls[mode]) if walls[mode] else None
        st = statistics.median(streams[mode]) if streams[mode] else None
        rows.append({
            "mode": mode, "records": records, "workers": workers, "wall_s": w,
            "rate_wall": records / w if w else None,
            "ratio_wall": w / base if (w and base) else None,
            # throughput cost: the share of records/s lost against no telemetry
            "cost_pct": 100 * (1 - base / w) if (w and base) else None,
            "stream_s": st, "rate_stream": records / st if st else None,
            "cost_stream_pct": 100 * (1 - sbase / st) if (st and sbase) else None,
            "error": errors[mode], "skipped": None, "samples": walls[mode],
            "stream_samples": streams[mode]})
    return rows
