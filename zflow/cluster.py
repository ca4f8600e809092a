"""Facts shared by everything that runs a topology beyond one machine: pure functions, no I/O.

The coordinator (`zflow coordinator`), each replica (`zflow replica`) and the manifests
(`zflow export k8s`) must agree on the same things without talking: which tcp port each binding
socket listens on, the stable host name of each replica, which replica index a process is, and
whether two processes run the same topology (its digest). Each of those is one function here, so
the three cannot drift apart.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `zflow --help` imports this module: no validator, no plan
    from zflow.plan import Plan

#: the coordinator's control port (the default of `--listen` and of the manifests)
CONTROL_PORT = 7000
#: data ports are numbered from here, in plan order (node order, then socket order)
BASE_PORT = 7001
#: where an engine tells a process its index, in the order they are looked at (ZFLOW_POD_INDEX
#: is set by the StatefulSet manifests from the `apps.kubernetes.io/pod-index` label)
INDEX_VARS = ("JOB_COMPLETION_INDEX", "ZFLOW_POD_INDEX", "SLURM_PROCID")
#: longest Kubernetes object name (and DNS label)
MAX_NAME = 63


def digest(topology: Mapping[str, Any]) -> str:
    """A short fingerprint of a validated topology (after --set/--scale and `${VAR}`): two
    processes with different digests would disagree about the plan, so one refuses the other."""
    text = json.dumps(topology, sort_keys=True, separators=(",", ":"), default=str)
    import hashlib  # the CLI imports this module for its constants: ~3 ms at every start

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fixed_port(bind: str | None) -> int | None:
    m = re.fullmatch(r"tcp://[^/]*:(\d+)", bind or "")
    return int(m.group(1)) if m else None


def ports(plan: Plan) -> dict[tuple[str, str], int]:
    """The tcp port of every binding socket: a concrete `tcp://…:N` keeps N, the rest (`auto`,
    `ipc`, `tcp`) get the next free port from BASE_PORT. Every replica of a node is on its own
    host, so one port per socket serves all of them."""
    binding = [(n.name, s.name, s.bind) for n in plan.nodes.values()
               for s in n.sockets.values() if s.mode == "bind"]
    fixed = {(n, s): p for n, s, b in binding if (p := _fixed_port(b)) is not None}
    used = set(fixed.values()) | {CONTROL_PORT}
    out: dict[tuple[str, str], int] = {}
    nxt = BASE_PORT
    for n, s, _ in binding:
        if (n, s) in fixed:
            out[(n, s)] = fixed[(n, s)]
            continue
        while nxt in used:
            nxt += 1
        out[(n, s)] = nxt
        used.add(nxt)
    return out


def remote_plan(plan: Plan) -> Plan:
    """The plan as replicas on other hosts run it: every binding socket binds its port on every
    interface (`tcp://*:PORT`); a replica advertises it under its own host name."""
    plan = copy.deepcopy(plan)
    for (node, sock), port in ports(plan).items():
        plan.nodes[node].sockets[sock].bind = f"tcp://*:{port}"
    return plan


def advertised(endpoint: str, host: str) -> str:
    """A tcp endpoint bound on this host as its peers reach it: `tcp://*:7001` → `tcp://HOST:7001`."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    return f"tcp://{host}:{endpoint.rpartition(':')[2]}"


def dns_label(name: str) -> str:
    """`name` as a DNS label (RFC 1123): lower case, `_` and other characters become `-`."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-") or "x"


def service_name(topology: str) -> str:
    """The headless Service whose names every replica has (`worker-3.SERVICE`)."""
    return dns_label(topology)


def workload_name(topology: str, node: str) -> str:
    """The Job or StatefulSet of one node; its pods are `NAME-0` … `NAME-(replicas-1)`."""
    return f"{dns_label(topology)}-{dns_label(node)}"


def coordinator_name(topology: str) -> str:
    """The coordinator's Job (or Deployment) and Service: what replicas `--join`."""
    return f"{dns_label(topology)}-coordinator"


def replica_host(topology: str, node: str, index: int) -> str:
    """The stable name of one replica: its pod's host name in the topology's Service."""
    return f"{workload_name(topology, node)}-{index}.{service_name(topology)}"


def replica_index(given: int | None, env: Mapping[str, str], hostname: str) -> int | None:
    """Which replica this process is: `--index`, else the engine's variable (Indexed Job,
    StatefulSet pod index, Slurm), else the host name's ordinal suffix (`worker-3` → 3)."""
    if given is not None:
        return given
    for var in INDEX_VARS:
        value = env.get(var, "").strip()
        if value.isdigit():
            return int(value)
    m = re.search(r"-(\d+)$", hostname.split(".")[0])
    return int(m.group(1)) if m else None


def is_loopback(endpoint: str) -> bool:
    """A tcp endpoint only this machine can reach."""
    host = endpoint[6:].rpartition(":")[0].strip("[]") if endpoint.startswith("tcp://") else ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def long_running(plan: Plan) -> bool:
    """Whether the topology never ends by itself, as far as the plan can tell: every node is a
    `lifetime: service`, or an input is fed from outside the topology with no end."""
    if all(n.lifetime == "service" for n in plan.nodes.values()):
        return True
    return any(s.receives and s.role == "data" and s.end == "never" and s.external
               for n in plan.nodes.values() for s in n.sockets.values())


def export_plan(args: Any, check: Any) -> tuple[Any, Any] | int:
    """What `zflow export k8s` and `export slurm` start with: the topology loaded, planned and
    checked for the engine by `check` (located errors on stderr); the plan and load result, or
    the exit code (2 unreadable, 1 invalid)."""
    import sys

    from zflow import exitcodes
    from zflow.plan import build_plan
    from zflow.runtime.up import _color, load_topology
    from zflow.spec.diagnostics import render

    result, plan_file = load_topology(args)
    if result.topology is None:
        return exitcodes.USAGE if result.unreadable else exitcodes.FAILED
    plan = build_plan(result.topology, plan_file)
    problems = check(plan, result.topology, result.locator)
    if problems:
        render(problems, "human", sys.stderr, color=_color(sys.stderr), sources=result.sources)
        return exitcodes.FAILED
    return plan, result


def forwarded(args: Any) -> tuple[list[str], list[str]]:
    """The overrides (--set/--scale) every exported process repeats, and the link timing
    (--heartbeat-ivl/--heartbeat-timeout) the coordinator and replicas take."""
    overrides = [x for v in args.set for x in ("--set", v)] + \
        [x for v in args.scale for x in ("--scale", v)]
    timing: list[str] = []
    for flag in ("heartbeat_ivl", "heartbeat_timeout"):
        if getattr(args, flag) is not None:
            timing += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return overrides, timing
