"""The run registry's parts without a run: names, stale detection, rotated logs, merging and
following them, `--since`, the snapshot's round trip into a model, metrics addresses."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from zflow.runs import logs, registry
from zflow.runs.recorder import RotatingLog, RunLogs
from zflow.status.metrics import parse_address
from zflow.status.model import EdgeInfo, NodeInfo, StatusModel
from zflow.status.render import render_status
from zflow.status.saved import dump, restore


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(registry.STATE_ENV, str(tmp_path / "state"))
    return tmp_path / "state"


def test_two_runs_of_one_topology_get_distinct_names_in_a_private_directory(state: Path) -> None:
    names = [registry.allocate("squares").name for _ in range(3)]
    assert names == ["squares", "squares-2", "squares-3"]
    assert os.stat(state).st_mode & 0o777 == 0o700
    assert os.stat(state / "squares-2").st_mode & 0o777 == 0o700
    registry.find("squares-2").remove()  # type: ignore[union-attr]
    assert registry.allocate("squares").name == "squares-2"  # a removed name is free again
    assert registry.find("../state") is None and registry.find("nope") is None


def test_a_run_is_alive_only_while_pid_and_start_time_both_match(state: Path) -> None:
    run = registry.allocate("t")
    me = os.getpid()
    registry.write_json(run.path / "run.json", {"pid": me, "pid_start": registry.proc_start(me)})
    assert run.alive() and run.state() == "starting"  # no status yet
    registry.write_json(run.path / "status.json", {"overall": "running"})
    assert run.state() == "running"
    # the same pid with another start time is another process (a recycled pid)
    run.update_info(pid_start=registry.proc_start(me) - 1)
    assert not run.alive() and run.state() == registry.STALE
    registry.write_json(run.path / "outcome.json", {"state": "failed", "exit_code": 1})
    assert run.state() == "failed" and run.exit_code() == 1


def test_a_zombie_is_not_alive() -> None:
    p = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while registry.proc_start(p.pid) is not None:  # exited, not reaped yet: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    p.wait()


def test_rotation_keeps_a_few_files_newest_first(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "w.0.log", max_bytes=100, keep=2)
    for i in range(10):
        log.write(f"{i:02d} " + "x" * 36 + "\n")  # 40 bytes: two lines a file
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["w.0.log", "w.0.log.1", "w.0.log.2"]
    assert (tmp_path / "w.0.log").read_text().startswith("08 ")
    assert (tmp_path / "w.0.log.1").read_text().startswith("06 ")
    assert (tmp_path / "w.0.log.2").read_text().startswith("04 ")  # 00-03 dropped


def _write(d: Path, node: str, replica: int, lines: list[tuple[float, str]]) -> None:
    with open(d / f"{node}.{replica}.log", "a") as f:
        for t, text in lines:
            f.write(f"{logs.stamp_of(t)} stdout {text}\n")


def test_history_merges_replicas_in_time_order_with_tail_and_since(tmp_path: Path) -> None:
    t = 1_800_000_000.0
    _write(tmp_path, "src", 0, [(t + 0, "a"), (t + 2, "c"), (t + 4, "e")])
    _write(tmp_path, "worker", 1, [(t + 1, "b"), (t + 3, "d")])
    files = logs.replica_files(tmp_path)
    keys = logs.select(files, None)
    assert [x.text for x in logs.history(files, keys)] == ["a", "b", "c", "d", "e"]
    assert [x.text for x in logs.history(files, keys, tail=1)] == ["d", "e"]
    assert [x.text for x in logs.history(files, keys, since=logs.stamp_of(t + 2))] == \
        ["c", "d", "e"]
    assert logs.select(files, "worker") == {("worker", 1)}
    assert logs.select(files, "worker.1") == {("worker", 1)}
    assert logs.select(files, "worker.0") == set() and logs.select(files, "nope") == set()
    fmt = logs.formatter(keys, prefix=True, color=False)
    assert [fmt(x) for x in logs.history(files, keys)][:2] == ["src.0    │ a", "worker.1 │ b"]


def test_history_reads_rotated_files_oldest_first(tmp_path: Path) -> None:
    out = RunLogs(tmp_path, max_bytes=100, keep=3)  # two 40-byte lines a file
    for i in range(6):
        out.write("w", 0, "stdout", f"line {i}")
    out.close()
    assert len(list(tmp_path.iterdir())) == 3
    files = logs.replica_files(tmp_path)
    assert [x.text for x in logs.history(files, logs.select(files, None))] == \
        [f"line {i}" for i in range(6)]


def test_follower_reads_across_a_rotation_and_new_replicas(tmp_path: Path) -> None:
    out = RunLogs(tmp_path, max_bytes=200, keep=3)
    out.write("w", 0, "stdout", "first")
    out.flush()
    f = logs.Follower(tmp_path, None)
    f.skip_to_end({("w", 0)})
    assert f.poll() == []
    for i in range(8):  # 8 x 60 bytes: rotated twice under the follower
        out.write("w", 0, "stdout", f"n{i} " + "y" * 30)
    out.write("w", 1, "zflow", "stopping")
    out.flush()
    got = f.poll()
    f.close()
    out.close()
    assert [x.text.split()[0] for x in got if x.replica == 0] == [f"n{i}" for i in range(8)]
    assert [(x.replica, x.stream, x.text) for x in got if x.replica == 1] == \
        [(1, "zflow", "stopping")]


def test_since_takes_durations_and_timestamps() -> None:
    now = 1_800_000_000.0
    assert logs.parse_since("10m", now) == logs.stamp_of(now - 600)
    assert logs.parse_since("1h30m", now) == logs.stamp_of(now - 5400)
    assert logs.parse_since("2d", now) == logs.stamp_of(now - 2 * 86400)
    assert logs.parse_since("2027-01-15T08:00:00Z", now) == "2027-01-15T08:00:00.000000Z"
    for bad in ("", "ten minutes", "5x"):
        with pytest.raises(ValueError, match="not a duration"):
            logs.parse_since(bad, now)


def test_a_saved_model_draws_as_the_live_one() -> None:
    clock = [100.0]
    m = StatusModel("pipe", [NodeInfo("src", 1, "source", "python"),
                             NodeInfo("sink", 2, "sink", "python")],
                    [EdgeInfo("src.out", "sink.inp", src_type="PUSH")], clock=lambda: clock[0])
    for r in (0, 1):
        m.replica_state("sink", r, "running")
    m.replica_state("src", 0, "running")
    for step in range(1, 6):
        clock[0] += 0.25
        m.replica_counters("src", 0, {"out": (step * 100, step * 100, 0, 0)})
        m.replica_counters("sink", 0, {"inp": (step * 60, 0, 0, 0)})
        m.replica_counters("sink", 1, {"inp": (step * 40, 0, 0, 0)})
    m.replica_restart("sink", 1)
    m.log("sink", 1, "stderr", "oops")
    m.set_total(500)
    m.replica_usage("sink", 1, 0.5, 30_000_000)  # its first process's, exact
    m.replica_proc("src", 0, 7, 40.0, 20_000_000, 0.25)
    back = restore(json.loads(json.dumps(dump(m))))
    assert back.snapshot(logs=True) == m.snapshot(logs=True)
    assert back.snapshot()["nodes"]["sink"]["cpu_s"] == 0.5

    def text(model: StatusModel) -> str:
        from rich.console import Console

        c = Console(width=120, record=True, color_system=None, file=open(os.devnull, "w"))
        c.print(render_status(model, per_replica=True))
        return c.export_text()

    assert text(back) == text(m)


def test_metrics_addresses() -> None:
    assert parse_address("9100") == ("127.0.0.1", 9100)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_address("[::1]:9100") == ("::1", 9100)
    for bad in ("http", "1.2.3.4:", "host:70000", "-1"):
        with pytest.raises(ValueError, match=r"\[HOST:\]PORT"):
            parse_address(bad)


def test_probes_follow_the_run_and_the_supervisor_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error
    import urllib.request

    from zflow.status import metrics

    model = StatusModel("pipe", [NodeInfo("cmd", 1, "sink", "command")], [])
    server = metrics.MetricsServer("127.0.0.1:0").attach(model)
    base = server.url.rsplit("/", 1)[0]

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    server.start()
    try:
        assert get("/ready") == (503, "starting\n")  # the barrier has not opened
        model.set_overall("running")
        server.event("overall", state="running")
        assert get("/ready") == (200, "running\n") and get("/healthz") == (200, "ok\n")
        text = get("/metrics")[1]
        assert 'zflow_run_state{state="running",topology="pipe"} 1.0' in text
        assert "zflow_node_records_in_total{" not in text  # a command node's: unknown, not 0
        assert 'zflow_node_replicas{node="cmd",topology="pipe"} 1.0' in text
        model.set_overall("draining")
        server.event("overall", state="interrupted")
        assert get("/ready") == (503, "draining\n")
        monkeypatch.setattr(metrics, "HEALTH_STALE", 0.0)  # the loop stopped refreshing
        assert get("/healthz") == (503, "supervisor not responding\n")
    finally:
        server.close()
