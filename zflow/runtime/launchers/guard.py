"""The orphan guard: a tiny process that outlives a killed supervisor just long enough.

The supervisor starts it with a pipe on stdin and writes `+PGID` / `-PGID` as replicas come and go,
`@TOKEN` for the run's token and `=PATH` for the run directory. When the pipe closes — the
supervisor exited, crashed or was SIGKILLed — every process group still listed gets SIGTERM, and
so does every process whose environment carries the run's token (`ZFLOW_RUN_TOKEN`: each replica
starts with it, and whatever it starts inherits it, even a `setsid` daemon the supervisor's
once-a-second descendant scan had not seen yet); SIGKILL follows 0.5 s later, so nothing zflow
started outlives it. Then the run directory (ipc endpoints, the control socket) is removed.
Python replicas also ask the kernel for SIGKILL on parent death.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from zflow import rundir
from zflow.runtime.launchers import Forked, fork_helper


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


#: every process of a run starts with this in its environment (a new value per run)
TOKEN = "ZFLOW_RUN_TOKEN"


def marked(token: str) -> list[int]:
    """Processes (of this user) whose initial environment carries the run's token."""
    needle = f"{TOKEN}={token}".encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or another user's
            continue
        if needle in env.split(b"\0"):
            found.append(int(d))
    return found


def main(lines: Any = None) -> int:
    """Read the supervisor's lines (stdin unless given) until the pipe closes, then clean up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    run_dir = token = None
    for line in sys.stdin if lines is None else lines:
        line = line.strip()
        if line[:1] == "+":
            groups.add(int(line[1:]))
        elif line[:1] == "-":
            groups.discard(int(line[1:]))
        elif line[:1] == "=":
            run_dir = line[1:]
        elif line[:1] == "@":
            token = line[1:]
    live = _signal([g for g in groups if _alive(g)], signal.SIGTERM)
    pids = _kill(marked(token), signal.SIGTERM) if token else []
    # a normal end leaves nothing alive: then nothing can start anything, and the second scan
    # of every process's environment (a few ms on a busy host, waited for by `zflow up`) is spared
    stopped_some = bool(live or pids)
    deadline = time.monotonic() + 0.5
    while (live or pids) and time.monotonic() < deadline:
        time.sleep(0.02)
        live = [g for g in live if _alive(g)]
        pids = [p for p in pids if running(p)]
    _signal(live, signal.SIGKILL)
    _kill(pids, signal.SIGKILL)
    if token and stopped_some:  # anything they started meanwhile (a handler of SIGTERM may)
        _kill(marked(token), signal.SIGKILL)
    if run_dir and os.path.basename(run_dir).startswith("zflow-"):
        rundir.remove(run_dir)
    return 0


def running(pid: int) -> bool:
    """Running: not gone, and not a zombie. An exec'd fork server carries the token and is the
    supervisor's child: SIGTERMed here it stays a zombie until the supervisor, which waits for
    this guard, reaps it, and counting it as alive held every run's exit for the whole 0.5 s.
    (The fork server's client asks the same of a forked replica.)"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _kill(pids: list[int], sig: int) -> list[int]:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def _signal(groups: list[int], sig: int) -> list[int]:
    for g in groups:
        try:
            os.killpg(g, sig)
        except ProcessLookupError:
            pass
    return groups


def _set_title(title: str) -> None:
    """setproctitle's C extension alone: its package imports logging, ~12 ms of CPU that every
    `zflow up` paid in this process (which imports nothing else) while pyzmq was imported."""
    try:
        from importlib.machinery import PathFinder
        from importlib.util import module_from_spec

        package = PathFinder.find_spec("setproctitle")
        spec = PathFinder.find_spec("_setproctitle", package.submodule_search_locations or [])
        module = module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        module.setproctitle(title)
    except Exception:  # noqa: BLE001 - not installed, or laid out otherwise: titles are a nicety
        try:
            from setproctitle import setproctitle

            setproctitle(title)
        except ImportError:
            pass


def fork() -> Forked:
    """Start the guard as a fork of this process (`launchers.fork_helper`): no interpreter to
    start and nothing to import (an exec'd guard cost ~50 ms of CPU at the start of every run,
    on 2 cores shared with the replicas). `zflow up` does it first thing: the child runs this
    module and nothing else, and never returns."""
    r, w = os.pipe()

    def guard() -> int:
        _set_title("zflow: orphan guard")
        with open(r, encoding="utf-8") as lines:
            return main(lines)

    pid = fork_helper(r, guard, stdout=False)  # it says nothing: its stdout is /dev/null
    os.close(r)
    return Forked(pid, stdin=open(w, "w", buffering=1, encoding="utf-8"))  # noqa: SIM115


if __name__ == "__main__":
    sys.exit(main())
