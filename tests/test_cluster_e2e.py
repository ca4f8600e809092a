"""`zflow coordinator` and `zflow replica` end to end on loopback, as separate processes that
find each other only through the control endpoint: the exact result, refusals (another topology,
a key the coordinator does not know), a coordinator that dies, and the command lines' errors.

The OS picks every port (`--listen tcp://127.0.0.1:*`, `--any-port`); the multi-host version of
this, with fixed ports on names, runs in network namespaces (test_netns.py).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zflow import exitcodes

ROOT = Path(__file__).resolve().parent.parent
SQUARES = ROOT / "topologies" / "squares.yaml"
N = 20000
SUM = sum(i * i for i in range(N))
COMMON = ["--scale", "worker=2", "--set", f"nodes.ventilator.params.count={N}"]


def zflow_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "zflow", *args]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(zflow_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def listening(coord: subprocess.Popen, timeout: float = 20) -> str:
    """The endpoint the coordinator says it listens on (its first stderr line)."""
    sel = selectors.DefaultSelector()
    sel.register(coord.stderr, selectors.EVENT_READ)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(deadline - time.monotonic()):
            line = coord.stderr.readline()  # type: ignore[union-attr]
            assert line, f"coordinator exited: {coord.wait()}"
            if "listening on " in line:
                return line.split("listening on ")[1].strip()
    raise AssertionError("the coordinator never said where it listens")


def replica(ep: str, keys: Path, node: str, index: int, *extra: str) -> subprocess.Popen:
    return start("replica", str(SQUARES), "--node", node, "--index", str(index), "--join", ep,
                 "--keys", str(keys), "--advertise", "127.0.0.1", "--any-port", *COMMON, *extra)


def reap(*procs: subprocess.Popen, timeout: float = 30) -> list[int]:
    """Every process's exit code; whatever is still running after `timeout` is killed."""
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(-9)
    return codes


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    p = subprocess.run(zflow_cmd("keys", str(SQUARES), "-o", str(tmp_path / "keys")),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "keys" / "worker.key_secret").stat().st_mode & 0o777 == 0o600
    return tmp_path / "keys"


def test_replicas_that_join_run_squares_to_the_exact_sum_and_strangers_are_refused(
        keys: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(zflow_cmd("keys", str(SQUARES), "-o", str(other)), check=True,
                   capture_output=True)
    # the right server key, but a worker key of its own
    (other / "coordinator.key").write_bytes((keys / "coordinator.key").read_bytes())
    coord = start("coordinator", str(SQUARES), "--listen", "tcp://127.0.0.1:*", "--keys",
                  str(keys), "--json", "--start-timeout", "30", *COMMON)
    procs = [coord]
    try:
        ep = listening(coord)
        # a replica of another topology, and one whose key the coordinator does not know
        wrong_topology = replica(ep, keys, "worker", 0, "--set", "nodes.worker.params.x=1")
        wrong_key = replica(ep, other, "worker", 1)
        procs += [wrong_topology, wrong_key]
        assert reap(wrong_topology, wrong_key) == [exitcodes.START_FAILED] * 2
        assert "topology differs" in wrong_topology.stderr.read()  # type: ignore[union-attr]
        assert "refused this replica's key" in wrong_key.stderr.read()  # type: ignore[union-attr]
        members = [replica(ep, keys, "ventilator", 0), replica(ep, keys, "results", 0),
                   *(replica(ep, keys, "worker", i) for i in range(2))]
        procs += members
        out, err = coord.communicate(timeout=60)
        assert coord.returncode == 0, err[-2000:]
        assert reap(*members) == [0] * 4
        result = [json.loads(x) for x in out.splitlines() if '"event": "result"' in x][-1]
        assert result["results"]["results"]["sum"] == SUM
        assert result["results"]["results"]["answers"] == N
        # what the sink printed, on its own host, is shown by the coordinator as by `zflow up`
        logs = [json.loads(x) for x in out.splitlines() if '"event": "log"' in x]
        assert any(e["node"] == "results" and f"{N} answers from 2 workers" in e["line"]
                   for e in logs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        reap(*procs)


def test_replicas_exit_when_their_coordinator_dies(keys: Path) -> None:
    coord = start("coordinator", str(SQUARES), "--listen", "tcp://127.0.0.1:*", "--keys",
                  str(keys), "--plain", *COMMON)
    procs = [coord]
    try:
        ep = listening(coord)
        # two of five: the barrier never opens, so they wait for it, joined
        joined = [replica(ep, keys, "worker", 0), replica(ep, keys, "worker", 1)]
        procs += joined
        deadline = time.monotonic() + 20
        seen = ""
        while seen.count("joined from") < 2 and time.monotonic() < deadline:
            seen += coord.stdout.readline()  # type: ignore[union-attr]
        assert seen.count("joined from") == 2, seen
        coord.send_signal(signal.SIGKILL)
        t = time.monotonic()
        codes = reap(*joined, timeout=15)
        assert all(c not in (0, -9) for c in codes), codes  # they stopped, nobody killed them
        assert time.monotonic() - t < 10
        assert "lost the coordinator" in joined[0].stderr.read()  # type: ignore[union-attr]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        reap(*procs)


@pytest.mark.parametrize(("args", "code", "says"), [
    (["coordinator", str(SQUARES), "--listen", "tcp://0.0.0.0:*"], 2, "CURVE is mandatory"),
    (["coordinator", str(SQUARES), "--listen", "ipc:///tmp/x"], 2, "needs a tcp endpoint"),
    (["coordinator", str(SQUARES), "--listen", "tcp://127.0.0.1:*", "--keys", "/nonexistent"],
     2, "no such key file"),
    (["replica", str(SQUARES), "--node", "nosuch", "--join", "tcp://127.0.0.1:9"], 2,
     "no node 'nosuch'"),
    (["replica", str(SQUARES), "--node", "worker", "--index", "10", "--join",
      "tcp://127.0.0.1:9"], 2, "out of range"),
    (["replica", str(SQUARES), "--node", "worker", "--index", "1", "--join",
      "tcp://10.0.0.1:9"], 2, "CURVE is mandatory"),
    (["replica", str(SQUARES), "--node", "worker", "--index", "1", "--join",
      "tcp://127.0.0.1:9", "--join-timeout", "0.3"], 1, "did not admit worker.1"),
])
def test_command_line_errors_are_clear(args: list[str], code: int, says: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("JOB_COMPLETION_INDEX",)}
    p = subprocess.run(zflow_cmd(*args), capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == code, p.stderr
    assert says in p.stderr and "Traceback" not in p.stderr


def test_a_command_node_that_binds_and_waits_for_enter_runs_on_its_own_host(
        tmp_path: Path) -> None:
    """The ZeroMQ Guide's ventilator (plain pyzmq, waits for Enter) as a remote command node:
    its wrapper says when it listens and who is connected, `stdin: go` reaches it, and its
    work spreads over both workers."""
    topo = ROOT / "tests" / "topologies" / "guide_ventilator.yaml"
    subprocess.run(zflow_cmd("keys", str(topo), "-o", str(tmp_path / "k")), check=True,
                   capture_output=True)
    keys = str(tmp_path / "k")
    coord = start("coordinator", str(topo), "--listen", "tcp://127.0.0.1:*", "--keys", keys,
                  "--json", "--scale", "worker=2")
    procs = [coord]
    try:
        ep = listening(coord)
        members = [start("replica", str(topo), "--node", node, "--index", str(i), "--join", ep,
                         "--keys", keys, "--advertise", "127.0.0.1", "--any-port",
                         "--scale", "worker=2")
                   for node, i in [("ventilator", 0), ("sink", 0), ("worker", 0), ("worker", 1)]]
        procs += members
        out, err = coord.communicate(timeout=60)
        assert coord.returncode == 0, err[-2000:]
        assert reap(*members) == [0] * 4
        result = [json.loads(x) for x in out.splitlines() if '"event": "result"' in x][-1]
        sink = result["results"]["sink"]
        assert sink["n"] == 1000 and sink["workers"] == 2 and sink["fewest"] > 0
        assert "Sending tasks to workers" in out  # its output, forwarded to the coordinator
        assert "Sending tasks" in members[0].stdout.read()  # type: ignore[union-attr]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        reap(*procs)
