"""The supervisor: spawns every replica, runs the start barrier, ends the stream, restarts, stops.

One thread, one poll loop: the control ROUTER, every child's stdout/stderr pipe and a signal wake-
up pipe are polled together, so there are no locks and the status model is only touched here.

Start barrier: every replica binds and reports its endpoints; then every replica is told where to
connect; PUB sockets send probes until each SUB has seen one from every publisher; when every
replica is ready, all are told to start and sources begin. End of stream: see `_advance_ends`.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket as pysocket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from zflow import exitcodes
from zflow.plan import END_COUNT, END_MARKERS, END_PEERS, NodePlan, Plan
from zflow.runtime import protocol as P
from zflow.runtime.spawn import Zygote
from zflow.runtime.spec import build_replica_spec

STDERR_TAIL = 20


@dataclass
class Slot:
    """One replica position (`worker.3`); it outlives the processes restarted into it."""

    node: str
    index: int
    incarnation: int = 0
    proc: subprocess.Popen | None = None
    pid: int | None = None
    state: str = "starting"
    bound: dict[str, str] = field(default_factory=dict)  # socket → resolved endpoint
    has_bound: bool = False
    ready: bool = False
    started: bool = False
    finished: bool = False
    exited: bool = False
    exit_code: int | None = None
    base: dict[str, list[int]] = field(default_factory=dict)  # counters of past incarnations
    cur: dict[str, list[int]] = field(default_factory=dict)
    errors_base: int = 0
    errors: int = 0
    restarts: list[float] = field(default_factory=list)
    restart_at: float | None = None
    exit_seen: float | None = None  # a failed exit waiting for its FATAL message (see _reap)
    fatal: dict[str, Any] | None = None
    stderr_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))
    bufs: dict[int, bytes] = field(default_factory=dict)
    cpu_prev: tuple[float, float] | None = None
    connect_sent: bool = False
    idle_at: float = 0.0  # last "nothing to read" report while draining
    stop_sent: bool = False

    @property
    def id(self) -> str:
        return f"{self.node}.{self.index}"

    def total(self, socket: str, col: int) -> int:
        return self.base.get(socket, [0, 0, 0, 0])[col] + self.cur.get(socket, [0, 0, 0, 0])[col]

    def cumulative(self) -> dict[str, tuple[int, int, int, int]]:
        names = set(self.base) | set(self.cur)
        return {n: tuple(self.total(n, c) for c in range(4)) for n in names}  # type: ignore[misc]


@dataclass
class Options:
    verbose: bool = False
    telemetry: bool = True
    grace: float | None = None
    drain_timeout: float = 5.0
    start_timeout: float = 30.0
    refresh: float = 0.2


class Supervisor:
    def __init__(self, plan: Plan, model: Any, view: Any, opts: Options,
                 zygote: Zygote | None = None) -> None:
        self.plan = plan
        self.zygote = zygote
        self.model = model
        self.view = view
        self.opts = opts
        self.slots: dict[str, Slot] = {}
        for name, i in plan.replica_ids():
            self.slots[f"{name}.{i}"] = Slot(name, i)
        self.by_ident: dict[bytes, Slot] = {}
        self.fd_slot: dict[int, tuple[Slot, str]] = {}
        self.phase = "starting"  # starting → running → stopping → done
        self.result_code: int | None = None
        self.result_msg: str | None = None
        self.interrupts = 0
        self.groups = [
            {"senders": s, "receivers": r, "expected": None, "ended": False, "progress": (0, 0.0)}
            for s, r in plan.count_groups
        ]
        self.ended_inputs: set[str] = set()  # "node.socket" told input_end
        self.stop_sent_at: float | None = None
        # exactly-once: source replicas in id order (id % len(sources) is the source's index)
        self.sources = [
            self.slots[f"{n.name}.{i}"] for n in plan.nodes.values() if n.shape == "source"
            for i in range(n.replicas)
        ]
        self.eo = plan.delivery == "exactly-once"
        self.sinks = [
            self.slots[f"{n.name}.{i}"] for n in plan.nodes.values() if n.shape == "sink"
            for i in range(n.replicas)
        ]
        self.deaths = 0  # replicas that died mid-run: only then can best-effort lose records
        self.term_sent_at: float | None = None

    # -- plumbing ----------------------------------------------------------------------------
    def _setup(self) -> None:
        if "<run>" in self.plan.run_dir or not os.path.isdir(self.plan.run_dir):
            self.plan.run_dir = tempfile.mkdtemp(prefix="zflow-")
        os.chmod(self.plan.run_dir, 0o700)
        self.zctx = zmq.Context()
        self.router = self.zctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # control messages must never be dropped at a high-water mark (acks can be many)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.setsockopt(zmq.RCVHWM, 0)
        self.control_ep = f"ipc://{self.plan.run_dir}/control"
        self.router.bind(self.control_ep)
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.poller.register(self.wake_r, zmq.POLLIN)
        self._old_handlers = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        signal.set_wakeup_fd(self.wake_w)
        if self.zygote is None:
            self.zygote = Zygote()
        self.poller.register(self.zygote.fileno(), zmq.POLLIN)
        self.guard = subprocess.Popen(
            [sys.executable, "-m", "zflow.runtime.guard"], stdin=subprocess.PIPE,
            start_new_session=True, text=True, bufsize=1,
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.interrupts += 1

    def _teardown(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig, h in self._old_handlers.items():
            signal.signal(sig, h)
        try:
            self.guard.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self.guard.wait()
        if self.zygote is not None:
            self.zygote.close()
        self.router.close(0)
        self.zctx.term()
        os.close(self.wake_r)
        os.close(self.wake_w)
        shutil.rmtree(self.plan.run_dir, ignore_errors=True)

    def _guard(self, line: str) -> None:
        try:
            self.guard.stdin.write(line + "\n")  # type: ignore[union-attr]
        except OSError:
            pass

    # -- spawning ----------------------------------------------------------------------------
    def _spec(self, slot: Slot) -> dict[str, Any]:
        n = self.plan.nodes[slot.node]
        socks = []
        for s in n.sockets.values():
            d = {
                "name": s.name, "type": s.type, "mode": s.mode, "subscribe": s.subscribe,
                "hwm": s.hwm, "linger": s.linger, "codec": s.codec, "batch": s.batch,
                "topic": s.topic, "stop_on": s.stop_on, "send_on_end": s.send_on_end,
                "end": s.end, "senders": s.senders,
                "receivers": s.senders,  # replicas at the other end, whichever way data flows
            }
            if s.mode == "bind":
                d["bind_endpoint"] = slot.bound.get(s.name) or self.plan.bind_endpoint(
                    slot.node, slot.index, s.name)
            d["zflow_peers"] = s.zflow_peers
            if s.type in ("PUB", "XPUB") and s.zflow_peers:
                d["probe"] = True
            if s.type == "SUB":  # publishers that probe: zflow nodes talking only to zflow
                d["probes_from"] = [
                    f"{p}.{i}" for p, ps in s.peers
                    if self.plan.nodes[p].kind == "python"
                    and self.plan.nodes[p].sockets[ps].zflow_peers
                    for i in range(self.plan.nodes[p].replicas)
                ]
            socks.append(d)
        return {
            "topology": self.plan.name, "node": n.name, "replica": slot.index,
            "replicas": n.replicas, "id": slot.id, "incarnation": slot.incarnation,
            "shape": n.shape, "target": n.target, "params": n.params, "on_error": n.on_error,
            "verbose": self.opts.verbose, "telemetry": self.opts.telemetry,
            "dead_letter": self._dead_letter_path(n),
            "sockets": socks,
            "delivery": self.plan.delivery,
            "sources": len(self.sources) or 1,
            "source_index": self.sources.index(slot) if slot in self.sources else 0,
        }

    def _dead_letter_path(self, n: NodePlan) -> str:
        return os.path.join(n.cwd, f"{self.plan.name}.{n.name}.dead-letter.jsonl")

    def _report_dead_letters(self) -> None:
        """on_error: dead-letter nodes that wrote records: the file goes in the summary."""
        for n in self.plan.nodes.values():
            if n.on_error != "dead-letter" or n.kind != "python":
                continue
            count = sum(s.errors_base + s.errors for s in self.slots.values() if s.node == n.name)
            if count:
                self.model.set_dead_letter(n.name, self._dead_letter_path(n), count)

    def _command_env(self, slot: Slot) -> dict[str, str]:
        n = self.plan.nodes[slot.node]
        env = {
            "ZFLOW_TOPOLOGY": self.plan.name, "ZFLOW_NODE": n.name,
            "ZFLOW_REPLICA": str(slot.index), "ZFLOW_REPLICAS": str(n.replicas),
            "ZFLOW_REPLICA_ID": slot.id, "ZFLOW_PARAMS": json.dumps(n.params),
            "ZFLOW_SOCKETS": " ".join(n.sockets), "ZFLOW_VERBOSE": "1" if self.opts.verbose else "",
        }
        for s in n.sockets.values():
            key = f"ZFLOW_SOCKET_{s.name.upper()}"
            env[f"{key}_TYPE"] = s.type
            env[f"{key}_MODE"] = s.mode
            env[f"{key}_CODEC"] = s.codec
            env[f"{key}_HWM"] = str(s.hwm)
            env[f"{key}_LINGER"] = str(s.linger)
            env[f"{key}_SENDERS"] = str(s.senders)
            if s.subscribe:
                env[f"{key}_SUBSCRIBE"] = json.dumps(s.subscribe)
            if s.mode == "bind":
                ep = slot.bound.get(s.name) or self.plan.bind_endpoint(n.name, slot.index, s.name)
                if ep.endswith(":*"):
                    ep = ep[:-1] + str(_free_port())
                slot.bound[s.name] = ep
                env[f"{key}_ENDPOINTS"] = ep
            else:
                env[f"{key}_ENDPOINTS"] = " ".join(self._connect_endpoints(n, s.name))
        return env

    def _spawn(self, slot: Slot) -> None:
        n = self.plan.nodes[slot.node]
        slot.incarnation += 1
        slot.state = "starting"
        slot.has_bound = slot.ready = slot.started = slot.finished = slot.exited = False
        slot.connect_sent = slot.stop_sent = False
        slot.cur = {}
        slot.errors = 0
        slot.fatal = None
        slot.exit_code = None
        slot.restart_at = None
        slot.exit_seen = None
        env = dict(os.environ)
        env.update(n.env)
        env["PYTHONUNBUFFERED"] = "1"
        env["ZFLOW_PARENT_PID"] = str(os.getpid())
        if n.kind == "python":
            env["PYTHONPATH"] = os.pathsep.join(
                [self.plan.base_dir] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
            env[P.ENV_CONTROL] = self.control_ep
            env[P.ENV_SPEC] = build_replica_spec(
                self.plan, slot.node, slot.index, slot.incarnation, bound=slot.bound,
                sources=len(self.sources),
                source_index=self.sources.index(slot) if slot in self.sources else 0,
                verbose=self.opts.verbose, telemetry=self.opts.telemetry).to_json()
            argv = [sys.executable, "-m", "zflow.runtime.node"]
        else:
            env.update(self._command_env(slot))
            # `python3` in a command node is the interpreter zflow runs on (its venv's)
            env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
            argv = list(n.argv or [])
        try:
            if not os.path.isdir(n.cwd):
                raise FileNotFoundError(2, f"working directory {n.cwd} does not exist")
            if n.kind == "python" and self.zygote is not None:
                title = f"zflow: {self.plan.name} {slot.id}"
                proc: Any = self.zygote.spawn(env, n.cwd, title)
            else:
                proc = subprocess.Popen(
                    argv, cwd=n.cwd, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                    close_fds=True,
                )
        except OSError as e:
            what = argv[0]
            hint = "" if os.path.sep in what or n.kind == "python" else " (not found on PATH)"
            why = e.strerror or str(e)
            if e.filename is None and "working directory" in why:
                slot.fatal = {"phase": "spawn", "message": why}
            else:
                slot.fatal = {"phase": "spawn", "message": f"cannot run {what!r}: {why}{hint}"}
            slot.exited = True
            slot.exit_code = 127
            self._fail_start(slot)
            return
        slot.proc = proc
        slot.pid = proc.pid
        slot.cpu_prev = None
        self._guard(f"+{proc.pid}")
        for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            fd = pipe.fileno()  # type: ignore[union-attr]
            os.set_blocking(fd, False)
            self.fd_slot[fd] = (slot, stream)
            slot.bufs[fd] = b""
            self.poller.register(fd, zmq.POLLIN)
        self.by_ident[f"{slot.id}#{slot.incarnation}".encode()] = slot
        self.model.replica_state(slot.node, slot.index, "starting")
        self.model.replica_proc(slot.node, slot.index, proc.pid, None, None)

    # -- messages ----------------------------------------------------------------------------
    def _send(self, slot: Slot, kind: str, **fields: Any) -> None:
        if slot.proc is None or slot.exited or self.plan.nodes[slot.node].kind != "python":
            return
        ident = f"{slot.id}#{slot.incarnation}".encode()
        try:
            self.router.send_multipart([ident, P.pack(kind, **fields)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _on_message(self, ident: bytes, data: bytes) -> None:
        slot = self.by_ident.get(ident)
        if slot is None or slot.exited or f"{slot.id}#{slot.incarnation}".encode() != ident:
            return  # a previous incarnation's last words
        try:
            msg = P.unpack(data)
        except Exception:  # noqa: BLE001 - a broken control message is ignored
            return
        t = msg["t"]
        if t == P.HELLO:
            # a STOP sent before this replica's control socket connected was dropped by the
            # ROUTER (unknown identity): repeat it now, or it would wait for the SIGTERM
            if self.phase == "stopping":
                self._send(slot, P.STOP)
        elif t == P.BOUND:
            slot.bound.update(msg.get("endpoints") or {})
            slot.has_bound = True
            self._set_state(slot, "starting", "bound")
            if self.phase == "running":  # a restarted replica: its peers' endpoints are known
                self._send_connect(slot)
        elif t == P.READY:
            slot.ready = True
            self._set_state(slot, "ready")
            if self.phase == "running":
                self._start_slot(slot)
                if all(s.ready for s in self.slots.values() if not s.exited):
                    for s in self.slots.values():
                        self._send(s, P.PROBE, on=False)
        elif t == P.STATS:
            slot.cur = msg["s"]
            slot.errors = msg.get("e", 0)
            self._push_counters(slot)
        elif t == P.COUNT:
            c = slot.cur.setdefault(msg["socket"], [0, 0, 0, 0])
            c[0] = max(c[0], msg["n"])
            if msg.get("idle"):
                slot.idle_at = time.monotonic()
        elif t == P.TOTAL:
            self.model.set_total(msg["n"], slot.node)
        elif t == P.FINISHED:
            slot.cur = msg.get("s") or slot.cur
            slot.errors = msg.get("e", 0)
            slot.finished = True
            self._push_counters(slot)
            if msg.get("result") is not None:  # per replica when there are several
                several = self.plan.nodes[slot.node].replicas > 1
                self.model.set_result(slot.id if several else slot.node, msg["result"])
            self._set_state(slot, "stopped" if slot.exited else "draining", "finished")
        elif t == P.LOW:
            for sink in self.sinks:
                self._send(sink, P.LOW, id=msg["id"])
        elif t == P.ACK:
            if "r" in msg:  # a range: all from one source
                self._send(self.sources[msg["r"][0] % len(self.sources)], P.ACK, r=msg["r"])
            else:
                self._route_acks(msg["ids"])
        elif t == P.STOPPING:
            if msg.get("reason") != "stopped by zflow":  # that one is implied: no noise
                self._zlog(slot.node, slot.index, f"stopping: {msg.get('reason')}")
        elif t == P.FATAL:
            slot.fatal = msg
            self._zlog(slot.node, slot.index, str(msg.get("message")))

    def _route_acks(self, ids: list[int]) -> None:
        """exactly-once: acknowledgements go back to the source replica that numbered them."""
        n = len(self.sources)
        if n == 1:
            self._send(self.sources[0], P.ACK, ids=ids)
            return
        per: dict[int, list[int]] = {}
        for i in ids:
            per.setdefault(i % n, []).append(i)
        for k, part in per.items():
            self._send(self.sources[k], P.ACK, ids=part)

    def _zlog(self, node: str, index: int, line: str) -> None:
        self.model.log(node, index, "zflow", line)
        self.view.log(node, index, "zflow", line)

    def _push_counters(self, slot: Slot) -> None:
        self.model.replica_counters(slot.node, slot.index, slot.cumulative(),
                                    slot.errors_base + slot.errors)

    def _set_state(self, slot: Slot, state: str, detail: str | None = None) -> None:
        if slot.state != state:
            slot.state = state
            self.model.replica_state(slot.node, slot.index, state, detail)
            self.view.event("state", node=slot.node, replica=slot.index, state=state,
                            detail=detail)

    def _on_output(self, fd: int) -> None:
        slot, stream = self.fd_slot[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.poller.unregister(fd)
            del self.fd_slot[fd]
            rest = slot.bufs.pop(fd, b"")
            if rest:
                self._line(slot, stream, rest)
            return
        buf = slot.bufs[fd] + data
        *lines, slot.bufs[fd] = buf.split(b"\n")
        for line in lines:
            self._line(slot, stream, line)

    def _line(self, slot: Slot, stream: str, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if stream == "stderr":
            slot.stderr_tail.append(line)
        self.model.log(slot.node, slot.index, stream, line)
        self.view.log(slot.node, slot.index, stream, line)

    # -- barrier -----------------------------------------------------------------------------
    def _connect_endpoints(self, n: NodePlan, sock: str) -> list[str]:
        out = []
        for target in n.sockets[sock].connect:
            if "://" in target:
                out.append(target)
                continue
            bnode, bsock = target.split(".")
            for i in range(self.plan.nodes[bnode].replicas):
                b = self.slots[f"{bnode}.{i}"]
                out.append(b.bound.get(bsock) or self.plan.bind_endpoint(bnode, i, bsock))
        return out

    def _command_bound(self, slot: Slot) -> bool:
        """A command node is bound once each of its bind endpoints accepts connections."""
        for ep in slot.bound.values():
            if ep.startswith("ipc://"):
                if not os.path.exists(ep[6:]):
                    return False
            elif ep.startswith("tcp://"):
                host, _, port = ep[6:].rpartition(":")
                host = "127.0.0.1" if host in ("*", "0.0.0.0") else host.strip("[]")
                try:
                    with pysocket.create_connection((host, int(port)), timeout=0.05):
                        pass
                except OSError:
                    return False
        return True

    def _advance_start(self) -> None:
        live = list(self.slots.values())
        for s in live:
            if self.plan.nodes[s.node].kind == "command" and not s.has_bound and s.proc:
                if self._command_bound(s):
                    s.has_bound = s.ready = True
                    self._set_state(s, "ready")
        if not all(s.has_bound for s in live):
            return
        for s in live:
            self._send_connect(s)
        if all(s.ready for s in live):
            self.phase = "running"
            self.model.set_overall("running")
            self.view.event("overall", state="running")
            for s in live:
                self._start_slot(s)

    def _send_connect(self, slot: Slot) -> None:
        n = self.plan.nodes[slot.node]
        if n.kind != "python" or slot.connect_sent or slot.proc is None:
            return
        eps = {k: self._connect_endpoints(n, k) for k, v in n.sockets.items()
               if v.mode == "connect"}
        self._send(slot, P.CONNECT, endpoints=eps)
        self._send(slot, P.PROBE, on=True)
        slot.connect_sent = True

    def _start_slot(self, slot: Slot) -> None:
        if slot.started:
            return
        slot.started = True
        self._send(slot, P.START)
        self._set_state(slot, "running")
        # a restarted replica joins a stream that may already be ending
        for g in self.groups:
            if g["expected"] is not None:
                for sid in g["receivers"]:
                    node, sock = sid.split(".")
                    if node == slot.node:
                        self._send(slot, P.DRAIN, socket=sock)
        for sid in self.ended_inputs:
            node, sock = sid.split(".")
            if node == slot.node:
                self._send(slot, P.INPUT_END, socket=sock, expected=None)
        # in-band end markers were sent before this replica existed: say it instead
        for s in self.plan.nodes[slot.node].sockets.values():
            if s.end == END_MARKERS and s.peers and all(
                    self.plan.nodes[p].kind == "python" and self._node_finished(p)
                    for p, _ in s.peers):
                self._send(slot, P.INPUT_END, socket=s.name, expected=None)

    # -- end of stream -------------------------------------------------------------------------
    def _node_finished(self, name: str) -> bool:
        n = self.plan.nodes[name]
        return all(self.slots[f"{name}.{i}"].finished for i in range(n.replicas))

    def _advance_ends(self) -> None:
        """Count groups: once all senders finished, receivers end when received == sent."""
        now = time.monotonic()
        if self.eo and self.groups and all(s.finished for s in self.sources):
            # every record was acknowledged by the sink: what is still in flight is duplicates
            for g in self.groups:
                if not g["ended"]:
                    g["ended"] = True
                    for sid in g["receivers"]:
                        self._end_input(sid, None)
        for g in self.groups:
            if g["ended"]:
                continue
            senders = {sid.split(".")[0] for sid in g["senders"]}
            if g["expected"] is None:
                if not all(self._node_finished(n) for n in senders):
                    continue
                g["expected"] = sum(
                    self.slots[f"{sid.split('.')[0]}.{i}"].total(sid.split(".")[1], 1)
                    for sid in g["senders"]
                    for i in range(self.plan.nodes[sid.split(".")[0]].replicas)
                )
                g["progress"] = (-1, now)
                for sid in g["receivers"]:
                    node, sock = sid.split(".")
                    for i in range(self.plan.nodes[node].replicas):
                        self._send(self.slots[f"{node}.{i}"], P.DRAIN, socket=sock)
            got = sum(
                self.slots[f"{sid.split('.')[0]}.{i}"].total(sid.split(".")[1], 0)
                for sid in g["receivers"]
                for i in range(self.plan.nodes[sid.split(".")[0]].replicas)
            )
            if got != g["progress"][0]:
                g["progress"] = (got, now)
            # a stall: no progress for drain_timeout while every receiver says it has nothing
            # to read (a receiver busy with a slow frame says nothing, and is not a stall)
            receivers = [
                self.slots[f"{sid.split('.')[0]}.{i}"] for sid in g["receivers"]
                for i in range(self.plan.nodes[sid.split(".")[0]].replicas)
            ]
            stalled = now - g["progress"][1] > self.opts.drain_timeout and all(
                r.exited or r.idle_at > g["progress"][1] for r in receivers)
            if got >= g["expected"] or stalled:
                if stalled and got < g["expected"]:
                    why = ("lost with a replica that died" if self.deaths else
                           "dropped as undecodable, or lost")
                    msg = (f"{g['expected'] - got} of {g['expected']} records sent to "
                           f"{', '.join(g['receivers'])} never arrived ({why}); ending the "
                           f"stream without them")
                    self.view.event("error", message=msg)
                g["ended"] = True
                for sid in g["receivers"]:
                    self._end_input(sid, g["expected"])
        # request/reply, custom and command inputs end when every peer node has finished
        for n in self.plan.nodes.values():
            for s in n.sockets.values():
                sid = f"{n.name}.{s.name}"
                if s.end != END_PEERS or sid in self.ended_inputs:
                    continue
                if all(self._node_finished(p) for p, _ in s.peers):
                    self._end_input(sid, None)
            if n.shape == "custom" and n.kind == "python":
                ins = [s for s in n.sockets.values() if s.end in (END_PEERS, END_COUNT)]
                if ins and all(f"{n.name}.{s.name}" in self.ended_inputs for s in ins):
                    for i in range(n.replicas):
                        slot = self.slots[f"{n.name}.{i}"]
                        if not slot.stop_sent:
                            self._send(slot, P.STOP)  # ctx.stopping() turns true
                            slot.stop_sent = True

    def _complete(self) -> bool:
        """Every replica finished: zflow nodes said so, command nodes exited 0."""
        return all(slot.finished for slot in self.slots.values())

    def _end_input(self, sid: str, expected: int | None) -> None:
        self.ended_inputs.add(sid)
        node, sock = sid.split(".")
        for i in range(self.plan.nodes[node].replicas):
            self._send(self.slots[f"{node}.{i}"], P.INPUT_END, socket=sock, expected=expected)

    # -- exits and restarts ----------------------------------------------------------------------
    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.proc is None or slot.exited:
                continue
            code = slot.proc.poll()
            if code is None:
                continue
            n = self.plan.nodes[slot.node]
            if (code in (0, 1, 3) and slot.fatal is None and not slot.finished
                    and self.phase in ("starting", "running") and n.kind == "python"):
                # a replica sends FINISHED or FATAL just before it exits, but the exit can be
                # seen first: wait a moment for the message, so an end is not taken for a crash
                # and a failure is reported with its reason (and a start failure not restarted)
                slot.exit_seen = slot.exit_seen or now
                if now - slot.exit_seen < 0.5:
                    continue
            slot.exited = True
            slot.exit_code = code
            _killpg(slot.pid, signal.SIGKILL)  # whatever the replica started goes with it
            self._guard(f"-{slot.pid}")
            for fd in [fd for fd, (s, _) in self.fd_slot.items() if s is slot]:
                self._drain_fd(fd)
            self.model.replica_exit(slot.node, slot.index, code)
            for k, v in slot.cur.items():
                b = slot.base.setdefault(k, [0, 0, 0, 0])
                for c in range(4):
                    b[c] += v[c]
            slot.cur = {}
            slot.errors_base += slot.errors
            slot.errors = 0
            if self.phase in ("stopping", "done"):
                ours = code in (0, -signal.SIGTERM, -signal.SIGKILL, 128 + signal.SIGTERM)
                self._set_state(slot, "stopped" if ours else "failed", f"exit {code}")
                if not ours and self.result_code == exitcodes.OK:
                    self.result_code = exitcodes.FAILED
                    self.final_state = "failed"
                    tail = "\n".join(f"    {x}" for x in list(slot.stderr_tail)[-10:])
                    self.result_msg = f"{slot.id} exited with code {code} at the end" + (
                        f"\n  last stderr lines:\n{tail}" if tail else "")
                    self.view.event("error", message=self.result_msg)
                continue
            inputs_done = all(f"{n.name}.{x.name}" in self.ended_inputs
                              for x in n.sockets.values() if x.receives and x.role == "data")
            command_done = n.kind == "command" and (inputs_done or n.restart != "always")
            if code == 0 and (slot.finished or command_done):
                # a command node is opaque: exit 0 is its end (unless `always` and input remains)
                slot.finished = True
                self._set_state(slot, "stopped", "exit 0")
                continue
            if slot.fatal and slot.fatal.get("phase") in ("import", "bind", "connect", "spawn"):
                self._fail_start(slot)
                return
            self.deaths += 1
            self._set_state(slot, "failed", f"exit {code}")
            if self.eo and n.shape == "sink":
                self._fail_run(slot, f"{slot.id} died: with the sink's state lost, exactly-once "
                                     "delivery cannot be kept (zflow does not restart sinks)")
                return
            if (inputs_done and n.shape != "transform"
                    and any(x.receives and x.role == "data" for x in n.sockets.values())):
                # a sink's (or command's) input has ended: a restart would start an empty
                # stream and report success without what the dead one had gathered. A
                # transform holds nothing for later: it restarts and finishes at once.
                self._fail_run(slot, f"{slot.id} exited with code {code} after its input ended")
                return
            if self.eo:  # what that replica held is gone: sources resend what is unacknowledged
                for src in self.sources:
                    if src is not slot:
                        self._send(src, P.RESEND)
            if code == 0 and n.restart != "always":  # `always` also restarts clean exits
                self._fail_run(slot, f"{slot.id} exited (code 0) before its stream ended")
                return
            self._maybe_restart(slot, now)

    def _drain_fd(self, fd: int) -> None:
        while fd in self.fd_slot:
            self._on_output(fd)
            if fd in self.fd_slot and not _readable(fd):
                # the pipe may still be held open by a grandchild; take what is there
                break

    def _maybe_restart(self, slot: Slot, now: float) -> None:
        n = self.plan.nodes[slot.node]
        if n.restart == "no" or self.phase not in ("starting", "running"):
            self._fail_run(slot, f"{slot.id} exited with code {slot.exit_code}")
            return
        slot.restarts = [t for t in slot.restarts if now - t < n.restart_window]
        if len(slot.restarts) >= n.max_restarts:
            self._fail_run(
                slot,
                f"{slot.id} is crash-looping: {len(slot.restarts) + 1} failures within "
                f"{n.restart_window:g}s (last exit code {slot.exit_code})",
            )
            return
        delay = min(n.backoff_max, n.backoff_initial * (2 ** len(slot.restarts)))
        slot.restarts.append(now)
        slot.restart_at = now + delay
        self._set_state(slot, "restarting", f"in {delay:.1f}s")
        self.model.replica_restart(slot.node, slot.index)
        self.view.event("restart", node=slot.node, replica=slot.index, delay=delay,
                        code=slot.exit_code)

    def _fork_server_died(self) -> None:
        """Its replicas die with it (PDEATHSIG); no Python replica can be started or restarted."""
        assert self.zygote is not None
        self.poller.unregister(self.zygote.fileno())
        self.zygote.dead = True
        code = exitcodes.START_FAILED if self.phase == "starting" else exitcodes.FAILED
        self._begin_stop(code, "the zflow fork server exited unexpectedly; Python replicas "
                               "cannot be started or restarted", "failed")

    def _fail_start(self, slot: Slot) -> None:
        f = slot.fatal or {}
        where = slot.id + (f" socket {f['socket']}" if f.get("socket") else "")
        msg = f"{where}: {f.get('message', 'failed to start')}"
        if f.get("hint"):
            msg += f"\n  hint: {f['hint']}"
        self._begin_stop(exitcodes.START_FAILED, msg, "failed")

    def _fail_run(self, slot: Slot, message: str) -> None:
        tail = list(slot.stderr_tail)[-10:]
        if slot.fatal and slot.fatal.get("message"):
            message += f": {slot.fatal['message']}"
        if tail:
            message += "\n  last stderr lines:\n" + "\n".join(f"    {x}" for x in tail)
        self._begin_stop(exitcodes.FAILED, message, "failed")

    def _begin_stop(self, code: int, message: str | None, overall: str) -> None:
        if self.result_code is None:
            self.result_code = code
            self.result_msg = message
            self.final_state = overall
            if message:
                self.view.event("error", message=message)
        if self.phase != "stopping":
            self.phase = "stopping"
            self.model.set_overall("stopping")
            self.stop_sent_at = time.monotonic()
            abandon = code != exitcodes.OK  # nothing in flight is worth waiting for
            for s in self.slots.values():
                self._send(s, P.STOP, abandon=abandon)
                # command nodes hear no STOP: on completion they get the drain period to exit
                # by themselves, otherwise SIGTERM now
                kind = self.plan.nodes[s.node].kind
                if code != exitcodes.OK and kind == "command" and s.proc and not s.exited:
                    _killpg(s.pid, signal.SIGTERM)

    def _advance_stop(self) -> None:
        now = time.monotonic()
        live = [s for s in self.slots.values() if s.proc is not None and not s.exited]
        if not live:
            self.phase = "done"
            return
        grace = self.opts.grace
        if self.interrupts >= 2:
            for s in live:
                _killpg(s.pid, signal.SIGKILL)
            return
        assert self.stop_sent_at is not None
        drain = min(2.0, grace if grace is not None else 2.0)
        if self.term_sent_at is None and now - self.stop_sent_at > drain:
            self.term_sent_at = now
            for s in live:
                _killpg(s.pid, signal.SIGTERM)
        if self.term_sent_at is not None:
            for s in live:
                g = grace if grace is not None else self.plan.nodes[s.node].grace
                if now - self.term_sent_at > g:
                    _killpg(s.pid, signal.SIGKILL)

    def _sample_procs(self) -> None:
        now = time.monotonic()
        for s in self.slots.values():
            if s.proc is None or s.exited:
                continue
            cpu_t, rss = _proc_usage(s.pid)
            if cpu_t is None:
                continue
            cpu = None
            if s.cpu_prev is not None and now > s.cpu_prev[1]:
                cpu = 100.0 * (cpu_t - s.cpu_prev[0]) / (now - s.cpu_prev[1])
            s.cpu_prev = (cpu_t, now)
            self.model.replica_proc(s.node, s.index, s.pid, cpu, rss)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> int:
        self._setup()
        try:
            return self._run()
        finally:
            for s in self.slots.values():
                if s.proc is not None and s.proc.poll() is None:
                    _killpg(s.pid, signal.SIGKILL)
                    s.proc.wait()
            self._teardown()

    def _run(self) -> int:
        t0 = time.monotonic()
        self.model.set_overall("starting")
        self.view.start()
        for slot in self.slots.values():
            if self.phase == "starting":
                self._spawn(slot)
        next_refresh = next_sample = 0.0
        seen_interrupts = 0
        while self.phase != "done":
            timeout = 50 if self.phase != "running" else 100
            for sock, _ in self.poller.poll(timeout):
                if sock is self.router:
                    while True:
                        try:
                            ident, data = self.router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        except ValueError:
                            continue
                        self._on_message(ident, data)
                elif self.zygote is not None and sock == self.zygote.fileno():
                    try:
                        self.zygote.pump()
                    except OSError:
                        self._fork_server_died()
                elif sock == self.wake_r:
                    try:
                        os.read(self.wake_r, 512)
                    except BlockingIOError:
                        pass
                elif sock in self.fd_slot:
                    self._on_output(sock)
            if self.interrupts != seen_interrupts:
                seen_interrupts = self.interrupts
                self.view.event("overall", state="interrupted")
                self._begin_stop(exitcodes.INTERRUPTED, "interrupted", "interrupted")
                if self.interrupts >= 2:
                    self._advance_stop()
            self._reap()
            now = time.monotonic()
            if self.phase == "starting":
                self._advance_start()
                if self.phase == "starting" and now - t0 > self.opts.start_timeout:
                    waiting = [s.id for s in self.slots.values() if not s.ready]
                    self._begin_stop(exitcodes.START_FAILED,
                                     f"not ready after {self.opts.start_timeout:g}s: "
                                     + ", ".join(waiting), "failed")
            if self.phase in ("starting", "running"):
                for s in self.slots.values():
                    if s.restart_at is not None and now >= s.restart_at:
                        self._spawn(s)
                        self._reprobe(s)
            if self.phase == "running":
                self._advance_ends()
                if self._complete():
                    self._begin_stop(exitcodes.OK, None, "completed")
            if self.phase == "stopping":
                self._advance_stop()
            if now >= next_sample:
                next_sample = now + 1.0
                self._sample_procs()
            if now >= next_refresh:
                next_refresh = now + self.opts.refresh
                self.view.refresh()
        code = self.result_code if self.result_code is not None else exitcodes.OK
        final = getattr(self, "final_state", "completed")
        self.view.event("overall", state=final)
        self._report_dead_letters()
        self.model.finish(final, code, self.result_msg)
        self.view.close()
        return code

    def _reprobe(self, slot: Slot) -> None:
        """A restarted SUB needs its publishers to probe again until it reports ready."""
        n = self.plan.nodes[slot.node]
        for s in n.sockets.values():
            if s.type == "SUB":
                for p, _ in s.peers:
                    for i in range(self.plan.nodes[p].replicas):
                        self._send(self.slots[f"{p}.{i}"], P.PROBE, on=True)


def _killpg(pid: int | None, sig: int) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _readable(fd: int) -> bool:
    import select

    r, _, _ = select.select([fd], [], [], 0)
    return bool(r)


def _free_port() -> int:
    """For command nodes only: they bind themselves, so zflow must name a port up front."""
    with pysocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_usage(pid: int | None) -> tuple[float | None, int | None]:
    """CPU seconds and RSS bytes from /proc (Linux); (None, None) when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None, None
    return (int(fields[11]) + int(fields[12])) / _CLK, rss_pages * _PAGE
