"""The `zflow` command: arguments, help and shell completion; the work is done elsewhere."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from zflow import __version__, exitcodes

DESCRIPTION = "Run ZeroMQ pipelines described in YAML: validate, draw, run and watch them."

#: (name, one line): the order `zflow --help` lists them in
COMMANDS = [
    ("validate", "check topology files against the schema and ZeroMQ's rules"),
    ("up", "run a topology until it completes or is interrupted"),
    ("graph", "draw a topology: text in the terminal, Mermaid or Graphviz dot"),
    ("coordinator", "run a topology whose replicas run on other hosts and join it"),
    ("replica", "run one replica of a topology on this host, joining its coordinator"),
    ("keys", "make the CURVE keys of a topology's coordinator and nodes"),
    ("export", "write what runs a topology on Kubernetes (manifests) or Slurm (a batch script)"),
    ("schema", "print the topology JSON Schema"),
    ("completion", "print a shell completion script (bash, zsh or fish)"),
    # long-running topologies (zflow/runs/): runs started with `zflow up -d`
    ("ps", "list the runs on this machine, or show one run's nodes and replicas"),
    ("top", "the live screen of a detached run"),
    ("logs", "a run's output, merged in time order; -f follows it"),
    ("stop", "stop a run gracefully and print its exit status"),
    ("down", "stop a run and remove it from the registry (cleans up stale runs)"),
]

#: how the command line names the standard input, and how diagnostics name it
STDIN, STDIN_LABEL = "-", "<stdin>"
#: hidden helper for completion scripts: the node names of a topology file, one a line
COMPLETE_NODES = "__complete-nodes"

#: zflow.graph.FORMATS (not imported here: `zflow --help` should not load the validator)
GRAPH_FORMATS = ("text", "mermaid", "dot")

FILE_HELP = "a topology file (YAML); - reads it from standard input"


def _exit_codes(*rows: tuple[int, str]) -> str:
    return "exit codes:\n" + "\n".join(
        textwrap.fill(text, 96, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code, text in rows)


USAGE_ROW = (exitcodes.USAGE, "usage error, or a file that cannot be read (missing, binary, "
                              "not UTF-8, over 2 MiB)")

MAIN_EPILOG = """\
examples:
  zflow validate topologies/*.yaml                   check files, compiler-style errors
  zflow up topologies/squares.yaml                   run the squares pipeline
  zflow up --scale worker=4 topologies/squares.yaml  four worker replicas
  zflow graph topologies/squares.yaml                draw it in the terminal
  zflow graph --format mermaid topologies/squares.yaml > squares.mmd
  zflow completion bash > ~/.local/share/bash-completion/completions/zflow

Run 'zflow COMMAND --help' for a command's options, examples and exit codes."""

VALIDATE_EPILOG = """\
examples:
  zflow validate topologies/*.yaml                     every problem in every file, at once
  zflow validate --format github topologies/*.yaml     GitHub Actions annotations
  zflow validate --format json topologies/*.yaml       a JSON list of problems, for scripts
  zflow validate --import-check topologies/squares.yaml  also import each run: target
  zflow validate --set nodes.worker.replicas=0 topologies/squares.yaml
  envsubst < template.yaml | zflow validate -          the topology from standard input

""" + _exit_codes(
    (exitcodes.OK, "every file is valid (warnings allowed unless --strict)"),
    (exitcodes.FAILED, "a file has errors"),
    USAGE_ROW,
)

UP_EPILOG = """\
examples:
  zflow up topologies/squares.yaml          live screen on a terminal, plain lines otherwise
  zflow up --scale worker=4 --set nodes.ventilator.params.count=1000000 topologies/squares.yaml
  zflow up -v topologies/squares.yaml       nodes print per-record detail
  zflow up --json topologies/squares.yaml   JSON lines: states, stats each second, the result
  zflow up --quiet --log-dir logs/ topologies/squares.yaml   errors and the result only
  zflow up --dry-run topologies/squares.yaml   the plan (replicas, endpoints); starts nothing
  zflow up -d topologies/squares.yaml       in the background: prints the run's name (zflow ps,
                                            zflow logs -f NAME, zflow stop NAME)
  zflow up --metrics 9100 topologies/squares.yaml   Prometheus /metrics, /healthz, /ready
  cat squares.yaml | zflow up -             the topology from standard input

--set and --scale are applied before validation: an override is checked like the file itself.
With --json, a topology that is not valid is reported on stdout as a JSON list of problems (the
shape of 'zflow validate --format json').
With -d, zflow returns once the run is running (exit 0), or with the codes below if it could
not start, saying why as an attached run would.

""" + _exit_codes(
    (exitcodes.OK, "the run completed: every node finished its stream"),
    (exitcodes.FAILED, "the topology is invalid, or a node failed beyond its restart policy "
                       "(the message names the replica)"),
    USAGE_ROW[:1] + (USAGE_ROW[1] + "; --metrics without prometheus_client installed",),
    (exitcodes.START_FAILED, "the run could not start (endpoint in use, run: target missing or "
                             "failing at import, command not found, --metrics port in use); "
                             "nothing is left running"),
    (exitcodes.INCOMPLETE, "the run ended, but records were lost, skipped or dead-lettered "
                           "(the summary says how many and where)"),
    (exitcodes.INTERRUPTED, "the run was interrupted (Ctrl-C or SIGTERM)"),
)

GRAPH_EPILOG = """\
examples:
  zflow graph topologies/squares.yaml                    a drawing in the terminal
  zflow graph --format mermaid topologies/squares.yaml   paste into Markdown (renders on GitHub)
  zflow graph --format dot topologies/squares.yaml | dot -Tsvg > squares.svg
  zflow graph --scale worker=4 topologies/squares.yaml   as it would run with 4 workers

Nodes show their replica count, shape and sockets; edges their pattern (fan-out, fan-in,
pub/sub, request/reply); the control channel (stop_on / send_on_end) is drawn dotted.

""" + _exit_codes(
    (exitcodes.OK, "drawn"),
    (exitcodes.FAILED, "the topology is invalid (problems on stderr, as 'zflow validate' says)"),
    USAGE_ROW,
)

COORDINATOR_EPILOG = """\
examples:
  zflow keys topologies/squares.yaml -o keys/
  zflow coordinator topologies/squares.yaml --listen tcp://0.0.0.0:7000 --keys keys/
  zflow coordinator --json --scale worker=4 topologies/squares.yaml --keys keys/

The coordinator starts no process: each replica is one 'zflow replica' that an engine starts
on some host (the same file, the same --set/--scale). It shows the run as 'zflow up' does and
exits with the same codes. CURVE is mandatory unless --listen is on loopback.

""" + _exit_codes(
    (exitcodes.OK, "the run completed: every node finished its stream"),
    (exitcodes.FAILED, "the topology is invalid (or has command nodes), or a node failed beyond "
                       "its restart policy"),
    (exitcodes.USAGE, "usage error, a file that cannot be read, keys missing, or no --keys for "
                      "a non-loopback --listen"),
    (exitcodes.START_FAILED, "the run could not start: cannot listen, a replica could not bind "
                             "or import, or not every replica joined within --start-timeout"),
    (exitcodes.INCOMPLETE, "the run ended, but records were lost, skipped or dead-lettered"),
    (exitcodes.INTERRUPTED, "the run was interrupted (Ctrl-C or SIGTERM)"),
)

REPLICA_EPILOG = """\
examples:
  zflow replica squares.yaml --node worker --join tcp://squares-coordinator:7000 --keys keys/
  zflow replica squares.yaml --node worker --index 3 --join tcp://10.0.0.1:7000 --keys keys/

The index comes from --index, else JOB_COMPLETION_INDEX (Indexed Job), ZFLOW_POD_INDEX
(StatefulSet), SLURM_PROCID, else the host name's suffix (worker-3 is 3). Sockets bind fixed
ports (the same for every replica of a socket) and are advertised under --advertise (default:
this host's fully qualified name). A replica that loses its coordinator stops and exits.

""" + _exit_codes(
    (exitcodes.OK, "its stream ended and the coordinator stopped it"),
    (exitcodes.FAILED, "it failed while running, lost its coordinator, or was not admitted "
                       "within --join-timeout"),
    (exitcodes.USAGE, "usage error, a file that cannot be read, no such node or index, keys "
                      "missing"),
    (exitcodes.START_FAILED, "could not start: refused by the coordinator (its topology differs, "
                             "or its key is not allowed), bind or import failed"),
)

KEYS_EPILOG = """\
examples:
  zflow keys topologies/squares.yaml -o keys/
  kubectl create secret generic squares-keys --from-file=keys/

Writes coordinator.key / coordinator.key_secret and NODE.key / NODE.key_secret per node
(ZeroMQ certificate files; secrets mode 0600). Keys already there are kept.

""" + _exit_codes(
    (exitcodes.OK, "written (or all there already)"),
    (exitcodes.FAILED, "the topology is invalid"),
    (exitcodes.USAGE, "usage error, a file that cannot be read, or DIR not writable"),
)

EXPORT_EPILOG = """\
examples:
  zflow export k8s topologies/squares.yaml --image registry.example/squares:1 -o k8s/
  zflow export k8s --scale worker=20 topologies/squares.yaml --image squares:1 -n jobs
  kubectl apply -f k8s/ && kubectl logs -f job/squares-coordinator
  zflow export slurm --scale worker=8 topologies/squares.yaml -o squares.sbatch
  sbatch squares.sbatch && tail -f squares-*.out

k8s writes the topology as a ConfigMap, a headless Service, the coordinator (Job, or Deployment
for long-running topologies) with its Service, one Indexed Job (or StatefulSet) per node and
NetworkPolicies allowing only the topology's own edges. Without -o, prints one YAML stream.
slurm writes one batch script: an allocation with a task per replica and the coordinator, one
srun step per node; the job's exit code is the coordinator's.

""" + _exit_codes(
    (exitcodes.OK, "written"),
    (exitcodes.FAILED, "the topology is invalid, or cannot run on a cluster (located errors: "
                       "ipc:// endpoints, host paths, names too long; on Slurm fractions of "
                       "CPUs)"),
    (exitcodes.USAGE, "usage error (k8s without --image, slurm from -), a file that cannot be "
                      "read, or the output not writable"),
)

SCHEMA_EPILOG = """\
examples:
  zflow schema > topology.schema.json
  # then start topology files with: # yaml-language-server: $schema=topology.schema.json

""" + _exit_codes((exitcodes.OK, "printed"))

COMPLETION_EPILOG = """\
examples:
  zflow completion bash > ~/.local/share/bash-completion/completions/zflow
  echo 'source <(zflow completion bash)' >> ~/.bashrc
  zflow completion zsh > "${fpath[1]}/_zflow"      # then restart zsh
  zflow completion fish > ~/.config/fish/completions/zflow.fish

Completes commands, options, file names for FILE, --format values, and node names for --scale
once a topology file is on the command line.

""" + _exit_codes((exitcodes.OK, "printed"), (exitcodes.USAGE, "usage error"))


def _columns() -> int:
    """`shutil.get_terminal_size().columns`, without importing shutil (and bz2, lzma, fnmatch
    with it: ~3 ms of every command, for argparse checks each option with a formatter)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse exits 2 too; keep the message short
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        if self.prog == "zflow":
            names = [n for n, _ in COMMANDS]
            cmd = next((a for a in getattr(self, "argv", []) if a in names), None)
            print(f"Run 'zflow {cmd} --help' for its options." if cmd
                  else "Run 'zflow --help' for the commands.", file=sys.stderr)
        raise SystemExit(exitcodes.USAGE)


def _commands_block() -> str:
    width = max(len(name) for name, _ in COMMANDS) + 2
    return "commands:\n" + "\n".join(f"  {name:<{width}}{text}" for name, text in COMMANDS)


def _add_overrides(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help=f"override a value before validating, e.g. {example} (repeatable)")
    p.add_argument("--scale", action="append", default=[], metavar="NODE=N",
                   help="run N replicas of NODE, e.g. worker=4 (repeatable)")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (`only`) the top level and one command's parser.

    A command builds only its own parser: all fourteen cost ~8 ms of every start (argparse
    formats and translates each option as it is added), one costs under 1 ms."""
    p = _Parser(prog="zflow", usage="zflow [-h] [--version] COMMAND [ARGS...]",
                description=DESCRIPTION + "\n\n" + _commands_block(), epilog=MAIN_EPILOG)
    p.add_argument("--version", action="version", version=f"zflow {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS, prog="zflow",
                           parser_class=_Parser)
    for name, text in COMMANDS:
        if only is None or name == only:
            build, description, epilog = _PARSERS[name]
            build(sub.add_parser(name, help=text, description=description, epilog=epilog))
    return p


def _add_validate(v: argparse.ArgumentParser) -> None:
    v.add_argument("files", nargs="*", metavar="FILE", help=FILE_HELP + " (one or more)")
    v.add_argument("--format", choices=["human", "json", "github"], default="human",
                   help="human: compiler-style, quoting the line (default); json: a list of "
                        "problems; github: Actions annotations")
    v.add_argument("--strict", action="store_true", help="treat warnings as errors")
    v.add_argument("--import-check", action="store_true",
                   help="also import every run: target and check it is callable (runs user "
                        "code; with -, targets are looked up in the current directory)")
    v.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a value before validating, e.g. nodes.worker.replicas=4")
    v.add_argument("--list-codes", action="store_true", help="print every diagnostic code")


def _add_up(u: argparse.ArgumentParser) -> None:
    u.add_argument("file", metavar="FILE", help=FILE_HELP)
    u.add_argument("--dry-run", action="store_true", help="print the plan and start nothing")
    u.add_argument("--show-secrets", action="store_true",
                   help="with --dry-run: print env values as written (masked as *** otherwise)")
    _add_overrides(u, "nodes.ventilator.params.count=100000")
    _add_run_options(u)


def _add_run_options(u: argparse.ArgumentParser, local: bool = True) -> None:
    """The options of a run that `up` and `coordinator` share."""
    u.add_argument("-v", "--verbose", action="store_true",
                   help="nodes print per-record detail (e.g. 'Worker 3 answered: 81')")
    out = u.add_mutually_exclusive_group()
    out.add_argument("-q", "--quiet", action="store_true",
                     help="print only errors and the final result")
    out.add_argument("--json", action="store_true",
                     help="JSON lines on stdout, for scripts (problems with the file too)")
    out.add_argument("--plain", action="store_true",
                     help="plain lines even on a terminal (no live screen)")
    u.add_argument("--replicas", action="store_true", help="one status row per replica")
    if local:
        u.add_argument("--log-dir", metavar="DIR", help="also write each replica's output to DIR")
    u.add_argument("--no-log-prefix", action="store_true",
                   help="print node output lines without their 'node.N │' prefix (plain and "
                        "live screens; --log-dir files never have one)")
    u.add_argument("--grace", type=float, metavar="SECONDS",
                   help="SIGTERM→SIGKILL grace at shutdown (overrides the topology)")
    start = 30.0 if local else 600.0  # pods wait for nodes, images and one another
    u.add_argument("--start-timeout", type=float, default=start, metavar="SECONDS",
                   help="fail the start (exit 3) if not every replica is ready after this long, "
                        f"naming who is not; default {start:g}")
    u.add_argument("--drain-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="end a stream whose records stopped arriving after this long (records "
                        "lost with a dead replica in best-effort delivery); default 5")
    u.add_argument("--no-telemetry", action="store_true",
                   help="no periodic counters from nodes (benchmarks measure its cost)")
    _add_long_running_options(u)



def _add_graph(g: argparse.ArgumentParser) -> None:
    g.add_argument("file", metavar="FILE", help=FILE_HELP)
    g.add_argument("--format", choices=GRAPH_FORMATS, default="text",
                   help="text: a drawing for the terminal (default); mermaid: a Mermaid "
                        "flowchart; dot: Graphviz")
    _add_overrides(g, "nodes.worker.replicas=4")


def _add_schema(_: argparse.ArgumentParser) -> None:
    """No options."""


def _add_completion(c: argparse.ArgumentParser) -> None:
    c.add_argument("shell", choices=["bash", "zsh", "fish"], metavar="SHELL",
                   help="bash, zsh or fish")


def _add_coordinator(co: argparse.ArgumentParser) -> None:
    from zflow.cluster import CONTROL_PORT  # only this parser needs the cluster module

    co.add_argument("file", metavar="FILE", help=FILE_HELP)
    co.add_argument("--listen", default=f"tcp://0.0.0.0:{CONTROL_PORT}", metavar="ENDPOINT",
                    help=f"where replicas join (default tcp://0.0.0.0:{CONTROL_PORT}; port * "
                         "lets the OS pick one, printed on stderr)")
    co.add_argument("--keys", metavar="DIR",
                    help="CURVE keys from 'zflow keys' (mandatory unless --listen is loopback)")
    _add_overrides(co, "nodes.ventilator.params.count=100000")
    _add_run_options(co, local=False)
    _add_heartbeat(co)


def _add_replica(r: argparse.ArgumentParser) -> None:
    r.add_argument("file", metavar="FILE", help=FILE_HELP)
    r.add_argument("--node", required=True, metavar="NODE", help="the node this replica is of")
    r.add_argument("--index", type=int, metavar="I",
                   help="its replica index (default: from the engine's variables or the host "
                        "name)")
    r.add_argument("--join", required=True, metavar="ENDPOINT",
                   help="the coordinator's endpoint, e.g. tcp://squares-coordinator:7000")
    r.add_argument("--keys", metavar="DIR",
                   help="CURVE keys: NODE.key_secret and coordinator.key (mandatory unless "
                        "--join is loopback)")
    r.add_argument("--advertise", metavar="HOST",
                   help="the name peers reach this host by (default: its fully qualified name)")
    r.add_argument("--join-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up (exit 1) if not admitted after this long; default 600")
    r.add_argument("--any-port", action="store_true",
                   help="bind loopback ports the OS picks instead of the fixed ones (tests on "
                        "one host)")
    _add_overrides(r, "nodes.ventilator.params.count=100000")
    _add_heartbeat(r)


def _add_keys(k: argparse.ArgumentParser) -> None:
    k.add_argument("file", metavar="FILE", help=FILE_HELP)
    k.add_argument("-o", "--output", default="zflow-keys", metavar="DIR",
                   help="where to write them (default zflow-keys/)")
    _add_overrides(k, "name=squares2")


def _add_export(e: argparse.ArgumentParser) -> None:
    e.add_argument("target", choices=["k8s", "slurm"], metavar="TARGET",
                   help="k8s (Kubernetes manifests) or slurm (a batch script for sbatch)")
    e.add_argument("file", metavar="FILE", help=FILE_HELP)
    e.add_argument("--image", metavar="IMAGE",
                   help="k8s (required there): the container image, your node code and zflow "
                        "installed")
    e.add_argument("-n", "--namespace", metavar="NAMESPACE",
                   help="the namespace of every object (default: kubectl's current one)")
    e.add_argument("-o", "--output", metavar="DIR|FILE",
                   help="k8s: write one file per object into DIR; slurm: the script to FILE "
                        "(default: stdout)")
    e.add_argument("--workdir", default="/app", metavar="DIR",
                   help="the image's directory holding the node code; the topology is "
                        "mounted there (default /app)")
    e.add_argument("--heartbeat-ivl", type=int, metavar="MS",
                   help="passed to every pod: the control link's heartbeat interval")
    e.add_argument("--heartbeat-timeout", type=int, metavar="MS",
                   help="passed to every pod: how long a silent control link lives")
    e.add_argument("--long-running", action="store_true",
                   help="a StatefulSet per node and a Deployment for the coordinator, even "
                        "if the topology looks finite")
    _add_overrides(e, "nodes.ventilator.params.count=100000")


def _add_heartbeat(p: argparse.ArgumentParser) -> None:
    """Heartbeat options of the control link (coordinator and replicas should agree)."""
    p.add_argument("--heartbeat-ivl", type=int, default=1000, metavar="MS",
                   help="ZMTP heartbeat interval of the control link; default 1000")
    p.add_argument("--heartbeat-timeout", type=int, default=5000, metavar="MS",
                   help="a control link silent this long is dead; default 5000")


# ---------------------------------------------------------------------------------------------
# standard input


@contextlib.contextmanager
def stdin_file(in_cwd: bool = False) -> Iterator[str]:
    """The standard input written to a temporary file: the loader reads files.

    Its diagnostics are relabelled `<stdin>` (see `zflow.runtime.up.relabel`). `in_cwd`: put the
    file in the current directory (for --import-check, whose run: targets are looked up next to
    the file), falling back to the temporary directory.
    """
    from zflow.spec.load import MAX_BYTES, STDIN_COPY_PREFIX

    data = sys.stdin.buffer.read(MAX_BYTES + 1) if sys.stdin is not None else b""
    where = os.getcwd() if in_cwd and os.access(os.getcwd(), os.W_OK) else None
    import tempfile  # only for `-` (the topology on stdin)

    fd, path = tempfile.mkstemp(prefix=STDIN_COPY_PREFIX, suffix=".yaml", dir=where)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _validate(args: argparse.Namespace) -> int:
    from zflow.spec import command

    if STDIN not in args.files:
        return command.validate_command(args)
    from zflow.runtime.up import relabel

    with stdin_file(in_cwd=args.import_check) as path:
        args.files = [path if f == STDIN else f for f in args.files]
        real_load = command.load

        def load(file: str, *a: Any, **kw: Any) -> Any:
            res = real_load(file, *a, **kw)
            return relabel(res, path, STDIN_LABEL) if file == path else res

        command.load = load
        try:
            return command.validate_command(args)
        finally:
            command.load = real_load


def _with_stdin(args: argparse.Namespace, run: Any) -> int:
    """Run `run(args)` with FILE `-` replaced by a temporary copy of the standard input."""
    if args.file != STDIN:
        return run(args)
    with stdin_file() as path:
        args.file, args.file_label = path, STDIN_LABEL
        return run(args)


def _graph(args: argparse.Namespace) -> int:
    from zflow.graph import build_graph, render_graph
    from zflow.plan import build_plan
    from zflow.runtime.up import load_topology

    result, plan_file = load_topology(args)
    if result.topology is None:
        return exitcodes.USAGE if result.unreadable else exitcodes.FAILED
    graph = build_graph(build_plan(result.topology, plan_file))
    sys.stdout.write(render_graph(graph, args.format))
    return exitcodes.OK


def complete_nodes(path: str) -> list[str]:
    """Node names in a topology file, for completion: never fails, never validates."""
    try:
        import yaml

        with open(path, "rb") as f:
            raw = f.read(2 * 1024 * 1024)
        doc = yaml.safe_load(raw)
        nodes = doc.get("nodes") if isinstance(doc, dict) else None
        return [str(k) for k in nodes if not str(k).startswith("x-")] \
            if isinstance(nodes, dict) else []
    except Exception:
        return []


# ---------------------------------------------------------------------------------------------
# shell completion, generated from the parser so it never lags behind an option


def _commands_spec(parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """command -> options, options taking a value, choices per option, what positionals are."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    spec: dict[str, dict[str, Any]] = {}
    for name, _ in COMMANDS:
        p = sub.choices[name]
        opts: list[tuple[str, str]] = []  # (option, help)
        takes: list[str] = []
        choices: dict[str, list[str]] = {}
        positional = ""
        for a in p._actions:
            if a.option_strings:
                for o in a.option_strings:
                    opts.append((o, (a.help or "").split(" (")[0].split(";")[0]))
                if a.nargs != 0:
                    takes.extend(a.option_strings)
                if a.choices:
                    for o in a.option_strings:
                        choices[o] = [str(c) for c in a.choices]
            elif a.metavar == "FILE":
                positional = "file"
            elif a.metavar == "NAME":
                positional = "run"
            elif a.choices:
                positional = " ".join(str(c) for c in a.choices)
        spec[name] = {"opts": opts, "takes": takes, "choices": choices, "positional": positional}
    return spec


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _bash(parser: argparse.ArgumentParser) -> str:
    spec = _commands_spec(parser)
    cases = []
    for name, c in spec.items():
        opts = " ".join(o for o, _ in c["opts"])
        choice_cases = "".join(
            f"            {o}) COMPREPLY=($(compgen -W {_sh_quote(' '.join(v))} -- \"$cur\"));"
            " return;;\n" for o, v in c["choices"].items())
        takes = "|".join(c["takes"]) or "--no-such-option"
        if c["positional"] == "file":
            pos = ('COMPREPLY=($(compgen -f -X \'!*.@(yaml|yml)\' -- "$cur") '
                   '$(compgen -d -- "$cur")); [[ "-" == "$cur"* ]] && COMPREPLY+=(-)')
        elif c["positional"] == "run":
            pos = f'COMPREPLY=($(compgen -W "$(zflow {COMPLETE_RUNS} 2>/dev/null)" -- "$cur"))'
        elif c["positional"]:
            pos = f'COMPREPLY=($(compgen -W {_sh_quote(c["positional"])} -- "$cur"))'
        else:
            pos = "COMPREPLY=()"
        cases.append(f"""\
        {name})
            case "$prev" in
{choice_cases}            --scale) _zflow_scale; return;;
            {takes}) [[ "$prev" == --log-dir ]] && COMPREPLY=($(compgen -d -- "$cur")); return;;
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=($(compgen -W {_sh_quote(opts)} -- "$cur"))
            else
                {pos}
            fi
            ;;""")
    commands = " ".join(name for name, _ in COMMANDS)
    return f"""\
# bash completion for zflow: source <(zflow completion bash)
_zflow_file() {{
    # the topology file already on the command line: the first word that names a YAML file
    local w
    for w in "${{COMP_WORDS[@]:2}}"; do
        case "$w" in *.yaml|*.yml) [[ -f "$w" ]] && {{ printf '%s\\n' "$w"; return; }};; esac
    done
}}
_zflow_scale() {{
    local file nodes
    file="$(_zflow_file)"
    [[ -n "$file" ]] || return
    nodes="$(zflow {COMPLETE_NODES} "$file" 2>/dev/null)"
    compopt -o nospace 2>/dev/null
    COMPREPLY=($(compgen -W "$nodes" -S = -- "$cur"))
}}
_zflow() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    shopt -s extglob
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=($(compgen -W {_sh_quote(commands + " --help --version")} -- "$cur"))
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{chr(10).join(cases)}
    esac
}}
complete -o filenames -F _zflow zflow
"""


def _zsh(parser: argparse.ArgumentParser) -> str:
    spec = _commands_spec(parser)

    def zq(s: str) -> str:  # inside a single-quoted _arguments spec
        return s.replace("'", "'\\''").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")

    bodies = []
    for name, c in spec.items():
        lines = []
        for o, h in c["opts"]:
            if o in c["choices"]:
                act = f":{o.lstrip('-')}:({' '.join(c['choices'][o])})"
            elif o == "--scale":
                act = ":NODE=N:_zflow_nodes"
            elif o == "--log-dir":
                act = ":directory:_files -/"
            elif o in c["takes"]:
                act = ":value: "
            else:
                act = ""
            lines.append(f"'{o}[{zq(h)}]{act}'")
        if c["positional"] == "file":
            rest = "'*:topology file:_zflow_files'"
        elif c["positional"] == "run":
            rest = "'*:run:_zflow_runs'"
        elif c["positional"]:
            rest = f"':shell:({c['positional']})'"
        else:
            rest = ""
        args = " \\\n                ".join(lines + ([rest] if rest else []))
        bodies.append(f"""\
        ({name})
            _arguments -s \\
                {args}
            ;;""")
    descs = " ".join(_sh_quote(f"{n}:{h}") for n, h in COMMANDS)
    return f"""\
#compdef zflow
# zsh completion for zflow: zflow completion zsh > "${{fpath[1]}}/_zflow"
_zflow_files() {{
    _alternative 'files:topology file:_files -g "*.(yaml|yml)(-.)"' 'stdin:standard input:(-)'
}}
_zflow_runs() {{
    local -a runs
    runs=(${{(f)"$(zflow {COMPLETE_RUNS} 2>/dev/null)"}})
    compadd -- $runs
}}
_zflow_nodes() {{
    local file w
    for w in "${{words[@]}}"; do
        [[ "$w" == *.(yaml|yml) && -f "$w" ]] && {{ file="$w"; break; }}
    done
    [[ -n "$file" ]] || return 1
    local -a nodes
    nodes=(${{(f)"$(zflow {COMPLETE_NODES} "$file" 2>/dev/null)"}})
    compadd -S = -- $nodes
}}
_zflow() {{
    local -a commands
    commands=({descs})
    if (( CURRENT == 2 )); then
        _describe -t commands 'zflow command' commands
        _arguments '--help[show help]' '--version[show the version]'
        return
    fi
    local cmd="${{words[2]}}"
    shift words
    (( CURRENT-- ))
    case "$cmd" in
{chr(10).join(bodies)}
    esac
}}
if [[ "$funcstack[1]" == _zflow ]]; then _zflow "$@"; else compdef _zflow zflow; fi
"""


def _fish(parser: argparse.ArgumentParser) -> str:
    spec = _commands_spec(parser)
    names = " ".join(name for name, _ in COMMANDS)
    out = [
        "# fish completion for zflow: zflow completion fish > "
        "~/.config/fish/completions/zflow.fish",
        "function __zflow_file",
        "    for w in (commandline -opc)[3..-1]",
        "        if string match -qr '\\.(yaml|yml)$' -- $w; and test -f $w",
        "            echo $w; return",
        "        end",
        "    end",
        "end",
        "function __zflow_nodes",
        "    set -l file (__zflow_file)",
        "    test -n \"$file\"; or return",
        f"    zflow {COMPLETE_NODES} $file 2>/dev/null | string replace -r '$' '='",
        "end",
        "function __zflow_files",
        "    for f in (commandline -ct)*",
        "        if test -d $f",
        "            echo $f/",
        "        else if string match -qr '\\.ya?ml$' -- $f",
        "            echo $f",
        "        end",
        "    end",
        "    echo -",
        "end",
        "complete -c zflow -f",
        f"complete -c zflow -n 'not __fish_seen_subcommand_from {names}' -l help -d 'show help'",
        f"complete -c zflow -n 'not __fish_seen_subcommand_from {names}' -l version "
        "-d 'show the version'",
    ]
    for name, text in COMMANDS:
        out.append(f"complete -c zflow -n 'not __fish_seen_subcommand_from {names}' "
                   f"-a {name} -d {_sh_quote(text)}")
    for name, c in spec.items():
        cond = f"-n '__fish_seen_subcommand_from {name}'"
        for o, h in c["opts"]:
            flag = f"-l {o[2:]}" if o.startswith("--") else f"-s {o[1:]}"
            extra = ""
            if o in c["choices"]:
                extra = f" -x -a {_sh_quote(' '.join(c['choices'][o]))}"
            elif o == "--scale":
                extra = " -x -a '(__zflow_nodes)'"
            elif o == "--log-dir":
                extra = " -x -a '(__fish_complete_directories)'"
            elif o in c["takes"]:
                extra = " -x"
            out.append(f"complete -c zflow {cond} {flag}{extra} -d {_sh_quote(h)}")
        if c["positional"] == "file":
            out.append(f"complete -c zflow {cond} -k -a '(__zflow_files)'")
        elif c["positional"] == "run":
            out.append(f"complete -c zflow {cond} -a '(zflow {COMPLETE_RUNS} 2>/dev/null)'")
        elif c["positional"]:
            out.append(f"complete -c zflow {cond} -a {_sh_quote(c['positional'])}")
    return "\n".join(out) + "\n"


def completion_script(shell: str, parser: argparse.ArgumentParser | None = None) -> str:
    """The completion script for bash, zsh or fish."""
    parser = parser or build_parser()
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](parser)


def main(argv: Sequence[str] | None = None) -> int:
    global _skip_teardown
    _skip_teardown = False
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [COMPLETE_RUNS]:
        return _complete_runs()
    if argv[:1] == [COMPLETE_NODES]:
        for name in complete_nodes(argv[1]) if len(argv) > 1 else []:
            print(name)
        return exitcodes.OK
    # one command's parser, unless --help of the top level, an unknown command (its error lists
    # them all) or completion scripts (made from every parser) need them all
    first = argv[0] if argv else None
    if argv == ["--version"]:  # without the fourteen parsers that would say it
        print(f"zflow {__version__}")
        return exitcodes.OK
    parser = build_parser(first if first in _PARSERS and first != "completion" else None)
    if not argv:  # bare `zflow`: what it is and what it can do
        sys.stderr.write(parser.format_usage() + "\n" + DESCRIPTION + "\n\n" + _commands_block()
                         + "\n\nRun 'zflow COMMAND --help' for a command's options and "
                           "examples, 'zflow --help' for more.\n")
        return exitcodes.USAGE
    parser.argv = argv  # type: ignore[attr-defined]  # for error(): which command's help
    args = _parse(parser, argv)
    if args.command is None:
        parser.error("a command is needed: " + ", ".join(name for name, _ in COMMANDS))
    # commands that only read files and write to stdout and stderr leave without the teardown
    # too: ~10 ms of a 70 ms `zflow validate` (entry flushes both streams first)
    _skip_teardown = args.command in ("validate", "schema", "graph")
    if args.command == "schema":
        from zflow.spec import schema_text

        sys.stdout.write(schema_text())
        return exitcodes.OK
    if args.command == "validate":
        return _validate(args)
    if args.command == "graph":
        return _with_stdin(args, _graph)
    if args.command == "completion":
        sys.stdout.write(completion_script(args.shell, parser))
        return exitcodes.OK
    if args.command in RUN_COMMAND_NAMES:
        return _run_command(args)
    if args.command in ("coordinator", "replica", "keys"):
        from zflow.runtime import remote

        run = {"coordinator": remote.coordinator_command, "replica": remote.replica_command,
               "keys": remote.keys_command}[args.command]
        return _with_stdin(args, run)
    if args.command == "export":
        if args.target == "slurm":
            from zflow.slurm import export_command
        else:
            from zflow.k8s import export_command

        return _with_stdin(args, export_command)
    if getattr(args, "detach", False) or getattr(args, "metrics", None):
        return _up_long_running(args, argv)
    _skip_teardown = True  # an attached run: its supervisor has closed everything it opened
    # the fork server starts before anything else is imported (the validator, the runtime, the
    # views): forked once pyzmq is imported, it imports the replicas' modules while we validate
    # and plan, and every replica waits for it
    args.zygote = None
    if not args.dry_run:
        from zflow.runtime.launchers.forkserver import Zygote

        args.zygote = Zygote(guard=True, fork=True)
    try:
        from zflow.runtime.up import up_command

        return _with_stdin(args, up_command)
    finally:
        if args.zygote is not None:
            args.zygote.close()


#: `zflow up` (attached), validate, schema and graph may leave without the interpreter's teardown
#: (see entry); the other commands keep it (a remote replica's or coordinator's sockets may still
#: be sending, export and keys write files)
_skip_teardown = False


# ---------------------------------------------------------------------------------------------
# long-running topologies: up -d / --metrics, and the commands on runs (zflow/runs/)


def _metrics_address(text: str) -> str:
    from zflow.status.metrics import parse_address

    try:
        parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_long_running_options(u: argparse.ArgumentParser) -> None:
    u.add_argument("-d", "--detach", action="store_true",
                   help="run in the background: print the run's name once it is running "
                        "(see zflow ps, logs, stop)")
    u.add_argument("--watch", action="store_true",
                   help="restart a node's replicas when its code (run: module, command files) "
                        "or its part of the topology changes")
    u.add_argument("--metrics", type=_metrics_address, metavar="[HOST:]PORT",
                   help="serve Prometheus metrics on /metrics, and /healthz and /ready probes "
                        "(loopback unless HOST is given; port 0 picks a free one; needs the "
                        "'metrics' extra)")


RUN_COMMAND_NAMES = ("ps", "top", "logs", "stop", "down")
#: hidden helper for completion scripts: the names of the runs in the registry, one a line
COMPLETE_RUNS = "__complete-runs"
NAME_HELP = "a run's name, as 'zflow up -d' printed it and 'zflow ps' lists it"

_RUN_STATES = ("starting, running, draining, stopping while it runs; completed, incomplete, "
               "failed, interrupted once it has ended; stale when its supervisor is gone "
               "without an outcome (killed)")
NO_RUN_ROW = (exitcodes.FAILED, "no run of that name (the message lists the runs)")

PS_EPILOG = f"""\
examples:
  zflow ps                     every run: name, state, exit status, pid, start, uptime, file
  zflow ps squares             one run: its nodes and replicas, as the live screen shows them
  zflow ps --json              the list for scripts (zflow ps NAME --json: one run's status)

States: {_RUN_STATES}.

""" + _exit_codes((exitcodes.OK, "listed"), NO_RUN_ROW, (exitcodes.USAGE, "usage error"))

TOP_EPILOG = """\
examples:
  zflow top squares            the live screen of a detached run; Ctrl-C leaves it running
  zflow top --replicas squares a row per replica

Redrawn from the run's status snapshot (written each second and at each state change) until
the run ends; then its summary is printed.

""" + _exit_codes((exitcodes.OK, "the run ended, or Ctrl-C"), NO_RUN_ROW,
                  (exitcodes.USAGE, "usage error"))

LOGS_EPILOG = """\
examples:
  zflow logs squares                    everything every replica printed, in time order
  zflow logs -f squares                 follow it until the run ends (Ctrl-C stops following)
  zflow logs squares worker             one node's replicas; worker.3 for one replica
  zflow logs --tail 20 squares          the last 20 lines of each replica
  zflow logs --since 10m squares        the last ten minutes (or 1h30m, 45s, 2026-12-01T21:30)
  zflow logs --no-log-prefix squares results.0 > results.txt   the lines as the node wrote them

Each line is prefixed 'node.N │' as on the live screen. Logs live in the run's registry entry,
one file per replica, rotated at ZFLOW_LOG_MAX_BYTES (10 MiB) keeping ZFLOW_LOG_KEEP (3) files.

""" + _exit_codes((exitcodes.OK, "printed (with -f: the run ended, or Ctrl-C)"),
                  (exitcodes.FAILED, "no run of that name, or no node or replica of that name in "
                                     "it"),
                  (exitcodes.USAGE, "usage error, or a --since that is neither a duration nor a "
                                    "timestamp"))

STOP_EPILOG = """\
examples:
  zflow stop squares                    Ctrl-C for a detached run: drain, end(), stop; prints
                                        'squares: interrupted (exit 130)'
  zflow stop --timeout 60 squares       wait longer for the drain before killing
  zflow stop squares squares-2          several runs

The supervisor gets SIGTERM (the run drains as at Ctrl-C, so sinks' end() runs); after --timeout
a second SIGTERM kills the replicas at once; 5 s later the supervisor is SIGKILLed (its guard
still kills every replica). The run's entry is kept, with its outcome: 'zflow down' removes it.

""" + _exit_codes((exitcodes.OK, "stopped, or had already ended (said so; its exit status is "
                                 "printed either way)"),
                  (exitcodes.FAILED, "no run of that name, or a stale run (its supervisor died: "
                                     "use zflow down)"),
                  (exitcodes.USAGE, "usage error"))

DOWN_EPILOG = """\
examples:
  zflow down squares                    stop it if it runs, then remove its entry and logs
  zflow down --all                      every run in the registry, stale ones included

A stale run (its supervisor was killed) is cleaned up too: any of its replicas still alive
(same pid and start time as recorded) is killed with its process group.

""" + _exit_codes((exitcodes.OK, "removed (each run's outcome is printed)"),
                  (exitcodes.FAILED, "no run of that name, or a supervisor that would not exit"),
                  (exitcodes.USAGE, "usage error, or neither a name nor --all"))


def _add_ps(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help=NAME_HELP + " (optional)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")


def _add_top(t: argparse.ArgumentParser) -> None:
    t.add_argument("name", metavar="NAME", help=NAME_HELP)
    t.add_argument("--replicas", action="store_true", help="one status row per replica")


def _add_logs(lg: argparse.ArgumentParser) -> None:
    lg.add_argument("name", metavar="NAME", help=NAME_HELP)
    lg.add_argument("replica", nargs="?", metavar="NODE[.N]",
                    help="only this node's replicas, or this replica (worker.3)")
    lg.add_argument("-f", "--follow", action="store_true",
                    help="keep printing new lines until the run ends")
    lg.add_argument("--tail", type=int, metavar="N",
                    help="only the last N lines of each replica")
    lg.add_argument("--since", metavar="DURATION|TIMESTAMP",
                    help="only lines since then: 10m, 1h30m, 45s, or 2026-12-01T21:30:00")
    lg.add_argument("--no-log-prefix", action="store_true",
                    help="the lines without their 'node.N │' prefix")
    lg.add_argument("-t", "--timestamps", action="store_true",
                    help="show each line's time (UTC)")


def _add_stop(s: argparse.ArgumentParser) -> None:
    s.add_argument("names", nargs="+", metavar="NAME", help=NAME_HELP + " (one or more)")
    s.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long the graceful stop may take before the replicas are killed; "
                        "default 30")


def _add_down(d: argparse.ArgumentParser) -> None:
    d.add_argument("names", nargs="*", metavar="NAME", help=NAME_HELP + " (one or more)")
    d.add_argument("--all", action="store_true", help="every run in the registry")
    d.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="as for zflow stop; default 30")


#: each command's parser: (its builder, the description and the epilog of its --help)
_PARSERS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str, str]] = {
    "validate": (
        _add_validate,
        "Check topology files against the JSON Schema and ZeroMQ's rules; report "
        "every problem\nin every file with its line and column. Never runs your "
        "code (unless --import-check).",
        VALIDATE_EPILOG),
    "up": (
        _add_up,
        "Validate and plan a topology, start every replica behind a readiness "
        "barrier, wire them,\nsupervise and restart them, and show the flow "
        "until the stream ends or Ctrl-C.",
        UP_EPILOG),
    "graph": (
        _add_graph,
        "Draw a topology as it would run: nodes, sockets and edges, from the "
        "same plan 'zflow up' runs.",
        GRAPH_EPILOG),
    "coordinator": (
        _add_coordinator,
        "Coordinate a topology whose replicas run on other hosts: the barrier, "
        "end of stream, restarts\nand the live view of 'zflow up', with no local "
        "processes.",
        COORDINATOR_EPILOG),
    "replica": (
        _add_replica,
        "Run one replica of a topology on this host: it joins the coordinator, "
        "binds fixed ports\nand runs until the coordinator stops it.",
        REPLICA_EPILOG),
    "keys": (
        _add_keys,
        "Make the CURVE keypairs of a topology's coordinator and of each of its "
        "nodes.",
        KEYS_EPILOG),
    "export": (
        _add_export,
        "Write what runs a topology on an engine (Kubernetes manifests, a Slurm "
        "batch script), from the\nsame plan 'zflow up' runs.",
        EXPORT_EPILOG),
    "schema": (
        _add_schema,
        "Print the JSON Schema (draft 2020-12) of topology files, for editors "
        "and other tools.",
        SCHEMA_EPILOG),
    "completion": (
        _add_completion,
        "Print a completion script for your shell.",
        COMPLETION_EPILOG),
    "ps": (
        _add_ps,
        "List the runs in this user's registry (started with 'zflow up -d'), or "
        "show one of them.",
        PS_EPILOG),
    "top": (
        _add_top,
        "Show a detached run's live screen until it ends.",
        TOP_EPILOG),
    "logs": (
        _add_logs,
        "Print what a run's replicas wrote, merged in time order.",
        LOGS_EPILOG),
    "stop": (
        _add_stop,
        "Stop runs gracefully (as Ctrl-C would) and print their exit status.",
        STOP_EPILOG),
    "down": (
        _add_down,
        "Stop runs if they run, then remove them from the registry.",
        DOWN_EPILOG),
}


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, except that `zflow logs NAME -f NODE` works: argparse takes the positionals
    before the first option together and would call NODE unrecognized."""
    args, extra = parser.parse_known_args(argv)
    if (extra and args.command == "logs" and args.replica is None and len(extra) == 1
            and not extra[0].startswith("-")):
        args.replica, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _complete_runs() -> int:
    """Run names for completion: never fails."""
    try:
        from zflow.runs.registry import runs

        for run in runs():
            print(run.name)
    except Exception:
        pass
    return exitcodes.OK


def _run_command(args: argparse.Namespace) -> int:
    from zflow.runs import commands

    return {"ps": commands.ps_command, "top": commands.top_command,
            "logs": commands.logs_command, "stop": commands.stop_command,
            "down": commands.down_command}[args.command](args)


def _up_long_running(args: argparse.Namespace, argv: list[str]) -> int:
    """`up` with -d and/or --metrics (zflow/runs/detach.py, zflow/status/metrics.py)."""
    from zflow.runs.detach import RUN_ENV, up_detached
    from zflow.runtime.up import up_command

    detached = args.detach and not args.dry_run
    if args.metrics and not args.dry_run:
        from zflow.status.metrics import MetricsError, MetricsServer, require

        try:
            if detached and not os.environ.get(RUN_ENV):
                require()  # the detached supervisor binds it; the extra is checked here
            else:
                server = MetricsServer(args.metrics)
                print(f"zflow: metrics on {server.url} (/healthz, /ready)", file=sys.stderr,
                      flush=True)
                args.metrics_info = {"metrics": server.url}
                args.status_hooks = [lambda plan, model, view: _tee(view, server.attach(model))]
        except MetricsError as e:
            print(f"zflow: {e}", file=sys.stderr)
            missing = "needs prometheus_client" in str(e)
            return exitcodes.USAGE if missing else exitcodes.START_FAILED
    if detached:
        return _with_stdin(args, lambda a: up_detached(a, argv))
    return _with_stdin(args, up_command)


def _tee(view: Any, other: Any) -> Any:
    from zflow.status.tee import Tee

    other.model.subscribe(other)
    return Tee(view, other)


def entry() -> None:
    """Console-script entry: never a traceback on Ctrl-C or a closed pipe.

    An attached `zflow up` leaves by `os._exit` once stdout and stderr are flushed: the
    interpreter's teardown (finalising every module, pyzmq's context) is work nothing of it
    needs, paid at the end of every run (issue 16)."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = exitcodes.INTERRUPTED
    except BrokenPipeError:
        code = exitcodes.OK
    except OSError as e:
        if e.errno not in _OUTPUT_LOST:
            raise
        code = _output_lost(e)
    if not _skip_teardown:
        sys.exit(code)
    code = code if isinstance(code, int) else exitcodes.OK
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left, or a closed stream
            pass
        except OSError as e:
            if stream is sys.stdout and code == exitcodes.OK:
                code = _output_lost(e)
    os._exit(code)


#: a full disk or quota, /dev/full, a file too big, an I/O error: what was to be said is lost
_OUTPUT_LOST = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _output_lost(e: OSError) -> int:
    """The output could not be written: say so on stderr if it can be, never exit 0."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"zflow: cannot write the output: {e.strerror or e}\n")
        sys.stderr.flush()
    return exitcodes.USAGE


if __name__ == "__main__":
    entry()
