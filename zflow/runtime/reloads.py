"""`zflow up --watch`, part of the coordinator: restart a node's replicas on new code, and
start more replicas of a node whose replica count grew.

A reload is a restart as after a crash (SIGTERM, then a fresh incarnation through the barrier's
late-joiner path, with the plan's current node spec), except that it is not counted against the
restart policy and waits for no back-off. What the stopped replicas held is accounted as in a
crash: best-effort delivery may lose it (the run then ends `incomplete`), exactly-once has the
sources resend it. A restarted source starts its stream again.

More replicas join as a restarted replica does (bind, connect, probes, start, and whatever
already happened to their inputs), which is only sound where nothing counts the senders: a Python
transform that only connects, whose inputs and outputs end by count (PUSH/PULL). Fewer replicas
are not applied while running.

A mixin of `Coordinator` (coordinator.py), which owns the state these methods use.
"""

from __future__ import annotations

import signal

from zflow.plan import END_COUNT, NodePlan
from zflow.runtime import protocol as P
from zflow.runtime.slots import Slot
from zflow.runtime.states import ReplicaState, RunPhase

S = ReplicaState


class Reloads:
    def reload(self, node: str, now: float, why: str) -> bool:
        """Restart every replica of `node` that has not finished its share of the stream."""
        if self.phase is not RunPhase.RUNNING:
            return False
        n = self.plan.nodes[node]
        slots = [s for s in self.slots.values() if s.node == node]
        receives = any(x.receives and x.role == "data" for x in n.sockets.values())
        if (self.eo and n.shape == "sink") or (
                receives and n.shape != "transform" and self.streams.inputs_done(n)):
            for s in slots:  # what it gathered would be lost with no stream left to redo it
                self._log(s, f"{why}; not reloaded: its input has ended or its state cannot "
                             "be rebuilt")
            return False
        for s in slots:
            if s.finished:
                continue
            self._log(s, f"reloading: {why}")
            if s.state is S.RESTARTING:
                s.restart_at = now  # its next incarnation runs the new code, now
            elif s.alive and s.pid is not None:
                self.reloading.add(s.id)
                self.launcher.signal(s.id, signal.SIGTERM)
        return True

    def _reloaded(self, slot: Slot, code: int, now: float, in_hand: int) -> bool:
        """An exit that a reload asked for: restart at once (True), or not ours (False)."""
        if slot.id not in self.reloading:
            return False
        self.reloading.discard(slot.id)
        if self.phase is not RunPhase.RUNNING:
            return False
        self.deaths += 1
        self.losses.died(slot.node, in_hand)
        if self.eo:  # what it held is gone: the sources resend what is unacknowledged
            for src in self.sources:
                if src is not slot:
                    self._send(src, P.RESEND)
        self._set(slot, S.STOPPED, "reloading")
        slot.restart_at = now
        self._set(slot, S.RESTARTING, "new code")
        self.model.replica_restart(slot.node, slot.index, delay=0.0, code=code)
        return True

    def scale_up(self, node: str, replicas: int, now: float) -> str | None:
        """Start replicas up to `replicas` of `node`; None, or why they cannot be added."""
        n = self.plan.nodes[node]
        why = self._why_not_scalable(n)
        if why is None and replicas < n.replicas:
            why = "fewer replicas need a new run"
        if why is None and self.phase is not RunPhase.RUNNING:
            why = f"the run is {self.phase.value}"
        if why is not None:
            return why
        old, n.replicas = n.replicas, replicas
        for sock in n.sockets.values():  # the peers' count of this node's sending replicas
            if not sock.receives:
                for p, ps in sock.peers:
                    self.plan.nodes[p].sockets[ps].senders += replicas - old
        for i in range(old, replicas):
            slot = self.slots[f"{node}.{i}"] = Slot(node, i, n.kind)
            self._spawn(slot)
            self._reprobe(slot)
            self._log(slot, f"added: {node} scaled from {old} to {replicas} replicas")
        return None

    def _why_not_scalable(self, n: NodePlan) -> str | None:
        if n.kind != "python" or n.shape != "transform":
            return "only a Python transform can get more replicas while it runs"
        for sock in n.sockets.values():
            if sock.mode != "connect":
                return f"its socket {sock.name} binds (its peers would have to connect anew)"
            # an end by markers (or a program's own count of SENDERS) was told how many
            # senders there are when it started
            if sock.receives and sock.role == "data" and sock.end != END_COUNT:
                return f"its input {sock.name} does not end by count (it ends by {sock.end})"
            if not sock.receives:
                for p, ps in sock.peers:
                    end = self.plan.nodes[p].sockets[ps].end
                    if end != END_COUNT:
                        return f"{p}.{ps} does not end by count (it ends by {end})"
        return None
