"""Issue 6, faults and bad input at run time, through the real CLI in subprocesses.

- tests/runtime_corpus/: topologies that validate but cannot run; each must fail with one located
  error, exit code 3 (exitcodes.START_FAILED), no zflow traceback, and nothing left running.
- on_error: dead-letter / skip / fail, for exceptions in the user's function and for frames that
  cannot be decoded.
- `zflow up` killed with SIGKILL while a command node has a grandchild: nothing survives 2 s.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import zmq
from test_runtime_e2e import TOPO, leftovers, result_of, unique, zflow

from zflow import exitcodes

CORPUS = Path(__file__).resolve().parent / "runtime_corpus"
CASES = sorted(CORPUS.glob("*.yaml"))
TESTS = Path(__file__).resolve().parent / "topologies"
PIPELINE = TESTS / "pipeline.yaml"
HEADER = re.compile(r"^# (set|exit|expect|output|traceback): (.*)$")


def header(path: Path) -> dict[str, list[str]]:
    """The `# key: value` lines at the top of a corpus file."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = HEADER.match(line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2).strip())
    return out


def test_corpus_is_complete_and_every_file_validates() -> None:
    names = {p.stem for p in CASES}
    assert {"port_in_use", "ipc_dir_unwritable", "run_module_missing", "run_attribute_missing",
            "run_raises_at_import", "run_not_callable", "command_not_found",
            "command_not_executable", "cwd_missing"} <= names
    # command_not_executable.yaml needs a file that execve refuses, for root too: root bypasses
    # read/write bits but still needs an execute bit, so the file must have none (mode 0644 in git)
    script = CORPUS / "not_executable.sh"
    assert not os.stat(script).st_mode & 0o111, oct(os.stat(script).st_mode)
    assert not os.access(script, os.X_OK)  # holds as root too, given no x bit at all
    with pytest.raises(PermissionError):
        subprocess.run([f"./{script.name}"], cwd=CORPUS)
    p = zflow("validate", *map(str, CASES))
    assert p.returncode == 0, p.stdout + p.stderr
    for case in CASES:
        h = header(case)
        assert h.get("exit") and h.get("expect"), f"{case.name}: needs # exit: and # expect:"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_corpus_file_fails_cleanly_at_start(case: Path, tmp_path: Path) -> None:
    h = header(case)
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a directory\n")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    subs = {"port": str(holder.getsockname()[1]), "file": str(blocker), "tmp": str(tmp_path)}

    def fill(s: str) -> str:
        return s.format(**subs)

    name = unique()
    args = ["up", str(case), "--json", "--set", f"name={name}"]
    for s in h.get("set", []):
        args += ["--set", fill(s)]
    try:
        p = zflow(*args)
    finally:
        holder.close()
    out = p.stdout + p.stderr
    assert p.returncode == int(h["exit"][0]), out[-3000:]
    assert int(h["exit"][0]) == exitcodes.START_FAILED
    res = result_of(p)
    # one error, located: it names the replica (and socket/endpoint where there is one)
    assert len(res["errors"]) == 1, res["errors"]
    message = res["message"]
    for want in (fill(x) for x in h["expect"][0].split(" | ")):
        assert want in message, f"{want!r} not in {message!r}"
        if "://" in want:  # said once, not echoed back by pyzmq's "(addr=...)"
            assert message.count(want) == 1, message
    for want in (fill(x) for x in h.get("output", [])):
        assert want in out, f"{want!r} not in the output"
    replica = re.match(r"^([a-z_]+\.\d+)\b", message)
    assert replica, f"the message should start with the failing replica: {message!r}"
    # no zflow traceback; the user's own import traceback may be shown once
    allowed = 1 if h.get("traceback") == ["once"] else 0
    assert out.count("Traceback") == allowed, out[-3000:]
    assert leftovers(name) == []


def test_start_failure_message_in_plain_mode_names_replica_once_at_the_end() -> None:
    """What a person sees: the summary's last line is the located error."""
    name = unique()
    p = zflow("up", str(CORPUS / "run_not_callable.yaml"), "--plain", "--set", f"name={name}")
    assert p.returncode == exitcodes.START_FAILED
    last = p.stdout.strip().splitlines()[-1]
    assert last == "sink.0: 'corpus_nodes:not_callable' is dict, not callable"
    assert "Traceback" not in p.stdout + p.stderr
    assert leftovers(name) == []


# -- on_error --------------------------------------------------------------------------------


def _dead_letters(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_dead_letter_gets_exactly_the_failing_records(tmp_path: Path) -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--json", "--set", f"name={name}",
              "--set", "nodes.mid.run=reliability_nodes:poison",
              "--set", "nodes.mid.on_error=dead-letter", "--set", f"nodes.mid.cwd={tmp_path}")
    assert p.returncode == exitcodes.INCOMPLETE, p.stdout[-3000:] + p.stderr[-3000:]
    res = result_of(p)
    assert res["message"] == ("incomplete: 10 records failed and were skipped or dead-lettered "
                              "(on_error)")
    poisoned = list(range(0, 100, 10))
    assert res["results"]["sink"] == {"n": 90, "sum": 4950 - sum(poisoned), "expected": 90}
    assert res["nodes"]["mid"]["errors"] == 10
    path = tmp_path / f"{name}.mid.dead-letter.jsonl"
    assert res["dead_letters"] == {"mid": {"path": str(path), "records": 10}}
    lines = _dead_letters(path)
    assert sorted(x["record"] for x in lines) == poisoned
    for x in lines:
        assert x["node"] == "mid" and x["replica"] in (0, 1)
        assert x["error"] == f"ValueError: poison record {x['record']}"
        assert f"poison record {x['record']}" in x["traceback"]
    assert "Traceback" not in p.stdout + p.stderr
    assert leftovers(name) == []


#: frames no zflow msgpack sender would produce: no topic separator, an invalid msgpack byte,
#: a truncated array, and valid msgpack that is not a batch (list) of records
GARBAGE = [b"not msgpack", b"\x00\xc1", b"\x00\x92\x01", b"\x00\x05", b"\x00\x81\xa1a\x01"]


def _run_with_garbage(
    tmp_path: Path, policy: str, mode: str
) -> tuple[str, subprocess.CompletedProcess]:
    """pipeline.yaml with the sink bound on an ipc path the test also sends garbage to; the
    source starts only once the garbage has been sent (a marker file), so it is read mid-stream."""
    name = unique()
    sock, marker = tmp_path / "sink.sock", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zflow", "up", str(PIPELINE), mode, "--set", f"name={name}",
         "--set", f"nodes.sink.sockets.inp.bind=ipc://{sock}",
         "--set", "nodes.src.run=reliability_nodes:after_marker",
         "--set", f"nodes.src.params.marker={marker}",
         "--set", f"nodes.sink.on_error={policy}", "--set", "nodes.sink.restart=no",
         "--set", f"nodes.sink.cwd={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        while not sock.exists():  # the sink has bound (a hang: pytest-timeout)
            assert proc.poll() is None, "zflow exited before the sink bound"
            time.sleep(0.01)
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(f"ipc://{sock}")
        for frame in GARBAGE:
            push.send(frame)
        push.close(linger=5000)
        ctx.term()  # returns once the frames have been handed to the sink's connection
        marker.touch()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return name, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("policy", ["skip", "dead-letter", "fail"])
def test_undecodable_frames_are_counted_never_fatal(tmp_path: Path, policy: str) -> None:
    """Frames anyone on the socket could send: counted and skipped (dead-lettered if asked),
    whatever on_error says; the sink keeps its state, and the run ends incomplete (exit 4)."""
    mode = "--plain" if policy == "dead-letter" else "--json"
    name, p = _run_with_garbage(tmp_path, policy, mode)
    out = p.stdout + p.stderr
    assert "Traceback" not in out, out[-3000:]
    assert leftovers(name) == []
    path = tmp_path / f"{name}.sink.dead-letter.jsonl"
    assert p.returncode == exitcodes.INCOMPLETE, out[-3000:]
    assert "cannot decode a 11-byte frame on socket 'inp' (msgpack)" in out
    if policy in ("skip", "fail"):
        res = result_of(p)
        assert res["nodes"]["sink"]["errors"] == len(GARBAGE)
        assert res["results"]["sink"] == {"n": 100, "sum": 4950, "expected": 100}
        assert res["dead_letters"] == {}
        assert not path.exists()
        return
    # dead-letter, in plain mode: the summary says where the records went
    assert f"sink: {len(GARBAGE)} records dead-lettered → {path}" in p.stdout
    assert "sink: n=100  sum=4950  expected=100" in p.stdout
    lines = _dead_letters(path)
    assert [x["record"] for x in lines] == [repr(f) for f in GARBAGE]
    assert all(x["error"].startswith("DecodeError: cannot decode a ") for x in lines)
    # delivery auto runs this pipeline exactly-once: its sink takes only frames with ids
    assert all("a frame without ids on an exactly-once socket" in x["error"] for x in lines)


# -- orchestrator killed ---------------------------------------------------------------------


def marked(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (command nodes have no zflow proc title)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd and b"time.sleep(1000)" in cmd:
            found.append(int(pid))
    return found


def test_a_grandchild_that_left_its_process_group_is_stopped_with_the_run() -> None:
    """A command node starts a daemon-like grandchild with setsid (its own session and group):
    zflow, a child subreaper, still finds it among its descendants and stops it at the end."""
    name = unique()
    marker = f"zflowtest-{uuid.uuid4().hex[:12]}"
    sender = ("setsid python3 -c 'import time; time.sleep(1000)' " + marker +
              " </dev/null >/dev/null 2>&1 & exec python3 plain_sender.py 1000")
    p = subprocess.run(
        [sys.executable, "-m", "zflow", "up", str(TESTS / "plain_sender.yaml"), "--json",
         "--set", f"name={name}", "--set", f"nodes.sender.command=[sh, -c, {sender!r}]"],
        capture_output=True, text=True)
    survivors = marked(marker)
    for pid in survivors:  # do not leave them behind even when the test fails
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert survivors == [], "a setsid grandchild outlived the run"


def _survivors(marker: str, name: str) -> list[int]:
    """What carries `marker` 2 s after zflow was SIGKILLed (then killed, so a failing test
    leaves nothing behind either)."""
    deadline = time.monotonic() + 2.0
    while (marked(marker) or leftovers(name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = marked(marker)
    for pid in survivors:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    return survivors


def test_sigkill_of_zflow_kills_a_setsid_grandchild_it_had_not_scanned_yet() -> None:
    """zflow finds descendants that left their group once a second; SIGKILLed within that
    second, its guard still finds a setsid grandchild by the run's token in its environment."""
    name = unique()
    marker = f"zflowtest-{uuid.uuid4().hex[:12]}"
    sender = ("setsid python3 -c 'import time; time.sleep(1000)' " + marker +
              " </dev/null >/dev/null 2>&1 & exec python3 -c 'import time; time.sleep(1000)' "
              + marker)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zflow", "up", str(TESTS / "grandchild.yaml"), "--json",
         "--set", f"name={name}", "--set", f"nodes.shell.command=[sh, -c, {sender!r}]"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        while len(marked(marker)) < 2:  # the setsid daemon and the exec'd sleeper
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.005)
    finally:
        proc.kill()  # at once: most likely before the descendant scan saw the daemon
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert _survivors(marker, name) == [], "a setsid grandchild outlived a SIGKILLed zflow by 2 s"
    assert leftovers(name) == []


def test_sigkill_of_zflow_kills_command_node_and_its_grandchild() -> None:
    name = unique()
    marker = f"zflowtest-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zflow", "up", str(TESTS / "grandchild.yaml"), "--json",
         "--set", f"name={name}", "--set", f"nodes.shell.command.3={marker}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the barrier opened: every replica is up
            if '"overall"' in line and '"running"' in line:
                break
        while len(marked(marker)) < 2:  # the shell's background child and the exec'd sleeper
            assert proc.poll() is None, proc.stderr.read()  # (a hang: pytest-timeout)
            time.sleep(0.02)
        assert leftovers(name)  # the python source
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert _survivors(marker, name) == [], "command node processes outlived a SIGKILLed zflow"
    assert leftovers(name) == []


def _command_pids(topology: str, node: str) -> list[int]:
    """A run's command-node processes, by the ZFLOW_* variables in their environment."""
    want = {f"ZFLOW_TOPOLOGY={topology}".encode(), f"ZFLOW_NODE={node}".encode()}
    found = []
    for pid in os.listdir("/proc"):
        try:
            env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if pid.isdigit() and want <= env:
            found.append(int(pid))
    return found


def test_a_command_node_killed_mid_stream_leaves_the_run_incomplete() -> None:
    """upper.py (a plain program in the middle of a pipeline) is SIGKILLed while records flow:
    it restarts and the stream ends, but what it held cannot be counted: exit 4, not 0 (it said
    completed with 34 of 200,000 records missing)."""
    name = unique()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zflow", "up", str(TOPO / "polyglot.yaml"), "--json",
         "--set", f"name={name}", "--set", "nodes.words.params.count=200000",
         "--drain-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # records have reached the sink through upper
        if line.startswith('{"event": "stats"') and json.loads(line)["nodes"]["collect"]["msgs_in"]:
            break
    pids = _command_pids(name, "upper")
    assert pids, "upper is not running"
    for pid in pids:
        os.kill(pid, 9)
    out, err = proc.communicate(timeout=60)
    res = result_of(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert proc.returncode == exitcodes.INCOMPLETE, res["message"]
    assert res["losses"]["uncounted"] == ["upper.0"]
    assert "records may have been lost inside upper.0" in res["message"]
    assert res["nodes"]["upper"]["restarts"] == 1
    assert leftovers(name) == []
