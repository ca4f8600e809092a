"""--watch, without processes: the coordinator's reload (a restart that is not a crash) and the
watcher's verdict on what changed (tests/coordinator_script.py drives the coordinator)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from coordinator_script import PIPELINE, running

from zflow.plan import build_plan
from zflow.runtime import protocol as P
from zflow.runtime.up import replan
from zflow.runtime.watch import Changes, Watcher, code_files
from zflow.spec import load


def test_a_reload_restarts_the_node_at_once_and_not_as_a_crash(tmp_path: Path) -> None:
    s = running(tmp_path)
    assert s.coord.reload("mid", s.now, "m.py changed")
    assert s.launcher.signals == [("mid.0", signal.SIGTERM), ("mid.1", signal.SIGTERM)]
    for rid in ("mid.0", "mid.1"):
        s.exit(rid, 128 + signal.SIGTERM)
    s.tick()
    # a crash loop is 2 restarts within the window for mid (max_restarts: 2): a reload is none
    assert [x.id for x in s.launcher.specs[-2:]] == ["mid.0", "mid.1"]
    assert {s.coord.slots[r].incarnation for r in ("mid.0", "mid.1")} == {2}
    assert s.coord.slots["mid.0"].restarts == []
    assert s.model.replicas["mid"][0].restarts == 1  # shown as a restart all the same
    assert [x.line for x in s.model.logs][-2:] == ["reloading: m.py changed"] * 2
    s.say("mid.0", P.BOUND, endpoints={})
    s.tick()
    assert "mid.0" in s.sent_kinds(P.CONNECT)  # the late joiner's way through the barrier
    assert s.coord.code is None  # the run goes on


def test_an_exit_that_was_not_asked_for_is_still_a_crash(tmp_path: Path) -> None:
    s = running(tmp_path)
    s.coord.reload("mid", s.now, "m.py changed")
    s.exit("mid.0", 128 + signal.SIGTERM)
    s.tick()
    s.exit("mid.0", -9)  # the new incarnation crashes: back-off, counted
    s.tick()
    assert s.state("mid.0") == "restarting" and len(s.coord.slots["mid.0"].restarts) == 1


def test_no_reload_of_an_exactly_once_sink(tmp_path: Path) -> None:
    """Its memory of what it processed cannot be rebuilt: a reload would break the guarantee."""
    s = running(tmp_path, PIPELINE.replace("delivery: best-effort", "delivery: exactly-once"))
    assert not s.coord.reload("sink", s.now, "m.py changed")
    assert s.launcher.signals == [] and s.state("sink.0") == "running"
    assert "not reloaded" in s.model.logs[-1].line
    assert s.coord.reload("mid", s.now, "m.py changed")  # a transform may


def test_more_replicas_join_a_running_transform_and_count_in_its_stream(tmp_path: Path) -> None:
    s = running(tmp_path)
    assert s.coord.scale_up("mid", 3, s.now) is None
    assert s.launcher.specs[-1].id == "mid.2" and s.plan.nodes["mid"].replicas == 3
    assert s.plan.nodes["sink"].sockets["inp"].senders == 3
    s.say("mid.2", P.BOUND, endpoints={})
    s.tick()
    assert s.sent_kinds(P.CONNECT) == ["mid.2"]
    s.say("mid.2", P.READY)
    s.tick()
    assert ("mid.2", P.START, {}) in s.sent() and s.state("mid.2") == "running"
    # the stream ends when what the three received adds up to what was sent
    s.finish("src.0", out=[0, 90, 0, 0])
    s.tick()
    s.sent()
    for rid in ("mid.0", "mid.1", "mid.2"):
        s.say(rid, P.COUNT, socket="inp", n=30)
    s.tick()
    assert sorted(s.sent_kinds(P.INPUT_END)) == ["mid.0", "mid.1", "mid.2"]
    assert len(s.model.replicas["mid"]) == 3


def test_only_a_connecting_counted_transform_gets_replicas_at_run_time(tmp_path: Path) -> None:
    s = running(tmp_path)
    assert s.coord.scale_up("sink", 2, s.now) == \
        "only a Python transform can get more replicas while it runs"
    assert s.coord.scale_up("mid", 1, s.now) == "fewer replicas need a new run"
    marked = PIPELINE.replace("out: {type: PUSH, connect: sink.inp}",
                              "out: {type: PUSH, connect: sink.inp, codec: json}")
    (tmp_path / "json").mkdir()
    t = running(tmp_path / "json", marked.replace("run: m:Sink", "command: [cat]"))
    assert t.coord.scale_up("mid", 3, t.now) == "sink.inp does not end by count (it ends by " \
                                                 "peers)"
    assert t.launcher.specs[-1].id != "mid.2"


def test_the_watcher_reloads_changed_code_and_says_what_it_does_not_apply(
        tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    text = "\n".join(line[4:] for line in PIPELINE.splitlines())
    topo.write_text(text)
    (tmp_path / "m.py").write_text("def double(x): return 2 * x\n")

    args = argparse.Namespace(file=str(topo), set=[], scale=[])
    current = build_plan(load(str(topo)).topology, str(topo), run_dir=str(tmp_path / "run"))
    w = Watcher(current, lambda: replan(args, current))
    assert code_files(current, current.nodes["mid"]) == [str(tmp_path / "m.py")]
    assert w.poll() == Changes()
    (tmp_path / "m.py").write_text("def double(x): return 3 * x\n")
    assert w.poll().reloads == [("mid", "m.py changed"), ("sink", "m.py changed"),
                                ("src", "m.py changed")]
    topo.write_text(text.replace("replicas: 2", "replicas: 3")
                    .replace("run: m:Sink", "run: m:Sink\n    params: {scale: 2}"))
    got = w.poll()
    assert got.reloads == [("sink", "its params changed in the topology")]
    assert got.scales == [("mid", 3)] and got.notes == []  # the coordinator scales, if it can
    assert current.nodes["sink"].params == {"scale": 2}  # the next incarnation's spec
    assert current.nodes["mid"].replicas == 2
    topo.write_text(text.replace("max_restarts: 2", "max_restarts: 3"))
    got = w.poll()
    assert got.notes == ["mid: max_restarts changed: not applied (restart the run)"]
    topo.write_text("version: 1\nname: [\n")
    got = w.poll()
    assert got.reloads == [] and "is not valid; the run goes on as it was" in got.notes[0]
    assert current.to_dict()["nodes"]["mid"]["replicas"] == 2
