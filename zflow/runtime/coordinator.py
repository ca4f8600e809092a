"""The coordinator: the control-plane logic of a run, and nothing else.

It knows the plan and what each replica said; it does not know how or where processes run. It is
driven by four kinds of input — control messages (`received`), process events from the launcher
(`spawned`, `spawn_failed`, `exited`, `endpoints_ready`), interrupts, and the passing of time
(`tick(now)`) — and answers with control messages to send (`take()`), requests to the launcher
(`spawn`, `signal`) and writes to the status model. No sockets, no clock of its own: a unit test
drives it with a scripted history (tests/test_coordinator.py).

The run: every replica is spawned; each binds and reports `bound`; when all have bound, each is
told where to `connect` and PUB sockets `probe` until every SUB has seen each publisher (then the
replica says `ready`); when all are ready the barrier opens (`start`). Streams end as streams.py
decides. When every replica has finished, all are told to `stop`; what does not exit is signalled
(SIGTERM after the drain period, SIGKILL after `grace`). docs/runtime.md has the whole protocol.
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Callable
from typing import Any

from zflow import cluster, exitcodes
from zflow.plan import Plan
from zflow.records import record
from zflow.runtime import protocol as P
from zflow.runtime.barrier import Barrier
from zflow.runtime.exits import Exits
from zflow.runtime.launchers import Launcher, Spawned, SpawnError
from zflow.runtime.losses import Losses
from zflow.runtime.reloads import Reloads
from zflow.runtime.restarts import RestartPolicy
from zflow.runtime.slots import Slot
from zflow.runtime.spec import ReplicaSpec, build_replica_spec, dead_letter_path
from zflow.runtime.states import (
    READY_OR_LATER,
    Outcome,
    ReplicaState,
    RunPhase,
)
from zflow.runtime.streams import EndOfStream

S = ReplicaState


def _debug(msg: str, *args: object) -> None:
    """A malformed or stray control message, at debug level (logging is imported only then:
    ~3 ms at the start of every run otherwise)."""
    import logging

    logging.getLogger("zflow.coordinator").debug(msg, *args)


#: the exit code of a remote replica whose link died before it said `bye`
LINK_LOST = 255


@record
class Options:
    verbose: bool = False
    telemetry: bool = True
    grace: float | None = None
    drain_timeout: float = 5.0
    start_timeout: float = 30.0
    refresh: float = 0.2
    #: a running replica that sends no report for this long is named (and asked for its stack)
    quiet_after: float = 10.0
    #: replicas are started elsewhere and join (`zflow coordinator`): the topology digest they
    #: must have, and, with CURVE, the public key (z85) of each node
    remote: bool = False
    digest: str | None = None
    node_keys: dict[str, str] | None = None
    #: `security: {curve: true}`: the data keypair every replica gets in its spec (`{}`: the
    #: replicas have their own copy)
    data_key: dict[str, str] | None = None


class Coordinator(Barrier, Exits, Reloads):
    def __init__(self, plan: Plan, model: Any, launcher: Launcher, opts: Options) -> None:
        self.plan = plan
        self.model = model
        self.launcher = launcher
        self.opts = opts
        self.slots: dict[str, Slot] = {
            f"{n}.{i}": Slot(n, i, plan.nodes[n].kind) for n, i in plan.replica_ids()}
        self.by_identity: dict[bytes, Slot] = {}
        self.outbox: list[tuple[bytes, str, dict[str, Any]]] = []
        #: remote runs: the spec each slot waits to hand to a joining replica, and the latest
        #: join (identity, hello) of each slot not yet admitted
        self.pending: dict[str, ReplicaSpec] = {}
        self.joins: dict[str, tuple[bytes, dict[str, Any]]] = {}
        self.phase = RunPhase.STARTING
        self.code: int | None = None
        self.outcome = Outcome.COMPLETED
        self.message: str | None = None
        self.abandon = False
        self.interrupts = 0
        self.t0 = 0.0
        self.stop_sent_at: float | None = None
        self.term_sent_at: float | None = None
        self.drain_until = 0.0
        #: the time of the latest input (the coordinator has no clock of its own)
        self.now = 0.0
        self.deaths = 0  # replicas that died mid-run: only then can best-effort lose records
        self.reloading: set[str] = set()  # replicas --watch stopped, to restart at their exit
        self.losses = Losses(plan)
        #: exactly-once: records (by id) that failed a replica, and how often; records that
        #: failed POISON_ATTEMPTS times were dead-lettered, per node that they failed
        self.attempts: dict[int, int] = {}
        self.poisoned: dict[str, int] = {}
        self.ready_patterns = {n.name: re.compile(n.ready["log"]) for n in plan.nodes.values()
                               if "log" in n.ready}
        #: `lifetime: service` nodes still running, and the nodes linked to each node
        self.services = {n.name for n in plan.nodes.values() if n.lifetime == "service"}
        self.users: dict[str, set[str]] = {n: set() for n in plan.nodes}
        for lk in plan.links:
            self.users[lk.binder[0]].add(lk.connector[0])
            self.users[lk.connector[0]].add(lk.binder[0])
        for name in self.services:  # services serving services: the others decide
            self.users[name] -= self.services
        self.policies = {n.name: RestartPolicy.of(n) for n in plan.nodes.values()}
        self.eo = plan.delivery != "best-effort"  # acknowledged: exactly- or at-least-once
        #: nodes with PUB sockets that probe their zflow subscribers at start
        self.probers = {n.name for n in plan.nodes.values() if n.kind == "python" and any(
            s.type in ("PUB", "XPUB") and s.zflow_peers for s in n.sockets.values())}
        #: exactly-once: source replicas in id order (id % len(sources) is the source's index)
        self.sources = self._shaped("source")
        self.sinks = self._shaped("sink")
        #: exactly-once: nodes that take records straight from a source (their pipes deliver
        #: each source's frames in order, which tells what a dead one's pipe held)
        self.hop1 = {e.dst.split(".")[0] for e in plan.edges
                     if plan.nodes[e.src.split(".")[0]].shape == "source"}
        self.streams = EndOfStream(plan, self.slots, self._send, self._error,
                                   drain_timeout=opts.drain_timeout, exactly_once=self.eo,
                                   sources=self.sources)
        self.handlers: dict[str, Callable[[Slot, dict[str, Any], float], None]] = {
            P.HELLO: self._on_hello, P.BOUND: self._on_bound, P.READY: self._on_ready,
            P.STATS: self._on_stats, P.COUNT: self._on_count, P.TOTAL: self._on_total,
            P.FINISHED: self._on_finished, P.LOW: self._on_low, P.ACK: self._on_ack,
            P.TOOK: self._on_took,
            P.STOPPING: self._on_stopping, P.FATAL: self._on_fatal, P.BYE: self._on_bye,
            P.LISTENING: self._on_listening, P.CONNS: self._on_conns, P.LINE: self._on_line,
        }

    def _shaped(self, shape: str) -> list[Slot]:
        return [self.slots[f"{n.name}.{i}"] for n in self.plan.nodes.values()
                if n.shape == shape for i in range(n.replicas)]

    # -- output ------------------------------------------------------------------------------
    def take(self) -> list[tuple[bytes, str, dict[str, Any]]]:
        """Control messages to send, as (identity, kind, fields), in order."""
        out, self.outbox = self.outbox, []
        return out

    def _send(self, slot: Slot, kind: str, **fields: Any) -> None:
        # a command node that joined from another host has a wrapper that listens for us
        if (slot.kind == "python" or slot.joined_as is not None) and slot.alive \
                and slot.pid is not None:
            self.outbox.append((slot.identity, kind, fields))

    def _set(self, slot: Slot, state: ReplicaState, detail: str | None = None) -> None:
        if slot.to(state):
            self.model.replica_state(slot.node, slot.index, state.value, detail)

    def _error(self, message: str) -> None:
        self.model.error(message)

    def _log(self, slot: Slot, line: str) -> None:
        self.model.log(slot.node, slot.index, "zflow", line)

    def _push_counters(self, slot: Slot) -> None:
        self.model.replica_counters(slot.node, slot.index, slot.counters.cumulative(),
                                    slot.counters.all_errors)

    # -- process events ----------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.t0 = now
        self.model.set_overall("starting")
        slots = [s for s in self.slots.values() if not self._binders_pending(s)]
        many = getattr(self.launcher, "spawn_many", None)
        if many is None:
            for slot in slots:
                if self.phase is RunPhase.STARTING:
                    self._spawn(slot)
            return
        # a launcher that starts many at once (the local one: fork requests in a row)
        specs = [self._spec(slot) for slot in slots]
        got = list(zip(slots, specs, many(specs), strict=True))
        # every replica that started is known before a failure may stop the run (it stops
        # what it knows)
        for slot, spec, g in sorted(got, key=lambda x: isinstance(x[2], SpawnError)):
            self._launched(slot, spec, g)

    def _spawn(self, slot: Slot) -> None:
        spec = self._spec(slot)
        try:
            got = self.launcher.spawn(spec)
        except SpawnError as e:
            got = e
        self._launched(slot, spec, got)

    def _spec(self, slot: Slot) -> ReplicaSpec:
        """A new incarnation of the slot, and the spec it is started with."""
        n = self.plan.nodes[slot.node]
        if slot.state is not S.STARTING:
            self._set(slot, S.STARTING)
        slot.new_incarnation()
        connect = ({k: self._connect_endpoints(slot.node, k) for k, v in n.sockets.items()
                    if v.mode == "connect"} if n.kind == "command" else None)
        spec = build_replica_spec(
            self.plan, slot.node, slot.index, slot.incarnation, bound=slot.bound,
            connect=connect, sources=len(self.sources),
            source_index=self.sources.index(slot) if slot in self.sources else 0,
            verbose=self.opts.verbose, telemetry=self.opts.telemetry,
            curve=self.opts.data_key if self.plan.curve else None)
        return spec

    def _launched(self, slot: Slot, spec: ReplicaSpec, got: Spawned | SpawnError | None) -> None:
        if isinstance(got, SpawnError):
            self.spawn_failed(slot.id, str(got))
            return
        if got is None:  # started elsewhere: it joins (a join may be waiting already)
            self.pending[slot.id] = spec
            self._admit(slot)
            return
        self.spawned(slot.id, got.pid, got.endpoints)

    def spawned(self, replica: str, pid: int, endpoints: dict[str, str]) -> None:
        slot = self.slots[replica]
        slot.pid = pid
        slot.bound.update(endpoints)
        slot.spawned_at = self.now
        slot.said_ready = not self.plan.nodes[slot.node].ready
        self.by_identity[slot.identity] = slot  # earlier incarnations' entries fail the check
        self.model.replica_proc(slot.node, slot.index, pid, None, None)

    def output(self, replica: str, stream: str, line: str) -> None:
        """A line the replica printed (the launcher captured it)."""
        slot = self.slots[replica]
        if stream == "stderr":
            slot.stderr_tail.append(line)
        self.model.log(slot.node, slot.index, stream, line)
        if not slot.said_ready:
            self.ready_rule(slot, self.now, line)

    def spawn_failed(self, replica: str, message: str) -> None:
        slot = self.slots[replica]
        slot.fatal = {"phase": "spawn", "message": message}
        slot.exit_code = 127
        self._set(slot, S.FAILED, "could not start")
        self._fail_start(slot)

    def launcher_failed(self, message: str) -> None:
        """The launcher can start no more replicas (the fork server died)."""
        code = exitcodes.START_FAILED if self.phase is RunPhase.STARTING else exitcodes.FAILED
        self._begin_stop(code, message, Outcome.FAILED)

    def interrupt(self, now: float) -> None:
        """Ctrl-C or SIGTERM. The first, while running, stops the sources and lets what is in
        flight drain, so sinks' `end()` runs and the result is kept; a second kills at once."""
        self.interrupts += 1
        self.model.announce("overall", state="interrupted")
        if self.phase is RunPhase.RUNNING and self.interrupts == 1:
            self.phase = RunPhase.DRAINING
            self.model.set_overall("draining")
            self.drain_until = now + self.opts.drain_timeout
            for slot in self.slots.values():
                self._send(slot, P.INTERRUPT)
                if not self.streams.inputs(self.plan.nodes[slot.node]):
                    self._send(slot, P.STOP)  # a source (or an input-less custom node)
            return
        self._begin_stop(exitcodes.INTERRUPTED, "interrupted", Outcome.INTERRUPTED)
        if self.interrupts >= 2:
            self._advance_stop(now)

    # -- replicas that join from elsewhere -----------------------------------------------------
    def _join(self, identity: bytes, data: bytes, user: str | None) -> None:
        """A replica started by an engine says `hello` under an identity of its own choosing
        (`node.i#tag`). It is admitted into its slot when the slot waits for a process (at
        start, or after the previous incarnation's death and back-off); until then its join
        waits. Whatever does not check out is ignored, never an error of the run."""
        try:
            rid, _, tag = identity.decode().partition("#")
            msg = P.unpack(data)
        except (UnicodeDecodeError, ValueError, TypeError):
            _debug("ignored a message from unknown identity %r", identity)
            return
        slot = self.slots.get(rid)
        if slot is None or not tag or msg.get("t") != P.HELLO:
            _debug("ignored %r from %r: not a replica's hello", msg.get("t"), identity)
            return
        if not self._key_ok(slot, user):
            return
        if self.phase in (RunPhase.STOPPING, RunPhase.DONE):
            # an engine retrying a pod after the end: nothing to do, and nothing went wrong
            self.outbox.append((identity, P.REFUSED, {"reason": "the run is over", "code": 0}))
            return
        if msg.get("digest") != self.opts.digest:
            self.outbox.append((identity, P.REFUSED, {
                "reason": f"its topology differs from the coordinator's (digest "
                          f"{msg.get('digest')}, the coordinator's {self.opts.digest})",
                "code": exitcodes.START_FAILED}))
            self._log(slot, f"refused a replica from {msg.get('host') or '?'}: its topology "
                            "differs from this one (same file and --set/--scale needed)")
            return
        self.joins[rid] = (identity, msg)
        self._admit(slot)

    def _key_ok(self, slot: Slot, user: str | None) -> bool:
        """With CURVE, the key a connection authenticated with must be its node's."""
        keys = self.opts.node_keys
        if keys is None or user == keys.get(slot.node):
            return True
        _debug("ignored a message for %s: authenticated as another node's key", slot.id)
        return False

    def _admit(self, slot: Slot) -> None:
        if slot.id not in self.pending or slot.id not in self.joins or slot.pid is not None:
            return
        identity, msg = self.joins.pop(slot.id)
        spec = self.pending.pop(slot.id)
        slot.joined_as = identity
        pid = msg.get("pid")
        host = str(msg.get("host") or "")
        # a command node binds by itself: its endpoints, as its peers will reach them, are
        # known now (its wrapper may correct them when it listens)
        bound = {s.name: cluster.advertised(s.bind_endpoint, host) for s in spec.sockets
                 if s.mode == "bind" and s.bind_endpoint and host} if slot.kind == "command" \
            else {}
        self.spawned(slot.id, pid if isinstance(pid, int) and pid > 0 else 1, bound)
        self._send(slot, P.WELCOME, spec=spec.to_json())
        if msg.get("host"):
            self._log(slot, f"joined from {msg['host']} (incarnation {slot.incarnation})")

    def links(self) -> list[bytes]:
        """Identities of the replicas whose control link should be up (remote runs)."""
        return [s.identity for s in self.slots.values()
                if s.joined_as is not None and s.alive and s.pid is not None]

    def link_lost(self, identity: bytes, now: float) -> None:
        """The control link of a replica that joined went away (closed, or heartbeats stopped):
        its process is as good as dead, with the exit code it said last. A link lost after
        zflow asked it to stop is the stop it asked for."""
        slot = self.by_identity.get(identity)
        if slot is None or slot.identity != identity or not slot.alive:
            return
        code = slot.bye_code
        if code is None:
            code = 0 if self.phase in (RunPhase.STOPPING, RunPhase.DONE) else LINK_LOST
        if code == LINK_LOST:
            self._log(slot, "its control link was lost (closed, or no heartbeat)")
        self.exited(slot.id, code, now)

    def _on_listening(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        """A remote command node's bind endpoints accept connections (what the local launcher
        finds out by connecting to them)."""
        slot.bound.update(msg.get("endpoints") or {})
        self.endpoints_ready(slot.id)

    def _on_conns(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        """A remote command node's established connections per bind socket (the local launcher
        counts them in /proc/net): ready once every replica that connects to it is there."""
        counts = msg.get("n") or {}
        if all(counts.get(k, 0) >= n for k, n in self.expected_connections(slot).items() if n):
            self.connections_ready(slot.id)

    def _on_line(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        self.output(slot.id, "stderr" if msg.get("stream") == "stderr" else "stdout",
                    str(msg.get("text", "")))

    def _remote_output(self, identity: bytes, data: bytes, user: str | None,
                       now: float) -> None:
        """A line a replica on another host printed, from the link beside its control link."""
        slot = self.by_identity.get(identity)
        if slot is None or slot.identity != identity or not slot.alive \
                or not self._key_ok(slot, user):
            return
        try:
            msg = P.unpack(data)
        except (ValueError, TypeError):
            return
        if msg.get("t") == P.LINE:
            self._on_line(slot, msg, now)

    def _on_bye(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        code = msg.get("code")
        slot.bye_code = code if isinstance(code, int) else None
        cpu, peak = msg.get("cpu"), msg.get("maxrss")
        if type(cpu) in (int, float) and math.isfinite(cpu) and cpu >= 0:
            ok_peak = type(peak) is int and peak >= 0
            self.model.replica_usage(slot.node, slot.index, float(cpu),
                                     peak if ok_peak else None)

    # -- control messages ------------------------------------------------------------------------
    def received(self, identity: bytes, data: bytes, now: float, user: str | None = None) -> None:
        slot = self.by_identity.get(identity)
        if slot is None and self.opts.remote:
            self.now = now
            if identity.endswith(b"/out"):  # a remote replica's output (replica/join.Tee)
                self._remote_output(identity[:-4], data, user, now)
            else:
                self._join(identity, data, user)
            return
        if slot is None or slot.identity != identity or not slot.alive:
            return  # not one of ours, or a previous incarnation's last words
        if self.opts.node_keys is not None and not self._key_ok(slot, user):
            return
        self.now = slot.last_heard = now
        if slot.quiet_said:
            slot.quiet_said = False
            self._log(slot, "reporting again")
        try:
            msg = P.unpack(data)
            handler = self.handlers.get(msg["t"])
            if handler is not None:
                handler(slot, msg, now)
        except (ValueError, TypeError, KeyError, IndexError):
            return  # a malformed message changes nothing

    def _retire_services(self) -> None:
        """`lifetime: service` nodes never end by themselves: once every node linked to them
        has finished, they are stopped, and count as completed."""
        for name in list(self.services):
            users = self.users[name]
            if not all(self.streams.node_finished(u) for u in users):
                continue
            self.services.discard(name)
            for i in range(self.plan.nodes[name].replicas):
                slot = self.slots[f"{name}.{i}"]
                if slot.kind == "command":
                    slot.finished = True  # its exit on SIGTERM is the end zflow asked for
                    if slot.alive and slot.pid is not None:
                        self.launcher.signal(slot.id, signal.SIGTERM)
                    self._log(slot, "stopping: the nodes it serves have finished")
                else:
                    self._send(slot, P.STOP)  # it reports FINISHED and exits

    def _watch(self, now: float) -> None:
        """A running replica reports four times a second even when idle; one that has said
        nothing for `quiet_after` is stuck in user code (an endless loop, a hung `end()`): name
        it, and ask it for its stack, which arrives on its stderr."""
        if not self.opts.telemetry:
            return
        for s in self.slots.values():
            if (s.kind == "python" and s.state is S.RUNNING and not s.quiet_said
                    and now - s.last_heard > self.opts.quiet_after):
                s.quiet_said = True
                self._error(f"{s.id} has sent no report for {now - s.last_heard:.0f}s: stuck "
                            "in user code? (its stack follows on its stderr)")
                self.launcher.signal(s.id, signal.SIGUSR1, group=False)

    def _on_hello(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        # a STOP sent before this replica's control socket connected was dropped by the ROUTER
        # (unknown identity): repeat it now, or it would wait for the SIGTERM
        if self.phase is RunPhase.STOPPING:
            self._send(slot, P.STOP, abandon=self.abandon)

    def _on_bound(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        if slot.state is not S.STARTING:
            return
        slot.bound.update(msg.get("endpoints") or {})
        self._set(slot, S.BOUND)
        if self.phase is RunPhase.RUNNING:  # a restarted replica: its peers' endpoints are known
            self._send_connect(slot)

    def _on_ready(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        if slot.state is not S.CONNECTING:
            return
        self._set(slot, S.READY)
        if self.phase is RunPhase.RUNNING:
            self._start_slot(slot)
            if all(s.state in READY_OR_LATER for s in self.slots.values() if s.alive):
                for s in self.slots.values():
                    if s.node in self.probers:
                        self._send(s, P.PROBE, on=False)

    def _on_stats(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        slot.counters.cur = msg["s"]
        slot.counters.errors = msg.get("e", 0)
        self._push_counters(slot)

    def _on_count(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        c = slot.counters.cur.setdefault(msg["socket"], [0, 0, 0, 0])
        if msg["n"] > c[0]:
            c[0] = msg["n"]
            self._push_counters(slot)  # what the status shows moves with the drain
        if msg.get("idle"):
            slot.idle_at = now

    def _on_total(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        self.model.set_total(msg["n"], slot.node)

    def _on_finished(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        if slot.state is not S.RUNNING:
            return
        slot.counters.cur = msg.get("s") or slot.counters.cur
        slot.counters.errors = msg.get("e", 0)
        slot.finished = True
        self._push_counters(slot)
        if msg.get("result") is not None:  # per replica when there are several
            several = self.plan.nodes[slot.node].replicas > 1
            self.model.set_result(slot.id if several else slot.node, msg["result"])
        self._set(slot, S.FINISHED)

    def _on_low(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        for sink in self.sinks:
            self._send(sink, P.LOW, id=msg["id"])

    def _on_ack(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        """exactly-once: acknowledgements go back to the source replica that numbered them."""
        self._to_sources(P.ACK, msg)

    def _on_took(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        """exactly-once: a transform took records: their source learns who holds them, so a
        death resends only what the dead replica held."""
        self._to_sources(P.TOOK, msg, by=slot.id, hop1=slot.node in self.hop1)

    def _to_sources(self, kind: str, msg: dict[str, Any], **extra: Any) -> None:
        if not self.sources:
            return
        k = len(self.sources)
        if "r" in msg:  # a range: all from one source
            self._send(self.sources[msg["r"][0] % k], kind, r=msg["r"], **extra)
            return
        if "rs" in msg:  # ranges, each from one source
            by: dict[int, list[Any]] = {}
            for r in msg["rs"]:
                by.setdefault(r[0] % k, []).append(r)
            for j, rs in by.items():
                self._send(self.sources[j], kind, rs=rs, **extra)
            return
        per: dict[int, list[int]] = {}
        for i in msg["ids"]:
            per.setdefault(i % k, []).append(i)
        for j, part in per.items():
            self._send(self.sources[j], kind, ids=part, **extra)

    def _on_stopping(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        if msg.get("reason") != "stopped by zflow":  # that one is implied: no noise
            self._log(slot, f"stopping: {msg.get('reason')}")

    def _on_fatal(self, slot: Slot, msg: dict[str, Any], now: float) -> None:
        slot.fatal = msg
        self._log(slot, str(msg.get("message")))

    # -- time ----------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self.now = now
        for slot in self.slots.values():
            if slot.exit_pending is not None:
                self._settle_exit(slot, now)
        if self.phase is RunPhase.STARTING:
            self._advance_start()
            if self.phase is RunPhase.STARTING and now - self.t0 > self.opts.start_timeout:
                waiting = [f"{s.id} ({self.why_not_ready(s)})" for s in self.slots.values()
                           if s.state not in READY_OR_LATER and not s.finished]
                more = f" and {len(waiting) - 10} more" if len(waiting) > 10 else ""
                self._begin_stop(exitcodes.START_FAILED,
                                 f"not ready after {self.opts.start_timeout:g}s: "
                                 + ", ".join(waiting[:10]) + more, Outcome.FAILED)
        if self.phase in (RunPhase.STARTING, RunPhase.RUNNING):
            for s in self.slots.values():
                if not s.said_ready:
                    self.ready_rule(s, now)
                if s.restart_at is not None and now >= s.restart_at:
                    self._spawn(s)
                    self._reprobe(s)
        if self.phase in (RunPhase.RUNNING, RunPhase.DRAINING):
            self._watch(now)
        if self.phase is RunPhase.RUNNING:
            self.streams.advance(now, self.deaths)
            self._retire_services()
            if all(s.finished for s in self.slots.values()):
                self._complete()
        elif self.phase is RunPhase.DRAINING:
            self.streams.advance(now, self.deaths)
            left = [s.id for s in self.slots.values()
                    if s.kind == "python" and s.alive and not s.finished]
            if not left:
                self._begin_stop(exitcodes.INTERRUPTED, "interrupted", Outcome.INTERRUPTED)
            elif now >= self.drain_until:
                self._begin_stop(exitcodes.INTERRUPTED,
                                 f"interrupted; {', '.join(left)} did not finish within "
                                 f"{self.opts.drain_timeout:g}s of the interrupt",
                                 Outcome.INTERRUPTED)
        if self.phase is RunPhase.STOPPING:
            self._advance_stop(now)

    # -- the end of a run that ran to its end ----------------------------------------------------
    def _complete(self) -> None:
        """Every replica finished: completed, unless records were lost, skipped or
        dead-lettered on the way (then exit 4, and the summary says how many and where)."""
        verdict = self.losses.verdict(
            self.streams.transit(),
            sum(s.counters.all_errors for s in self.slots.values()) + sum(self.poisoned.values()),
            self.eo)
        self.model.losses = verdict.as_dict()
        message = verdict.message()
        if message is None:
            self._begin_stop(exitcodes.OK, None, Outcome.COMPLETED)
        else:
            self._begin_stop(exitcodes.INCOMPLETE, message, Outcome.INCOMPLETE)

    # -- stopping ------------------------------------------------------------------------------
    def _begin_stop(self, code: int, message: str | None, outcome: Outcome) -> None:
        if self.code is None:
            self.code, self.message, self.outcome = code, message, outcome
            if message:
                self._error(message)
        if self.phase is RunPhase.STOPPING:
            return
        self.phase = RunPhase.STOPPING
        self.model.set_overall("stopping")
        self.stop_sent_at = None
        graceful = code in (exitcodes.OK, exitcodes.INCOMPLETE)
        self.abandon = self.abandon or not graceful  # nothing in flight is worth waiting for
        for s in self.slots.values():
            if s.state is S.RESTARTING:  # its next incarnation will not come
                s.restart_at = None
                self._set(s, S.STOPPED, "not restarted")
            self._send(s, P.STOP, abandon=self.abandon)
            # command nodes hear no STOP: on completion they get the drain period to exit by
            # themselves, otherwise SIGTERM now
            if not graceful and s.kind == "command" and s.alive and s.pid is not None:
                self.launcher.signal(s.id, signal.SIGTERM)

    def _live(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.alive and s.pid is not None]

    def _advance_stop(self, now: float) -> None:
        live = self._live()
        if not live:
            self.phase = RunPhase.DONE
            return
        if self.stop_sent_at is None:
            self.stop_sent_at = now
        if self.interrupts >= 2:
            for s in live:
                self.launcher.signal(s.id, signal.SIGKILL)
            return
        grace = self.opts.grace
        drain = min(2.0, grace if grace is not None else 2.0)
        if self.term_sent_at is None and now - self.stop_sent_at > drain:
            self.term_sent_at = now
            for s in live:
                self.launcher.signal(s.id, signal.SIGTERM)
        if self.term_sent_at is not None:
            for s in live:
                g = grace if grace is not None else self.plan.nodes[s.node].grace
                if now - self.term_sent_at > g:
                    self.launcher.signal(s.id, signal.SIGKILL)

    # -- the end -------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.phase is RunPhase.DONE

    def finish(self) -> int:
        """Write the outcome to the status model; the run's exit code."""
        code = self.code if self.code is not None else exitcodes.OK
        self.model.announce("overall", state=self.outcome.value)
        for n in self.plan.nodes.values():
            if n.kind == "python":
                count = self.poisoned.get(n.name, 0)
                if n.on_error == "dead-letter":
                    count += sum(s.counters.all_errors for s in self.slots.values()
                                 if s.node == n.name)
                if count:
                    self.model.set_dead_letter(n.name, dead_letter_path(self.plan, n), count)
        self.model.finish(self.outcome.value, code, self.message)
        return code
