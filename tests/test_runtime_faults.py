"""Issue 6, faults and bad input at run time, through the real CLI in subprocesses.

- tests/runtime_corpus/: topologies that validate but cannot run; each must fail with one located
  error, exit code 3 (exitcodes.START_FAILED), no zflow traceback, and nothing left running.
- on_error: dead-letter / skip / fail, for exceptions in the user's function and for frames that
  cannot be decoded.
- `zflow up` killed with SIGKILL while a command node has a grandchild: nothing survives 2 s.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest
from test_runtime_e2e import leftovers, result_of, unique, zflow

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
    assert not os.access(CORPUS / "not_executable.sh", os.X_OK) or os.geteuid() == 0
    assert not os.stat(CORPUS / "not_executable.sh").st_mode & 0o111
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
    t0 = time.monotonic()
    try:
        p = zflow(*args, timeout=30)
    finally:
        holder.close()
    took = time.monotonic() - t0
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
    assert took < 10, f"a start failure should stop everything promptly, took {took:.1f}s"


def test_start_failure_message_in_plain_mode_names_replica_once_at_the_end() -> None:
    """What a person sees: the summary's last line is the located error."""
    name = unique()
    p = zflow("up", str(CORPUS / "run_not_callable.yaml"), "--plain", "--set", f"name={name}")
    assert p.returncode == exitcodes.START_FAILED
    last = p.stdout.strip().splitlines()[-1]
    assert last == "sink.0: 'corpus_nodes:not_callable' is dict, not callable"
    assert "Traceback" not in p.stdout + p.stderr
    assert leftovers(name) == []
