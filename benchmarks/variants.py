"""One function per way of running the squares pipeline; each returns one table row (a dict).

Every variant is a fresh process tree started by `harness.run_tree`; a failure of any kind (non-zero
exit, timeout, unparsable output, wrong sum, leaked processes) becomes the row's `error` instead of
an exception, so one broken runner never hides the others.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from typing import Any

from benchmarks.baselines.common import expected_sum
from benchmarks.harness import ROOT, TreeRun, run_tree

SQUARES = ROOT / "topologies" / "squares.yaml"
#: the squares topology runs exactly-once under `delivery: auto`; this is the opt-out
BEST_EFFORT = ("--set", "delivery=best-effort")
MB = 1024.0


def timeout_for(records: int) -> float:
    """Generous: 30 s plus what the slowest baseline (~0.1M rec/s) needs, four times over."""
    return 30.0 + records * 4e-5


def _row(variant: str, records: int, workers: int, run: TreeRun | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "variant": variant, "records": records, "workers": workers, "ok": False, "error": None,
        "wall_s": None, "rate_wall": None, "startup_s": None, "stream_s": None,
        "rate_stream": None, "sum": None, "rss_worker_max_mb": None, "rss_total_mb": None,
        "rss_tree_max_mb": None, "processes": None, "rss_source": None, "cpu_s": None,
    }
    if run is not None:
        row["wall_s"] = run.wall_s
        row["cpu_s"] = run.cpu_s or None
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


def run_baseline(module: str, records: int, workers: int, transport: str = "ipc",
                 timeout: float | None = None, variant: str | None = None) -> dict[str, Any]:
    """benchmarks/baselines/<module>.py as its own process tree; it reports its own figures."""
    timeout = timeout or timeout_for(records)
    variant = variant or module
    argv = [sys.executable, "-m", f"benchmarks.baselines.{module}", "--records", str(records),
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
    every = [x for x in (rss["launcher"], rss["ventilator"], rss["sink"], *rss["workers"]) if x]
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


_WORKER_TITLE = re.compile(r"^zflow: \S+ worker\.\d+$")


def _is_worker(cmd: str) -> bool:
    """A worker replica, by its process title "zflow: <topology> worker.<i>" (not the
    supervisor, whose command line holds `--scale worker=W`)."""
    return bool(_WORKER_TITLE.match(cmd.strip()))


def run_zflow(records: int, workers: int, *, telemetry: bool = True, live: bool = False,
              timeout: float | None = None, variant: str = "zflow",
              extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """`python -m zflow up topologies/squares.yaml --json --set ...count=N --scale worker=W`.

    The JSON lines are read through a pipe and stamped as they arrive, so besides the wall time
    the row gets zflow's phases (see `zflow_phases`) and a stream rate comparable to the
    baselines'. `live=True` drops --json and gives zflow a pseudo-terminal, so its live view
    renders (no phases then). Per-process RSS is sampled (VmHWM of every descendant every 20 ms;
    worker replicas are told apart by their process title, "zflow: squares worker.<i>").
    """
    timeout = timeout or timeout_for(records)
    argv = zflow_argv(records, workers, telemetry=telemetry, quiet=False,
                      extra=extra if live else (*extra, "--json"))
    run = run_tree(argv, timeout, sample_every=0.02, stdout_tty=live, timed_lines=not live)
    row = zflow_row(run, argv, records, workers, variant)
    if not live:
        row.update(zflow_phases(run, records))
    return row


def zflow_phases(run: TreeRun, records: int) -> dict[str, Any]:
    """Where a `zflow up --json` run spent its wall time, from its event lines.

    zflow stamps every event with "t", seconds since its status model was created (after the CLI
    loaded, validated and planned the topology); the harness stamps every line as it reads it.
    The smallest (read time - t) is when zflow's clock started, as seen by the harness. Then:

    - cli_s: command start -> zflow's clock starts (interpreter, imports, zygote launch, load,
      validation, plan);
    - barrier_s: -> `{"event":"overall","state":"running"}` (every replica forked, bound,
      connected, subscribed and ready);
    - stream_s: -> the last sink replica reports state "finished" (every
      record reached the sink; comparable to the baselines' "go to last answer");
    - stop_s: -> `{"event":"overall","state":"completed"}` (FINISHED, replicas exit and are reaped);
    - exit_s: -> the process exits (result line, zygote shut down, interpreter exit).
    startup_s = cli_s + barrier_s; rate_stream = records / stream_s.
    """
    out: dict[str, Any] = dict.fromkeys(
        ("cli_s", "barrier_s", "stream_s", "stop_s", "exit_s", "startup_s", "rate_stream"))
    events: list[tuple[float, dict]] = []
    for at, line in run.lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("t"), (int, float)):
            events.append((at, ev))
    if not events:
        return out
    clock0 = min(at - ev["t"] for at, ev in events)  # harness time of zflow's t = 0
    shapes: dict[str, str] = {}
    running = finished = completed = None
    for _, ev in events:
        kind = ev.get("event")
        if kind == "stats" and not shapes:
            shapes = {k: v.get("shape") for k, v in (ev.get("nodes") or {}).items()
                      if isinstance(v, dict)}
        elif kind == "overall" and ev.get("state") == "running" and running is None:
            running = ev["t"]
        elif kind == "overall" and ev.get("state") == "completed":
            completed = ev["t"]
        elif kind == "state" and ev.get("state") == "finished" and completed is None:
            # the sink's; without shapes (no stats line), the last node to finish
            if not shapes or shapes.get(ev.get("node")) == "sink":
                finished = ev["t"] if finished is None else max(finished, ev["t"])
    out["cli_s"] = clock0 - run.t_start
    if running is not None:
        out["barrier_s"] = running
        out["startup_s"] = out["cli_s"] + running
    if running is not None and finished is not None:
        out["stream_s"] = finished - running
        if out["stream_s"] > 0:
            out["rate_stream"] = records / out["stream_s"]
    if finished is not None and completed is not None:
        out["stop_s"] = completed - finished
    if completed is not None:
        out["exit_s"] = run.wall_s - (out["cli_s"] + completed)
    return out


def zflow_row(run: TreeRun, argv: list[str], records: int, workers: int,
              variant: str = "zflow") -> dict[str, Any]:
    row = _row(variant, records, workers, run)
    row["argv"] = argv[1:]
    row["sum"] = parse_sum(run.stdout)
    row.update(zflow_cpu(run))
    procs = run.sampled
    if procs:
        rss = [p["rss_kb"] for p in procs.values()]
        wrk = [p["rss_kb"] for p in procs.values() if _is_worker(p["cmd"])]
        row["rss_total_mb"] = sum(rss) / MB
        row["rss_worker_max_mb"] = max(wrk) / MB if wrk else None
        row["processes"] = len(procs)
        row["rss_source"] = "sampled VmHWM (20 ms)"
    return _finish(row, run, records)


def zflow_cpu(run: TreeRun) -> dict[str, Any]:
    """Where a `zflow up --json` run's CPU went: each node's replicas (exact, from their exits:
    the result's `cpu_s`) and the rest of the tree, zflow's own processes (CLI and supervisor,
    fork server, orphan guard): `cpu_<node>_s` and `cpu_zflow_s`."""
    nodes: dict[str, Any] = {}
    for line in reversed(run.stdout.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("event") == "result":
            nodes = obj.get("nodes") or {}
            break
    used = {f"cpu_{name}_s": n.get("cpu_s") for name, n in nodes.items()}
    if not used or None in used.values() or not run.cpu_s:
        return used
    return {**used, "cpu_zflow_s": run.cpu_s - sum(used.values())}


def zflow_probe(timeout: float = 30.0) -> tuple[bool, str]:
    """Can `zflow up` run squares at all (100 records, 1 worker, right sum)? (ok, reason)."""
    row = run_zflow(100, 1, timeout=timeout)
    return (True, "") if row["ok"] else (False, row["error"] or "failed")


#: The peers a user would pick instead of zflow (issue 16) that are not in the standard library:
#: variant -> (importable module, baseline module). Installed by `pip install '.[bench]'`.
OPTIONAL_PEERS = {"dask": ("dask", "dask_bag"), "bytewax": ("bytewax", "bytewax_flow")}
NOT_INSTALLED = "not installed: pip install '.[bench]'"


def skipped_row(variant: str, records: int, workers: int, why: str) -> dict[str, Any]:
    row = _row(variant, records, workers, None)
    row["skipped"] = why
    return row


def run_peer(variant: str, records: int, workers: int, transport: str = "ipc",
             timeout: float | None = None) -> dict[str, Any]:
    """An optional peer: its row, or a skipped row (never an error) when it is not installed."""
    module, baseline = OPTIONAL_PEERS[variant]
    if importlib.util.find_spec(module) is None:
        return skipped_row(variant, records, workers, f"{module} {NOT_INSTALLED}")
    return run_baseline(baseline, records, workers, transport, timeout, variant=variant)


RUNNERS = {
    "zflow": lambda n, w, transport: run_zflow(n, w),
    "zflow-be": lambda n, w, transport: run_zflow(n, w, variant="zflow-be",
                                                  extra=BEST_EFFORT),
    "seed": lambda n, w, transport: run_baseline("seed", n, w, transport),
    "mpqueue": lambda n, w, transport: run_baseline("mpqueue", n, w, transport),
    "batched": lambda n, w, transport: run_baseline("batched", n, w, transport),
    "batched-dict": lambda n, w, transport: run_baseline("batched_dict", n, w, transport,
                                                         variant="batched-dict"),
    "pool": lambda n, w, transport: run_baseline("pool", n, w, transport),
    "dask": lambda n, w, transport: run_peer("dask", n, w, transport),
    "bytewax": lambda n, w, transport: run_peer("bytewax", n, w, transport),
}
