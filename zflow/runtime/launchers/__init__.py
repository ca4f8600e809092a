"""Launchers: how replicas are started and watched. The coordinator sees only this interface.

Today's launcher is `local.LocalLauncher` (fork server and Popen on this machine). A launcher for
replicas that an engine starts on other hosts (Kubernetes, Slurm) implements the same two calls:
`spawn` returns once the replica exists (or raises SpawnError with a message for the user), and
`signal` reaches its process group wherever it runs. Exits come back to the coordinator as events.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:  # the fork server's client imports this package first thing in `zflow up`
    from zflow.runtime.spec import ReplicaSpec


class SpawnError(Exception):
    """The launcher could not start a replica; the message says why, for the user."""


class Spawned(NamedTuple):
    pid: int
    #: endpoints the launcher fixed for the replica (a command node's `bind: tcp` port)
    endpoints: dict[str, str]


class Usage(NamedTuple):
    """What an exited replica used, exact (wait4, or its own getrusage on another host): the
    status shows it for every replica, however short-lived, where /proc samples miss them."""

    cpu: float  # seconds, user + system, its own and its waited-for children's
    #: peak resident bytes; None for a command: Linux carries the peak of the process that
    #: forked it across fork and exec, so wait4's figure is at least zflow's own
    maxrss: int | None


class Launcher(Protocol):
    def spawn(self, spec: ReplicaSpec) -> Spawned | None:
        """Start the replica; None when it is started by someone else and joins by itself
        (remote.RemoteLauncher): the coordinator then waits for its `hello`."""

    def signal(self, replica: str, sig: int, group: bool = True) -> None:
        """Signal the replica's process group (or, with group=False, its main process only)."""

    def release(self, replica: str) -> None:
        """`stdin: go`: tell a program waiting for Enter that every node is ready."""


def fork_helper(keep: int, run: Callable[[], int], *, stdout: bool = True) -> int:
    """Fork this process into a helper (the orphan guard, the fork server) and return its pid.

    The child ignores Ctrl-C (the supervisor's to handle), leads its own session, holds none
    of our descriptors but `keep` and stdio (as Popen's close_fds would), reads /dev/null (and,
    with stdout=False, writes there: a reader of our stdout never waits for it), runs `run()`
    and leaves with its code, never returning here. Only from a process with no threads and no
    ZeroMQ context yet."""
    for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
        stream.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.setsid()
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        if not stdout:
            os.dup2(null, 1)
        os.close(null)
        code = run()
    finally:
        os._exit(code)


class Forked:
    """The Popen-like handle of a helper `fork_helper` made (the guard, with the pipe it reads
    as `stdin`; the fork server): its pid, waited for with a timeout, killed."""

    def __init__(self, pid: int, stdin: IO[str] | None = None) -> None:
        self.pid = pid
        self.stdin = stdin
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code, or None if it has not exited after `timeout` seconds."""
        if self.returncode is None:
            try:
                status = os.waitpid(self.pid, 0)[1] if timeout is None else self._status(timeout)
            except ChildProcessError:  # reaped already
                status = 0
            if status is None:
                return None
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def _status(self, timeout: float) -> int | None:
        """Its wait status if it exits within `timeout` seconds."""
        import select

        try:
            fd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):  # before Linux 5.3, or a seccomp filter: poll
            import time

            deadline = time.monotonic() + timeout
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    return status
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.01)
        try:
            if not select.select([fd], [], [], timeout)[0]:
                return None
        finally:
            os.close(fd)
        return os.waitpid(self.pid, 0)[1]

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def zflow_home() -> str:
    """The directory zflow is imported from (the parent of the package)."""
    import zflow

    return os.path.dirname(os.path.dirname(os.path.abspath(zflow.__file__)))


def zflow_python(module: str, *args: str) -> list[str]:
    """argv running `module`'s main() on this interpreter, never importing from the invoking
    directory.

    `python -m` would put the current directory first on sys.path: a stray `zmq.py`,
    `fractions.py` or a checkout named `zflow/` there would shadow the real ones in every replica.
    With `-c` the current directory is the entry `''`, added after site-packages are set up; the
    first statement replaces it with zflow's own location. Replicas add the topology's directory
    (and the user's PYTHONPATH) themselves.
    """
    home = zflow_home()
    boot = ("import sys; p = sys.path; p[:1] = [sys.argv.pop(1)] if p[:1] == [''] else "
            f"[sys.argv.pop(1), *p[:1]]; from {module} import main; sys.exit(main())")
    return [sys.executable, "-c", boot, home, *args]
