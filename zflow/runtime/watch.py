"""`zflow up --watch`: which nodes to reload when files change.

Watched, by modification time and size (polled once a second by the supervisor): each `run:`
node's module file, found next to the topology as the replicas import it (`mod.sub:f` →
`mod/sub.py` or `mod/sub/__init__.py`; modules installed elsewhere are not watched); each command
node's argv entries that name a file (`scripts/upper.py`); and the topology file itself. A
changed topology is loaded and validated again with the same --set/--scale: nodes whose code or
configuration changed (`run`, `command`, `params`, `env`, `cwd`) are reloaded with their new
spec; a node with more replicas gets them (the coordinator says where it cannot); what would
change the wiring is reported, not applied.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from zflow.plan import NodePlan, Plan
from zflow.records import field, fields, record, replace

#: what a reload applies; any other difference in a node's plan needs a new run
APPLIED = frozenset({"target", "argv", "params", "env", "cwd"})


def code_files(plan: Plan, node: NodePlan) -> list[str]:
    """The files whose change means new code for `node`."""
    if node.kind == "python":
        module = (node.target or "").partition(":")[0]
        if not module:
            return []
        base = os.path.join(plan.base_dir, *module.split("."))
        return [p for p in (base + ".py", os.path.join(base, "__init__.py")) if os.path.isfile(p)]
    files = []
    for arg in node.argv or []:
        path = arg if os.path.isabs(arg) else os.path.join(node.cwd, arg)
        if os.sep in arg and os.path.isfile(path):
            files.append(os.path.normpath(path))
    return files


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@record
class Changes:
    """What one poll found: nodes to reload (node, why), replica counts to grow to (node, n),
    and what is not applied."""

    reloads: list[tuple[str, str]] = field(default_factory=list)
    scales: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Watcher:
    """`poll()` → the Changes since the previous poll."""

    def __init__(self, plan: Plan, replan: Callable[[], Plan | str] | None) -> None:
        """`replan`: the topology loaded again (a Plan), or why it could not be (a str); None
        when the topology cannot be read again (it came from standard input)."""
        self.plan, self.replan = plan, replan
        self.topology = plan.file if replan is not None else None
        self.files: dict[str, set[str]] = {}
        self._index()
        self.stamps = {p: _stamp(p) for p in self._paths()}

    def _index(self) -> None:
        self.files = {}
        for n in self.plan.nodes.values():
            for path in code_files(self.plan, n):
                self.files.setdefault(path, set()).add(n.name)

    def _paths(self) -> list[str]:
        return [*self.files, *([self.topology] if self.topology else [])]

    def poll(self) -> Changes:
        changed = [p for p in self._paths() if _stamp(p) != self.stamps.get(p)]
        out = Changes()
        if not changed:
            return out
        for p in changed:
            self.stamps[p] = _stamp(p)
        reload: dict[str, str] = {}
        notes = out.notes
        for p in changed:
            for node in sorted(self.files.get(p, ())):
                reload.setdefault(node, f"{self._name(p)} changed")
        if self.topology in changed and self.replan is not None:
            new = self.replan()
            if isinstance(new, str):
                notes.append(f"{self._name(self.topology)} changed but is not valid; the "
                             f"run goes on as it was: {new}")
            else:
                for node, why in self._apply(new, out):
                    reload.setdefault(node, why)
                self._index()
                for p in self._paths():
                    self.stamps.setdefault(p, _stamp(p))
        out.reloads = sorted(reload.items())
        return out

    def _name(self, path: str) -> str:
        """A file as the topology names it: relative to the topology's directory."""
        return os.path.relpath(path, self.plan.base_dir)

    def _apply(self, new: Plan, changes: Changes) -> list[tuple[str, str]]:
        """Put the new specs of changed nodes into the running plan; say what is not applied."""
        out = []
        notes = changes.notes
        old_names, new_names = set(self.plan.nodes), set(new.nodes)
        for name in sorted(new_names ^ old_names):
            verb = "added" if name in new_names else "removed"
            notes.append(f"node {name} {verb} in the topology: not applied (restart the run)")
        for name in sorted(old_names & new_names):
            old, cur = self.plan.nodes[name], new.nodes[name]
            diff = [f for f in fields(NodePlan) if getattr(old, f) != getattr(cur, f)]
            if "sockets" in diff and _peers_only(old, cur):
                diff.remove("sockets")  # another node's replica count changed (said there)
            kept = [f for f in diff if f not in APPLIED]
            if kept == ["replicas"] and diff == kept:  # the coordinator adds them, if it can
                changes.scales.append((name, cur.replicas))
                continue
            if kept:
                what = ", ".join(_describe(f, old, cur) for f in kept)
                notes.append(f"{name}: {what}: not applied (restart the run)")
                continue
            if diff:
                self.plan.nodes[name] = cur
                out.append((name, f"its {', '.join(diff)} changed in the topology"))
        return out


def _describe(field: str, old: Any, cur: Any) -> str:
    if field == "replicas":
        return f"replicas {old.replicas} → {cur.replicas}"
    return f"{field} changed"


def _peers_only(old: NodePlan, cur: NodePlan) -> bool:
    """The sockets differ only in how many replicas feed them."""
    def norm(n: NodePlan) -> dict[str, Any]:
        return {k: replace(v, senders=0) for k, v in n.sockets.items()}

    return norm(old) == norm(cur)
