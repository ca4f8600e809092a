"""`zflow up` end to end through the real CLI in subprocesses: results, exit codes, leftovers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from zflow import exitcodes

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies"
TESTS = Path(__file__).resolve().parent / "topologies"
PIPELINE = TESTS / "pipeline.yaml"


def unique() -> str:
    return "t" + uuid.uuid4().hex[:10]


def zflow(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m zflow ARGS`. A hang is caught by pytest-timeout (pyproject.toml), which fails the
    test with its stack; subprocess.run then kills the child."""
    return subprocess.run(
        [sys.executable, "-m", "zflow", *args], capture_output=True, text=True,
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


#: what zflow says when it ends a stream without records it counted as sent (a loss or a stall)
LOSS = ("never arrived", "ending the stream without")


def assert_completed(p: subprocess.CompletedProcess, done: int | None = None) -> dict | None:
    """A run expected to succeed did, and lost nothing on the way: exit 0, no loss/stall report.

    With --json also: the result says completed with no errors, and the records that reached the
    sinks are `done` (or, without `done`, the source's known total). Returns that result (None for
    a plain-text run, whose own counts the caller checks)."""
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    for said in LOSS:
        assert said not in out, f"records were lost or stalled ({said!r}):\n{out[-3000:]}"
    if not p.stdout.startswith("{"):
        return None
    res = result_of(p)
    assert (res["overall"], res["exit_code"], res["errors"]) == ("completed", 0, []), res["errors"]
    progress = res["progress"]
    if done is None:
        assert progress["total"] is not None, "pass done=: zflow does not know this run's total"
        done = progress["total"]
    assert progress["done"] == done, progress
    return res


LOST = re.compile(r"(\d+) of (\d+) records sent to (\S+) never arrived \((lost with a replica that "
                  r"died|dropped as undecodable, or lost)\); ending the stream without them")


def loss_reported(p: subprocess.CompletedProcess, res: dict, sent: int, arrived: int) -> int:
    """zflow never loses silently: if fewer records reached the sinks than were sent, the run
    ends with exit 4 (incomplete), says how many were lost and where, in its output and in the
    result; if none were lost it says nothing of the kind and exits 0. Either way its progress
    counts only what arrived. Returns how many records the run says were lost (the caller
    compares it with sent - arrived)."""
    assert 0 <= arrived <= sent
    assert res["progress"]["done"] == arrived, res["progress"]
    said = [e for e in res["errors"] if any(x in e for x in LOSS)]
    assert all(LOST.fullmatch(e) or e.startswith("incomplete: ") for e in said), said
    if arrived == sent:
        assert p.returncode == 0 and res["losses"]["lost"] == 0, res["losses"]
        assert said == [] and not any(x in p.stdout for x in LOSS), said
        return 0
    assert p.returncode == exitcodes.INCOMPLETE, (p.returncode, res["message"])
    assert res["overall"] == "incomplete"
    lost = res["losses"]["lost"]
    assert res["message"].startswith(f"incomplete: {lost} record"), res["message"]
    assert res["message"].splitlines()[0] in p.stdout  # said where the user reads, too
    return lost


def test_squares_reference_run() -> None:
    name = unique()
    p = zflow("up", str(TOPO / "squares.yaml"), "--plain", "--set", f"name={name}")
    assert_completed(p)
    assert "10000 answers from 10 workers" in p.stdout
    assert "sum of squares 333283335000" in p.stdout
    assert f"{name} completed in " in p.stdout and "· 10,000/10,000 records" in p.stdout
    assert leftovers(name) == []


def test_squares_json_counts_every_edge() -> None:
    name = unique()
    p = zflow("up", str(TOPO / "squares.yaml"), "--json", "--set", f"name={name}")
    res = assert_completed(p, done=10000)
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
        res = assert_completed(p, done=3000)["results"]["results"]
        assert res == {"answers": 3000, "workers": 4, "sum": sum(i * i for i in range(3000))}


def test_verbose_shows_each_answer_the_seed_way() -> None:
    p = zflow("up", str(TOPO / "squares.yaml"), "--plain", "-v", "--set", f"name={unique()}",
              "--set", "nodes.ventilator.params.count=50", "--scale", "worker=2")
    assert_completed(p)
    answers = [x for x in p.stdout.splitlines() if "answered:" in x]
    assert len(answers) == 50
    assert any("Worker 0 answered: " in x or "Worker 1 answered: " in x for x in answers)


@pytest.mark.parametrize(
    ("topology", "done", "node", "expected"),
    [
        # done: records received by the sinks (pubsub: paris 750 + south 3000 + everything 3000)
        ("pubsub.yaml", 6750, "paris", {"received": 750, "paris": 750}),
        ("pubsub.yaml", 6750, "everything",
         {"received": 3000, "paris": 750, "rome": 750, "madrid": 750, "oslo": 750}),
        ("rpc.yaml", 300, "client", {"replies": 300, "servers": 3,
                                     "sum": sum(i * i for i in range(300))}),
        ("broker.yaml", 400, "client.1", {"replies": 200, "servers": 3,
                                          "sum": sum(i * i for i in range(200))}),
        ("polyglot.yaml", 500, "collect", {"received": 500, "uppercased": 500}),
    ],
)
def test_shipped_topologies_run(topology: str, done: int, node: str, expected: dict) -> None:
    name = unique()
    p = zflow("up", str(TOPO / topology), "--json", "--set", f"name={name}")
    assert assert_completed(p, done=done)["results"][node] == expected
    assert leftovers(name) == []


#: a sitecustomize: every Python process started with PYTHONPATH=<its dir> logs its command line
RECORDER = """import os
with open(os.path.join(os.path.dirname(__file__), "started"), "a") as f:
    f.write(open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode() + "\\n")
"""


def _python_started(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run zflow with a sitecustomize that logs every Python process started (the CLI itself, the
    zygote, the orphan guard, Python command nodes); return the run and their command lines."""
    tmp_path.mkdir()
    (tmp_path / "sitecustomize.py").write_text(RECORDER)
    pythonpath = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    p = zflow(*args, env={"PYTHONPATH": pythonpath})
    started = tmp_path / "started"
    return p, started.read_text().splitlines() if started.exists() else []


def test_dry_run_prints_plan_and_starts_nothing(tmp_path: Path) -> None:
    # polyglot: Python nodes and a command node (python3 upper.py). A real run starts two
    # interpreters: zflow and the command node; the fork server, the orphan guard and the Python
    # replicas are forks of zflow, which imports nothing twice
    topo = str(TOPO / "polyglot.yaml")
    real, started = _python_started(tmp_path / "real", "up", topo, "--json",
                                    "--set", f"name={unique()}")
    assert_completed(real, done=500)
    assert len(started) == 2 and "upper.py" in started[1], started  # the recorder works

    p, started = _python_started(tmp_path / "dry", "up", "--dry-run", topo,
                                 "--set", f"name={unique()}", "--scale", "upper=3")
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(started) == 1 and "--dry-run" in started[0], started  # only zflow itself
    assert "upper  ×3" in p.stdout and "words.out → upper.inbox" in p.stdout

    p = zflow("up", "--dry-run", str(TOPO / "squares.yaml"), "--set", f"name={unique()}",
              "--scale", "worker=3")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "worker  ×3  transform" in p.stdout
    assert "ventilator.work → worker.work" in p.stdout
    assert "end of stream by count" in p.stdout


def test_node_failure_exits_1_naming_node_and_stderr() -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
              "--set", "nodes.mid.run=faulty:boom", "--set", "nodes.mid.restart=no")
    assert p.returncode == 1, p.stdout[-2000:]
    # the summary's failure line names the replica, its exit code and the exception
    failed = r"^mid\.[01] exited with code 1: ValueError: cannot take 7$"
    assert re.search(failed, p.stdout, re.M), p.stdout[-2000:]
    assert "last stderr lines:" in p.stdout and 'raise ValueError(f"cannot take {x}")' in p.stdout
    assert leftovers(name) == []


def test_skip_policy_counts_errors_and_ends_incomplete() -> None:
    """A skipped record is counted, not lost, but the run is not a success: exit 4."""
    p = zflow("up", str(PIPELINE), "--json", "--set", f"name={unique()}",
              "--set", "nodes.mid.run=faulty:boom", "--set", "nodes.mid.on_error=skip")
    assert p.returncode == exitcodes.INCOMPLETE, p.stdout[-2000:]
    res = result_of(p)
    assert res["overall"] == "incomplete" and res["progress"]["done"] == 99
    assert res["message"] == ("incomplete: 1 record failed and was skipped or dead-lettered "
                              "(on_error)")
    assert res["losses"] == {"lost": 0, "places": [], "skipped": 1, "uncounted": []}
    assert res["results"]["sink"]["n"] == 99
    assert res["nodes"]["mid"]["errors"] == 1


def test_a_transform_failing_on_some_records_is_never_a_success(tmp_path: Path) -> None:
    """The defaults (on_error: fail, restart: on-failure, delivery: auto, here exactly-once): a
    transform that raises on one record in ten restarts; each failing record is tried three
    times, then dead-lettered as its source sent it; every other record arrives, once."""
    name = unique()
    p = zflow("up", str(PIPELINE), "--json", "--set", f"name={name}", "--scale", "mid=2",
              "--set", "nodes.mid.run=edges:fail_every_tenth",
              "--set", "nodes.mid.max_restarts=100",
              "--set", f"nodes.mid.cwd={tmp_path}",
              "--set", "nodes.mid.backoff={initial: 0.01, max: 0.01}")
    res = result_of(p)
    assert p.returncode == exitcodes.INCOMPLETE, p.stdout[-2000:]
    kept = [x for x in range(100) if x % 10 != 7]
    assert res["results"]["sink"]["n"] == len(kept)
    assert res["results"]["sink"]["sum"] == sum(kept)
    assert res["losses"]["lost"] == 0 and res["losses"]["skipped"] == 10
    assert res["nodes"]["mid"]["restarts"] == 30  # three attempts for each of the ten
    path = tmp_path / f"{name}.mid.dead-letter.jsonl"
    assert res["dead_letters"]["mid"] == {"path": str(path), "records": 10}
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(x["record"] for x in lines) == list(range(7, 100, 10))
    assert {x["attempts"] for x in lines} == {3}
    assert all(x["error"] == f"ValueError: cannot take {x['record']}" for x in lines)
    assert "10 records failed" in res["message"]
    assert leftovers(name) == []


def test_a_transform_failing_on_some_records_best_effort_says_what_was_lost() -> None:
    """best-effort, asked for: the crashes take records with them, and the run says so."""
    p = zflow("up", str(PIPELINE), "--json", "--set", f"name={unique()}", "--scale", "mid=1",
              "--set", "delivery=best-effort",
              "--set", "nodes.mid.run=edges:fail_every_tenth",
              "--set", "nodes.mid.max_restarts=100",
              "--set", "nodes.mid.backoff={initial: 0.01, max: 0.01}")
    res = result_of(p)
    arrived = res["results"]["sink"]["n"]
    assert arrived < 100
    assert p.returncode in (exitcodes.INCOMPLETE, exitcodes.FAILED), p.stdout[-2000:]
    if p.returncode == exitcodes.INCOMPLETE:
        assert loss_reported(p, res, sent=100, arrived=arrived) == 100 - arrived


def test_crash_loop_is_reported_not_retried_forever() -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
              "--set", "nodes.src.run=faulty:crash_at_start",
              "--set", "nodes.src.max_restarts=2",
              "--set", "nodes.src.backoff={initial: 0.02, max: 0.05}")
    assert p.returncode == 1
    assert "src.0 is crash-looping: 3 failures within 60s (last exit code 4)" in p.stdout
    assert "about to fail at start" in p.stdout
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
    # the crashed replica may take records with it (best-effort); if it did, the run says how
    # many, and still ends; it need not lose any
    arrived = res["results"]["sink"]["n"]
    assert loss_reported(p, res, sent=20, arrived=arrived) == 20 - arrived


HOG = """
import time


def numbers(mib):
    held = bytearray(mib << 20)
    for i in range(0, len(held), 4096):  # a page is resident once written
        held[i] = 1
    t = time.process_time()
    while time.process_time() - t < 0.2:
        pass
    return range(10)


class Sink:
    def __init__(self):
        self.n = 0

    def __call__(self, x):
        self.n += 1

    def end(self, totals):
        return {"n": self.n}
"""


def test_each_replica_says_what_it_used_however_short_its_life(tmp_path: Path) -> None:
    """CPU seconds and peak memory come exact from each process's exit (wait4 in the fork
    server, or here for a command), not from the /proc samples a run this short never takes:
    a replica that held 64 MiB and spun 0.2 s of CPU says at least that. A command says its
    CPU time, but not wait4's peak, which Linux carries over from zflow (at least its ~20 MiB)
    across fork and exec: only a sample's, if one was taken."""
    (tmp_path / "hog.py").write_text(HOG)
    spin = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.2: pass"
    (tmp_path / "hog.yaml").write_text(json.dumps({
        "version": 1, "name": unique(), "nodes": {
            "src": {"run": "hog:numbers", "params": {"mib": 64},
                    "sockets": {"out": {"type": "PUSH", "bind": "auto"}}},
            "sink": {"run": "hog:Sink", "sockets": {"inp": {"type": "PULL",
                                                            "connect": "src.out"}}},
            "side": {"command": [sys.executable, "-c", spin]}}}))
    p = zflow("up", str(tmp_path / "hog.yaml"), "--json")
    res = result_of(p)
    # (the first /proc sample is a second in: this run is usually over by then)
    assert p.returncode == 0, p.stdout[-2000:]
    src, sink, side = (res["nodes"][n] for n in ("src", "sink", "side"))
    assert src["cpu_s"] >= 0.2 and src["max_rss"] >= 64 << 20
    assert src["replica"][0]["cpu_s"] == src["cpu_s"]
    assert side["cpu_s"] >= 0.2 and (side["max_rss"] is None or side["max_rss"] < 16 << 20)
    assert 0 < sink["cpu_s"] < 0.2 and sink["max_rss"] < 64 << 20  # its own, not its peers'


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


def test_a_command_node_whose_port_is_taken_is_a_start_failure() -> None:
    """Checked before the program starts: it used to crash-loop and end with exit 1."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    name = unique()
    try:
        p = zflow("up", str(TOPO / "polyglot.yaml"), "--json", "--set", f"name={name}",
                  "--set", "nodes.upper.sockets.inbox={type: PULL, "
                           f"bind: 'tcp://127.0.0.1:{port}'}}",
                  "--set", "nodes.words.sockets.out={type: PUSH, connect: upper.inbox, "
                           "codec: json}")
    finally:
        holder.close()
    assert p.returncode == 3, p.stdout[-2000:]
    msg = result_of(p)["message"]
    assert msg.startswith(f"upper.0: socket inbox: cannot bind tcp://127.0.0.1:{port}: "
                          "Address already in use"), msg
    assert "restarting" not in p.stdout
    assert leftovers(name) == []


def test_missing_run_target_is_a_start_failure() -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
              "--set", "nodes.mid.run=faulty:nope")
    assert p.returncode == 3
    # the summary ends with the located error: which replica, which module, which attribute
    assert re.search(r"^mid\.[01]: module 'faulty' has no attribute 'nope'$", p.stdout, re.M), \
        p.stdout[-2000:]
    assert leftovers(name) == []


def test_import_error_is_a_start_failure() -> None:
    name = unique()
    p = zflow("up", str(PIPELINE), "--plain", "--set", f"name={name}",
              env={"FAULTY_RAISE_AT_IMPORT": "1"})
    assert p.returncode == 3
    # every node imports faulty.py: whichever replica failed first is named, with the module
    assert re.search(r"^(src|mid|sink)\.\d: importing 'faulty' raised RuntimeError: configured "
                     r"to fail at import$", p.stdout, re.M), p.stdout[-2000:]
    assert leftovers(name) == []


def test_command_not_found_is_a_start_failure() -> None:
    name = unique()
    p = zflow("up", str(TOPO / "polyglot.yaml"), "--plain", "--set", f"name={name}",
              "--set", "nodes.upper.command=[zflow-no-such-program]")
    assert p.returncode == 3
    assert ("upper.0: cannot run 'zflow-no-such-program': No such file or directory (not found "
            "on PATH)") in p.stdout, p.stdout[-2000:]
    assert leftovers(name) == []


def _start_forever(name: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """An endless pipeline, returned once the barrier has opened (the run is fully up)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zflow", "up", str(PIPELINE), "--json", "--set", f"name={name}",
         "--set", "nodes.src.run=faulty:forever", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
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
    res = result_of(subprocess.CompletedProcess(proc.args, 130, out, err))
    assert (res["overall"], res["exit_code"], res["message"]) == ("interrupted", 130, "interrupted")
    assert leftovers(name) == []


def test_interrupt_keeps_the_result_of_an_endless_pipeline() -> None:
    """Ctrl-C on a source that never ends: the source stops, what is in flight drains, and the
    sink's end() runs: its result is shown, marked interrupted."""
    name = unique()
    proc = _start_forever(name, "--set", "nodes.sink.run=edges:Tally",
                          env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert proc.stdout is not None
    for line in proc.stdout:  # records have reached the sink (a Ctrl-C before is a run of 0)
        if line.startswith('{"event": "stats"') and json.loads(line)["nodes"]["sink"]["msgs_in"]:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-2000:]
    res = result_of(subprocess.CompletedProcess(proc.args, 130, out, err))
    assert res["overall"] == "interrupted" and res["message"] == "interrupted"
    result = res["results"]["sink"]
    assert result["interrupted"] is True and result["n"] == result["received"] > 0
    assert res["progress"]["done"] == result["n"]
    assert leftovers(name) == []


@pytest.mark.parametrize("gap", [0.0, 0.05, 0.1, 0.2])
def test_a_second_ctrl_c_still_exits_130(gap: float) -> None:
    """Two Ctrl-C in quick succession: the second kills the replicas at once, and whenever it
    lands (while stopping, or after the outcome is decided) zflow exits 130, not by SIGINT."""
    name = unique()
    proc = _start_forever(name)
    proc.send_signal(signal.SIGINT)
    time.sleep(gap)  # the gap between two key presses, not synchronisation
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-2000:]
    assert leftovers(name) == []


def _run_dir_of(pid: int) -> Path:
    """The run directory of the zflow process `pid`: where its control socket is bound (its
    socket fds' inodes, looked up in /proc/net/unix)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[6] in inodes and parts[7].endswith("/control"):
            return Path(parts[7]).parent
    raise AssertionError(f"zflow {pid} has no control socket")


def test_sigkill_of_zflow_leaves_no_orphans_and_no_run_directory() -> None:
    name = unique()
    proc = _start_forever(name)
    assert leftovers(name)
    run_dir = _run_dir_of(proc.pid)
    assert run_dir.name.startswith("zflow-") and (run_dir / "control").exists()
    proc.kill()
    proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    assert _wait_gone(name, 2.0) == []
    deadline = time.monotonic() + 2.0
    while run_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not run_dir.exists()


def test_fork_server_death_stops_the_run_cleanly() -> None:
    name = unique()
    proc = _start_forever(name)
    zygotes = [  # the child of zflow titled so (a fork of it, not a new interpreter)
        int(p) for p in os.listdir("/proc") if p.isdigit()
        and Path(f"/proc/{p}/cmdline").exists()
        and Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"zflow: fork server")
        and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(proc.pid)
    ]
    assert len(zygotes) == 1
    os.kill(zygotes[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err[-2000:]
    assert "fork server exited" in out
    assert _wait_gone(name, 2.0) == []


def test_replicas_never_import_from_the_invoking_directory(tmp_path: Path) -> None:
    """A checkout named zflow/ or a stray zmq.py / fractions.py where zflow is run from must not
    shadow the real modules in the fork server, the guard or any replica."""
    (tmp_path / "zflow").mkdir()  # `git clone … zflow` next to where you stand
    for path in ("zflow/__init__.py", "zmq.py", "fractions.py"):
        (tmp_path / path).write_text(f"raise SystemExit('{path} was imported')\n")
    script = Path(sys.executable).with_name("zflow")  # the installed command, as a user runs it
    name = unique()
    p = subprocess.run([str(script), "up", str(TOPO / "squares.yaml"), "--json",
                        "--set", f"name={name}", "--scale", "worker=2",
                        "--set", "nodes.ventilator.params.count=100"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert "imported" not in p.stdout + p.stderr, (p.stdout + p.stderr)[-2000:]
    assert assert_completed(p, done=100)["results"]["results"]["sum"] == sum(
        i * i for i in range(100))
    assert leftovers(name) == []


def test_the_forked_fork_server_finds_modules_as_an_exec_d_one(tmp_path: Path) -> None:
    """`zflow up` forks its fork server from itself (no second interpreter): its replicas must
    still not see the directory `python -m zflow` was run from (the CLI's first sys.path entry),
    and the fork server must hold none of the CLI's descriptors but its socket."""
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "strayname.py").write_text("X = 1\n")
    (tmp_path / "topo").mkdir()
    (tmp_path / "topo" / "probe.py").write_text(
        "import importlib.util, os\n"
        "def numbers():\n    return range(3)\n"
        "class Sink:\n"
        "    def __init__(self):\n        self.n = 0\n"
        "    def __call__(self, x):\n        self.n += 1\n"
        "    def end(self, totals):\n"
        "        server = os.getppid()\n"
        "        fds = sorted(int(f) for f in os.listdir(f'/proc/{server}/fd'))\n"
        "        kinds = [os.readlink(f'/proc/{server}/fd/{f}').split(':')[0] for f in fds]\n"
        "        own = [os.readlink(f'/proc/self/fd/{f}') for f in os.listdir('/proc/self/fd')\n"
        "               if os.path.exists(f'/proc/self/fd/{f}')]  # not listdir's own\n"
        "        return {'n': self.n, 'stray': importlib.util.find_spec('strayname') is not None,"
        " 'server_fds': kinds, 'own_pipes': sorted(f for f in own if f.startswith('pipe'))}\n")
    (tmp_path / "topo" / "t.yaml").write_text(
        "version: 1\nname: probe\nnodes:\n"
        "  src:\n    run: probe:numbers\n    sockets:\n      out: {type: PUSH, bind: auto}\n"
        "  sink:\n    run: probe:Sink\n    sockets:\n"
        "      in: {type: PULL, connect: src.out}\n")
    name = unique()
    with open(tmp_path / "held", "w") as held:  # an inheritable descriptor of the CLI's
        os.set_inheritable(held.fileno(), True)
        p = subprocess.run([sys.executable, "-m", "zflow", "up", str(tmp_path / "topo" / "t.yaml"),
                            "--json", "--set", f"name={name}"], capture_output=True, text=True,
                           cwd=tmp_path / "here", close_fds=False,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    res = assert_completed(p, done=3)["results"]["sink"]
    assert res["n"] == 3 and res["stray"] is False
    # stdin (/dev/null), stdout, stderr, its socket, its wakeup pipe's two ends: not `held`
    assert sorted(res["server_fds"]) == ["/dev/null", "pipe", "pipe", "pipe", "pipe", "socket"]
    # src and sink were forked in one batch: each holds its own stdout and stderr, not the
    # other's (held, they would not end when it exits)
    assert len(res["own_pipes"]) == 2 and len(set(res["own_pipes"])) == 2, res["own_pipes"]
    assert leftovers(name) == []


def test_replicas_never_walk_the_fork_servers_objects_but_collect_their_own(
        tmp_path: Path) -> None:
    """The fork server freezes its heap before it forks (zygote.py), and a replica freezes what
    its start-up made (the node's imports) when the stream starts (replica/main.py): during the
    stream its collector walks only what the stream made, never the pages it shares with the
    fork server nor the node's module-level state, and it still frees the node's own cycles."""
    (tmp_path / "gcprobe.py").write_text(
        "import gc, weakref\n"
        "TABLE = [[i] for i in range(20000)]  # module-level state, made at start-up\n"
        "def numbers():\n    return range(3)\n"
        "class Cycle:\n    pass\n"
        "class Sink:\n"
        "    def __call__(self, x):\n        pass\n"
        "    def end(self, totals):\n"
        "        a, b = Cycle(), Cycle()\n        a.b, b.a = b, a\n"
        "        gone = weakref.ref(a)\n        del a, b\n        gc.collect()\n"
        "        return {'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count(),\n"
        "                'walked': len(gc.get_objects()), 'cycle_freed': gone() is None}\n")
    (tmp_path / "t.yaml").write_text(
        "version: 1\nname: gcprobe\nnodes:\n"
        "  src:\n    run: gcprobe:numbers\n    sockets:\n      out: {type: PUSH, bind: auto}\n"
        "  sink:\n    run: gcprobe:Sink\n    sockets:\n"
        "      in: {type: PULL, connect: src.out}\n")
    name = unique()
    p = zflow("up", str(tmp_path / "t.yaml"), "--json", "--set", f"name={name}")
    res = assert_completed(p, done=3)["results"]["sink"]
    assert res["enabled"] is True and res["cycle_freed"] is True, res
    # frozen: the fork server's pyzmq, msgpack and zflow runtime (thousands of objects) and the
    # node's 20,000-list table; walked: what the stream made (a few hundred)
    assert res["frozen"] > 25000 and res["walked"] < 5000, res
    assert leftovers(name) == []


PRELOADED = (
    "import os, sys\n"
    "with open(os.environ['IMPORTS'], 'a') as f:\n"
    "    f.write(f\"{os.getpid()} {os.getcwd()} {sys.path[0]}\\n\")\n"
    "print('heavy module loaded', flush=True)\n"
    "{extra}"
    "def double(x):\n    return {'x': 2 * x, 'pid': os.getpid()}\n")
ENDS = (
    "import os\n"
    "def numbers():\n    return range(30)\n"
    "class Sink:\n"
    "    def __init__(self):\n        self.got, self.pids = [], set()\n"
    "    def __call__(self, r):\n        self.got.append(r['x']); self.pids.add(r['pid'])\n"
    "    def end(self, totals):\n"
    "        return {'sum': sum(self.got), 'pids': sorted(self.pids),\n"
    "                'leaked_env': os.environ.get('IMPORTS')}\n")


def _preload_topology(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "heavy.py").write_text(PRELOADED.replace("{extra}", extra))
    (tmp_path / "ends.py").write_text(ENDS)
    (tmp_path / "t.yaml").write_text(
        "version: 1\nname: preload\nnodes:\n"
        "  src:\n    run: ends:numbers\n    sockets:\n      out: {type: PUSH, bind: auto}\n"
        "  mid:\n    run: heavy:double\n    replicas: 3\n    preload: true\n"
        "    cwd: lib\n"
        f"    env: {{IMPORTS: {tmp_path / 'imports'}, PYTHONPATH: {tmp_path / 'lib'}}}\n"
        "    sockets:\n      inp: {type: PULL, connect: src.out}\n"
        "      out: {type: PUSH, connect: sink.inp}\n"
        "  sink:\n    run: ends:Sink\n    sockets:\n      inp: {type: PULL, bind: auto}\n")
    return tmp_path / "t.yaml"


def test_a_preloaded_module_is_imported_once_in_the_fork_server(tmp_path: Path) -> None:
    """`preload: true`: a fork server of the node's own imports its module once, as a replica
    would (the node's environment, working directory and PYTHONPATH), and forks the replicas
    from it; what the import printed is in the node's log; nothing of the node's leaks to the
    others."""
    name = unique()
    p = zflow("up", str(_preload_topology(tmp_path)), "--json", "--set", f"name={name}")
    res = assert_completed(p, done=30)["results"]["sink"]
    assert res["sum"] == 2 * sum(range(30)) and res["leaked_env"] is None, res
    imports = (tmp_path / "imports").read_text().splitlines()
    assert len(imports) == 1, imports  # once, not once per replica
    pid, cwd, path0 = imports[0].split()
    assert int(pid) not in res["pids"] and len(res["pids"]) == 3, (imports, res)
    # as a replica: the topology's directory first, then the node's PYTHONPATH (heavy.py is
    # only found there), in the node's working directory
    assert cwd == str(tmp_path / "lib") and path0 == str(tmp_path), imports
    assert (p.stdout + p.stderr).count("heavy module loaded") == 1, p.stdout[-2000:]
    assert leftovers(name) == []


def test_a_preload_that_fails_leaves_each_replica_to_import_the_module(tmp_path: Path) -> None:
    """A module that cannot be preloaded (here: it asks for its node's context, which only a
    replica has) is imported by each replica; the node's log says why in one line, not a
    traceback, and the run completes."""
    name = unique()
    topo = _preload_topology(tmp_path, extra="import zflow\nME = zflow.context().replica\n")
    p = zflow("up", str(topo), "--json", "--set", f"name={name}")
    res = assert_completed(p, done=30)["results"]["sink"]
    assert res["sum"] == 2 * sum(range(30)), res
    imports = (tmp_path / "imports").read_text().splitlines()
    assert len(imports) == 4, imports  # the fork server's attempt, then each replica's
    assert sorted(int(x.split()[0]) for x in imports[1:]) == res["pids"], (imports, res)
    out = p.stdout + p.stderr
    assert out.count("preloading 'heavy' failed (RuntimeError") == 1, out
    assert "Traceback" not in out, out[-3000:]
    assert leftovers(name) == []


def test_a_preloaded_module_never_stands_in_for_another_nodes_module_of_its_name(
        tmp_path: Path) -> None:
    """Two nodes whose modules share a name on their own PYTHONPATHs: the one preloaded in the
    fork server must not be what the other node's replicas run."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    (tmp_path / "a" / "tasks.py").write_text("def numbers():\n    return range(5)\n")
    (tmp_path / "b" / "tasks.py").write_text(
        "class Sink:\n    def __init__(self):\n        self.n = 0\n"
        "    def __call__(self, x):\n        self.n += 1\n"
        "    def end(self, totals):\n        return {'n': self.n, 'file': __file__}\n")
    (tmp_path / "t.yaml").write_text(
        "version: 1\nname: same\nnodes:\n"
        f"  src:\n    run: tasks:numbers\n    preload: true\n"
        f"    env: {{PYTHONPATH: {tmp_path / 'a'}}}\n"
        "    sockets:\n      out: {type: PUSH, bind: auto}\n"
        f"  sink:\n    run: tasks:Sink\n    env: {{PYTHONPATH: {tmp_path / 'b'}}}\n"
        "    sockets:\n      inp: {type: PULL, connect: src.out}\n")
    name = unique()
    p = zflow("up", str(tmp_path / "t.yaml"), "--json", "--set", f"name={name}")
    res = assert_completed(p, done=5)["results"]["sink"]
    assert res == {"n": 5, "file": str(tmp_path / "b" / "tasks.py")}, res
    assert leftovers(name) == []


ROGUE = (
    "import os, signal, threading\n"
    "from helpers import WHO\n"  # its own directory's helpers.py, not the sink's
    "os.environ.setdefault('OMP_NUM_THREADS', '1')\n"
    "signal.signal(signal.SIGCHLD, signal.SIG_DFL)\n"
    "import subprocess\nsubprocess.run(['true'])\n"  # a SIGCHLD while it imports
    "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
    "def numbers():\n    return [WHO, os.environ.get('OMP_NUM_THREADS')] * 3\n")


def test_what_a_preloaded_import_does_stays_in_its_node(tmp_path: Path) -> None:
    """A module that imports a helper of a common name, sets an environment variable, resets
    SIGCHLD and starts a thread at import: its own replicas see all of it, as if each had
    imported it; the other nodes' replicas and zflow's fork server see none of it (before node
    servers, the sink ran the source's helpers.py, and the SIGCHLD reset hung the run)."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "helpers.py").write_text(f"WHO = {d!r}\n")
    (tmp_path / "a" / "rogue.py").write_text(ROGUE)
    (tmp_path / "b" / "sinkmod.py").write_text(
        "import os\nfrom helpers import WHO\n"
        "class Sink:\n    def __init__(self):\n        self.got = []\n"
        "    def __call__(self, x):\n        self.got.append(x)\n"
        "    def end(self, totals):\n"
        "        return {'got': sorted(map(str, self.got)), 'who': WHO,\n"
        "                'omp': os.environ.get('OMP_NUM_THREADS')}\n")
    (tmp_path / "t.yaml").write_text(
        "version: 1\nname: rogue\nnodes:\n"
        "  src:\n    run: rogue:numbers\n    preload: true\n"
        f"    env: {{PYTHONPATH: {tmp_path / 'a'}}}\n"
        "    sockets:\n      out: {type: PUSH, bind: auto}\n"
        "  sink:\n    run: sinkmod:Sink\n"
        f"    env: {{PYTHONPATH: {tmp_path / 'b'}}}\n"
        "    sockets:\n      inp: {type: PULL, connect: src.out}\n")
    name = unique()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    p = subprocess.run([sys.executable, "-m", "zflow", "up", str(tmp_path / "t.yaml"), "--json",
                        "--set", f"name={name}"], capture_output=True, text=True, env=env)
    res = assert_completed(p, done=6)["results"]["sink"]
    # the source's replica: its own helpers and the variable its import set
    assert res["got"] == ["1"] * 3 + ["a"] * 3, res
    assert res["who"] == "b" and res["omp"] is None, res  # the sink: its own, untouched
    assert "importing 'rogue' started 1 thread(s)" in p.stdout + p.stderr
    assert "\\u0011" not in p.stdout  # no byte of the fork server's wakeup pipe in the log
    assert leftovers(name) == []


def test_a_preload_that_hangs_is_abandoned_for_each_replica_importing_it(
        tmp_path: Path) -> None:
    """An import that never ends in the node server (here: only there) does not hang the
    start: after ZFLOW_PRELOAD_TIMEOUT the node server is killed and each replica imports the
    module itself."""
    name = unique()
    hang = ("import time\n"
            "if int(os.environ['ZFLOW_PARENT_PID']) != os.getppid():  # the node server only\n"
            "    time.sleep(600)\n")
    topo = _preload_topology(tmp_path, extra=hang)
    p = zflow("up", str(topo), "--json", "--set", f"name={name}",
              env={"ZFLOW_PRELOAD_TIMEOUT": "0.5"})
    res = assert_completed(p, done=30)["results"]["sink"]
    assert res["sum"] == 2 * sum(range(30)), res
    assert "preloading 'heavy' took over 0.5 s; each replica imports it itself" in p.stdout + \
        p.stderr
    assert leftovers(name) == []


def test_a_preloaded_import_counts_in_its_nodes_cpu(tmp_path: Path) -> None:
    """The import a node server does for its node is what each replica would have spent
    importing: it is counted in the node's CPU (in its first replica's), not dropped."""
    name = unique()
    burn = ("import time\n_t = time.process_time()\n"
            "while time.process_time() - _t < 0.3:\n    pass\n")
    p = zflow("up", str(_preload_topology(tmp_path, extra=burn)), "--json", "--set",
              f"name={name}")
    res = assert_completed(p, done=30)
    assert res["nodes"]["mid"]["cpu_s"] >= 0.3, res["nodes"]["mid"]
    assert leftovers(name) == []


@pytest.mark.timeout(60)
def test_ctrl_c_while_a_preloaded_node_imports_stops_the_run(tmp_path: Path) -> None:
    """zflow waits for a node server's import; Ctrl-C meanwhile ends the start at once, not
    when the import ends: a start failure that says why, a result line, nothing left."""
    name = unique()
    hang = ("import time\n"
            "if int(os.environ['ZFLOW_PARENT_PID']) != os.getppid():  # the node server only\n"
            "    time.sleep(600)\n")
    topo = _preload_topology(tmp_path, extra=hang)
    proc = subprocess.Popen([sys.executable, "-m", "zflow", "up", str(topo), "--json", "--set",
                             f"name={name}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        # the node server has imported as far as the sleep: it wrote its line to `imports`
        deadline = time.monotonic() + 30
        while not (tmp_path / "imports").exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a file another process writes, not a delay
        assert (tmp_path / "imports").exists()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == exitcodes.START_FAILED, out[-2000:]
        res = [json.loads(x) for x in out.splitlines() if x.startswith('{"event": "result"')]
        assert res and "interrupted while a preloaded node imported its module" in \
            res[-1]["message"], out[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    deadline = time.monotonic() + 5
    while leftovers(name) and time.monotonic() < deadline:
        time.sleep(0.05)  # the guard and PDEATHSIG take them down; poll until they have
    assert leftovers(name) == []


@pytest.mark.long
@pytest.mark.timeout(180)
def test_five_hundred_workers_start_wire_and_end() -> None:
    """Start-up at scale: 502 replicas with PUB/SUB through one barrier (the launcher asks the
    fork server for them in overlapping batches; asking for all at once hung at the 278th)."""
    name = unique()
    p = zflow("up", str(TOPO / "squares.yaml"), "--json", "--set", f"name={name}",
              "--scale", "worker=500", "--set", "nodes.ventilator.params.count=2000")
    res = assert_completed(p, done=2000)
    assert res["results"]["results"]["sum"] == sum(i * i for i in range(2000))
    assert leftovers(name) == []
