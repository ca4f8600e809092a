"""End of stream: how every input of every replica learns that its stream has ended.

No shared task count: zflow knows who sends to whom (the plan) and what each replica moved (its
reports). An input ends one of three ways (plan.END_*; docs/runtime.md has the diagram):

- **count** (PUSH→PULL between zflow nodes): the sockets joined by PUSH/PULL links form a count
  group. Once every sender node has finished, the group's `expected` is the sum of what its
  senders sent; receivers are asked to report their counts as they move (`drain`), and when the
  receivers together have received `expected`, each is told `input_end`. If the count stops
  moving for `drain_timeout` while every receiver says it has nothing to read, records were lost:
  the stream ends without them and the loss is reported.
- **markers** (PUB→SUB, json/raw sockets): each sender replica sends an end marker in-band; the
  replica counts them itself. A replica that (re)starts after its senders finished is told here.
- **peers** (request/reply, custom and command inputs): the input ends when every peer node has
  finished.

With exactly-once delivery, once every source has finished (all its records acknowledged by the
sink) what may still be in flight is only duplicates: every count group ends at once.
"""

from __future__ import annotations

from collections.abc import Callable

from zflow.plan import END_COUNT, END_MARKERS, END_PEERS, NodePlan, Plan
from zflow.records import record
from zflow.runtime import protocol as P
from zflow.runtime.slots import Slot
from zflow.runtime.states import ReplicaState

Send = Callable[..., None]  # send(slot, kind, **fields)


def split_sid(sid: str) -> tuple[str, str]:
    node, _, sock = sid.partition(".")
    return node, sock


@record
class CountGroup:
    """PUSH/PULL sockets ("node.socket") whose records are compared at the end."""

    senders: list[str]
    receivers: list[str]
    #: what the senders sent in all, known once every sender node finished
    expected: int | None = None
    ended: bool = False
    #: what the receivers had received when the group ended
    got: int | None = None
    #: the receivers' last total, and when it last changed (stall detection)
    progress: tuple[int, float] = (0, 0.0)


class EndOfStream:
    """Decides when each input ends; tells replicas through `send`."""

    def __init__(self, plan: Plan, slots: dict[str, Slot], send: Send,
                 report: Callable[[str], None], *, drain_timeout: float,
                 exactly_once: bool, sources: list[Slot]) -> None:
        self.plan = plan
        self.slots = slots
        self.send = send
        self.report = report
        self.drain_timeout = drain_timeout
        self.exactly_once = exactly_once
        self.sources = sources
        self.groups = [CountGroup(list(s), list(r)) for s, r in plan.count_groups]
        #: inputs ("node.socket") already told `input_end`
        self.ended_inputs: set[str] = set()

    # -- facts ---------------------------------------------------------------------------------
    def replicas(self, sid: str) -> list[Slot]:
        node, _ = split_sid(sid)
        return [self.slots[f"{node}.{i}"] for i in range(self.plan.nodes[node].replicas)]

    def node_finished(self, name: str) -> bool:
        return all(self.slots[f"{name}.{i}"].finished
                   for i in range(self.plan.nodes[name].replicas))

    def inputs(self, node: NodePlan) -> list[str]:
        """The node's data inputs: sockets whose stream ends (a source has none)."""
        return [s.name for s in node.sockets.values() if s.receives and s.role == "data"]

    def inputs_done(self, node: NodePlan) -> bool:
        """Every data input of `node` was told its stream ended (true for a node without any)."""
        return all(f"{node.name}.{s.name}" in self.ended_inputs
                   for s in node.sockets.values() if s.receives and s.role == "data")

    def _total(self, sid: str, col: int) -> int:
        _, sock = split_sid(sid)
        return sum(s.counters.total(sock, col) for s in self.replicas(sid))

    # -- telling replicas --------------------------------------------------------------------
    def end_input(self, sid: str, expected: int | None) -> None:
        self.ended_inputs.add(sid)
        _, sock = split_sid(sid)
        for slot in self.replicas(sid):
            self.send(slot, P.INPUT_END, socket=sock, expected=expected)

    def joined(self, slot: Slot) -> None:
        """A replica (re)started into a running stream that may already be ending."""
        for g in self.groups:
            if g.expected is not None:
                for sid in g.receivers:
                    node, sock = split_sid(sid)
                    if node == slot.node:
                        self.send(slot, P.DRAIN, socket=sock)
        for sid in sorted(self.ended_inputs):
            node, sock = split_sid(sid)
            if node == slot.node:
                self.send(slot, P.INPUT_END, socket=sock, expected=None)
        # in-band end markers were sent before this replica existed: say it instead
        for s in self.plan.nodes[slot.node].sockets.values():
            if s.end == END_MARKERS and s.peers and all(
                    self.plan.nodes[p].kind == "python" and self.node_finished(p)
                    for p, _ in s.peers):
                self.send(slot, P.INPUT_END, socket=s.name, expected=None)

    # -- the decision ---------------------------------------------------------------------------
    def advance(self, now: float, deaths: int) -> None:
        """Called on every loop turn while running: end whatever can end now."""
        if self.exactly_once and self.groups and all(s.finished for s in self.sources):
            for g in self.groups:
                if not g.ended:
                    g.ended = True
                    for sid in g.receivers:
                        self.end_input(sid, None)
        for g in self.groups:
            if not g.ended:
                self._advance_group(g, now, deaths)
        self._advance_peers()

    def _advance_group(self, g: CountGroup, now: float, deaths: int) -> None:
        if g.expected is None:
            if not all(self.node_finished(split_sid(sid)[0]) for sid in g.senders):
                return
            g.expected = sum(self._total(sid, 1) for sid in g.senders)
            g.progress = (-1, now)
            for sid in g.receivers:
                _, sock = split_sid(sid)
                for slot in self.replicas(sid):
                    self.send(slot, P.DRAIN, socket=sock)
        got = sum(self._total(sid, 0) for sid in g.receivers)
        if got != g.progress[0]:
            g.progress = (got, now)
        # a stall: no progress for drain_timeout while every receiver says it has nothing to
        # read (a receiver busy with a slow frame says nothing, and is not a stall)
        since = g.progress[1]
        receivers = [s for sid in g.receivers for s in self.replicas(sid)]
        stalled = now - since > self.drain_timeout and all(
            not r.alive or r.idle_at > since for r in receivers)
        if got < g.expected and not stalled:
            return
        g.got = got
        if got < g.expected:
            missing = g.expected - got
            why = "lost with a replica that died" if deaths else "dropped as undecodable, or lost"
            self.report(f"{missing} of {g.expected} records sent to {', '.join(g.receivers)} "
                        f"never arrived ({why}); ending the stream without them")
        g.ended = True
        for sid in g.receivers:
            self.end_input(sid, g.expected)

    def _advance_peers(self) -> None:
        """request/reply, custom and command inputs end when every peer node has finished."""
        for n in self.plan.nodes.values():
            for s in n.sockets.values():
                sid = f"{n.name}.{s.name}"
                if sid in self.ended_inputs:
                    continue
                if s.end == END_PEERS or (s.end == END_MARKERS and any(
                        self.plan.nodes[p].kind == "command" for p, _ in s.peers)):
                    # a program that exited 0 has sent everything, end marker or not: the
                    # receiver reads what is still on its way before it ends (replica/runners)
                    if all(self.node_finished(p) for p, _ in s.peers):
                        self.end_input(sid, None)
            if n.shape == "custom" and n.kind == "python":
                ins = [s for s in n.sockets.values() if s.end in (END_PEERS, END_COUNT)]
                if ins and all(f"{n.name}.{s.name}" in self.ended_inputs for s in ins):
                    for i in range(n.replicas):
                        slot = self.slots[f"{n.name}.{i}"]
                        # only once it runs: a STOP sent before a restarted replica's control
                        # socket connected would be dropped, and never sent again
                        if not slot.stop_sent and slot.state is ReplicaState.RUNNING:
                            self.send(slot, P.STOP)  # ctx.stopping() turns true
                            slot.stop_sent = True

    def transit(self) -> list[tuple[CountGroup, int]]:
        """Each ended count group with `expected - got`: records sent that never arrived. It can
        be negative: a sender killed mid-run had sent more than its last report said."""
        return [(g, g.expected - g.got) for g in self.groups
                if g.expected is not None and g.got is not None]
