"""The run registry: one 0700 directory per run under a per-user state directory.

    $ZFLOW_STATE_DIR, else $XDG_STATE_HOME/zflow/runs, else ~/.local/state/zflow/runs
      NAME/run.json        pid and start time of the supervisor, topology file, argv, started
           status.json     the status model's snapshot (rewritten atomically while it runs)
           outcome.json    state, exit code and message, written once the run is over
           procs.json      replica pids with their start times, for `down` after a crash
           supervisor.log  the supervisor's own output (errors and the result)
           logs/NODE.N.log replica output, one timestamped line each, rotated by size

A state directory on disk (not $XDG_RUNTIME_DIR, a tmpfs cleared at logout) keeps the outcome
of a run after the session that started it. A process is identified by pid *and* start time
(/proc/PID/stat), so a recycled pid never makes a dead run look alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from zflow.records import record

#: overrides the registry location (the tests give each test its own)
STATE_ENV = "ZFLOW_STATE_DIR"

#: what a run can be, besides the run phases (starting, running, draining, stopping) and the
#: outcomes (completed, incomplete, failed, interrupted)
STALE = "stale"

#: run phases: the supervisor is alive and the run is not over
LIVE = ("starting", "running", "draining", "stopping")


def state_dir() -> Path:
    """The registry root (created 0700 on first use by `allocate`)."""
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                              "state")
    return Path(base) / "zflow" / "runs"


def proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        if fields[0] == "Z":  # a zombie has exited: only its parent has not reaped it yet
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process(pid: int | None, start: int | None) -> bool:
    """Is the process that was `pid` at `start` still running?"""
    return bool(pid) and start is not None and proc_start(int(pid)) == start  # type: ignore[arg-type]


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (a reader never sees half a file): a temporary file, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@record
class Run:
    """One registry entry. Reads its files afresh on every call: another process writes them."""

    name: str
    path: Path

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.path / "run.json") or {}

    @property
    def status(self) -> dict[str, Any] | None:
        return read_json(self.path / "status.json")

    @property
    def outcome(self) -> dict[str, Any] | None:
        return read_json(self.path / "outcome.json")

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def alive(self) -> bool:
        """The supervisor is still running (pid and start time both match)."""
        info = self.info
        return same_process(info.get("pid"), info.get("pid_start"))

    def state(self) -> str:
        """A run phase while the supervisor lives, the outcome once written, else `stale`."""
        out = self.outcome
        if out:
            return str(out.get("state", "failed"))
        if not self.info:  # being created: `up -d` writes run.json right after the spawn
            young = time.time() - _mtime(self.path) < 10
            return "starting" if young else STALE
        if not self.alive():
            return STALE
        status = self.status
        return str(status.get("overall", "starting")) if status else "starting"

    def exit_code(self) -> int | None:
        out = self.outcome
        return None if not out else out.get("exit_code")

    def update_info(self, **fields: Any) -> None:
        info = self.info
        info.update(fields)
        write_json(self.path / "run.json", info)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _root(create: bool = False) -> Path:
    root = state_dir()
    if create:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            os.chmod(root, 0o700)
    return root


def allocate(topology: str) -> Run:
    """A new entry named after the topology: `squares`, then `squares-2`, `squares-3`…
    (mkdir is the lock: two `up -d` at once never get the same name)."""
    root = _root(create=True)
    n = 1
    while True:
        name = topology if n == 1 else f"{topology}-{n}"
        try:
            (root / name).mkdir(mode=0o700)
        except FileExistsError:
            n += 1
            continue
        path = root / name
        (path / "logs").mkdir(mode=0o700)
        return Run(name, path)


def runs() -> list[Run]:
    """Every entry, oldest first."""
    root = _root()
    try:
        entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    entries.sort(key=lambda p: ((read_json(p / "run.json") or {}).get("started", _mtime(p)),
                                p.name))
    return [Run(p.name, p) for p in entries]


def find(name: str) -> Run | None:
    if not name or "/" in name or name.startswith("."):
        return None
    path = _root() / name
    return Run(name, path) if path.is_dir() else None
