"""The local launcher: how replicas start, are watched and are stopped on this machine.

Python replicas fork from the warm fork server (forkserver.py / zygote.py); command nodes are exec'd
with Popen. Either way each replica leads its own process group, its stdout and stderr come back
on pipes, and its group is registered with the orphan guard (guard.py), so nothing it started
outlives the run even if `zflow up` is SIGKILLed. The coordinator only sees `spawn`, `signal`
and the exits this reports; a launcher for replicas started by an engine on other hosts fits
beside this one behind the same two calls.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from zflow import rundir
from zflow.plan import Plan
from zflow.records import field, record
from zflow.runtime import protocol as P
from zflow.runtime.launchers import Spawned, SpawnError, Usage, zflow_python
from zflow.runtime.launchers.forkserver import BATCH, ForkedProc, Zygote
from zflow.runtime.launchers.guard import TOKEN
from zflow.runtime.spec import ReplicaSpec, command_env

OnLine = Callable[[str, str, str], None]  # (replica id, "stdout" | "stderr", line)
#: seconds an unfinished output line waits for its newline before it is shown anyway
PARTIAL_AFTER = 0.25


def make_run_dir(plan: Plan) -> str:
    """The private (0700) directory for ipc endpoints and the control socket."""
    if "<run>" in plan.run_dir or not os.path.isdir(plan.run_dir):
        plan.run_dir = rundir.make()
    os.chmod(plan.run_dir, 0o700)
    return plan.run_dir


@record
class _Proc:
    replica: str
    handle: Any  # subprocess.Popen or spawn.ForkedProc: pid, stdout, stderr, poll(), wait()
    pid: int
    #: (its CPU seconds, when) at the last sample, or (0, its spawn): a new process has used none
    cpu_prev: tuple[float, float]
    bufs: dict[int, bytes] = field(default_factory=dict)
    files: dict[int, Any] = field(default_factory=dict)
    #: fd → when its unfinished last line started waiting for a newline
    partial_since: dict[int, float] = field(default_factory=dict)


#: batches of fork requests a start sends before it reads their answers (LocalLauncher.spawn_many)
IN_FLIGHT = 2
#: a CPU % over less than this is mostly rounding: /proc counts CPU time in 10 ms ticks (a
#: replica restarted just before a sample would read 0 % or 48 % for 75 %)
MIN_CPU_SPAN = 0.5


@record
class _Asked:
    """A Python replica in a batch asked of the fork server: where its answer goes in
    spawn_many's result, and what registering it needs."""

    index: int
    spec: ReplicaSpec
    env: dict[str, str]  # what differs from the batch's shared environment
    argv: list[str]
    endpoints: dict[str, str]


class LocalLauncher:
    """Starts replicas on this machine and watches their pipes and exits."""

    def __init__(self, control_endpoint: str, zygote: Zygote | None = None,
                 run_dir: str | None = None) -> None:
        self.control_endpoint = control_endpoint
        #: where captured output lines go (the coordinator's `output`)
        self.on_line: OnLine = lambda replica, stream, line: None
        self.zygote = zygote if zygote is not None else Zygote()
        self.procs: dict[str, _Proc] = {}  # replica id → its current process
        self.fd_proc: dict[int, tuple[_Proc, str]] = {}
        self.guard: Any = self.zygote.guard  # forked at the start of `zflow up`
        self.zygote.guard = None
        if self.guard is None:
            import subprocess

            self.guard = subprocess.Popen(
                zflow_python("zflow.runtime.launchers.guard"), stdin=subprocess.PIPE,
                start_new_session=True, text=True, bufsize=1,
            )
        if run_dir:  # removed by the guard even if this process is SIGKILLed
            self._guard(f"={run_dir}")
        self._guard(f"@{self.zygote.token}")  # every replica carries it (guard.py)
        # the fork server leads its own group; a forked one is not marked by the token (a
        # process's /proc environ is the one it was exec'd with): it dies with us (PDEATHSIG),
        # and the guard stops its group too
        self._guard(f"+{self.zygote.proc.pid}")
        # a process a replica started that leaves its process group (setsid, a daemon) is
        # orphaned to us, not to init, so the descendant scan below still finds it
        _child_subreaper()
        self.groups: set[int] = set()  # process groups of descendants told to the guard

    # -- starting --------------------------------------------------------------------------
    def spawn(self, spec: ReplicaSpec) -> Spawned:
        env, argv, endpoints = self._prepare(spec)
        try:
            if not os.path.isdir(spec.cwd):
                raise SpawnError(f"working directory {spec.cwd} does not exist")
            if spec.kind == "python" and not self.zygote.dead:
                handle: Any = self.zygote.spawn(env, spec.cwd, spec.title, _preload(spec))
            else:
                import subprocess  # command nodes only: ~4 ms of imports every `zflow up` paid

                handle = subprocess.Popen(
                    argv, cwd=spec.cwd, env=env,
                    stdin=subprocess.PIPE if spec.stdin == "go" else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                    close_fds=True,
                )
        except OSError as e:
            raise _cannot_run(spec, argv, e) from None
        return self._register(spec, handle, endpoints)

    def spawn_many(self, specs: list[ReplicaSpec]) -> list[Spawned | SpawnError]:
        """Start replicas together: the Python ones are asked of the fork server in batches
        (forkserver.BATCH in one message, forked in one go; the environment they share is sent
        once), and a batch is asked before the previous one's pids are read back, so the forks
        overlap the preparation of the next batch. Never more than IN_FLIGHT batches unread:
        the fork server blocks once its answers fill the socket, and stops reading requests,
        which then block us (500 replicas asked one by one hung at the 278th)."""
        out: list[Spawned | SpawnError | None] = []
        asked: list[tuple[list[_Asked], list[tuple[int, int]]]] = []
        batch: list[_Asked] = []
        base = dict(os.environ)  # os.environ decodes every value on each read
        room = self.zygote.room - len(json.dumps(base))
        size = 0  # the JSON bytes of `batch`

        def collect() -> None:  # the oldest batch asked
            entries, pipes = asked.pop(0)
            try:
                got: list[Any] = self.zygote.collect(pipes)
            except OSError as e:
                got = [e] * len(entries)
            for e, g in zip(entries, got, strict=True):
                out[e.index] = (_cannot_run(e.spec, e.argv, g) if isinstance(g, OSError)
                                else self._register(e.spec, g, e.endpoints))

        def ask() -> None:
            nonlocal batch, size
            entries, batch, size = batch, [], 0
            if not entries:
                return
            if len(asked) >= IN_FLIGHT:
                collect()
            try:
                pipes = self.zygote.request(
                    [(e.env, e.spec.cwd, e.spec.title) for e in entries], base,
                    preload=[_preload(e.spec) for e in entries])
            except OSError:  # refused (the fork server gone, a message too long, no
                # descriptors left): one by one, each replica's start says why it failed
                while asked:
                    collect()
                for e in entries:
                    out[e.index] = self._spawn_or_error(e.spec)
                return
            asked.append((entries, pipes))

        try:
            for spec in specs:
                if spec.kind == "python" and not self.zygote.dead and os.path.isdir(spec.cwd):
                    env, argv, endpoints = self._prepare(spec, base)
                    own = {k: v for k, v in env.items() if base.get(k) != v}
                    more = len(json.dumps([own, spec.cwd, spec.title])) + 30
                    if batch and (len(batch) >= BATCH or size + more > room):
                        ask()
                    batch.append(_Asked(len(out), spec, own, argv, endpoints))
                    out.append(None)
                    size += more
                    continue
                if spec.kind == "python":  # its answer must not be taken for an earlier one's
                    ask()
                    while asked:
                        collect()
                out.append(self._spawn_or_error(spec))
            ask()
        finally:  # what was asked is forked: it is known, whatever went wrong meanwhile
            while asked:
                collect()
        return out  # type: ignore[return-value]

    def _spawn_or_error(self, spec: ReplicaSpec) -> Spawned | SpawnError:
        try:
            return self.spawn(spec)
        except SpawnError as e:
            return e

    def _prepare(self, spec: ReplicaSpec, base: dict[str, str] | None = None,
                 ) -> tuple[dict[str, str], list[str], dict[str, str]]:
        """The replica's environment (ours, or `base`: a copy of it made once for many
        replicas), argv and the endpoints fixed for it here."""
        env = dict(os.environ if base is None else base)
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        env["ZFLOW_PARENT_PID"] = str(os.getpid())
        env[TOKEN] = self.zygote.token
        endpoints: dict[str, str] = {}
        if spec.kind == "python":
            env["PYTHONPATH"] = os.pathsep.join(
                [spec.base_dir] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
            env[P.ENV_CONTROL] = self.control_endpoint
            env[P.ENV_SPEC] = spec.to_json()
            argv = zflow_python("zflow.runtime.replica.main")
        else:
            # a command node binds by itself, so zflow must name a tcp port up front
            for s in spec.sockets:
                if s.mode == "bind" and s.bind_endpoint and s.bind_endpoint.endswith(":*"):
                    s.bind_endpoint = s.bind_endpoint[:-1] + str(_free_port())
                if s.mode == "bind" and s.bind_endpoint:
                    in_use = _in_use(s.bind_endpoint)
                    if in_use:
                        # checked before it starts: a program failing to bind would only
                        # crash-loop, and the run would end with exit 1 instead of 3
                        raise SpawnError(f"socket {s.name}: cannot bind {s.bind_endpoint}: "
                                         f"{in_use}\n  hint: another process is using it; stop "
                                         "it or choose another endpoint (`bind: tcp` lets the "
                                         "OS pick a port)")
                    endpoints[s.name] = s.bind_endpoint
            env.update(command_env(spec))
            # `python3` in a command node is the interpreter zflow runs on (its venv's)
            env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
            argv = list(spec.argv or [])
        return env, argv, endpoints

    def _register(self, spec: ReplicaSpec, handle: Any, endpoints: dict[str, str]) -> Spawned:
        proc = _Proc(spec.id, handle, handle.pid, (0.0, time.monotonic()))
        self.procs[spec.id] = proc
        self._guard(f"+{proc.pid}")
        for stream, pipe in (("stdout", handle.stdout), ("stderr", handle.stderr)):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self.fd_proc[fd] = (proc, stream)
            proc.bufs[fd] = b""
            proc.files[fd] = pipe
        return Spawned(proc.pid, endpoints)

    def signal(self, replica: str, sig: int, group: bool = True) -> None:
        proc = self.procs.get(replica)
        if proc is None:
            return
        if group:
            _killpg(proc.pid, sig)
            return
        try:
            os.kill(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def release(self, replica: str) -> None:
        proc = self.procs.get(replica)
        pipe = getattr(proc.handle, "stdin", None) if proc is not None else None
        if pipe is None:
            return
        try:
            pipe.write(b"\n")
            pipe.close()
        except OSError:
            pass  # it exited, or stopped reading: nothing to release

    # -- watching ----------------------------------------------------------------------------
    def fds(self) -> list[int]:
        """Pipes to poll for output."""
        return list(self.fd_proc)

    def read(self, fd: int) -> bool:
        """Take what `fd` has; False once it is closed (unregister it)."""
        proc, stream = self.fd_proc[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            del self.fd_proc[fd]
            rest = proc.bufs.pop(fd, b"")
            if rest:
                self._line(proc, stream, rest)
            proc.files.pop(fd).close()
            return False
        buf = proc.bufs[fd] + data
        *lines, proc.bufs[fd] = buf.split(b"\n")
        for line in lines:
            self._line(proc, stream, line)
        if not proc.bufs[fd]:
            proc.partial_since.pop(fd, None)
        elif lines or fd not in proc.partial_since:
            proc.partial_since[fd] = time.monotonic()
        return True

    def flush_partial(self, now: float, after: float = PARTIAL_AFTER) -> None:
        """Output without a newline (progress dots, a prompt) is shown once it has waited
        `after` seconds, instead of only when the process exits."""
        for fd, (proc, stream) in list(self.fd_proc.items()):
            since = proc.partial_since.get(fd)
            if since is not None and now - since >= after and proc.bufs.get(fd):
                rest, proc.bufs[fd] = proc.bufs[fd], b""
                del proc.partial_since[fd]
                self._line(proc, stream, rest)

    def _line(self, proc: _Proc, stream: str, raw: bytes) -> None:
        self.on_line(proc.replica, stream, raw.decode("utf-8", errors="replace").rstrip("\r"))

    def reap(self) -> list[tuple[str, int, Usage | None]]:
        """Exits since the last call, as (replica id, code, what it used); their output is
        taken first and whatever the replica started is killed with its process group."""
        out = []
        for rid, proc in list(self.procs.items()):
            code, usage = _exited(proc.handle)
            if code is None:
                continue
            del self.procs[rid]
            _killpg(proc.pid, signal.SIGKILL)
            self._guard(f"-{proc.pid}")
            for fd in [fd for fd, (p, _) in self.fd_proc.items() if p is proc]:
                self._drain(fd)
            out.append((rid, code, usage))
        return out

    def _drain(self, fd: int) -> None:
        while fd in self.fd_proc:
            if not self.read(fd):
                return
            if not _readable(fd):
                # the pipe may still be held open by a grandchild; take what is there
                return

    def endpoints_accept(self, endpoints: dict[str, str]) -> bool:
        """A command node is bound once each of its bind endpoints accepts connections."""
        return endpoints_accept(endpoints)

    def connected(self, endpoints: dict[str, str], expected: dict[str, int]) -> bool:
        """Each bind endpoint has at least the expected connections (counted in /proc/net)."""
        return all(connections(endpoints[name]) >= n for name, n in expected.items()
                   if n and name in endpoints)

    def sample(self, now: float) -> list[tuple[str, int, float | None, int | None, float | None]]:
        """(replica id, pid, CPU %, RSS bytes, CPU seconds so far) of every running replica,
        from /proc."""
        out = []
        for rid, p in self.procs.items():
            cpu_t, rss = _proc_usage(p.pid)
            if cpu_t is None:
                continue
            used, since = p.cpu_prev
            if now - since < MIN_CPU_SPAN:
                out.append((rid, p.pid, None, rss, cpu_t))  # too short for a %: the next one
                continue
            p.cpu_prev = (cpu_t, now)
            out.append((rid, p.pid, 100.0 * (cpu_t - used) / (now - since), rss, cpu_t))
        return out

    # -- the fork server -----------------------------------------------------------------------
    def zygote_fd(self) -> int | None:
        return None if self.zygote.dead else self.zygote.fileno()

    def pump(self) -> None:
        """Exit reports from the fork server; raises OSError when it died."""
        try:
            self.zygote.pump()
        except OSError:
            self.zygote.dead = True
            raise

    # -- the end -------------------------------------------------------------------------------
    def adopt(self) -> None:
        """Find every descendant (in /proc) whose process group the guard does not know yet —
        one that left its replica's group — and tell the guard; reap adopted orphans."""
        me = os.getpid()
        known = {self.guard.pid, self.zygote.proc.pid} | {
            p.pid for p in self.procs.values() if not isinstance(p.handle, ForkedProc)}
        for pgid in self._escaped_groups():
            if pgid not in self.groups:
                self.groups.add(pgid)
                self._guard(f"+{pgid}")
        for pid in _children(me) - known:  # orphans we adopted as subreaper: reap the dead
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.handle.poll() is None:
                _killpg(proc.pid, signal.SIGKILL)
                proc.handle.wait()
        # whatever the replicas left behind in groups of their own (found now: no stale ids)
        for pgid in self._escaped_groups():
            _killpg(pgid, signal.SIGKILL)
        # reap what was killed (bounded: a child in our own group was not signalled)
        deadline = time.monotonic() + 1.0
        left = _children(os.getpid()) - {self.guard.pid, self.zygote.proc.pid}
        while left and time.monotonic() < deadline:
            for pid in list(left):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        left.discard(pid)
                except ChildProcessError:
                    left.discard(pid)
            if left:
                time.sleep(0.01)

    def _escaped_groups(self) -> set[int]:
        """Process groups of live descendants that are not a replica's, nor ours, nor the fork
        server's or the guard's."""
        ours = {os.getpgid(0), self.zygote.proc.pid, self.guard.pid} | {
            p.pid for p in self.procs.values()}
        return {pgid for _, pgid in _descendants(os.getpid(), exclude=self.guard.pid)
                if pgid not in ours}

    def close(self) -> None:
        # the fork server and the guard leave side by side: the fork server as its socket
        # closes, the guard once it has looked for anything left. Its group is struck off the
        # guard's list first (its number stays ours until we reap it below). An exec'd fork server
        # carries the run's token, and the guard may stop it: it is leaving anyway
        self.zygote.shut()
        self._guard(f"-{self.zygote.proc.pid}")
        try:
            self.guard.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self.zygote.close()
        self.guard.wait()

    def _guard(self, line: str) -> None:
        try:
            self.guard.stdin.write(line + "\n")  # type: ignore[union-attr]
        except OSError:
            pass


def _preload(spec: ReplicaSpec) -> dict[str, str] | None:
    """`preload: true`: the module its node server imports, and the key that node server is
    kept under: a new one when the node's environment or working directory changes."""
    module = (spec.target or "").partition(":")[0] if spec.preload else ""
    if not module:
        return None
    return {"module": module, "key": json.dumps([spec.node, module, spec.cwd, spec.base_dir,
                                                 sorted(spec.env.items())])}


def _cannot_run(spec: ReplicaSpec, argv: list[str], e: OSError) -> SpawnError:
    what = argv[0]
    hint = "" if os.path.sep in what or spec.kind == "python" else " (not found on PATH)"
    return SpawnError(f"cannot run {what!r}: {e.strerror or e}{hint}")


def _killpg(pid: int | None, sig: int) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _readable(fd: int) -> bool:
    r, _, _ = select.select([fd], [], [], 0)
    return bool(r)


def _child_subreaper() -> None:
    """Linux: orphaned descendants are reparented to this process instead of init."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid → (ppid, pgid) of every process, from /proc."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] not in (b"Z", b"X"):
                out[int(name)] = (int(fields[1]), int(fields[2]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _descendants(root: int, exclude: int) -> list[tuple[int, int]]:
    """(pid, pgid) of every live descendant of `root`, not under `exclude`."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [c for c in children.get(root, []) if c != exclude]
    while todo:
        pid = todo.pop()
        out.append((pid, table[pid][1]))
        todo.extend(children.get(pid, []))
    return out


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(x) for x in f.read().split()}
    except OSError:
        return set()


def _in_use(endpoint: str) -> str | None:
    """Why a command node could not bind `endpoint` now (None when it can): a tcp port taken,
    or an ipc path something is listening on."""
    import socket as pysocket  # command nodes only: not on `zflow up`'s path

    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        host = "0.0.0.0" if host in ("*", "") else host.strip("[]")
        family = pysocket.AF_INET6 if ":" in host else pysocket.AF_INET
        try:
            with pysocket.socket(family) as s:
                s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)  # as libzmq does
                s.bind((host, int(port)))
        except OSError as e:
            return e.strerror or str(e)
        except ValueError:
            return None
        return None
    if endpoint.startswith("ipc://") and os.path.exists(endpoint[6:]):
        try:
            with pysocket.socket(pysocket.AF_UNIX) as s:
                s.settimeout(0.05)
                s.connect(endpoint[6:])
        except OSError:
            return None  # a stale file: libzmq binds over it
        return "a process is already listening on it"
    return None


def endpoints_accept(endpoints: dict[str, str]) -> bool:
    """Each endpoint accepts connections (an ipc path exists; a tcp port answers on loopback for
    a wildcard bind): a command node is listening. Also used by a remote command node's
    wrapper, on its own host."""
    import socket as pysocket  # command nodes only: not on `zflow up`'s path

    for ep in endpoints.values():
        if ep.startswith("ipc://"):
            if not os.path.exists(ep[6:]):
                return False
        elif ep.startswith("tcp://"):
            host, _, port = ep[6:].rpartition(":")
            host = "127.0.0.1" if host in ("*", "0.0.0.0") else host.strip("[]")
            try:
                with pysocket.create_connection((host, int(port)), timeout=0.05):
                    pass
            except (OSError, ValueError):
                return False
    return True


def connections(endpoint: str) -> int:
    """Established connections to a local listening endpoint, from /proc/net (Linux): tcp by
    local port, ipc by path (accepted unix sockets carry the listener's path)."""
    count = 0
    try:
        if endpoint.startswith("tcp://"):
            port = int(endpoint.rpartition(":")[2])
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                with open(table) as f:
                    for line in f.readlines()[1:]:
                        p = line.split()
                        if p[3] == "01" and int(p[1].rpartition(":")[2], 16) == port:
                            count += 1
        elif endpoint.startswith("ipc://"):
            path = endpoint[6:]
            with open("/proc/net/unix") as f:
                for line in f.readlines()[1:]:
                    p = line.split()
                    if len(p) >= 8 and p[5] == "03" and p[7] == path:
                        count += 1
    except (OSError, ValueError, IndexError):
        return 0
    return count


def _free_port() -> int:
    import socket as pysocket  # command nodes only: not on `zflow up`'s path

    with pysocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _exited(handle: Any) -> tuple[int | None, Usage | None]:
    """A replica's exit code and what it used, or (None, None) while it runs. A fork server's
    replica comes with its usage; a command is waited for here with wait4 for the same."""
    if isinstance(handle, ForkedProc):
        return handle.poll(), handle.usage
    if handle.returncode is not None:
        return handle.returncode, None
    try:
        pid, status, ru = os.wait4(handle.pid, os.WNOHANG)
    except ChildProcessError:  # reaped by someone else: Popen says what it can
        return handle.poll(), None
    if pid == 0:
        return None, None
    handle.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    # its CPU time is its own; its ru_maxrss is at least ours (kept across fork and exec): its
    # peak is what the samples saw
    return handle.returncode, Usage(ru.ru_utime + ru.ru_stime, None)


def _proc_usage(pid: int | None) -> tuple[float | None, int | None]:
    """CPU seconds and RSS bytes from /proc (Linux); (None, None) when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None, None
    return (int(fields[11]) + int(fields[12])) / _CLK, rss_pages * _PAGE
