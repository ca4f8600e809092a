"""Rich renderables, checked with a recording console at a fixed width."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml
from rich.console import Console

from zflow.status.demo import FakeClock, bench, feed, squares_model
from zflow.status.render import (
    PALETTE,
    fmt_duration,
    fmt_exit_codes,
    fmt_rate,
    node_color,
    render_status,
    render_summary,
)


def _text(renderable: object, color: bool = False) -> str:
    con = Console(record=True, width=120, force_terminal=color, color_system="standard" if color
                  else None, file=open(os.devnull, "w"))  # noqa: SIM115
    con.print(renderable)
    return con.export_text(styles=color)


def _row(text: str, name: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.strip().startswith(name + " "))
    return line.split()


def test_live_screen_mid_run() -> None:
    clock = FakeClock()
    m = squares_model(clock)
    m.set_overall("running")
    m.set_total(10_000, "ventilator")
    for node, n in (("ventilator", 1), ("worker", 10), ("results", 1)):
        for i in range(n):
            m.replica_state(node, i, "running")
    clock.advance(2.0)
    m.replica_counters("ventilator", 0, {"work": (0, 6000, 0, 0)})
    for i in range(10):
        m.replica_counters("worker", i, {"work": (500, 0, 0, 0), "results": (0, 490, 0, 0)})
        m.replica_proc("worker", i, 100 + i, 25.0, 10 * 1024 * 1024, 0.5)
    m.replica_counters("results", 0, {"answers": (4800, 0, 0, 0)})
    m.log("worker", 7, "stdout", "Worker 7 answered: 49")
    out = _text(render_status(m))
    assert "squares" in out and "running" in out and "2.00s" in out
    assert _row(out, "ventilator") == ["ventilator", "running", "1/1", "0", "6,000", "3.0k", "0",
                                       "0", "-", "-", "-"]
    assert _row(out, "worker") == ["worker", "running", "10/10", "5,000", "4,900", "2.5k", "0",
                                   "0", "250%", "100.0", "MiB", "5.00s"]  # cpu time: 10 x 0.5 s
    assert "ventilator.work → worker.work" in out
    edge = _row(out, "ventilator.work")
    assert edge[-4:] == ["6,000", "5,000", "1,000", "2.5k"]
    assert "4,800/10,000  48.0%  ETA 2.17s" in out
    assert "worker.7     │ Worker 7 answered: 49" in out  # prefixes padded to `ventilator.0`
    per = _text(render_status(m, per_replica=True))
    assert sum(1 for x in per.splitlines() if x.strip().startswith(".")) == 12


def test_summary_after_squares_run() -> None:
    clock = FakeClock()
    m = squares_model(clock)
    feed(m, clock)
    out = _text(render_summary(m))
    assert _row(out, "ventilator")[:6] == ["ventilator", "1", "stopped", "0", "10,000", "4.0k"]
    assert _row(out, "worker")[:6] == ["worker", "10", "stopped", "10,000", "10,000", "4.0k"]
    assert _row(out, "results")[:5] == ["results", "1", "stopped", "10,000", "0"]
    assert _row(out, "worker")[-1] == "0"  # exit codes, all zero
    assert "squares completed in 2.80s (exit 0) · 10,000/10,000 records" in out
    assert "results: answers=10000  total=333283335000" in out
    status = _text(render_status(m))
    assert "10,000/10,000  100.0%" in status and "ETA" not in status


def test_summary_says_what_each_node_used_when_it_fits() -> None:
    """cpu (all replicas' processes) and peak rss (the largest) are the first columns left out
    when the summary is narrow: the node names never shrink for them."""
    clock = FakeClock()
    m = squares_model(clock)
    feed(m, clock)
    for i in range(10):
        m.replica_usage("worker", i, 0.125, (20 + i) * 1024 * 1024)
    wide = _text(render_summary(m))
    assert _row(wide, "worker")[-4:] == ["1.25s", "29.0", "MiB", "0"]
    # sampled for memory (20 MB) but never for CPU time, nor reaped: unknown, not 0
    assert _row(wide, "ventilator")[-4:] == ["-", "19.1", "MiB", "0"]

    def at(width: int) -> str:
        con = Console(record=True, width=width, color_system=None,
                      file=open(os.devnull, "w"))  # noqa: SIM115
        con.print(render_summary(m))
        return con.export_text()

    header = next(x for x in at(100).splitlines() if x.startswith("node"))
    assert "cpu" in header and "peak rss" not in header
    assert "ventilator" in at(100)  # not `vent…`
    assert "cpu" not in next(x for x in at(90).splitlines() if x.startswith("node"))


def test_the_plain_summary_is_the_rich_one_without_styles() -> None:
    """The plain view prints table.plain_summary, made without rich: the same text rich draws
    from render_summary (and the same node table), from the columns' minimum widths (~29 here:
    narrower, rich squeezes further) to wide, names cut to `…`, columns left out, a failure's
    stderr tail, a dead-letter path kept whole."""
    import io

    from zflow.status.render import nodes_table
    from zflow.status.table import plain_summary

    clock = FakeClock()
    m = squares_model(clock)
    feed(m, clock)
    for i in range(10):
        m.replica_usage("worker", i, 0.125, (20 + i) * 1024 * 1024)
    m.replica_state("worker", 4, "failed", "exit 1")
    m.log("worker", 4, "stderr", "Traceback (most recent call last):")
    m.log("worker", 4, "stderr", "ValueError: x")
    m.dead_letters["worker"] = {"records": 3, "path": "/tmp/a/long/path/to/dead-letters.jsonl"}
    errors = ["worker.1: boom", "worker.4 exited with code 1"]
    for width in (30, 45, 60, 72, 80, 100, 160):
        buf = io.StringIO()
        con = Console(file=buf, color_system=None, force_terminal=False, width=width,
                      highlight=False, emoji=False)
        con.print(render_summary(m, errors), crop=False, soft_wrap=True)
        assert plain_summary(m, errors, width) == buf.getvalue(), width
        buf = io.StringIO()
        Console(file=buf, color_system=None, force_terminal=False, width=width).print(
            table := nodes_table(m, per_replica=True), crop=False, soft_wrap=True)
        assert "\n".join(table.fitted.plain(width)) + "\n" == buf.getvalue(), width


def test_summary_shows_failure_and_traceback() -> None:
    m = squares_model()
    m.replica_state("worker", 2, "failed", "exit 1")
    m.replica_exit("worker", 2, 1)
    m.log("worker", 2, "stderr", "ZeroDivisionError: division by zero")
    m.log("worker", 3, "stderr", "unrelated warning")
    m.finish("failed", 1, "worker.2 failed beyond its restart policy")
    out = _text(render_summary(m, ["worker.2: crashed"]))
    assert "squares failed" in out and "(exit 1)" in out
    assert "worker.2 failed beyond its restart policy" in out
    assert "worker.2: crashed" in out
    assert "ZeroDivisionError" in out and "unrelated warning" not in out
    assert _row(out, "worker")[2] == "failed"


TOPOLOGIES = sorted((Path(__file__).resolve().parent.parent / "topologies").glob("*.yaml"))
NAMES = sorted({n for t in TOPOLOGIES for n in yaml.safe_load(t.read_text())["nodes"]})


def test_stable_node_colors() -> None:
    # the same in every process: fresh interpreters with different hash salts agree with this one
    code = ("import json, sys; from zflow.status.render import node_color; "
            "print(json.dumps({n: node_color(n) for n in sys.argv[1:]}))")
    ours = {n: list(node_color(n)) for n in NAMES}
    for seed in ("1", "2", "random"):
        p = subprocess.run([sys.executable, "-c", code, *NAMES], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(p.stdout) == ours, seed
    # different nodes get different colours where the palette allows: in every shipped topology
    assert len(TOPOLOGIES) >= 5
    for t in TOPOLOGIES:
        nodes = list(yaml.safe_load(t.read_text())["nodes"])
        assert len(nodes) <= len(PALETTE)
        assert len({node_color(n) for n in nodes}) == len(nodes), (t.name, ours)
    # and over many names every colour of the palette is used
    assert {node_color(f"node{i}") for i in range(40)} == set(PALETTE)
    # and in coloured output the log prefix carries it
    m = squares_model()
    m.log("worker", 1, "stdout", "hi")
    styled = _text(render_status(m), color=True)
    assert f"\x1b[{node_color('worker')[1]}mworker.1" in styled


def test_formatters() -> None:
    assert fmt_rate(None) == "-" and fmt_rate(0.0) == "0" and fmt_rate(2.5) == "2.5"
    assert fmt_rate(950) == "950" and fmt_rate(12_345) == "12.3k" and fmt_rate(2.5e6) == "2.50M"
    assert fmt_duration(3.2) == "3.20s" and fmt_duration(125) == "2m05s"
    assert fmt_duration(3725) == "1h02m"
    assert fmt_exit_codes([0, 0]) == "0" and fmt_exit_codes([None, None]) == "-"
    assert fmt_exit_codes([0, 0, 1, None]) == "0×2 1 -"


def test_render_bench_runs() -> None:
    """The timing itself is `python -m zflow.status.demo bench`'s job, not a unit test's."""
    mean = bench(3)
    assert math.isfinite(mean) and mean > 0
