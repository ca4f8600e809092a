"""`zflow up`: load and validate, plan, then supervise with a status view."""

from __future__ import annotations

import argparse
import json
import sys

from zflow import exitcodes
from zflow.plan import Plan, build_plan, format_plan


def status_for(plan: Plan, mode: str, per_replica: bool, log_dir: str | None) -> tuple:
    from zflow.status.model import StatusModel
    from zflow.status.views import make_view

    model = StatusModel.from_plan(plan)
    view = make_view(mode, model, sys.stdout, per_replica=per_replica, log_dir=log_dir)
    model.subscribe(view)  # the runtime writes the model; the view hears of each fact from it
    return model, view


def up_command(args: argparse.Namespace) -> int:
    from zflow.runtime.launchers.forkserver import Zygote

    # the fork server warms up (imports pyzmq) while we validate and plan
    zygote = None if args.dry_run else Zygote()
    try:
        return _up(args, zygote)
    finally:
        if zygote is not None:
            zygote.close()


def _up(args: argparse.Namespace, zygote: object) -> int:
    from zflow.spec import load
    from zflow.spec.diagnostics import render

    result = load(args.file, overrides=args.set, scale=args.scale)
    if result.diagnostics:
        sources = getattr(result, "sources", None)
        render(result.diagnostics, "human", sys.stderr, color=sys.stderr.isatty(),
               sources=sources)
    if getattr(result, "unreadable", False):
        return exitcodes.USAGE
    if not result.ok or result.topology is None:
        return exitcodes.FAILED
    plan = build_plan(result.topology, args.file)
    if args.dry_run:
        if args.json:  # the whole plan, for scripts
            json.dump(plan.to_dict(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_plan(plan))
        return exitcodes.OK

    from zflow.runtime.supervisor import Options, Supervisor

    if args.json:
        mode = "json"
    elif args.quiet:
        mode = "quiet"
    elif args.plain or not sys.stdout.isatty():
        mode = "plain"
    else:
        mode = "live"
    model, view = status_for(plan, mode, args.replicas, args.log_dir)
    opts = Options(verbose=args.verbose, telemetry=not args.no_telemetry, grace=args.grace,
                   drain_timeout=args.drain_timeout)
    return Supervisor(plan, model, view, opts, zygote=zygote).run()  # type: ignore[arg-type]
