"""The live screen in a real pseudo-terminal: it redraws, then leaves the summary."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from zflow.status.views import strip_control

ROOT = Path(__file__).resolve().parents[1]


def run_in_pty(argv: list[str], cwd: Path = ROOT) -> tuple[int, str]:
    """Run ``argv`` with stdout/stderr on a pty (120x30), return (exit code, raw output) once it
    has exited. A hang is failed by pytest-timeout (pyproject.toml); `finally` kills the child."""
    master, slave = pty.openpty()
    try:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    except OSError:  # pragma: no cover - window size is a nicety
        pass
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                            close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the pty
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_live_demo_redraws_in_a_pty() -> None:
    code, raw = run_in_pty([sys.executable, "-m", "zflow.status.demo", "live"])
    assert code == 0, raw
    assert raw.count("\x1b[2K") > 20  # the live area erased and redrawn again and again
    assert raw.count("\x1b[?25l") >= 1  # cursor hidden while live
    text = strip_control(raw)
    assert text.count("zflow squares") >= 5  # the header, once per redraw
    summary = text[text.rindex("mean msg/s"):]
    assert "squares completed" in summary and "10,000/10,000 records" in summary


def test_zflow_up_squares_live_in_a_pty() -> None:
    code, raw = run_in_pty([sys.executable, "-m", "zflow", "up", "topologies/squares.yaml"])
    text = strip_control(raw)
    assert code == 0, text[-3000:]
    assert raw.count("\x1b[2K") > 5, "the live screen never redrew"
    summary = text[text.rindex("mean msg/s"):]
    assert "squares completed" in summary
    assert "10,000/10,000 records" in summary
    lines = summary.splitlines()
    worker = next(x for x in lines if x.strip().startswith("worker "))
    assert worker.split()[1:5] == ["10", "stopped", "10,000", "10,000"]
