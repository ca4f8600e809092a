"""Starting replica processes: Python replicas fork from the zygote, commands are exec'd.

Both kinds look the same to the supervisor: a pid that leads its own process group, two pipes
(stdout, stderr) and `poll()` for the exit code.
"""

from __future__ import annotations

import _socket
import array
import json
import os
import sys
from typing import IO, Any

from zflow.runtime.launchers import Forked, Usage, fork_helper, zflow_home, zflow_python
from zflow.runtime.launchers.guard import TOKEN, running
from zflow.runtime.launchers.guard import fork as fork_guard

MAX = 1 << 20
#: replicas asked for in one message at most: two descriptors each (a message carries at most
#: 253), and their JSON within BATCH_BYTES, or less where the socket's send buffer is smaller (a
#: longer message is refused: the buffer less 32 bytes is the most it takes)
BATCH = 64
BATCH_BYTES = 128 * 1024


def send_fds(sock: _socket.socket, data: bytes, fds: list[int]) -> None:
    """`socket.send_fds`, on the C socket: `zflow up` never imports socket.py (its enums and
    selectors are ~4 ms on the way to the first replica; the fork server imports it, warm for
    the user's code)."""
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))])


class Zygote:
    """Client side of zflow.runtime.launchers.zygote; start it early so its imports overlap ours.

    `fork=True` (`zflow up`, first thing): the fork server is a fork of this process, made once
    pyzmq and msgpack are imported here (the supervisor needs them anyway), so no second
    interpreter starts and imports them: ~50 ms of CPU less at the start of every run, on 2 cores
    shared with the replicas. Only from a process with no threads and no ZeroMQ context yet.
    Otherwise (in-process callers) the fork server is a new interpreter."""

    #: while an answer that may wait for a preloaded node's import is awaited: true once the
    #: run is interrupted, which then stops waiting (the supervisor sets it)
    interrupted: Any = None

    def __init__(self, guard: bool = False, fork: bool = False) -> None:
        #: `guard`: the orphan guard is forked first (guard.fork), before the socket below
        #: exists, so it holds nothing of the run but its pipe; the launcher takes it
        self.guard: Forked | None = fork_guard() if guard else None
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        #: the run's token: in the environment of every replica and of what it starts, found
        #: there by the guard (an exec'd fork server carries it too)
        self.token = os.urandom(8).hex()
        if fork:
            self.proc: Any = _fork_server(theirs, self.token)
        else:
            import subprocess

            self.proc = subprocess.Popen(
                zflow_python("zflow.runtime.launchers.zygote", str(theirs.fileno())),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "ZFLOW_PARENT_PID": str(os.getpid()), TOKEN: self.token},
            )
        theirs.close()
        self.sock = ours
        #: the bytes a request may take (BATCH_BYTES, unless this host's buffers are smaller)
        self.room = min(BATCH_BYTES,
                        ours.getsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF) - 4096)
        self.exits: dict[int, int] = {}
        #: pid → (CPU seconds, peak RSS bytes) of an exited replica, until its handle takes it
        self.usage: dict[int, Usage] = {}
        #: requests holding `preload: true` entries, by the first pipe they returned
        self.importing: set[int] = set()
        self.dead = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def _handle(self, data: bytes) -> dict | None:
        if not data:
            raise OSError("the zflow fork server exited")
        msg = json.loads(data)
        if "exit" in msg:
            self.exits[msg["exit"]] = msg["code"]
            if "cpu" in msg:
                self.usage[msg["exit"]] = Usage(float(msg["cpu"]), int(msg["maxrss"]))
            return None
        return msg

    def spawn(self, env: dict[str, str], cwd: str, title: str,
              preload: dict[str, str] | None = None) -> ForkedProc:
        got = self.collect(self.request([(env, cwd, title)], preload=[preload]))[0]
        if isinstance(got, OSError):
            raise got
        return got

    def request(self, batch: list[tuple[dict[str, str], str, str]],
                base: dict[str, str] | None = None,
                preload: list[dict[str, str] | None] | None = None) -> list[tuple[int, int]]:
        """Ask for a fork per (env, cwd, title) in one message (at most BATCH of them; each env
        is what differs from `base`, which is sent once). Their pids are read by `collect`, in
        the order of the requests (the fork server answers them in turn), so a launcher can
        ask again before reading. `preload[i]`: {"module", "key"} of the i-th (`preload: true`):
        it is forked by the node server of that key, which imported the module (zygote.py)."""
        if not 0 < len(batch) <= BATCH:  # more descriptors would be dropped on the way
            raise ValueError(f"a batch of {len(batch)} replicas: 1 to {BATCH} at a time")
        reads: list[int] = []
        writes: list[int] = []
        try:
            for _ in range(2 * len(batch)):  # stdout and stderr of each
                r, w = os.pipe()
                reads.append(r)
                writes.append(w)
            entries: list[dict[str, Any]] = [
                {"env": env, "cwd": cwd, "title": title} for env, cwd, title in batch]
            for entry, pre in zip(entries, preload or [], strict=False):
                if pre:
                    entry["preload"] = pre
            request = json.dumps({"base": base or {}, "spawn": entries}).encode()
            send_fds(self.sock, request, writes)
            if any(preload or []):  # its answer can wait for an import: collect polls for it
                self.importing.add(reads[0])
        except OSError:
            for fd in reads:
                os.close(fd)
            raise
        finally:
            for fd in writes:
                os.close(fd)
        return [(reads[i], reads[i + 1]) for i in range(0, len(reads), 2)]

    def collect(self, pipes: list[tuple[int, int]]) -> list[ForkedProc | OSError]:
        """The replicas of the oldest `request` not yet collected (`pipes` is what it
        returned): a handle each, or the error that says why there is none."""
        slow = bool(pipes) and pipes[0][0] in self.importing
        self.importing.discard(pipes[0][0] if pipes else -1)
        try:
            while True:
                while slow and self.interrupted is not None and not _readable(self.sock, 0.1):
                    if self.interrupted():  # Ctrl-C while a node imports: those replicas
                        raise OSError("interrupted while a preloaded node imported its module")
                msg = self._handle(self.sock.recv(MAX))
                if msg is not None:
                    break
            answers = msg.get("pids")
            if not isinstance(answers, list) or len(answers) != len(pipes):
                raise OSError(msg.get("error") or "the zflow fork server answered out of turn")
        except BaseException:  # no replicas: their pipes go too
            for fds in pipes:
                for fd in fds:
                    os.close(fd)
            raise
        out: list[ForkedProc | OSError] = []
        for (out_r, err_r), pid in zip(pipes, answers, strict=True):
            if isinstance(pid, int):
                out.append(ForkedProc(self, pid, os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb")))
            else:
                os.close(out_r)
                os.close(err_r)
                out.append(OSError(pid.get("error") if isinstance(pid, dict) else str(pid)))
        return out

    def pump(self, block: bool = False) -> None:
        """Take the exit reports that have arrived."""
        self.sock.setblocking(block)
        try:
            while True:
                self._handle(self.sock.recv(MAX))
                if block:
                    return
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def shut(self) -> None:
        """Tell the fork server to leave (it does when it reads the end of its socket), without
        waiting for it: `close` does."""
        self.sock.close()

    def close(self) -> None:
        if self.guard is not None:  # never taken by a launcher: nothing for it to guard
            self.guard.stdin.close()
            self.guard.wait()
            self.guard = None
        self.shut()
        if not _exited(self.proc, 5.0):
            self.proc.kill()
            self.proc.wait()


def _readable(sock: _socket.socket, timeout: float) -> bool:
    import select  # imported already by the supervisor's poller (zmq)

    return bool(select.select([sock], [], [], timeout)[0])


def _exited(proc: Any, timeout: float) -> bool:
    if isinstance(proc, Forked):
        return proc.wait(timeout) is not None
    import subprocess  # imported already: it started `proc`

    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _fork_server(theirs: _socket.socket, token: str) -> Forked:
    """Fork this process into the fork server, its end of the socket `theirs`
    (`launchers.fork_helper`); as an exec'd one it finds modules as `zflow_python` makes
    replicas find them (not in our current directory)."""
    import msgpack  # noqa: F401 - inherited warm by the fork server and every replica
    import zmq  # noqa: F401 - same

    parent = os.getpid()
    fd = theirs.fileno()

    def serve() -> int:
        try:
            os.environ.update({"ZFLOW_PARENT_PID": str(parent), TOKEN: token})
            sys.argv[:] = ["-c"]
            # our first entry is the directory of the `zflow` script or `-m`'s current one
            sys.path[:0 if getattr(sys.flags, "safe_path", False) else 1] = [zflow_home()]  # 3.11+
            from zflow.runtime.launchers import zygote

            zygote.setproctitle("zflow: fork server")  # not the command line of `zflow up`
            return zygote.main(fd)
        except BaseException:  # noqa: BLE001 - said on stderr; the launcher reports it gone
            import traceback

            traceback.print_exc()
            return 1

    return Forked(fork_helper(fd, serve))


class ForkedProc:
    """The Popen-like handle of a replica forked by the zygote."""

    def __init__(self, zygote: Zygote, pid: int, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.zygote = zygote
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        #: what it used, once it exited (None: not known, as when the fork server died first)
        self.usage: Usage | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.pid in self.zygote.exits:
            self.returncode = self.zygote.exits.pop(self.pid)
            self.usage = self.zygote.usage.pop(self.pid, None)
        if self.returncode is None and self.zygote.dead and not running(self.pid):
            self.returncode = -9  # died with the fork server, which can no longer report it
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            try:
                self.zygote.pump(block=True)
            except OSError:
                self.zygote.dead = True
                if not running(self.pid):
                    self.returncode = -9  # died with the fork server
        return self.returncode  # type: ignore[return-value]
