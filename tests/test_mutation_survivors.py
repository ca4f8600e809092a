"""The last mutants of the core that other tests left alive (docs/mutation.md): one test per
behaviour they showed was unchecked. No sockets, no processes, no sleeps."""

from __future__ import annotations

import signal
import textwrap
from types import SimpleNamespace

import pytest
from coordinator_script import PIPELINE, Script, running
from test_rules_units import rule_diags

from zflow import exitcodes
from zflow.plan import build_plan
from zflow.runtime import codec
from zflow.runtime import protocol as P
from zflow.runtime.losses import Losses
from zflow.runtime.replica import exactly_once
from zflow.runtime.replica.exactly_once import Seen, Unacked
from zflow.runtime.restarts import RestartPolicy, next_restart
from zflow.runtime.slots import Counters
from zflow.runtime.states import Outcome
from zflow.runtime.streams import CountGroup
from zflow.spec import load, rules
from zflow.spec.rules import Endpoint

EXACTLY_ONCE = PIPELINE.replace("delivery: best-effort", "delivery: exactly-once")


def plan_of(tmp_path, text: str):
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(text))
    res = load(str(path), env={})
    assert res.ok, res.diagnostics
    return build_plan(res.topology, str(path), run_dir="/r")




# -- plan ----------------------------------------------------------------------------------------
def test_how_inputs_of_command_nodes_and_services_end(tmp_path) -> None:
    plan = plan_of(tmp_path, """
        version: 1
        name: t
        nodes:
          src:
            run: m:f
            sockets:
              out: {type: PUSH, bind: auto, codec: json}
          cmd:
            command: [prog]
            sockets:
              inp: {type: PULL, connect: src.out, codec: json}
          api:
            run: m:handle
            sockets:
              rep: {type: REP, bind: auto, codec: json}
          cli:
            run: m:client
            sockets:
              req: {type: REQ, connect: api.rep, codec: json}
    """)
    assert plan.nodes["cmd"].sockets["inp"].end == "peers"  # a command node is opaque
    assert plan.nodes["api"].sockets["rep"].end == "peers"  # not markers, whatever the codec


def test_count_groups_follow_every_link(tmp_path) -> None:
    plan = plan_of(tmp_path, """
        version: 1
        name: t
        nodes:
          s:
            run: m:sink
            sockets:
              inp: {type: PULL, bind: auto}
          a:
            run: m:a
            sockets:
              out: {type: PUSH, connect: s.inp}
          b:
            run: m:b
            sockets:
              out: {type: PUSH, connect: [t.inp, s.inp]}
          t:
            run: m:sink
            sockets:
              inp: {type: PULL, bind: auto}
    """)
    assert plan.count_groups == [(["a.out", "b.out"], ["s.inp", "t.inp"])]


def test_a_wildcard_bind_is_reached_by_a_loopback_endpoint(tmp_path) -> None:
    plan = plan_of(tmp_path, """
        version: 1
        name: t
        nodes:
          res:
            run: m:sink
            sockets:
              inp: {type: PULL, bind: "tcp://0.0.0.0:7100", x-allow-public: true}
          w:
            run: m:w
            sockets:
              out: {type: PUSH, connect: "tcp://127.0.0.1:7100"}
    """)
    assert [(lk.connector, lk.binder) for lk in plan.links] == [(("w", "out"), ("res", "inp"))]
    assert not plan.nodes["res"].sockets["inp"].external
    assert not plan.nodes["w"].sockets["out"].external
    assert plan.nodes["res"].sockets["inp"].end == "count"


# -- slots, restarts, losses ----------------------------------------------------------------------
def test_errors_of_every_past_incarnation_add_up() -> None:
    c = Counters()
    for e in (2, 3, 4):
        c.errors = e
        c.fold()
    assert (c.errors_base, c.all_errors) == (9, 9)


def test_a_restart_is_not_a_crash_loop() -> None:
    v = next_restart(RestartPolicy("on-failure", 3, 10.0, 0.1, 1.0), [], 0.0)
    assert v.crash_loop is False


def test_loss_places_name_every_group_and_replica_exactly(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE)
    losses = Losses(s.plan)
    g = CountGroup(["src.out"], ["a.inp", "b.inp"], expected=10)
    losses.held = {"mid": 1, "sink": 0}
    v = losses.verdict([(g, 1)], skipped=0, exactly_once=False)
    assert v.places == ["1 of 10 records sent to a.inp, b.inp never arrived",
                        "1 records were inside mid replicas that died"]
    assert (v.lost, v.approximate) == (2, False)
    losses.held = {"mid": -1}
    v = losses.verdict([(g, 3)], skipped=0, exactly_once=False)
    assert (v.lost, v.approximate) == (2, True)  # the late count of a killed replica


# -- codec ---------------------------------------------------------------------------------------
def test_an_empty_plain_record_in_a_batch_does_not_stop_the_rest() -> None:
    sock = SimpleNamespace(frames=[])
    sock.send = sock.frames.append
    out = codec.Outbox("out", sock, "raw", 1, None)
    out.pending = [b"", b"x", b"", b"y"]
    out.flush()
    assert sock.frames == [b"x", b"y"]


# -- coordinator ---------------------------------------------------------------------------------
def test_python_replicas_get_no_connect_list_at_spawn(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE).start()
    assert {x.id: x.connect_endpoints for x in s.launcher.specs}["mid.0"] == {}


def test_the_start_timeout_names_ten_and_counts_the_rest(tmp_path) -> None:
    text = PIPELINE.replace("replicas: 2", "replicas: 9")  # 11 replicas wait
    s = Script(tmp_path, text, start_timeout=1.0).start()
    s.tick(2.0)
    named = ", ".join(f"{r} (not bound)" for r in ["src.0"] + [f"mid.{i}" for i in range(9)])
    assert s.coord.message == f"not ready after 1s: {named} and 1 more"
    text = PIPELINE.replace("replicas: 2", "replicas: 8")  # 10: all named
    s = Script(tmp_path, text, start_timeout=1.0).start()
    s.tick(2.0)
    assert s.coord.message.endswith("mid.7 (not bound), sink.0 (not bound)")


def test_an_interrupt_drains_then_stops_as_interrupted(tmp_path) -> None:
    s = running(tmp_path)
    s.coord.interrupt(s.now)
    assert s.coord.code is None  # draining: sources stop, what is in flight goes on
    for rid in s.python_replicas():
        s.finish(rid)
    s.tick()
    assert (s.coord.code, s.coord.outcome) == (exitcodes.INTERRUPTED, Outcome.INTERRUPTED)


def test_an_interrupt_that_does_not_drain_in_time_stops_as_interrupted(tmp_path) -> None:
    s = running(tmp_path, drain_timeout=1.0)
    s.coord.interrupt(s.now)
    s.tick(2.0)
    assert (s.coord.code, s.coord.outcome) == (exitcodes.INTERRUPTED, Outcome.INTERRUPTED)
    assert "did not finish within 1s of the interrupt" in s.coord.message


def test_while_draining_a_replica_that_exits_is_not_restarted(tmp_path) -> None:
    s = running(tmp_path)
    s.coord.interrupt(s.now)
    s.exit("mid.0", -9)
    assert s.state("mid.0") == "failed"
    assert s.model.replicas["mid"][0].detail == "exit -9"
    s.exit("mid.1", 0)  # exit 0 without having finished: not an end either
    s.tick(0.6)
    assert s.state("mid.1") == "failed"
    assert [x.id for x in s.launcher.specs].count("mid.1") == 1
    assert s.coord.code is None  # the drain goes on


def test_while_draining_a_finished_replica_that_crashes_is_just_failed(tmp_path) -> None:
    s = running(tmp_path)
    s.coord.interrupt(s.now)
    s.finish("sink.0", inp=[0, 0, 0, 0])
    s.exit("sink.0", -11)
    assert s.state("sink.0") == "failed"
    assert s.coord.code is None and s.coord.deaths == 0


def test_a_stall_while_draining_knows_about_deaths(tmp_path) -> None:
    s = running(tmp_path, drain_timeout=30.0)
    s.exit("mid.0", -9)
    s.tick(0.2)
    s.say("mid.0", P.BOUND, endpoints={})
    s.tick()
    s.say("mid.0", P.READY)
    s.tick()
    s.coord.streams.drain_timeout = 1.0  # the stall timeout; the drain itself has 30 s
    s.coord.interrupt(s.now)
    s.finish("src.0", out=[0, 10, 0, 0])
    s.say("mid.0", P.COUNT, socket="inp", n=3)
    s.tick()
    s.tick(0.5)
    s.say("mid.0", P.COUNT, socket="inp", n=3, idle=True)
    s.say("mid.1", P.COUNT, socket="inp", n=0, idle=True)
    s.tick(2.0)
    assert s.model.errors == [
        "7 of 10 records sent to mid.inp never arrived (lost with a replica that died); "
        "ending the stream without them"]


def test_a_death_in_an_exactly_once_run_loses_nothing(tmp_path) -> None:
    s = running(tmp_path, EXACTLY_ONCE)
    s.say("mid.0", P.STATS, s={"inp": [10, 0, 0, 0]}, e=0)
    s.exit("mid.0", -9)  # it held 10 records: resent by the source, not lost
    s.tick(0.2)
    s.say("mid.0", P.BOUND, endpoints={})
    s.tick()
    s.say("mid.0", P.READY)
    s.tick()
    for rid in s.python_replicas():
        s.finish(rid)
    s.tick()
    assert s.coord.code == exitcodes.OK
    assert s.model.losses["lost"] == 0


def test_a_silent_replica_is_named_once_and_asked_for_its_stack(tmp_path) -> None:
    s = Script(tmp_path, PIPELINE, quiet_after=10.0)
    s.now = 100.0
    s.start()
    s.barrier()
    for rid in s.python_replicas():
        s.say(rid, P.STATS, s={}, e=0)
    s.tick(6.0)
    for rid in s.python_replicas():
        if rid != "mid.1":
            s.say(rid, P.STATS, s={}, e=0)
    s.tick(4.0)  # mid.1 silent for exactly 10 s: not yet
    assert s.model.errors == []
    s.tick(1.0)
    assert s.model.errors == ["mid.1 has sent no report for 11s: stuck in user code? (its "
                              "stack follows on its stderr)"]
    assert s.launcher.signals == [("mid.1", signal.SIGUSR1, "process")]
    s.tick(1.0)
    assert len(s.model.errors) == 1  # said once
    s.say("mid.1", P.STATS, s={}, e=0)  # it speaks again: a later silence is named again
    s.tick(11.0)
    assert len(s.model.errors) == 5


def test_endpoints_ready_again_changes_nothing_once_running(tmp_path) -> None:
    text = """
        version: 1
        name: cmdsrc
        nodes:
          gen:
            command: [gen]
            sockets:
              out: {type: PUSH, bind: auto, codec: json}
          sink:
            run: m:Sink
            sockets:
              inp: {type: PULL, connect: gen.out, codec: json}
    """
    s = Script(tmp_path, text).start()
    s.coord.endpoints_ready("gen.0")
    s.say("sink.0", P.BOUND, endpoints={})
    s.tick()
    s.say("sink.0", P.READY)
    s.tick()
    s.coord.connections_ready("gen.0")  # the sink is connected to it
    s.tick()
    assert s.state("gen.0") == "running"
    s.coord.endpoints_ready("gen.0")
    s.coord.connections_ready("gen.0")
    assert s.state("gen.0") == "running"


def test_xpub_nodes_probe_their_subscribers(tmp_path) -> None:
    text = """
        version: 1
        name: px
        nodes:
          prox:
            run: m:proxy
            sockets:
              xp: {type: XPUB, bind: auto}
          sub:
            run: m:Sink
            sockets:
              inp: {type: SUB, connect: prox.xp, subscribe: ""}
    """
    s = Script(tmp_path, text).start()
    for rid in s.python_replicas():
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    assert ("prox.0", P.PROBE, {"on": True}) in s.sent()
    for rid in s.python_replicas():
        s.say(rid, P.READY)
    s.tick()
    s.exit("sub.0", -9)
    s.tick(0.2)
    s.say("sub.0", P.BOUND, endpoints={})
    s.tick()
    s.say("sub.0", P.READY)
    s.tick()
    assert ("prox.0", P.PROBE, {"on": False}) in s.sent()


# -- exactly-once source -------------------------------------------------------------------------
class Ctl:
    def __init__(self, clock, on_listen) -> None:
        self.clock, self.on_listen = clock, on_listen
        self.stop_requested = self.resend = False
        self.sent: list = []
        self.polls = 0
        self.listens = 0
        self.snapshots: list = []
        self.unacked = Unacked(1)
        self.deaths: list = []
        self.interrupted = self.abandon = False
        self.ctrl = SimpleNamespace(poll=self.poll)

    def poll(self, timeout: int, flags: int) -> bool:
        self.polls += 1
        return True

    def drain(self) -> None:
        self.listens += 1
        self.snapshots.append(dict(self.unacked))
        self.on_listen(self, self.unacked)
        self.clock.now += 0.125

    def send(self, kind: str, **fields) -> None:
        self.sent.append((kind, fields))

    def probe_tick(self) -> None:
        pass

    def tick(self) -> None:
        pass


def run_source(monkeypatch, on_listen, records, *, window=100, lease=5.0, batches=(1,)):
    clock = SimpleNamespace(now=0.0)
    clock.monotonic = clock.perf_counter = lambda: clock.now
    monkeypatch.setattr(exactly_once, "time", clock)
    ctl = Ctl(clock, on_listen)
    frames: list = []
    outs = []
    for b in batches:
        o = codec.IdOutbox("out", SimpleNamespace(send=frames.append), "msgpack", b, None)
        outs.append(o)
    node = SimpleNamespace(control=ctl, outboxes=outs, unacked=ctl.unacked,
                           spec=SimpleNamespace(sources=1, source_index=0, window=window,
                                                lease=lease, window_bytes=1 << 30,
                                                socket=lambda name: SimpleNamespace(
                                                    peer_replicas=0)))
    exactly_once.run_source(node, records)
    return ctl, frames


def test_a_source_reads_one_batch_at_a_time(monkeypatch) -> None:
    ctl, _ = run_source(monkeypatch, lambda c, u: u.clear(), ["a", "b", "c"])
    assert ctl.snapshots[0] == {0: "a"}


def test_a_full_window_is_waited_on_not_read_past(monkeypatch) -> None:
    def every_other(ctl, unacked) -> None:
        if ctl.listens % 2 == 0 and unacked:
            del unacked[min(unacked)]

    ctl, frames = run_source(monkeypatch, every_other, list(range(6)), window=2)
    assert len(frames) == 6  # every record sent, none dropped by a full window
    assert max(len(x) for x in ctl.snapshots) == 2
    # it waits (polls) only while the window is full or everything is sent: 11 of 12 listens
    assert (ctl.polls, ctl.listens) == (11, 12)


def test_the_lease_counts_again_after_a_resend(monkeypatch) -> None:
    def slow(ctl, unacked) -> None:
        if ctl.listens == 6:
            unacked.clear()

    ctl, frames = run_source(monkeypatch, slow, ["a"], lease=0.25)
    assert len(frames) == 2  # resent once at .375 s; the next lease had not run out at .75


# -- Seen ----------------------------------------------------------------------------------------
def test_forget_below_the_second_id() -> None:
    s = Seen(1)
    s.forget_below(1)
    assert (s.los[0], s.his[0]) == ([0], [1])


# -- rules ---------------------------------------------------------------------------------------
def test_shape_inference_reads_every_data_socket() -> None:
    assert rules.inferred_shape({"sockets": {"x-a": {"type": "PULL"}, "i": {"type": "PULL"}}}) \
        == "sink"
    assert rules.inferred_shape({"sockets": {"c": {"type": "PUB", "send_on_end": "E"},
                                             "i": {"type": "PULL"}}}) == "sink"
    assert rules.inferred_shape({"sockets": {"a": [1], "i": {"type": "PULL"}}}) == "sink"
    assert rules.inferred_shape({"sockets": {"r": {"type": "REP"}, "u": {"type": "NOPE"}}}) \
        == "service"


def test_a_host_named_x_is_a_host() -> None:
    assert Endpoint("tcp", host="X").norm_host() == "X"


def test_later_sockets_are_checked_after_odd_ones() -> None:
    assert rule_diags("""
    defaults: {codec: msgpack}
    nodes:
      a:
        run: m:f
        sockets:
          x-o: {type: PUSH, bind: auto}
          o: {type: PUSH, bind: auto, codec: bogus}
          p: {type: PUSH, bind: auto}
      b:
        run: m:f
        sockets:
          i: {type: PULL, connect: [a.o, a.p]}
    """) == []


def test_pair_hint_for_two_sockets_of_one_type() -> None:
    got = rule_diags("""
    nodes:
      a: {run: m:f, sockets: {s: {type: SUB, bind: auto}}}
      b: {run: m:f, sockets: {s: {type: SUB, connect: a.s, subscribe: ""}}}
    """, only=["ZF050"])
    assert [g[5] for g in got] == ["SUB peers with PUB or XPUB: change one side's type"]


def test_topic_is_allowed_on_xpub() -> None:
    assert rule_diags("""
    nodes:
      a: {run: m:f, sockets: {s: {type: XPUB, bind: auto, topic: t}}}
      b: {run: m:f, sockets: {s: {type: SUB, connect: a.s, subscribe: ""}}}
    """) == []


def test_a_clash_names_the_line_of_the_first_bind() -> None:
    got = rule_diags("""
    nodes:
      a:
        run: m:f
        sockets:
          p:
            type: PUSH
            bind: "tcp://127.0.0.1:7000"
          q: {type: PUSH, bind: "tcp://127.0.0.1:7000"}
    """, only=["ZF058"])
    assert [g[4] for g in got] == [
        "tcp://127.0.0.1:7000 is already bound by 'a.p' (line 7): one binder per endpoint"]


def test_one_binder_reached_twice_is_one_peer() -> None:
    got = rule_diags("""
    nodes:
      a: {run: m:f, sockets: {p: {type: PAIR, bind: "tcp://127.0.0.1:7000"}}}
      b:
        run: m:f
        sockets:
          p: {type: PAIR, connect: ["tcp://127.0.0.1:7000", a.p]}
    """)
    assert [(g[0], g[1]) for g in got] == [("ZF070", "nodes.b.sockets.p.connect[1]")]
    assert got[0][4] == "'b.p' connects to 'a.p' twice: as tcp://127.0.0.1:7000 and as a.p"


def test_a_pair_connecting_to_two_endpoints_has_two_peers() -> None:
    got = rule_diags("""
    nodes:
      b:
        run: m:f
        sockets:
          p: {type: PAIR, connect: ["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"]}
    """)
    assert [(g[0], g[4]) for g in got] == [
        ("ZF063", "PAIR socket 'b.p' has 2 peers; PAIR talks to exactly one")]


def test_references_keep_being_checked_after_a_duplicate_or_a_bad_endpoint() -> None:
    got = rule_diags("""
    nodes:
      a: {run: m:f, sockets: {o: {type: PUSH, bind: auto}}}
      b:
        run: m:f
        sockets:
          i: {type: PULL, connect: [a.o, a.o, nope.o]}
          j: {type: PULL, connect: ["tcp://*:1", nope.o]}
          k: {type: PULL, connect: [a.o, "tcp://127.0.0.1:9", nope.o]}
    """)
    assert [(g[0], g[1]) for g in got] == [
        ("ZF070", "nodes.b.sockets.i.connect[1]"), ("ZF051", "nodes.b.sockets.i.connect[2]"),
        ("ZF054", "nodes.b.sockets.j.connect[0]"), ("ZF051", "nodes.b.sockets.j.connect[1]"),
        ("ZF051", "nodes.b.sockets.k.connect[2]")]


def test_hints_for_an_unknown_socket_skip_extensions_and_connectors() -> None:
    got = rule_diags("""
    nodes:
      a:
        run: m:f
        sockets:
          x-outt: {type: PUSH, bind: auto}
          outp: {type: PUSH, connect: b.j}
          odd: [1]
          out: {type: PUSH, bind: auto}
      b:
        run: m:f
        sockets:
          i: {type: PULL, connect: [a.outt, a.qq]}
          j: {type: PULL, bind: auto}
    """, only=["ZF052"])
    assert [g[5] for g in got] == ["did you mean 'a.out'?", "sockets of 'a': outp, odd, out"]


def test_a_reference_to_a_socket_with_bind_and_connect_is_not_said_to_connect() -> None:
    got = rule_diags("""
    nodes:
      a: {run: m:f, sockets: {o: {type: PUSH, bind: auto, connect: c.i}}}
      b: {run: m:f, sockets: {i: {type: PULL, connect: a.o}}}
      c: {run: m:f, sockets: {i: {type: PULL, bind: auto}}}
    """, only=["ZF053"])
    assert got == []


@pytest.mark.parametrize("bad", ["nope.o", "a.nope"])
def test_a_broken_reference_silences_the_no_peer_warning(bad: str) -> None:
    got = rule_diags(f"""
    nodes:
      a: {{run: m:f, sockets: {{o: {{type: PUSH, bind: auto}}, p: {{type: PUSH, bind: auto}}}}}}
      b: {{run: m:f, sockets: {{i: {{type: PULL, connect: {bad}}}}}}}
    """)
    assert [g[0] for g in got] == ["ZF051" if bad.startswith("nope") else "ZF052"]


def test_every_node_shape_is_checked_after_a_custom_one() -> None:
    got = rule_diags("""
    nodes:
      a: {run: m:f, shape: custom, sockets: {o: {type: PUSH, bind: auto}}}
      b: {run: m:f, shape: sink, sockets: {o: {type: PUSH, connect: c.i}}}
      c: {run: m:f, sockets: {i: {type: PULL, bind: auto}}}
    """, only=["ZF067"])
    assert [g[1] for g in got] == ["nodes.b.shape"]


def test_long_auto_paths_are_found_after_a_badly_named_socket(monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", "/tmpdir")
    got = rule_diags(f"""
    nodes:
      a:
        run: m:f
        sockets:
          9bad: {{type: PUSH, bind: auto}}
          {"s" * 90}: {{type: PUSH, bind: auto}}
    """, only=["ZF057"])
    assert len(got) == 1


def test_a_guess_prefers_sockets_that_bind() -> None:
    got = rule_diags("""
    nodes:
      a:
        run: m:f
        sockets:
          queue: {type: PUSH, bind: auto}
          queux: {type: PUSH, connect: c.i}
      b: {run: m:f, sockets: {i: {type: PULL, connect: [a.queue, a.queuy]}}}
      c: {run: m:f, sockets: {i: {type: PULL, bind: auto}}}
    """, only=["ZF052"])
    assert [g[5] for g in got] == ["did you mean 'a.queue'?"]


def test_targets_after_a_connector_reference_or_a_second_naming_are_checked() -> None:
    got = rule_diags("""
    nodes:
      a:
        run: m:f
        sockets:
          p: {type: PUSH, bind: "tcp://127.0.0.1:7000"}
          c: {type: PUSH, connect: b.j}
      b:
        run: m:f
        sockets:
          i: {type: PULL, connect: [a.c, nope.o]}
          k: {type: PULL, connect: ["tcp://127.0.0.1:7000", a.p, nope.o]}
          j: {type: PULL, bind: auto}
    """)
    assert [(g[0], g[1]) for g in got] == [
        ("ZF053", "nodes.b.sockets.i.connect[0]"), ("ZF051", "nodes.b.sockets.i.connect[1]"),
        ("ZF070", "nodes.b.sockets.k.connect[1]"), ("ZF051", "nodes.b.sockets.k.connect[2]")]


def test_shapes_are_checked_after_an_extension_node() -> None:
    got = rule_diags("""
    nodes:
      x-tmpl: {run: m:f, shape: sink}
      b: {run: m:f, shape: sink, sockets: {o: {type: PUSH, connect: c.i}}}
      c: {run: m:f, sockets: {i: {type: PULL, bind: auto}}}
    """, only=["ZF067"])
    assert [g[1] for g in got] == ["nodes.b.shape"]


def test_a_repeated_count_is_not_a_new_sample_for_the_status(tmp_path) -> None:
    s = running(tmp_path)
    s.now = 1.0
    s.say("mid.0", P.COUNT, socket="inp", n=5)
    s.now = 2.0
    s.say("mid.0", P.COUNT, socket="inp", n=5)  # nothing new: the rate is not sampled again
    assert s.model.replicas["mid"][0].rates[("inp", "in")].last_t == 1.0
