"""The `zflow` command: parses arguments and hands over to spec, plan, runtime and status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from zflow import __version__, exitcodes

EPILOG = "exit codes: " + "; ".join(f"{code} {text}" for code, text in exitcodes.TABLE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep the message short
        self.print_usage(sys.stderr)
        print(f"zflow: error: {message}", file=sys.stderr)
        raise SystemExit(exitcodes.USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zflow", description=__doc__, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"zflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    v = sub.add_parser("validate", help="check topology files against the schema and ZeroMQ rules",
                       epilog=EPILOG)
    v.add_argument("files", nargs="*", metavar="FILE")
    v.add_argument("--format", choices=["human", "json", "github"], default="human")
    v.add_argument("--strict", action="store_true", help="treat warnings as errors")
    v.add_argument("--import-check", action="store_true",
                   help="also import every run: target and check it is callable")
    v.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a value before validating, e.g. nodes.worker.replicas=4")
    v.add_argument("--list-codes", action="store_true", help="print every diagnostic code")

    sub.add_parser("schema", help="print the topology JSON Schema")

    u = sub.add_parser("up", help="run a topology until it completes or is interrupted",
                       epilog=EPILOG)
    u.add_argument("file", metavar="FILE")
    u.add_argument("--dry-run", action="store_true", help="print the plan and start nothing")
    u.add_argument("--scale", action="append", default=[], metavar="NODE=N",
                   help="run N replicas of NODE")
    u.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a value, e.g. nodes.ventilator.params.count=100000")
    u.add_argument("-v", "--verbose", action="store_true",
                   help="nodes print per-record detail (e.g. 'Worker 3 answered: 81')")
    out = u.add_mutually_exclusive_group()
    out.add_argument("-q", "--quiet", action="store_true",
                     help="print only errors and the final result")
    out.add_argument("--json", action="store_true", help="JSON lines on stdout, for scripts")
    out.add_argument("--plain", action="store_true",
                     help="plain lines even on a terminal (no live screen)")
    u.add_argument("--replicas", action="store_true", help="one status row per replica")
    u.add_argument("--log-dir", metavar="DIR", help="also write each replica's output to DIR")
    u.add_argument("--grace", type=float, metavar="SECONDS",
                   help="SIGTERM→SIGKILL grace at shutdown (overrides the topology)")
    u.add_argument("--drain-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="end a stream whose records stopped arriving after this long (records "
                        "lost with a dead replica in best-effort delivery); default 5")
    u.add_argument("--no-telemetry", action="store_true",
                   help="no periodic counters from nodes (benchmarks measure its cost)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        from zflow.spec import schema_text

        sys.stdout.write(schema_text())
        return exitcodes.OK
    if args.command == "validate":
        from zflow.spec.command import validate_command

        return validate_command(args)
    from zflow.runtime.up import up_command

    return up_command(args)


def entry() -> None:
    """Console-script entry: never a traceback on Ctrl-C or a closed pipe."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = exitcodes.INTERRUPTED
    except BrokenPipeError:
        code = exitcodes.OK
    sys.exit(code)


if __name__ == "__main__":
    entry()
