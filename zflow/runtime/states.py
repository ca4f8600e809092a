"""The replica state machine and the run's phases: one vocabulary for the runtime and the views.

A replica slot (`worker.3`) moves through these states; every change goes through `transition`,
which refuses a move the diagram does not have, so a bug in the coordinator shows up as an error
in a unit test instead of a status line that lies::

    STARTING ─► BOUND ─► CONNECTING ─► READY ─► RUNNING ─► FINISHED ─► STOPPED
        │         │          │           │         │          │
        └─────────┴──────────┴─────┬─────┴─────────┴──────────┘
                                   ▼
                         FAILED / STOPPED ─► RESTARTING ─► STARTING …

- STARTING: the process was spawned; its sockets are not bound yet.
- BOUND: it bound its sockets and reported the endpoints; it waits for everyone else's.
- CONNECTING: it was told where to connect; its SUB sockets wait for every publisher's probe.
- READY: connected and subscribed; it waits for the barrier to open. (A command node is READY as
  soon as its endpoints accept connections: zflow cannot see inside it.)
- RUNNING: the barrier opened; it moves records.
- FINISHED: its stream ended and it reported its totals; it stays up until zflow stops it, so its
  peers can still reach it.
- STOPPED: exited cleanly, or was stopped by zflow.
- FAILED: exited otherwise, or could not start.
- RESTARTING: its restart policy allows another incarnation; it waits out the back-off.
"""

from __future__ import annotations

from enum import Enum


class ReplicaState(str, Enum):
    STARTING = "starting"
    BOUND = "bound"
    CONNECTING = "connecting"
    READY = "ready"
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    RESTARTING = "restarting"

    def __str__(self) -> str:
        return self.value


S = ReplicaState
_EXITS = (S.STOPPED, S.FAILED)

#: Every allowed move. An exit (STOPPED or FAILED) may happen from any live state.
TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    S.STARTING: frozenset({S.BOUND, S.READY, *_EXITS}),
    S.BOUND: frozenset({S.CONNECTING, S.READY, *_EXITS}),
    S.CONNECTING: frozenset({S.READY, *_EXITS}),
    S.READY: frozenset({S.RUNNING, *_EXITS}),
    S.RUNNING: frozenset({S.FINISHED, *_EXITS}),
    S.FINISHED: frozenset(_EXITS),
    S.STOPPED: frozenset({S.RESTARTING}),
    S.FAILED: frozenset({S.RESTARTING}),
    S.RESTARTING: frozenset({S.STARTING, S.STOPPED, S.FAILED}),
}

#: a process is up in these states
ALIVE = frozenset({S.STARTING, S.BOUND, S.CONNECTING, S.READY, S.RUNNING, S.FINISHED})
#: counted as up in the status table's ready/total column
UP = frozenset({S.READY, S.RUNNING, S.FINISHED})
#: the replica bound its sockets (or, for a command node, its endpoints accept connections)
BOUND_OR_LATER = frozenset({S.BOUND, S.CONNECTING, S.READY, S.RUNNING, S.FINISHED})
#: connected and subscribed
READY_OR_LATER = frozenset({S.READY, S.RUNNING, S.FINISHED})

STATES: tuple[str, ...] = tuple(s.value for s in ReplicaState)


class InvalidTransition(RuntimeError):
    """The coordinator asked for a move the state machine does not have: a bug, not bad input."""


def transition(current: ReplicaState, new: ReplicaState) -> ReplicaState:
    """`new` if the move is allowed (staying put always is); raises InvalidTransition otherwise."""
    if new is current or new in TRANSITIONS[current]:
        return new
    raise InvalidTransition(f"{current.value} → {new.value} is not a replica transition")


class RunPhase(str, Enum):
    """The run as a whole: the coordinator's phase."""

    STARTING = "starting"  # spawning, the barrier not yet open
    RUNNING = "running"  # the barrier opened; streams flow and end
    #: interrupted: the sources were stopped and what is in flight drains, so sinks' `end()`
    #: runs and the result is kept (bounded by the drain timeout)
    DRAINING = "draining"
    STOPPING = "stopping"  # every replica was asked to stop; escalating to signals
    DONE = "done"  # nothing is left running

    def __str__(self) -> str:
        return self.value


class Outcome(str, Enum):
    """How a run ended, as the status shows it; the exit code goes with it (exitcodes.py)."""

    COMPLETED = "completed"
    #: ran to its end, but records were lost, skipped or dead-lettered (exit code 4)
    INCOMPLETE = "incomplete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value
