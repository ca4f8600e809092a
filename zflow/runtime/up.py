"""`zflow up`: load and validate, plan, then supervise with a status view."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from typing import Any

from zflow import exitcodes
from zflow.plan import Plan, build_plan, format_plan
from zflow.records import replace


def _color(stream: Any) -> bool:
    """Colour on a terminal unless NO_COLOR is set (as `zflow validate` does)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def status_for(plan: Plan, mode: str, per_replica: bool, log_dir: str | None,
               log_prefix: bool = True) -> tuple:
    from zflow.status.model import StatusModel
    from zflow.status.views import make_view

    model = StatusModel.from_plan(plan)
    view = make_view(mode, model, sys.stdout, per_replica=per_replica, log_dir=log_dir,
                     log_prefix=log_prefix)
    model.subscribe(view)  # the runtime writes the model; the view hears of each fact from it
    return model, view


def up_command(args: argparse.Namespace) -> int:
    """`args.zygote`: a fork server the caller started (and closes); else one is started here."""
    given = getattr(args, "zygote", None)
    if given is not None or args.dry_run:
        return _up(args, given)
    from zflow.runtime.launchers.forkserver import Zygote

    # the fork server warms up (imports pyzmq) while we validate and plan
    zygote = Zygote()
    try:
        return _up(args, zygote)
    finally:
        zygote.close()


#: what --dry-run prints instead of an env value (unless --show-secrets)
MASK = "***"


def relabel(result: Any, path: str, label: str) -> Any:
    """A LoadResult of `path` (a temporary copy of stdin) whose diagnostics name `label`."""
    result.path = label
    result.diagnostics = [replace(d, file=label) if d.file == path else d
                          for d in result.diagnostics]
    result.sources = {label if k == path else k: v for k, v in result.sources.items()}
    return result


def load_topology(args: argparse.Namespace) -> tuple[Any, str]:
    """Load and validate FILE with --set/--scale, reporting problems on stderr (or as JSON on
    stdout with --json). Returns the LoadResult and the file name to plan with (the topology's
    directory is the base of relative paths; stdin's is the current directory)."""
    from zflow.spec import load
    from zflow.spec.diagnostics import render

    label = getattr(args, "file_label", None)
    result = load(args.file, overrides=args.set, scale=args.scale)
    if label:
        result = relabel(result, args.file, label)
    as_json = getattr(args, "json", False)
    if as_json and (result.topology is None):  # the shape of `validate --format json`, one line
        sys.stdout.write(json.dumps([d.to_dict() for d in result.diagnostics],
                                    ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif result.diagnostics:
        render(result.diagnostics, "human", sys.stderr, color=_color(sys.stderr),
               sources=result.sources)
    plan_file = os.path.join(os.getcwd(), label) if label else args.file
    return result, plan_file


def masked(plan: Plan) -> Plan:
    """A copy of the plan whose env values read `***`: --dry-run output gets pasted and logged."""
    plan = copy.deepcopy(plan)
    for node in plan.nodes.values():
        node.env = {k: MASK for k in node.env}
    return plan


def _env_text(plan: Plan, shown: bool) -> str:
    nodes = [n for n in plan.nodes.values() if n.env]
    if not nodes:
        return ""
    head = "environment:" if shown else "environment (values masked; --show-secrets shows them):"
    lines = ["", head]
    for n in nodes:
        lines.extend(f"  {n.name}  {k}={v}" for k, v in n.env.items())
    return "\n".join(lines) + "\n"


def replan(args: argparse.Namespace, plan: Plan) -> Plan | str:
    """--watch: the topology file loaded and planned again, as at the start (or why not)."""
    from zflow.spec import load

    result = load(args.file, overrides=args.set, scale=args.scale)
    if result.topology is None:
        errors = [d for d in result.diagnostics if d.is_error]
        return "; ".join(f"line {d.line}: {d.message}" for d in errors[:3]) or "unreadable"
    return build_plan(result.topology, plan.file, run_dir=plan.run_dir)


def _up(args: argparse.Namespace, zygote: object) -> int:
    result, plan_file = load_topology(args)
    if result.topology is None:
        return exitcodes.USAGE if result.unreadable else exitcodes.FAILED
    plan = build_plan(result.topology, plan_file)
    if args.dry_run:
        shown = getattr(args, "show_secrets", False)
        printed = plan if shown else masked(plan)
        if args.json:  # the whole plan, for scripts
            json.dump(printed.to_dict(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_plan(printed) + _env_text(printed, shown))
        return exitcodes.OK

    from zflow.runtime.supervisor import Supervisor

    model, view = status_for(plan, view_mode(args), args.replicas, args.log_dir,
                             log_prefix=not getattr(args, "no_log_prefix", False))
    # more subscribers of the model (a detached run's recorder, the metrics endpoint): each
    # returns the view the supervisor drives, wrapping the one it was given
    for hook in getattr(args, "status_hooks", ()):
        view = hook(plan, model, view)
    opts = run_options(args, data_key=data_keypair() if plan.curve else None)
    supervisor = Supervisor(plan, model, view, opts, zygote=zygote)  # type: ignore[arg-type]
    if getattr(args, "watch", False):
        from zflow.runtime.watch import Watcher

        from_stdin = bool(getattr(args, "file_label", None))
        supervisor.watcher = Watcher(plan, None if from_stdin else lambda: replan(args, plan))
    return after_run(supervisor.run())


def data_keypair() -> dict[str, str]:
    """A CURVE keypair for one run's data sockets (`security: {curve: true}` on one host): it
    lives only in the specs of this run's replicas."""
    import zmq

    public, secret = zmq.curve_keypair()
    return {"public": public.decode(), "secret": secret.decode()}


def view_mode(args: argparse.Namespace) -> str:
    """live on a terminal, plain lines otherwise; --json, --quiet, --plain say otherwise."""
    if args.json:
        return "json"
    if args.quiet:
        return "quiet"
    if args.plain or not sys.stdout.isatty():
        return "plain"
    return "live"


def run_options(args: argparse.Namespace, **more: Any) -> Any:
    """The coordinator's options from the run options `up` and `coordinator` share."""
    from zflow.runtime.coordinator import Options

    return Options(verbose=args.verbose, telemetry=not args.no_telemetry, grace=args.grace,
                   drain_timeout=args.drain_timeout,
                   start_timeout=getattr(args, "start_timeout", 30.0), **more)


def after_run(code: int) -> int:
    # the run is over and its outcome decided: a Ctrl-C now (a second one, pressed while the
    # first was stopping the run) must not turn exit 130 into death by SIGINT
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code
