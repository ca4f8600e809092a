"""Rich renderables built from the status model: the live screen and the final summary.

Rendering runs in the supervisor process, between message-routing work, a few times a second, so
everything here only reads the model and builds small tables: no sorting of logs, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from zflow.status.fmt import (  # noqa: F401 - re-exported: render's callers import them here
    PALETTE,
    SEP,
    STATE_STYLE,
    Segments,
    failed_log,
    fmt_bytes,
    fmt_count,
    fmt_cpu,
    fmt_duration,
    fmt_exit_codes,
    fmt_rate,
    log_label,
    node_color,
    prefix_width,
    result_line_segments,
    result_lines_segments,
)
from zflow.status.model import LIVE_STATES, NodeTotals, Replica, StatusModel


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def header(model: StatusModel) -> Text:
    t = Text()
    t.append("zflow ", style="bold")
    t.append(model.topology, style="bold cyan")
    t.append(f"  {fmt_duration(model.duration)}  ")
    t.append_text(_state(model.overall))
    return t


def _node_row(t: NodeTotals) -> list[RenderableType]:
    return [
        Text(t.name, style=node_color(t.name)[0]),
        _state(t.state),
        f"{t.ready}/{t.replicas}",
        fmt_count(t.msgs_in),
        fmt_count(t.msgs_out),
        fmt_rate(t.rate),
        Text(str(t.errors), style="red" if t.errors else ""),
        Text(str(t.restarts), style="magenta" if t.restarts else ""),
        fmt_cpu(t.cpu),
        fmt_bytes(t.rss),
        fmt_duration(t.cpu_s),
    ]


def _replica_row(model: StatusModel, r: Replica) -> list[RenderableType]:
    state = _state(r.state)
    if r.detail:
        state.append(f" {r.detail}", style="dim")
    return [
        Text(f"  .{r.index}", style="dim"),
        state,
        "1/1" if r.state in LIVE_STATES else "0/1",
        *((fmt_count(None), fmt_count(None), fmt_rate(None)) if model.nodes[r.node].kind ==
          "command" else (fmt_count(r.msgs("in", exclude=model.control_sockets(r.node))),
                          fmt_count(r.msgs("out", exclude=model.control_sockets(r.node))),
                          fmt_rate(model.replica_rate(r)))),
        Text(str(r.errors), style="red" if r.errors else ""),
        str(r.restarts),
        fmt_cpu(r.cpu),
        fmt_bytes(None if r.exited else r.rss),
        fmt_duration(r.cpu_s),
    ]


def _cell_width(cell: RenderableType) -> int:
    return Text(cell).cell_len if isinstance(cell, str) else (
        cell.cell_len if isinstance(cell, Text) else 1)


#: narrowest a name / state column gets before columns are left out (`work…`); names that wrap
#: (edges) keep more
NAME_MIN, WRAPPED_NAME_MIN = 5, 16
#: cells between two columns (padding and the blank vertical rule)
_GAP = 3


class FittedTable:
    """A status table that fits the width it is given: number columns never wrap nor shrink
    below their widest value (`4,000,000` stays whole on a narrow terminal, its header may be
    shortened to `ms…`); the columns in `optional` are left out first, in that order, while the
    table is wider than it is given at natural widths; then the name and state columns give way
    (down to `NAME_MIN`), then the columns in `drop_order` are left out, in that order.
    `table()` is the table with every column at its natural width."""

    def __init__(self, headers: Sequence[str], numeric: Sequence[bool],
                 rows: Sequence[Sequence[RenderableType]], drop_order: Sequence[str] = (),
                 wrap_names: bool = False, optional: Sequence[str] = ()) -> None:
        self.headers, self.numeric, self.rows = list(headers), list(numeric), rows
        self.drop_order = list(drop_order)
        self.optional = list(optional)
        self.wrap_names = wrap_names
        widest = [max((_cell_width(r[i]) for r in rows), default=1)
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

    def table(self, width: int | None = None) -> Table:
        tbl = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False)
        if width is None:
            keep, w = list(range(len(self.headers))), {}
        else:
            keep, w = self.widths(width)
        for i in keep:
            if self.numeric[i]:
                tbl.add_column(self.headers[i], justify="right", no_wrap=True, width=w.get(i),
                               overflow="ellipsis")
            else:
                wrap = self.wrap_names and i == 0
                tbl.add_column(self.headers[i], width=w.get(i), no_wrap=not wrap,
                               overflow="fold" if wrap else "ellipsis")
        for r in self.rows:
            tbl.add_row(*(r[i] for i in keep))
        return tbl

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(options.max_width))


def nodes_table(model: StatusModel, per_replica: bool = False) -> FittedTable:
    rows: list[list[RenderableType]] = []
    for t in model.all_node_totals():
        rows.append(_node_row(t))
        if per_replica:
            for r in model.replicas[t.name]:
                rows.append(_replica_row(model, r))
    # cpu: its share of a core now; cpu time: what it used so far, restarts included (`top`'s
    # TIME+), left out first when narrow
    return FittedTable(("node", "state", "ready", "msgs in", "msgs out", "msg/s", "err", "rst",
                        "cpu", "rss", "cpu time"), (False, False) + (True,) * 9, rows,
                       drop_order=("rss", "cpu", "rst", "err", "msg/s", "ready", "state"),
                       optional=("cpu time",))


def edges_table(model: StatusModel) -> FittedTable:
    rows: list[list[RenderableType]] = []
    for e in model.all_edge_totals():
        name = Text(f"{e.src} → {e.dst}", style="dim" if e.control else "")
        flight = Text(fmt_count(e.in_flight))
        if e.in_flight:
            flight.stylize("yellow")
        rows.append([name, fmt_count(e.sent), fmt_count(e.received), flight, fmt_rate(e.rate)])
    return FittedTable(("edge", "sent", "received", "in flight", "msg/s"),
                       (False,) + (True,) * 4, rows, drop_order=("in flight", "msg/s"),
                       wrap_names=True)


def progress_line(model: StatusModel, width: int = 40) -> Table | None:
    p = model.progress()
    if p.total is None:
        return None
    grid = Table.grid(padding=(0, 1))
    grid.add_column()
    grid.add_column()
    bar = ProgressBar(total=max(p.total, 1), completed=min(p.done, p.total) if p.total else 1,
                      width=width)
    pct = 100.0 * (p.fraction or 0.0)
    eta = "" if p.eta is None or p.done >= p.total else f"  ETA {fmt_duration(p.eta)}"
    grid.add_row(bar, Text(f"{fmt_count(p.done)}/{fmt_count(p.total)}  {pct:.1f}%{eta}"))
    return grid


def log_prefix(node: str, replica: int, width: int, color: bool) -> Text:
    return Text(log_label(node, replica, width), style=node_color(node)[0] if color else "")


def log_tail(model: StatusModel, n: int = 5, color: bool = True) -> Group | None:
    if not model.logs or n <= 0:
        return None
    w = prefix_width(model)
    lines = list(model.logs)[-n:]
    out = []
    for x in lines:
        t = log_prefix(x.node, x.replica, w, color)
        t.append(x.line, style="red" if x.stream == "stderr" and color else "")
        t.no_wrap = True
        t.overflow = "ellipsis"
        out.append(t)
    return Group(*out)


def render_status(model: StatusModel, per_replica: bool = False, log_lines: int = 5,
                  color: bool = True) -> Group:
    """The whole live screen."""
    parts: list[RenderableType] = [header(model), nodes_table(model, per_replica)]
    if model.edges:
        parts.append(edges_table(model))
    bar = progress_line(model)
    if bar is not None:
        parts.append(bar)
    tail = log_tail(model, log_lines, color)
    if tail is not None:
        parts.append(Text("─" * 20 + " last output", style="dim"))
        parts.append(tail)
    return Group(*parts)


def summary_table(model: StatusModel) -> FittedTable:
    rows: list[list[RenderableType]] = [[
        Text(t.name, style=node_color(t.name)[0]),
        str(t.replicas),
        _state(t.state),
        fmt_count(t.msgs_in),
        fmt_count(t.msgs_out),
        fmt_rate(t.mean_rate),
        Text(str(t.errors), style="red" if t.errors else ""),
        str(t.restarts),
        fmt_duration(t.cpu_s),
        fmt_bytes(t.max_rss),
        fmt_exit_codes(t.exit_codes),
    ] for t in model.all_node_totals()]
    # cpu: what all its replicas' processes used; peak rss: the largest any of them reached
    return FittedTable(("node", "replicas", "state", "msgs in", "msgs out", "mean msg/s",
                        "errors", "restarts", "cpu", "peak rss", "exit"),
                       (False, True, False, True, True, True, True, True, True, True, False),
                       rows, drop_order=("restarts", "mean msg/s", "replicas", "state", "exit"),
                       optional=("peak rss", "cpu"))


def _assembled(parts: Segments, **kwargs: Any) -> Text:
    t = Text(**kwargs)
    for text, style in parts:
        t.append(text, style=style)
    return t


def result_line(model: StatusModel) -> Text:
    """`squares completed in 3.21s (exit 0) · 10,000/10,000 records` (fmt.result_line_segments)."""
    return _assembled(result_line_segments(model))


def result_lines(model: StatusModel) -> list[Text]:
    """Sink results and dead letters, a line each (fmt.result_lines_segments)."""
    # a dead-letter path is only useful whole: never wrapped
    return [_assembled(parts, **({"no_wrap": True, "overflow": "ignore"} if whole else {}))
            for parts, whole in result_lines_segments(model)]


def failed_output(model: StatusModel, limit: int = 10) -> list[Text]:
    """Last stderr lines of failed replicas: the traceback a user needs, even in quiet mode."""
    w = prefix_width(model)
    out = []
    for node, replica, line in failed_log(model, limit):
        t = log_prefix(node, replica, w, True)
        t.append(line)
        out.append(t)
    return out


def render_summary(model: StatusModel, errors: Iterable[str] = ()) -> Group:
    """The final summary left on screen: per-node totals, result, sink results, failure."""
    parts: list[RenderableType] = [summary_table(model), result_line(model)]
    parts.extend(result_lines(model))
    if model.message:
        style = {"failed": "bold red", "incomplete": "bold yellow"}.get(model.overall, "")
        parts.append(Text(model.message, style=style))
    # the supervisor's messages often quote the same failure: say each thing once
    errs = [e for e in errors if e != model.message]
    if errs:
        parts.append(Text(f"errors ({len(errs)}):", style="red"))
        parts.extend(Text(f"  {e}") for e in errs[-10:])
    said = "\n".join([model.message or "", *errors])
    tail = failed_output(model)
    if tail and not all(t.plain.partition(f"{SEP} ")[2].strip() in said for t in tail):
        parts.append(Text("last output of failed replicas:", style="red"))
        parts.extend(tail)
    return Group(*parts)
