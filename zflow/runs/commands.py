"""`zflow ps`, `top`, `logs`, `stop` and `down`: what a user does with runs in the registry.

Every command reads the run's entry afresh (another process writes it) and never needs the
supervisor to answer: a run that is stuck or was SIGKILLed is still shown, followed, stopped
and cleaned up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from zflow import exitcodes
from zflow.runs import registry
from zflow.runs.registry import LIVE, STALE, Run

#: how often `top` and `logs -f` look at the files
POLL = 0.25


def _err(msg: str) -> None:
    print(f"zflow: {msg}", file=sys.stderr)


def _unknown(name: str) -> int:
    known = [r.name for r in registry.runs()]
    where = f"runs: {', '.join(known)}" if known else "there are no runs"
    _err(f"no run named {name!r} ({where}; 'zflow ps' lists them)")
    return exitcodes.FAILED


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and \
        os.environ.get("TERM") != "dumb"


def _age(seconds: float) -> str:
    from zflow.status.render import fmt_duration

    return fmt_duration(max(0.0, seconds)) if seconds < 60 else fmt_duration(int(seconds))


def describe(run: Run) -> dict[str, Any]:
    """One run as `zflow ps --json` lists it."""
    info, status, out = run.info, run.status, run.outcome
    state = run.state()
    started = info.get("started")
    ended = out.get("ended") if out else None
    return {
        "name": run.name, "state": state, "exit_code": out.get("exit_code") if out else None,
        "pid": info.get("pid"), "topology": info.get("topology"), "file": info.get("file"),
        "started": started, "ended": ended,
        "uptime": None if started is None else round((ended or time.time()) - started, 3),
        "metrics": (status or {}).get("metrics"), "message": out.get("message") if out else None,
        "path": str(run.path),
    }


# -- ps ------------------------------------------------------------------------------------------
def ps_command(args: argparse.Namespace) -> int:
    if args.name:
        run = registry.find(args.name)
        if run is None:
            return _unknown(args.name)
        if args.json:
            d = describe(run)
            d["status"] = {k: v for k, v in (run.status or {}).items() if k != "model"}
            print(json.dumps(d, ensure_ascii=False))
            return exitcodes.OK
        return _show_run(run)
    rows = [describe(r) for r in registry.runs()]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return exitcodes.OK
    if not rows:
        print("no runs (zflow up -d FILE starts one)", file=sys.stderr)
        return exitcodes.OK
    head = ("NAME", "STATE", "EXIT", "PID", "STARTED", "UPTIME", "FILE")
    table = [head]
    for d in rows:
        started = "-" if d["started"] is None else time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(d["started"]))
        table.append((d["name"], d["state"], "-" if d["exit_code"] is None else str(d["exit_code"]),
                      str(d["pid"] or "-"), started,
                      "-" if d["uptime"] is None else _age(d["uptime"]), d["file"] or "-"))
    widths = [max(len(r[i]) for r in table) for i in range(len(head) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return exitcodes.OK


def _model(run: Run) -> Any:
    from zflow.status.saved import restore

    status = run.status
    if not status or "model" not in status:
        return None
    return restore(status["model"])


def _console() -> Any:
    from rich.console import Console

    color = _color()
    tty = sys.stdout.isatty()
    # not on a terminal: as wide as the plain view's summary, so names are not cut short
    return Console(file=sys.stdout, highlight=False, emoji=False, force_terminal=color or None,
                   width=None if tty else 100, **({} if color else {"color_system": None}))


def _run_line(run: Run) -> str:
    d = describe(run)
    parts = [f"run {run.name}", d["state"]]
    if d["exit_code"] is not None:
        parts.append(f"exit {d['exit_code']}")
    parts.append(f"pid {d['pid']}")
    if d["metrics"]:
        parts.append(f"metrics {d['metrics']}")
    parts.append(f"{run.path}")
    line = " · ".join(parts)
    if d["state"] == STALE:
        line += ("\n  its supervisor is gone without an outcome (killed?); the figures are its "
                 f"last snapshot. 'zflow down {run.name}' cleans up.")
    return line


def _show_run(run: Run) -> int:
    from zflow.status.render import render_status, result_line, result_lines

    console = _console()
    console.print(_run_line(run), soft_wrap=True)
    model = _model(run)
    if model is None:
        console.print("no status yet")
        return exitcodes.OK
    console.print(render_status(model, per_replica=True, color=_color()))
    if run.outcome:  # what the summary adds to the table above: the result and the failure
        for t in [result_line(model), *result_lines(model)]:
            console.print(t, soft_wrap=True)
        if model.message and model.message != model.overall:
            console.print(model.message, soft_wrap=True)
    return exitcodes.OK


# -- top -----------------------------------------------------------------------------------------
def top_command(args: argparse.Namespace) -> int:
    """The live screen of a detached run, redrawn from its snapshot until it ends or Ctrl-C."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from zflow.status.render import render_status, render_summary

    run = registry.find(args.name)
    if run is None:
        return _unknown(args.name)
    console = _console()

    def screen() -> Any:
        model = _model(run)
        head = Text(_run_line(run), style="dim")
        if model is None:
            return Group(head, Text("waiting for its first status…"))
        return Group(head, render_status(model, per_replica=args.replicas, color=_color()))

    seen = None
    try:
        with Live(screen(), console=console, auto_refresh=False, transient=True) as live:
            while run.state() in LIVE:
                time.sleep(POLL)
                try:
                    mtime = (run.path / "status.json").stat().st_mtime_ns
                except OSError:
                    mtime = None
                if mtime != seen:
                    seen = mtime
                    live.update(screen(), refresh=True)
    except KeyboardInterrupt:
        return exitcodes.OK  # leaves the run alone: `zflow stop` stops it
    model = _model(run)
    console.print(_run_line(run), soft_wrap=True)
    if model is not None:
        console.print(render_summary(model, model.errors), crop=False)
    return exitcodes.OK


# -- logs ----------------------------------------------------------------------------------------
def logs_command(args: argparse.Namespace) -> int:
    from zflow.runs import logs

    run = registry.find(args.name)
    if run is None:
        return _unknown(args.name)
    since = None
    if args.since:
        try:
            since = logs.parse_since(args.since)
        except ValueError as e:
            _err(str(e))
            return exitcodes.USAGE
    files = logs.replica_files(run.logs)
    keys = logs.select(files, args.replica)
    if args.replica and not keys:
        names = _replica_names(run, files)
        if not _could_appear(run, args.replica):
            _err(f"run {run.name} has no node or replica {args.replica!r} "
                 f"({', '.join(names) or 'no output yet'})")
            return exitcodes.FAILED
    color = _color()
    # as wide as the widest label of every replica (as the live screen), not only of those
    # that wrote something yet: `logs -f` keeps one width for the whole run
    fmt = logs.formatter(set(keys) | set(_expected_keys(run, args.replica)),
                         not args.no_log_prefix, color, timestamps=args.timestamps)
    out = sys.stdout
    for line in logs.history(files, keys, since, args.tail):
        out.write(fmt(line) + "\n")
    out.flush()
    if not args.follow:
        return exitcodes.OK
    follower = logs.Follower(run.logs, args.replica)
    follower.skip_to_end(keys)
    try:
        while True:
            live = run.state() in LIVE
            for line in follower.poll():
                if since is None or line.stamp >= since:
                    out.write(fmt(line) + "\n")
            out.flush()
            if not live:  # the run had ended before this last read: nothing more will come
                return exitcodes.OK
            time.sleep(POLL)
    except KeyboardInterrupt:
        return exitcodes.OK
    finally:
        follower.close()


def _nodes(run: Run) -> dict[str, int]:
    status = run.status or {}
    return {n: int(v.get("replicas", 0)) for n, v in (status.get("nodes") or {}).items()}


def _could_appear(run: Run, which: str) -> bool:
    """A node (or replica) of the run that has written nothing yet."""
    nodes = _nodes(run)
    node, _, idx = which.rpartition(".")
    return which in nodes or (node in nodes and idx.isdigit() and int(idx) < nodes[node])


def _expected_keys(run: Run, which: str | None) -> list[tuple[str, int]]:
    nodes = _nodes(run)
    return [(n, i) for n, k in nodes.items() for i in range(k)
            if not which or which in (n, f"{n}.{i}")]


def _replica_names(run: Run, files: dict[tuple[str, int], Any]) -> list[str]:
    nodes = _nodes(run) or {}
    names = list(nodes) or sorted({n for n, _ in files})
    return [f"nodes: {', '.join(names)}"] if names else []


# -- stop and down -------------------------------------------------------------------------------
def _signal(run: Run, sig: int) -> bool:
    info = run.info
    if not run.alive():
        return False
    try:
        os.kill(int(info["pid"]), sig)
    except ProcessLookupError:
        return False
    return True


def stop_run(run: Run, timeout: float) -> int | None:
    """SIGTERM (the interrupt path: drain, `end()`, stop the replicas); after `timeout`, a second
    SIGTERM (kill the replicas at once); 5 s later, SIGKILL (the guard kills the replicas).
    Returns the run's exit code once its supervisor is gone (None: no outcome, killed)."""
    steps = [(signal.SIGTERM, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)]
    for sig, wait in steps:
        if not _signal(run, sig):
            break
        deadline = time.monotonic() + wait
        while run.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not run.alive():
            break
    return run.exit_code()


def _outcome_text(run: Run) -> str:
    out = run.outcome
    if not out:
        return f"{run.name}: {run.state()}"
    text = f"{run.name}: {out.get('state')} (exit {out.get('exit_code')})"
    msg = out.get("message")
    if msg and msg != out.get("state"):
        text += f": {msg}"
    return text


def stop_command(args: argparse.Namespace) -> int:
    code = exitcodes.OK
    for name in args.names:
        run = registry.find(name)
        if run is None:
            code = _unknown(name)
            continue
        state = run.state()
        if state == STALE:
            _err(f"{name}: its supervisor is gone without an outcome (stale); "
                 f"'zflow down {name}' cleans up")
            code = exitcodes.FAILED
            continue
        if state not in LIVE:
            print(f"{_outcome_text(run)} (had already ended)")
            continue
        stop_run(run, args.timeout)
        print(_outcome_text(run))
    return code


def kill_leftovers(run: Run) -> list[int]:
    """SIGKILL every recorded replica still alive (same pid, same start time) and its process
    group: what the guard would have done, had it been killed too."""
    killed = []
    for pid, start in registry.read_json(run.path / "procs.json") or []:
        if not registry.same_process(pid, start):
            continue
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def down_command(args: argparse.Namespace) -> int:
    code = exitcodes.OK
    names = [r.name for r in registry.runs()] if args.all else args.names
    if not names and not args.all:
        _err("name a run (or --all); 'zflow ps' lists them")
        return exitcodes.USAGE
    for name in names:
        run = registry.find(name)
        if run is None:
            code = _unknown(name)
            continue
        state = run.state()
        if state in LIVE:
            stop_run(run, args.timeout)
        killed = kill_leftovers(run)
        if run.alive():
            _err(f"{name}: its supervisor (pid {run.info.get('pid')}) would not exit; "
                 "entry kept")
            code = exitcodes.FAILED
            continue
        said = _outcome_text(run) if run.outcome else f"{name}: stale"
        run.remove()
        extra = f", {len(killed)} leftover process(es) killed" if killed else ""
        print(f"{said}; removed{extra}")
    return code
