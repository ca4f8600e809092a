"""Smoke test of benchmarks/: every baseline at 2000 records, sum of squares checked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines.common import expected_sum  # noqa: E402
from benchmarks.variants import parse_sum, run_baseline  # noqa: E402


def test_expected_sum_closed_form() -> None:
    for n in (0, 1, 2, 10, 2000):
        assert expected_sum(n) == sum(i * i for i in range(n))


@pytest.mark.parametrize("variant", ["seed", "mpqueue", "batched"])
def test_baseline_sum(variant: str) -> None:
    row = run_baseline(variant, 2000, 2, timeout=20)
    assert row["ok"], row["error"]
    assert row["sum"] == expected_sum(2000)
    assert row["wall_s"] > 0 and row["rss_worker_max_mb"] > 0
    assert sum(row["per_worker"]) == 2000


def test_parse_zflow_output() -> None:
    assert parse_sum("squares completed\nresults: answers=3  workers=1  sum=5\n") == 5
    assert parse_sum('{"event": "result", "nodes": {"results": {"sum": 14}}}\n') == 14
    assert parse_sum("3 answers from 2 workers, sum of squares 5") == 5
    assert parse_sum("nothing here") is None
