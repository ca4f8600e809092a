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
