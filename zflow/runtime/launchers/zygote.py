"""The fork server: one warm interpreter that forks every Python replica.

Starting a fresh interpreter and importing pyzmq costs ~50 ms of CPU per replica; squares has 12
of them on 2 cores. The zygote pays that once, then each replica is an `os.fork()` (~1-2 ms).
`zflow up` does not even start it: it forks itself once pyzmq is imported (forkserver.Zygote,
fork=True) and calls `main(fd)`; in-process callers exec it, with the fd as argv[1].
It is single-threaded and never creates a ZeroMQ context, so forking it is safe; each child builds
its own context, as ZeroMQ requires.

Protocol on the SOCK_SEQPACKET Unix socket (one message each way per batch):
  supervisor → zygote: JSON {"base": {...}, "spawn": [{"env": {...}, "cwd": "...", "title": "..."},
      ...]} with two fds per entry, in order (its stdout and stderr write ends); an entry's
      environment is `base` updated with its `env` (what differs), so a batch carries the
      shared environment once
  zygote → supervisor: JSON {"pids": [N or {"error": "..."}, ...]}, one per entry, in order;
      later {"exit": N, "code": C, "cpu": S, "maxrss": B} as each exits: its CPU seconds
      (user + system) and peak resident bytes, exact from wait4 (a replica too short-lived for
      a /proc sample still has them)
A batch is forked in one go: one message each way instead of one per replica, and nothing
parsed between two forks (each of which makes every page written next a copy). The zygote
reaps its children and reports each exit; it dies with the supervisor (PDEATHSIG).

The zygote's objects are frozen before each fork (`gc.freeze`, CPython's own recipe for a
server that forks without exec): a replica's collector then never walks them, and so never
writes to the pages it shares with the zygote. Before this, a worker's first full collection
walked ~15,800 inherited objects and copied the pages they lie on: squares at 10k records and
10 workers spent 96 ms of the workers' CPU, 70 ms with the freeze, and the run ended 20 ms
sooner (9 paired runs, 9 of 9 faster; at 1M records 38 ms sooner). The zygote itself never
collects (gc.disable(): a collection there would free holes into those shared pages); it
allocates nothing but its requests and answers, which hold no cycles.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
from typing import Any

import msgpack  # noqa: F401 - imported to be inherited warm by every replica
import zmq  # noqa: F401 - same

try:
    from setproctitle import setproctitle
except ImportError:  # titles are a nicety
    def setproctitle(title: str) -> None:
        pass

from zflow.runtime.launchers.forkserver import BATCH, MAX
from zflow.runtime.replica import main as replica


def become(environ: Any, inherited: dict[str, str], env: dict[str, str]) -> None:
    """Make `environ` (os.environ, holding `inherited`) hold exactly `env`, touching only what
    differs: clearing and setting all ~40 variables (each decoded, each a putenv) was 0.7 ms of
    every replica's start; this is 0.15."""
    for k in inherited.keys() - env.keys():
        del environ[k]
    for k, v in env.items():
        if inherited.get(k) != v:
            environ[k] = v


def _child(request: dict[str, Any], base: dict[str, str], fds: list[int], mine: int,
           sock: socket.socket, parent: int, inherited: dict[str, str]) -> None:
    """In the forked child: become the replica described by `request` (its environment `base`
    updated with its own; its pipes fds[2*mine] and fds[2*mine + 1], the others being its batch
    mates'), never return. `inherited` is the fork server's environment, which every child
    starts with."""
    code = 1
    gc.enable()  # the replica collects its own garbage; the zygote's objects stay frozen
    try:
        out_fd, err_fd = fds[2 * mine], fds[2 * mine + 1]
        env = {**base, **request["env"]}
        sock.close()
        for fd in fds:  # a batch mate's pipe held open here would never show its end
            if fd not in (out_fd, err_fd):
                os.close(fd)
        os.setsid()
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace",  # noqa: SIM115
                          closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace",  # noqa: SIM115
                          closefd=False)
        # before the environment is rewritten: setproctitle needs the original layout
        setproctitle(request.get("title") or "zflow replica")
        env["ZFLOW_PARENT_PID"] = str(parent)
        become(os.environ, inherited, env)
        for path in reversed([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]):
            sys.path.insert(0, path)
        os.chdir(request["cwd"])
        code = replica.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - last resort: report and exit, never return to the loop
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(fd: int | None = None) -> int:
    """Serve on the socket `fd` (argv[1] when exec'd) until the supervisor closes it."""
    replica.die_with_parent()
    gc.disable()  # see the module's docstring: the zygote's pages stay as its children share them
    sock = socket.socket(fileno=int(sys.argv[1]) if fd is None else fd)
    me = os.getpid()
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: set[int] = set()
    inherited = dict(os.environ)  # what each child starts with (nothing here changes it)
    while True:
        ready, _, _ = select.select([sock, r], [], [])
        if r in ready:
            try:
                os.read(r, 512)
            except BlockingIOError:
                pass
        while children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            try:
                sock.send(json.dumps({
                    "exit": pid, "code": os.waitstatus_to_exitcode(status),
                    "cpu": round(usage.ru_utime + usage.ru_stime, 6),
                    "maxrss": usage.ru_maxrss * 1024}).encode())  # Linux counts it in KiB
            except OSError:  # the supervisor closed its end: it is gone or going
                os._exit(0)
        if sock in ready:
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX, 2 * BATCH)
            except OSError:
                data, fds = b"", []
            if not data:  # the supervisor is gone: nothing to tear down, leave at once
                os._exit(0)
            batch = json.loads(data)
            base = batch.get("base") or {}
            answers: list[Any] = []
            gc.freeze()  # what this batch inherits is never walked by its collectors
            for i, request in enumerate(batch["spawn"]):
                try:
                    pid = os.fork()
                except OSError as e:  # no more processes, or no memory: this one says why
                    answers.append({"error": f"cannot fork: {e.strerror or e}"})
                    continue
                if pid == 0:
                    os.close(r)
                    os.close(w)
                    _child(request, base, fds, i, sock, me, inherited)
                children.add(pid)
                answers.append(pid)
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"pids": answers}).encode())


if __name__ == "__main__":
    sys.exit(main())
