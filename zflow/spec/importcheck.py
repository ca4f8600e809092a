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

from zflow.spec.diagnostics import Diagnostic
from zflow.spec.locate import Locator

TIMEOUT = 60.0

# Runs in the child: argv[1] = directory to put first on sys.path, stdin = JSON list of targets.
_CHILD = r"""
import importlib, importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
targets = json.load(sys.stdin)
results = []
for t in targets:
    mod, _, attr = t.partition(":")
    try:
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError) as e:
            spec = None
        if spec is None:
            results.append(["ZF080", f"module {mod!r} not found"])
            continue
        m = importlib.import_module(mod)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        results.append(["ZF081", f"importing {mod!r} raised {type(e).__name__}: {e}"])
        continue
    obj = m
    missing = None
    for part in attr.split("."):
        if not hasattr(obj, part):
            missing = part
            break
        obj = getattr(obj, part)
    if missing is not None:
        results.append(["ZF082", f"module {mod!r} has no attribute {attr!r}"])
    elif not callable(obj):
        results.append(["ZF083", f"{t!r} is a {type(obj).__name__}, not callable"])
    else:
        results.append(None)
sys.stdout.write("\n@@ZFLOW@@" + json.dumps(results))
"""


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
        proc = subprocess.run([sys.executable, "-c", _CHILD, directory],
                              input=json.dumps([t for _, t in targets]), capture_output=True,
                              text=True, timeout=TIMEOUT, cwd=directory)
        payload = proc.stdout.rpartition("@@ZFLOW@@")[2]
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
        if code == "ZF080":
            hint = (f"the module must be importable from {directory} (next to the topology) or "
                    "installed")
        out.append(loc.diag(code, f"node '{node}': {msg}", ("nodes", node, "run"), hint=hint))
    return out
