"""The remote launcher: replicas that an engine (Kubernetes, Slurm, a shell on another host)
starts, each with `zflow replica`, and that join the coordinator by themselves.

`spawn` starts nothing: the coordinator then waits for the replica's `hello` (coordinator._join).
Exits are not process events here but control-link events (the supervisor tells the coordinator
when a link is gone, coordinator.link_lost). A signal travels as a control message (`signal`)
and is delivered where the replica runs; SIGKILL also means "stop waiting for it" — a replica
that cannot be reached exits by itself once it loses its coordinator. `stdin: go` is a `release`
message to a command node's wrapper. Everything else the supervisor's loop asks of a launcher
(pipes, /proc samples, the fork server) has nothing to do here.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from zflow.runtime import protocol as P
from zflow.runtime.launchers import Spawned, Usage
from zflow.runtime.spec import ReplicaSpec


class RemoteLauncher:
    def __init__(self) -> None:
        self.on_line = lambda replica, stream, line: None
        self.fd_proc: dict[int, object] = {}
        self.given_up: list[str] = []
        self.send: Callable[[bytes, str, dict[str, Any]], None] = lambda i, k, f: None
        self.identity: Callable[[str], bytes | None] = lambda replica: None

    def attach(self, send: Callable[[bytes, str, dict[str, Any]], None],
               identity: Callable[[str], bytes | None]) -> None:
        """How to reach a replica: the control plane's send, and its current identity."""
        self.send, self.identity = send, identity

    def spawn(self, spec: ReplicaSpec) -> Spawned | None:
        return None

    def _tell(self, replica: str, kind: str, **fields: Any) -> None:
        ident = self.identity(replica)
        if ident is not None:
            self.send(ident, kind, fields)

    def signal(self, replica: str, sig: int, group: bool = True) -> None:
        self._tell(replica, P.SIGNAL, sig=int(sig), group=group)
        if sig == signal.SIGKILL and replica not in self.given_up:
            self.given_up.append(replica)

    def release(self, replica: str) -> None:
        self._tell(replica, P.RELEASE)

    def reap(self) -> list[tuple[str, int, Usage | None]]:
        """Replicas given up on (SIGKILL), as exits: the coordinator stops waiting for them.
        (What a remote replica used comes in its `bye`.)"""
        out, self.given_up = [(r, -signal.SIGKILL, None) for r in self.given_up], []
        return out

    # what a local launcher watches; nothing here
    def fds(self) -> list[int]:
        return []

    def read(self, fd: int) -> bool:
        return False

    def zygote_fd(self) -> int | None:
        return None

    def pump(self) -> None:
        pass

    def flush_partial(self, now: float) -> None:
        pass

    def endpoints_accept(self, endpoints: dict[str, str]) -> bool:
        return False

    def connected(self, endpoints: dict[str, str], expected: dict[str, int]) -> bool:
        return False

    def sample(self, now: float) -> list[tuple[str, int, float | None, int | None, float | None]]:
        return []

    def adopt(self) -> None:
        pass

    def kill_all(self) -> None:
        pass

    def close(self) -> None:
        pass
