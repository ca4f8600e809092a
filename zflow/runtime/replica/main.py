"""The process of one replica: builds its sockets from the spec and runs the user's code.

Start-up follows the supervisor's barrier: bind, report the bound endpoints, connect when told,
wait until every PUB peer's probe has arrived on each SUB (the subscription is then known to be in
place), report ready, and only then run. A replica that finished waits to be stopped, so its peers
can still reach it. Whatever goes wrong is reported as `fatal` before the process exits.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import zmq

from zflow.runtime import codec
from zflow.runtime import protocol as P
from zflow.runtime.replica import runners, sockets
from zflow.runtime.replica.core import Node
from zflow.runtime.replica.errors import NodeFailure, Stop
from zflow.runtime.replica.target import check_params, resolve_target
from zflow.runtime.spec import ReplicaSpec


def _libc_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


#: looked up once, in the fork server: a forked replica calls it without loading libc's handle
#: and a function object again (~0.2 ms of each one's start)
_PRCTL = _libc_prctl()


def die_with_parent() -> None:
    """Linux: be killed if the supervisor dies, even by SIGKILL (no orphans)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    expected = os.environ.get("ZFLOW_PARENT_PID")
    if expected and os.getppid() != int(expected):
        os._exit(1)  # the supervisor died before prctl took effect


def main() -> int:
    die_with_parent()
    spec = ReplicaSpec.from_json(os.environ[P.ENV_SPEC])
    return run(spec, lambda: Node(spec, os.environ[P.ENV_CONTROL]))


def run(spec: ReplicaSpec, make_node: Callable[[], Node], remote: bool = False,
        closing: Callable[[], None] | None = None) -> int:
    """The replica's life from its spec to its exit code. `remote`: it joined a coordinator on
    another host, which cannot see its exit code: it says it (`bye`) before it goes.
    `closing` is called before the sockets close (the link watcher stands down)."""
    try:
        import setproctitle

        setproctitle.setproctitle(spec.title)
    except ImportError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    # a replica that stops reporting is asked for its stack (coordinator.py, the watchdog)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

    def on_term(signum: int, frame: Any) -> None:
        raise Stop()

    signal.signal(signal.SIGTERM, on_term)
    node = make_node()
    ctl = node.control
    code = 0
    try:
        ctl.send(P.HELLO, pid=os.getpid())
        target = resolve_target(spec.target or "")
        check_params(target, spec.shape, spec.params)
        ctl.send(P.BOUND, endpoints=sockets.build(node))
        ctl.wait(lambda: ctl.connected)
        ctl.wait(ctl.subscribed)
        ctl.stop_watching_connections()  # after the wait: its poller held the monitors
        ctl.send(P.READY)
        ctl.wait(lambda: ctl.started)
        # what start-up made (the node's imports, its sockets) lives for the whole run: frozen,
        # the collector never walks it again during the stream. A node importing dask, rich and
        # jsonschema (~34,000 objects): workers' CPU 2.00 -> 1.86 s for 1M squares. At most
        # that start-up heap, once, is never freed if it later becomes garbage cycles.
        gc.freeze()
        value = runners.run(node, target)
        if not ctl.finished_sent:
            # custom nodes return; a stop_on message or zflow's stop ends a stream early
            ctl.send(P.FINISHED, s=ctl.counters(), e=node.errors,
                     result=value if isinstance(value, dict) else None)
        # finished: wait to be stopped (or for a stop_on message) so peers can still reach us
        ctl.wait(lambda: ctl.stop_requested)
    except Stop:
        if not ctl.stop_requested:
            code = 128 + signal.SIGTERM  # killed by someone else than zflow: not a clean end
    except codec.EncodeError as e:
        ctl.send(P.FATAL, phase="run", message=str(e))
        code = 1
    except NodeFailure as f:
        ctl.send(P.FATAL, phase=f.phase, message=str(f), **f.extra)
        code = P.exit_code_for(f.phase)
        if f.extra.get("traceback"):
            sys.stderr.write(f.extra["traceback"])
    except Exception as e:  # noqa: BLE001 - report the user's crash to the supervisor
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        ctl.send(P.FATAL, phase="run", message=f"{type(e).__name__}: {e}", traceback=tb)
        code = 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no Stop raised out of the cleanup below
    if ctl.stop_reason:
        try:
            ctl.send(P.STOPPING, reason=ctl.stop_reason)
        except zmq.ZMQError:
            pass
    if remote:
        try:
            ctl.send(P.BYE, code=code, **P.usage())
        except zmq.ZMQError:
            pass
    if closing is not None:
        closing()
    for s in node.sockets.values():
        # receiving sockets hold nothing worth waiting for; a SUB's queued subscription to a
        # publisher that already exited would otherwise hold the exit for the whole linger
        s.close(linger=0 if ctl.abandon or s.type in (zmq.PULL, zmq.SUB) else None)
    ctl.ctrl.close()
    if node.auth is not None:
        node.auth.stop()
    node.ctx.term()
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
