"""The detached run's recorder: a status-model subscriber that keeps the registry entry current.

It writes the snapshot (`status.json`, atomically) at most once a second, and within a refresh of
every state change; each replica's output to `logs/NODE.N.log` with a UTC timestamp per line,
rotated by size; the replica pids with their start times (`procs.json`), so `zflow down` can
clean up after a SIGKILLed supervisor; and, once, the verdict the waiting `zflow up -d` reads
(the barrier opened). All of it runs on the supervisor's thread between its polls.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, TextIO

from zflow.runs.registry import Run, proc_start, write_json
from zflow.status.saved import dump

#: size at which a replica's log file is rotated, and how many rotated files are kept
MAX_BYTES = int(os.environ.get("ZFLOW_LOG_MAX_BYTES", 10 * 1024 * 1024))
KEEP = int(os.environ.get("ZFLOW_LOG_KEEP", 3))


class _Stamp:
    """`2026-12-01T21:30:00.123456Z` for now; the seconds part is formatted once a second."""

    def __init__(self) -> None:
        self._sec = -1
        self._text = ""

    def __call__(self) -> str:
        t = time.time()
        sec = int(t)
        if sec != self._sec:
            self._sec, self._text = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._text}.{int((t - sec) * 1e6):06d}Z"


class RotatingLog:
    """One replica's log: `NODE.N.log`, then `.1` (newest) … `.KEEP` once it passes `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.f: TextIO = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.size = self.f.tell()

    def write(self, text: str) -> None:
        n = len(text.encode("utf-8", "replace")) if not text.isascii() else len(text)
        if self.size and self.size + n > self.max_bytes:
            self.rotate()
        self.f.write(text)
        self.size += n

    def rotate(self) -> None:
        self.f.close()
        for i in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        if self.keep > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self.f = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.size = 0

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()


class RunLogs:
    """Every replica's RotatingLog, opened on its first line; flushed at each refresh (a write
    per line would cost a system call per record for a chatty node)."""

    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.dir, self.max_bytes, self.keep = directory, max_bytes, keep
        self.files: dict[tuple[str, int], RotatingLog] = {}
        self.stamp = _Stamp()

    def write(self, node: str, replica: int, stream: str, line: str) -> None:
        f = self.files.get((node, replica))
        if f is None:
            f = self.files[(node, replica)] = RotatingLog(self.dir / f"{node}.{replica}.log",
                                                          self.max_bytes, self.keep)
        f.write(f"{self.stamp()} {stream} {line}\n")

    def flush(self) -> None:
        for f in self.files.values():
            f.flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class Recorder:
    """A view (start/refresh/close, from the supervisor) and a model subscriber (event/log)."""

    interval = 1.0
    #: a state change is written at the next refresh this long after the previous write
    min_interval = 0.2

    def __init__(self, run: Run, model: Any, verdict_fd: int | None = None) -> None:
        self.run, self.model, self.verdict_fd = run, model, verdict_fd
        self.logs = RunLogs(run.logs)
        self._last = float("-inf")
        self._dirty = True
        self._procs: dict[int, int | None] = {}
        #: extra facts for the verdict (the metrics address)
        self.verdict: dict[str, Any] = {}

    # -- the model's listener ------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> None:
        self._dirty = True
        if kind == "overall":
            self.write()
            if fields.get("state") == "running":
                self.say({"state": "running", **self.verdict})

    def log(self, node: str, replica: int, stream: str, line: str) -> None:
        self.logs.write(node, replica, stream, line)

    # -- the supervisor's view calls -----------------------------------------------------------
    def start(self) -> None:
        self.write()

    def refresh(self) -> None:
        self.logs.flush()
        since = time.monotonic() - self._last
        if since >= self.interval or (self._dirty and since >= self.min_interval):
            self.write()

    def close(self) -> None:
        self.logs.close()
        self.write()

    # -- writing -------------------------------------------------------------------------------
    def write(self) -> None:
        self._last, self._dirty = time.monotonic(), False
        snap = self.model.snapshot(logs=False)
        snap["saved"] = time.time()
        snap.update(self.verdict)
        snap["model"] = dump(self.model)
        write_json(self.run.path / "status.json", snap)
        pids = {r.pid for rs in self.model.replicas.values() for r in rs if r.pid}
        new = pids - self._procs.keys()
        if new:
            for pid in new:
                self._procs[pid] = proc_start(pid)
            write_json(self.run.path / "procs.json",
                       [[p, s] for p, s in self._procs.items() if s is not None])

    def say(self, verdict: dict[str, Any] | None) -> None:
        """Tell the waiting `zflow up -d` (once): a JSON line, then the pipe is closed (None:
        only closed, the run did not start)."""
        fd, self.verdict_fd = self.verdict_fd, None
        if fd is None:
            return
        if verdict is not None:
            with contextlib.suppress(OSError):
                os.write(fd, (json.dumps(verdict) + "\n").encode())
        with contextlib.suppress(OSError):
            os.close(fd)
