"""Long-running topologies end to end (issue 15), through the real CLI in subprocesses: the
detached lifecycle, /metrics during a run, a SIGKILLed detached supervisor, and bad input.

Every test has its own registry (ZFLOW_STATE_DIR), so it never sees the user's runs, and a
unique topology name, so `leftovers` finds only its own processes. Nothing waits by sleeping:
each wait polls for its condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from zflow import exitcodes
from zflow.runs.registry import proc_start

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_runtime_e2e import leftovers, unique  # noqa: E402

TESTS = Path(__file__).resolve().parent / "topologies"
TICKER = TESTS / "ticker.yaml"


@pytest.fixture
def state(tmp_path: Path) -> dict[str, str]:
    """The environment of a test's zflow commands: its own registry."""
    return {**os.environ, "ZFLOW_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}


def zflow(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zflow", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def until(cond: Callable[[], Any], within: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {within}s: {what}")


def run_info(env: dict[str, str], name: str) -> dict[str, Any]:
    p = zflow(env, "ps", name, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def alive(pid: int, start: int | None) -> bool:
    return start is not None and proc_start(pid) == start


@contextlib.contextmanager
def attached(env: dict[str, str], out_path: Path, *args: str) -> Iterator[subprocess.Popen]:
    """`zflow up --json ARGS` (its stdout in `out_path`), always reaped: killed if still running."""
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "zflow", "up", "--json", *args],
                                stdout=out, stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def interrupt(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == exitcodes.INTERRUPTED


def start_detached(env: dict[str, str], name: str, *extra: str) -> subprocess.CompletedProcess:
    p = zflow(env, "up", "-d", str(TICKER), "--set", f"name={name}", *extra)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout == f"{name}\n"
    return p


def test_detached_lifecycle_up_ps_logs_stop_down(state: dict[str, str]) -> None:
    name = unique()
    start_detached(state, name, "--set", "nodes.src.params.n=0")  # endless
    entry = Path(state["ZFLOW_STATE_DIR"]) / name
    info = json.loads((entry / "run.json").read_text())
    sup, sup_start = info["pid"], info["pid_start"]
    assert alive(sup, sup_start)
    assert os.getsid(sup) == sup  # its own session: closing the terminal does not touch it

    listing = zflow(state, "ps")
    assert listing.returncode == 0
    row = next(x for x in listing.stdout.splitlines() if x.startswith(name + " "))
    assert row.split()[1] == "running" and str(sup) in row.split()

    # its nodes and replicas, drawn by the live screen's renderers from the snapshot
    shown = until(lambda: (lambda p: p if "double" in p.stdout and "  .1" in p.stdout
                           else None)(zflow(state, "ps", name)), what="ps NAME")
    assert f"run {name} · running" in shown.stdout
    assert "ticker.py" not in shown.stdout and "src.out → double.inp" in shown.stdout

    follow = subprocess.Popen([sys.executable, "-m", "zflow", "logs", "-f", name], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=state)
    got = b""  # read from the pipe itself: communicate() below must find what is left there
    try:
        assert follow.stdout is not None
        fd = follow.stdout.fileno()
        deadline = time.monotonic() + 20
        while b"tick 100\n" not in got:  # lines arrive while the run goes on
            assert time.monotonic() < deadline, got
            if select.select([fd], [], [], 0.5)[0]:
                got += os.read(fd, 65536)
        seen = got.decode().splitlines(keepends=True)
        assert any(x.startswith("src.0    │ tick 50") for x in seen), seen
        procs = json.loads((entry / "procs.json").read_text())
        assert len(procs) == 4 and all(alive(p, s) for p, s in procs)

        stop = zflow(state, "stop", name)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout == f"{name}: interrupted (exit 130)\n"
        out, err = follow.communicate(timeout=20)  # -f ends by itself once the run has ended
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert follow.returncode == 0, err
    seen = (got.decode() + out).splitlines(keepends=True)
    assert any(x.startswith("sink.0   │ total after 100:") for x in seen), seen
    assert seen.index("src.0    │ tick 50\n") < seen.index("src.0    │ tick 100\n")

    # nothing of the run is alive; its outcome is kept until `down`
    assert not alive(sup, sup_start)
    assert not any(alive(p, s) for p, s in procs) and leftovers(name) == []
    d = run_info(state, name)
    assert (d["state"], d["exit_code"]) == ("interrupted", 130)
    assert d["status"]["results"]["sink"]["interrupted"] is True
    again = zflow(state, "stop", name)
    assert (again.returncode, again.stdout) == (0, f"{name}: interrupted (exit 130) (had "
                                                   "already ended)\n")
    everything = zflow(state, "logs", name, "--no-log-prefix", "sink")
    assert everything.stdout.splitlines()[0].startswith("total after 100: ")
    assert zflow(state, "logs", name, "--tail", "1", "src.0").stdout.count("\n") == 1
    nope = zflow(state, "logs", name, "nope")
    assert nope.returncode == exitcodes.FAILED
    assert nope.stderr == f"zflow: run {name} has no node or replica 'nope' (nodes: src, " \
                          "double, sink)\n"
    bad = zflow(state, "logs", name, "--since", "yesterday")
    assert bad.returncode == exitcodes.USAGE and "not a duration" in bad.stderr
    top = zflow(state, "top", name)  # of a run that has ended: its summary, at once
    assert top.returncode == 0 and f"{name} interrupted in " in top.stdout
    assert "sink: n=" in top.stdout and "interrupted=True" in top.stdout

    down = zflow(state, "down", name)
    assert (down.returncode, down.stdout) == (0, f"{name}: interrupted (exit 130); removed\n")
    assert not entry.exists() and os.listdir(state["ZFLOW_STATE_DIR"]) == []
    gone = zflow(state, "ps", name)
    assert gone.returncode == exitcodes.FAILED
    assert f"no run named {name!r} (there are no runs" in gone.stderr


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "topology"))):
            s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_during_a_run_match_the_final_totals(state: dict[str, str],
                                                     tmp_path: Path) -> None:
    name = unique()
    out_path = tmp_path / "out.jsonl"
    with attached(state, out_path, "--metrics", "0", str(TICKER), "--set", f"name={name}") as proc:
        assert proc.stderr is not None
        said = proc.stderr.readline()  # printed before the run starts: the bound port
        assert said.startswith("zflow: metrics on http://127.0.0.1:"), said
        url = said.split()[3]
        base = url.rsplit("/", 1)[0]
        key = ("zflow_node_records_in_total", (("node", "sink"),))
        # the source sends 200 records and idles: the counters settle at 200 while it runs
        m = until(lambda: (lambda s: s if s.get(key) == 200 else None)(_scrape(url)),
                  what="the sink's records_in reaching 200")
        assert _get(base + "/ready") == (200, "running\n")
        assert _get(base + "/healthz") == (200, "ok\n")
        assert _get(base + "/nope")[0] == 404
        assert m[("zflow_run_state", (("state", "running"),))] == 1
        assert m[("zflow_run_state", (("state", "completed"),))] == 0
        assert m[("zflow_node_records_in_total", (("node", "double"),))] == 200
        assert m[("zflow_node_records_out_total", (("node", "double"),))] == 200
        assert sum(m[("zflow_replica_records_in_total", (("node", "double"), ("replica", i)))]
                   for i in "01") == 200
        assert m[("zflow_socket_records_in_total", (("node", "sink"), ("socket", "inp")))] == 200
        edge = (("dst", "sink.inp"), ("src", "double.out"))
        assert m[("zflow_edge_records_sent_total", edge)] == 200
        assert m[("zflow_edge_records_received_total", edge)] == 200
        assert m[("zflow_edge_in_flight", edge)] == 0
        for node, i in (("src", "0"), ("double", "0"), ("double", "1"), ("sink", "0")):
            labels = (("node", node), ("replica", i), ("state", "running"))
            assert m[("zflow_replica_state", labels)] == 1
        assert m[("zflow_node_restarts_total", (("node", "double"),))] == 0
        assert m[("zflow_node_replicas_up", (("node", "double"),))] == 2
        scraped_src = m[("zflow_node_records_out_total", (("node", "src"),))]
        # once sampled (a second in), what each replica used so far is exposed too
        rl = (("node", "sink"), ("replica", "0"))
        m = until(lambda: (lambda s: s if ("zflow_replica_cpu_seconds_total", rl) in s
                           else None)(_scrape(url)), what="the sink's CPU seconds")
        assert m[("zflow_replica_cpu_seconds_total", rl)] >= 0
        assert m[("zflow_replica_max_rss_bytes", rl)] > 1 << 20  # a Python process, at least
        interrupt(proc)
    lines = [json.loads(x) for x in out_path.read_text().splitlines() if x.startswith("{")]
    res = next(x for x in lines if x.get("event") == "result")
    nodes = res["nodes"]
    assert nodes["sink"]["msgs_in"] == m[key] == res["results"]["sink"]["n"] == 200
    assert nodes["double"]["msgs_out"] == 200
    assert scraped_src <= nodes["src"]["msgs_out"] == 200
    with pytest.raises(OSError):  # the endpoint goes with the run
        urllib.request.urlopen(url, timeout=2)
    assert leftovers(name) == []


def test_metrics_errors_say_why_and_start_nothing(state: dict[str, str], tmp_path: Path) -> None:
    name = unique()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = zflow(state, "up", "--metrics", str(port), str(TICKER), "--set", f"name={name}")
    assert p.returncode == exitcodes.START_FAILED, p.stderr
    assert f"--metrics {port}: cannot listen on 127.0.0.1:{port}" in p.stderr
    assert "Traceback" not in p.stderr
    bad = zflow(state, "up", "--metrics", "localhost:http", str(TICKER))
    assert bad.returncode == exitcodes.USAGE and "is not [HOST:]PORT" in bad.stderr
    fake = tmp_path / "fake" / "prometheus_client"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**state, "PYTHONPATH": str(fake.parent)}
    missing = zflow(env, "up", "-d", "--metrics", "0", str(TICKER), "--set", f"name={name}")
    assert missing.returncode == exitcodes.USAGE
    assert "pip install 'zflow[metrics]'" in missing.stderr and "Traceback" not in missing.stderr
    assert leftovers(name) == [] and not Path(state["ZFLOW_STATE_DIR"], name).exists()


def test_a_sigkilled_detached_supervisor_is_stale_and_down_cleans_up(
        state: dict[str, str]) -> None:
    name = unique()
    start_detached(state, name, "--set", "nodes.src.params.n=0")
    entry = Path(state["ZFLOW_STATE_DIR"]) / name
    procs = until(lambda: (lambda x: x if x and len(x) == 4 else None)(
        json.loads((entry / "procs.json").read_text()) if (entry / "procs.json").exists()
        else None), what="every replica recorded")
    info = json.loads((entry / "run.json").read_text())
    os.kill(info["pid"], signal.SIGKILL)
    # the orphan guard kills every replica of the dead supervisor
    until(lambda: not any(alive(p, s) for p, s in procs), within=10, what="replicas gone")
    assert until(lambda: run_info(state, name)["state"] == "stale", what="ps says stale")
    listing = zflow(state, "ps")
    assert next(x for x in listing.stdout.splitlines() if x.startswith(name)).split()[1] == \
        "stale"
    shown = zflow(state, "ps", name)
    assert "its supervisor is gone without an outcome" in shown.stdout
    stop = zflow(state, "stop", name)
    assert stop.returncode == exitcodes.FAILED and f"zflow down {name}" in stop.stderr
    down = zflow(state, "down", name)
    assert (down.returncode, down.stdout) == (0, f"{name}: stale; removed\n")
    assert not entry.exists() and leftovers(name) == []


def test_down_kills_what_a_dead_guard_left(state: dict[str, str]) -> None:
    """Supervisor and guard both killed (a `kill -9` of the whole tree): `down` finds the
    recorded replicas still alive by pid and start time and kills their process groups."""
    root = Path(state["ZFLOW_STATE_DIR"]) / "orphaned"
    (root / "logs").mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()  # a pid that has exited: the supervisor that is gone
        (root / "run.json").write_text(json.dumps({"name": "orphaned", "pid": dead.pid,
                                                   "pid_start": 1, "started": time.time()}))
        (root / "procs.json").write_text(json.dumps([[sleeper.pid, proc_start(sleeper.pid)]]))
        assert run_info(state, "orphaned")["state"] == "stale"
        down = zflow(state, "down", "orphaned")
        assert down.returncode == 0, down.stderr
        assert down.stdout == "orphaned: stale; removed, 1 leftover process(es) killed\n"
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        assert not root.exists()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        sleeper.wait()


def test_bad_names_and_arguments_get_a_message_and_a_code(state: dict[str, str]) -> None:
    for args in (("ps", "nope"), ("logs", "nope"), ("top", "nope"), ("stop", "nope"),
                 ("down", "nope")):
        p = zflow(state, *args)
        assert p.returncode == exitcodes.FAILED, args
        assert p.stderr == "zflow: no run named 'nope' (there are no runs; 'zflow ps' lists " \
                           "them)\n", args
    assert zflow(state, "down").returncode == exitcodes.USAGE
    empty = zflow(state, "ps")
    assert empty.returncode == 0 and "no runs" in empty.stderr
    assert json.loads(zflow(state, "ps", "--json").stdout) == []


def test_a_detached_start_failure_is_reported_like_an_attached_one(
        state: dict[str, str]) -> None:
    name = unique()
    args = ("--set", f"name={name}", "--set", "nodes.double.run=ticker:nope")
    attached = zflow(state, "up", "--quiet", str(TICKER), *args)
    detached = zflow(state, "up", "-d", str(TICKER), *args)
    assert attached.returncode == detached.returncode == exitcodes.START_FAILED
    said = "module 'ticker' has no attribute 'nope'"
    assert said in attached.stdout and said in detached.stdout, detached.stdout
    invalid = zflow(state, "up", "-d", str(TICKER), "--set", "nodes.double.replicas=0")
    assert invalid.returncode == exitcodes.FAILED and "replicas" in invalid.stderr
    assert os.listdir(state["ZFLOW_STATE_DIR"]) == []  # nothing ran: nothing is kept
    assert leftovers(name) == []


def test_watch_restarts_the_node_whose_code_changed(state: dict[str, str],
                                                     tmp_path: Path) -> None:
    """--watch: a node's module rewritten → its replicas restart with the new code, the rest
    run on; one more replica in the topology joins the running node and takes records; fewer is
    said, not applied."""
    name = unique()
    work = tmp_path / "topo"
    work.mkdir()
    for f in ("ticker.py", "ticker.yaml"):
        (work / f).write_text((TESTS / f).read_text())
    (work / "watched.py").write_text("def double(x):\n    return 2 * x\n")
    out_path = tmp_path / "out.jsonl"

    def events() -> list[dict]:
        return [json.loads(x) for x in out_path.read_text().splitlines() if x.startswith("{")]

    def said(node: str, text: str) -> list[dict]:
        return [e for e in events() if e.get("event") == "log" and e.get("node") == node
                and text in e.get("line", "")]

    with attached(state, out_path, "--watch", str(work / "ticker.yaml"), "--set", f"name={name}",
                  "--set", "nodes.src.params.n=0", "--set", "nodes.double.run=watched:double",
                  # records queued to a replica that is restarted are lost in best-effort
                  # delivery: the drain after the interrupt waits this long for them
                  "--drain-timeout", "1") as proc:
        until(lambda: any(e.get("event") == "overall" and e.get("state") == "running"
                          for e in events()), what="running")
        (work / "watched.py").write_text(
            "print('v2 loaded', flush=True)\n\ndef double(x):\n    return 3 * x\n")
        until(lambda: len(said("double", "v2 loaded")) == 2, what="both replicas on v2")
        assert {e["replica"] for e in said("double", "reloading: ")} == {0, 1}
        assert said("src", "reloading") == [] and said("sink", "reloading") == []
        topo = work / "ticker.yaml"
        text = topo.read_text()
        topo.write_text(text.replace("replicas: 2", "replicas: 3"))  # one more, the rest run on
        until(lambda: any(e.get("event") == "state" and (e["node"], e["replica"], e["state"])
                          == ("double", 2, "running") for e in events()), what="double.2")
        done = until(lambda: (lambda n: n if n > 0 else None)(
            next((e["nodes"]["double"]["replica"][2]["msgs_in"] for e in reversed(events())
                  if e.get("event") == "stats" and len(e["nodes"]["double"]["replica"]) == 3),
                 0)), what="double.2 taking records")
        assert done > 0
        topo.write_text(text)  # fewer: not while it runs
        until(lambda: any("double: replicas 3 → 2: not applied: fewer replicas need a new run"
                          in e.get("message", "") for e in events()
                          if e.get("event") == "error"), what="a note")
        interrupt(proc)
    res = next(e for e in events() if e.get("event") == "result")
    assert res["nodes"]["double"]["restarts"] == 2 and res["nodes"]["src"]["restarts"] == 0
    assert res["nodes"]["double"]["replicas"] == 3 and res["nodes"]["sink"]["restarts"] == 0
    assert res["nodes"]["double"]["replica"][2]["msgs_in"] >= done
    assert leftovers(name) == []


def test_watch_on_a_preloaded_node_imports_the_new_code_once_in_a_new_fork_server(
        state: dict[str, str], tmp_path: Path) -> None:
    """--watch with `preload: true`: the rewritten module is imported once more, by a new fork
    server of that node, and both restarted replicas run the new code."""
    name = unique()
    work = tmp_path / "topo"
    work.mkdir()
    for f in ("ticker.py", "ticker.yaml"):
        (work / f).write_text((TESTS / f).read_text())
    (work / "watched.py").write_text("print('v1 loaded', flush=True)\n\n"
                                     "def double(x):\n    return 2 * x\n")
    out_path = tmp_path / "out.jsonl"

    def events() -> list[dict]:
        return [json.loads(x) for x in out_path.read_text().splitlines() if x.startswith("{")]

    def said(text: str) -> list[dict]:
        return [e for e in events() if e.get("event") == "log" and e.get("node") == "double"
                and text in e.get("line", "")]

    with attached(state, out_path, "--watch", str(work / "ticker.yaml"), "--set", f"name={name}",
                  "--set", "nodes.src.params.n=0", "--set", "nodes.double.run=watched:double",
                  "--set", "nodes.double.preload=true", "--drain-timeout", "1") as proc:
        until(lambda: any(e.get("event") == "overall" and e.get("state") == "running"
                          for e in events()), what="running")
        assert len(said("v1 loaded")) == 1  # two replicas, one import
        (work / "watched.py").write_text(
            "print('v2 loaded', flush=True)\n\ndef double(x):\n    return 3 * x\n")
        until(lambda: len([e for e in events() if e.get("event") == "state"
                           and e.get("node") == "double" and e.get("state") == "running"]) >= 4,
              what="both replicas restarted")
        # the first fork server of `double` leaves once its replicas have: one is left
        until(lambda: len([x for x in leftovers(name) if "double fork server" in x]) == 1,
              what="the old fork server gone")
        interrupt(proc)
    assert len(said("v1 loaded")) == 1 and len(said("v2 loaded")) == 1
    res = next(e for e in events() if e.get("event") == "result")
    assert res["nodes"]["double"]["restarts"] == 2
    assert leftovers(name) == []
