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

`preload: true` (an entry's "preload": {"module", "key"}): the zygote forks a *node server*
for that node, a process of its own that imports the module as the node's replica would (its
environment, working directory and PYTHONPATH; what it prints goes to that replica's pipes), then
serves that node's forks by the same protocol, reaping and reporting its replicas; the zygote
passes its exits on. Whatever the import does (threads, environment, the modules it imports)
stays in that node's processes, as if each replica had imported the module itself (but zflow's
SIGTERM handler replaces one it sets). A module that fails to import, or takes over
PRELOAD_TIMEOUT, leaves those replicas to import it themselves; a node server that dies takes its
replicas with it (reported dead), and the next start of the node gets a new one. A new key (the
node's environment or working directory changed under `--watch`) or a changed module file gets a
new node server; the old one leaves once its replicas have.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time
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


def _enter(inherited: dict[str, str], env: dict[str, str], cwd: str) -> None:
    """Take on a replica's environment, import path and working directory (a replica, or the
    node server that imports its module as it would)."""
    become(os.environ, inherited, env)
    for path in reversed([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]):
        sys.path.insert(0, path)
    os.chdir(cwd)


def _child(request: dict[str, Any], base: dict[str, str], fds: list[int], mine: int,
           sock: socket.socket, parent: int, inherited: dict[str, str],
           delta: tuple[dict[str, str], list[str]] | None = None) -> None:
    """In the forked child: become the replica described by `request` (its environment `base`
    updated with its own; its pipes fds[2*mine] and fds[2*mine + 1], the others being its batch
    mates'), never return. `inherited` is the fork server's environment, which every child
    starts with."""
    code = 1
    gc.enable()  # the replica collects its own garbage; the zygote's objects stay frozen
    try:
        out_fd, err_fd = fds[2 * mine], fds[2 * mine + 1]
        env = {**base, **request["env"]}
        if delta is not None:  # a node server: what its module's import did to the environment
            env.update(delta[0])
            for k in delta[1]:
                env.pop(k, None)
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
        _enter(inherited, env, request["cwd"])
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


#: seconds a node server may take to import its module (zflow waits for the answer meanwhile);
#: ZFLOW_PRELOAD_TIMEOUT in zflow's environment changes it
PRELOAD_TIMEOUT = 60.0


def _preload_timeout() -> float:
    try:
        t = float(os.environ.get("ZFLOW_PRELOAD_TIMEOUT", PRELOAD_TIMEOUT))
    except ValueError:
        return PRELOAD_TIMEOUT
    if not t > 0:  # nan, 0 or negative
        return PRELOAD_TIMEOUT
    return min(t, 86400.0)  # inf: a day (select takes no more)


def _exit_message(pid: int, status: int, usage: Any) -> bytes:
    return json.dumps({
        "exit": pid, "code": os.waitstatus_to_exitcode(status),
        "cpu": round(usage.ru_utime + usage.ru_stime, 6),
        "maxrss": usage.ru_maxrss * 1024}).encode()  # Linux counts it in KiB


def _stamp(path: str | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


class _NodeServer:
    """The zygote's handle on one node server: its pid, its socket, its module's file as it
    was imported, and the replicas it forked that have not exited yet."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.path: str | None = None
        self.stamp: tuple[int, int] | None = None
        self.live: set[int] = set()
        self.retired = False
        #: the import's CPU seconds, counted in the exit of the first replica it forked
        self.import_cpu = 0.0
        self.first: int | None = None
        self.timed_out = False  # its import took too long: the node is not preloaded again


def _say(fd: int, line: str) -> None:
    try:
        os.write(fd, f"zflow: {line}\n".encode())
    except OSError:
        pass


def _node_server(sock: socket.socket, zygote: int, inherited: dict[str, str]) -> None:
    """In a node server: import the module of the first request, say so, then serve forks
    (`main`) with the environment the import left; never return."""
    code = 0
    try:
        if replica._PRCTL is not None:
            replica._PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the zygote
        if os.getppid() != zygote:
            os._exit(1)
        data, fds, _, _ = socket.recv_fds(sock, MAX, 2 * BATCH)
        if not data:
            os._exit(0)
        batch = json.loads(data)
        module, first = batch["module"], batch["spawn"][0]
        env0 = {**(batch.get("base") or {}), **first["env"]}
        # before the environment is rewritten (see _child): `zflow: squares worker fork server`
        setproctitle(f"{(first.get('title') or 'zflow: node').rpartition('.')[0]} fork server")
        _enter(inherited, env0, first["cwd"])
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        signal.set_wakeup_fd(-1)  # the zygote's: its pipe is closed here, its number reused
        for sig in (signal.SIGCHLD, signal.SIGTERM):  # as a replica imports it (_child)
            signal.signal(sig, signal.SIG_DFL)
        threads = len(os.listdir("/proc/self/task"))
        cpu0 = os.times()
        gc.enable()
        try:
            import importlib

            imported = importlib.import_module(module)
        except BaseException as e:  # noqa: BLE001 - each replica imports it and says why
            _say(2, f"preloading {module!r} failed ({type(e).__name__}: {e}); each replica "
                    "imports it itself")
            sock.send(json.dumps({"failed": True}).encode())
            os._exit(0)
        gc.disable()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        started = len(os.listdir("/proc/self/task")) - threads
        if started > 0:
            _say(2, f"importing {module!r} started {started} thread(s); the replicas forked "
                    "after it do not have them (libraries with fork handlers cope, others can "
                    "hang): if replicas hang at start, remove `preload`")
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        now = dict(os.environ)
        delta = ({k: v for k, v in now.items() if env0.get(k) != v},
                 [k for k in env0 if k not in now])
        path = getattr(imported, "__file__", None)
        cpu1 = os.times()
        sock.send(json.dumps({"ready": path, "stamp": _stamp(path), "cpu": round(
            cpu1.user + cpu1.system - cpu0.user - cpu0.system, 6)}).encode())
        code = main(sock.detach(), first=(batch, fds), delta=delta)
    finally:
        os._exit(code)


def main(fd: int | None = None, *, first: tuple[dict, list[int]] | None = None,
         delta: tuple[dict[str, str], list[str]] | None = None) -> int:
    """Serve on the socket `fd` (argv[1] when exec'd) until the supervisor closes it.

    In a node server (`first`: the request it was started with, `delta`: what its module's
    import did to the environment) the peer is the zygote, and `{"retire": true}` tells it to
    leave once its replicas have."""
    if first is None:
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
    servers: dict[str, _NodeServer] = {}  # by key; a node server never has any
    by_sock: dict[socket.socket, _NodeServer] = {}
    by_pid: dict[int, _NodeServer] = {}
    failed: set[str] = set()
    retiring = False
    pending = first
    while True:
        if retiring and not children:
            os._exit(0)
        if pending is None:
            ready, _, _ = select.select([sock, r, *by_sock], [], [])
        else:
            ready = []
        if r in ready:
            try:
                os.read(r, 512)
            except BlockingIOError:
                pass
        for ns in [by_sock[x] for x in ready if x in by_sock]:
            _relay(ns, sock, by_sock)
        while children or by_pid:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in by_pid:  # a node server left: what it had not reported died with it
                ns = by_pid.pop(pid)
                _relay(ns, sock, by_sock)
                _gone(ns, sock, by_sock, servers)
                continue
            children.discard(pid)
            try:
                sock.send(_exit_message(pid, status, usage))
            except OSError:  # the supervisor closed its end: it is gone or going
                os._exit(0)
        if pending is not None or sock in ready:
            if pending is not None:
                (batch, fds), pending = pending, None
            else:
                try:
                    data, fds, _, _ = socket.recv_fds(sock, MAX, 2 * BATCH)
                except OSError:
                    data, fds = b"", []
                if not data:  # the supervisor is gone: nothing to tear down, leave at once
                    os._exit(0)
                batch = json.loads(data)
                if batch.get("retire"):
                    retiring = True
                    continue
            base = batch.get("base") or {}
            spawn = batch["spawn"]
            answers: list[Any] = [None] * len(spawn)
            groups: dict[str, list[int]] = {}
            for i, request in enumerate(spawn):
                pre = request.get("preload")
                if pre and pre["key"] not in failed:
                    groups.setdefault(pre["key"], []).append(i)
            # node servers import their modules side by side, and while the rest is forked here
            asked: list[tuple[str, list[int], _NodeServer, float]] = []
            for key, idxs in groups.items():
                got = _ask_node_server(key, idxs, spawn, base, fds, sock, servers, by_sock,
                                       by_pid, inherited, me, (r, w))
                if got is None:
                    failed.add(key)
                else:
                    asked.append((key, idxs, *got))
            theirs = {i for _, idxs, _, _ in asked for i in idxs}

            def fork_here(i: int, spawn: list[dict] = spawn, base: dict[str, str] = base,
                          fds: list[int] = fds) -> Any:
                try:
                    pid = os.fork()
                except OSError as e:  # no more processes, or no memory: this one says why
                    return {"error": f"cannot fork: {e.strerror or e}"}
                if pid == 0:
                    os.close(r)
                    os.close(w)
                    for ns in by_sock.values():
                        ns.sock.close()
                    _child(spawn[i], base, fds, i, sock, me, inherited, delta)
                children.add(pid)
                return pid

            gc.freeze()  # what this batch inherits is never walked by its collectors
            for i in range(len(spawn)):
                if i not in theirs:
                    answers[i] = fork_here(i)
            for key, idxs, ns, deadline in asked:
                pids = _node_answer(ns, deadline, spawn[idxs[0]]["preload"]["module"],
                                    fds[2 * idxs[0] + 1], sock, servers)
                if pids is None:  # each imports the module itself
                    if ns.timed_out:  # not again: each start would wait that long
                        failed.add(key)
                    pids = [fork_here(i) for i in idxs]
                for i, a in zip(idxs, pids, strict=True):
                    answers[i] = a
            for fd in fds:
                os.close(fd)
            try:
                sock.send(json.dumps({"pids": answers}).encode())
            except OSError:  # the supervisor is gone: its replicas die with this process
                os._exit(0)


def _relay(ns: _NodeServer, sock: socket.socket, by_sock: dict) -> None:
    """Pass a node server's exit reports on to the supervisor; note when it is gone."""
    while True:
        try:
            data = ns.sock.recv(MAX, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            by_sock.pop(ns.sock, None)
            return
        msg = json.loads(data)
        if "exit" in msg:
            _pass_exit(ns, msg, data, sock)


def _closed(sock: socket.socket) -> bool:
    """The supervisor closed its end, whatever it sent before that is still queued."""
    p = select.poll()
    p.register(sock, select.POLLRDHUP | select.POLLHUP)
    return any(ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in p.poll(0))


def _pass_exit(ns: _NodeServer, msg: dict, data: bytes, sock: socket.socket) -> None:
    """Pass a node server's exit report on to the supervisor. The first replica it forked
    carries the import's CPU: what that replica would have spent importing the module."""
    ns.live.discard(msg["exit"])
    if msg["exit"] == ns.first and ns.import_cpu and msg.get("cpu") is not None:
        msg["cpu"] = round(msg["cpu"] + ns.import_cpu, 6)
        data = json.dumps(msg).encode()
    try:
        sock.send(data)
    except OSError:  # the supervisor closed its end: it is gone or going
        os._exit(0)


def _gone(ns: _NodeServer, sock: socket.socket, by_sock: dict,
          servers: dict[str, _NodeServer]) -> None:
    """A node server exited: its replicas died with it (PDEATHSIG); say so for each."""
    by_sock.pop(ns.sock, None)
    ns.sock.close()
    for key in [k for k, v in servers.items() if v is ns]:
        del servers[key]
    for pid in sorted(ns.live):
        try:
            sock.send(json.dumps({"exit": pid, "code": -9}).encode())
        except OSError:
            os._exit(0)
    ns.live.clear()


def _ask_node_server(key: str, idxs: list[int], spawn: list[dict], base: dict[str, str],
                     fds: list[int], sock: socket.socket, servers: dict[str, _NodeServer],
                     by_sock: dict, by_pid: dict, inherited: dict[str, str],
                     me: int, wakeup: tuple[int, int]) -> tuple[_NodeServer, float] | None:
    """Send these entries to the node server of `key` (started, or started anew, here): it,
    and the deadline of its import (0: imported already); None when it cannot be asked."""
    ns = servers.get(key)
    if ns is not None and (ns.sock not in by_sock or _stamp(ns.path) != ns.stamp):
        _retire(ns, servers)  # the module changed since (or its server is gone): a new one
        ns = None
    deadline = 0.0
    if ns is None:
        node = json.loads(key)[0]
        for other in [v for k, v in servers.items() if json.loads(k)[0] == node]:
            _retire(other, servers)  # the node's env or cwd changed: its old server goes
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            return None
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            ours.close()
            sock.close()
            for x in list(by_sock):
                x.close()
            for fd in (*fds, *wakeup):
                os.close(fd)
            _node_server(theirs, me, inherited)
        theirs.close()
        ns = _NodeServer(pid, ours)
        servers[key], by_sock[ours], by_pid[pid] = ns, ns, ns
        deadline = time.monotonic() + _preload_timeout()
    mine = [fd for i in idxs for fd in (fds[2 * i], fds[2 * i + 1])]
    entries = [{k: v for k, v in spawn[i].items() if k != "preload"} for i in idxs]
    module = spawn[idxs[0]]["preload"]["module"]
    try:
        socket.send_fds(ns.sock, [json.dumps({"base": base, "spawn": entries,
                                              "module": module}).encode()], mine)
    except OSError:
        _retire(ns, servers)
        return None
    return ns, deadline


def _node_answer(ns: _NodeServer, deadline: float, module: str, err_fd: int,
                 sock: socket.socket, servers: dict[str, _NodeServer]) -> list[Any] | None:
    """The node server's answer to what `_ask_node_server` sent (its exit reports meanwhile
    passed on); None when it has none: it failed, took too long or died."""
    try:
        while True:
            # once imported, forking takes what it takes (a large heap, a loaded machine), as
            # in the fork server itself: only the import has a deadline
            timeout = max(0.0, deadline - time.monotonic()) if deadline else 0.2
            if not select.select([ns.sock], [], [], min(timeout, 0.2))[0]:
                if _closed(sock):  # the supervisor is gone: leave at once, as in main
                    os._exit(0)
                if not deadline or timeout > 0.2:
                    continue
                ns.timed_out = True
                _say(err_fd, f"preloading {module!r} took over {_preload_timeout():g} s; "
                             "each replica imports it itself")
                os.kill(ns.pid, signal.SIGKILL)
                _retire(ns, servers)
                return None
            data = ns.sock.recv(MAX)
            if not data:
                raise OSError("the node server exited")
            msg = json.loads(data)
            if "exit" in msg:
                _pass_exit(ns, msg, data, sock)
            elif msg.get("failed"):
                _retire(ns, servers)
                return None
            elif "ready" in msg:
                ns.path, ns.stamp = msg["ready"], tuple(msg["stamp"]) if msg["stamp"] else None
                ns.import_cpu = float(msg.get("cpu") or 0.0)
                deadline = 0.0
            else:
                pids = msg["pids"]
                ns.live.update(p for p in pids if isinstance(p, int))
                if ns.first is None:
                    ns.first = next((p for p in pids if isinstance(p, int)), None)
                return pids
    except (OSError, ValueError, KeyError):
        _retire(ns, servers)
        return None


def _retire(ns: _NodeServer, servers: dict[str, _NodeServer]) -> None:
    """No more forks from this node server: it leaves once its replicas have (still reaped
    and reported meanwhile)."""
    for key in [k for k, v in servers.items() if v is ns]:
        del servers[key]
    if not ns.retired:
        ns.retired = True
        try:
            ns.sock.send(json.dumps({"retire": True}).encode())
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
