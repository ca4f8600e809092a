"""Rich renderables built from the status model: the live screen and the final summary.

Rendering runs in the supervisor process, between message-routing work, a few times a second, so
everything here only reads the model and builds small tables: no sorting of logs, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from zflow.status import table
from zflow.status.fmt import (  # noqa: F401 - re-exported: render's callers import them here
    PALETTE,
    SEP,
    STATE_STYLE,
    Segments,
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
    state_segment,
)
from zflow.status.model import LIVE_STATES, NodeTotals, Replica, StatusModel
from zflow.status.table import Cell, Fitted, styled


def _state(state: str) -> Text:
    return Text(*state_segment(state))


def header(model: StatusModel) -> Text:
    t = Text()
    t.append("zflow ", style="bold")
    t.append(model.topology, style="bold cyan")
    t.append(f"  {fmt_duration(model.duration)}  ")
    t.append_text(_state(model.overall))
    return t


def _node_row(t: NodeTotals) -> list[Cell]:
    return [
        styled(t.name, node_color(t.name)[0]),
        [state_segment(t.state)],
        f"{t.ready}/{t.replicas}",
        fmt_count(t.msgs_in),
        fmt_count(t.msgs_out),
        fmt_rate(t.rate),
        styled(str(t.errors), "red" if t.errors else ""),
        styled(str(t.restarts), "magenta" if t.restarts else ""),
        fmt_cpu(t.cpu),
        fmt_bytes(t.rss),
        fmt_duration(t.cpu_s),
    ]


def _replica_row(model: StatusModel, r: Replica) -> list[Cell]:
    state = [state_segment(r.state)]
    if r.detail:
        state.append((f" {r.detail}", "dim"))
    return [
        styled(f"  .{r.index}", "dim"),
        state,
        "1/1" if r.state in LIVE_STATES else "0/1",
        *((fmt_count(None), fmt_count(None), fmt_rate(None)) if model.nodes[r.node].kind ==
          "command" else (fmt_count(r.msgs("in", exclude=model.control_sockets(r.node))),
                          fmt_count(r.msgs("out", exclude=model.control_sockets(r.node))),
                          fmt_rate(model.replica_rate(r)))),
        styled(str(r.errors), "red" if r.errors else ""),
        str(r.restarts),
        fmt_cpu(r.cpu),
        fmt_bytes(None if r.exited else r.rss),
        fmt_duration(r.cpu_s),
    ]


def _text(cell: Cell) -> RenderableType:
    return cell if isinstance(cell, str) else _assembled(cell)


class FittedTable:
    """A `table.Fitted` drawn with rich at the width it is given (the same layout the plain view
    prints as text). `table()` is the table with every column at its natural width."""

    def __init__(self, fitted: Fitted) -> None:
        self.fitted = fitted

    def table(self, width: int | None = None) -> Table:
        f = self.fitted
        tbl = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False)
        if width is None:
            keep, w = list(range(len(f.headers))), {}
        else:
            keep, w = f.widths(width)
        for i in keep:
            if f.numeric[i]:
                tbl.add_column(f.headers[i], justify="right", no_wrap=True, width=w.get(i),
                               overflow="ellipsis")
            else:
                wrap = f.wrap_names and i == 0
                tbl.add_column(f.headers[i], width=w.get(i), no_wrap=not wrap,
                               overflow="fold" if wrap else "ellipsis")
        for r in f.rows:
            tbl.add_row(*(_text(r[i]) for i in keep))
        return tbl

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(options.max_width))


def nodes_table(model: StatusModel, per_replica: bool = False) -> FittedTable:
    rows: list[list[Cell]] = []
    for t in model.all_node_totals():
        rows.append(_node_row(t))
        if per_replica:
            for r in model.replicas[t.name]:
                rows.append(_replica_row(model, r))
    # cpu: its share of a core now; cpu time: what it used so far, restarts included (`top`'s
    # TIME+), left out first when narrow
    return FittedTable(Fitted(
        ("node", "state", "ready", "msgs in", "msgs out", "msg/s", "err", "rst", "cpu", "rss",
         "cpu time"), (False, False) + (True,) * 9, rows,
        drop_order=("rss", "cpu", "rst", "err", "msg/s", "ready", "state"),
        optional=("cpu time",)))


def edges_table(model: StatusModel) -> FittedTable:
    rows: list[list[Cell]] = []
    for e in model.all_edge_totals():
        name = styled(f"{e.src} → {e.dst}", "dim" if e.control else "")
        flight = styled(fmt_count(e.in_flight), "yellow" if e.in_flight else "")
        rows.append([name, fmt_count(e.sent), fmt_count(e.received), flight, fmt_rate(e.rate)])
    return FittedTable(Fitted(("edge", "sent", "received", "in flight", "msg/s"),
                              (False,) + (True,) * 4, rows, drop_order=("in flight", "msg/s"),
                              wrap_names=True))


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
    return FittedTable(table.summary(model))


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


def render_summary(model: StatusModel, errors: Iterable[str] = ()) -> Group:
    """The final summary left on screen: per-node totals, result, sink results, failure (the
    plain view prints the same as text: table.plain_summary)."""
    return Group(summary_table(model),
                 *(_assembled(parts) for parts in table.summary_tail(model, errors)))
