"""More scripted histories for the coordinator (tests/coordinator_script.py): what it tells the
status model, command and custom nodes, request/reply inputs, exact boundaries of its timers,
and the end of stream in the cases test_coordinator.py leaves open.

Each test was written against a mutant that survived test_coordinator.py (docs/mutation.md):
a changed detail string, a `>` become `>=`, an argument dropped. No sockets, no processes.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from coordinator_script import PIPELINE, Script
from test_coordinator import PUBSUB

from zflow import exitcodes
from zflow.runtime import protocol as P
from zflow.runtime.exits import EXIT_GRACE
from zflow.runtime.spec import dead_letter_path
from zflow.runtime.states import Outcome

EXACTLY_ONCE = PIPELINE.replace("delivery: best-effort", "delivery: exactly-once")

#: words (python) → upper (command) → collect (python): a command node in the middle
POLYGLOT = """
    version: 1
    name: poly
    nodes:
      words:
        run: m:words
        sockets:
          out: {type: PUSH, bind: auto, codec: json}
      upper:
        command: [prog, --fast]
        grace: 4.0
        sockets:
          inbox: {type: PULL, connect: [words.out, "tcp://127.0.0.1:7001"]}
          outbox: {type: PUSH, connect: collect.inbox}
      collect:
        run: m:Collect
        sockets:
          inbox: {type: PULL, bind: auto, codec: json}
"""

#: a command source that runs forever (`restart: always`), and a python sink
COMMAND_SOURCE = """
    version: 1
    name: cmdsrc
    nodes:
      gen:
        command: [gen]
        restart: always
        sockets:
          out: {type: PUSH, bind: auto, codec: json}
      sink:
        run: m:Sink
        sockets:
          inp: {type: PULL, connect: gen.out, codec: json}
"""

#: a custom node whose first socket sends and whose second one is fed by a source
CUSTOM = """
    version: 1
    name: cust
    nodes:
      src:
        run: m:source
        sockets:
          out: {type: PUSH, bind: auto}
      cust:
        run: m:loop
        shape: custom
        replicas: 2
        sockets:
          res: {type: PUSH, bind: auto}
          inp: {type: PULL, connect: src.out}
      lone:
        run: m:client
        sockets:
          api: {type: DEALER, connect: "tcp://127.0.0.1:7002"}
      sink:
        run: m:Sink
        sockets:
          inp: {type: PULL, connect: cust.res}
"""

#: a REP service behind a REQ client
RPC = """
    version: 1
    name: rpc
    nodes:
      client:
        run: m:client
        sockets:
          api: {type: REQ, connect: server.api}
      server:
        run: m:handle
        replicas: 2
        sockets:
          api: {type: REP, bind: auto}
"""

#: one PUSH feeding two different PULL nodes: one count group, two receiver sockets
FAN = """
    version: 1
    name: fan
    nodes:
      src:
        run: m:source
        sockets:
          out: {type: PUSH, bind: auto}
      a:
        run: m:Sink
        sockets:
          inp: {type: PULL, connect: src.out}
      b:
        run: m:Sink
        sockets:
          inp: {type: PULL, connect: src.out}
"""



class Heard:
    """A status view: every event the model announces, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def log(self, *a: Any) -> None:
        pass

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f in self.events if k == kind]


def script(tmp_path, text: str = PIPELINE, **opts: Any) -> tuple[Script, Heard]:
    s = Script(tmp_path, text, **opts)
    heard = Heard()
    s.model.subscribe(heard)
    return s, heard


def running(tmp_path, text: str = PIPELINE, **opts: Any) -> tuple[Script, Heard]:
    s, heard = script(tmp_path, text, **opts)
    s.start()
    s.barrier()
    s.sent()
    return s, heard


def replica(s: Script, rid: str):
    node, _, i = rid.partition(".")
    return s.model.replicas[node][int(i)]


def logs(s: Script) -> list[tuple[str, int, str, str]]:
    return [(x.node, x.replica, x.stream, x.line) for x in s.model.logs]


# -- the model hears every fact -------------------------------------------------------------------
def test_states_reach_the_model_with_their_details(tmp_path) -> None:
    s, heard = running(tmp_path)
    assert ("overall", {"state": "running"}) in heard.events
    assert replica(s, "mid.0").pid == s.coord.slots["mid.0"].pid is not None
    s.exit("mid.0", -9)
    s.tick()
    assert (replica(s, "mid.0").state, replica(s, "mid.0").detail) == ("restarting", "in 0.1s")
    assert replica(s, "mid.0").exit_code == -9 and replica(s, "mid.0").exited
    assert {"node": "mid", "replica": 0, "state": "failed", "detail": "exit -9"} in heard.of(
        "state")
    assert heard.of("restart") == [
        {"node": "mid", "replica": 0, "delay": 0.1, "code": -9, "attempt": 1}]
    s.coord.launcher_failed("gone")
    assert (replica(s, "mid.0").state, replica(s, "mid.0").detail) == ("stopped",
                                                                         "not restarted")
    assert heard.of("overall") == [{"state": "running"}]


def test_an_interrupt_before_the_start_reaches_the_model(tmp_path) -> None:
    s, heard = script(tmp_path)
    s.start()
    s.coord.interrupt(s.now)
    assert heard.of("overall") == [{"state": "interrupted"}]
    assert (s.coord.code, s.coord.outcome) == (exitcodes.INTERRUPTED, Outcome.INTERRUPTED)
    assert s.coord.message == "interrupted" and s.model.errors == ["interrupted"]


def test_the_end_of_a_run_reaches_the_model(tmp_path) -> None:
    s, heard = running(tmp_path)
    for rid in s.python_replicas():
        s.finish(rid)
    s.tick()
    sent = s.sent()
    assert {f["abandon"] for rid, k, f in sent if k == P.STOP} == {False}  # nothing went wrong
    for rid in s.python_replicas():
        s.exit(rid, 0)
    s.tick()
    assert (replica(s, "src.0").state, replica(s, "src.0").detail) == ("stopped", "exit 0")
    assert replica(s, "src.0").exit_code == 0
    assert s.coord.finish() == exitcodes.OK
    assert heard.of("overall")[-1] == {"state": "completed"}
    assert (s.model.overall, s.model.exit_code, s.model.message) == ("completed", 0, None)
    assert s.model.errors == []


def test_a_failed_run_reaches_the_model(tmp_path) -> None:
    s, heard = running(tmp_path, PIPELINE.replace("max_restarts: 2", 'restart: "no"'))
    s.exit("mid.1", 2)  # not an exit that waits for a last message
    assert s.state("mid.1") == "failed"
    s.tick()
    assert s.coord.outcome is Outcome.FAILED
    assert s.model.errors == ["mid.1 exited with code 2"]
    for rid in ["src.0", "mid.0", "sink.0"]:
        s.exit(rid, -signal.SIGTERM)
    s.tick()
    assert s.coord.finish() == exitcodes.FAILED
    assert heard.of("overall")[-1] == {"state": "failed"}
    assert (s.model.overall, s.model.exit_code, s.model.message) == (
        "failed", exitcodes.FAILED, "mid.1 exited with code 2")


def test_a_coordinator_never_stopped_reports_a_completed_run(tmp_path) -> None:
    s, heard = script(tmp_path)
    assert s.coord.finish() == exitcodes.OK
    assert (s.model.overall, s.model.exit_code, s.model.message) == ("completed", 0, None)
    assert heard.of("overall") == [{"state": "completed"}]


def test_output_lines_and_zflow_notes_reach_the_log(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.coord.output("mid.1", "stdout", "hello")
    s.coord.output("mid.1", "stderr", "oops")
    s.say("mid.1", P.STOPPING, reason="stop_on word FINISHED")
    s.say("mid.0", P.STOPPING, reason="stopped by zflow")  # implied: not logged
    s.say("sink.0", P.FATAL, phase="run", message="boom")
    s.say("src.0", P.FATAL, phase="run")
    assert logs(s) == [("mid", 1, "stdout", "hello"), ("mid", 1, "stderr", "oops"),
                       ("mid", 1, "zflow", "stopping: stop_on word FINISHED"),
                       ("sink", 0, "zflow", "boom"), ("src", 0, "zflow", "None")]
    assert list(s.coord.slots["mid.1"].stderr_tail) == ["oops"]
    assert s.coord.slots["sink.0"].fatal == {"t": P.FATAL, "phase": "run", "message": "boom"}


def test_total_reaches_the_model(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.say("src.0", P.TOTAL, n=1234)
    assert (s.model.total, s.model.total_node) == (1234, "src")


def test_counts_and_stats_without_errors_field(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.say("mid.0", P.COUNT, socket="inp", n=0)
    assert s.coord.slots["mid.0"].counters.cumulative() == {"inp": (0, 0, 0, 0)}
    s.say("mid.1", P.STATS, s={"inp": [3, 2, 30, 20]})
    assert s.coord.slots["mid.1"].counters.all_errors == 0
    assert (replica(s, "mid.1").sockets, replica(s, "mid.1").errors) == (
        {"inp": (3, 2, 30, 20)}, 0)
    s.say("mid.1", P.FINISHED, s={"inp": [4, 4, 40, 40]})
    assert s.coord.slots["mid.1"].counters.all_errors == 0
    assert s.coord.slots["mid.1"].counters.total("inp", 0) == 4


def test_a_finished_report_without_counts_keeps_the_last_stats(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.say("mid.1", P.STATS, s={"inp": [3, 2, 30, 20]}, e=1)
    s.say("mid.1", P.FINISHED, e=1)
    assert s.coord.slots["mid.1"].counters.total("inp", 1) == 2
    assert s.coord.slots["mid.1"].finished


def test_results_of_a_replicated_node_are_kept_per_replica(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.say("mid.1", P.FINISHED, s={}, e=0, result={"n": 1})
    s.say("sink.0", P.FINISHED, s={}, e=0, result={"n": 2})
    s.say("mid.0", P.FINISHED, s={}, e=0, result=None)
    assert s.model.results == {"mid.1": {"n": 1}, "sink": {"n": 2}}


def test_dead_letters_are_counted_per_node_at_the_end(tmp_path) -> None:
    text = (PIPELINE.replace("run: m:double", "run: m:double\n        on_error: dead-letter")
            .replace("run: m:Sink", "run: m:Sink\n        on_error: skip"))
    s, _ = running(tmp_path, text)
    s.say("mid.0", P.STATS, s={}, e=2)
    s.say("mid.1", P.STATS, s={}, e=3)
    s.say("sink.0", P.STATS, s={}, e=7)  # skipped, not dead-lettered
    s.coord.finish()
    path = dead_letter_path(s.plan, s.plan.nodes["mid"])
    assert s.model.dead_letters == {"mid": {"path": path, "records": 5}}
    s2, _ = running(tmp_path, text)
    s2.coord.finish()
    assert s2.model.dead_letters == {}  # no errors: nothing to point at


# -- spawning -------------------------------------------------------------------------------------
def bound(s) -> None:
    """Every Python replica reports its sockets bound: command connectors are spawned then."""
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={})
    s.tick()


def test_spawn_specs(tmp_path) -> None:
    s, _ = script(tmp_path, POLYGLOT, verbose=True, telemetry=False)
    s.start()
    assert "upper.0" not in {x.id for x in s.launcher.specs}  # what it connects to is not bound
    bound(s)
    spec = {x.id: x for x in s.launcher.specs}
    assert spec["upper.0"].connect_endpoints == {
        "inbox": [s.plan.bind_endpoint("words", 0, "out"), "tcp://127.0.0.1:7001"],
        "outbox": [s.plan.bind_endpoint("collect", 0, "inbox")]}
    assert spec["words.0"].connect_endpoints == {}  # python replicas are told later
    assert all(x.verbose is True and x.telemetry is False for x in spec.values())
    assert (spec["words.0"].source_index, spec["collect.0"].source_index) == (0, 0)


def test_a_python_replica_connects_to_concrete_endpoints_too(tmp_path) -> None:
    text = PIPELINE.replace("connect: src.out", 'connect: ["tcp://127.0.0.1:7003", src.out]')
    s, _ = script(tmp_path, text)
    s.start()
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    connects = {rid: f["endpoints"] for rid, k, f in s.sent() if k == P.CONNECT}
    assert connects["mid.1"] == {"inp": ["tcp://127.0.0.1:7003",
                                         s.plan.bind_endpoint("src", 0, "out")],
                                 "out": [s.plan.bind_endpoint("sink", 0, "inp")]}


def test_a_restart_binds_what_the_last_incarnation_bound(tmp_path) -> None:
    s, _ = script(tmp_path)
    s.start()
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={"inp": "tcp://127.0.0.1:40001"} if rid == "sink.0"
              else {})
    s.tick()
    for rid in s.python_replicas():
        s.say(rid, P.READY)
    s.tick()
    s.say("sink.0", P.FATAL, phase="run", message="x")
    s.exit("sink.0", 1)
    s.tick(0.6)
    s.tick(0.2)
    assert s.launcher.specs[-1].id == "sink.0"
    assert s.launcher.specs[-1].socket("inp").bind_endpoint == "tcp://127.0.0.1:40001"


def test_spawn_failure_is_recorded(tmp_path) -> None:
    s, _ = script(tmp_path)
    s.launcher.fail["sink.0"] = "no such program"
    s.start()
    slot = s.coord.slots["sink.0"]
    assert slot.fatal == {"phase": "spawn", "message": "no such program"}
    assert slot.exit_code == 127
    assert (replica(s, "sink.0").state, replica(s, "sink.0").detail) == ("failed",
                                                                           "could not start")
    assert s.coord.outcome is Outcome.FAILED


def test_a_start_failure_names_the_socket_and_gives_the_hint(tmp_path) -> None:
    s, _ = script(tmp_path)
    s.start()
    s.say("sink.0", P.FATAL, phase="bind", message="Address already in use", socket="inp",
          hint="another program listens there")
    s.exit("sink.0", 3)
    s.tick(EXIT_GRACE)
    assert s.coord.code == exitcodes.START_FAILED and s.coord.outcome is Outcome.FAILED
    assert s.coord.message == ("sink.0 socket inp: Address already in use\n"
                               "  hint: another program listens there")
    assert s.model.errors == [s.coord.message]


def test_a_start_failure_without_a_message(tmp_path) -> None:
    s, _ = script(tmp_path)
    s.start()
    s.say("mid.0", P.FATAL, phase="connect")
    s.exit("mid.0", 3)
    s.tick(EXIT_GRACE)
    assert s.coord.message == "mid.0: failed to start"


# -- timers, at their exact boundaries ------------------------------------------------------------
def test_the_start_timeout_counts_from_the_start(tmp_path) -> None:
    s, _ = script(tmp_path, start_timeout=30.0)
    s.now = 100.0
    s.start()
    s.tick(30.0)  # exactly the timeout: not over it yet
    assert s.coord.code is None
    s.tick(0.5)
    assert s.coord.code == exitcodes.START_FAILED and s.coord.outcome is Outcome.FAILED
    assert s.coord.message == ("not ready after 30s: src.0 (not bound), mid.0 (not bound), "
                               "mid.1 (not bound), sink.0 (not bound)")


def test_an_exit_waits_exactly_the_grace_for_the_last_message(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.now = 50.0
    s.exit("mid.0", 1)
    s.tick(0.25)
    assert s.state("mid.0") == "running"  # still waiting, even 50 s into the run
    s.tick(0.25)  # exactly EXIT_GRACE later: settled
    assert s.state("mid.0") == "restarting"


@pytest.mark.parametrize("code", [0, 1, 3])
def test_exits_that_wait_for_a_fatal_message(tmp_path, code: int) -> None:
    """A replica that fails to start exits 3 (1 or 0 in odd cases) just after saying why: the
    reason may arrive after the exit, and still counts."""
    s, _ = script(tmp_path)
    s.start()
    s.exit("mid.0", code)
    s.tick(0.1)
    s.say("mid.0", P.FATAL, phase="import", message="cannot import module 'm'")
    s.tick(EXIT_GRACE)
    assert s.coord.code == exitcodes.START_FAILED
    assert s.coord.message == "mid.0: cannot import module 'm'"


@pytest.mark.parametrize("code", [2, 4, -9])
def test_other_exits_do_not_wait(tmp_path, code: int) -> None:
    s, _ = running(tmp_path)
    s.exit("mid.0", code)
    assert s.state("mid.0") == "restarting"


def test_a_restart_happens_exactly_at_its_time(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.exit("mid.0", -9)
    assert s.coord.slots["mid.0"].restart_at == 0.1
    s.tick(0.1)
    assert [x.id for x in s.launcher.specs].count("mid.0") == 2


def test_stop_escalation_with_a_short_grace(tmp_path) -> None:
    s, _ = running(tmp_path, grace=1.0)
    s.now = 10.0
    s.coord.launcher_failed("gone")
    s.tick()
    s.tick(1.0)  # exactly the grace (shorter than 2 s): no signal yet
    assert s.launcher.signals == []
    s.tick(0.5)
    assert s.launcher.signals == [(r, signal.SIGTERM) for r in s.python_replicas()]
    s.launcher.signals.clear()
    s.tick(1.0)  # exactly the grace after SIGTERM
    assert s.launcher.signals == []
    s.tick(0.5)
    assert s.launcher.signals == [(r, signal.SIGKILL) for r in s.python_replicas()]


def test_stop_escalation_uses_each_node_grace_by_default(tmp_path) -> None:
    text = PIPELINE.replace("run: m:Sink", "run: m:Sink\n        grace: 1.0")
    s, _ = running(tmp_path, text)
    s.now = 10.0
    s.coord.launcher_failed("gone")
    s.tick()
    s.tick(2.0)  # exactly 2 s: no SIGTERM yet
    assert s.launcher.signals == []
    s.tick(0.5)
    assert {sig for _, sig in s.launcher.signals} == {signal.SIGTERM}
    s.launcher.signals.clear()
    s.tick(1.5)  # past the sink's grace (1 s), not the others' (5 s)
    assert s.launcher.signals == [("sink.0", signal.SIGKILL)]


# -- exits ----------------------------------------------------------------------------------------
def test_deaths_are_counted(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.exit("mid.0", -9)
    s.exit("mid.1", -9)
    assert s.coord.deaths == 2


def test_an_exit_during_the_stop_that_zflow_did_not_ask_for_fails_the_run(tmp_path) -> None:
    s, heard = running(tmp_path)
    for rid in s.python_replicas():
        s.finish(rid)
    s.tick()
    s.exit("mid.0", 1)
    assert s.state("mid.0") == "failed"
    assert replica(s, "mid.0").detail == "exit 1"
    assert s.model.errors == ["mid.0 exited with code 1 at the end"]
    s.exit("src.0", -signal.SIGTERM)
    assert (s.state("src.0"), replica(s, "src.0").detail) == ("stopped", "exit -15")


def test_a_message_from_a_dead_incarnation_changes_nothing(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.exit("mid.0", -9)  # settled at once: restarting, same identity until the respawn
    s.say("mid.0", P.STATS, s={"inp": [9, 9, 9, 9]}, e=0)
    assert s.coord.slots["mid.0"].counters.total("inp", 0) == 0


def test_the_failure_message_quotes_the_last_ten_stderr_lines(tmp_path) -> None:
    s, _ = running(tmp_path, PIPELINE.replace("run: m:Sink", 'run: m:Sink\n        restart: "no"'))
    for i in range(12):
        s.coord.output("sink.0", "stderr", f"line {i}")
    s.exit("sink.0", -9)
    assert s.coord.message == "sink.0 exited with code -9\n  last stderr lines:\n" + "\n".join(
        f"    line {i}" for i in range(2, 12))


def test_restart_always_restarts_a_clean_exit(tmp_path) -> None:
    text = PIPELINE.replace("max_restarts: 2", "max_restarts: 2\n        restart: always")
    s, _ = running(tmp_path, text)
    s.exit("mid.0", 0)
    s.tick(EXIT_GRACE)
    assert s.coord.code is None
    assert s.state("mid.0") == "restarting"


def test_a_launcher_failure_is_reported(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.coord.launcher_failed("the fork server exited")
    assert (s.coord.message, s.coord.outcome) == ("the fork server exited", Outcome.FAILED)
    assert s.model.errors == ["the fork server exited"]


def test_the_run_ends_with_the_first_reason(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.coord.launcher_failed("first")
    s.coord.interrupt(s.now)
    assert (s.coord.code, s.coord.message) == (exitcodes.FAILED, "first")
    assert s.model.errors == ["first"]


# -- command nodes --------------------------------------------------------------------------------
def test_a_command_node_is_ready_when_it_listens_and_its_peers_are_connected(tmp_path) -> None:
    s, _ = script(tmp_path, COMMAND_SOURCE)
    s.start()
    assert s.coord.awaiting_endpoints() == [
        ("gen.0", {})]
    s.coord.endpoints_ready("gen.0")
    assert s.state("gen.0") == "bound" and s.coord.awaiting_endpoints() == []
    assert s.coord.awaiting_connections() == [("gen.0", {}, {"out": 1})]
    s.coord.endpoints_ready("gen.0")  # said twice: nothing more
    assert s.state("gen.0") == "bound"
    s.say("sink.0", P.BOUND, endpoints={})
    s.tick()
    s.say("sink.0", P.READY)
    s.tick()
    assert s.model.overall == "starting"  # the sink is not known to be connected to it yet
    s.coord.connections_ready("gen.0")
    s.tick()
    assert s.state("gen.0") == "running" and s.state("sink.0") == "running"


def test_a_command_node_waiting_for_its_exit_is_not_awaited(tmp_path) -> None:
    s, _ = script(tmp_path, COMMAND_SOURCE)
    s.start()
    s.coord.slots["gen.0"].exit_pending = (1, 0.0)
    assert s.coord.awaiting_endpoints() == []
    s2, _ = script(tmp_path, COMMAND_SOURCE)
    s2.launcher.fail["gen.0"] = "no"
    s2.start()
    assert s2.coord.awaiting_endpoints() == []  # never started
    s2.coord.endpoints_ready("gen.0")
    assert s2.state("gen.0") == "failed"


def test_a_restarted_command_node_starts_as_soon_as_it_listens(tmp_path) -> None:
    s, _ = script(tmp_path, COMMAND_SOURCE)
    s.start()
    s.coord.endpoints_ready("gen.0")
    s.say("sink.0", P.BOUND, endpoints={})
    s.tick()
    s.say("sink.0", P.READY)
    s.tick()
    s.coord.connections_ready("gen.0")
    s.tick()
    s.exit("gen.0", 1)
    s.tick(1.0)
    assert s.state("gen.0") == "starting"
    assert s.coord.awaiting_endpoints() == [("gen.0", {})]
    s.coord.endpoints_ready("gen.0")
    s.coord.connections_ready("gen.0")
    assert s.state("gen.0") == "running"


def test_a_command_source_that_exits_0_has_finished_even_with_restart_always(tmp_path) -> None:
    """Its exit is its end: it has no input to wait for."""
    s, _ = script(tmp_path, COMMAND_SOURCE)
    s.start()
    s.coord.endpoints_ready("gen.0")
    s.coord.connections_ready("gen.0")
    s.say("sink.0", P.BOUND, endpoints={})
    s.tick()
    s.say("sink.0", P.READY)
    s.tick()
    s.exit("gen.0", 0)
    assert s.state("gen.0") == "stopped" and replica(s, "gen.0").detail == "exit 0"
    assert s.coord.slots["gen.0"].finished
    s.finish("sink.0", inp=[0, 0, 0, 0])
    s.tick()
    assert s.coord.code == exitcodes.OK


def test_a_command_node_with_input_left_and_restart_always_restarts_a_clean_exit(
        tmp_path) -> None:
    text = POLYGLOT.replace("grace: 4.0", "grace: 4.0\n        restart: always")
    s, _ = script(tmp_path, text)
    s.start()
    bound(s)
    s.coord.endpoints_ready("upper.0")
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    for rid in s.python_replicas():
        s.say(rid, P.READY)
    s.tick()
    s.exit("upper.0", 0)
    assert s.state("upper.0") == "restarting"
    assert not s.coord.slots["upper.0"].finished


def test_a_command_node_exiting_0_is_done(tmp_path) -> None:
    s, _ = script(tmp_path, POLYGLOT)
    s.start()
    bound(s)
    s.coord.endpoints_ready("upper.0")
    s.tick()  # now everyone is bound: the Python replicas are told to connect
    for rid in s.python_replicas():
        s.say(rid, P.READY)
    s.tick()
    s.exit("upper.0", 0)
    assert s.state("upper.0") == "stopped" and s.coord.slots["upper.0"].finished


def test_command_nodes_get_sigterm_at_once_when_the_run_fails(tmp_path) -> None:
    s, _ = script(tmp_path, POLYGLOT)
    s.start()
    bound(s)
    s.coord.endpoints_ready("upper.0")
    s.coord.launcher_failed("gone")
    assert s.launcher.signals == [("upper.0", signal.SIGTERM)]
    s2, _ = script(tmp_path, POLYGLOT)
    s2.launcher.fail["collect.0"] = "no"
    s2.start()  # upper.0 waits for what it connects to: never spawned, never signalled
    assert s2.launcher.signals == []
    assert "upper.0" not in {x.id for x in s2.launcher.specs}


def test_command_nodes_get_the_drain_period_when_the_run_completed(tmp_path) -> None:
    s, _ = script(tmp_path, POLYGLOT)
    s.start()
    bound(s)
    s.coord.endpoints_ready("upper.0")
    s.tick()  # now everyone is bound: the Python replicas are told to connect
    for rid in s.python_replicas():
        s.say(rid, P.READY)
    s.tick()
    for rid in s.python_replicas():
        s.finish(rid)
    s.coord.slots["upper.0"].finished = True
    s.tick()
    assert s.coord.code == exitcodes.OK
    assert s.launcher.signals == []
    s.tick(2.5)
    assert ("upper.0", signal.SIGTERM) in s.launcher.signals


def test_a_command_node_that_never_started_is_not_signalled(tmp_path) -> None:
    s, _ = script(tmp_path, POLYGLOT)
    s.launcher.fail["upper.0"] = "cannot run 'prog'"
    s.start()
    assert s.launcher.signals == []


# -- end of stream --------------------------------------------------------------------------------
def test_progress_restarts_the_stall_clock(tmp_path) -> None:
    s, _ = running(tmp_path, drain_timeout=5.0)
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()  # t=0: the count starts
    s.tick(4.0)
    s.say("mid.0", P.COUNT, socket="inp", n=50)
    s.tick()  # t=4: progress
    s.tick(4.0)
    s.say("mid.0", P.COUNT, socket="inp", n=50, idle=True)
    s.say("mid.1", P.COUNT, socket="inp", n=0, idle=True)
    s.tick()  # t=8: idle, 4 s without progress
    assert s.sent_kinds(P.INPUT_END) == []
    s.tick(1.0)  # t=9: exactly drain_timeout: not over it
    assert s.sent_kinds(P.INPUT_END) == []
    s.tick(0.5)
    assert s.sent_kinds(P.INPUT_END) == ["mid.0", "mid.1"]
    assert s.model.errors == [
        "50 of 100 records sent to mid.inp never arrived (dropped as undecodable, or lost); "
        "ending the stream without them"]


def test_a_stall_after_a_death_says_the_records_died_with_it(tmp_path) -> None:
    s, _ = running(tmp_path, FAN, drain_timeout=1.0)
    s.exit("a.0", -9)
    s.tick(0.2)
    s.say("a.0", P.BOUND, endpoints={})
    s.tick()
    s.say("a.0", P.READY)
    s.tick()
    s.finish("src.0", out=[0, 10, 0, 0])
    s.say("a.0", P.COUNT, socket="inp", n=3)
    s.say("b.0", P.COUNT, socket="inp", n=4)
    s.tick()
    s.tick(0.5)
    s.say("a.0", P.COUNT, socket="inp", n=3, idle=True)
    s.say("b.0", P.COUNT, socket="inp", n=4, idle=True)
    s.tick(2.0)
    assert s.model.errors == [
        "3 of 10 records sent to a.inp, b.inp never arrived (lost with a replica that died); "
        "ending the stream without them"]
    assert [(g.receivers, d) for g, d in s.coord.streams.transit()] == [(["a.inp", "b.inp"], 3)]


def test_losses_of_every_group_are_summed_at_the_end(tmp_path) -> None:
    s, _ = running(tmp_path, drain_timeout=1.0)
    s.finish("src.0", out=[0, 10, 0, 0])
    s.say("mid.0", P.COUNT, socket="inp", n=4)
    s.say("mid.1", P.COUNT, socket="inp", n=4)
    s.tick()
    s.tick(0.5)
    s.say("mid.0", P.COUNT, socket="inp", n=4, idle=True)
    s.say("mid.1", P.COUNT, socket="inp", n=4, idle=True)
    s.tick(2.0)
    assert [d for _, d in s.coord.streams.transit()] == [2]
    s.finish("mid.0", inp=[4, 0, 0, 0], out=[0, 4, 0, 0])
    s.finish("mid.1", inp=[4, 0, 0, 0], out=[0, 4, 0, 0])
    s.say("sink.0", P.COUNT, socket="inp", n=5)
    s.tick()
    s.tick(0.5)
    s.say("sink.0", P.COUNT, socket="inp", n=5, idle=True)
    s.tick(2.0)
    assert [d for _, d in s.coord.streams.transit()] == [2, 3]
    s.finish("sink.0", inp=[5, 0, 0, 0])
    s.tick()
    assert s.coord.code == exitcodes.INCOMPLETE
    assert s.model.losses["lost"] == 5
    assert sorted(s.coord.streams.ended_inputs) == ["mid.inp", "sink.inp"]


def test_a_complete_count_reports_nothing_lost(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.finish("src.0", out=[0, 10, 0, 0])
    s.tick()
    s.say("mid.0", P.COUNT, socket="inp", n=10)
    s.tick()
    assert s.model.errors == []
    assert [(g.receivers, g.got, d) for g, d in s.coord.streams.transit()] == [
        (["mid.inp"], 10, 0)]
    assert sorted(s.coord.streams.ended_inputs) == ["mid.inp"]


def test_the_drain_request_names_the_socket(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.finish("src.0", out=[0, 10, 0, 0])
    s.tick()
    assert [(r, f) for r, k, f in s.sent() if k == P.DRAIN] == [
        ("mid.0", {"socket": "inp"}), ("mid.1", {"socket": "inp"})]


def test_exactly_once_ends_each_group_once(tmp_path) -> None:
    s, _ = running(tmp_path, EXACTLY_ONCE)
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    assert sorted(s.sent_kinds(P.INPUT_END)) == ["mid.0", "mid.1", "sink.0"]
    s.tick()
    s.tick()
    assert s.sent_kinds(P.INPUT_END) == []
    assert s.sent_kinds(P.DRAIN) == []


def test_a_restarted_receiver_of_a_running_count_is_told_only_to_drain(tmp_path) -> None:
    s, _ = running(tmp_path)
    s.finish("src.0", out=[0, 100, 0, 0])
    s.tick()
    s.exit("mid.1", -9)
    s.tick(0.2)
    s.say("mid.1", P.BOUND, endpoints={})
    s.tick()
    s.sent()
    s.say("mid.1", P.READY)
    s.tick()
    assert [(r, k, f) for r, k, f in s.sent() if r == "mid.1" and k != P.PROBE] == [
        ("mid.1", P.START, {}), ("mid.1", P.DRAIN, {"socket": "inp"})]


def test_a_restarted_subscriber_of_a_live_publisher_is_not_told_it_ended(tmp_path) -> None:
    s, _ = running(tmp_path, PUBSUB)
    s.exit("sub.1", -9)
    s.tick(0.2)
    s.say("sub.1", P.BOUND, endpoints={})
    s.tick()
    s.sent()
    s.say("sub.1", P.READY)
    s.tick()
    assert [k for r, k, f in s.sent() if r == "sub.1" and k != P.PROBE] == [P.START]


def test_a_service_input_ends_when_its_clients_finished(tmp_path) -> None:
    s, _ = running(tmp_path, RPC)
    s.tick()
    assert s.sent_kinds(P.INPUT_END) == []
    s.finish("client.0")
    s.tick()
    assert [(r, f) for r, k, f in s.sent() if k == P.INPUT_END] == [
        ("server.0", {"socket": "api", "expected": None}),
        ("server.1", {"socket": "api", "expected": None})]
    s.tick()
    assert s.sent_kinds(P.INPUT_END) == []  # once


def test_a_custom_node_is_told_to_stop_once_its_inputs_ended(tmp_path) -> None:
    s, _ = running(tmp_path, CUSTOM)
    s.tick()
    assert s.sent_kinds(P.STOP) == []
    s.finish("src.0", out=[0, 0, 0, 0])
    s.tick()
    sent = [(r, k, f) for r, k, f in s.sent() if r.startswith("cust")]
    assert sent == [("cust.0", P.INPUT_END, {"socket": "inp", "expected": None}),
                    ("cust.1", P.INPUT_END, {"socket": "inp", "expected": None}),
                    ("cust.0", P.STOP, {}), ("cust.1", P.STOP, {})]
    assert s.coord.slots["cust.0"].stop_sent and s.coord.slots["cust.1"].stop_sent
    assert not s.coord.slots["lone.0"].stop_sent  # no input: it ends by itself
    s.tick()
    assert s.sent_kinds(P.STOP) == []  # once


def test_a_restarted_custom_node_hears_its_stop(tmp_path) -> None:
    """Its inputs end while a restarted custom replica is still starting: the STOP goes out once
    it runs (sent before its control socket connected, the ROUTER would drop it)."""
    s, _ = running(tmp_path, CUSTOM)
    s.exit("cust.1", -9)
    s.tick(0.2)  # the next incarnation is spawned
    s.finish("src.0", out=[0, 0, 0, 0])
    s.tick()
    assert "cust.inp" in s.coord.streams.ended_inputs
    assert ("cust.1", P.STOP) not in [(r, k) for r, k, f in s.sent()]  # not yet: starting
    s.say("cust.1", P.HELLO, pid=1)
    s.say("cust.1", P.BOUND, endpoints={})
    s.tick()
    s.say("cust.1", P.READY)
    s.tick()
    assert ("cust.1", P.STOP) in [(r, k) for r, k, f in s.sent()]


def test_acks_as_a_range_go_to_the_source_of_the_first_id(tmp_path) -> None:
    text = EXACTLY_ONCE.replace("run: m:source", "run: m:source\n        replicas: 2")
    s, _ = running(tmp_path, text)
    s.say("sink.0", P.ACK, r=[4, 3])
    assert [(r, f) for r, k, f in s.sent() if k == P.ACK] == [("src.0", {"r": [4, 3]})]


# -- losses (runtime/losses.py) ------------------------------------------------------------------
def test_loss_verdict_messages() -> None:
    from zflow.runtime.losses import Verdict

    assert Verdict(0, 0).message() is None
    assert Verdict(1, 0, ["1 of 9 records sent to b.i never arrived"]).message() == (
        "incomplete: 1 record lost\n  1 of 9 records sent to b.i never arrived")
    assert Verdict(0, 1).message() == (
        "incomplete: 1 record failed and was skipped or dead-lettered (on_error)")
    assert Verdict(3, 2, ["p", "q"], approximate=True).message() == (
        "incomplete: 3 records lost; 2 records failed and were skipped or dead-lettered "
        "(on_error)\n  p\n  q\n  (counts of killed replicas lag by up to one report, so the "
        "split above is approximate; the total is exact)")
    assert Verdict(0, 2, ["p"], approximate=True).message() == (
        "incomplete: 2 records failed and were skipped or dead-lettered (on_error)")
    assert Verdict(4, 1, ["p"]).as_dict() == {"lost": 4, "places": ["p"], "skipped": 1,
                                              "uncounted": []}
    assert Verdict(0, 0, uncounted=["c.0", "c.2"]).message() == (
        "incomplete: records may have been lost inside c.0, c.2 (command nodes that died "
        "mid-stream: zflow cannot count inside them)")


def test_losses_count_what_dead_replicas_held(tmp_path) -> None:
    from zflow.runtime.losses import Losses
    from zflow.runtime.slots import Slot
    from zflow.runtime.streams import CountGroup

    s = Script(tmp_path, PIPELINE)
    losses = Losses(s.plan)
    assert losses.count_in == {"src": [], "mid": ["inp"], "sink": ["inp"]}
    assert losses.count_out == {"src": ["out"], "mid": ["out"], "sink": []}
    mid = Slot("mid", 0, "python")
    mid.counters.cur = {"inp": [10, 0, 0, 0], "out": [0, 7, 0, 0]}
    assert losses.in_hand(mid) == 3
    assert losses.in_hand(Slot("mid", 1, "python")) == 0  # nothing reported yet
    losses.died("mid", 3)
    losses.died("mid", 2)
    losses.died("src", 5)  # a source holds nothing taken from a count group
    assert losses.held == {"mid": 5}
    g1 = CountGroup(["src.out"], ["mid.inp"], expected=20)
    g2 = CountGroup(["mid.out"], ["sink.inp"], expected=8)
    v = losses.verdict([(g1, 4), (g2, -2)], skipped=1, exactly_once=False)
    assert (v.lost, v.skipped, v.approximate) == (7, 1, True)
    assert v.places == ["4 of 20 records sent to mid.inp never arrived",
                        "5 records were inside mid replicas that died"]
    v = losses.verdict([(g1, 0)], skipped=0, exactly_once=False)
    assert (v.lost, v.places, v.approximate) == (5, ["5 records were inside mid replicas that "
                                                     "died"], False)
    assert losses.verdict([(g1, 4)], skipped=2, exactly_once=True).__dict__ == {
        "lost": 0, "skipped": 2, "places": [], "approximate": False, "uncounted": []}
    losses.died("cmd", 0, "cmd.1")
    losses.died("cmd", 0, "cmd.1")  # named once, however often it died
    assert losses.verdict([], skipped=0, exactly_once=True).uncounted == ["cmd.1"]
    assert losses.verdict([], skipped=0, exactly_once=False).uncounted == ["cmd.1"]
    losses.uncounted.clear()
    losses.held = {"mid": -9}
    v = losses.verdict([(g1, 3)], skipped=0, exactly_once=False)
    assert (v.lost, v.places, v.approximate) == (0, ["3 of 20 records sent to mid.inp never "
                                                     "arrived"], False)
