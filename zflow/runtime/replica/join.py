"""A replica started by an engine on some host (`zflow replica`): it joins the coordinator instead
of being spawned by it.

It connects its control DEALER over tcp (CURVE with its node's key, ZMTP heartbeats) under an
identity of its own (`node.i#random`: the coordinator counts incarnations, a pod cannot), says
`hello` with its topology's digest, and waits to be admitted (`welcome` carries its ReplicaSpec)
or refused. From then on it is an ordinary replica (main.run), bound on fixed ports and
advertising them under its stable host name. A replica whose control link dies — the coordinator
exited, or its heartbeats stopped — stops and exits: nothing is orphaned on a cluster.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zflow import exitcodes
from zflow.records import record
from zflow.runtime import protocol as P
from zflow.runtime.control import HEARTBEAT_IVL, HEARTBEAT_TIMEOUT, heartbeats
from zflow.runtime.spec import ReplicaSpec

#: after losing its coordinator, how long a replica may take to stop before it is cut short (s)
LOST_GRACE = 5.0
_REFUSED_KEY = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused this replica's key",
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed the CURVE handshake (is "
                "coordinator.key the coordinator's public key?)",
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed the handshake (one side uses "
                "CURVE and the other does not?)"}


class JoinError(Exception):
    """Could not join; `code` is the exit code (3: will not work if retried, 1: may)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@record
class Joined:
    spec: ReplicaSpec
    ctx: zmq.Context
    ctrl: zmq.Socket
    monitor: zmq.Socket


def connect(join: str, node: str, index: int, digest: str, host: str, keys: Any,
            timeout: float, heartbeat: tuple[int, int] = (HEARTBEAT_IVL, HEARTBEAT_TIMEOUT),
            ) -> Joined:
    """Connect to the coordinator at `join` and wait (up to `timeout` s) to be admitted."""
    ctx = zmq.Context()
    ctrl = ctx.socket(zmq.DEALER)
    ctrl.setsockopt(zmq.IDENTITY, f"{node}.{index}#{secrets.token_hex(4)}".encode())
    ctrl.setsockopt(zmq.LINGER, 2000)
    ctrl.setsockopt(zmq.RCVHWM, 0)
    ctrl.setsockopt(zmq.SNDHWM, 0)
    heartbeats(ctrl, *heartbeat)
    if keys is not None:
        ctrl.curve_secretkey = keys.secret
        ctrl.curve_publickey = keys.public
        ctrl.curve_serverkey = keys.server
    monitor = ctrl.get_monitor_socket(
        zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    try:
        ctrl.connect(join)
    except zmq.ZMQError as e:
        _close(ctx, ctrl, monitor)
        raise JoinError(f"cannot connect to {join}: {e.strerror}", exitcodes.USAGE) from None
    ctrl.send(P.pack(P.HELLO, pid=os.getpid(), digest=digest, host=host))
    poller = zmq.Poller()
    poller.register(ctrl, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    deadline = time.monotonic() + timeout
    linked = False  # connected once: a disconnect now means the coordinator went away
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise JoinError(f"the coordinator at {join} did not admit {node}.{index} within "
                                f"{timeout:g}s (not running, not reachable, or this index is "
                                "taken)", exitcodes.FAILED)
            for sock, _ in poller.poll(left * 1000):
                if sock is monitor:
                    ev = recv_monitor_message(monitor)
                    why = _REFUSED_KEY.get(ev["event"])
                    if why:
                        raise JoinError(f"the coordinator at {join} {why}",
                                        exitcodes.START_FAILED)
                    if ev["event"] == zmq.EVENT_DISCONNECTED and linked:
                        raise JoinError(f"lost the coordinator at {join} while joining",
                                        exitcodes.FAILED)
                    linked = linked or ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
                    continue
                msg = P.unpack(ctrl.recv())
                if msg.get("t") == P.REFUSED:
                    code = msg.get("code")
                    raise JoinError(f"the coordinator at {join} refused {node}.{index}: "
                                    f"{msg.get('reason')}",
                                    code if isinstance(code, int) else exitcodes.START_FAILED)
                if msg.get("t") == P.WELCOME:
                    spec = ReplicaSpec.from_json(msg["spec"])
                    spec.advertise = host
                    return Joined(spec, ctx, ctrl, monitor)
    except JoinError:
        _close(ctx, ctrl, monitor)
        raise


def _close(ctx: zmq.Context, *socks: zmq.Socket) -> None:
    for s in socks:
        s.close(0)
    ctx.term()


def watch_link(monitor: zmq.Socket, done: threading.Event) -> threading.Thread:
    """A thread that stops this replica (SIGTERM to itself, then a hard exit after LOST_GRACE)
    when its control link goes down while `done` is not set.

    It says why on the stderr the replica was started with (the pod's log), not through fd 2:
    the Tee may have made that a pipe its thread copies from, and a SIGTERM that came before
    the replica's handler killed it with the line still in the pipe."""
    log = os.dup(2)

    def watch() -> None:
        try:
            while not done.is_set():
                if not monitor.poll(100):
                    continue
                ev = recv_monitor_message(monitor)
                if ev["event"] == zmq.EVENT_DISCONNECTED and not done.is_set():
                    try:
                        os.write(log, b"zflow replica: lost the coordinator; stopping\n")
                    except OSError:  # the log is gone: stopping matters more
                        pass
                    os.kill(os.getpid(), signal.SIGTERM)
                    if not done.wait(LOST_GRACE):
                        os._exit(exitcodes.FAILED)
                    return
        except zmq.ZMQError:
            return
        finally:
            monitor.close(0)  # the context cannot terminate while it is open
            os.close(log)

    t = threading.Thread(target=watch, name="zflow-link", daemon=True)
    t.start()
    return t


def prepare(spec: ReplicaSpec) -> None:
    """What the local launcher does for a spawned replica, done by the replica itself: its
    environment, working directory and import path."""
    os.environ.update(spec.env)
    os.environ["PYTHONUNBUFFERED"] = "1"
    if os.path.isdir(spec.cwd):
        os.chdir(spec.cwd)
    if spec.base_dir not in sys.path:
        sys.path.insert(0, spec.base_dir)


class Tee:
    """The replica's stdout and stderr, still written where they went (the pod's log) and also
    sent to the coordinator as `line` messages, so it shows node output as `zflow up` does.

    fd 1 and 2 become pipes read by a thread, which owns a second DEALER (`IDENTITY/out`): the
    control socket belongs to the main thread. Output never waits for the network: a line that
    cannot be sent at once is only in the log."""

    def __init__(self, ctx: zmq.Context, identity: bytes, endpoint: str, keys: Any,
                 heartbeat: tuple[int, int]) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, identity + b"/out")
        self.sock.setsockopt(zmq.LINGER, 500)
        self.sock.setsockopt(zmq.SNDHWM, 10000)
        heartbeats(self.sock, *heartbeat)
        if keys is not None:
            self.sock.curve_secretkey = keys.secret
            self.sock.curve_publickey = keys.public
            self.sock.curve_serverkey = keys.server
        self.sock.connect(endpoint)
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = {1: os.dup(1), 2: os.dup(2)}
        self.reads: dict[int, tuple[str, int]] = {}
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            self.reads[r] = (stream, self.saved[fd])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="zflow-tee", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        bufs = {r: b"" for r in self.reads}
        poller = zmq.Poller()
        for r in self.reads:
            poller.register(r, zmq.POLLIN)
        try:
            while self.reads and not self.stop.is_set():
                for r, _ in poller.poll(100):
                    stream, out = self.reads[r]
                    data = os.read(r, 65536)
                    if data:
                        try:
                            os.write(out, data)
                        except OSError:
                            pass  # the log is gone; the coordinator still gets the line
                    *lines, bufs[r] = (bufs[r] + data).split(b"\n")
                    if not data and bufs[r]:
                        lines, bufs[r] = [*lines, bufs[r]], b""
                    for raw in lines:
                        self._send(stream, raw)
                    if not data:
                        poller.unregister(r)
                        os.close(r)
                        del self.reads[r]
        finally:
            self.sock.close()

    def _send(self, stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        try:
            self.sock.send(P.pack(P.LINE, stream=stream, text=text), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self) -> None:
        """Give fd 1 and 2 back; what is still in the pipes is sent (for up to a second)."""
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)  # the pipes' write ends close: the thread reads to their end
        self.thread.join(1.0)
        self.stop.set()  # a child of the node still holds a pipe: stop reading it anyway
        self.thread.join(1.0)
        if not self.thread.is_alive():  # it wrote to these until now
            for saved in self.saved.values():
                os.close(saved)
