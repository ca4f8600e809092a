"""The coordinator driven by scripted histories: barrier, end of stream, exits, restarts, stop.

No sockets and no processes (tests/coordinator_script.py). Each test is a history a real run
produced or could produce; the edge cases are the ones end-to-end runs found.
"""

from __future__ import annotations

import signal

import pytest
from coordinator_script import PIPELINE, FakeLauncher, Script, running

from zflow import exitcodes
from zflow.runtime import protocol as P
from zflow.runtime.launchers import SpawnError

PUBSUB = """
    version: 1
    name: ps
    nodes:
      pub:
        run: m:numbers
        sockets:
          out: {type: PUB, bind: auto}
      sub:
        run: m:Sink
        replicas: 2
        sockets:
          inp: {type: SUB, connect: pub.out, subscribe: ""}
"""

EXACTLY_ONCE = PIPELINE.replace("delivery: best-effort", "delivery: exactly-once")




# -- the barrier ---------------------------------------------------------------------------------
def test_nobody_connects_until_everyone_has_bound(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE).start()
    assert [spec.id for spec in s.launcher.specs] == ["src.0", "mid.0", "mid.1", "sink.0"]
    for rid in ["src.0", "mid.0", "mid.1"]:
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    assert s.sent_kinds(P.CONNECT) == []
    s.say("sink.0", P.BOUND, endpoints={"inp": "ipc:///x/sink.0.inp"})
    s.tick()
    sent = s.sent()
    connects = {rid: f["endpoints"] for rid, k, f in sent if k == P.CONNECT}
    assert set(connects) == {"src.0", "mid.0", "mid.1", "sink.0"}
    # the endpoint the sink reported is where the transforms connect
    assert connects["mid.0"]["out"] == ["ipc:///x/sink.0.inp"]
    # and each transform waits for its two connections (one binder each) to be handshaken
    waits = {rid: f.get("wait") for rid, k, f in sent if k == P.CONNECT}
    assert waits == {"src.0": {}, "mid.0": {"inp": 1, "out": 1}, "mid.1": {"inp": 1, "out": 1},
                     "sink.0": {}}
    assert s.state("mid.0") == "connecting"


def test_start_only_when_every_replica_is_ready(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE).start()
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    for rid in ["src.0", "mid.0", "mid.1"]:
        s.say(rid, P.READY)
    s.tick()
    assert s.sent_kinds(P.START) == []
    assert s.model.overall == "starting"
    s.say("sink.0", P.READY)
    s.tick()
    assert sorted(s.sent_kinds(P.START)) == ["mid.0", "mid.1", "sink.0", "src.0"]
    assert s.model.overall == "running"
    assert all(s.state(r) == "running" for r in s.python_replicas())


def test_ready_before_connect_is_ignored(tmp_path) -> None:
    """A replica cannot be ready before it was told where to connect: such a message is out of
    order (or forged) and must not open the barrier."""
    s = Script(tmp_path, PIPELINE).start()
    for rid in s.python_replicas():
        s.say(rid, P.READY)
    s.tick()
    assert s.sent_kinds(P.START) == []
    assert s.state("src.0") == "starting"


def test_publishers_probe_until_subscribers_are_ready(tmp_path) -> None:
    s = Script(tmp_path, PUBSUB).start()
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    probes = [(rid, f["on"]) for rid, k, f in s.sent() if k == P.PROBE]
    assert ("pub.0", True) in probes
    spec = {x.id: x for x in s.launcher.specs}
    assert spec["sub.1"].socket("inp").probes_from == ["pub.0"]
    assert spec["pub.0"].socket("out").probe is True


def test_start_timeout_names_who_is_not_ready(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE, start_timeout=30.0).start()
    for rid in ["src.0", "mid.0", "mid.1"]:
        s.say(rid, P.BOUND, endpoints={})
    s.tick(29.0)
    assert s.coord.code is None
    s.tick(2.0)
    assert s.coord.code == exitcodes.START_FAILED
    assert "not ready after 30s" in s.coord.message
    assert "sink.0" in s.coord.message and "src.0" in s.coord.message


def test_only_publishers_are_asked_to_probe(tmp_path) -> None:
    """Probing makes a replica poll fast: asking 500 workers to would burn both cores."""
    s = Script(tmp_path, PUBSUB).start()
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    assert s.sent_kinds(P.PROBE) == ["pub.0"]


def test_the_start_timeout_says_what_each_replica_waits_for(tmp_path) -> None:
    s = Script(tmp_path, GUIDE, start_timeout=5.0).start()
    s.coord.endpoints_ready("vent.0")
    for rid in ("worker.0", "worker.1", "worker.2"):
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    s.say("worker.0", P.READY)
    s.tick(6.0)
    assert s.coord.message == (
        "not ready after 5s: vent.0 (not every peer connected), worker.1 (connecting: "
        "handshakes and subscriptions), worker.2 (connecting: handshakes and subscriptions)")


def test_a_command_node_with_a_ready_rule_waits_for_its_line(tmp_path) -> None:
    text = GUIDE.replace("stdin: go", "stdin: go\n        ready: {log: 'listening on \\d+'}")
    s = Script(tmp_path, text).start()
    s.coord.endpoints_ready("vent.0")
    s.coord.connections_ready("vent.0")
    assert s.state("vent.0") == "bound"  # connected to, but it has not said it is ready
    s.coord.output("vent.0", "stdout", "starting up")
    assert s.state("vent.0") == "bound"
    s.coord.output("vent.0", "stdout", "listening on 5557")
    assert s.state("vent.0") == "ready"


def test_a_command_node_with_a_ready_delay(tmp_path) -> None:
    text = GUIDE.replace("stdin: go", "stdin: go\n        ready: {delay: 2}")
    s = Script(tmp_path, text).start()
    s.coord.endpoints_ready("vent.0")
    s.coord.connections_ready("vent.0")
    s.tick(1.5)
    assert s.state("vent.0") == "bound"
    s.tick(0.6)
    assert s.state("vent.0") == "ready"


def test_the_start_timeout_names_at_most_ten_replicas(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE.replace("replicas: 2", "replicas: 40"), start_timeout=1.0)
    s.start()
    s.tick(2.0)
    assert s.coord.message.startswith("not ready after 1s: src.0 (not bound), mid.0 (not bound),")
    assert s.coord.message.endswith(" and 32 more")


COMMAND_WORKERS = """
    version: 1
    name: cw
    nodes:
      src:
        run: m:numbers
        sockets:
          out: {type: PUSH, bind: tcp, codec: json}
      work:
        command: [./worker]
        replicas: 2
        sockets:
          inp: {type: PULL, connect: src.out, codec: json}
"""


def test_a_command_node_is_spawned_once_what_it_connects_to_has_bound(tmp_path) -> None:
    """Its endpoints go into its environment once: a `bind: tcp` port is known only after the
    binder bound (it used to get `tcp://127.0.0.1:*` and fail)."""
    s = Script(tmp_path, COMMAND_WORKERS).start()
    assert [x.id for x in s.launcher.specs] == ["src.0"]
    s.say("src.0", P.BOUND, endpoints={"out": "tcp://127.0.0.1:41234"})
    s.tick()
    specs = {x.id: x for x in s.launcher.specs}
    assert set(specs) == {"src.0", "work.0", "work.1"}
    assert specs["work.1"].connect_endpoints == {"inp": ["tcp://127.0.0.1:41234"]}
    for rid in ("work.0", "work.1"):
        s.coord.endpoints_ready(rid)  # command connectors: ready once spawned
    s.tick()
    s.say("src.0", P.READY)
    s.tick()
    assert s.model.overall == "running"


def test_a_command_node_that_died_mid_stream_leaves_the_run_incomplete(tmp_path) -> None:
    """zflow cannot count inside a program: what a command replica held when it died may be
    lost, so the run does not say completed (exit 4, naming the replica)."""
    s = Script(tmp_path, COMMAND_WORKERS).start()
    s.say("src.0", P.BOUND, endpoints={"out": "tcp://127.0.0.1:41234"})
    s.tick()
    for rid in ("work.0", "work.1"):
        s.coord.endpoints_ready(rid)
    s.tick()
    s.say("src.0", P.READY)
    s.tick()
    assert s.model.overall == "running"
    s.exit("work.1", -9)
    s.tick(1.0)  # the back-off: a new incarnation
    assert s.state("work.1") == "starting" and len(s.launcher.specs) == 4
    s.coord.endpoints_ready("work.1")
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    s.exit("work.0", 0)
    s.exit("work.1", 0)
    s.tick()
    assert s.coord.code == exitcodes.INCOMPLETE
    assert s.coord.message == (
        "incomplete: records may have been lost inside work.1 (command nodes that died "
        "mid-stream: zflow cannot count inside them)")
    assert s.model.losses["uncounted"] == ["work.1"] and s.model.losses["lost"] == 0


def test_a_command_node_done_before_the_barrier_opens_does_not_hold_it(tmp_path) -> None:
    """A Guide-style program may do its work and exit 0 within milliseconds."""
    text = COMMAND_WORKERS.replace("replicas: 2", "replicas: 1")
    s = Script(tmp_path, text).start()
    s.say("src.0", P.BOUND, endpoints={"out": "tcp://127.0.0.1:41234"})
    s.tick()
    s.exit("work.0", 0)
    s.tick()
    assert s.state("work.0") == "stopped" and s.coord.slots["work.0"].finished
    s.say("src.0", P.READY)
    s.tick()
    assert s.model.overall == "running"


GUIDE = """
    version: 1
    name: guide
    nodes:
      vent:
        command: [./ventilator]
        stdin: go
        sockets:
          out: {type: PUSH, bind: auto, codec: json}
      worker:
        run: m:square
        replicas: 3
        sockets:
          inp: {type: PULL, connect: vent.out, codec: json}
"""


def test_a_command_binder_is_ready_once_every_connector_is_connected(tmp_path) -> None:
    """zflow cannot see inside the program, but it can count its connections: the barrier (and
    `stdin: go`) waits until all three workers are connected to the ventilator."""
    s = Script(tmp_path, GUIDE).start()
    s.coord.endpoints_ready("vent.0")
    assert s.state("vent.0") == "bound"
    assert s.coord.awaiting_connections() == [
        ("vent.0", {}, {"out": 3})]
    for rid in ("worker.0", "worker.1", "worker.2"):
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    for rid in ("worker.0", "worker.1", "worker.2"):
        s.say(rid, P.READY)
    s.tick()
    assert s.model.overall == "starting" and s.launcher.released == []
    s.coord.connections_ready("vent.0")
    s.tick()
    assert s.model.overall == "running"
    assert s.launcher.released == ["vent.0"]  # Enter, once everyone is there


def test_spawn_failure_is_a_start_failure_and_spawns_no_more(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE)
    s.launcher.fail["mid.0"] = "cannot run 'x': No such file or directory"
    s.start()
    assert [spec.id for spec in s.launcher.specs] == ["src.0"]
    assert s.coord.code == exitcodes.START_FAILED
    assert s.coord.message == "mid.0: cannot run 'x': No such file or directory"
    assert s.state("mid.0") == "failed"


class BatchLauncher(FakeLauncher):
    """A launcher that starts replicas together (as the local one asks the fork server)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def spawn_many(self, specs: list) -> list:
        self.batches.append([spec.id for spec in specs])
        out: list = []
        for spec in specs:
            try:
                out.append(self.spawn(spec))
            except SpawnError as e:
                out.append(e)
        return out


def test_a_batch_start_knows_every_replica_it_started_before_a_failure_stops_the_run(
        tmp_path) -> None:
    launcher = BatchLauncher()
    launcher.fail["mid.0"] = "cannot run 'x': No such file or directory"
    s = Script(tmp_path, PIPELINE, launcher=launcher).start()
    assert launcher.batches == [["src.0", "mid.0", "mid.1", "sink.0"]]  # one request
    assert s.coord.code == exitcodes.START_FAILED
    assert s.coord.message == "mid.0: cannot run 'x': No such file or directory"
    started = {"src.0", "mid.1", "sink.0"}
    assert {spec.id for spec in launcher.specs} == started
    # all known when the failure stops the run: each is told to stop at once (else the ones
    # registered after the failure would wait for a SIGTERM after the grace period)
    assert sorted(s.sent_kinds(P.STOP)) == sorted(started)
    assert s.state("mid.0") == "failed"
    for r in started:
        s.exit(r, 0)
    s.tick()
    assert s.coord.done


def test_fatal_at_import_is_exit_3_and_not_restarted(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE).start()
    s.say("mid.1", P.FATAL, phase="import", message="cannot import module 'm'")
    s.exit("mid.1", 3)
    s.tick()
    assert s.coord.code == exitcodes.START_FAILED
    assert s.coord.message == "mid.1: cannot import module 'm'"
    assert len(s.launcher.specs) == 4  # no second incarnation
    assert sorted(s.sent_kinds(P.STOP)) == ["mid.0", "sink.0", "src.0"]


# -- end of stream, count groups ---------------------------------------------------------------
def test_receivers_end_exactly_when_everything_sent_has_arrived(tmp_path) -> None:
    s = running(tmp_path)
    s.finish("src.0", out=[0, 100, 0, 900])
    s.tick()
    assert sorted(rid for rid, k, f in s.sent() if k == P.DRAIN) == ["mid.0", "mid.1"]
    s.say("mid.0", P.COUNT, socket="inp", n=60)
    s.say("mid.1", P.COUNT, socket="inp", n=39)
    s.tick(0.1)
    assert s.sent_kinds(P.INPUT_END) == []  # 99 of 100: not yet
    s.say("mid.1", P.COUNT, socket="inp", n=40)
    s.tick(0.1)
    ends = [(rid, f) for rid, k, f in s.sent() if k == P.INPUT_END]
    assert ends == [("mid.0", {"socket": "inp", "expected": 100}),
                    ("mid.1", {"socket": "inp", "expected": 100})]


def test_received_counts_every_receiver_replica(tmp_path) -> None:
    """Replica 0's count matters as much as the others'."""
    s = running(tmp_path)
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    s.say("mid.1", P.COUNT, socket="inp", n=100)
    s.tick(0.1)
    assert s.sent_kinds(P.INPUT_END) == ["mid.0", "mid.1"]
    s2 = running(tmp_path)
    s2.finish("src.0", out=[0, 100, 0, 0])
    s2.tick()
    s2.say("mid.0", P.COUNT, socket="inp", n=99)
    s2.tick(0.1)
    assert s2.sent_kinds(P.INPUT_END) == []


def test_counts_never_go_backwards_and_reach_the_status(tmp_path) -> None:
    s = running(tmp_path)
    s.say("mid.0", P.COUNT, socket="inp", n=50)
    s.say("mid.0", P.COUNT, socket="inp", n=20)  # a late report, overtaken
    assert s.coord.slots["mid.0"].counters.total("inp", 0) == 50
    assert s.model.replicas["mid"][0].sockets["inp"][0] == 50


def test_the_next_stage_ends_on_its_own_count(tmp_path) -> None:
    s = running(tmp_path)
    s.finish("src.0", out=[0, 10, 0, 0])
    s.say("mid.0", P.COUNT, socket="inp", n=4)
    s.say("mid.1", P.COUNT, socket="inp", n=6)
    s.tick()
    s.sent()
    s.tick()
    s.finish("mid.0", inp=[4, 0, 0, 0], out=[0, 4, 0, 0])
    s.tick()
    assert s.sent_kinds(P.DRAIN) == []  # the sink's senders are not all finished
    s.finish("mid.1", inp=[6, 0, 0, 0], out=[0, 5, 0, 0])  # one record filtered out
    s.tick()
    assert s.sent_kinds(P.DRAIN) == ["sink.0"]
    s.say("sink.0", P.COUNT, socket="inp", n=9)
    s.tick()
    ends = [(rid, f["expected"]) for rid, k, f in s.sent() if k == P.INPUT_END]
    assert ends == [("sink.0", 9)]


def test_a_stall_ends_the_stream_and_says_what_was_lost(tmp_path) -> None:
    s = running(tmp_path, drain_timeout=5.0)
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    s.say("mid.0", P.COUNT, socket="inp", n=50)
    s.say("mid.1", P.COUNT, socket="inp", n=40)
    s.tick()
    s.tick(3.0)
    s.say("mid.0", P.COUNT, socket="inp", n=50, idle=True)
    s.say("mid.1", P.COUNT, socket="inp", n=40, idle=True)
    s.tick(3.0)  # 6 s without progress, both idle since
    assert [d for _, d in s.coord.streams.transit()] == [10]
    assert any("10 of 100 records sent to mid.inp never arrived" in e for e in s.model.errors)
    assert s.sent_kinds(P.INPUT_END) == ["mid.0", "mid.1"]


def test_no_stall_while_a_receiver_is_busy(tmp_path) -> None:
    """A receiver working through a slow frame says nothing: that is not a stall."""
    s = running(tmp_path, drain_timeout=5.0)
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    s.say("mid.0", P.COUNT, socket="inp", n=50)
    s.say("mid.1", P.COUNT, socket="inp", n=40)
    s.tick()
    s.tick(1.0)
    s.say("mid.0", P.COUNT, socket="inp", n=50, idle=True)  # mid.1 stays busy
    s.tick(10.0)
    assert s.sent_kinds(P.INPUT_END) == []
    assert not any("never arrived" in e for e in s.model.errors)


def test_no_stall_before_the_drain_timeout(tmp_path) -> None:
    s = running(tmp_path, drain_timeout=5.0)
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    s.tick(1.0)
    s.say("mid.0", P.COUNT, socket="inp", n=10, idle=True)
    s.say("mid.1", P.COUNT, socket="inp", n=10, idle=True)
    s.tick(3.0)
    assert s.sent_kinds(P.INPUT_END) == []


def test_run_completes_when_every_replica_finished(tmp_path) -> None:
    s = running(tmp_path)
    for rid in ["src.0", "mid.0", "mid.1"]:
        s.finish(rid)
    s.tick()
    assert s.coord.code is None
    s.finish("sink.0", inp=[0, 0, 0, 0])
    s.tick()
    assert s.coord.code == exitcodes.OK
    assert sorted(s.sent_kinds(P.STOP)) == ["mid.0", "mid.1", "sink.0", "src.0"]
    for rid in s.python_replicas():
        s.exit(rid, 0)
    s.tick()
    assert s.coord.done
    assert s.coord.finish() == exitcodes.OK
    assert s.model.overall == "completed"
    assert all(s.state(r) == "stopped" for r in s.python_replicas())


def test_sink_result_reaches_the_model(tmp_path) -> None:
    s = running(tmp_path)
    s.say("sink.0", P.FINISHED, s={"inp": [5, 0, 50, 0]}, e=0, result={"sum": 42})
    assert s.model.results == {"sink": {"sum": 42}}
    assert s.state("sink.0") == "finished"


# -- an honest end ------------------------------------------------------------------------------
def _lossy_run(tmp_path, sink_got: int) -> Script:
    """100 sent; mid.0 took 30, passed on 25 and was killed; mid.1 took 60 and passed them on;
    10 never left the dead one's pipe. The sink receives `sink_got`."""
    s = running(tmp_path, drain_timeout=1.0)
    s.say("mid.0", P.STATS, s={"inp": [30, 0, 0, 0], "out": [0, 25, 0, 0]}, e=0)
    s.exit("mid.0", -9)
    s.tick()
    s.tick(0.2)
    s.say("mid.0", P.BOUND, endpoints={})
    s.tick()
    s.say("mid.0", P.READY)
    s.tick()
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    s.say("mid.1", P.COUNT, socket="inp", n=60, idle=True)
    s.say("mid.0", P.COUNT, socket="inp", n=0, idle=True)
    s.tick(0.5)
    s.tick(1.0)
    s.say("mid.0", P.COUNT, socket="inp", n=0, idle=True)
    s.say("mid.1", P.COUNT, socket="inp", n=60, idle=True)
    s.tick(1.0)  # stalled at 90 of 100: the inputs end
    assert s.sent_kinds(P.INPUT_END) == ["mid.0", "mid.1"]
    s.finish("mid.0", inp=[0, 0, 0, 0], out=[0, 0, 0, 0])
    s.finish("mid.1", inp=[60, 0, 0, 0], out=[0, 60, 0, 0])
    s.tick()
    s.say("sink.0", P.COUNT, socket="inp", n=sink_got)
    s.tick()
    s.finish("sink.0", inp=[sink_got, 0, 0, 0])
    s.tick()
    return s


def test_a_run_that_lost_records_is_incomplete_and_says_where(tmp_path) -> None:
    s = _lossy_run(tmp_path, sink_got=85)
    assert s.coord.code == exitcodes.INCOMPLETE
    assert s.coord.message == (
        "incomplete: 15 records lost\n"
        "  10 of 100 records sent to mid.inp never arrived\n"
        "  5 records were inside mid replicas that died")
    assert s.model.losses == {"lost": 15, "skipped": 0, "uncounted": [], "places": [
        "10 of 100 records sent to mid.inp never arrived",
        "5 records were inside mid replicas that died"]}
    assert sorted(s.sent_kinds(P.STOP)) == ["mid.0", "mid.1", "sink.0", "src.0"]
    for rid in s.python_replicas():
        s.exit(rid, 0)
    s.tick()
    assert s.coord.finish() == exitcodes.INCOMPLETE
    assert s.model.overall == "incomplete"


def test_the_total_lost_is_exact_when_a_killed_replica_reported_late(tmp_path) -> None:
    """mid.0 had passed on 28 when killed, but its last report said 25: the sink's surplus of 3
    is subtracted, so the total matches what the sink is missing."""
    s = _lossy_run(tmp_path, sink_got=88)
    assert s.coord.code == exitcodes.INCOMPLETE
    assert s.model.losses["lost"] == 12 == 100 - 88
    assert "the split above is approximate; the total is exact" in s.coord.message


def test_skipped_records_make_a_run_incomplete(tmp_path) -> None:
    s = running(tmp_path)
    for rid in ["src.0", "mid.0", "sink.0"]:
        s.finish(rid)
    s.say("mid.1", P.FINISHED, s={}, e=3)
    s.tick()
    assert s.coord.code == exitcodes.INCOMPLETE
    assert s.coord.message == ("incomplete: 3 records failed and were skipped or dead-lettered "
                               "(on_error)")


def test_nothing_lost_nothing_skipped_is_completed(tmp_path) -> None:
    s = running(tmp_path)
    s.finish("src.0", out=[0, 10, 0, 0])
    s.say("mid.0", P.COUNT, socket="inp", n=10)
    s.tick()
    s.tick()
    s.finish("mid.0", inp=[10, 0, 0, 0], out=[0, 10, 0, 0])
    s.finish("mid.1", inp=[0, 0, 0, 0], out=[0, 0, 0, 0])
    s.tick()
    s.say("sink.0", P.COUNT, socket="inp", n=10)
    s.tick()
    s.finish("sink.0", inp=[10, 0, 0, 0])
    s.tick()
    assert s.coord.code == exitcodes.OK and s.coord.message is None
    assert s.model.losses == {"lost": 0, "places": [], "skipped": 0, "uncounted": []}


# -- late joiners and restarts ----------------------------------------------------------------
def test_restarted_receiver_joins_an_ending_stream(tmp_path) -> None:
    s = running(tmp_path)
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    s.sent()
    s.exit("mid.1", -9)  # SIGKILL: no last message, no wait
    s.tick()
    assert s.state("mid.1") == "restarting"
    s.tick(0.2)
    assert [x.id for x in s.launcher.specs][-1] == "mid.1"
    assert s.launcher.specs[-1].incarnation == 2
    s.say("mid.1", P.BOUND, endpoints={})
    s.tick()
    assert s.sent_kinds(P.CONNECT) == ["mid.1"]
    s.say("mid.1", P.READY)
    s.tick()
    sent = s.sent()
    assert ("mid.1", P.START, {}) in sent
    assert ("mid.1", P.DRAIN, {"socket": "inp"}) in sent  # the count is on: report as you go


def test_restarted_replica_is_told_an_input_that_already_ended(tmp_path) -> None:
    s = running(tmp_path)
    s.finish("src.0", out=[0, 10, 0, 0])
    s.tick()
    s.say("mid.0", P.COUNT, socket="inp", n=10)
    s.tick()
    s.sent()
    s.exit("mid.0", -9)
    s.tick(0.2)
    s.say("mid.0", P.BOUND, endpoints={})
    s.tick()
    s.say("mid.0", P.READY)
    s.tick()
    assert ("mid.0", P.INPUT_END, {"socket": "inp", "expected": None}) in s.sent()


def test_late_subscriber_is_told_its_publishers_already_ended(tmp_path) -> None:
    s = running(tmp_path, PUBSUB)
    s.finish("pub.0", out=[0, 5, 0, 0])
    s.exit("sub.1", -9)
    s.tick(0.2)
    s.say("sub.1", P.BOUND, endpoints={})
    s.tick()
    assert ("sub.1", P.CONNECT, {"endpoints": {"inp": [s.plan.bind_endpoint("pub", 0, "out")]},
                                 "wait": {"inp": 1}}) in s.sent()
    s.say("sub.1", P.READY)
    s.tick()
    sent = s.sent()
    assert ("sub.1", P.INPUT_END, {"socket": "inp", "expected": None}) in sent
    assert ("pub.0", P.PROBE, {"on": False}) in sent


def test_restarted_subscriber_makes_publishers_probe_again(tmp_path) -> None:
    s = running(tmp_path, PUBSUB)
    s.exit("sub.0", -9)
    s.tick(0.2)
    assert ("pub.0", P.PROBE, {"on": True}) in s.sent()


def test_counters_of_past_incarnations_add_up(tmp_path) -> None:
    s = running(tmp_path)
    s.say("mid.0", P.STATS, s={"inp": [30, 30, 300, 300]}, e=2)
    s.exit("mid.0", -9)
    s.tick(0.2)
    s.say("mid.0", P.STATS, s={"inp": [5, 5, 50, 50]}, e=1)
    slot = s.coord.slots["mid.0"]
    assert slot.counters.total("inp", 0) == 35
    assert slot.counters.all_errors == 3
    r = s.model.replicas["mid"][0]
    assert r.sockets["inp"] == (35, 35, 350, 350) and r.errors == 3


def test_stale_messages_of_a_dead_incarnation_are_ignored(tmp_path) -> None:
    s = running(tmp_path)
    old = s.coord.slots["mid.0"].identity
    s.exit("mid.0", -9)
    s.tick(0.2)
    s.coord.received(old, P.pack(P.FINISHED, s={"inp": [99, 0, 0, 0]}, e=0), s.now)
    assert not s.coord.slots["mid.0"].finished
    assert s.coord.slots["mid.0"].counters.total("inp", 0) == 0


def test_backoff_doubles_and_the_crash_loop_comes_after_max_restarts(tmp_path) -> None:
    s = running(tmp_path)  # mid: max_restarts 2, backoff 0.1 … 0.3
    delays = []
    for _ in range(2):
        s.exit("mid.0", 1)
        s.tick(0.6)  # past the wait for a last message, then past the back-off
        delays.append(s.coord.slots["mid.0"].restart_at)
        s.tick(0.5)
    assert s.coord.code is None
    restarts = [e for e in s.model.replicas["mid"][0].__dict__.items() if e[0] == "restarts"]
    assert restarts == [("restarts", 2)]
    s.exit("mid.0", 1)
    s.tick(0.6)
    assert s.coord.code == exitcodes.FAILED
    assert "mid.0 is crash-looping: 3 failures within 60s (last exit code 1)" in s.coord.message


def test_restart_delays_follow_the_backoff(tmp_path) -> None:
    heard = []

    class Listener:
        def event(self, kind, **f):
            if kind == "restart":
                heard.append((f["delay"], f["attempt"]))

        def log(self, *a):
            pass

    s = running(tmp_path)
    s.model.subscribe(Listener())
    for _ in range(2):
        s.exit("mid.1", -9)
        s.tick()
        s.tick(1.0)
    assert heard == [(0.1, 1), (0.2, 2)]


def test_an_exit_waits_briefly_for_the_last_message(tmp_path) -> None:
    """The exit can be seen before the FINISHED sent just before it: not a crash."""
    s = running(tmp_path)
    s.exit("src.0", 0)
    s.tick(0.1)
    assert s.state("src.0") == "running"
    s.finish("src.0", out=[0, 0, 0, 0])
    s.tick()
    assert s.state("src.0") == "stopped"
    assert s.coord.code is None and s.coord.deaths == 0


def test_clean_exit_without_finishing_fails_the_run(tmp_path) -> None:
    s = running(tmp_path)
    s.exit("src.0", 0)
    s.tick(0.6)
    assert s.coord.code == exitcodes.FAILED
    assert "src.0 exited (code 0) before its stream ended" in s.coord.message


def test_failure_message_quotes_the_reason_and_last_stderr_lines(tmp_path) -> None:
    s = running(tmp_path, PIPELINE.replace("run: m:Sink", "run: m:Sink\n        restart: \"no\""))
    s.coord.output("sink.0", "stderr", "Traceback (most recent call last):")
    s.coord.output("sink.0", "stderr", "ZeroDivisionError: division by zero")
    s.coord.output("sink.0", "stdout", "not on stderr")
    s.say("sink.0", P.FATAL, phase="run", message="ZeroDivisionError: division by zero")
    s.exit("sink.0", 1)
    s.tick()
    assert s.coord.code == exitcodes.FAILED
    assert s.coord.message == (
        "sink.0 exited with code 1: ZeroDivisionError: division by zero\n"
        "  last stderr lines:\n"
        "    Traceback (most recent call last):\n"
        "    ZeroDivisionError: division by zero")


def test_sink_dying_after_its_input_ended_fails_the_run(tmp_path) -> None:
    s = running(tmp_path)
    for rid in ["src.0", "mid.0", "mid.1"]:
        s.finish(rid, out=[0, 0, 0, 0])
    s.tick()
    s.tick()
    assert "sink.inp" in s.coord.streams.ended_inputs
    s.coord.output("sink.0", "stderr", "MemoryError")
    s.exit("sink.0", -9)
    s.tick()
    assert s.coord.code == exitcodes.FAILED
    assert s.coord.message.startswith("sink.0 exited with code -9 after its input ended")
    assert "MemoryError" in s.coord.message
    assert len([x for x in s.launcher.specs if x.id == "sink.0"]) == 1


def test_transform_dying_after_its_input_ended_restarts(tmp_path) -> None:
    s = running(tmp_path)
    s.finish("src.0", out=[0, 0, 0, 0])
    s.tick()
    s.tick()
    assert "mid.inp" in s.coord.streams.ended_inputs
    s.exit("mid.0", -9)
    s.tick()
    assert s.coord.code is None
    assert s.state("mid.0") == "restarting"


def test_restart_no_fails_at_the_first_crash(tmp_path) -> None:
    s = running(tmp_path, PIPELINE.replace("max_restarts: 2", "restart: \"no\""))
    s.exit("mid.0", -11)
    s.tick()
    assert s.coord.code == exitcodes.FAILED
    assert s.coord.message.startswith("mid.0 exited with code -11")


# -- the watchdog -------------------------------------------------------------------------------
def test_a_replica_that_goes_quiet_is_named_and_asked_for_its_stack(tmp_path) -> None:
    s = running(tmp_path, quiet_after=10.0)
    for _ in range(12):  # everyone reports every second, except mid.1 (an endless loop)
        s.tick(1.0)
        for rid in ["src.0", "mid.0", "sink.0"]:
            s.say(rid, P.STATS, s={}, e=0)
    assert s.model.errors == ["mid.1 has sent no report for 11s: stuck in user code? (its stack "
                              "follows on its stderr)"]
    assert s.launcher.signals == [("mid.1", signal.SIGUSR1, "process")]  # not its group
    s.tick(5.0)
    assert len(s.model.errors) == 1  # said once
    s.say("mid.1", P.STATS, s={}, e=0)
    assert s.model.logs[-1].line == "reporting again"


def test_a_replica_waiting_at_the_barrier_is_not_quiet(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE, quiet_after=10.0).start()
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    for rid in ["src.0", "mid.0", "mid.1"]:
        s.say(rid, P.READY)
    s.tick(20.0)  # the sink is slow to get ready; the others wait in silence
    s.say("sink.0", P.READY)
    s.tick()
    assert s.model.overall == "running"
    s.tick(5.0)
    assert s.model.errors == [] and s.launcher.signals == []


# -- exactly-once -----------------------------------------------------------------------------
def test_acks_go_back_to_the_source_that_numbered_them(tmp_path) -> None:
    text = EXACTLY_ONCE.replace("run: m:source", "run: m:source\n        replicas: 2")
    s = running(tmp_path, text)
    spec = {x.id: x for x in s.launcher.specs}
    assert (spec["src.0"].source_index, spec["src.1"].source_index) == (0, 1)
    assert spec["src.0"].sources == 2
    s.say("sink.0", P.ACK, r=[5, 3])
    s.say("sink.0", P.ACK, ids=[0, 1, 2, 3, 7])
    sent = [(rid, f) for rid, k, f in s.sent() if k == P.ACK]
    assert sent == [("src.1", {"r": [5, 3]}), ("src.0", {"ids": [0, 2]}),
                    ("src.1", {"ids": [1, 3, 7]})]


def test_a_death_makes_sources_resend_what_the_dead_replica_held(tmp_path) -> None:
    s = running(tmp_path, EXACTLY_ONCE)
    s.exit("mid.0", -9)
    s.tick()
    # mid takes straight from the source: the source is told who died and who was alive
    # (a restarted mid.0, not connected yet, cannot hold anything sent before)
    assert [(r, f) for r, k, f in s.sent() if k == P.RESEND] == [
        ("src.0", {"dead": "mid.0", "live": ["mid.1"]})]


def test_a_death_deeper_in_the_pipeline_resends_everything_unacknowledged(tmp_path) -> None:
    text = EXACTLY_ONCE.replace(
        "          out: {type: PUSH, connect: sink.inp}\n      sink:",
        "          out: {type: PUSH, connect: last.inp}\n"
        "      last:\n        run: m:double\n        replicas: 2\n        sockets:\n"
        "          inp: {type: PULL, bind: auto}\n          out: {type: PUSH, connect: sink.inp}\n"
        "      sink:")
    s = running(tmp_path, text)
    s.exit("last.1", -9)
    s.tick()
    assert [(r, f) for r, k, f in s.sent() if k == P.RESEND] == [("src.0", {})]
    s.exit("src.0", -9)  # a source replays its own records: nobody else resends
    s.tick()
    assert s.sent_kinds(P.RESEND) == []


def test_took_reports_go_to_the_source_with_who_took_them(tmp_path) -> None:
    text = EXACTLY_ONCE.replace("run: m:source", "run: m:source\n        replicas: 2")
    s = running(tmp_path, text)
    s.say("mid.1", P.TOOK, r=[4, 10])
    s.say("mid.0", P.TOOK, ids=[1, 2, 3])
    s.say("mid.0", P.TOOK, rs=[[5, 2], [6, 1], [8, 3]])
    s.say("sink.0", P.ACK, rs=[[1, 1], [3, 2]])
    sent = [(rid, k, f) for rid, k, f in s.sent() if k in (P.TOOK, P.ACK)]
    assert sent == [("src.0", P.TOOK, {"r": [4, 10], "by": "mid.1", "hop1": True}),
                    ("src.1", P.TOOK, {"ids": [1, 3], "by": "mid.0", "hop1": True}),
                    ("src.0", P.TOOK, {"ids": [2], "by": "mid.0", "hop1": True}),
                    ("src.1", P.TOOK, {"rs": [[5, 2]], "by": "mid.0", "hop1": True}),
                    ("src.0", P.TOOK, {"rs": [[6, 1], [8, 3]], "by": "mid.0", "hop1": True}),
                    ("src.1", P.ACK, {"rs": [[1, 1], [3, 2]]})]


def test_a_dead_exactly_once_sink_fails_the_run(tmp_path) -> None:
    s = running(tmp_path, EXACTLY_ONCE)
    s.exit("sink.0", -9)
    s.tick()
    assert s.coord.code == exitcodes.FAILED
    assert "exactly-once delivery cannot be kept" in s.coord.message


def test_exactly_once_ends_streams_once_sources_finish(tmp_path) -> None:
    s = running(tmp_path, EXACTLY_ONCE)
    s.finish("src.0", out=[0, 100, 0, 0])  # every record acknowledged by the sink
    s.tick()
    assert sorted(s.sent_kinds(P.INPUT_END)) == ["mid.0", "mid.1", "sink.0"]


def test_low_water_mark_goes_to_the_sinks(tmp_path) -> None:
    s = running(tmp_path, EXACTLY_ONCE)
    s.say("src.0", P.LOW, id=1234)
    assert [(r, f) for r, k, f in s.sent() if k == P.LOW] == [("sink.0", {"id": 1234})]


# -- stopping ---------------------------------------------------------------------------------
def test_stop_escalates_to_sigterm_then_sigkill(tmp_path) -> None:
    s = running(tmp_path, grace=3.0, drain_timeout=1.0)
    s.coord.interrupt(s.now)
    s.tick(1.0)  # nothing drains: the drain timeout stops the run
    assert s.coord.code == exitcodes.INTERRUPTED
    s.tick()
    s.tick(1.0)
    assert s.launcher.signals == []
    s.tick(1.5)  # over the 2 s drain: SIGTERM
    assert sorted(s.launcher.signals) == sorted((r, signal.SIGTERM) for r in s.python_replicas())
    s.launcher.signals.clear()
    s.tick(2.0)
    assert s.launcher.signals == []
    s.tick(1.5)  # over the grace: SIGKILL
    assert {sig for _, sig in s.launcher.signals} == {signal.SIGKILL}


def test_a_replica_waiting_to_restart_is_not_restarted_after_a_stop(tmp_path) -> None:
    s = running(tmp_path)
    s.exit("mid.0", -9)
    s.tick()
    assert s.state("mid.0") == "restarting"
    s.coord.launcher_failed("no more processes")
    assert s.state("mid.0") == "stopped"
    s.tick(1.0)
    assert len([x for x in s.launcher.specs if x.id == "mid.0"]) == 1


def test_an_interrupt_stops_the_sources_and_lets_the_rest_drain(tmp_path) -> None:
    s = running(tmp_path)
    s.coord.interrupt(s.now)
    sent = s.sent()
    assert sorted(r for r, k, _ in sent if k == P.INTERRUPT) == sorted(s.python_replicas())
    assert [r for r, k, _ in sent if k == P.STOP] == ["src.0"]  # only the source stops
    assert s.coord.code is None and s.model.overall == "draining"
    s.finish("src.0", out=[0, 7, 0, 0])
    s.exit("src.0", 0)
    s.tick()
    assert s.state("src.0") == "stopped"
    s.say("mid.0", P.COUNT, socket="inp", n=7)
    s.tick()
    assert s.sent_kinds(P.INPUT_END) == ["mid.0", "mid.1"]  # the stream ends as usual
    s.finish("mid.0", inp=[7, 0, 0, 0], out=[0, 7, 0, 0])
    s.finish("mid.1")
    s.tick()
    s.say("sink.0", P.COUNT, socket="inp", n=7)
    s.tick()
    s.say("sink.0", P.FINISHED, s={"inp": [7, 0, 0, 0]}, e=0, result={"n": 7})
    s.tick()
    assert s.coord.code == exitcodes.INTERRUPTED and s.coord.message == "interrupted"
    assert s.model.results == {"sink": {"n": 7}}  # the sink's end() ran: its result is kept


def test_an_interrupt_drain_is_bounded_and_names_who_did_not_finish(tmp_path) -> None:
    s = running(tmp_path, drain_timeout=2.0)
    s.coord.interrupt(s.now)
    s.finish("src.0", out=[0, 7, 0, 0])
    s.tick(1.0)
    assert s.coord.code is None
    s.tick(1.0)
    assert s.coord.code == exitcodes.INTERRUPTED
    assert s.coord.message == "interrupted; mid.0, mid.1, sink.0 did not finish within 2s of " \
                              "the interrupt"


def test_no_restarts_while_an_interrupt_drains(tmp_path) -> None:
    s = running(tmp_path)
    s.coord.interrupt(s.now)
    s.exit("mid.0", -9)
    s.tick(1.0)
    assert s.state("mid.0") == "failed"
    assert len([x for x in s.launcher.specs if x.id == "mid.0"]) == 1


def test_second_interrupt_kills_at_once(tmp_path) -> None:
    s = running(tmp_path)
    s.coord.interrupt(s.now)
    s.tick()
    s.coord.interrupt(s.now)
    assert sorted(s.launcher.signals) == sorted((r, signal.SIGKILL) for r in s.python_replicas())
    for rid in s.python_replicas():
        s.exit(rid, -9)
    s.tick()
    assert s.coord.done
    assert s.coord.finish() == exitcodes.INTERRUPTED
    assert s.model.overall == "interrupted"


def test_stop_is_repeated_to_a_replica_that_connects_late(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE).start()
    s.coord.interrupt(s.now)
    s.sent()
    s.say("mid.1", P.HELLO, pid=1)
    assert s.sent() == [("mid.1", P.STOP, {"abandon": True})]


def test_a_crash_during_the_stop_fails_a_completed_run(tmp_path) -> None:
    s = running(tmp_path)
    for rid in s.python_replicas():
        s.finish(rid)
    s.tick()
    assert s.coord.code == exitcodes.OK
    s.coord.output("sink.0", "stderr", "Segmentation fault")
    s.exit("sink.0", -11)
    assert s.coord.code == exitcodes.FAILED
    assert "sink.0 exited with code -11 at the end" in s.coord.message
    assert "Segmentation fault" in s.coord.message


def test_launcher_failure_stops_the_run(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE).start()
    s.coord.launcher_failed("the zflow fork server exited unexpectedly")
    assert s.coord.code == exitcodes.START_FAILED
    s2 = running(tmp_path)
    s2.coord.launcher_failed("the zflow fork server exited unexpectedly")
    assert s2.coord.code == exitcodes.FAILED


# -- hostile or broken control messages --------------------------------------------------------
@pytest.mark.parametrize("data", [b"", b"\x00garbage", b"\x81\xa1t\xa5stats",  # stats without s
                                  b"\x82\xa1t\xa3ack\xa3ids\xc0"])  # ids: nil
def test_malformed_messages_change_nothing(tmp_path, data: bytes) -> None:
    s = running(tmp_path)
    s.coord.received(s.coord.slots["mid.0"].identity, data, s.now)
    s.tick()
    assert s.coord.code is None


def test_unknown_identities_are_ignored(tmp_path) -> None:
    s = running(tmp_path)
    s.coord.received(b"mid.7#1", P.pack(P.FINISHED, s={}, e=0), s.now)
    s.coord.received(b"mid.0#9", P.pack(P.FINISHED, s={}, e=0), s.now)
    assert not any(x.finished for x in s.coord.slots.values())
