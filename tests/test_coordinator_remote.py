"""The coordinator of a run whose replicas join from other hosts (`zflow coordinator`), driven by
scripted histories: admission, refusals, key checks, lost links as deaths, incarnations.

No sockets, no processes: what a replica says arrives under the identity it chose, with the
public key its connection authenticated with (`user`), as the tcp ControlServer hands it over.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coordinator_script import PIPELINE, Script

from zflow import cluster, exitcodes
from zflow.runtime import protocol as P
from zflow.runtime.coordinator import LINK_LOST
from zflow.runtime.launchers.remote import RemoteLauncher

DIGEST = "d1"
KEYS = {"src": "KEY-src", "mid": "KEY-mid", "sink": "KEY-sink"}


class Joining(Script):
    """A Script whose replicas join: `hello` from `node.i#tag`, then the usual messages."""

    def __init__(self, tmp: Path, text: str = PIPELINE, keys: dict | None = KEYS,
                 **opts: Any) -> None:
        launcher = RemoteLauncher()
        super().__init__(tmp, text, launcher=launcher, remote=True, digest=DIGEST,
                         node_keys=keys, **opts)
        self.plan = self.coord.plan = cluster.remote_plan(self.plan)
        # what the launcher sends (signals, releases), by replica id
        launcher.sent = []  # type: ignore[attr-defined]
        ids = {}

        def send(ident: bytes, kind: str, fields: dict) -> None:
            launcher.sent.append((ids[ident], kind, fields))  # type: ignore[attr-defined]

        def identity(rid: str) -> bytes | None:
            slot = self.coord.slots[rid]
            ids[slot.identity] = rid
            return slot.identity if slot.pid is not None else None

        launcher.attach(send, identity)

    def join(self, rid: str, tag: str = "a", digest: str = DIGEST,
             key: str | None = None) -> bytes:
        ident = f"{rid}#{tag}".encode()
        user = key if key is not None else KEYS.get(rid.split(".")[0])
        self.coord.received(ident, P.pack(P.HELLO, pid=7, digest=digest, host=f"{rid}.h"),
                            self.now, user)
        return ident

    def say(self, rid: str, kind: str, **fields: Any) -> None:
        slot = self.coord.slots[rid]
        self.coord.received(slot.identity, P.pack(kind, **fields), self.now,
                            KEYS.get(slot.node))

    def welcomed(self) -> dict[str, dict]:
        """Replicas admitted since the last call → the spec each was given."""
        return {rid: json.loads(f["spec"]) for rid, k, f in self.sent() if k == P.WELCOME}

    def join_all(self) -> None:
        for rid in self.coord.slots:
            self.join(rid)


def test_spawn_waits_for_the_replica_to_join_and_hands_it_its_spec(tmp_path) -> None:
    s = Joining(tmp_path).start()
    assert s.sent() == [] and s.state("mid.0") == "starting"
    assert "not joined" in s.coord.why_not_ready(s.coord.slots["mid.0"])
    s.join_all()
    specs = s.welcomed()
    assert set(specs) == {"src.0", "mid.0", "mid.1", "sink.0"}
    assert specs["mid.1"]["replica"] == 1 and specs["mid.1"]["incarnation"] == 1
    out = next(x for x in specs["src.0"]["sockets"] if x["name"] == "out")
    assert out["bind_endpoint"] == f"tcp://*:{cluster.BASE_PORT}"
    s.barrier()
    assert s.coord.phase.value == "running"


def test_a_replica_with_another_topology_is_refused_with_a_reason(tmp_path) -> None:
    s = Joining(tmp_path).start()
    ident = s.join("mid.0", digest="other")
    sent = s.coord.take()
    assert [(i, k) for i, k, _ in sent] == [(ident, P.REFUSED)]
    assert "topology differs" in sent[0][2]["reason"]
    assert s.coord.slots["mid.0"].pid is None  # not admitted
    s.join("mid.0", tag="b")
    assert list(s.welcomed()) == ["mid.0"]


def test_a_key_of_another_node_is_ignored_and_so_is_garbage(tmp_path) -> None:
    s = Joining(tmp_path).start()
    s.join("mid.0", key=KEYS["sink"])  # the sink's key claiming to be a worker
    s.join("mid.0", key=None or "KEY-unknown")
    s.coord.received(b"\xff\xfe", b"not msgpack", s.now, KEYS["mid"])
    s.coord.received(b"nosuch.0#x", P.pack(P.HELLO, digest=DIGEST), s.now, KEYS["mid"])
    s.coord.received(b"mid.0#x", P.pack(P.READY), s.now, KEYS["mid"])  # not a hello
    s.coord.received(b"mid.0", P.pack(P.HELLO, digest=DIGEST), s.now, KEYS["mid"])  # no tag
    assert s.sent() == [] and s.coord.slots["mid.0"].pid is None
    s.join_all()
    s.sent()
    # admitted: its messages still need its node's key
    s.coord.received(s.coord.slots["mid.0"].identity, P.pack(P.BOUND, endpoints={}), s.now,
                     KEYS["sink"])
    assert s.state("mid.0") == "starting"
    s.say("mid.0", P.BOUND, endpoints={})
    assert s.state("mid.0") == "bound"


def test_without_keys_any_joining_replica_is_admitted(tmp_path) -> None:
    s = Joining(tmp_path, keys=None).start()
    s.join("mid.0", key="whatever")
    assert list(s.welcomed()) == ["mid.0"]


def test_a_lost_link_is_a_death_and_the_next_join_is_a_new_incarnation(tmp_path) -> None:
    s = Joining(tmp_path).start()
    s.join_all()
    s.barrier()
    s.sent()
    old = s.coord.slots["mid.1"].identity
    s.coord.link_lost(old, s.now)
    s.tick()
    assert s.state("mid.1") == "restarting"
    assert s.coord.slots["mid.1"].exit_code == LINK_LOST
    new = s.join("mid.1", tag="b")  # the engine's replacement, before the back-off ended
    assert s.welcomed() == {}
    s.tick(0.2)
    spec = s.welcomed()["mid.1"]
    assert spec["incarnation"] == 2 and s.coord.slots["mid.1"].identity == new
    s.coord.received(old, P.pack(P.BOUND, endpoints={}), s.now, KEYS["mid"])  # the dead one
    assert s.state("mid.1") == "starting"


def test_replicas_that_keep_losing_their_link_are_a_crash_loop(tmp_path) -> None:
    s = Joining(tmp_path).start()
    s.join_all()
    s.barrier()
    for n in range(3):  # mid has max_restarts: 2
        s.coord.link_lost(s.coord.slots["mid.0"].identity, s.now)
        s.tick(1.0)
        s.join("mid.0", tag=f"t{n}")
        s.tick(1.0)
    assert s.coord.code == exitcodes.FAILED
    assert "crash-looping" in (s.coord.message or "")


def test_exactly_once_sources_resend_when_a_link_is_lost(tmp_path) -> None:
    text = PIPELINE.replace("delivery: best-effort", "delivery: exactly-once")
    s = Joining(tmp_path, text).start()
    s.join_all()
    s.barrier()
    s.sent()
    s.coord.link_lost(s.coord.slots["mid.0"].identity, s.now)
    s.tick()
    assert s.sent_kinds(P.RESEND) == ["src.0"]


def test_bye_gives_the_exit_code_and_a_stop_ends_as_asked(tmp_path) -> None:
    s = Joining(tmp_path).start()
    s.join_all()
    s.barrier()
    s.say("src.0", P.FINISHED, s={"out": [0, 0, 0, 0]}, e=0)
    s.say("mid.0", P.FINISHED, s={}, e=0)
    s.say("mid.1", P.FINISHED, s={}, e=0)
    s.say("sink.0", P.FINISHED, s={}, e=0)
    s.tick()
    s.tick()
    assert s.coord.phase.value == "stopping"
    # a bye says what the replica used, which no launcher here could wait for; a malformed
    # figure is left out, not trusted
    s.say("src.0", P.BYE, code=0, cpu=0.5, maxrss=40_000_000)
    s.say("mid.0", P.BYE, code=0, cpu=0.25, maxrss=30_000_000)
    s.say("mid.1", P.BYE, code=0, cpu=float("inf"), maxrss=-1)
    s.say("sink.0", P.BYE, code=0, cpu=0.125)  # a command's wrapper says no peak
    for rid in ("src.0", "mid.0", "mid.1"):
        s.coord.link_lost(s.coord.slots[rid].identity, s.now)
    s.coord.link_lost(s.coord.slots["sink.0"].identity, s.now)
    s.tick()
    assert s.coord.done and s.coord.finish() == exitcodes.OK
    assert {s.state(r) for r in s.coord.slots} == {"stopped"}
    nodes = s.coord.model.snapshot()["nodes"]
    assert (nodes["src"]["cpu_s"], nodes["src"]["max_rss"]) == (0.5, 40_000_000)
    assert [r["cpu_s"] for r in nodes["mid"]["replica"]] == [0.25, None]
    assert (nodes["sink"]["cpu_s"], nodes["sink"]["max_rss"]) == (0.125, None)


def test_a_failing_replica_says_its_code_before_its_link_goes(tmp_path) -> None:
    s = Joining(tmp_path).start()
    s.join_all()
    s.barrier()
    s.say("mid.0", P.BYE, code=1)
    s.coord.link_lost(s.coord.slots["mid.0"].identity, s.now)
    s.tick(1.0)
    assert s.coord.slots["mid.0"].exit_code == 1 and s.state("mid.0") == "restarting"


def test_a_replica_that_never_leaves_is_given_up_on_at_the_end(tmp_path) -> None:
    s = Joining(tmp_path, grace=0.5).start()
    s.join_all()
    s.barrier()
    s.coord.interrupt(s.now)
    s.coord.interrupt(s.now)  # second Ctrl-C: kill at once, which here means stop waiting
    for rid, code, _ in s.launcher.reap():
        s.coord.exited(rid, code, s.now)
    s.tick()
    assert s.coord.done and s.coord.finish() == exitcodes.INTERRUPTED
    assert s.launcher.reap() == []  # given up on once


GUIDE = """
    version: 1
    name: guide
    nodes:
      vent:
        command: [python3, vent.py]
        stdin: go
        ready: {log: "^ready"}
        sockets:
          out: {type: PUSH, bind: auto, codec: json}
      worker:
        run: m:tag
        replicas: 2
        sockets:
          inp: {type: PULL, connect: vent.out, codec: json}
          out: {type: PUSH, connect: sink.inp}
      sink:
        run: m:Sink
        sockets:
          inp: {type: PULL, bind: auto}
"""


def test_a_command_node_that_joins_is_watched_through_its_wrapper(tmp_path) -> None:
    s = Joining(tmp_path, GUIDE, keys=None).start()
    for rid in ("vent.0", "worker.0", "worker.1", "sink.0"):
        s.join(rid, key="any")
    admitted = s.welcomed()
    assert set(admitted) == {"vent.0", "worker.0", "worker.1", "sink.0"}
    port = cluster.ports(s.plan)[("vent", "out")]
    assert s.coord.slots["vent.0"].bound == {"out": f"tcp://vent.0.h:{port}"}  # its own name
    for rid in ("worker.0", "worker.1", "sink.0"):
        s.say(rid, P.BOUND, endpoints={})
    s.tick()
    assert s.state("vent.0") == "starting"  # not listening yet
    s.say("vent.0", P.LISTENING, endpoints={"out": "tcp://10.0.0.7:7001"})
    assert s.state("vent.0") == "bound"
    s.tick()
    connect = {rid: f for rid, k, f in s.sent() if k == P.CONNECT}
    assert connect["worker.0"]["endpoints"]["inp"] == ["tcp://10.0.0.7:7001"]
    s.say("vent.0", P.CONNS, n={"out": 1})  # one of two workers connected
    assert s.state("vent.0") == "bound"
    s.say("vent.0", P.CONNS, n={"out": 2})
    s.say("vent.0", P.LINE, stream="stdout", text="ready to go")  # its ready: {log:} rule
    assert s.state("vent.0") == "ready"
    for rid in ("worker.0", "worker.1", "sink.0"):
        s.say(rid, P.READY)
    s.tick()
    assert s.coord.phase.value == "running"
    assert (s.coord.slots["vent.0"].identity, P.START) in [(i, k) for i, k, _ in s.coord.take()]
    assert s.launcher.sent == [("vent.0", P.RELEASE, {})]  # stdin: go, by message


def test_signals_travel_as_messages_to_wherever_the_replica_runs(tmp_path) -> None:
    s = Joining(tmp_path).start()
    s.join_all()
    s.barrier()
    s.launcher.signal("mid.0", 15)
    s.launcher.signal("mid.1", 10, group=False)
    assert s.launcher.sent == [("mid.0", P.SIGNAL, {"sig": 15, "group": True}),
                               ("mid.1", P.SIGNAL, {"sig": 10, "group": False})]


def test_a_replica_joining_after_the_end_is_told_the_run_is_over(tmp_path) -> None:
    s = Joining(tmp_path).start()
    s.join_all()
    s.barrier()
    s.coord.interrupt(s.now)
    s.coord.interrupt(s.now)  # stopping
    s.coord.take()
    late = s.join("mid.0", tag="late")
    assert s.coord.take() == [(late, P.REFUSED, {"reason": "the run is over", "code": 0})]


def test_a_remote_replicas_output_arrives_beside_its_control_link(tmp_path) -> None:
    s = Joining(tmp_path).start()
    s.join_all()
    out = s.coord.slots["sink.0"].identity + b"/out"
    lines = []
    s.model.log = lambda node, replica, stream, line: lines.append((node, stream, line))
    s.coord.received(out, P.pack(P.LINE, stream="stdout", text="42 answers"), s.now,
                     KEYS["sink"])
    s.coord.received(out, P.pack(P.LINE, stream="stdout", text="forged"), s.now, KEYS["mid"])
    s.coord.received(b"mid.7#x/out", P.pack(P.LINE, stream="stdout", text="?"), s.now,
                     KEYS["mid"])
    assert lines == [("sink", "stdout", "42 answers")]
