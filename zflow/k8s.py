"""`zflow export k8s`: Kubernetes manifests from the same plan `zflow up` runs.

Objects, for a topology T (names from zflow/cluster.py, which the replicas use too):

- ConfigMap `T-topology`: the topology file, mounted into every pod at WORKDIR/FILE (the image
  holds the node code in WORKDIR; the file's directory is where `run:` modules are imported from);
- a headless Service `T` with `publishNotReadyAddresses` (the start barrier needs every replica's
  name before any pod is Ready); each pod is `T-NODE-i.T`;
- the coordinator, `zflow coordinator`: a Job (finite topologies) or a Deployment (long-running),
  with its Service `T-coordinator` on the control port;
- per node, `zflow replica`: an Indexed Job with `subdomain: T` (finite), or a StatefulSet with
  `podManagementPolicy: Parallel` (long-running: OrderedReady would deadlock the barrier);
  `restartPolicy: Never`, `backoffLimitPerIndex` from `max_restarts`, and exit code 3 ("could
  not start": retrying will not help) failing the Job;
- CURVE keys from the Secret `T-keys` (`kubectl create secret generic T-keys --from-file=DIR`
  after `zflow keys`): each pod mounts only its own node's secret and the coordinator's public key;
- a NetworkPolicy per node and for the coordinator: ingress only on the topology's own edges
  (from the pods of the connecting nodes, on the socket's port) and the control port.

What cannot work on a cluster is a located error (ZF090-ZF094), like `zflow validate`'s. Command
nodes run under `zflow replica` too (replica/command.py), as long as what they run is in the image.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import yaml

from zflow import cluster, exitcodes
from zflow.plan import Plan
from zflow.spec.diagnostics import Diagnostic

KEYS_MOUNT = "/etc/zflow/keys"
CONTAINER = "replica"
#: the exit code that fails the whole Job: the replica could not start (exitcodes.START_FAILED)
FAIL_JOB_CODES = [exitcodes.START_FAILED]


# -- what cannot run on a cluster ----------------------------------------------------------------
def check(plan: Plan, topology: dict[str, Any], loc: Any) -> list[Diagnostic]:
    """Every reason `plan` cannot run on Kubernetes, located in the file."""
    out: list[Diagnostic] = []
    t = plan.name
    if len(cluster.service_name(t)) + len("-coordinator") > cluster.MAX_NAME:
        out.append(loc.diag("ZF094", f"topology name {t!r} is too long for Kubernetes: "
                                     f"'{cluster.coordinator_name(t)}' is over "
                                     f"{cluster.MAX_NAME} characters", ("name",),
                            hint="a shorter `name:`"))
    base = os.path.realpath(plan.base_dir)
    for n in plan.nodes.values():
        nd = topology["nodes"][n.name]
        path = ("nodes", n.name)
        host = f"{cluster.workload_name(t, n.name)}-{max(0, n.replicas - 1)}"
        if len(host) > cluster.MAX_NAME:
            out.append(loc.diag("ZF094", f"pod host name {host!r} of node '{n.name}' is over "
                                         f"{cluster.MAX_NAME} characters", path, at="key",
                                hint="shorter topology or node names"))
        for i, arg in enumerate(n.argv or []):
            if _host_path(arg, base):
                out.append(loc.diag("ZF093", f"command of node '{n.name}' refers to {arg!r}, "
                                             "a file of this host outside the topology's "
                                             "directory: the image would not have it",
                                    path + ("command", i),
                                    hint="put it in the topology's directory (the image's "
                                         "workdir), or use a program on the image's PATH"))
        if "cwd" in nd:
            real = os.path.realpath(n.cwd)
            if os.path.isabs(str(nd["cwd"])) or os.path.commonpath([base, real]) != base:
                out.append(loc.diag("ZF092", f"cwd {nd['cwd']!r} of node '{n.name}' is a path "
                                             "on this host, outside the topology's directory "
                                             "(the image's workdir on a cluster)",
                                    path + ("cwd",),
                                    hint="a directory inside the topology's directory, "
                                         "which the image holds"))
        for s in n.sockets.values():
            sp = path + ("sockets", s.name)
            if s.mode == "bind" and s.bind and "://" in s.bind:
                if s.bind.startswith("ipc://"):
                    out.append(_ipc(loc, n.name, s.name, s.bind, sp + ("bind",)))
                elif s.bind.startswith("tcp://") and cluster.is_loopback(s.bind):
                    out.append(loc.diag("ZF091", f"'{n.name}.{s.name}' binds {s.bind}: loopback "
                                                 "is unreachable from other pods", sp + ("bind",),
                                        hint="bind: auto (a port on the pod's name)"))
            raw = nd["sockets"][s.name].get("connect")
            targets = [raw] if isinstance(raw, str) else list(raw or [])
            for i, target in enumerate(targets):
                cp = sp + (("connect",) if isinstance(raw, str) else ("connect", i))
                if target.startswith("ipc://"):
                    out.append(_ipc(loc, n.name, s.name, target, cp))
                elif "://" in target and _links_inside(plan, n.name, s.name, target):
                    out.append(loc.diag("ZF091", f"'{n.name}.{s.name}' connects to {target}, a "
                                                 "socket of this topology, by address: on a "
                                                 "cluster its address is a pod's name", cp,
                                        hint="connect by reference: node.socket"))
    return out


#: where an image has its programs: absolute paths there are not this host's files
SYSTEM_DIRS = ("/bin/", "/sbin/", "/usr/", "/lib/", "/lib64/", "/opt/", "/etc/")


def _host_path(arg: str, base: str) -> bool:
    """An argument naming a file outside the topology's directory (what the image holds):
    an absolute path not in the system's directories, or a relative one climbing out."""
    if os.path.isabs(arg):
        real = os.path.realpath(arg)
        return not arg.startswith(SYSTEM_DIRS) and os.path.commonpath([base, real]) != base
    return arg.startswith("../") and \
        os.path.commonpath([base, os.path.realpath(os.path.join(base, arg))]) != base


def _ipc(loc: Any, node: str, sock: str, endpoint: str, path: tuple) -> Diagnostic:
    return loc.diag("ZF090", f"'{node}.{sock}' uses {endpoint}: ipc works only between "
                             "processes of one host, and on a cluster every replica is a pod",
                    path, hint="bind: auto (zflow makes it a tcp port on the pod's name) and "
                               "connect: node.socket")


def _links_inside(plan: Plan, node: str, sock: str, target: str) -> bool:
    from zflow.spec import parse_endpoint
    from zflow.spec.rules import EndpointError, reaches

    try:
        ep = parse_endpoint(target.strip(), binding=False)
    except EndpointError:
        return False
    for n in plan.nodes.values():
        for s in n.sockets.values():
            if s.mode == "bind" and s.bind and "://" in s.bind:
                try:
                    if reaches(parse_endpoint(s.bind, binding=True), ep):
                        return True
                except EndpointError:
                    continue
    return False


# -- the manifests -------------------------------------------------------------------------------
def manifests(plan: Plan, text: str, file_name: str, image: str, namespace: str | None = None,
              workdir: str = "/app", overrides: list[str] | None = None,
              long_running: bool | None = None) -> list[dict[str, Any]]:
    """Every object, in the order `kubectl apply` should create them. `text` is the topology
    file as written; `overrides` the --set/--scale arguments, given to every pod as well."""
    t = plan.name
    svc = cluster.service_name(t)
    coord = cluster.coordinator_name(t)
    endless = cluster.long_running(plan) if long_running is None else long_running
    ports = cluster.ports(plan)
    path = f"{workdir.rstrip('/')}/{file_name}"
    extra = list(overrides or [])
    common = {"app.kubernetes.io/name": "zflow", "app.kubernetes.io/instance": svc,
              "app.kubernetes.io/managed-by": "zflow"}

    def meta(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        m: dict[str, Any] = {"name": name}
        if namespace:
            m["namespace"] = namespace
        m["labels"] = dict(labels or common)
        return m

    def node_labels(node: str) -> dict[str, str]:
        return {**common, "zflow.io/role": "replica", "zflow.io/node": cluster.dns_label(node)}

    coord_labels = {**common, "zflow.io/role": "coordinator"}
    replica_sel = {"app.kubernetes.io/instance": svc, "zflow.io/role": "replica"}

    def volumes(items: list[str]) -> list[dict[str, Any]]:
        return [
            {"name": "topology", "configMap": {"name": f"{svc}-topology"}},
            {"name": "keys", "secret": {"secretName": f"{svc}-keys", "defaultMode": 0o400,
                                        "items": [{"key": k, "path": k} for k in items]}},
        ]

    mounts = [{"name": "topology", "mountPath": path, "subPath": "topology.yaml",
               "readOnly": True},
              {"name": "keys", "mountPath": KEYS_MOUNT, "readOnly": True}]

    def container(name: str, command: list[str], cports: list[dict[str, Any]],
                  env: list[dict[str, Any]],
                  resources: dict[str, Any] | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {"name": name, "image": image, "workingDir": workdir,
                             "command": command,
                             "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, *env]}
        if cports:
            c["ports"] = cports
        if resources:
            c["resources"] = {"requests": requests(resources)}
        c["volumeMounts"] = mounts
        return c

    join = f"tcp://{coord}:{cluster.CONTROL_PORT}"
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{svc}-topology"),
         "data": {"topology.yaml": text}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(svc),
         "spec": _without_empty({"clusterIP": "None", "publishNotReadyAddresses": True,
                                 "selector": replica_sel,
                                 "ports": [{"name": f"p{p}", "port": p, "targetPort": p,
                                            "protocol": "TCP"}
                                           for p in sorted(set(ports.values()))]})},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(coord, coord_labels),
         "spec": {"selector": coord_labels,
                  "ports": [{"name": "control", "port": cluster.CONTROL_PORT,
                             "targetPort": cluster.CONTROL_PORT, "protocol": "TCP"}]}},
    ]
    # who may reach whom: the coordinator from every replica; a socket from its connectors
    objs.append(_policy(meta(coord, coord_labels), coord_labels,
                        [{"from": [{"podSelector": {"matchLabels": replica_sel}}],
                          "ports": [{"port": cluster.CONTROL_PORT, "protocol": "TCP"}]}]))
    for n in plan.nodes.values():
        rules = []
        for s in n.sockets.values():
            if s.mode != "bind":
                continue
            rule: dict[str, Any] = {"ports": [{"port": ports[(n.name, s.name)],
                                               "protocol": "TCP"}]}
            if not s.external:  # programs outside the topology connect to an external one
                peers = sorted({p for p, _ in s.peers})
                rule["from"] = [{"podSelector": {"matchLabels": node_labels(p)}} for p in peers]
            rules.append(rule)
        name = cluster.workload_name(t, n.name)
        objs.append(_policy(meta(name, node_labels(n.name)), node_labels(n.name), rules))

    # the coordinator
    coord_cmd = ["zflow", "coordinator", path, "--listen",
                 f"tcp://0.0.0.0:{cluster.CONTROL_PORT}", "--keys", KEYS_MOUNT, *extra]
    coord_pod = {
        "metadata": {"labels": coord_labels},
        "spec": {"restartPolicy": "Always" if endless else "Never",
                 "containers": [container("coordinator", coord_cmd,
                                          [{"name": "control",
                                            "containerPort": cluster.CONTROL_PORT,
                                            "protocol": "TCP"}], [])],
                 "volumes": volumes(["coordinator.key_secret",
                                     *(f"{n}.key" for n in plan.nodes)])},
    }
    if endless:
        objs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": meta(coord, coord_labels),
                     "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                              "selector": {"matchLabels": coord_labels},
                              "template": coord_pod}})
    else:
        objs.append({"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": meta(coord, coord_labels),
                     "spec": {"backoffLimit": 0, "template": coord_pod}})

    # the nodes
    for n in plan.nodes.values():
        name = cluster.workload_name(t, n.name)
        labels = node_labels(n.name)
        cmd = ["zflow", "replica", path, "--node", n.name, "--join", join, "--keys", KEYS_MOUNT,
               *extra]
        cports = [{"name": f"p{ports[(n.name, s.name)]}",
                   "containerPort": ports[(n.name, s.name)], "protocol": "TCP"}
                  for s in n.sockets.values() if s.mode == "bind"]
        env = [] if not endless else [{"name": "ZFLOW_POD_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}}]
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Always" if endless else "Never",
            "containers": [container(CONTAINER, cmd, cports, env, n.resources)],
            "volumes": volumes(["coordinator.key", f"{n.name}.key_secret",
                                *(["data.key_secret"] if plan.curve else [])]),
        }
        if endless:
            objs.append({"apiVersion": "apps/v1", "kind": "StatefulSet",
                         "metadata": meta(name, labels),
                         "spec": {"serviceName": svc, "replicas": n.replicas,
                                  "podManagementPolicy": "Parallel",
                                  "selector": {"matchLabels": labels},
                                  "template": {"metadata": {"labels": labels},
                                               "spec": pod_spec}}})
            continue
        pod_spec = {"subdomain": svc, **pod_spec}
        retries = 0 if n.restart == "no" else n.max_restarts
        objs.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(name, labels),
                     "spec": {"completionMode": "Indexed", "completions": n.replicas,
                              "parallelism": n.replicas, "backoffLimitPerIndex": retries,
                              "podFailurePolicy": {"rules": [{
                                  "action": "FailJob",
                                  "onExitCodes": {"containerName": CONTAINER,
                                                  "operator": "In",
                                                  "values": FAIL_JOB_CODES}}]},
                              "template": {"metadata": {"labels": labels},
                                           "spec": pod_spec}}})
    return objs


def requests(resources: dict[str, Any]) -> dict[str, str]:
    """A node's `resources:` as a container's `resources.requests` (quantities as strings:
    whole CPUs as they are, fractions in millicores; memory is already a quantity)."""
    out: dict[str, str] = {}
    if "cpus" in resources:
        cpus = float(resources["cpus"])
        out["cpu"] = str(int(cpus)) if cpus.is_integer() else f"{round(cpus * 1000)}m"
    if "mem" in resources:
        out["memory"] = str(resources["mem"])
    return out


def _policy(metadata: dict[str, Any], labels: dict[str, str],
            ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata,
            "spec": {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"],
                     "ingress": ingress}}


def _without_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v != []}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the topology in the ConfigMap) as literal blocks, readable in diffs."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data and all(not line.endswith(" ") for line in data.split("\n")) \
        else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump(objs: list[dict[str, Any]]) -> str:
    """A YAML stream, as `kubectl apply -f -` takes it."""
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, width=100,
                         explicit_start=True)


def file_name(obj: dict[str, Any], i: int) -> str:
    """Numbered in apply order, so `kubectl apply -f DIR/` creates the ConfigMap first."""
    return f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


# -- the command ---------------------------------------------------------------------------------
def export_command(args: argparse.Namespace) -> int:
    """`zflow export k8s`: located errors (exit 1) or the manifests, on stdout or in -o DIR."""
    if not args.image:
        sys.stderr.write("zflow export k8s: --image IMAGE is required (your node code and "
                         "zflow installed)\n")
        return exitcodes.USAGE
    planned = cluster.export_plan(args, check)
    if isinstance(planned, int):
        return planned
    plan, result = planned
    overrides, timing = cluster.forwarded(args)
    extra = overrides + timing
    label = getattr(args, "file_label", None)
    objs = manifests(plan, result.sources[args.file], "topology.yaml" if label
                     else os.path.basename(args.file), args.image, args.namespace,
                     args.workdir, extra, True if args.long_running else None)
    if not args.output:
        sys.stdout.write(dump(objs))
        return exitcodes.OK
    try:
        os.makedirs(args.output, exist_ok=True)
        for i, obj in enumerate(objs):
            with open(os.path.join(args.output, file_name(obj, i)), "w") as f:
                f.write(dump([obj]))
    except OSError as e:
        sys.stderr.write(f"zflow export: cannot write {args.output}: {e.strerror or e}\n")
        return exitcodes.USAGE
    svc = cluster.service_name(plan.name)
    sys.stdout.write(f"{len(objs)} objects for {plan.name} in {args.output}/\n"
                     f"  zflow keys {args.file} -o keys/ && kubectl create secret generic "
                     f"{svc}-keys --from-file=keys/\n  kubectl apply -f {args.output}/\n")
    return exitcodes.OK
