"""Test a topology from pytest (or any Python): run it with overrides and small inputs, and get
back what happened as typed values instead of lines to parse.

    from zflow.testing import run

    result = run("topologies/squares.yaml", overrides={"nodes.ventilator.params.count": 100},
                 scale={"worker": 2})
    assert result.ok, result.report()
    assert result.results["results"]["sum"] == 328350          # the sink's end() result
    assert result.edges["ventilator.work", "worker.work"].received == 100
    assert result.nodes["worker"].records_in == 100
    assert "100 answers" in result.output["results.0"][0]       # what replica results.0 printed

With pytest, the `zflow_run` fixture (registered by zflow's pytest plugin) does the same, resolves
relative paths against the project's root directory, and adds the run's output to the report of a
test that fails.

Each run is a real `zflow up --json` in a subprocess — the same processes, barrier, end of stream
and supervision as on the command line — whose JSON lines are read back into a `RunResult`.
`inputs={"ventilator": [1, 2, 3]}` replaces a source node's code with one that emits the given
records (JSON values, shared out over the node's replicas), so a test needs no data files.

This module is imported by replicas that run `zflow.testing:feed`: keep it free of heavy imports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EdgeTotals", "LogLine", "NodeTotals", "ReplicaTotals", "RunFailed", "RunResult",
           "RunTimeout", "feed", "run"]

#: the target `inputs=` puts in place of a source node's own
FEED = "zflow.testing:feed"
#: state of a run whose topology did not validate (no process was started)
INVALID = "invalid"


def feed(records: Sequence[Any]) -> list[Any]:
    """Source node for `inputs=`: this replica's share of the records (every Nth from its own)."""
    import zflow

    ctx = zflow.context()
    return list(records)[ctx.replica::max(1, ctx.replicas)]


@dataclass(frozen=True)
class EdgeTotals:
    """Records moved along one edge `src → dst` (both `node.socket`)."""

    src: str
    dst: str
    sent: int
    received: int
    control: bool = False
    in_flight: int | None = None


@dataclass(frozen=True)
class ReplicaTotals:
    replica: int
    state: str
    exit_code: int | None
    records_in: int
    records_out: int
    errors: int
    restarts: int
    #: CPU seconds its processes used; their peak resident bytes (None: not known)
    cpu_s: float | None = None
    max_rss: int | None = None


@dataclass(frozen=True)
class NodeTotals:
    """One node over all its replicas (records on data sockets; control messages not counted)."""

    name: str
    shape: str
    kind: str
    state: str
    records_in: int
    records_out: int
    errors: int
    restarts: int
    exit_codes: list[int | None]
    replicas: list[ReplicaTotals]
    #: CPU seconds of all its replicas; the largest peak resident bytes of any (None: unknown)
    cpu_s: float | None = None
    max_rss: int | None = None


@dataclass(frozen=True)
class LogLine:
    """A line of output: `stream` is stdout or stderr (the node's own), or zflow (about it)."""

    node: str
    replica: int
    stream: str
    line: str
    t: float | None = None


@dataclass
class RunResult:
    """What one run did. `state` is the run's overall state: completed, incomplete, failed,
    interrupted, or `invalid` when the topology did not validate (see `diagnostics`)."""

    topology: str
    exit_code: int
    state: str
    #: each sink's `end()` result, by node (by `node.replica` when the node has several)
    results: dict[str, Any] = field(default_factory=dict)
    #: (src, dst) → totals, e.g. result.edges["ventilator.work", "worker.work"].received
    edges: dict[tuple[str, str], EdgeTotals] = field(default_factory=dict)
    nodes: dict[str, NodeTotals] = field(default_factory=dict)
    #: what went wrong, as zflow said it (failures, losses, start errors, validation problems)
    errors: list[str] = field(default_factory=list)
    #: validation problems (warnings too), as `zflow validate --format json` gives them
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    #: `node.replica` → the lines that replica printed (stdout and stderr, in order)
    output: dict[str, list[str]] = field(default_factory=dict)
    #: every line, zflow's own notes included
    logs: list[LogLine] = field(default_factory=list)
    duration: float | None = None
    #: records done / total as the status screen shows them; losses and dead letters
    progress: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, Any] = field(default_factory=dict)
    dead_letters: dict[str, Any] = field(default_factory=dict)
    #: the final `result` object of `zflow up --json`, as printed
    snapshot: dict[str, Any] = field(default_factory=dict)
    #: every JSON line zflow printed, in order
    events: list[dict[str, Any]] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        """The run completed: exit 0, every record accounted for, no errors."""
        return self.exit_code == 0 and self.state == "completed" and not self.errors

    def lines(self, node: str) -> list[str]:
        """Everything the replicas of `node` printed, in the order it arrived."""
        return [x.line for x in self.logs if x.node == node and x.stream != "zflow"]

    def edge(self, src: str, dst: str) -> EdgeTotals:
        return self.edges[(src, dst)]

    def report(self, max_lines: int = 20) -> str:
        """A few lines to read when a test fails: state, errors, and the last output."""
        out = [f"{' '.join(self.command[2:]) or 'zflow up'}: exit {self.exit_code}, "
               f"{self.state}" + (f" in {self.duration:.2f} s" if self.duration else "")]
        out.extend(f"  error: {e}" for e in self.errors)
        tail = [f"  {x.node}.{x.replica} │ {x.line}" for x in self.logs][-max_lines:]
        if tail:
            out.append("last output:")
            out.extend(tail)
        if self.stderr.strip():
            out.append("stderr:")
            out.extend("  " + x for x in self.stderr.strip().splitlines()[-max_lines:])
        return "\n".join(out)

    def check(self) -> RunResult:
        """This result if the run completed; RunFailed (with the report) otherwise."""
        if not self.ok:
            raise RunFailed(self)
        return self


class RunFailed(AssertionError):
    """Raised by `RunResult.check()`: the run did not complete."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.report())
        self.result = result


class RunTimeout(TimeoutError):
    """The run did not end within `timeout`; it was stopped. `result` holds what it printed."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message + "\n" + result.report())
        self.result = result


def _set_args(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):  # values as JSON: valid YAML flow, typed as given
        return [f"{path}={json.dumps(value)}" for path, value in overrides.items()]
    return [str(x) for x in overrides]


def command(topology: str | os.PathLike[str] | None = None, *,
            overrides: Mapping[str, Any] | Iterable[str] | None = None,
            scale: Mapping[str, int] | None = None,
            inputs: Mapping[str, Iterable[Any]] | None = None,
            args: Sequence[str] = ()) -> list[str]:
    """The `zflow up --json …` command line `run()` runs."""
    cmd = [sys.executable, "-m", "zflow", "up", "--json",
           os.fspath(topology) if topology is not None else "-"]
    sets = _set_args(overrides)
    for node, records in (inputs or {}).items():
        sets += [f"nodes.{node}.run={json.dumps(FEED)}",
                 f"nodes.{node}.params={json.dumps({'records': list(records)})}"]
    for s in sets:
        cmd += ["--set", s]
    for node, n in (scale or {}).items():
        cmd += ["--scale", f"{node}={n}"]
    return cmd + list(args)


def run(topology: str | os.PathLike[str] | None = None, *,
        overrides: Mapping[str, Any] | Iterable[str] | None = None,
        scale: Mapping[str, int] | None = None,
        inputs: Mapping[str, Iterable[Any]] | None = None,
        yaml: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        args: Sequence[str] = ()) -> RunResult:
    """Run a topology to its end with `zflow up --json` and return what happened.

    - `topology`: the YAML file; or pass the YAML text as `yaml=` (its `run:` targets are then
      looked up in `cwd`).
    - `overrides`: `{"nodes.ventilator.params.count": 100}` (values as JSON), or `--set` strings.
    - `scale`: `{"worker": 2}`.
    - `inputs`: `{"ventilator": [1, 2, 3]}` makes that source node emit these records (JSON
      values), shared out over its replicas.
    - `env`: extra environment variables (for `${VAR}` in the file, and the nodes).
    - `timeout`: seconds; a run still going then is stopped (SIGTERM, then SIGKILL) and
      `RunTimeout` raised with what it printed.
    - `args`: more `zflow up` options, e.g. `["-v"]` or `["--drain-timeout", "1"]`.

    Never raises because the run failed: look at `result.ok`, or call `result.check()`.
    """
    if (topology is None) == (yaml is None):
        raise TypeError("run() needs a topology file or yaml=, not both")
    cmd = command(topology, overrides=overrides, scale=scale, inputs=inputs, args=args)
    full_env = {**os.environ, **(env or {})}
    with subprocess.Popen(cmd, stdin=subprocess.PIPE if yaml is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          encoding="utf-8", errors="replace", env=full_env,
                          cwd=os.fspath(cwd) if cwd is not None else None) as proc:
        try:
            stdout, stderr = proc.communicate(yaml, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # zflow stops its replicas and prints its result
            try:
                stdout, stderr = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            result = parse(stdout, stderr, proc.returncode, cmd)
            raise RunTimeout(f"zflow run did not end within {timeout} s", result) from None
        except BaseException:  # interrupted (pytest-timeout, Ctrl-C): leave nothing running
            proc.kill()
            raise
    return parse(stdout, stderr, proc.returncode, cmd)


def _diag_text(d: Mapping[str, Any]) -> str:
    where = d.get("file") or "<input>"
    if d.get("line"):
        where += f":{d['line']}" + (f":{d['col']}" if d.get("col") else "")
    text = f"{where}: {d.get('severity', 'error')}[{d.get('code', '')}]: {d.get('message', '')}"
    return text + (f" (hint: {d['hint']})" if d.get("hint") else "")


def _node_totals(name: str, n: Mapping[str, Any]) -> NodeTotals:
    reps = [ReplicaTotals(int(r.get("replica", i)), str(r.get("state", "")), r.get("exit_code"),
                          int(r.get("msgs_in") or 0), int(r.get("msgs_out") or 0),
                          int(r.get("errors") or 0), int(r.get("restarts") or 0),
                          r.get("cpu_s"), r.get("max_rss"))
            for i, r in enumerate(n.get("replica") or [])]
    return NodeTotals(name, str(n.get("shape", "")), str(n.get("kind", "")),
                      str(n.get("state", "")), int(n.get("msgs_in") or 0),
                      int(n.get("msgs_out") or 0), int(n.get("errors") or 0),
                      int(n.get("restarts") or 0), list(n.get("exit_codes") or []), reps,
                      n.get("cpu_s"), n.get("max_rss"))


def parse(stdout: str, stderr: str = "", exit_code: int = 0,
          cmd: Sequence[str] = ()) -> RunResult:
    """A RunResult from the output of `zflow up --json`."""
    res = RunResult(topology="", exit_code=exit_code, state="", command=list(cmd),
                    stdout=stdout, stderr=stderr)
    final: dict[str, Any] | None = None
    for raw in stdout.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, list):  # the topology's problems (the file did not validate)
            res.diagnostics.extend(x for x in obj if isinstance(x, dict))
            continue
        if not isinstance(obj, dict):
            continue
        res.events.append(obj)
        kind = obj.get("event")
        if kind == "log":
            line = LogLine(str(obj.get("node", "")), int(obj.get("replica") or 0),
                           str(obj.get("stream", "")), str(obj.get("line", "")), obj.get("t"))
            res.logs.append(line)
            if line.stream != "zflow":
                res.output.setdefault(f"{line.node}.{line.replica}", []).append(line.line)
        elif kind == "result":
            final = obj
    if final is None:
        res.state = INVALID if res.diagnostics else "unknown"
        res.errors = [_diag_text(d) for d in res.diagnostics if d.get("severity") == "error"]
        if not res.errors and exit_code != 0:
            res.errors = [x for x in stderr.strip().splitlines()[-5:]] or \
                [f"zflow exited {exit_code} without a result"]
        return res
    res.snapshot = final
    res.topology = str(final.get("topology", ""))
    res.state = str(final.get("overall", ""))
    res.duration = final.get("duration")
    res.results = dict(final.get("results") or {})
    res.errors = [str(e) for e in final.get("errors") or []]
    res.progress = dict(final.get("progress") or {})
    res.losses = dict(final.get("losses") or {})
    res.dead_letters = dict(final.get("dead_letters") or {})
    for e in final.get("edges") or []:
        t = EdgeTotals(str(e["src"]), str(e["dst"]), int(e.get("sent") or 0),
                       int(e.get("received") or 0), bool(e.get("control")), e.get("in_flight"))
        res.edges[(t.src, t.dst)] = t
    for name, n in (final.get("nodes") or {}).items():
        res.nodes[name] = _node_totals(name, n)
    return res


def resolve(topology: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    """A relative topology path taken from `root` (the pytest fixture: the project's root)."""
    p = Path(topology)
    return os.fspath(p if p.is_absolute() else Path(root) / p)
