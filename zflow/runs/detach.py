"""`zflow up -d`: the run in its own session, the terminal back once it is running.

The parent validates and plans (so a bad file is reported exactly as by an attached `up`),
takes a name in the registry, and starts the same `zflow up` command line again as the
detached supervisor: a new session (`setsid`: no terminal, no SIGHUP when it closes), standard
input from /dev/null (or the topology read from `-`), its output to the run's `supervisor.log`.
It then waits on a pipe: the supervisor writes one line when the barrier opens; if it exits
first, the run could not start, and the parent prints what it said and exits with its code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from zflow import exitcodes
from zflow.runs.registry import Run, allocate, proc_start, write_json

#: in the detached supervisor's environment (and removed from it at once): its registry entry,
#: and the pipe to say it is running on
RUN_ENV, VERDICT_ENV = "ZFLOW_RUN", "ZFLOW_VERDICT_FD"

OUTCOME_OF = {exitcodes.OK: "completed", exitcodes.INCOMPLETE: "incomplete",
              exitcodes.INTERRUPTED: "interrupted"}


def up_detached(args: argparse.Namespace, argv: list[str]) -> int:
    """`zflow up -d`: the parent here, or (with RUN_ENV set) the detached supervisor."""
    if os.environ.get(RUN_ENV):
        return _supervise(args)
    return _start(args, argv)


def _start(args: argparse.Namespace, argv: list[str]) -> int:
    from zflow.runtime.up import load_topology

    result, _ = load_topology(args)
    if result.topology is None:
        return exitcodes.USAGE if result.unreadable else exitcodes.FAILED
    run = allocate(str(result.topology["name"]))
    label = getattr(args, "file_label", None)
    r, w = os.pipe()
    try:
        with open(run.path / "supervisor.log", "ab") as log, \
                open(args.file, "rb") if label else open(os.devnull, "rb") as stdin:
            proc = subprocess.Popen(
                [sys.executable, "-m", "zflow", *argv], stdin=stdin, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(w,),
                env={**os.environ, RUN_ENV: str(run.path), VERDICT_ENV: str(w)})
    except OSError as e:
        os.close(r)
        os.close(w)
        run.remove()
        print(f"zflow: cannot start the detached supervisor: {e}", file=sys.stderr)
        return exitcodes.START_FAILED
    os.close(w)
    write_json(run.path / "run.json", {
        "name": run.name, "topology": result.topology["name"], "pid": proc.pid,
        "pid_start": proc_start(proc.pid), "started": time.time(), "cwd": os.getcwd(),
        "file": label or os.path.abspath(args.file), "argv": argv})
    verdict, code = _wait(r, proc)
    if verdict is not None:
        print(run.name)
        hint = f"zflow ps {run.name} · zflow logs -f {run.name} · zflow stop {run.name}"
        url = verdict.get("metrics")
        print(f"zflow: {run.name} running (pid {proc.pid}){f'; metrics on {url}' if url else ''}"
              f"\n  {hint}", file=sys.stderr)
        return exitcodes.OK
    # it did not start: say what it said, as an attached `up` would have, and leave nothing
    said = (run.path / "supervisor.log").read_text(errors="replace")
    sys.stdout.write(said)
    run.remove()
    return code


def _wait(r: int, proc: subprocess.Popen) -> tuple[dict[str, Any] | None, int]:
    """The supervisor's verdict line, or (None, its exit code) if it exits first. Ctrl-C here
    interrupts the run being started, as it would an attached `up`."""
    buf = b""
    try:
        while True:
            try:
                ready, _, _ = select.select([r], [], [], 0.5)
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGTERM)
                continue
            if ready:
                chunk = os.read(r, 4096)
                buf += chunk
                if b"\n" in buf:
                    with contextlib.suppress(ValueError):
                        return json.loads(buf.partition(b"\n")[0]), exitcodes.OK
                if not chunk:  # closed without a verdict: it exited, or is about to
                    break
            elif proc.poll() is not None:
                break
        while True:
            try:
                return None, proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGTERM)
    finally:
        os.close(r)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _supervise(args: argparse.Namespace) -> int:
    """The detached supervisor: `zflow up` with the recorder subscribed, then the outcome."""
    from zflow.runs.recorder import Recorder
    from zflow.runtime.up import up_command
    from zflow.status.tee import Tee

    # a `zflow stop` before the supervisor installs its handlers still ends with an outcome
    signal.signal(signal.SIGTERM, _interrupt)
    path = Path(os.environ.pop(RUN_ENV))
    fd = int(os.environ.pop(VERDICT_ENV))
    os.set_inheritable(fd, False)  # no replica holds the pipe open past the supervisor
    run = Run(path.name, path)
    if not (args.json or args.plain):
        args.quiet = True  # the supervisor's own log: errors and the result, not every line
    recorder: list[Recorder] = []

    def record(plan: Any, model: Any, view: Any) -> Any:
        rec = Recorder(run, model, fd)
        rec.verdict.update(getattr(args, "metrics_info", {}))
        model.subscribe(rec)
        recorder.append(rec)
        return Tee(view, rec)

    args.status_hooks = [*getattr(args, "status_hooks", []), record]
    code = exitcodes.FAILED
    try:
        code = up_command(args)
    except KeyboardInterrupt:
        code = exitcodes.INTERRUPTED
    finally:
        model = recorder[0].model if recorder else None
        state = model.overall if model is not None and model.finished else \
            OUTCOME_OF.get(code, "failed")
        write_json(path / "outcome.json", {
            "state": state, "exit_code": code, "ended": time.time(),
            "message": None if model is None else model.message})
        if recorder:
            recorder[0].say(None)
        else:
            os.close(fd)
    return code
