"""Status tables laid out without rich: the widths that fit, and the plain text of a table.

The live screen draws these tables with rich (render.FittedTable); a summary printed on a pipe or
in CI (the plain view) is the same table as text, made here without importing rich (~25-55 ms,
the last thing a plain run waited for). A cell is a `str` or a list of (text, rich style)
segments; the text alone is what the plain view prints. Cells are measured with len(): what
they hold is ASCII (node names are DNS labels) but `→`, which is one column wide.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from zflow.status.fmt import (
    Segments,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_exit_codes,
    fmt_rate,
    log_label,
    node_color,
    prefix_width,
    result_line_segments,
    result_lines_segments,
    state_segment,
    unsaid_failed_log,
)

if TYPE_CHECKING:
    from zflow.status.model import StatusModel

Cell = str | Segments

#: narrowest a name / state column gets before columns are left out (`work…`); names that wrap
#: (edges) keep more
NAME_MIN, WRAPPED_NAME_MIN = 5, 16
#: cells between two columns (padding and the blank vertical rule)
_GAP = 3


def cell_text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else "".join(text for text, _ in cell)


def styled(text: str, style: str = "") -> Segments:
    return [(text, style)]


class Fitted:
    """A status table that fits the width it is given: number columns never wrap nor shrink
    below their widest value (`4,000,000` stays whole on a narrow terminal, its header may be
    shortened to `ms…`); the columns in `optional` are left out first, in that order, while the
    table is wider than it is given at natural widths; then the name and state columns give way
    (down to `NAME_MIN`), then the columns in `drop_order` are left out, in that order."""

    def __init__(self, headers: Sequence[str], numeric: Sequence[bool],
                 rows: Sequence[Sequence[Cell]], drop_order: Sequence[str] = (),
                 wrap_names: bool = False, optional: Sequence[str] = ()) -> None:
        self.headers, self.numeric, self.rows = list(headers), list(numeric), rows
        self.drop_order = list(drop_order)
        self.optional = list(optional)
        self.wrap_names = wrap_names
        widest = [max((len(cell_text(r[i])) for r in rows), default=1)
                  for i in range(len(headers))]
        self.natural = [max(len(h), w) for h, w in zip(headers, widest, strict=True)]
        name_min = WRAPPED_NAME_MIN if wrap_names else NAME_MIN
        # a number column keeps its widest number and three letters of its header
        self.mins = [max(w, min(len(h), 3), 1) if num
                     else min(name_min if i == 0 else NAME_MIN, n)
                     for i, (h, w, n, num) in enumerate(zip(headers, widest, self.natural,
                                                             numeric, strict=True))]

    def widths(self, width: int) -> tuple[list[int], dict[int, int]]:
        """(kept column indexes, {index: width}) for a given width."""
        drop: list[str] = []
        for name in self.optional:
            keep = [i for i, h in enumerate(self.headers) if h not in drop]
            if sum(self.natural[i] for i in keep) + _GAP * (len(keep) - 1) <= width:
                break
            drop.append(name)
        for name in ["", *self.drop_order]:
            if name:
                drop.append(name)
            keep = [i for i, h in enumerate(self.headers) if h not in drop]
            avail = width - _GAP * (len(keep) - 1)
            if sum(self.mins[i] for i in keep) <= avail:
                break
        w = {i: self.natural[i] for i in keep}
        excess = sum(w.values()) - avail
        # names and states first, then number headers longer than their numbers
        for group in ([i for i in keep if not self.numeric[i]],
                      [i for i in keep if self.numeric[i]]):
            while excess > 0:
                slack = [i for i in group if w[i] > self.mins[i]]
                if not slack:
                    break
                i = max(slack, key=lambda j: w[j] - self.mins[j])
                w[i] -= 1
                excess -= 1
        return keep, w

    def plain(self, width: int) -> list[str]:
        """The table's lines as rich draws it without colour (render.FittedTable.table: a
        header, a rule, the rows; cells padded, numbers to the right, a cell too long for its
        column cut to `…`). Not for a table whose names wrap (the edges): rich folds them at
        word boundaries, which is left to rich."""
        if self.wrap_names:
            raise ValueError("a table whose names wrap is drawn by rich only")
        keep, w = self.widths(width)

        def line(cells: list[str]) -> str:
            out = []
            for i, text in zip(keep, cells, strict=True):
                if len(text) > w[i]:
                    text = text[: w[i] - 1] + "…"
                out.append(text.rjust(w[i]) if self.numeric[i] else text.ljust(w[i]))
            return (" " * _GAP).join(out)

        lines = [line([self.headers[i] for i in keep]),
                 "─" * (sum(w.values()) + _GAP * (len(keep) - 1))]
        lines.extend(line([cell_text(r[i]) for i in keep]) for r in self.rows)
        return lines


def summary(model: StatusModel) -> Fitted:
    """The final summary's table: per node, replicas, state, records, mean rate, errors,
    restarts, CPU time and peak RSS of its processes (left out first when narrow), exit codes."""
    rows: list[list[Cell]] = [[
        styled(t.name, node_color(t.name)[0]),
        str(t.replicas),
        [state_segment(t.state)],
        fmt_count(t.msgs_in),
        fmt_count(t.msgs_out),
        fmt_rate(t.mean_rate),
        styled(str(t.errors), "red" if t.errors else ""),
        str(t.restarts),
        fmt_duration(t.cpu_s),
        fmt_bytes(t.max_rss),
        fmt_exit_codes(t.exit_codes),
    ] for t in model.all_node_totals()]
    # cpu: what all its replicas' processes used; peak rss: the largest any of them reached
    return Fitted(("node", "replicas", "state", "msgs in", "msgs out", "mean msg/s", "errors",
                   "restarts", "cpu", "peak rss", "exit"),
                  (False, True, False, True, True, True, True, True, True, True, False), rows,
                  drop_order=("restarts", "mean msg/s", "replicas", "state", "exit"),
                  optional=("peak rss", "cpu"))


def summary_tail(model: StatusModel, errors: Iterable[str] = ()) -> list[Segments]:
    """What the summary says after its table: the result line, sink results and dead letters,
    the run's message, errors, and the last stderr lines of failed replicas (each thing once)."""
    out = [result_line_segments(model), *(parts for parts, _ in result_lines_segments(model))]
    if model.message:
        out.append(styled(model.message, {"failed": "bold red",
                                          "incomplete": "bold yellow"}.get(model.overall, "")))
    # the supervisor's messages often quote the same failure: say each thing once
    errs = [e for e in errors if e != model.message]
    if errs:
        out.append(styled(f"errors ({len(errs)}):", "red"))
        out.extend(styled(f"  {e}") for e in errs[-10:])
    tail = unsaid_failed_log(model, "\n".join([model.message or "", *errors]))
    if tail:
        out.append(styled("last output of failed replicas:", "red"))
        w = prefix_width(model)
        out.extend([(log_label(node, replica, w), node_color(node)[0]), (line, "")]
                   for node, replica, line in tail)
    return out


def plain_summary(model: StatusModel, errors: Iterable[str] = (), width: int = 100) -> str:
    """The final summary as text, without rich (the plain view's; the live view draws the same
    with render.render_summary)."""
    lines = summary(model).plain(width)
    lines.extend(cell_text(parts) for parts in summary_tail(model, errors))
    return "\n".join(lines) + "\n"
