"""`zflow.testing` and the `zflow_run` pytest fixture: typed results from real runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from test_runtime_e2e import leftovers, unique

from zflow import testing
from zflow.testing import RunFailed, RunTimeout, parse, run

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies"
SQUARES = TOPO / "squares.yaml"






def test_run_gives_sink_results_edge_and_node_totals_and_output() -> None:
    name = unique()
    r = run(SQUARES, overrides={"name": name, "nodes.ventilator.params.count": 100},
            scale={"worker": 2})
    assert r.ok, r.report()
    assert (r.exit_code, r.state, r.topology, r.errors) == (0, "completed", name, [])
    assert r.results["results"]["sum"] == sum(n * n for n in range(100))
    assert r.results["results"]["answers"] == 100
    work = r.edges["ventilator.work", "worker.work"]
    assert (work.sent, work.received, work.control) == (100, 100, False)
    assert r.edge("worker.results", "results.answers").received == 100
    assert r.edges["results.control", "worker.control"].control
    worker = r.nodes["worker"]
    assert (worker.records_in, worker.records_out, len(worker.replicas)) == (100, 100, 2)
    assert sum(x.records_in for x in worker.replicas) == 100
    assert worker.exit_codes == [0, 0] and r.nodes["results"].shape == "sink"
    # what each replica's processes used, from their exits: a node is the sum of its replicas,
    # its peak the largest; a Python replica holds at least a few MiB
    assert worker.cpu_s == pytest.approx(sum(x.cpu_s for x in worker.replicas), abs=0.002)
    assert worker.max_rss == max(x.max_rss for x in worker.replicas) > 4 << 20
    # the sink's own print, per replica, without zflow's notes about it
    assert r.output["results.0"] == [
        line for line in r.lines("results") if "sum of squares 328350" in line]
    assert len(r.output["results.0"]) == 1
    # zflow's notes about a replica ("stopping: received FINISHED", when a worker hears it before
    # zflow stops it: a race, so not asserted to exist) are logs, never the node's own output
    assert all(x.line not in r.output.get(f"{x.node}.{x.replica}", [])
               for x in r.logs if x.stream == "zflow")
    assert r.duration and r.duration > 0 and r.progress["done"] == 100
    assert r.snapshot["event"] == "result"
    assert r.command[2:5] == ["zflow", "up", "--json"]
    assert leftovers(name) == []


def test_inputs_replace_the_source_and_are_shared_over_its_replicas() -> None:
    numbers = list(range(1, 31))
    r = run(SQUARES, inputs={"ventilator": numbers}, scale={"ventilator": 3, "worker": 2},
            overrides={"name": unique()})
    assert r.ok, r.report()
    # each record once: three source replicas took a third each, none twice
    assert r.results["results"]["answers"] == 30
    assert r.results["results"]["sum"] == sum(n * n for n in numbers)
    assert [x.records_out for x in r.nodes["ventilator"].replicas] == [10, 10, 10]


def test_records_of_any_json_type_and_mapping_overrides_keep_their_types(tmp_path: Path) -> None:
    (tmp_path / "echo_nodes.py").write_text(
        "class Keep:\n"
        "    def __init__(self, tag):\n        self.tag, self.seen = tag, []\n"
        "    def __call__(self, r):\n        self.seen.append(r)\n"
        "    def end(self, totals):\n        return {'tag': self.tag, 'seen': self.seen}\n")
    (tmp_path / "echo.yaml").write_text("""\
version: 1
name: echo
nodes:
  src:
    run: nowhere:numbers
    sockets:
      out: {type: PUSH, bind: auto}
  keep:
    run: echo_nodes:Keep
    params: {tag: x}
    sockets:
      inp: {type: PULL, connect: src.out}
""")
    records = [{"a": [1, 2.5, None]}, "two: 2", True, 3]
    r = run(tmp_path / "echo.yaml", inputs={"src": records},
            overrides={"nodes.keep.params.tag": "a: b", "name": unique()})
    assert r.ok, r.report()
    assert r.results["keep"] == {"tag": "a: b", "seen": records}


def test_invalid_topology_is_reported_as_values_not_raised() -> None:
    bad = ROOT / "tests" / "spec_corpus" / "invalid" / "bad_codec.yaml"
    r = run(bad)
    assert (r.ok, r.state, r.exit_code) == (False, testing.INVALID, 1)
    assert [d["code"] for d in r.diagnostics] == ["ZF025"]
    assert r.errors == [f"{bad}:8:44: error[ZF025]: codec 'pickle' is not one of: msgpack, "
                        "json, raw"]
    assert r.results == {} and r.edges == {}
    with pytest.raises(RunFailed, match="ZF025"):
        r.check()
    r = run(SQUARES, scale={"wrker": 2})
    assert r.state == testing.INVALID and "did you mean 'worker'" in r.errors[0]


def test_a_run_that_cannot_start_says_why() -> None:
    r = run(ROOT / "tests" / "runtime_corpus" / "run_module_missing.yaml")
    assert (r.ok, r.exit_code, r.state) == (False, 3, "failed")
    assert any("corpus_no_such_module" in e for e in r.errors)


def test_yaml_text_env_and_cwd() -> None:
    text = SQUARES.read_text().replace("name: squares", "name: ${RUN_NAME}")
    name = unique()
    r = run(yaml=text, cwd=TOPO, env={"RUN_NAME": name},
            overrides={"nodes.ventilator.params.count": 12})
    assert r.ok, r.report()
    assert r.topology == name and r.results["results"]["answers"] == 12
    with pytest.raises(TypeError):
        run(SQUARES, yaml=text)


def test_timeout_stops_the_run_and_raises_with_what_it_printed(tmp_path: Path) -> None:
    (tmp_path / "slow_nodes.py").write_text(
        "import itertools, time\n"
        "def forever():\n"
        "    for n in itertools.count():\n        time.sleep(0.01)\n        yield n\n"
        "def sink(x):\n    print('got', x, flush=True)\n")
    (tmp_path / "slow.yaml").write_text("""\
version: 1
name: slow
nodes:
  src:
    run: slow_nodes:forever
    sockets:
      out: {type: PUSH, bind: auto, batch: 1}
  sink:
    run: slow_nodes:sink
    sockets:
      inp: {type: PULL, connect: src.out}
""")
    name = unique()
    t0 = time.monotonic()
    with pytest.raises(RunTimeout) as info:
        run(tmp_path / "slow.yaml", overrides={"name": name}, timeout=3)
    assert time.monotonic() - t0 < 20
    partial = info.value.result
    assert partial.exit_code != 0 and partial.state in ("interrupted", "unknown")
    assert "did not end within 3" in str(info.value)
    assert leftovers(name) == []


def test_parse_reads_the_json_lines_of_zflow_up() -> None:
    lines = [
        json.dumps({"event": "state", "t": 0.1, "node": "a", "replica": 0, "state": "running"}),
        "not json at all",
        json.dumps({"event": "log", "t": 0.2, "node": "a", "replica": 1, "stream": "stdout",
                    "line": "hello"}),
        json.dumps({"event": "log", "t": 0.3, "node": "a", "replica": 1, "stream": "zflow",
                    "line": "stopping"}),
        json.dumps({"event": "result", "topology": "x", "overall": "incomplete",
                    "exit_code": 4, "duration": 1.5, "results": {"b": {"n": 1}},
                    "edges": [{"src": "a.o", "dst": "b.i", "sent": 5, "received": 4,
                               "control": False, "in_flight": 1}],
                    "nodes": {"a": {"shape": "source", "kind": "python", "state": "stopped",
                                    "msgs_in": 0, "msgs_out": 5, "errors": 0, "restarts": 1,
                                    "exit_codes": [0], "replica": [
                                        {"replica": 0, "state": "stopped", "exit_code": 0,
                                         "msgs_in": 0, "msgs_out": 5, "errors": 0,
                                         "restarts": 1}]}},
                    "losses": {"lost": 1}, "errors": ["1 of 5 records never arrived"]}),
    ]
    r = parse("\n".join(lines) + "\n", "", 4, ["py", "-m", "zflow", "up", "--json", "f"])
    assert (r.state, r.exit_code, r.ok) == ("incomplete", 4, False)
    assert r.output == {"a.1": ["hello"]} and len(r.logs) == 2 and len(r.events) == 4
    assert r.edges["a.o", "b.i"].in_flight == 1 and r.nodes["a"].restarts == 1
    assert r.nodes["a"].replicas[0].records_out == 5
    assert r.losses == {"lost": 1} and r.results == {"b": {"n": 1}}
    assert "error: 1 of 5 records never arrived" in r.report()
    nothing = parse("", "Traceback: boom\n", 1)
    assert nothing.state == "unknown" and nothing.errors == ["Traceback: boom"]


# --- the pytest plugin --------------------------------------------------------------------------


def test_the_plugin_is_registered_as_a_pytest_entry_point() -> None:
    eps = {e.name: e.value for e in entry_points(group="pytest11")}
    assert eps.get("zflow") == "zflow.pytest_plugin"


def _pytest_in(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """Run `code` as a test file under a fresh pytest whose root directory holds topologies/."""
    (tmp_path / "topologies").symlink_to(TOPO)
    (tmp_path / "test_example.py").write_text(code)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                           "test_example.py"], cwd=tmp_path, capture_output=True, text=True,
                          env=env)


def test_readme_example_runs_as_shown(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Testing your pipeline"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's 'Testing your pipeline' section has no python block"
    p = _pytest_in(tmp_path, code.group(1))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert re.search(r"\b2 passed\b", p.stdout), p.stdout[-2000:]


def test_a_failing_test_reports_the_runs_output(tmp_path: Path) -> None:
    p = _pytest_in(tmp_path, """\
def test_wrong_sum(zflow_run):
    run = zflow_run("topologies/squares.yaml", overrides={"nodes.ventilator.params.count": 10})
    assert run.results["results"]["sum"] == 0
""")
    assert p.returncode == 1, p.stdout[-3000:]
    assert "zflow run 1" in p.stdout  # the report section
    assert "exit 0, completed" in p.stdout
    assert "results.0 │ 10 answers from" in p.stdout
