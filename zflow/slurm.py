"""`zflow export slurm`: one batch script that runs a topology on a Slurm allocation.

The script (for `sbatch`) asks for one task slot per process: the coordinator and every
replica. In the allocation it starts the `zflow coordinator` step first and waits until Slurm
has placed it (`squeue --steps`): its slot is then its own, and its host is the name every
replica joins (`tcp://HOST:7000`). Then one `srun` step per node (`zflow replica --node N`, its
index from SLURM_PROCID). Pinning the coordinator to the first host instead and starting every
step at once hung twice in about 12 runs here: the replicas' steps had that host's CPUs. The
CURVE keys are made by `zflow keys` into a directory of the job's own (mode 0700, on the submit
directory's filesystem, which every node must see, as it must see the topology and its code),
removed when the job ends. The job's exit code is the coordinator's, so `sacct`/`scontrol` show
zflow's exit codes.

Why steps in one allocation and not a heterogeneous job (one component per node), measured on
Slurm 22.05 with two idle hosts: the components of a heterogeneous job never shared a host
(three one-task components stayed pending, two started in 0.9 s), so a topology of N nodes
would need N+1 hosts; and heterogeneous jobs start from the backfill scheduler only (about 20 s
with its default interval, ../shared/notes/multi-host-facts.md). Steps start at once in a
running allocation (0.1-0.4 s after the batch script, 7 tasks on 2 hosts). The cost: every task
slot is sized for the largest node (`--cpus-per-task` the largest `cpus`, `--mem-per-cpu` the
largest per-CPU memory), so that whatever steps already run, the next one always fits (each of
its tasks needs at most one slot); each step then asks for its own node's resources (`--exact`).

What cannot run there is a located error like the Kubernetes export's: ipc endpoints (ZF090),
loopback binds and concrete endpoints between the topology's nodes (ZF091), fractions of CPUs
(ZF095). Host paths are fine: a Slurm cluster shares its filesystem.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys
from typing import Any

from zflow import cluster, exitcodes
from zflow.plan import Plan
from zflow.spec.diagnostics import Diagnostic

#: the k8s export's checks that hold on any cluster (the rest are about images and names)
CLUSTER_CODES = ("ZF090", "ZF091")
#: how long the script waits for the replicas to stop after the coordinator ended, before the
#: job ends (and Slurm kills what is left)
STOP_WAIT = 30
#: how long the script waits for the coordinator's step to be placed (the coordinator's own
#: --start-timeout)
START_WAIT = 600
_MEM = re.compile(r"([1-9][0-9]*)(Ki|Mi|Gi|Ti)")
_MIB = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


def check(plan: Plan, topology: dict[str, Any], loc: Any) -> list[Diagnostic]:
    """Every reason `plan` cannot run on Slurm, located in the file."""
    from zflow import k8s

    out = [d for d in k8s.check(plan, topology, loc) if d.code in CLUSTER_CODES]
    for n in plan.nodes.values():
        cpus = n.resources.get("cpus")
        if cpus is not None and not float(cpus).is_integer():
            out.append(loc.diag("ZF095", f"node '{n.name}' asks for {cpus} CPUs: Slurm "
                                         "allocates whole CPUs (--cpus-per-task)",
                                ("nodes", n.name, "resources", "cpus"),
                                hint=f"cpus: {math.ceil(float(cpus))}"))
    return out


def mebibytes(mem: str) -> int:
    """`512Mi`, `2Gi`, … in MiB, rounded up (Slurm's `M` is a MiB)."""
    m = _MEM.fullmatch(mem)
    if m is None:
        raise ValueError(f"not a memory size: {mem!r}")
    return math.ceil(int(m.group(1)) * _MIB[m.group(2)])


def _cpus(resources: dict[str, Any]) -> int:
    return int(resources.get("cpus", 1))


def _mem_per_cpu(resources: dict[str, Any]) -> int | None:
    mem = resources.get("mem")
    return None if mem is None else math.ceil(mebibytes(str(mem)) / _cpus(resources))


def script(plan: Plan, topology_path: str, overrides: list[str] | None = None,
           run_options: list[str] | None = None, source: str = "") -> str:
    """The batch script. `topology_path` is where every node reads the file (absolute);
    `overrides` the --set/--scale arguments, `run_options` the coordinator's and replicas'
    (heartbeats)."""
    t = plan.name
    label = cluster.dns_label(t)
    nodes = list(plan.nodes.values())
    slots = 1 + sum(n.replicas for n in nodes)
    with_cpus = any("cpus" in n.resources for n in nodes)
    per_cpu = [m for n in nodes if (m := _mem_per_cpu(n.resources)) is not None]
    max_cpus = max([_cpus(n.resources) for n in nodes] + [1])
    max_mem = max(per_cpu) if per_cpu else None
    # a node whose replicas bind ports: one replica per host (the ports are the same for all)
    spread = max([n.replicas for n in nodes
                  if n.replicas > 1 and any(s.mode == "bind" for s in n.sockets.values())]
                 + [1])

    def resources(r: dict[str, Any], shared: bool = False) -> str:
        out = f" --cpus-per-task={_cpus(r)}" if with_cpus else ""
        if shared:  # the job's memory, taken from no other step (srun: "--mem=0")
            return out + " --mem=0"
        mem = _mem_per_cpu(r) or max_mem  # a step without a request could take it all
        return out + (f" --mem-per-cpu={mem}M" if mem is not None else "")

    head = [
        "#!/bin/bash",
        f"# zflow export slurm: the topology {t!r}{f' ({source})' if source else ''}, "
        f"{slots - 1} replica(s) of {len(nodes)} node(s) and its coordinator.",
        "# Submit: sbatch THIS_FILE (sbatch's own options, -p -t -A ..., override the lines",
        "# below). The job's exit code is the coordinator's: 0 completed, 1 failed, 2 usage,",
        "# 3 could not start, 4 incomplete, 130 interrupted. Output: "
        f"{label}-JOBID.out.",
        "#",
        "# One allocation, one srun step per node (and one for the coordinator), not a",
        "# heterogeneous job: its components did not share hosts (Slurm 22.05: N nodes would",
        "# need N+1 hosts) and it starts only from the backfill scheduler, while steps start",
        "# at once in the allocation (0.1-0.4 s measured). Every task slot is sized for the",
        "# largest node so that each step always fits; each step asks for its own node's.",
        "# The topology file, its code and the submit directory must be on a filesystem",
        "# every node sees; zflow must be on PATH there (or set ZFLOW).",
        f"#SBATCH --job-name={label}",
        f"#SBATCH --output={label}-%j.out",
        f"#SBATCH --ntasks={slots}",
    ]
    if spread > 1:
        head.append(f"#SBATCH --nodes={spread}-{slots}")
    if with_cpus:
        head.append(f"#SBATCH --cpus-per-task={max_cpus}")
    if max_mem is not None:
        head.append(f"#SBATCH --mem-per-cpu={max_mem}M")
    args = " ".join(shlex.quote(a) for a in overrides or [])
    run = " ".join(shlex.quote(a) for a in run_options or [])
    body = [
        "",
        "set -u",
        f"TOPOLOGY=${{ZFLOW_TOPOLOGY:-{shlex.quote(topology_path)}}}",
        "ZFLOW=${ZFLOW:-zflow}",
        f"OVERRIDES=({args})",
        f"RUN=({run})",
        f"PORT={cluster.CONTROL_PORT}",
        "# the job's own directory: its CURVE keys, readable by this user only",
        'RUN_DIR="${ZFLOW_RUN_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/.zflow-$SLURM_JOB_ID}"',
        "steps=()",
        "cleanup() {",
        '    for pid in "${steps[@]}"; do kill -TERM "$pid" 2>/dev/null; done',
        '    rm -rf "$RUN_DIR"',
        "}",
        "trap cleanup EXIT",
        "trap 'exit 130' INT TERM",
        'umask 077 && mkdir -m 0700 "$RUN_DIR" || exit 2',
        '$ZFLOW keys "$TOPOLOGY" "${OVERRIDES[@]}" -o "$RUN_DIR/keys" >/dev/null || exit $?',
        "# the coordinator first: its step gets its slot before any replica's step can take it,",
        "# and its host (from the allocation: where Slurm placed the step) is what replicas join",
        f"srun --exact --ntasks=1 --nodes=1{resources({})} --job-name=coordinator \\",
        '    $ZFLOW coordinator "$TOPOLOGY" "${OVERRIDES[@]}" "${RUN[@]}" '
        '--listen "tcp://0.0.0.0:$PORT" \\',
        '    --keys "$RUN_DIR/keys" &',
        "coordinator=$!",
        "steps+=($coordinator)",
        "HOST=",
        f"deadline=$((SECONDS + {START_WAIT}))",
        'while [ -z "$HOST" ] && kill -0 "$coordinator" 2>/dev/null && '
        '[ "$SECONDS" -lt "$deadline" ]; do',
        '    HOST=$(squeue -h -s -j "$SLURM_JOB_ID" -o "%j %N" | '
        "awk '$1 == \"coordinator\" {print $2}')",
        '    [ -n "$HOST" ] || sleep 0.1',
        "done",
        'if [ -z "$HOST" ]; then  # it ended before it had a host, or never got one',
        '    kill -0 "$coordinator" 2>/dev/null || { wait "$coordinator"; exit $?; }',
        '    echo "zflow export slurm: the coordinator\'s step did not start in '
        f'{START_WAIT} s" >&2',
        f"    exit {exitcodes.START_FAILED}",
        "fi",
        'JOIN="tcp://$HOST:$PORT"',
    ]
    for n in nodes:
        bind = any(s.mode == "bind" for s in n.sockets.values())
        # one per host, sharing CPUs and memory with the other steps (--overlap, --mem=0): a
        # host of the allocation may have no slot left for it (seen here: rpc's servers' step
        # waited forever for the host whose one slot the client's step had, and with --overlap
        # alone failed with "Memory required by task is not available")
        spread = bind and n.replicas > 1
        where = (f"--nodes={n.replicas} --ntasks-per-node=1 --overlap" if spread
                 else "--nodes=1" if n.replicas == 1 else f"--nodes=1-{n.replicas}")
        body += [
            f"# {n.name}: {n.replicas} replica(s), index = SLURM_PROCID",
            f"srun --exact --ntasks={n.replicas} {where}{resources(n.resources, spread)} "
            f"--job-name={shlex.quote(n.name)} \\",
            f'    $ZFLOW replica "$TOPOLOGY" "${{OVERRIDES[@]}}" "${{RUN[@]}}" '
            f"--node {shlex.quote(n.name)} --join \"$JOIN\" \\",
            '    --keys "$RUN_DIR/keys" &',
            "steps+=($!)",
        ]
    body += [
        "",
        'wait "$coordinator"',
        "code=$?",
        "# the replicas stop when the coordinator does; what has not stopped in time is ended",
        "# with the job (Slurm kills every step of a job that ends)",
        f"deadline=$((SECONDS + {STOP_WAIT}))",
        'for pid in "${steps[@]:1}"; do',
        '    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do',
        "        sleep 0.2",
        "    done",
        "done",
        'exit "$code"',
        "",
    ]
    return "\n".join(head + body)


def export_command(args: argparse.Namespace) -> int:

    if getattr(args, "file_label", None):
        sys.stderr.write("zflow export slurm: every node reads the topology file where it is: "
                         "give its path (on a filesystem the cluster shares), not -\n")
        return exitcodes.USAGE
    for flag in ("image", "namespace"):
        if getattr(args, flag, None):
            sys.stderr.write(f"zflow export slurm: --{flag} is an option of export k8s\n")
            return exitcodes.USAGE
    planned = cluster.export_plan(args, check)
    if isinstance(planned, int):
        return planned
    plan = planned[0]
    overrides, run = cluster.forwarded(args)
    text = script(plan, os.path.abspath(args.file), overrides, run, source=args.file)
    if not args.output:
        sys.stdout.write(text)
        return exitcodes.OK
    try:
        with open(args.output, "w") as f:
            f.write(text)
        os.chmod(args.output, 0o755)
    except OSError as e:
        sys.stderr.write(f"zflow export: cannot write {args.output}: {e.strerror or e}\n")
        return exitcodes.USAGE
    sys.stdout.write(f"batch script for {plan.name} in {args.output}\n  sbatch {args.output}\n")
    return exitcodes.OK
