"""What a running node may know about itself, without any socket code.

`Totals` and `NodeContext` are the node API (`zflow.Totals`, `zflow.NodeContext`): they stay
dataclasses (node code may hand them to `dataclasses.asdict`); zflow's internal types are
`zflow.records` (records.py says why). `zflow up` itself never imports this module; its fork
server does, after the fork.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Totals:
    """Handed to a node's `end()` hook once its input stream has ended and drained."""

    #: records this replica received on its data inputs
    received: int
    #: records the upstream nodes sent to this node's inputs, all replicas together (None when
    #: zflow cannot count them, e.g. PUB/SUB with topic filters). Exactly-once: what arrived,
    #: each record once (the stream ends when every record the sources numbered was
    #: acknowledged; what failed on the way is counted as skipped or dead-lettered)
    expected: int | None
    #: records received per input socket
    per_socket: dict[str, int] = field(default_factory=dict)
    #: records this replica sent on its data outputs
    sent: int = 0
    #: records whose processing raised and were skipped or dead-lettered
    errors: int = 0
    #: seconds from start (the barrier) to end of stream
    elapsed: float = 0.0
    #: the run was interrupted (Ctrl-C, SIGTERM): the sources stopped early, and this is what
    #: arrived before they did
    interrupted: bool = False


@dataclass
class NodeContext:
    """Identity and configuration of one replica; `sockets` is filled for custom/service nodes."""

    topology: str
    node: str
    replica: int
    replicas: int
    params: dict[str, Any]
    verbose: bool = False
    sockets: dict[str, Any] = field(default_factory=dict)
    _stop: Any = None
    _io: Any = None

    @property
    def name(self) -> str:
        """Replica id as shown everywhere: `worker.3`."""
        return f"{self.node}.{self.replica}"

    def stopping(self) -> bool:
        """True once zflow asked this node to stop; custom loops should check it and return."""
        return bool(self._stop is not None and self._stop())

    # Custom nodes own their loops; these spare them the codec and the stop check.
    def send(self, socket: str, record: Any) -> None:
        """Send one record on `socket`, encoded with that socket's codec."""
        self._io.send(socket, record)

    def recv(self, socket: str, timeout: float | None = None) -> Any:
        """Next record from `socket`; None on timeout (seconds) or when zflow asks to stop."""
        return self._io.recv(socket, timeout)

    def request(self, socket: str, record: Any, timeout: float | None = None) -> Any:
        """Send a request and wait for its reply (REQ or DEALER sockets)."""
        self._io.send(socket, record)
        return self._io.recv(socket, timeout)

    def proxy(self, frontend: str, backend: str) -> None:
        """Shuttle messages both ways (a broker) until zflow asks this node to stop."""
        self._io.proxy(frontend, backend)


_current: NodeContext | None = None


def context() -> NodeContext:
    """The context of the replica this code runs in (an error outside a zflow node)."""
    if _current is None:
        raise RuntimeError("zflow.context() is only available inside a node started by zflow")
    return _current


def _set_current(ctx: NodeContext | None) -> None:
    global _current
    _current = ctx
