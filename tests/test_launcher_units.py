"""The local launcher without processes: how it talks to the fork server when it starts many."""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zflow.plan import build_plan
from zflow.runtime.launchers import Spawned
from zflow.runtime.launchers.forkserver import BATCH, BATCH_BYTES
from zflow.runtime.launchers.local import IN_FLIGHT, LocalLauncher
from zflow.runtime.spec import build_replica_spec
from zflow.spec import load

SQUARES = Path(__file__).resolve().parent.parent / "topologies" / "squares.yaml"


class FakeZygote:
    """The fork server's client as `spawn_many` uses it. It answers batches in order, and at
    most `unanswered` batches may wait so: the real fork server blocks once its answers fill
    the socket, and a launcher that kept asking would then block for ever."""

    def __init__(self, unanswered: int) -> None:
        self.dead = False
        self.token = "t0"
        self.guard = None
        self.room = BATCH_BYTES  # the bytes a request may take, as Zygote.room
        self.unanswered = unanswered
        self.waiting: list[list[tuple[int, int]]] = []
        self.most = 0
        self.pid = 1000
        self.batches: list[tuple[int, int]] = []  # (replicas, bytes of the message)
        self.envs: list[dict[str, str]] = []  # each replica's whole environment

    def request(self, batch: list[tuple[dict[str, str], str, str]],
                base: dict[str, str] | None = None,
                preload: list[dict[str, str] | None] | None = None) -> list[tuple[int, int]]:
        assert len(self.waiting) < self.unanswered, "the fork server's socket is full: a deadlock"
        assert preload is None or len(preload) == len(batch)
        import json

        message = json.dumps({"base": base or {}, "spawn": [
            {"env": e, "cwd": c, "title": t} for e, c, t in batch]}).encode()
        self.batches.append((len(batch), len(message)))
        self.envs += [{**(base or {}), **env} for env, _, _ in batch]
        pipes = []
        for _ in batch:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            os.close(out_w)
            os.close(err_w)
            pipes.append((out_r, err_r))
        self.waiting.append(pipes)
        self.most = max(self.most, len(self.waiting))
        return pipes

    def collect(self, pipes: list[tuple[int, int]]) -> list[Any]:
        assert self.waiting and self.waiting[0] == pipes, "answers come in the order asked"
        self.waiting.pop(0)
        out = []
        for out_r, err_r in pipes:
            self.pid += 1
            out.append(SimpleNamespace(pid=self.pid, stdout=os.fdopen(out_r, "rb"),
                                       stderr=os.fdopen(err_r, "rb")))
        return out


def _launcher(zygote: FakeZygote) -> LocalLauncher:
    launcher = LocalLauncher.__new__(LocalLauncher)  # no guard process, no subreaper
    launcher.control_endpoint = "ipc:///nonexistent/control"
    launcher.zygote = zygote  # type: ignore[assignment]
    launcher.procs = {}
    launcher.fd_proc = {}
    launcher.groups = set()
    launcher.guard = SimpleNamespace(stdin=io.StringIO())
    return launcher


def test_starting_many_replicas_never_leaves_more_requests_unanswered_than_fit(
        tmp_path: Path, monkeypatch) -> None:
    res = load(str(SQUARES), env={}, scale=["worker=300"])
    assert res.ok
    plan = build_plan(res.topology, str(SQUARES), run_dir=str(tmp_path / "run"))
    specs = [build_replica_spec(plan, n.name, i, 1) for n in plan.nodes.values()
             for i in range(n.replicas)]
    # a big environment: the batches must stay within a message's bytes as well as its count
    monkeypatch.setenv("ZFLOW_TEST_BIG", "x" * 20_000)
    zygote = FakeZygote(unanswered=IN_FLIGHT)
    launcher = _launcher(zygote)
    try:
        got = launcher.spawn_many(specs)
    finally:
        for proc in launcher.procs.values():
            for f in proc.files.values():
                f.close()
    assert len(got) == 302 and all(isinstance(g, Spawned) for g in got)
    assert [g.pid for g in got] == list(range(1001, 1303))  # each spec its own answer, in order
    assert len(zygote.batches) > IN_FLIGHT  # several batches, overlapped, and bounded:
    assert 1 < zygote.most <= IN_FLIGHT and zygote.waiting == []
    assert all(n <= BATCH and size <= BATCH_BYTES for n, size in zygote.batches), zygote.batches
    assert sum(n for n, _ in zygote.batches) == 302
    # the environment shared once per batch, and each replica's own, make its whole one
    for spec, env in zip(specs, zygote.envs, strict=True):
        assert env == launcher._prepare(spec, dict(os.environ))[0]
    told = launcher.guard.stdin.getvalue().split()
    assert told == [f"+{pid}" for pid in range(1001, 1303)]  # every group is guarded


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polled"])
def test_a_forked_fork_servers_wait_keeps_its_timeout(pidfd: bool, monkeypatch) -> None:
    """close() waits 5 s for the fork server, then kills it: without pidfd_open (Linux < 5.3,
    seccomp) the wait is polled, never unbounded."""
    from zflow.runtime.launchers import Forked

    if not pidfd:
        def refused(pid: int) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", refused)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the stand-in fork server: leaves when its pipe closes
        os.close(w)
        os.read(r, 1)
        os._exit(3)
    os.close(r)
    server = Forked(pid)
    try:
        assert server.wait(timeout=0.05) is None  # still serving
        os.close(w)
        assert server.wait(timeout=10) == 3
        assert server.wait(timeout=0) == 3  # reaped once, remembered
    finally:
        if server.returncode is None:
            server.kill()
            server.wait()


def test_the_guard_removes_a_run_directory_flat_or_not(tmp_path: Path, monkeypatch) -> None:
    """At its end the guard removes the run directory (ipc socket files, flat) itself, or with
    shutil when it holds more; a directory already removed is no error."""
    import socket as pysocket

    from zflow.runtime.launchers import guard

    flat = tmp_path / "zflow-flat0001"
    flat.mkdir()
    (flat / "control").write_text("")
    unix = pysocket.socket(pysocket.AF_UNIX)
    unix.bind(str(flat / "worker.0.work"))  # what an ipc endpoint leaves
    unix.close()
    nested = tmp_path / "zflow-nest0001"
    (nested / "sub").mkdir(parents=True)
    (nested / "sub" / "f").write_text("x")
    monkeypatch.setattr(guard.signal, "signal", lambda *a: None)  # not this test's handlers
    for d in (flat, nested, tmp_path / "zflow-gone0001"):
        assert guard.main([f"={d}\n"]) == 0
        assert not d.exists()
    kept = tmp_path / "other"  # only zflow's run directories, whatever it is told
    kept.mkdir()
    guard.main([f"={kept}\n"])
    assert kept.exists()


def _in_a_fresh_interpreter(code: str, **env: str) -> list[str]:
    """Run `code` where tempfile was never imported (this test process has it)."""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parent.parent)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": root, **env}, cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_a_run_directory_is_made_where_tempfile_would_make_it(tmp_path: Path) -> None:
    """Without importing tempfile (and shutil, ~4 ms of every run): in $TMPDIR, else the next
    usable candidate; mode 0700, a new name each time, and the directory the ipc-path check
    (ZF057) measures."""
    code = ("import os, sys\nfrom zflow import rundir\nfrom zflow.spec import rules\n"
            "a, b = rundir.make(), rundir.make()\n"
            "print(a, b, oct(os.stat(a).st_mode & 0o777), rules.run_dir_template(),\n"
            "      'tempfile' in sys.modules, 'shutil' in sys.modules)\n"
            "os.rmdir(a); os.rmdir(b)\n"
            "import tempfile\nprint(tempfile.gettempdir())  # what tempfile itself picks\n")
    good = tmp_path / "tmp"
    good.mkdir()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    for env, where in (({"TMPDIR": str(good)}, good),
                       ({"TMPDIR": str(tmp_path / "missing"), "TEMP": str(not_a_dir),
                         "TMP": str(good)}, good),
                       # /proc passes access(W_OK) for root, but nothing can be made there
                       ({"TMPDIR": "/proc", "TEMP": str(good)}, good)):
        a, b, mode, template, tempfile_imported, shutil_imported, tempfiles = \
            _in_a_fresh_interpreter(code, **env)
        assert tempfiles == str(where)
        assert a != b
        for made in (a, b):
            assert os.path.dirname(made) == str(where)
            name = os.path.basename(made)
            assert name.startswith("zflow-") and len(name) == len("zflow-") + 8, name
            int(name[len("zflow-"):], 16)
        assert mode == "0o700"
        assert template == f"{where}/zflow-XXXXXXXX"
        assert (tempfile_imported, shutil_imported) == ("False", "False")


def test_a_run_directory_is_removed_flat_or_not(tmp_path: Path, monkeypatch) -> None:
    """Socket files are unlinked without shutil; one the guard removed meanwhile is no error;
    a directory holding more goes with shutil."""
    from zflow import rundir

    flat = tmp_path / "zflow-flat0001"
    flat.mkdir()
    for name in ("control", "worker.0.work", "worker.1.work"):
        (flat / name).write_text("")
    real_unlink = os.unlink

    def raced(path: Any, *a: Any) -> None:  # the guard took this one first
        real_unlink(path, *a)
        if str(path).endswith("worker.0.work"):
            raise FileNotFoundError(path)

    monkeypatch.setattr(rundir.os, "unlink", raced)
    rundir.remove(str(flat))
    monkeypatch.undo()
    assert not flat.exists()
    nested = tmp_path / "zflow-nest0001"
    (nested / "sub").mkdir(parents=True)
    (nested / "sub" / "f").write_text("x")
    rundir.remove(str(nested))
    assert not nested.exists()
    rundir.remove(str(tmp_path / "zflow-gone0001"))


def test_the_guard_titles_itself_without_importing_logging() -> None:
    """ps shows it as `zflow: orphan guard`; setproctitle's package would import logging
    (~12 ms of CPU of every run in a process that needs nothing else)."""
    out = _in_a_fresh_interpreter(
        "import sys\nfrom zflow.runtime.launchers import guard\n"
        "guard._set_title('zflow: orphan guard')\n"
        "print(open('/proc/self/cmdline', 'rb').read().split(b'\\0')[0].decode().replace(' ', '_'),"
        " 'logging' in sys.modules)\n")
    assert out == ["zflow:_orphan_guard", "False"]


def test_a_forked_replica_gets_exactly_its_environment() -> None:
    """The fork server's child rewrites only what differs from the environment it inherited,
    and ends with exactly the replica's: added, changed and removed variables alike."""
    from zflow.runtime.launchers.zygote import become

    inherited = {"HOME": "/root", "PATH": "/bin", "GONE": "x", "SAME": "1", "ZFLOW_RUN_TOKEN": "t"}
    env = {"HOME": "/root", "PATH": "/venv/bin:/bin", "SAME": "1", "NEW": "", "ZFLOW_SPEC": "{}",
           "ZFLOW_RUN_TOKEN": "t"}
    written: list[str] = []

    class Environ(dict):
        def __setitem__(self, k: str, v: str) -> None:
            written.append(k)
            super().__setitem__(k, v)

    environ = Environ(inherited)
    become(environ, inherited, env)
    assert dict(environ) == env
    assert sorted(written) == ["NEW", "PATH", "ZFLOW_SPEC"]  # not the unchanged ones


def test_the_guard_looks_again_for_what_a_stopping_replica_started(monkeypatch) -> None:
    """The guard's last scan of every process's environment finds what a replica started while
    it was being stopped (a SIGTERM handler may start a process in a session of its own). It is
    spared only when nothing was left to stop: then nothing could start anything."""
    from zflow.runtime.launchers import guard

    scans: list[str] = []
    killed: list[tuple[str, int, int]] = []

    def marked(token: str) -> list[int]:
        scans.append(token)
        return [] if len(scans) == 1 else [4242]  # the second scan finds what was started

    monkeypatch.setattr(guard, "marked", marked)
    monkeypatch.setattr(guard, "_kill", lambda pids, sig: killed.extend(
        ("pid", p, sig) for p in pids) or pids)
    monkeypatch.setattr(guard, "_signal", lambda groups, sig: killed.extend(
        ("group", g, sig) for g in groups) or groups)
    monkeypatch.setattr(guard.signal, "signal", lambda *a: None)  # not this test's handlers
    alive = {77: [True, False]}  # group 77 is alive when looked at first, gone at the next look
    monkeypatch.setattr(guard, "_alive", lambda g: alive[g].pop(0) if alive.get(g) else False)
    assert guard.main(["+77\n", "@tok\n"]) == 0
    assert scans == ["tok", "tok"]
    assert ("group", 77, guard.signal.SIGTERM) in killed
    assert ("pid", 4242, guard.signal.SIGKILL) in killed
    scans.clear()
    killed.clear()
    assert guard.main(["+78\n", "@tok\n"]) == 0  # a normal end: nothing alive, one scan
    assert scans == ["tok"] and killed == []


def _fake_fork_server(answers: list[Any]) -> tuple[Any, Any]:
    """A Zygote client on a real SEQPACKET pair whose other end reads one request (closing its
    descriptors, as a fork server that forked nothing would) and sends `answers` (None: it
    closes its end, as a fork server that died)."""
    import _socket
    import json
    import socket
    import threading

    from zflow.runtime.launchers.forkserver import Zygote

    z = Zygote.__new__(Zygote)
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    z.sock, z.exits, z.dead, z.importing = ours, {}, False, set()
    peer = socket.socket(fileno=theirs.detach())

    def serve() -> None:
        _, fds, _, _ = socket.recv_fds(peer, 1 << 20, 256)
        for fd in fds:
            os.close(fd)
        for m in answers:
            if m is None:
                break
            peer.send(json.dumps(m).encode())
        peer.close()

    t = threading.Thread(target=serve)
    t.start()
    return z, t


@pytest.mark.parametrize("answers, want", [
    ([{"exit": 9, "code": 0}, {"pids": [11, {"error": "cannot fork: EAGAIN"}, 13]}],
     [11, "cannot fork: EAGAIN", 13]),
    ([{"exit": 9, "code": 0}, None], "the zflow fork server exited"),
    ([{"pids": [1, 2]}], "answered out of turn"),
    ([{"error": "a fork server of another version"}], "a fork server of another version"),
], ids=["a fork refused", "died", "wrong length", "no pids"])
def test_a_batch_answered_or_not_leaves_no_descriptor_behind(answers: list[Any], want: Any) -> None:
    """Exit reports before the answer are kept; a refused fork is that replica's error; a
    fork server that dies or answers out of turn fails the whole batch. Either way every pipe
    is handed on or closed, and none twice."""
    from zflow.runtime.launchers.forkserver import ForkedProc

    before = len(os.listdir("/proc/self/fd"))
    z, t = _fake_fork_server(answers)
    try:
        pipes = z.request([({}, "/", "a"), ({}, "/", "b"), ({}, "/", "c")])
        if isinstance(want, str):
            with pytest.raises(OSError, match=want):
                z.collect(pipes)
        else:
            got = z.collect(pipes)
            assert [g.pid if isinstance(g, ForkedProc) else str(g) for g in got] == want
            assert z.exits == {9: 0}
            for g in got:
                if isinstance(g, ForkedProc):
                    g.stdout.close()
                    g.stderr.close()
    finally:
        t.join(10)
        z.sock.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_batch_is_never_more_than_a_message_carries() -> None:
    """Descriptors beyond what the fork server reads would be dropped on the way, and those
    replicas would start without their pipes: a larger batch is refused before it is sent."""
    from zflow.runtime.launchers.forkserver import BATCH

    z, t = _fake_fork_server([{"pids": [1]}])
    try:
        with pytest.raises(ValueError, match="1 to 64"):
            z.request([({}, "/", "x")] * (BATCH + 1))
        got = z.collect(z.request([({}, "/", "x")]))  # the socket is still in step
        assert [g.pid for g in got] == [1]
        got[0].stdout.close()
        got[0].stderr.close()
    finally:
        t.join(10)
        z.sock.close()


def test_a_cpu_share_is_not_told_from_too_short_a_look(monkeypatch) -> None:
    """CPU time comes in 10 ms ticks: a replica looked at less than MIN_CPU_SPAN after its
    spawn (a restart just before a sample) has no CPU % yet, and its baseline stays its spawn."""
    from zflow.runtime.launchers import local

    launcher = _launcher(FakeZygote(unanswered=1))
    proc = local._Proc("w.0", SimpleNamespace(), 4321, cpu_prev=(0.0, 100.0))
    launcher.procs = {"w.0": proc}
    monkeypatch.setattr(local, "_proc_usage", lambda pid: (0.01, 20_000_000))
    # no % yet, but the CPU seconds it used so far are known
    assert launcher.sample(100.0 + local.MIN_CPU_SPAN / 2) == [
        ("w.0", 4321, None, 20_000_000, 0.01)]
    assert proc.cpu_prev == (0.0, 100.0)
    monkeypatch.setattr(local, "_proc_usage", lambda pid: (0.75, 21_000_000))
    (_, _, cpu, rss, used), = launcher.sample(101.0)
    assert cpu == pytest.approx(75.0) and rss == 21_000_000 and used == 0.75
    assert proc.cpu_prev == (0.75, 101.0)


@pytest.mark.parametrize(("value", "seconds"), [
    ("5", 5.0), ("0.5", 0.5), ("inf", 86400.0), ("1e9", 86400.0), ("nan", 60.0), ("0", 60.0),
    ("-1", 60.0), ("soon", 60.0), (None, 60.0)])
def test_the_preload_timeout_is_a_finite_positive_number(
        value: str | None, seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """ZFLOW_PRELOAD_TIMEOUT=inf once reached select() and killed the fork server."""
    from zflow.runtime.launchers import zygote

    if value is None:
        monkeypatch.delenv("ZFLOW_PRELOAD_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("ZFLOW_PRELOAD_TIMEOUT", value)
    assert zygote._preload_timeout() == seconds
