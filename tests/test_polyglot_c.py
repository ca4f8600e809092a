"""Polyglot for real (issue 11): the squares pipeline with command nodes written in C against
Debian's libzmq (topologies/c/), next to zflow's Python nodes. The C programs are built on demand
into a temporary directory; without a C compiler, make, pkg-config or libzmq's development files
the tests skip and say what is missing (.ci/run installs them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_runtime_e2e import TOPO, assert_completed, leftovers, result_of, unique, zflow

C_SOURCES = TOPO / "c"
COUNT = 10000
SUM = sum(n * n for n in range(COUNT))  # 333283335000


def _missing() -> str | None:
    tools = [t for t in ("cc", "make", "pkg-config") if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} not found"
    if subprocess.run(["pkg-config", "--exists", "libzmq"]).returncode != 0:
        return "pkg-config finds no libzmq (its development files are not installed)"
    return None


@pytest.fixture(scope="module")
def c_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C nodes, built with topologies/c/Makefile into a fresh directory."""
    missing = _missing()
    if missing:
        pytest.skip(f"C command nodes need a C toolchain and libzmq: {missing} (Debian: apt-get "
                    "install libzmq3-dev gcc make pkg-config, as .ci/run does)")
    build = tmp_path_factory.mktemp("c-nodes")
    p = subprocess.run(["make", "-C", str(C_SOURCES), f"BUILD={build}"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "warning" not in p.stderr, p.stderr  # -Wall -Wextra clean
    return build


def up(topology: str, name: str, build: Path, *extra: str) -> subprocess.CompletedProcess:
    return zflow("up", str(TOPO / topology), "--json", "--set", f"name={name}", *extra,
                 env={"SQUARES_C_BUILD": str(build)})


def logged(p: subprocess.CompletedProcess, node: str) -> list[str]:
    """What a node printed, in order (command nodes report nothing else to zflow)."""
    events = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    return [e["line"] for e in events if e.get("event") == "log" and e["node"] == node]


def all_leftovers(name: str) -> list[str]:
    """zflow's processes and Python replicas by title (leftovers()), and command nodes, which
    keep their own command line, by the ZFLOW_TOPOLOGY zflow put in their environment."""
    found = leftovers(name)
    mark = f"ZFLOW_TOPOLOGY={name}".encode()
    for pid in os.listdir("/proc"):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if pid.isdigit() else []
        except OSError:
            continue
        if mark in env:
            found.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()!r}")
    return found


def test_c_ventilator_and_sink_around_python_workers(c_build: Path) -> None:
    # go (Python) → ventilator (C) → worker ×4 (squares.py's square, Python) → results (C)
    name = unique()
    p = up("squares_c.yaml", name, c_build)
    # zflow counts what its Python nodes move; the sink is C, so no record is counted as done
    res = assert_completed(p, done=0)
    assert logged(p, "results") == [f"{COUNT} answers from 4 workers, sum of squares {SUM}"]
    assert logged(p, "ventilator") == [f"sent {COUNT} numbers"]
    assert res["nodes"]["ventilator"]["exit_codes"] == [0]
    assert res["nodes"]["results"]["exit_codes"] == [0]
    # the C ventilator dealt the numbers round-robin, then one end marker to each worker
    assert [r["msgs_in"] for r in res["nodes"]["worker"]["replica"]] == [COUNT // 4] * 4
    assert all_leftovers(name) == []


def test_python_source_and_sink_around_c_workers(c_build: Path) -> None:
    # ventilator (squares.py, Python) → worker ×4 (C) → results (squares.py, Python)
    name = unique()
    p = up("squares_c_workers.yaml", name, c_build)
    res = assert_completed(p, done=COUNT)
    assert res["results"]["results"] == {"answers": COUNT, "workers": 4, "sum": SUM}
    assert sorted(logged(p, "worker")) == [f"squared {COUNT // 4} numbers"] * 4
    assert res["nodes"]["worker"]["exit_codes"] == [0, 0, 0, 0]
    assert all_leftovers(name) == []


def test_a_c_worker_refusing_a_record_fails_the_run_with_its_message(c_build: Path) -> None:
    name = unique()
    p = up("squares_c_workers.yaml", name, c_build,
           "--set", "nodes.ventilator.run=polyglot_nodes:words", "--set", "nodes.worker.restart=no")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    message = result_of(p)["message"]
    assert message.startswith("worker.") and " exited with code 2" in message, message
    assert 'not a number I can square: "{"i":' in message, message
    assert all_leftovers(name) == []


def test_c_nodes_outside_zflow_say_what_is_missing(c_build: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLOW_")}
    for program, first in (("ventilator", "ZFLOW_SOCKET_START_TYPE"), ("worker", "ZFLOW_REPLICA"),
                           ("sink", "ZFLOW_SOCKET_ANSWERS_TYPE")):
        p = subprocess.run([str(c_build / program)], capture_output=True, text=True, env=env)
        assert (p.returncode, p.stdout) == (2, "")
        assert p.stderr == (f"{c_build / program}: {first} is not set: this program is a zflow "
                            'command node, run it with `zflow up` (README, "Command nodes")\n')
    p = subprocess.run([str(c_build / "ventilator"), "ten"], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 2 and "usage: " in p.stderr and "[COUNT]" in p.stderr, p.stderr
