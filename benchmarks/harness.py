"""Run one command as its own process tree and measure it from the outside.

- wall time: from just before the fork to the moment `wait4` returns (start and stop included);
- peak RSS of the largest process in the tree, exactly: `wait4`'s rusage covers the child and every
  descendant it reaped (ru_maxrss is the max over them, not a sum);
- optionally, per-process peak RSS by sampling VmHWM of every descendant (for commands that do not
  report their own, i.e. zflow): a lower bound for processes that live less than one interval;
- a timeout, after which the whole session is killed; any process left in the session after the
  command exited is reported as leaked and killed. Nothing started here outlives the call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class TreeRun:
    argv: list[str]
    t_start: float  # time.monotonic() just before the fork
    wall_s: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    leaked: int = 0
    stdout: str = ""
    stderr: str = ""
    maxrss_kb: int = 0  # largest single process in the tree (wait4)
    cpu_s: float = 0.0  # CPU seconds of the whole tree, user + system (wait4)
    #: pid -> {"cmd": str, "rss_kb": peak seen}; only when sampling
    sampled: dict[int, dict] = field(default_factory=dict)
    #: (time.monotonic() when read, line) for every stdout line; only with timed_lines
    lines: list[tuple[float, str]] = field(default_factory=list)

    def tail(self, lines: int = 3) -> str:
        """Last lines of stderr (or stdout), for an error cell."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(text[-lines:]) if text else f"exit code {self.returncode}"


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _sample(root: int, into: dict[int, dict]) -> None:
    from benchmarks.baselines.common import peak_rss_kb

    for pid in [root, *_descendants(root)]:
        rss = peak_rss_kb(pid)
        if not rss:
            continue
        entry = into.get(pid)
        if entry is None:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            entry = into[pid] = {"cmd": cmd, "rss_kb": 0}
        entry["rss_kb"] = max(entry["rss_kb"], rss)


def _session_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def run_tree(argv: Sequence[str], timeout: float, *, sample_every: float | None = None,
             env: dict[str, str] | None = None, stdin_tty: bool = False,
             stdout_tty: bool = False, timed_lines: bool = False) -> TreeRun:
    """Run `argv` in a new session with cwd = repository root; see the module docstring.

    `stdout_tty`: give the command a pseudo-terminal as stdout (to measure a live view); what it
    writes there is read and kept like ordinary stdout. `timed_lines`: read stdout through a pipe
    and stamp every line as it arrives (`TreeRun.lines`).
    """
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
    run = TreeRun(argv=list(argv), t_start=0.0)
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    master = slave = None
    tty_chunks: list[bytes] = []
    if stdout_tty:
        import pty

        master, slave = pty.openpty()
    done = threading.Event()
    result: dict = {}

    run.t_start = time.monotonic()
    proc = subprocess.Popen(
        list(argv), cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
        stdout=slave if stdout_tty else subprocess.PIPE if timed_lines else out_f,
        stderr=err_f, start_new_session=True)
    if slave is not None:
        os.close(slave)

    def reap() -> None:
        _, status, ru = os.wait4(proc.pid, 0)
        result["t_end"] = time.monotonic()
        result["status"] = status
        result["maxrss"] = ru.ru_maxrss
        result["cpu"] = ru.ru_utime + ru.ru_stime
        done.set()

    def drain_tty() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            tty_chunks.append(chunk)

    def read_lines() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            run.lines.append((time.monotonic(), raw.decode(errors="replace")))

    waiter = threading.Thread(target=reap, daemon=True)
    waiter.start()
    reader = None
    if master is not None or timed_lines:
        reader = threading.Thread(target=drain_tty if master is not None else read_lines,
                                  daemon=True)
        reader.start()
    deadline = run.t_start + timeout
    try:
        while not done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                run.timed_out = True
                break
            if sample_every:
                _sample(proc.pid, run.sampled)
                done.wait(min(sample_every, left))
            else:
                done.wait(left)
    finally:
        if not done.is_set():
            _killpg(proc.pid)
            done.wait(10)
        # the command has exited: anything still in its session is a leak
        if _session_alive(proc.pid):
            run.leaked = _count_session(proc.pid)
            _killpg(proc.pid)
            end = time.monotonic() + 5
            while _session_alive(proc.pid) and time.monotonic() < end:
                time.sleep(0.02)
        waiter.join(1)
        if reader is not None:
            reader.join(2)
        if master is not None:
            os.close(master)
        if proc.stdout is not None:
            proc.stdout.close()
    status = result.get("status")
    proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -9
    run.returncode = proc.returncode
    run.wall_s = result.get("t_end", time.monotonic()) - run.t_start
    run.maxrss_kb = result.get("maxrss", 0)
    run.cpu_s = result.get("cpu", 0.0)
    out_f.seek(0)
    err_f.seek(0)
    raw_out = b"".join(tty_chunks) if stdout_tty else out_f.read()
    run.stdout = raw_out.decode(errors="replace") + "".join(line for _, line in run.lines)
    run.stderr = err_f.read().decode(errors="replace")
    out_f.close()
    err_f.close()
    return run


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _count_session(sid: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getsid(int(d)) == sid:
                    n += 1
            except OSError:
                pass
    return n
