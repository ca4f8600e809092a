"""The status screens' plain-text pieces: colours, separators, numbers and durations.

Apart from render.py because the JSON and quiet views need these and not rich (~20 ms to import).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zflow.status.model import StatusModel

#: (rich style, ANSI SGR code) pairs; no red, which means errors
PALETTE: tuple[tuple[str, str], ...] = (
    ("cyan", "36"),
    ("magenta", "35"),
    ("green", "32"),
    ("yellow", "33"),
    ("blue", "34"),
    ("bright_cyan", "96"),
    ("bright_magenta", "95"),
    ("bright_green", "92"),
    ("bright_yellow", "93"),
    ("bright_blue", "94"),
)

SEP = "│"

#: rich styles of states (render.py draws them; the plain views take only the text)
STATE_STYLE = {
    "starting": "yellow",
    "bound": "yellow",
    "connecting": "yellow",
    "ready": "cyan",
    "running": "green",
    "finished": "blue",
    "draining": "blue",
    "stopped": "dim",
    "failed": "bold red",
    "restarting": "magenta",
    "stopping": "blue",
    "completed": "bold green",
    "incomplete": "bold yellow",
    "interrupted": "bold yellow",
}

#: a line as (text, rich style) pieces: render.py assembles them into rich Text, the quiet view
#: joins their text (it never imports rich)
Segments = list[tuple[str, str]]


def state_segment(state: str) -> tuple[str, str]:
    """A state's name with its style."""
    return state, STATE_STYLE.get(state, "")


def node_color(node: str) -> tuple[str, str]:
    """A node's color, the same in every run and process (crc32, not the salted ``hash()``)."""
    return PALETTE[zlib.crc32(node.encode("utf-8")) % len(PALETTE)]


def fmt_count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_rate(r: float | None) -> str:
    """Compact msg/s: 950, 12.3k, 1.25M."""
    if r is None:
        return "-"
    if r < 0.05:
        return "0"
    if r < 10:
        return f"{r:.1f}"
    if r < 1000:
        return f"{r:.0f}"
    if r < 1_000_000:
        return f"{r / 1000:.1f}k"
    return f"{r / 1_000_000:.2f}M"


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024  # type: ignore[assignment]
    return "-"  # pragma: no cover


def fmt_cpu(c: float | None) -> str:
    return "-" if c is None else f"{c:.0f}%"


def fmt_duration(s: float | None) -> str:
    """3.21s, 2m05s, 1h02m."""
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.2f}s" if s < 10 else f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def fmt_exit_codes(codes: Iterable[int | None]) -> str:
    """`0` when all replicas agree, else `0×9 1` — short enough for a table cell."""
    c = Counter(codes)
    if not c or set(c) == {None}:
        return "-"
    if len(c) == 1:
        return str(next(iter(c)))
    return " ".join(
        ("-" if k is None else str(k)) + (f"×{v}" if v > 1 else "")
        for k, v in sorted(c.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    )


def prefix_width(model: StatusModel) -> int:
    """Width of the widest `node.N` label, so log lines line up."""
    return max((len(f"{n}.{max(len(r) - 1, 0)}") for n, r in model.replicas.items()), default=0)


def result_line_segments(model: StatusModel) -> Segments:
    """`squares completed in 3.21s (exit 0) · 10,000/10,000 records`."""
    parts: Segments = [(model.topology, "bold"), (" ", ""), state_segment(model.overall),
                       (f" in {fmt_duration(model.duration)}", "")]
    if model.exit_code is not None:
        parts.append((f" (exit {model.exit_code})", ""))
    sinks = model.sinks
    # several sinks may each get a copy (their sum means nothing); a service's count is not a
    # stream's
    if len(sinks) == 1 and (model.total is not None or model.nodes[sinks[0]].shape == "sink"):
        p = model.progress()
        done = f" · {fmt_count(p.done)}" + ("" if p.total is None else f"/{fmt_count(p.total)}")
        parts.append((done + " records", ""))
    return parts


def result_lines_segments(model: StatusModel) -> list[tuple[Segments, bool]]:
    """Sink results (what `end()` returned), one `node: key=value` line each; then where
    dead-lettered records went (`node: N records dead-lettered → PATH`). With each line, whether
    it must stay whole (a path is only useful whole)."""
    out: list[tuple[Segments, bool]] = []
    for node, res in model.results.items():
        text = "  ".join(f"{k}={v}" for k, v in res.items()) if isinstance(res, dict) \
            else str(res)
        out.append(([(f"{node}: ", node_color(node)[0]), (text, "")], False))
    for node, dl in model.dead_letters.items():
        n = dl["records"]
        out.append(([(f"{node}: ", node_color(node)[0]),
                     (f"{n} record{'' if n == 1 else 's'} dead-lettered → {dl['path']}", "red")],
                    True))
    return out


def failed_log(model: StatusModel, limit: int = 10) -> list[tuple[str, int, str]]:
    """(node, replica, line) of the last stderr lines of failed replicas: the traceback a user
    needs, even in quiet mode."""
    failed = {(n, r.index) for n, reps in model.replicas.items() for r in reps
              if r.state == "failed"}
    if not failed:
        return []
    lines = [x for x in model.logs if (x.node, x.replica) in failed and x.stream != "stdout"]
    return [(x.node, x.replica, x.line) for x in lines[-limit:]]


def unsaid_failed_log(model: StatusModel, said: str) -> list[tuple[str, int, str]]:
    """`failed_log`, unless every one of its lines is already in `said` (the run's message and
    errors often quote the failure): the summary says each thing once."""
    tail = failed_log(model)
    return [] if all(line.strip() in said for _, _, line in tail) else tail


def log_label(node: str, replica: int, width: int) -> str:
    """`worker.3     │ ` before a node's output line, padded to `width` (prefix_width)."""
    return f"{f'{node}.{replica}'.ljust(width)} {SEP} "
