"""Starting replica processes: Python replicas fork from the zygote, commands are exec'd.

Both kinds look the same to the supervisor: a pid that leads its own process group, two pipes
(stdout, stderr) and `poll()` for the exit code.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import IO

from zflow.runtime.launchers import zflow_python
from zflow.runtime.launchers.guard import TOKEN, Forked, running
from zflow.runtime.launchers.guard import fork as fork_guard

MAX = 1 << 20


class Zygote:
    """Client side of zflow.runtime.launchers.zygote; start it early so its imports overlap ours."""

    def __init__(self, guard: bool = False) -> None:
        #: `guard`: the orphan guard is forked first (guard.fork), before the socket below
        #: exists, so it holds nothing of the run but its pipe; the launcher takes it
        self.guard: Forked | None = fork_guard() if guard else None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        #: the run's token: in the fork server's environment, so in every replica it forks
        #: (a forked process's /proc/PID/environ is its parent's), found by the guard
        self.token = os.urandom(8).hex()
        self.proc = subprocess.Popen(
            zflow_python("zflow.runtime.launchers.zygote", str(theirs.fileno())),
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "ZFLOW_PARENT_PID": str(os.getpid()), TOKEN: self.token},
        )
        theirs.close()
        self.sock = ours
        self.exits: dict[int, int] = {}
        self.dead = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def _handle(self, data: bytes) -> dict | None:
        if not data:
            raise OSError("the zflow fork server exited")
        msg = json.loads(data)
        if "exit" in msg:
            self.exits[msg["exit"]] = msg["code"]
            return None
        return msg

    def spawn(self, env: dict[str, str], cwd: str, title: str) -> ForkedProc:
        return self.collect(self.request(env, cwd, title))

    def request(self, env: dict[str, str], cwd: str, title: str) -> tuple[int, int]:
        """Ask for a fork; its pid is read by `collect`, in the order of the requests (the
        fork server answers them in turn), so a launcher can ask for many before reading."""
        out_r, out_w = os.pipe()
        try:
            err_r, err_w = os.pipe()
        except OSError:
            os.close(out_r)
            os.close(out_w)
            raise
        try:
            request = json.dumps({"env": env, "cwd": cwd, "title": title}).encode()
            socket.send_fds(self.sock, [request], [out_w, err_w])
        except OSError:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return out_r, err_r

    def collect(self, pipes: tuple[int, int]) -> ForkedProc:
        """The replica of the oldest `request` not yet collected (`pipes` is what it returned)."""
        out_r, err_r = pipes
        try:
            while True:
                msg = self._handle(self.sock.recv(MAX))
                if msg is not None:
                    break
            if "error" in msg:
                raise OSError(msg["error"])
        except BaseException:  # no replica: its pipes go too
            os.close(out_r)
            os.close(err_r)
            raise
        return ForkedProc(self, msg["pid"], os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb"))

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

    def close(self) -> None:
        if self.guard is not None:  # never taken by a launcher: nothing for it to guard
            self.guard.stdin.close()
            self.guard.wait()
            self.guard = None
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ForkedProc:
    """The Popen-like handle of a replica forked by the zygote."""

    def __init__(self, zygote: Zygote, pid: int, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.zygote = zygote
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.pid in self.zygote.exits:
            self.returncode = self.zygote.exits.pop(self.pid)
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
