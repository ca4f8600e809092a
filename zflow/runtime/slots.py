"""A replica slot: one position (`worker.3`) that outlives the processes restarted into it.

The coordinator keeps one `Slot` per replica. Its `state` changes only through `Slot.to` (the
state machine of states.py); the rest is what the control plane and the launcher reported about
the current incarnation, and counters kept across incarnations so totals never go backwards.
"""

from __future__ import annotations

import collections
from typing import Any

from zflow.records import field, record
from zflow.runtime.states import ALIVE, ReplicaState, transition

STDERR_TAIL = 20
_ZERO = (0, 0, 0, 0)


@record
class Counters:
    """Per socket `[records in, records out, bytes in, bytes out]`, and errors.

    `cur` is the live incarnation's own report (replaced by each STATS); at an exit it is folded
    into `base`, so a restarted replica's counts add to its predecessors' instead of replacing them.
    """

    base: dict[str, list[int]] = field(default_factory=dict)
    cur: dict[str, list[int]] = field(default_factory=dict)
    errors_base: int = 0
    errors: int = 0

    def total(self, socket: str, col: int) -> int:
        return self.base.get(socket, _ZERO)[col] + self.cur.get(socket, _ZERO)[col]

    def cumulative(self) -> dict[str, tuple[int, int, int, int]]:
        names = set(self.base) | set(self.cur)
        return {n: tuple(self.total(n, c) for c in range(4)) for n in names}  # type: ignore[misc]

    @property
    def all_errors(self) -> int:
        return self.errors_base + self.errors

    def fold(self) -> None:
        """The incarnation ended: what it reported becomes history."""
        for k, v in self.cur.items():
            b = self.base.setdefault(k, [0, 0, 0, 0])
            for c in range(4):
                b[c] += v[c]
        self.cur = {}
        self.errors_base += self.errors
        self.errors = 0


@record
class Slot:
    node: str
    index: int
    kind: str  # "python" | "command"
    incarnation: int = 0
    state: ReplicaState = ReplicaState.STARTING
    pid: int | None = None
    #: socket → endpoint this slot bound (kept across restarts: a restart binds the same ones)
    bound: dict[str, str] = field(default_factory=dict)
    #: this replica's share of the stream is done (it said FINISHED, or a command node exited 0);
    #: a fact about the stream, so it survives the process's exit
    finished: bool = False
    exit_code: int | None = None
    #: an exit the launcher reported that waits briefly for the replica's last message (FINISHED
    #: or FATAL may arrive just after the exit is seen): (code, when seen)
    exit_pending: tuple[int, float] | None = None
    #: the replica's own report of why it failed (a `fatal` message)
    fatal: dict[str, Any] | None = None
    stderr_tail: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL))
    counters: Counters = field(default_factory=Counters)
    #: when each restart of this slot happened (crash-loop accounting, see restarts.py)
    restarts: list[float] = field(default_factory=list)
    restart_at: float | None = None
    #: last "nothing to read" report while its input drains (stall detection)
    idle_at: float = 0.0
    #: a custom node was told to stop once its inputs ended
    stop_sent: bool = False
    #: when the current incarnation last said anything (the watchdog), and whether the
    #: watchdog already said it went quiet
    last_heard: float = 0.0
    quiet_said: bool = False
    #: command nodes: every peer is connected; its `ready:` rule held (true without one); when
    #: the current incarnation was spawned
    connected: bool = False
    said_ready: bool = True
    spawned_at: float = 0.0
    #: a replica that joined from elsewhere (`zflow replica`) chose its own identity; the exit
    #: code it said last (`bye`), since its process cannot be watched from here
    joined_as: bytes | None = None
    bye_code: int | None = None

    @property
    def id(self) -> str:
        return f"{self.node}.{self.index}"

    @property
    def identity(self) -> bytes:
        """The control-plane identity of the current incarnation (protocol.py)."""
        if self.joined_as is not None:
            return self.joined_as
        return f"{self.id}#{self.incarnation}".encode()

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    def to(self, state: ReplicaState) -> bool:
        """Move to `state` (checked by the state machine); True if the state changed."""
        changed = state is not self.state
        self.state = transition(self.state, state)
        return changed

    def new_incarnation(self) -> None:
        """A fresh process goes into this slot: forget what the previous one said."""
        self.incarnation += 1
        self.finished = False
        self.exit_code = None
        self.exit_pending = None
        self.fatal = None
        self.restart_at = None
        self.stop_sent = False
        self.quiet_said = False
        self.connected = False
        self.pid = None
        self.joined_as = None
        self.bye_code = None
        self.counters.cur = {}
        self.counters.errors = 0
