"""The orphan guard: a tiny process that outlives a killed supervisor just long enough.

The supervisor starts it with a pipe on stdin and writes `+PGID` / `-PGID` as replicas come and go,
and `=PATH` for the run directory. When the pipe closes — the supervisor exited, crashed or was
SIGKILLed — every process group still listed gets SIGTERM, then SIGKILL 0.5 s later, so no replica
(nor anything a command node started) outlives zflow; then the run directory (ipc endpoints, the
control socket) is removed. Python replicas also ask the kernel for SIGKILL on parent death;
this covers command nodes and their children too.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    run_dir = None
    for line in sys.stdin:
        line = line.strip()
        if line[:1] == "+":
            groups.add(int(line[1:]))
        elif line[:1] == "-":
            groups.discard(int(line[1:]))
        elif line[:1] == "=":
            run_dir = line[1:]
    live = _signal([g for g in groups if _alive(g)], signal.SIGTERM)
    deadline = time.monotonic() + 0.5
    while live and time.monotonic() < deadline:
        time.sleep(0.02)
        live = [g for g in live if _alive(g)]
    _signal(live, signal.SIGKILL)
    if run_dir and os.path.basename(run_dir).startswith("zflow-"):
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def _signal(groups: list[int], sig: int) -> list[int]:
    for g in groups:
        try:
            os.killpg(g, sig)
        except ProcessLookupError:
            pass
    return groups


if __name__ == "__main__":
    sys.exit(main())
