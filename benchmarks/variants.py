"""One function per way of running the squares pipeline; each returns one table row (a dict).

Every variant is a fresh process tree started by `harness.run_tree`; a failure of any kind (non-zero
exit, timeout, unparsable output, wrong sum, leaked processes) becomes the row's `error` instead of
an exception, so one broken runner never hides the others.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from benchmarks.baselines.common import expected_sum
from benchmarks.harness import ROOT, TreeRun, run_tree

SQUARES = ROOT / "topologies" / "squares.yaml"
MB = 1024.0


def timeout_for(records: int) -> float:
    """Generous: 30 s plus what the slowest baseline (~0.1M rec/s) needs, four times over."""
    return 30.0 + records * 4e-5


def _row(variant: str, records: int, workers: int, run: TreeRun | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "variant": variant, "records": records, "workers": workers, "ok": False, "error": None,
        "wall_s": None, "rate_wall": None, "startup_s": None, "stream_s": None,
        "rate_stream": None, "sum": None, "rss_worker_max_mb": None, "rss_total_mb": None,
        "rss_tree_max_mb": None, "processes": None, "rss_source": None,
    }
    if run is not None:
        row["wall_s"] = run.wall_s
        row["rss_tree_max_mb"] = run.maxrss_kb / MB if run.maxrss_kb else None
        if run.wall_s > 0:
            row["rate_wall"] = records / run.wall_s
    return row


def _finish(row: dict[str, Any], run: TreeRun, records: int) -> dict[str, Any]:
    """Common checks: exit status, timeout, leaks, and the sum of squares."""
    if run.timed_out:
        row["error"] = row["error"] or f"timed out after {run.wall_s:.1f} s: {run.tail(1)}"
    elif run.returncode != 0 and not row["error"]:
        row["error"] = f"exit {run.returncode}: {run.tail()}"
    if not row["error"]:
        if row["sum"] is None:
            row["error"] = "no sum of squares in the output"
        elif row["sum"] != expected_sum(records):
            row["error"] = f"WRONG SUM {row['sum']} != {expected_sum(records)}"
    if not row["error"] and run.leaked:
        row["error"] = f"{run.leaked} process(es) left running after exit (killed)"
    row["ok"] = row["error"] is None
    return row


# ------------------------------------------------------------------------------- baselines


def run_baseline(variant: str, records: int, workers: int, transport: str = "ipc",
                 timeout: float | None = None) -> dict[str, Any]:
    """benchmarks/baselines/<variant>.py as its own process tree; it reports its own figures."""
    timeout = timeout or timeout_for(records)
    argv = [sys.executable, "-m", f"benchmarks.baselines.{variant}", "--records", str(records),
            "--workers", str(workers), "--transport", transport, "--timeout", str(timeout - 5)]
    run = run_tree(argv, timeout)
    row = _row(variant, records, workers, run)
    try:
        rep = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        row["error"] = f"no report (exit {run.returncode}): {run.tail()}"
        return _finish(row, run, records)
    if rep.get("error"):
        row["error"] = rep["error"]
        return _finish(row, run, records)
    row["sum"] = rep["sum"]
    row["startup_s"] = rep["t_go"] - run.t_start
    row["stream_s"] = rep["t_done"] - rep["t_go"]
    if row["stream_s"] > 0:
        row["rate_stream"] = records / row["stream_s"]
    rss = rep["rss_kb"]
    every = [rss["launcher"], rss["ventilator"], rss["sink"], *rss["workers"]]
    row["rss_worker_max_mb"] = max(rss["workers"]) / MB
    row["rss_total_mb"] = sum(every) / MB
    row["processes"] = len(every)
    row["rss_source"] = "self-reported VmHWM"
    row["per_worker"] = rep.get("per_worker")
    return _finish(row, run, records)


# ----------------------------------------------------------------------------------- zflow

_SUM_TEXT = re.compile(r"(?:sum of squares\D{0,3}|\bsum=)(\d+)", re.I)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")


def _json_values(text: str, key: str) -> list[Any]:
    """Every value of `key` in any JSON object printed as a line (nested objects included)."""
    found: list[Any] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                if k == key:
                    found.append(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                walk(json.loads(line))
            except ValueError:
                pass
    return found


def parse_sum(text: str) -> int | None:
    """The sum of squares from zflow's output: a JSON line with "sum", else the sink's sentence
    "..., sum of squares N" (topologies/squares.py) or zflow's "sum=N"; the last one wins."""
    text = _ANSI.sub("", text)
    ints = [v for v in _json_values(text, "sum") if isinstance(v, int)]
    if ints:
        return ints[-1]
    m = _SUM_TEXT.findall(text)
    return int(m[-1]) if m else None


def zflow_argv(records: int, workers: int, *, topology: str = str(SQUARES),
               telemetry: bool = True, quiet: bool = True,
               extra: tuple[str, ...] = ()) -> list[str]:
    argv = [sys.executable, "-m", "zflow", "up", topology]
    if quiet:
        argv.append("--quiet")
    argv += ["--set", f"nodes.ventilator.params.count={records}", "--scale", f"worker={workers}"]
    if not telemetry:
        argv.append("--no-telemetry")
    return argv + list(extra)


def _is_worker(cmd: str) -> bool:
    return "worker" in cmd


def run_zflow(records: int, workers: int, *, telemetry: bool = True, live: bool = False,
              timeout: float | None = None, variant: str = "zflow") -> dict[str, Any]:
    """`python -m zflow up topologies/squares.yaml --quiet --set ...count=N --scale worker=W`.

    `live=True` drops --quiet and gives zflow a pseudo-terminal, so its live view renders.
    Per-process RSS is sampled (VmHWM of every descendant every 20 ms; processes are told apart by
    their command line / setproctitle title: 'worker' in it makes a worker replica).
    """
    timeout = timeout or timeout_for(records)
    argv = zflow_argv(records, workers, telemetry=telemetry, quiet=not live)
    run = run_tree(argv, timeout, sample_every=0.02, stdout_tty=live)
    return zflow_row(run, argv, records, workers, variant)


def zflow_row(run: TreeRun, argv: list[str], records: int, workers: int,
              variant: str = "zflow") -> dict[str, Any]:
    row = _row(variant, records, workers, run)
    row["argv"] = argv[1:]
    row["sum"] = parse_sum(run.stdout)
    procs = run.sampled
    if procs:
        rss = [p["rss_kb"] for p in procs.values()]
        wrk = [p["rss_kb"] for p in procs.values() if _is_worker(p["cmd"])]
        row["rss_total_mb"] = sum(rss) / MB
        row["rss_worker_max_mb"] = max(wrk) / MB if wrk else None
        row["processes"] = len(procs)
        row["rss_source"] = "sampled VmHWM (20 ms)"
    return _finish(row, run, records)


def zflow_probe(timeout: float = 30.0) -> tuple[bool, str]:
    """Can `zflow up` run squares at all (100 records, 1 worker, right sum)? (ok, reason)."""
    row = run_zflow(100, 1, timeout=timeout)
    return (True, "") if row["ok"] else (False, row["error"] or "failed")


RUNNERS = {
    "zflow": lambda n, w, transport: run_zflow(n, w),
    "seed": lambda n, w, transport: run_baseline("seed", n, w, transport),
    "mpqueue": lambda n, w, transport: run_baseline("mpqueue", n, w, transport),
    "batched": lambda n, w, transport: run_baseline("batched", n, w, transport),
}
