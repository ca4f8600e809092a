"""`zflow coordinator`, `zflow replica` and `zflow keys`: one topology over several hosts.

The coordinator is `zflow up` without local processes: the same supervisor loop, views and exit
codes, with a control plane on tcp (CURVE) and a launcher whose replicas join by themselves.
Each replica is one `zflow replica` process that an engine (Kubernetes, Slurm, a shell) starts
on some host. Both load the same topology file with the same --set/--scale, and the coordinator
refuses a replica whose topology digest differs from its own.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from zflow import cluster, exitcodes
from zflow import keys as zkeys
from zflow.plan import Plan, build_plan
from zflow.runtime.up import after_run, load_topology, run_options, status_for, view_mode


def _fail(message: str, code: int, who: str) -> int:
    sys.stderr.write(f"zflow {who}: {message}\n")
    return code


def _plan(args: argparse.Namespace) -> tuple[Plan | None, str | None, int]:
    result, plan_file = load_topology(args)
    if result.topology is None:
        return None, None, exitcodes.USAGE if result.unreadable else exitcodes.FAILED
    return build_plan(result.topology, plan_file), cluster.digest(result.topology), exitcodes.OK


def _tcp(endpoint: str, flag: str, who: str) -> int | None:
    port = endpoint.rpartition(":")[2]
    if not endpoint.startswith("tcp://") or not (port.isdigit() or port == "*"):
        return _fail(f"{flag} needs a tcp endpoint (tcp://HOST:PORT), not {endpoint!r}",
                     exitcodes.USAGE, who)
    return None


def coordinator_command(args: argparse.Namespace) -> int:
    """`zflow coordinator`: `zflow up`'s loop and views over a tcp control plane, no processes."""
    plan, digest, code = _plan(args)
    if plan is None:
        return code
    bad = _tcp(args.listen, "--listen", "coordinator")
    if bad is not None:
        return bad
    keys = None
    if args.keys:
        try:
            keys = zkeys.for_coordinator(args.keys, list(plan.nodes))
        except zkeys.KeyFileError as e:
            return _fail(str(e), exitcodes.USAGE, "coordinator")
    elif not cluster.is_loopback(args.listen):
        return _fail(f"--listen {args.listen} is reachable from other hosts: CURVE is mandatory "
                     "there; give --keys DIR (made by `zflow keys FILE -o DIR`)",
                     exitcodes.USAGE, "coordinator")
    import zmq

    from zflow.runtime.supervisor import Remote, Supervisor

    model, view = status_for(plan, view_mode(args), args.replicas, None,
                             log_prefix=not args.no_log_prefix)
    if plan.curve and keys is None:
        return _fail("security: {curve: true} needs --keys DIR (with data.key_secret)",
                     exitcodes.USAGE, "coordinator")
    opts = run_options(args, remote=True, digest=digest,
                       node_keys=keys.nodes if keys is not None else None,
                       data_key={} if plan.curve else None)
    sup = Supervisor(cluster.remote_plan(plan), model, view, opts,
                     remote=Remote(args.listen, keys, (args.heartbeat_ivl, args.heartbeat_timeout)))
    sup.on_listen = lambda ep: sys.stderr.write(f"zflow coordinator: listening on {ep}\n")
    try:
        code = sup.run()
    except zmq.ZMQError as e:
        return _fail(f"cannot listen on {args.listen}: {e.strerror}", exitcodes.START_FAILED,
                     "coordinator")
    return after_run(code)


def replica_command(args: argparse.Namespace) -> int:
    """`zflow replica`: everything is checked here before joining, so a bad pod fails fast
    with exit 2 instead of being admitted and then crash-looping."""
    plan, digest, code = _plan(args)
    if plan is None:
        return code
    assert digest is not None
    who = "replica"
    node = plan.nodes.get(args.node)
    if node is None:
        return _fail(f"no node {args.node!r} in {plan.name} (nodes: {', '.join(plan.nodes)})",
                     exitcodes.USAGE, who)
    bad = _tcp(args.join, "--join", who)
    if bad is not None:
        return bad
    index = cluster.replica_index(args.index, os.environ, socket.gethostname())
    if index is None:
        return _fail("cannot tell which replica this is: give --index I, or run it where "
                     f"one of {', '.join(cluster.INDEX_VARS)} is set, or on a host named "
                     "NAME-I", exitcodes.USAGE, who)
    if not 0 <= index < node.replicas:
        return _fail(f"replica index {index} is out of range: {node.name} has {node.replicas} "
                     "replica(s)", exitcodes.USAGE, who)
    keys = None
    if args.keys:
        try:
            keys = zkeys.for_replica(args.keys, node.name)
        except zkeys.KeyFileError as e:
            return _fail(str(e), exitcodes.USAGE, who)
    elif not cluster.is_loopback(args.join):
        return _fail(f"--join {args.join} is beyond this host: CURVE is mandatory there; give "
                     "--keys DIR", exitcodes.USAGE, who)
    data_key = None
    if plan.curve:  # checked before joining: a replica admitted and then failing would restart
        try:
            data_key = zkeys.data_key(args.keys or "")
        except zkeys.KeyFileError as e:
            return _fail(str(e), exitcodes.USAGE, who)
    import zmq

    from zflow.runtime.replica import join, main
    from zflow.runtime.replica.core import Node

    host = args.advertise or socket.getfqdn()
    try:
        joined = join.connect(args.join, node.name, index, digest, host, keys,
                              timeout=args.join_timeout,
                              heartbeat=(args.heartbeat_ivl, args.heartbeat_timeout))
    except join.JoinError as e:
        return _fail(str(e), e.code, who)
    spec = joined.spec
    if args.any_port and spec.kind == "python":  # tests on one host: the OS picks the ports
        for s in spec.sockets:
            if s.mode == "bind" and s.bind_endpoint and s.bind_endpoint.startswith("tcp://"):
                s.bind_endpoint = "tcp://127.0.0.1:*"
    spec.heartbeat = [args.heartbeat_ivl, args.heartbeat_timeout]
    if spec.curve is not None and not spec.curve:  # the data key is ours to bring
        spec.curve = data_key
    join.prepare(spec)
    done = threading.Event()
    watcher = join.watch_link(joined.monitor, done)
    if spec.kind == "command":
        import faulthandler

        from zflow.runtime.replica import command

        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

        code = command.run(spec, joined.ctrl, any_port=args.any_port, closing=done.set)
        watcher.join(5)
        joined.ctx.term()
        return code
    tee = join.Tee(joined.ctx, joined.ctrl.getsockopt(zmq.IDENTITY), args.join, keys,
                   (args.heartbeat_ivl, args.heartbeat_timeout))

    def closing() -> None:
        tee.close()
        done.set()

    return main.run(spec, lambda: Node(spec, args.join, joined.ctx, joined.ctrl), remote=True,
                    closing=closing)


def keys_command(args: argparse.Namespace) -> int:
    """`zflow keys`: keeps keys already there, so re-running after adding a node is safe."""
    result, _ = load_topology(args)
    if result.topology is None:
        return exitcodes.USAGE if result.unreadable else exitcodes.FAILED
    try:
        written = zkeys.generate(args.output, list(result.topology["nodes"]))
    except OSError as e:
        return _fail(f"cannot write keys to {args.output}: {e.strerror or e}", exitcodes.USAGE,
                     "keys")
    kept = "" if written else " (all there already; nothing written)"
    sys.stdout.write(f"keys for {result.topology['name']} in {args.output}{kept}\n")
    for path in written:
        sys.stdout.write(f"  {path}\n")
    return exitcodes.OK
