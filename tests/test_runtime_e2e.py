"""`zflow up` end to end through the real CLI in subprocesses: results, exit codes, leftovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies"
TESTS = Path(__file__).resolve().parent / "topologies"
PIPELINE = TESTS / "pipeline.yaml"


def unique() -> str:
    return "t" + uuid.uuid4().hex[:10]


def zflow(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zflow", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def leftovers(name: str) -> list[str]:
    """Processes whose title or command line names this run's unique topology name."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"zflow: {name} " in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def result_of(proc: subprocess.CompletedProcess) -> dict:
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    results = [x for x in lines if x.get("event") == "result"]
    assert results, proc.stdout[-2000:] + proc.stderr[-2000:]
    return results[-1]


def test_squares_reference_run() -> None:
    name = unique()
    p = zflow("up", str(TOPO / "squares.yaml"), "--plain", "--set", f"name={name}")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "10000 answers from 10 workers" in p.stdout
    assert "sum of squares 333283335000" in p.stdout
    assert "completed" in p.stdout
    assert leftovers(name) == []


def test_squares_json_counts_every_edge() -> None:
    name = unique()
    p = zflow("up", str(TOPO / "squares.yaml"), "--json", "--set", f"name={name}")
    assert p.returncode == 0, p.stderr[-3000:]
    res = result_of(p)
    assert res["exit_code"] == 0
    assert res["results"]["results"] == {"answers": 10000, "workers": 10, "sum": 333283335000}
    nodes = res["nodes"]
    assert nodes["worker"]["replicas"] == 10
    assert nodes["worker"]["msgs_in"] == 10000 and nodes["worker"]["msgs_out"] == 10000
    assert nodes["results"]["msgs_in"] == 10000
    assert leftovers(name) == []


def test_no_loss_at_start_over_repeated_runs() -> None:
    """The barrier replaces sleeps: every run, every record arrives (slow joiners included)."""
    for _ in range(4):
        name = unique()
        p = zflow("up", str(TOPO / "squares.yaml"), "--json", "--set", f"name={name}",
                  "--set", "nodes.ventilator.params.count=3000", "--scale", "worker=4")
        assert p.returncode == 0, p.stderr[-3000:]
        res = result_of(p)["results"]["results"]
        assert res == {"answers": 3000, "workers": 4, "sum": sum(i * i for i in range(3000))}


def test_verbose_shows_each_answer_the_seed_way() -> None:
    p = zflow("up", str(TOPO / "squares.yaml"), "--plain", "-v", "--set", f"name={unique()}",
              "--set", "nodes.ventilator.params.count=50", "--scale", "worker=2")
    assert p.returncode == 0, p.stderr[-2000:]
    answers = [x for x in p.stdout.splitlines() if "answered:" in x]
    assert len(answers) == 50
    assert any("Worker 0 answered: " in x or "Worker 1 answered: " in x for x in answers)


@pytest.mark.parametrize(
    ("topology", "node", "expected"),
    [
        ("pubsub.yaml", "paris", {"received": 750, "paris": 750}),
        ("pubsub.yaml", "everything",
         {"received": 3000, "paris": 750, "rome": 750, "madrid": 750, "oslo": 750}),
        ("rpc.yaml", "client", {"replies": 300, "servers": 3,
                                "sum": sum(i * i for i in range(300))}),
        ("broker.yaml", "client.1", {"replies": 200, "servers": 3,
                                     "sum": sum(i * i for i in range(200))}),
        ("polyglot.yaml", "collect", {"received": 500, "uppercased": 500}),
    ],
)
def test_shipped_topologies_run(topology: str, node: str, expected: dict) -> None:
    name = unique()
    p = zflow("up", str(TOPO / topology), "--json", "--set", f"name={name}")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert result_of(p)["results"][node] == expected
    assert leftovers(name) == []


def test_dry_run_prints_plan_and_starts_nothing() -> None:
    name = unique()
    p = zflow("up", "--dry-run", str(TOPO / "squares.yaml"), "--set", f"name={name}",
              "--scale", "worker=3")
    assert p.returncode == 0
    assert "worker  ×3  transform" in p.stdout
    assert "ventilator.work → worker.work" in p.stdout
    assert "end of stream by count" in p.stdout
    assert leftovers(name) == []


def test_node_failure_exits_1_naming_node_and_stderr() -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
              "--set", "nodes.mid.run=faulty:boom", "--set", "nodes.mid.restart=no")
    assert p.returncode == 1, p.stdout[-2000:]
    out = p.stdout + p.stderr
    assert "mid." in out and "ValueError: cannot take 7" in out
    assert leftovers(name) == []


def test_skip_policy_counts_errors_and_completes() -> None:
    p = zflow("up", str(PIPELINE), "--json", "--set", f"name={unique()}",
              "--set", "nodes.mid.run=faulty:boom", "--set", "nodes.mid.on_error=skip")
    assert p.returncode == 0, p.stderr[-2000:]
    res = result_of(p)
    assert res["results"]["sink"]["n"] == 99
    assert res["nodes"]["mid"]["errors"] == 1


def test_crash_loop_is_reported_not_retried_forever() -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
              "--set", "nodes.src.run=faulty:crash_at_start",
              "--set", "nodes.src.max_restarts=2",
              "--set", "nodes.src.backoff={initial: 0.02, max: 0.05}")
    assert p.returncode == 1
    out = p.stdout + p.stderr
    assert "crash-looping" in out and "src.0" in out
    assert "about to fail at start" in out
    assert leftovers(name) == []


def test_restart_after_crash_then_complete(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    p = zflow("up", str(PIPELINE), "--json", "--set", f"name={unique()}",
              "--set", "nodes.mid.run=faulty:crash_once", "--scale", "mid=1",
              "--set", f"nodes.mid.params.marker={marker}",
              "--set", "nodes.src.params.n=20")
    assert marker.exists()
    res = result_of(p)
    assert res["nodes"]["mid"]["restarts"] == 1
    # the frame the crashed replica held is lost (plain mode); zflow says so and still ends
    assert p.returncode == 0, p.stderr[-2000:]
    assert "never arrived" in p.stdout


def test_port_in_use_is_a_start_failure() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    name = unique()
    try:
        p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
                  "--set", f"nodes.sink.sockets.inp.bind=tcp://127.0.0.1:{port}")
    finally:
        holder.close()
    assert p.returncode == 3, p.stdout[-2000:]
    out = p.stdout + p.stderr
    assert f"tcp://127.0.0.1:{port}" in out and "sink.0" in out and "inp" in out
    assert leftovers(name) == []


def test_missing_run_target_is_a_start_failure() -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
              "--set", "nodes.mid.run=faulty:nope")
    assert p.returncode == 3
    assert "has no attribute 'nope'" in p.stdout + p.stderr
    assert leftovers(name) == []


def test_import_error_is_a_start_failure() -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
              env={"FAULTY_RAISE_AT_IMPORT": "1"})
    assert p.returncode == 3
    assert "RuntimeError: configured to fail at import" in p.stdout + p.stderr
    assert leftovers(name) == []


def test_command_not_found_is_a_start_failure() -> None:
    name = unique()
    p = zflow("up", str(TOPO / "polyglot.yaml"), "--plain", "--set", f"name={name}",
              "--set", "nodes.upper.command=[zflow-no-such-program]")
    assert p.returncode == 3
    assert "zflow-no-such-program" in p.stdout + p.stderr
    assert leftovers(name) == []


def _start_forever(name: str, *extra: str) -> subprocess.Popen:
    """An endless pipeline, returned once the barrier has opened (the run is fully up)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zflow", "up", str(PIPELINE), "--json", "--set", f"name={name}",
         "--set", "nodes.src.run=faulty:forever", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for the barrier to open: the run is then fully up
        if '"overall"' in line and '"running"' in line:
            return proc
    proc.kill()
    raise AssertionError("never reached running: " + proc.stderr.read()[-2000:])


def _wait_gone(name: str, within: float) -> list[str]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not leftovers(name):
            return []
        time.sleep(0.05)
    return leftovers(name)


def test_interrupt_exits_130_and_stops_everything() -> None:
    name = unique()
    proc = _start_forever(name)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-2000:]
    assert leftovers(name) == []


def test_sigkill_of_zflow_leaves_no_orphans() -> None:
    name = unique()
    proc = _start_forever(name)
    assert leftovers(name)
    proc.kill()
    proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    assert _wait_gone(name, 2.0) == []


def test_fork_server_death_stops_the_run_cleanly() -> None:
    name = unique()
    proc = _start_forever(name)
    zygotes = [
        int(p) for p in os.listdir("/proc") if p.isdigit()
        and Path(f"/proc/{p}/cmdline").exists()
        and b"zflow.runtime.zygote" in Path(f"/proc/{p}/cmdline").read_bytes()
        and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(proc.pid)
    ]
    assert len(zygotes) == 1
    os.kill(zygotes[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err[-2000:]
    assert "fork server exited" in out
    assert _wait_gone(name, 2.0) == []
