"""A scripted run for the coordinator: a fake launcher, a real plan and status model, a clock.

Tests say what replicas report and when processes exit; the script records what the coordinator
sends and asks the launcher to do. No sockets, no processes, no sleeps.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from zflow.plan import build_plan
from zflow.runtime import protocol as P
from zflow.runtime.coordinator import Coordinator, Options
from zflow.runtime.launchers import Spawned, SpawnError
from zflow.runtime.spec import ReplicaSpec
from zflow.spec import load
from zflow.status.model import StatusModel


class FakeLauncher:
    def __init__(self) -> None:
        self.specs: list[ReplicaSpec] = []
        self.signals: list[tuple] = []
        self.released: list[str] = []
        self.fail: dict[str, str] = {}  # replica id → spawn error message
        self.pid = 1000

    def spawn(self, spec: ReplicaSpec) -> Spawned:
        if spec.id in self.fail:
            raise SpawnError(self.fail[spec.id])
        self.specs.append(spec)
        self.pid += 1
        return Spawned(self.pid, {})

    def release(self, replica: str) -> None:
        self.released.append(replica)

    def signal(self, replica: str, sig: int, group: bool = True) -> None:
        self.signals.append((replica, sig) if group else (replica, sig, "process"))


class Script:
    def __init__(self, tmp: Path, yaml_text: str, launcher: Any = None, **opts: Any) -> None:
        path = tmp / "t.yaml"
        path.write_text(textwrap.dedent(yaml_text))
        res = load(str(path))
        assert res.ok, [d.message for d in res.diagnostics]
        self.plan = build_plan(res.topology, str(path), run_dir=str(tmp / "run"))
        self.now = 0.0
        self.model = StatusModel.from_plan(self.plan, clock=lambda: self.now)
        self.launcher = launcher if launcher is not None else FakeLauncher()
        self.coord = Coordinator(self.plan, self.model, self.launcher, Options(**opts))
        self.log: list[tuple[str, str, dict[str, Any]]] = []

    # -- driving -------------------------------------------------------------------------------
    def start(self) -> Script:
        self.coord.start(self.now)
        return self

    def say(self, rid: str, kind: str, **fields: Any) -> None:
        """Replica `rid`'s current incarnation sends a control message."""
        self.coord.received(self.coord.slots[rid].identity, P.pack(kind, **fields), self.now)

    def tick(self, dt: float = 0.0) -> None:
        self.now += dt
        self.coord.tick(self.now)

    def exit(self, rid: str, code: int) -> None:
        self.coord.exited(rid, code, self.now)

    def python_replicas(self) -> list[str]:
        return [rid for rid, s in self.coord.slots.items() if s.kind == "python"]

    def barrier(self) -> None:
        """Every replica binds, then (told to connect) reports ready: the run is running."""
        for rid in self.python_replicas():
            self.say(rid, P.BOUND, endpoints={})
        self.tick()
        for rid in self.python_replicas():
            self.say(rid, P.READY)
        self.tick()

    def finish(self, rid: str, **sockets: list[int]) -> None:
        """`rid` finished its stream having moved `socket=[in, out, bytes in, bytes out]`."""
        self.say(rid, P.FINISHED, s={k: v for k, v in sockets.items()}, e=0)

    # -- reading -------------------------------------------------------------------------------
    def sent(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Messages sent since the last call, as (replica id, kind, fields)."""
        out = [(ident.decode().split("#")[0], kind, fields)
               for ident, kind, fields in self.coord.take()]
        self.log.extend(out)
        return out

    def sent_kinds(self, kind: str) -> list[str]:
        return [rid for rid, k, _ in self.sent() if k == kind]

    def state(self, rid: str) -> str:
        return self.coord.slots[rid].state.value


def running(tmp_path: Path, text: str | None = None, **opts: Any) -> Script:
    """A run past its barrier (every replica running), with what was sent so far taken."""
    s = Script(tmp_path, PIPELINE if text is None else text, **opts).start()
    s.barrier()
    s.sent()
    return s


#: best-effort, said explicitly: `delivery: auto` would run this pipeline exactly-once
PIPELINE = """
    version: 1
    name: pipe
    delivery: best-effort
    nodes:
      src:
        run: m:source
        sockets:
          out: {type: PUSH, bind: auto}
      mid:
        run: m:double
        replicas: 2
        max_restarts: 2
        backoff: {initial: 0.1, max: 0.3}
        sockets:
          inp: {type: PULL, connect: src.out}
          out: {type: PUSH, connect: sink.inp}
      sink:
        run: m:Sink
        sockets:
          inp: {type: PULL, bind: auto}
"""
