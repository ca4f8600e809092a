"""`zflow validate --import-check`: can each `run:` target be imported, and is it callable?

Importing runs user code, so it happens only on request, and in a child process: a module that
prints, calls sys.exit, hangs or pollutes sys.modules cannot disturb the validator, and two
topologies with same-named modules in different directories do not see each other's imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from zflow.runtime.replica.target import MARK, NOT_FOUND
from zflow.spec.diagnostics import Diagnostic
from zflow.spec.locate import Locator

TIMEOUT = 60.0

# The child resolves each target exactly as a replica does (zflow/runtime/replica/target.py):
# argv[1] = directory to put first on sys.path, stdin = JSON list of targets, stdout = whatever the
# modules print, then MARK and a JSON list of per-target results (None or [code, message]).
_CHILD = "zflow.runtime.replica.target"


def check_imports(data: Any, path: str, loc: Locator) -> list[Diagnostic]:
    """Import every `run:` target with the topology's directory first on sys.path."""
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict):
        return []
    targets = [(n, node["run"]) for n, node in nodes.items()
               if isinstance(node, dict) and isinstance(node.get("run"), str)
               and not str(n).startswith("x-")]
    if not targets:
        return []
    directory = os.path.dirname(os.path.abspath(path))
    try:
        proc = subprocess.run([sys.executable, "-m", _CHILD, directory],
                              input=json.dumps([t for _, t in targets]), capture_output=True,
                              text=True, timeout=TIMEOUT, cwd=directory)
        payload = proc.stdout.rpartition(MARK)[2]
        results = json.loads(payload)
    except subprocess.TimeoutExpired:
        return [loc.diag("ZF084", f"importing the run: targets took longer than {TIMEOUT:.0f} s",
                         ("nodes",), at="key")]
    except (OSError, ValueError) as e:
        return [loc.diag("ZF084", f"the import check could not run: {e}", ("nodes",), at="key")]
    out = []
    for (node, _target), r in zip(targets, results, strict=False):
        if r is None:
            continue
        code, msg = r
        hint = None
        if code == NOT_FOUND:
            hint = (f"the module must be importable from {directory} (next to the topology) or "
                    "installed")
        out.append(loc.diag(code, f"node '{node}': {msg}", ("nodes", node, "run"), hint=hint))
    return out
