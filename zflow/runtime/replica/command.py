"""A command node on another host: `zflow replica` runs the program and stands in for what the
local launcher would see of it.

On one host the supervisor watches a command node itself: it connects to its endpoints to learn
it listens, counts its connections in /proc/net, reads its output and waits for its exit. Here
that is done on the program's own host and said over the control link: `listening {endpoints}`,
`conns {n: {socket: count}}` until the barrier opens, `line {stream, text}` for its output
(also printed here, so `kubectl logs` shows it), and `bye {code}` with its exit code. What the
coordinator asks (`signal`, `release` for `stdin: go`, `stop` when abandoning) is done to the
program's process group. The program sees exactly the `ZFLOW_*` contract it sees on one host.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket as pysocket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import zmq

from zflow.runtime import protocol as P
from zflow.runtime.launchers.local import connections, endpoints_accept
from zflow.runtime.spec import ReplicaSpec, command_env

#: how often the program's listening and connections are looked at (s)
CHECK_EVERY = 0.05


def free_port() -> int:
    with pysocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(spec: ReplicaSpec, ctrl: zmq.Socket, any_port: bool = False,
        closing: Callable[[], None] | None = None) -> int:
    """Run the command node of `spec` until it exits; its exit code (128+N for a signal)."""

    def send(kind: str, **fields: Any) -> None:
        try:
            ctrl.send(P.pack(kind, **fields), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    binds = {s.name: s for s in spec.sockets if s.mode == "bind" and s.bind_endpoint}
    if any_port:  # tests on one host: a port the OS has free
        for s in binds.values():
            if s.bind_endpoint and s.bind_endpoint.startswith("tcp://"):
                s.bind_endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env.update(spec.env)
    env.update(command_env(spec))
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        proc = subprocess.Popen(
            list(spec.argv or []), cwd=spec.cwd, env=env,
            stdin=subprocess.PIPE if spec.stdin == "go" else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        what = (spec.argv or ["?"])[0]
        send(P.FATAL, phase="spawn", message=f"cannot run {what!r}: {e.strerror or e}")
        send(P.BYE, code=127)
        sys.stderr.write(f"zflow replica: cannot run {what!r}: {e.strerror or e}\n")
        if closing is not None:
            closing()
        return 3

    def kill(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    sel = selectors.DefaultSelector()
    sel.register(ctrl.getsockopt(zmq.FD), selectors.EVENT_READ, "ctrl")
    for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        os.set_blocking(pipe.fileno(), False)  # type: ignore[union-attr]
        sel.register(pipe, selectors.EVENT_READ, name)  # type: ignore[arg-type]
    bufs = {"stdout": b"", "stderr": b""}
    listening = started = False
    next_check = 0.0
    last_counts: dict[str, int] | None = None
    term_at: float | None = None
    exited_at: float | None = None
    open_pipes = 2

    def lines(stream: str, data: bytes, final: bool = False) -> None:
        buf = bufs[stream] + data
        *done, bufs[stream] = buf.split(b"\n")
        if final and bufs[stream]:
            done.append(bufs[stream])
            bufs[stream] = b""
        out = sys.stdout if stream == "stdout" else sys.stderr
        for raw in done:
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            out.write(text + "\n")
            send(P.LINE, stream=stream, text=text)
        out.flush()

    while proc.poll() is None or open_pipes:
        now = time.monotonic()
        if stopping and term_at is None:
            term_at = now
            kill(signal.SIGTERM)
        if term_at is not None and now - term_at > 5.0:
            kill(signal.SIGKILL)
        if proc.poll() is None and now >= next_check:
            next_check = now + CHECK_EVERY
            eps = {k: s.bind_endpoint for k, s in binds.items() if s.bind_endpoint}
            if not listening and endpoints_accept(eps):
                listening = True
                host = spec.advertise or ""
                send(P.LISTENING, endpoints={k: _advertised(v, host) for k, v in eps.items()})
            if listening and not started:
                counts = {k: connections(v) for k, v in eps.items()}
                if counts != last_counts:
                    last_counts = counts
                    send(P.CONNS, n=counts)
        ready = sel.select(CHECK_EVERY)
        # the control socket's fd is edge-triggered: read whatever is there, every time
        while ctrl.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            msg = P.unpack(ctrl.recv())
            kind = msg.get("t")
            if kind == P.START:
                started = True
            elif kind == P.RELEASE and proc.stdin is not None:
                try:
                    proc.stdin.write(b"\n")
                    proc.stdin.close()
                except OSError:
                    pass
            elif kind == P.SIGNAL:
                kill(int(msg["sig"]))
            elif kind == P.STOP and msg.get("abandon"):
                kill(signal.SIGTERM)
        for key, _ in ready:
            if key.data == "ctrl":
                continue
            try:
                data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fileobj)
                open_pipes -= 1
                lines(key.data, b"", final=True)
            else:
                lines(key.data, data)
        if proc.poll() is not None and exited_at is None:
            exited_at = now
        if exited_at is not None and open_pipes and now - exited_at > 1.0:
            break  # a grandchild holds the pipes open; the program itself is gone
    code = proc.wait()
    code = code if code >= 0 else 128 - code
    kill(signal.SIGKILL)  # whatever it left behind in its group
    send(P.BYE, code=code, **P.usage(peak=False))  # CPU: the program's with this wrapper's
    if closing is not None:
        closing()
    ctrl.close(linger=2000)
    return code


def _advertised(endpoint: str, host: str) -> str:
    from zflow.cluster import advertised

    return advertised(endpoint, host) if host else endpoint
