"""The four output modes: live (recorded), plain, JSON lines, quiet; and --log-dir files."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from zflow.status.demo import FakeClock, squares_model
from zflow.status.model import StatusModel
from zflow.status.views import choose_mode, make_view, strip_control

ANSI = re.compile(r"\x1b")


def _run(mode: str, *, log_dir: str | None = None, color: bool | None = None,
         console: Console | None = None) -> tuple[str, StatusModel]:
    """Drive a view like the supervisor would: events, counters, logs, refreshes, close."""
    clock = FakeClock()
    m = squares_model(clock, workers=3)
    buf = io.StringIO()
    view = make_view(mode, m, buf, log_dir=log_dir, color=color, console=console)
    view.start()
    m.set_total(3000, "ventilator")
    for node, n in (("ventilator", 1), ("worker", 3), ("results", 1)):
        for i in range(n):
            m.replica_state(node, i, "running")
            view.event("state", node=node, replica=i, state="running", detail=None)
    m.set_overall("running")
    view.event("overall", state="running")
    for step in range(1, 11):
        clock.advance(0.5)
        sent = 300 * step
        m.replica_counters("ventilator", 0, {"work": (0, sent, 0, 0)})
        for i in range(3):
            m.replica_counters("worker", i, {"work": (sent // 3, 0, 0, 0),
                                             "results": (0, sent // 3, 0, 0)})
        m.replica_counters("results", 0, {"answers": (sent, 0, 0, 0)})
        line = f"Worker {step % 3} answered: {step * step}"
        m.log("worker", step % 3, "stdout", line)
        view.log("worker", step % 3, "stdout", line)
        view.refresh()
    view.log("worker", 1, "stderr", "\x1b[31mred warning\x1b[0m")
    view.event("error", node="worker", replica=1, message="boom")
    m.replica_restart("worker", 1)
    view.event("restart", node="worker", replica=1, delay=0.1, attempt=1)
    view.log("results", 0, "zflow", "end of stream after 3000 records")
    for node, n in (("ventilator", 1), ("worker", 3), ("results", 1)):
        for i in range(n):
            m.replica_state(node, i, "stopped")
            m.replica_exit(node, i, 0)
            view.event("state", node=node, replica=i, state="stopped", detail=None)
            view.event("exit", node=node, replica=i, code=0)
    m.set_result("results", {"total": 42})
    m.finish("completed", 0)
    view.event("overall", state="completed")
    view.close()
    view.close()  # idempotent
    return buf.getvalue(), m


def test_plain_has_no_control_codes_and_a_line_per_event() -> None:
    out, _ = _run("plain")
    assert not ANSI.search(out)
    lines = out.splitlines()
    assert sum(" worker.1 running" in x for x in lines) == 1
    assert sum(re.search(r"s (ventilator|worker|results)\.\d stopped$", x) is not None
               for x in lines) == 5
    assert any(x.endswith("squares running") for x in lines)
    assert any("ERROR worker.1: boom" in x for x in lines)
    assert any("worker.1 restarting in 0.1s (attempt 1)" in x for x in lines)
    assert "worker.1     │ red warning" in out  # node's own escapes stripped
    assert "worker.2     │ Worker 2 answered: 4" in out
    # periodic one-line summary every ~2 s of (fake) time: 5 s of run → 2 lines
    summaries = [x for x in lines if " · " in x and "ventilator" in x]
    assert len(summaries) == 2
    assert "worker 3/3 in" in summaries[0] and "%" in summaries[0]
    # final table and result
    assert re.search(r"worker\s+3\s+stopped\s+3,000\s+3,000", out)
    assert "squares completed in 5.00s (exit 0) · 3,000/3,000 records" in out
    assert "results: total=42" in out
    assert "errors (1):" in out and "worker.1: boom" in out


def test_the_plain_summary_strips_what_a_node_wrote_in_control_codes() -> None:
    """A failed replica's stderr tail and a sink's result are the node's text: on a pipe they
    come without its escapes and control characters (rich stripped some of them; the plain
    summary is made without rich now)."""
    m = squares_model()
    buf = io.StringIO()
    v = make_view("plain", m, buf)
    v.start()
    m.replica_state("worker", 4, "failed", "exit 1")
    m.log("worker", 4, "stderr", "\x1b[31mValueError: boom\x1b[0m\r and more")
    m.set_result("results", {"said": "ding\x07"})
    m.finish("failed", 1, "worker.4 failed")
    v.close()
    out = buf.getvalue()
    assert not ANSI.search(out) and "\x07" not in out and "\r" not in out
    # a carriage return is dropped, not taken for a line end (the line keeps its label)
    assert "worker.4     │ ValueError: boom and more" in out and "results: said=ding" in out


def test_the_plain_summary_fits_the_terminal_it_is_on(monkeypatch) -> None:
    """On a pipe the summary is 100 columns; on a terminal (`--plain` on one) $COLUMNS, else
    the terminal's width, else 80: a pty nobody sized says 0 columns, which would leave every
    name cut to `vent…`."""
    import os

    m = squares_model()

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:
            return 1

    def width(stream: io.StringIO) -> int:
        return make_view("plain", m, stream)._plain_width()  # type: ignore[attr-defined]

    monkeypatch.delenv("COLUMNS", raising=False)
    assert width(io.StringIO()) == 100
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    assert width(Tty()) == 80
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((132, 40)))
    assert width(Tty()) == 132
    monkeypatch.setenv("COLUMNS", "90")
    assert width(Tty()) == 90 and width(io.StringIO()) == 100


def test_plain_color_only_when_asked() -> None:
    out, _ = _run("plain", color=True)
    assert "\x1b[" in out
    # the summary table is still plain
    assert not ANSI.search(out[out.index("msgs in"):])


def test_json_lines() -> None:
    out, _ = _run("json")
    objs = [json.loads(x) for x in out.splitlines()]
    kinds = [o["event"] for o in objs]
    assert kinds[-1] == "result"
    assert kinds.count("stats") == 5  # every ~1 s (first refresh at 0.5 s, then 1.5, 2.5, …)
    assert {"state", "overall", "log", "error", "restart", "exit"} <= set(kinds)
    st = next(o for o in objs if o["event"] == "state")
    assert st == {"event": "state", "t": 0.0, "node": "ventilator", "replica": 0,
                  "state": "running", "detail": None}
    log = next(o for o in objs if o["event"] == "log")
    assert log["node"] == "worker" and log["line"].startswith("Worker")
    assert all(isinstance(o["t"], (int, float)) for o in objs)
    assert [o["t"] for o in objs] == sorted(o["t"] for o in objs)
    res = objs[-1]
    assert res["overall"] == "completed" and res["exit_code"] == 0
    assert res["nodes"]["worker"]["msgs_in"] == 3000
    assert res["progress"]["fraction"] == 1.0
    assert res["results"] == {"results": {"total": 42}}
    assert res["errors"] == ["worker.1: boom"]
    stats = [o for o in objs if o["event"] == "stats"]
    assert stats[-1]["edges"][0]["sent"] > stats[0]["edges"][0]["sent"]


def test_quiet_prints_errors_and_result_only() -> None:
    out, _ = _run("quiet")
    assert out.splitlines() == [
        "zflow: ERROR worker.1: boom",
        "squares completed in 5.00s (exit 0) · 3,000/3,000 records",
        "results: total=42",
    ]


def test_quiet_failure_shows_message_and_traceback() -> None:
    m = squares_model()
    buf = io.StringIO()
    v = make_view("quiet", m, buf)
    v.start()
    m.replica_state("worker", 4, "failed", "exit 1")
    v.event("state", node="worker", replica=4, state="failed", detail="exit 1")
    m.log("worker", 4, "stderr", "Traceback (most recent call last):")
    v.log("worker", 4, "stderr", "Traceback (most recent call last):")
    m.finish("failed", 1, "worker.4 crash-looped")
    v.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "zflow: worker.4 failed (exit 1)"
    assert lines[1].startswith("squares failed in") and "(exit 1)" in lines[1]
    assert "worker.4 crash-looped" in lines
    assert lines[-1].endswith("│ Traceback (most recent call last):")


def test_only_the_live_view_imports_rich() -> None:
    """The quiet view's result and the plain view's summary are render.py's without their
    styles, made without rich: importing it was the last ~25-55 ms such a run waited for
    (squares 10k, --quiet: 289 -> 231 ms)."""
    import subprocess
    import sys

    code = ("import io, sys\n"
            "from zflow.status.demo import squares_model\n"
            "from zflow.status.views import make_view\n"
            "for mode in ('quiet', 'json', 'plain'):\n"
            "    m = squares_model(); buf = io.StringIO(); v = make_view(mode, m, buf)\n"
            "    v.start(); m.replica_state('worker', 4, 'failed', 'exit 1')\n"
            "    m.log('worker', 4, 'stderr', 'Traceback'); m.set_result('results', {'n': 1})\n"
            "    m.finish('failed', 1, 'worker.4 failed'); v.close()\n"
            "    assert 'results: n=1' in buf.getvalue() or mode == 'json', buf.getvalue()\n"
            "print(sorted(x for x in sys.modules if x.split('.')[0] == 'rich'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("mode", ["live", "plain", "json", "quiet"])
def test_log_dir_written_per_replica(tmp_path: Path, mode: str) -> None:
    d = tmp_path / "logs"
    con = Console(file=io.StringIO(), force_terminal=True, width=120)
    _run(mode, log_dir=str(d), console=con if mode == "live" else None)
    names = sorted(p.name for p in d.iterdir())
    assert names == ["results.0.log", "worker.0.log", "worker.1.log", "worker.2.log"]
    w1 = (d / "worker.1.log").read_text().splitlines()
    assert w1[0] == "Worker 1 answered: 1"
    assert w1[-1] == "\x1b[31mred warning\x1b[0m"  # raw, as the node wrote it
    assert (d / "results.0.log").read_text() == "[zflow] end of stream after 3000 records\n"


def test_live_view_redraws_and_ends_with_summary() -> None:
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=120, color_system="standard")
    out, _ = _run("live", console=con)
    assert out == ""  # everything went through the console
    raw = buf.getvalue()
    # redraws: the live area is erased and re-drawn on every refresh (cursor-up + erase-line)
    assert raw.count("\x1b[2K") > 10
    assert raw.count("zflow") >= 10  # header drawn on each refresh
    plain = strip_control(raw)
    assert "ERROR worker.1: boom" in plain  # printed above the live area
    assert "worker.1 restarting" in plain
    assert "Worker 2 answered: 4" in plain
    tail = plain[plain.rindex("msgs in"):]
    assert "mean msg/s" in plain[plain.rindex("node"):]
    assert "squares completed in 5.00s (exit 0)" in tail
    assert "results: total=42" in tail


def test_live_view_without_color() -> None:
    buf = io.StringIO()
    m = squares_model()
    v = make_view("live", m, buf, color=False,
                  console=Console(file=buf, force_terminal=True, width=120, color_system=None))
    v.start()
    v.log("worker", 0, "stdout", "hello")
    v.refresh()
    v.close()
    assert "\x1b[3" not in buf.getvalue()  # no SGR colours (cursor controls are fine)
    assert "hello" in buf.getvalue()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_color_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    m = squares_model()
    assert make_view("plain", m, _Tty()).color is True  # type: ignore[attr-defined]
    assert make_view("plain", m, io.StringIO()).color is False  # type: ignore[attr-defined]
    assert make_view("quiet", m, _Tty()).color is False  # type: ignore[attr-defined]
    monkeypatch.setenv("NO_COLOR", "1")
    assert make_view("plain", m, _Tty()).color is False  # type: ignore[attr-defined]


def test_choose_mode() -> None:
    pipe = io.StringIO()
    assert choose_mode(quiet=True, stream=pipe) == "quiet"
    assert choose_mode(json_=True, stream=pipe) == "json"
    assert choose_mode(stream=pipe) == "plain"
    with pytest.raises(ValueError):
        make_view("fancy", squares_model(), pipe)


def test_strip_control() -> None:
    assert strip_control("\x1b[1;31mred\x1b[0m\tx\x07") == "red\tx"
    assert strip_control("plain │ text") == "plain │ text"


def test_failure_said_once() -> None:
    """The supervisor's error quotes the traceback; the summary must not repeat it."""
    msg = ("work.0 exited with code 1: RuntimeError: bad\n  last stderr lines:\n"
           "    RuntimeError: bad")
    # plain: the event line as it happened, then the summary's message (no errors list, no
    # tail); quiet: the error as it happened only
    for mode, times in (("plain", 4), ("quiet", 2)):
        m = squares_model()
        buf = io.StringIO()
        v = make_view(mode, m, buf)
        m.replica_state("worker", 0, "failed")
        m.log("worker", 0, "stderr", "RuntimeError: bad")
        v.event("error", message=msg)
        m.finish("failed", 1, msg)
        v.close()
        assert buf.getvalue().count("RuntimeError: bad\n") == times, (mode, buf.getvalue())
        assert "errors (" not in buf.getvalue()


# --- --no-log-prefix ----------------------------------------------------------------------------


def _logged(mode: str, *, console: Console | None = None, **kw: object) -> str:
    m = squares_model()
    buf = io.StringIO()
    view = make_view(mode, m, buf, color=False, console=console, **kw)  # type: ignore[arg-type]
    view.start()
    view.log("worker", 2, "stdout", "Worker 2 answered: 4")
    view.log("worker", 1, "stderr", "\x1b[31mred warning\x1b[0m")
    view.refresh()
    view.close()
    return buf.getvalue() if console is None else console.file.getvalue()  # type: ignore[attr-defined]


def test_plain_without_log_prefix_prints_the_lines_as_written() -> None:
    lines = _logged("plain", log_prefix=False).splitlines()
    assert "Worker 2 answered: 4" in lines and "red warning" in lines
    assert not any("│" in x for x in lines)
    assert "worker.2     │ Worker 2 answered: 4" in _logged("plain").splitlines()


def test_live_without_log_prefix() -> None:
    con = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    plain = strip_control(_logged("live", console=con, log_prefix=False))
    assert "Worker 2 answered: 4" in plain.splitlines() and "│" not in plain
    con = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    assert "worker.2     │ Worker 2 answered: 4" in strip_control(_logged("live", console=con))


# --- output that fits ---------------------------------------------------------------------------


def test_plain_result_lines_are_not_wrapped_but_the_table_fits() -> None:
    from zflow.status.demo import feed

    clock = FakeClock()
    m = squares_model(clock, workers=10)
    buf = io.StringIO()  # not a terminal: the plain console is 100 columns wide
    view = make_view("plain", m, buf)
    view.start()
    feed(m, clock, total=4_000_000)
    words = [f"word{i}" for i in range(40)]
    m.set_result("results", {"top": words})
    m.finish("completed", 0)
    view.close()
    lines = buf.getvalue().splitlines()
    (res,) = [x for x in lines if x.startswith("results: ")]
    assert res == f"results: top={words!r}" and len(res) > 100  # one line, whole
    table = lines[lines.index(next(x for x in lines if x.startswith("node "))):][:5]
    assert all(len(x) <= 100 for x in table)
    assert re.search(r"worker\s+10\s+\S+\s+4,000,000\s+4,000,000", "\n".join(table))


@pytest.mark.parametrize("width", [100, 80, 60, 50, 45])
def test_narrow_live_table_keeps_numbers_whole_names_shrink_first(width: int) -> None:
    from zflow.status.demo import feed
    from zflow.status.render import render_status

    clock = FakeClock()
    m = squares_model(clock, workers=10)
    feed(m, clock, total=4_000_000)
    con = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    con.print(render_status(m, color=False))
    out = con.file.getvalue()  # type: ignore[attr-defined]
    rows = [x for x in out.splitlines() if x.startswith(("ven", "wor", "res"))]
    assert all(len(x) <= width for x in out.splitlines())
    assert "4,0…" not in out and "4,000,…" not in out
    node_rows = rows[:3]
    assert [x.count("4,000,000") for x in node_rows] == [1, 2, 1]
    if width < 84:  # the natural width: node names give way first (ventilator → vent…)
        assert node_rows[0].startswith("vent") and not node_rows[0].startswith("ventilator")
