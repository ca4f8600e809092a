"""The soak benchmark (issue 6) for 20 s: not in the default run (`pytest -m long` runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.long
@pytest.mark.timeout(300)  # 20 s of soak plus start and stop, on a loaded machine
def test_soak_20s_rss_stays_flat() -> None:
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--seconds", "20"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "OK: every node's and every process's RSS grew less than 10%" in p.stdout
    assert "zflow exit code on SIGINT: 130" in p.stdout
