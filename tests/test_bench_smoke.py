"""Smoke test of benchmarks/: every baseline at 2000 records, sum of squares checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines.common import expected_sum  # noqa: E402
from benchmarks.variants import parse_sum, run_baseline  # noqa: E402


def test_expected_sum_closed_form() -> None:
    for n in (0, 1, 2, 10, 2000):
        assert expected_sum(n) == sum(i * i for i in range(n))


@pytest.mark.parametrize("variant", ["seed", "mpqueue", "batched", "batched_dict"])
def test_baseline_sum(variant: str) -> None:
    row = run_baseline(variant, 2000, 2, timeout=20)
    assert row["ok"], row["error"]
    assert row["sum"] == expected_sum(2000)
    assert row["wall_s"] > 0 and row["rss_worker_max_mb"] > 0
    assert sum(row["per_worker"]) == 2000


def test_pool_peer_sum() -> None:
    row = run_baseline("pool", 2000, 2, timeout=20)
    assert row["ok"], row["error"]
    assert row["sum"] == expected_sum(2000) and sum(row["per_worker"]) == 2000


@pytest.mark.parametrize("variant", ["dask", "bytewax"])
def test_optional_peer_sum_or_skipped(variant: str) -> None:
    """An optional peer runs with the right sum when installed, else its row is skipped with the
    install hint: never an error."""
    import importlib.util

    from benchmarks.variants import NOT_INSTALLED, run_peer

    row = run_peer(variant, 2000, 2, timeout=60)
    if importlib.util.find_spec(variant) is None:
        assert not row["ok"] and NOT_INSTALLED in row["skipped"] and not row["error"]
        return
    assert row["ok"], row["error"]
    assert row["sum"] == expected_sum(2000) and sum(row["per_worker"]) == 2000


def test_parse_zflow_output() -> None:
    assert parse_sum("squares completed\nresults: answers=3  workers=1  sum=5\n") == 5
    assert parse_sum('{"event": "result", "nodes": {"results": {"sum": 14}}}\n') == 14
    assert parse_sum("3 answers from 2 workers, sum of squares 5") == 5
    assert parse_sum("nothing here") is None


def test_zflow_phases_from_json_lines() -> None:
    from benchmarks.harness import TreeRun
    from benchmarks.variants import zflow_phases

    events = [
        (0.00, {"event": "stats", "t": 0.00, "nodes": {"v": {"shape": "source"},
                                                         "w": {"shape": "worker"},
                                                         "r": {"shape": "sink"}}}),
        (0.05, {"event": "overall", "t": 0.05, "state": "running"}),
        (0.20, {"event": "state", "t": 0.20, "node": "w", "state": "finished",
                "detail": "finished"}),
        (0.30, {"event": "state", "t": 0.30, "node": "r", "state": "finished",
                "detail": "finished"}),
        (0.35, {"event": "overall", "t": 0.35, "state": "completed"}),
    ]
    run = TreeRun(argv=[], t_start=100.0, wall_s=0.50)
    # zflow's clock starts 0.1 s after the command; each line is read 1 ms after it is written
    run.lines = [(100.1 + t + 0.001, json.dumps(ev) + "\n") for t, ev in events]
    run.lines.insert(1, (100.2, "not json\n"))
    ph = zflow_phases(run, 1000)
    assert abs(ph["cli_s"] - 0.101) < 1e-9
    assert abs(ph["barrier_s"] - 0.05) < 1e-9
    assert abs(ph["stream_s"] - 0.25) < 1e-9
    assert abs(ph["rate_stream"] - 4000) < 1e-6
    assert abs(ph["stop_s"] - 0.05) < 1e-9
    assert abs(ph["exit_s"] - (0.50 - 0.101 - 0.35)) < 1e-9
    assert zflow_phases(TreeRun(argv=[], t_start=0.0), 1)["stream_s"] is None


def test_worker_title() -> None:
    from benchmarks.variants import _is_worker

    assert _is_worker("zflow: squares worker.3")
    assert not _is_worker("/tmp/v/bin/python -m zflow up topologies/squares.yaml --scale worker=2")
    assert not _is_worker("zflow: squares results.0")


def test_preload_benchmark_runs_both_ways_with_the_right_sum() -> None:
    """benchmarks/preload.py's two arms run the heavy module's nodes to the right sum (run()
    checks it and raises otherwise); that preload imports once is tests/test_runtime_e2e.py's."""
    from benchmarks.preload import NODES, run

    for preload in (False, True):
        row = run(2000, 2, preload=preload)
        assert row["wall"] > 0 and all(row[n] > 0 for n in NODES), row
