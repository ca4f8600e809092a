"""The four ways `zflow up` shows a run: live screen, plain lines, JSON lines, quiet.

The supervisor owns the loop: it feeds the model, then calls ``view.event(...)`` for each state
change, ``view.log(...)`` for each captured output line and ``view.refresh()`` a few times a second;
``view.close()`` at the end prints the summary. Views throttle themselves with the model's clock, so
a fake clock makes them deterministic in tests.

Every mode writes ``<log_dir>/<node>.<replica>.log`` when ``log_dir`` is given (quiet too).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from zflow.status.fmt import (
    SEP,
    fmt_count,
    fmt_duration,
    fmt_rate,
    log_label,
    node_color,
    prefix_width,
    result_line_segments,
    result_lines_segments,
    unsaid_failed_log,
)
from zflow.status.model import StatusModel, jsonable

if TYPE_CHECKING:  # rich (and render.py, built on it) is imported by the views that draw
    from rich.console import Console, Group
    from rich.text import Text

MODES = ("live", "plain", "json", "quiet")

#: ANSI/VT escape sequences and other control characters (tab kept): plain output has none
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]"
                      r"|[\x00-\x08\x0b-\x1f\x7f]")


def strip_control(line: str) -> str:
    """Remove escape sequences a node may print, so plain/CI output stays clean."""
    return _CONTROL.sub("", line) if ("\x1b" in line or not line.isprintable()) else line


class View(Protocol):
    def start(self) -> None: ...
    def refresh(self) -> None: ...
    def event(self, kind: str, **fields: Any) -> None: ...
    def log(self, node: str, replica: int, stream: str, line: str) -> None: ...
    def close(self) -> None: ...


class LogFiles:
    """One file per replica, opened on its first line; line-buffered so a crash loses nothing."""

    def __init__(self, log_dir: str | None) -> None:
        self.dir = log_dir
        self._files: dict[tuple[str, int], TextIO] = {}

    def start(self) -> None:
        if self.dir:
            os.makedirs(self.dir, exist_ok=True)

    def path(self, node: str, replica: int) -> str:
        assert self.dir is not None
        safe = node.replace(os.sep, "_").replace("/", "_")
        return os.path.join(self.dir, f"{safe}.{replica}.log")

    def write(self, node: str, replica: int, stream: str, line: str) -> None:
        if not self.dir:
            return
        f = self._files.get((node, replica))
        if f is None:
            os.makedirs(self.dir, exist_ok=True)
            f = self._files[(node, replica)] = open(  # noqa: SIM115 - kept open for the run
                self.path(node, replica), "w", encoding="utf-8", errors="replace", buffering=1
            )
        f.write(f"[zflow] {line}\n" if stream == "zflow" else line + "\n")

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass
        self._files.clear()


def event_text(model: StatusModel, kind: str, fields: dict[str, Any]) -> str:
    """One short human line for an event (plain mode, and errors/restarts above the live screen)."""
    node = fields.get("node")
    rep = fields.get("replica")
    who = f"{node}.{rep}" if node is not None and rep is not None else (node or "")
    if kind == "state":
        detail = fields.get("detail")
        return f"{who} {fields.get('state')}" + (f" ({detail})" if detail else "")
    if kind == "overall":
        return f"{model.topology} {fields.get('state', model.overall)}"
    if kind == "error":
        msg = fields.get("message", "")
        return f"ERROR {who}: {msg}" if who else f"ERROR {msg}"
    if kind == "restart":
        text = f"{who} restarting"
        if fields.get("delay") is not None:
            text += f" in {float(fields['delay']):.1f}s"
        if fields.get("attempt") is not None:
            text += f" (attempt {fields['attempt']})"
        return text
    if kind == "exit":
        return f"{who} exited {fields.get('code')}"
    rest = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("node", "replica"))
    return " ".join(x for x in (kind, who, rest) if x)


class _Base:
    """What every mode shares: log files, the error list, once-only close."""

    def __init__(self, model: StatusModel, stream: TextIO, *, per_replica: bool = False,
                 color: bool = False, log_dir: str | None = None,
                 log_prefix: bool = True) -> None:
        self.model = model
        #: `node.N │` before each output line (off: the line as the node wrote it)
        self.log_prefix = log_prefix
        self.stream = stream
        self.per_replica = per_replica
        self.color = color
        self.files = LogFiles(log_dir)
        self.errors: list[str] = []
        self._closed = False
        self._width = prefix_width(model)

    def start(self) -> None:
        self.files.start()

    def refresh(self) -> None:
        pass

    def event(self, kind: str, **fields: Any) -> None:
        if kind == "error":
            self.errors.append(event_text(self.model, kind, fields).removeprefix("ERROR "))

    def log(self, node: str, replica: int, stream: str, line: str) -> None:
        self.files.write(node, replica, stream, line)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._finish()
        finally:
            self.files.close()
            try:
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def _finish(self) -> None:
        pass

    def _t(self) -> str:
        return f"{self.model.elapsed():7.2f}s"

    def _plain_width(self) -> int:
        """The plain summary's width: 100 columns on a pipe; on a terminal (`--plain` on one)
        $COLUMNS, else its width, else 80 (a pty nobody sized says 0), as rich had it."""
        if not _isatty(self.stream):
            return 100
        try:
            return max(0, int(os.environ["COLUMNS"])) or 80
        except (KeyError, ValueError):
            pass
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError):
            return 80

    def _prefixed(self, node: str, replica: int, line: str) -> str:
        if not self.log_prefix:
            return line if self.color else strip_control(line)
        label = f"{node}.{replica}".ljust(self._width)
        if self.color:
            return f"\x1b[{node_color(node)[1]}m{label} {SEP}\x1b[0m {line}"
        return f"{label} {SEP} {strip_control(line)}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LiveView(_Base):
    """rich Live screen, redrawn when the supervisor calls ``refresh()`` (auto_refresh off).

    Log lines are buffered and printed above the screen once per refresh: each print inside a
    Live redraws the screen, so printing per line would cost a full render per line.
    """

    min_interval = 0.1

    def __init__(self, model: StatusModel, stream: TextIO, *, per_replica: bool = False,
                 color: bool | None = None, log_dir: str | None = None,
                 console: Console | None = None, log_prefix: bool = True) -> None:
        from rich.console import Console
        from rich.live import Live

        if console is None:
            console = Console(file=stream, highlight=False, emoji=False,
                              **({"color_system": None} if color is False else {}))
        super().__init__(model, stream, per_replica=per_replica,
                         color=(console.color_system is not None and not console.no_color)
                         if color is None else color,
                         log_dir=log_dir, log_prefix=log_prefix)
        self.console = console
        self.live = Live(console=console, auto_refresh=False, transient=True,
                         vertical_overflow="ellipsis")
        self._pending: list[Text] = []
        self._last: float | None = None
        self._started = False

    def start(self) -> None:
        super().start()
        self.live.update(self.renderable())
        self.live.start()
        self._started = True

    def renderable(self) -> Group:
        from zflow.status.render import render_status

        return render_status(self.model, self.per_replica, color=self.color)

    def _flush(self) -> None:
        if self._pending:
            from rich.console import Group

            lines, self._pending = self._pending, []
            self.console.print(Group(*lines), soft_wrap=True)

    def refresh(self) -> None:
        now = self.model.clock()
        if self._last is not None and now - self._last < self.min_interval and not self._pending:
            return
        self._last = now
        self._flush()
        if self._started:
            self.live.update(self.renderable(), refresh=True)

    def event(self, kind: str, **fields: Any) -> None:
        super().event(kind, **fields)
        style = None
        if kind == "error" or (kind == "state" and fields.get("state") == "failed"):
            style = "bold red"
        elif kind == "restart":
            style = "magenta"
        elif kind == "exit" and fields.get("code") not in (0, None) and self.model.overall not in (
                "stopping", "interrupted"):
            style = "red"
        if style:
            from rich.text import Text

            self._pending.append(Text(event_text(self.model, kind, fields), style=style))
            self._flush()

    def log(self, node: str, replica: int, stream: str, line: str) -> None:
        from rich.text import Text

        from zflow.status.render import log_prefix

        super().log(node, replica, stream, line)
        t = log_prefix(node, replica, self._width, self.color) if self.log_prefix else Text()
        if "\x1b" in line:
            t.append_text(Text.from_ansi(line))
        else:
            t.append(line, style="italic dim" if stream == "zflow" else "")
        self._pending.append(t)

    def _finish(self) -> None:
        self._flush()
        if self._started:
            self.live.stop()
        from zflow.status.render import render_summary

        self.console.print(render_summary(self.model, self.errors), crop=False)


#: replica states the plain view does not print a line for (--json still has them)
QUIET_STATES = frozenset({"bound", "connecting"})


class PlainView(_Base):
    """No redraw, no control codes: a line per event, a one-line summary every ~2 s, the table."""

    interval = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last = self.model.clock()

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")

    def refresh(self) -> None:
        now = self.model.clock()
        if now - self._last >= self.interval and not self.model.finished:
            self._last = now
            self._write(f"{self._t()} {self.summary_line()}")
        self.stream.flush()

    def summary_line(self) -> str:
        """`running · ventilator out 10,000 · worker in 7,000 2.3k/s · … · 69.9% ETA 1.2s`."""
        parts = [self.model.overall]
        for t in self.model.all_node_totals():
            d = "in" if t.msgs_in or not t.msgs_out else "out"
            n = t.msgs_in if d == "in" else t.msgs_out
            s = f"{t.name} {t.ready}/{t.replicas} {d} {fmt_count(n)} {fmt_rate(t.rate)}/s"
            if t.errors:
                s += f" err {t.errors}"
            if t.restarts:
                s += f" rst {t.restarts}"
            parts.append(s)
        p = self.model.progress()
        if p.fraction is not None:
            s = f"{100 * p.fraction:.1f}%"
            if p.eta is not None and p.fraction < 1.0:
                s += f" ETA {fmt_duration(p.eta)}"
            parts.append(s)
        return " · ".join(parts)

    def event(self, kind: str, **fields: Any) -> None:
        super().event(kind, **fields)
        if kind == "state" and fields.get("state") in QUIET_STATES:
            return  # the barrier's inner steps: a line each per replica is noise here
        self._write(f"{self._t()} {event_text(self.model, kind, fields)}")

    def log(self, node: str, replica: int, stream: str, line: str) -> None:
        super().log(node, replica, stream, line)
        self._write(self._prefixed(node, replica, line))

    def _finish(self) -> None:
        """The live view's summary as text, made without rich (its import was the last
        ~55 ms a plain run waited for): the table fits the width, text lines (results, file
        paths) stay whole, copy-pasteable."""
        from zflow.status.table import plain_summary

        text = plain_summary(self.model, self.errors, self._plain_width())
        # no control codes on a pipe: a node's stderr tail or result may hold some
        self.stream.write("".join(strip_control(x) + "\n" for x in text[:-1].split("\n")))


class JsonView(_Base):
    """One JSON object per line: events, logs, ``stats`` every ~1 s and a final ``result``."""

    interval = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last: float | None = None

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        obj = {"event": kind, "t": round(self.model.elapsed(), 3)}
        obj.update(fields)
        self.stream.write(json.dumps(jsonable(obj), ensure_ascii=False) + "\n")

    def refresh(self) -> None:
        now = self.model.clock()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            self._emit("stats", self.model.snapshot(logs=False))
        self.stream.flush()

    def event(self, kind: str, **fields: Any) -> None:
        super().event(kind, **fields)
        self._emit(kind, fields)
        self.stream.flush()

    def log(self, node: str, replica: int, stream: str, line: str) -> None:
        super().log(node, replica, stream, line)
        self._emit("log", {"node": node, "replica": replica, "stream": stream, "line": line})

    def _finish(self) -> None:
        snap = self.model.snapshot(logs=False)
        snap["errors"] = list(self.errors)
        self._emit("result", snap)


class QuietView(_Base):
    """Only errors (as they happen) and the final result lines."""

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")

    def event(self, kind: str, **fields: Any) -> None:
        super().event(kind, **fields)
        if kind == "error":
            self._write(f"zflow: {event_text(self.model, kind, fields)}")
        elif kind == "state" and fields.get("state") == "failed":
            self._write(f"zflow: {event_text(self.model, kind, fields)}")

    def refresh(self) -> None:
        pass

    def _finish(self) -> None:
        """The result, as render.py's lines without their styles: without rich, whose import
        (~25 ms) would be the last thing a quiet run waits for."""
        m = self.model
        self._write("".join(text for text, _ in result_line_segments(m)))
        for parts, _ in result_lines_segments(m):
            self._write("".join(text for text, _ in parts))
        said = "\n".join(self.errors)
        if m.message and m.message not in said:
            self._write(m.message)
            said += "\n" + m.message
        w = prefix_width(m)
        for node, replica, line in unsaid_failed_log(m, said):
            self._write(strip_control(log_label(node, replica, w) + line))


def choose_mode(*, quiet: bool = False, json_: bool = False, plain: bool = False,
                stream: TextIO | None = None) -> str:
    """The CLI's flags to a mode: live only on a real terminal (not TERM=dumb)."""
    if quiet:
        return "quiet"
    if json_:
        return "json"
    stream = stream if stream is not None else sys.stdout
    if plain or not _isatty(stream) or os.environ.get("TERM") == "dumb":
        return "plain"
    return "live"


def make_view(mode: str, model: StatusModel, stream: TextIO | None = None, *,
              per_replica: bool = False, color: bool | None = None, log_dir: str | None = None,
              console: Console | None = None, log_prefix: bool = True) -> View:
    """Build the view for ``mode`` ('live' | 'plain' | 'json' | 'quiet' | 'auto').

    ``color=None`` means: colour only on a terminal (live; plain's log prefixes when stdout is a
    tty and NO_COLOR is unset); json and quiet never colour. ``console`` replaces the live
    view's console (tests record with it). ``log_prefix=False``: node output lines without
    their `node.N │` prefix (`zflow up --no-log-prefix`).
    """
    stream = stream if stream is not None else sys.stdout
    if mode == "auto":
        mode = choose_mode(stream=stream)
    if mode == "live":
        return LiveView(model, stream, per_replica=per_replica, color=color, log_dir=log_dir,
                        console=console, log_prefix=log_prefix)
    cls = {"plain": PlainView, "json": JsonView, "quiet": QuietView}.get(mode)
    if cls is None:
        raise ValueError(f"unknown view mode {mode!r} (one of {', '.join(MODES)}, auto)")
    if color is None:
        color = mode == "plain" and _color_terminal(stream)
    return cls(model, stream, per_replica=per_replica, color=color, log_dir=log_dir,
               log_prefix=log_prefix)


def _color_terminal(stream: TextIO) -> bool:
    """Colour log prefixes only on a terminal that wants colour (NO_COLOR, TERM=dumb say no)."""
    return (_isatty(stream) and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb")
