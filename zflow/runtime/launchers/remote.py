"""The remote launcher: replicas that an engine (Kubernetes, Slurm, a shell on another host)
starts, each with `zflow replica`, and that join the coordinator by themselves.

`spawn` starts nothing: the coordinator then waits for the replica's `hello` (coordinator._join).
Exits are not process events here but control-link events (the supervisor tells the coordinator
when a link is gone, coordinator.link_lost). Signals cannot reach another host: SIGTERM is left to
the STOP message the coordinator already sent, and SIGKILL means "stop waiting for it" — the
replica exits by itself once it loses its coordinator. Everything else the supervisor's loop asks
of a launcher (pipes, /proc samples, the fork server) has nothing to do here.
"""

from __future__ import annotations

import signal

from zflow.runtime.launchers import Spawned
from zflow.runtime.spec import ReplicaSpec


class RemoteLauncher:
    def __init__(self) -> None:
        self.on_line = lambda replica, stream, line: None
        self.fd_proc: dict[int, object] = {}
        self.given_up: list[str] = []

    def spawn(self, spec: ReplicaSpec) -> Spawned | None:
        return None

    def signal(self, replica: str, sig: int, group: bool = True) -> None:
        if sig == signal.SIGKILL and replica not in self.given_up:
            self.given_up.append(replica)

    def release(self, replica: str) -> None:
        pass

    def reap(self) -> list[tuple[str, int]]:
        """Replicas given up on (SIGKILL), as exits: the coordinator stops waiting for them."""
        out, self.given_up = [(r, -signal.SIGKILL) for r in self.given_up], []
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

    def sample(self, now: float) -> list[tuple[str, int, float | None, int | None]]:
        return []

    def adopt(self) -> None:
        pass

    def kill_all(self) -> None:
        pass

    def close(self) -> None:
        pass
