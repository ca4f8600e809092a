"""zflow's pytest plugin (entry point `pytest11`): the `zflow_run` fixture.

    def test_squares(zflow_run):
        result = zflow_run("topologies/squares.yaml", scale={"worker": 2})
        assert result.ok, result.report()

`zflow_run(...)` takes the arguments of `zflow.testing.run`; a relative topology path is taken from
pytest's root directory (where pytest.ini or pyproject.toml is). When the test fails, the report
gets a section per run with its state, errors and output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

_RUNS = pytest.StashKey[list]()


@pytest.fixture
def zflow_run(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Run a topology to its end and return a `zflow.testing.RunResult`."""
    from zflow import testing

    runs: list[testing.RunResult] = []
    request.node.stash[_RUNS] = runs
    root = request.config.rootpath

    def run(topology: Any = None, **kwargs: Any) -> testing.RunResult:
        if topology is not None:
            topology = testing.resolve(topology, root)
        kwargs.setdefault("cwd", root if kwargs.get("yaml") is not None else None)
        try:
            result = testing.run(topology, **kwargs)
        except testing.RunTimeout as e:
            runs.append(e.result)
            raise
        runs.append(result)
        return result

    yield run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    runs = item.stash.get(_RUNS, None)
    if report.when == "call" and report.failed and runs:
        for i, r in enumerate(runs, 1):
            report.sections.append((f"zflow run {i}", r.report(max_lines=200)))
