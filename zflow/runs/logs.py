"""`zflow logs`: a run's replica logs, merged in time order, with the live view's prefix.

Each line of `logs/NODE.N.log` (and its rotated `.1` … files) is `TIMESTAMP STREAM TEXT`, the
timestamp in UTC with microseconds, so lines of every replica sort together as text. Following
(`-f`) reads what the files gain, switching to a fresh file when one is rotated under it, and
ends once the run has ended and everything it wrote has been read.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TextIO

from zflow.records import record

_FILE = re.compile(r"^(?P<node>.+)\.(?P<replica>\d+)\.log(?:\.(?P<gen>\d+))?$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                       r"(?:(\d+(?:\.\d+)?)s)?$")


@record(frozen=True)
class Line:
    stamp: str  # sorts as time
    node: str
    replica: int
    stream: str
    text: str


def parse_since(text: str, now: float | None = None) -> str:
    """`--since`: `10m`, `1h30m`, `45s`, `2d`, or a timestamp (`2026-12-01T21:30:00`, local
    time unless it says Z or an offset) → the earliest stamp to show."""
    now = time.time() if now is None else now
    m = _DURATION.match(text.strip())
    if text.strip() and m and any(m.groups()):
        d, h, mi, s = (float(g or 0) for g in m.groups())
        t = now - (((d * 24 + h) * 60 + mi) * 60 + s)
    else:
        try:
            dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"--since {text!r}: not a duration (10m, 1h30m, 45s) nor a "
                             "timestamp (2026-12-01T21:30:00)") from None
        t = dt.timestamp()  # a naive time is local time, as `date` prints it
    return stamp_of(t)


def stamp_of(t: float) -> str:
    sec = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((t - sec) * 1e6):06d}Z"


def replica_files(logs: Path) -> dict[tuple[str, int], list[Path]]:
    """(node, replica) → its files, oldest first (`.3`, `.2`, `.1`, then the current one)."""
    found: dict[tuple[str, int], list[tuple[int, Path]]] = {}
    try:
        names = os.listdir(logs)
    except OSError:
        return {}
    for name in names:
        m = _FILE.match(name)
        if m:
            gen = int(m["gen"]) if m["gen"] else 0
            found.setdefault((m["node"], int(m["replica"])), []).append((gen, logs / name))
    return {k: [p for _, p in sorted(v, key=lambda x: -x[0])] for k, v in sorted(found.items())}


def select(files: dict[tuple[str, int], list[Path]], which: str | None) -> set[tuple[str, int]]:
    """The replicas `NODE` or `NODE.N` names (all without it); empty when it names none."""
    if not which:
        return set(files)
    node, _, idx = which.rpartition(".")
    if node and idx.isdigit() and (node, int(idx)) in files:
        return {(node, int(idx))}
    return {k for k in files if k[0] == which}


def _parse(key: tuple[str, int], raw: str) -> Line | None:
    stamp, _, rest = raw.rstrip("\n").partition(" ")
    stream, _, text = rest.partition(" ")
    if not stamp or not stream:
        return None
    return Line(stamp, key[0], key[1], stream, text)


def _read(key: tuple[str, int], paths: list[Path], since: str | None) -> Iterator[Line]:
    for p in paths:
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                for raw in f:
                    if raw.endswith("\n"):
                        line = _parse(key, raw)
                        if line is not None and (since is None or line.stamp >= since):
                            yield line
        except FileNotFoundError:  # rotated away while we read: its lines are in `.N+1`
            continue


def history(files: dict[tuple[str, int], list[Path]], keys: Iterable[tuple[str, int]],
            since: str | None = None, tail: int | None = None) -> list[Line]:
    """What is on disk now, in time order; `tail`: the last N lines of each replica."""
    streams = []
    for k in sorted(keys):
        lines: Iterable[Line] = _read(k, files[k], since)
        if tail is not None:
            lines = deque(lines, maxlen=tail) if tail > 0 else []
        streams.append(list(lines))
    return list(heapq.merge(*streams, key=lambda x: x.stamp))


class Follower:
    """New complete lines of each replica's current file, across rotations and new replicas."""

    def __init__(self, logs: Path, which: str | None) -> None:
        self.logs, self.which = logs, which
        self.open: dict[tuple[str, int], tuple[TextIO, int]] = {}
        self.partial: dict[tuple[str, int], str] = {}

    def skip_to_end(self, keys: Iterable[tuple[str, int]]) -> None:
        """Start following at the files' current ends (what `history` already showed)."""
        for k in keys:
            path = self.logs / f"{k[0]}.{k[1]}.log"
            try:
                f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except FileNotFoundError:
                continue
            f.seek(0, os.SEEK_END)
            self.open[k] = (f, os.fstat(f.fileno()).st_ino)

    def poll(self) -> list[Line]:
        out: list[Line] = []
        for k in select(replica_files(self.logs), self.which):
            path = self.logs / f"{k[0]}.{k[1]}.log"
            if k not in self.open:
                try:
                    f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                except FileNotFoundError:
                    continue
                self.open[k] = (f, os.fstat(f.fileno()).st_ino)
            f, ino = self.open[k]
            out.extend(self._drain(k, f))
            try:
                now_ino = os.stat(path).st_ino
            except FileNotFoundError:
                continue
            if now_ino != ino:  # rotated: the old file is read to its end, then the newer ones
                out.extend(self._drain(k, f))
                f.close()
                self.partial.pop(k, None)
                out.extend(self._rotated_since(k, ino))
                try:
                    nf = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                except FileNotFoundError:
                    del self.open[k]
                    continue
                self.open[k] = (nf, os.fstat(nf.fileno()).st_ino)
                out.extend(self._drain(k, nf))
        out.sort(key=lambda x: x.stamp)
        return out

    def _rotated_since(self, k: tuple[str, int], ino: int) -> list[Line]:
        """Rotated files newer than the one followed (rotated more than once between polls)."""
        current = f"{k[0]}.{k[1]}.log"
        older = [p for p in replica_files(self.logs).get(k, []) if p.name != current]
        inos = []
        for p in older:
            try:
                inos.append(os.stat(p).st_ino)
            except FileNotFoundError:
                inos.append(None)
        newer = older[inos.index(ino) + 1:] if ino in inos else older
        return list(_read(k, newer, None))

    def _drain(self, k: tuple[str, int], f: TextIO) -> list[Line]:
        data = self.partial.pop(k, "") + f.read()
        lines = data.split("\n")
        if lines[-1]:
            self.partial[k] = lines[-1]
        return [x for x in (_parse(k, raw) for raw in lines[:-1] if raw) if x is not None]

    def close(self) -> None:
        for f, _ in self.open.values():
            f.close()


def formatter(keys: Iterable[tuple[str, int]], prefix: bool, color: bool,
              timestamps: bool = False) -> Callable[[Line], str]:
    """`worker.3 │ text` as the live view prints it (colour on a terminal)."""
    from zflow.status.render import SEP, node_color

    width = max((len(f"{n}.{i}") for n, i in keys), default=0)

    def fmt(x: Line) -> str:
        text = f"[zflow] {x.text}" if x.stream == "zflow" else x.text
        if timestamps:
            text = f"{x.stamp} {text}"
        if not prefix:
            return text
        label = f"{x.node}.{x.replica}".ljust(width)
        if color:
            return f"\x1b[{node_color(x.node)[1]}m{label} {SEP}\x1b[0m {text}"
        return f"{label} {SEP} {text}"

    return fmt
