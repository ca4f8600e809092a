"""The start barrier, part of the coordinator: no replica starts before every one is ready.

Every replica binds and reports `bound`; when all have bound, each is told where to `connect`
(the endpoints its peers actually bound) and waits until its connections are handshaken and its
SUBs have seen a probe from every zflow publisher; then it says `ready`. When every replica is
ready, all are told `start`. Command nodes, which say nothing, take part too: one that connects is
spawned once what it connects to has bound; one that binds is ready once it listens and every
replica that connects to it is connected (the launcher counts the connections). A replica
restarted mid-run goes through the same steps alone.

A mixin of `Coordinator` (coordinator.py), which owns the state these methods use.
"""

from __future__ import annotations

from zflow.runtime import protocol as P
from zflow.runtime.slots import Slot
from zflow.runtime.states import BOUND_OR_LATER, READY_OR_LATER, ReplicaState, RunPhase

S = ReplicaState


class Barrier:
    def _binders_pending(self, slot: Slot) -> list[str]:
        """A command node gets its connect endpoints once, in its environment: it is spawned
        only when every replica it connects to has bound (a `bind: tcp` port is known only
        then, and an ipc path exists only then)."""
        if slot.kind != "command":
            return []
        return [b.id for lk in self.plan.links if lk.connector[0] == slot.node
                for b in (self.slots[f"{lk.binder[0]}.{i}"]
                          for i in range(self.plan.nodes[lk.binder[0]].replicas))
                if b.state not in BOUND_OR_LATER and not b.finished]

    def endpoints_ready(self, replica: str) -> None:
        """A command node's bind endpoints accept connections: it is bound (and ready at once
        when nothing of the topology connects to it)."""
        slot = self.slots[replica]
        if slot.state is S.STARTING and slot.pid is not None:
            self._set(slot, S.BOUND, "listening")
            if not any(self.expected_connections(slot).values()):
                self.connections_ready(replica)

    def expected_connections(self, slot: Slot) -> dict[str, int]:
        """Per bind socket of a command replica: how many live replicas of the topology connect
        to it (zflow cannot see inside the program, but it can count its connections)."""
        out: dict[str, int] = {}
        for lk in self.plan.links:
            if lk.binder[0] == slot.node:
                n = self.plan.nodes[lk.connector[0]].replicas
                alive = sum(self.slots[f"{lk.connector[0]}.{i}"].alive for i in range(n))
                out[lk.binder[1]] = out.get(lk.binder[1], 0) + alive
        return out

    def connections_ready(self, replica: str) -> None:
        """Every replica that connects to the command node is connected: it is ready (a program
        that waits for Enter is released only now, and its work spreads over all of them), once
        its own `ready:` rule holds too."""
        slot = self.slots[replica]
        if slot.state is S.BOUND and slot.kind == "command":
            slot.connected = True
            self._command_ready(slot)

    def _command_ready(self, slot: Slot) -> None:
        if slot.state is S.BOUND and slot.connected and slot.said_ready:
            self._set(slot, S.READY)
            if self.phase is RunPhase.RUNNING:
                self._start_slot(slot)

    def ready_rule(self, slot: Slot, now: float, line: str | None = None) -> None:
        """A command node's `ready:` rule: a line of its output matched, or its delay passed."""
        rule = self.plan.nodes[slot.node].ready
        if slot.said_ready or slot.kind != "command" or not slot.alive:
            return
        if ("log" in rule and line is not None and self.ready_patterns[slot.node].search(line)) \
                or ("delay" in rule and now - slot.spawned_at >= float(rule["delay"])):
            slot.said_ready = True
            self._command_ready(slot)

    def why_not_ready(self, slot: Slot) -> str:
        """What a replica still waits for, for the start timeout's message."""
        if slot.kind == "command":
            eps = ", ".join(slot.bound.values())
            if slot.pid is None:
                return "not started: waiting for what it connects to"
            if slot.state is S.STARTING:
                return f"not listening on {eps}" if eps else "starting"
            if not slot.connected:
                return "not every peer connected" + (f" to {eps}" if eps else "")
            rule = self.plan.nodes[slot.node].ready
            return (f"no output line matched {rule['log']!r}" if "log" in rule
                    else "waiting for its ready delay")
        if slot.pid is None and self.opts.remote:
            return "not joined: no replica has connected for it"
        return {S.STARTING: "not bound", S.BOUND: "waiting for the others to bind",
                S.CONNECTING: "connecting: handshakes and subscriptions"}.get(
                    slot.state, slot.state.value)

    def awaiting_endpoints(self) -> list[tuple[str, dict[str, str]]]:
        """Command replicas that are up but not known to be listening, with what they bind."""
        return [(s.id, dict(s.bound)) for s in self.slots.values()
                if s.kind == "command" and s.state is S.STARTING and s.pid is not None
                and s.exit_pending is None]

    def awaiting_connections(self) -> list[tuple[str, dict[str, str], dict[str, int]]]:
        """Command replicas listening but not yet connected to by all their peers."""
        return [(s.id, dict(s.bound), self.expected_connections(s)) for s in self.slots.values()
                if s.kind == "command" and s.state is S.BOUND and s.exit_pending is None]

    def _connect_endpoints(self, node: str, sock: str) -> list[str]:
        out = []
        for target in self.plan.nodes[node].sockets[sock].connect:
            if "://" in target:
                out.append(target)
                continue
            bnode, bsock = target.split(".")
            for i in range(self.plan.nodes[bnode].replicas):
                b = self.slots[f"{bnode}.{i}"]
                out.append(b.bound.get(bsock) or self.plan.bind_endpoint(bnode, i, bsock))
        return out

    def _send_connect(self, slot: Slot) -> None:
        if slot.kind != "python" or slot.state is not S.BOUND:
            return
        n = self.plan.nodes[slot.node]
        eps = {k: self._connect_endpoints(slot.node, k) for k, v in n.sockets.items()
               if v.mode == "connect"}
        # connections to the topology's own binders must be up (handshaken) before the replica
        # says ready: a PUSH would otherwise give its first burst to whoever connected first,
        # and a DEALER its requests to the servers that happened to be there
        wait = {k: sum(self.plan.nodes[b].replicas for c, (b, _) in
                       ((lk.connector, lk.binder) for lk in self.plan.links)
                       if c == (slot.node, k))
                for k in eps}
        self._send(slot, P.CONNECT, endpoints=eps, wait={k: w for k, w in wait.items() if w})
        if slot.node in self.probers:
            self._send(slot, P.PROBE, on=True)
        self._set(slot, S.CONNECTING)

    def _advance_start(self) -> None:
        slots = list(self.slots.values())
        for s in slots:  # command nodes waiting for what they connect to
            if self.phase is RunPhase.STARTING and s.kind == "command" and s.pid is None \
                    and s.state is S.STARTING and s.incarnation == 0 \
                    and not self._binders_pending(s):
                self._spawn(s)
        # a command node that already did its work and exited 0 is past the barrier too
        if not all(s.state in BOUND_OR_LATER or s.finished for s in slots):
            return
        for s in slots:
            self._send_connect(s)
        if all(s.state in READY_OR_LATER or s.finished for s in slots):
            self.phase = RunPhase.RUNNING
            self.model.set_overall("running")
            self.model.announce("overall", state="running")
            for s in slots:
                self._start_slot(s)

    def _start_slot(self, slot: Slot) -> None:
        if slot.state is not S.READY:
            return
        self._send(slot, P.START)
        self._set(slot, S.RUNNING)
        if slot.kind == "command" and self.plan.nodes[slot.node].stdin == "go":
            self.launcher.release(slot.id)
        slot.last_heard = self.now  # it reports from now on (it waited in silence until now)
        self.streams.joined(slot)

    def _reprobe(self, slot: Slot) -> None:
        """A restarted SUB needs its publishers to probe again until it reports ready."""
        for s in self.plan.nodes[slot.node].sockets.values():
            if s.type == "SUB":
                for p, _ in s.peers:
                    for i in range(self.plan.nodes[p].replicas):
                        self._send(self.slots[f"{p}.{i}"], P.PROBE, on=True)
