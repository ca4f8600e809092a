"""Exits and restarts, part of the coordinator: what a replica's exit means for the run.

An exit waits briefly for the replica's last message (FINISHED or FATAL may arrive just after the
exit is seen). Then: exit 0 after finishing is a clean end; a `fatal` in a start phase stops the
run with exit 3; a death after the input ended fails the run for sinks and command nodes (a
restart would start an empty stream), and restarts a transform; otherwise the restart policy
(restarts.py) decides between a back-off and a crash loop. With exactly-once delivery the sources
resend what the dead replica may have held.

A mixin of `Coordinator` (coordinator.py), which owns the state these methods use.
"""

from __future__ import annotations

import signal
from typing import Any

from zflow import exitcodes
from zflow.runtime import protocol as P
from zflow.runtime.restarts import next_restart
from zflow.runtime.slots import Slot
from zflow.runtime.spec import dead_letter_path
from zflow.runtime.states import Outcome, ReplicaState, RunPhase

S = ReplicaState
#: exit codes that mean "it did what zflow asked" once the run is stopping
STOPPED_BY_US = frozenset({0, -signal.SIGTERM, -signal.SIGKILL, 128 + signal.SIGTERM})
#: how long an exit waits for the replica's last message (FINISHED or FATAL)
EXIT_GRACE = 0.5
#: exactly-once: failures on the same record before it is dead-lettered (a poison record)
POISON_ATTEMPTS = 3


class Exits:
    def exited(self, replica: str, code: int, now: float) -> None:
        """The launcher saw the process exit (and took its last output)."""
        slot = self.slots[replica]
        if not slot.alive:
            return
        slot.exit_pending = (code, now)
        self._settle_exit(slot, now)

    def _settle_exit(self, slot: Slot, now: float) -> None:
        assert slot.exit_pending is not None
        code, seen = slot.exit_pending
        waiting = (code in (0, 1, 3) and slot.fatal is None and not slot.finished
                   and self.phase in (RunPhase.STARTING, RunPhase.RUNNING, RunPhase.DRAINING)
                   and slot.kind == "python")
        if waiting and now - seen < EXIT_GRACE:
            # a replica sends FINISHED or FATAL just before it exits, but the exit can be seen
            # first: wait a moment, so an end is not taken for a crash and a failure is
            # reported with its reason (and a start failure not restarted)
            return
        slot.exit_pending = None
        slot.exit_code = code
        in_hand = self.losses.in_hand(slot)
        slot.counters.fold()
        self.model.replica_exit(slot.node, slot.index, code)
        self._on_exit(slot, code, now, in_hand)

    def _on_exit(self, slot: Slot, code: int, now: float, in_hand: int = 0) -> None:
        n = self.plan.nodes[slot.node]
        if self.phase is RunPhase.DRAINING and not (code == 0 and slot.finished):
            self._set(slot, S.FAILED, f"exit {code}")  # no restarts while interrupted
            return
        if self.phase in (RunPhase.STOPPING, RunPhase.DONE):
            ours = code in STOPPED_BY_US
            self._set(slot, S.STOPPED if ours else S.FAILED, f"exit {code}")
            if not ours and self.code in (exitcodes.OK, exitcodes.INCOMPLETE):
                self.code, self.outcome = exitcodes.FAILED, Outcome.FAILED
                self.message = self._with_tail(slot, f"{slot.id} exited with code {code} at "
                                                     "the end")
                self._error(self.message)
            return
        if self._reloaded(slot, code, now, in_hand):  # --watch stopped it for new code
            return
        if slot.finished and code in STOPPED_BY_US:  # a service zflow stopped: its end
            self._set(slot, S.STOPPED, f"exit {code}")
            return
        inputs_done = self.streams.inputs_done(n)
        command_done = n.kind == "command" and (inputs_done or n.restart != "always")
        if code == 0 and (slot.finished or command_done):
            # a command node is opaque: exit 0 is its end (unless `always` and input remains)
            slot.finished = True
            self._set(slot, S.STOPPED, "exit 0")
            return
        self._set(slot, S.FAILED, f"exit {code}")
        if slot.fatal and slot.fatal.get("phase") in P.START_PHASES:
            self._fail_start(slot)
            return
        self.deaths += 1
        self.losses.died(n.name, in_hand, slot.id if n.kind == "command" else None)
        if self.eo and n.shape == "sink":
            self._fail_run(slot, f"{slot.id} died: with the sink's state lost, "
                                 f"{self.plan.delivery} delivery cannot be kept (zflow does not "
                                 "restart sinks)")
            return
        if (inputs_done and n.shape != "transform"
                and any(x.receives and x.role == "data" for x in n.sockets.values())):
            # a sink's (or command's) input has ended: a restart would start an empty stream
            # and report success without what the dead one had gathered. A transform holds
            # nothing for later: it restarts and finishes at once.
            self._fail_run(slot, f"{slot.id} exited with code {code} after its input ended")
            return
        if self.eo:  # what that replica held is gone: its sources resend it
            self._count_attempt(slot)
            self._resend_held(slot)
        if code == 0 and n.restart != "always":  # `always` also restarts clean exits
            self._fail_run(slot, f"{slot.id} exited (code 0) before its stream ended")
            return
        self._maybe_restart(slot, now)

    def _count_attempt(self, slot: Slot) -> None:
        """A replica that failed on a record named it: after POISON_ATTEMPTS failures, on
        whichever replicas, the record is dead-lettered by its source instead of resent (before
        the resend below, so it is not tried once more), and the run ends incomplete."""
        fatal = slot.fatal or {}
        i = fatal.get("id")
        if fatal.get("phase") != "run" or type(i) is not int or not self.sources:
            return
        n = self.attempts[i] = self.attempts.get(i, 0) + 1
        if n < POISON_ATTEMPTS:
            return
        del self.attempts[i]
        node = self.plan.nodes[slot.node]
        path = dead_letter_path(self.plan, node)
        self.poisoned[node.name] = self.poisoned.get(node.name, 0) + 1
        self._send(self.sources[i % len(self.sources)], P.POISON, id=i, node=node.name,
                   replica=slot.index, error=fatal.get("message"), attempts=n, path=path)
        self._log(slot, f"a record failed {n} times ({fatal.get('message')}): dead-lettered "
                        f"to {path}")

    def _resend_held(self, slot: Slot) -> None:
        """A replica that takes straight from the sources held what it said it took, and what
        sat in its pipe: sources resend exactly that. Deeper in the pipeline zflow does not
        know which pipe held what: everything unacknowledged is resent (the sink drops the
        duplicates)."""
        if slot.node in self.hop1:
            live = [s.id for s in self.slots.values() if s.node in self.hop1
                    and s.state is ReplicaState.RUNNING and s is not slot]
            fields: dict[str, Any] = {"dead": slot.id, "live": live}
        elif self.plan.nodes[slot.node].shape == "source":
            return  # a restarted source replays its own records
        else:
            fields = {}
        for src in self.sources:
            if src is not slot:
                self._send(src, P.RESEND, **fields)

    def _maybe_restart(self, slot: Slot, now: float) -> None:
        policy = self.policies[slot.node]
        if policy.mode == "no" or self.phase not in (RunPhase.STARTING, RunPhase.RUNNING):
            self._fail_run(slot, f"{slot.id} exited with code {slot.exit_code}")
            return
        verdict = next_restart(policy, slot.restarts, now)
        if verdict.crash_loop:
            self._fail_run(slot, f"{slot.id} is crash-looping: {verdict.failures} failures "
                                 f"within {policy.window:g}s (last exit code {slot.exit_code})")
            return
        assert verdict.delay is not None
        slot.restart_at = now + verdict.delay
        self._set(slot, S.RESTARTING, f"in {verdict.delay:.1f}s")
        self.model.replica_restart(slot.node, slot.index, delay=verdict.delay,
                                   code=slot.exit_code, attempt=verdict.failures)

    def _with_tail(self, slot: Slot, message: str) -> str:
        tail = list(slot.stderr_tail)[-10:]
        if tail:
            message += "\n  last stderr lines:\n" + "\n".join(f"    {x}" for x in tail)
        return message

    def _fail_start(self, slot: Slot) -> None:
        f = slot.fatal or {}
        where = slot.id + (f" socket {f['socket']}" if f.get("socket") else "")
        msg = f"{where}: {f.get('message', 'failed to start')}"
        if f.get("hint"):
            msg += f"\n  hint: {f['hint']}"
        self._begin_stop(exitcodes.START_FAILED, msg, Outcome.FAILED)

    def _fail_run(self, slot: Slot, message: str) -> None:
        if slot.fatal and slot.fatal.get("message"):
            message += f": {slot.fatal['message']}"
        self._begin_stop(exitcodes.FAILED, self._with_tail(slot, message), Outcome.FAILED)
