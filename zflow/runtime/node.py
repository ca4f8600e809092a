"""The process of one replica: builds its sockets from the plan and runs the user's code.

Start-up follows the supervisor's barrier: bind, report the bound endpoints, connect when told,
wait until every PUB peer's probe has arrived on each SUB (the subscription is then known to be in
place), report ready, and only then run. Data is received by polling once and draining with
NOBLOCK, records are processed a frame at a time, and outgoing frames are flushed when full or as
soon as the node has nothing more to read, so an idle pipeline adds no batching delay.
"""

from __future__ import annotations

import bisect
import collections
import ctypes
import functools
import importlib
import inspect
import json
import operator
import os
import signal
import sys
import time
import traceback
from itertools import islice
from typing import Any

import zmq

from zflow.runtime import codec
from zflow.runtime import context as zctx
from zflow.runtime import protocol as P
from zflow.runtime.spec import ReplicaSpec, SocketSpec

RECEIVING = ("PULL", "SUB", "XSUB")
SENDING = ("PUSH", "PUB", "XPUB")
_not_none = functools.partial(operator.is_not, None)


class Stop(BaseException):
    """Raised out of blocking calls when the replica must stop now (SIGTERM).

    A BaseException, so `except Exception` in the user's code cannot swallow it.
    """


class DecodeError(ValueError):
    """A received frame that the socket's codec cannot turn into records."""


class NodeFailure(Exception):
    def __init__(self, phase: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.phase = phase
        self.extra = extra


def _die_with_parent() -> None:
    """Linux: be killed if the supervisor dies, even by SIGKILL (no orphans)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    expected = os.environ.get("ZFLOW_PARENT_PID")
    if expected and os.getppid() != int(expected):
        os._exit(1)  # the supervisor died before prctl took effect


def resolve_target(target: str) -> Any:
    """`pkg.mod:attr.sub` → the object. Raises NodeFailure with a clear message."""
    mod_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise NodeFailure("import", f"cannot import module {mod_name!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any error raised by the user's module at import
        tb = traceback.format_exc(limit=-3)
        raise NodeFailure(
            "import", f"importing {mod_name!r} raised {type(e).__name__}: {e}", traceback=tb
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise NodeFailure("import", f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise NodeFailure("import", f"{target!r} is {type(obj).__name__}, not callable")
    return obj


def check_params(target: Any, shape: str, params: dict[str, Any]) -> None:
    """Sources and classes receive `params` as keyword arguments: check they fit before start."""
    if not (shape == "source" or (inspect.isclass(target) and shape != "custom")):
        return
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(**params)
    except TypeError as e:
        name = getattr(target, "__qualname__", repr(target))
        raise NodeFailure(
            "import", f"params {sorted(params)} do not fit {name}{sig}: {e}",
            hint="params are passed as keyword arguments to sources and classes",
        ) from None


class Seen:
    """Ids a sink has processed: per source, sorted disjoint [lo, hi) intervals of sequences.

    Frames arrive as contiguous ranges (out of order across workers), so even an endless
    stream is a handful of intervals, and checking a whole frame costs one bisect.
    """

    __slots__ = ("stride", "los", "his", "adds")

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.los: list[list[int]] = [[] for _ in range(stride)]
        self.his: list[list[int]] = [[] for _ in range(stride)]
        self.adds = 0

    def add_range(self, start: int, n: int) -> bool:
        """Record ids start, start+stride, … (n of them) if none was seen; else record nothing."""
        k, lo = start % self.stride, start // self.stride
        hi = lo + n
        los, his = self.los[k], self.his[k]
        j = bisect.bisect_right(los, lo)
        if (j > 0 and his[j - 1] > lo) or (j < len(los) and los[j] < hi):
            return False
        left = j > 0 and his[j - 1] == lo
        right = j < len(los) and los[j] == hi
        if left and right:
            his[j - 1] = his[j]
            del los[j], his[j]
        elif left:
            his[j - 1] = hi
        elif right:
            los[j] = lo
        else:
            los.insert(j, lo)
            his.insert(j, hi)
        self.adds += n
        return True

    def add(self, i: int) -> bool:
        """Record id `i`; False if it was seen before (a duplicate)."""
        return self.add_range(i, 1)

    def forget_below(self, i: int) -> None:
        """The source's lowest unacknowledged id is `i`: everything below was processed here or
        dropped by a transform and will never be resent, so it is one interval, not many (a
        filtering transform would otherwise leave one gap per dropped record)."""
        k, seq = i % self.stride, i // self.stride
        los, his = self.los[k], self.his[k]
        if seq <= 0 or (los and los[0] == 0 and his[0] >= seq):
            return
        j = bisect.bisect_right(his, seq)
        if j < len(los) and los[j] <= seq:
            los[j] = 0
            del los[:j], his[:j]
        else:
            del los[:j], his[:j]
            los.insert(0, 0)
            his.insert(0, seq)


class Inbox:
    """A receiving data socket and what is known about the end of its stream."""

    __slots__ = ("name", "sock", "codec", "end", "senders", "eos", "msgs", "nbytes", "ended",
                 "report", "decode", "held", "zf")

    def __init__(self, name: str, sock: zmq.Socket, spec: SocketSpec) -> None:
        self.name = name
        self.sock = sock
        self.codec = spec.codec
        self.end = spec.end
        self.senders = spec.peer_replicas
        self.eos: set[str] = set()
        self.msgs = 0
        self.nbytes = 0
        self.ended = False
        self.report = False
        self.decode = codec.decode_one(self.codec)
        self.held: list[bytes] = []  # data that arrived before start (a restarted replica)
        # 0xFF-prefixed frames are zflow's own unless raw bytes may come from outside zflow
        self.zf = self.codec != "raw" or spec.zflow_peers


class Node:
    def __init__(self, spec: ReplicaSpec, control: str) -> None:
        self.spec = spec
        self.id = spec.id
        self.ctx = zmq.Context()
        self.ctrl = self.ctx.socket(zmq.DEALER)
        self.ctrl.setsockopt(zmq.IDENTITY, spec.identity)
        self.ctrl.setsockopt(zmq.LINGER, 2000)
        self.ctrl.setsockopt(zmq.RCVHWM, 0)  # acks and commands are never dropped
        self.ctrl.setsockopt(zmq.SNDHWM, 0)
        self.ctrl.connect(control)
        self.sockets: dict[str, zmq.Socket] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.outboxes: list[codec.Outbox] = []
        self.control_in: dict[zmq.Socket, bytes] = {}  # stop_on sockets → the message
        self.control_out: list[tuple[zmq.Socket, bytes]] = []  # send_on_end
        self.probe_socks: list[zmq.Socket] = []
        #: SUB sockets → (publisher replica ids whose probe must arrive, ids seen so far)
        self.probe_waits: dict[zmq.Socket, tuple[set[str], set[str]]] = {}
        self.connected = False
        self.probing = False
        self.custom_counts: dict[str, list[int]] = {}  # custom nodes count in SocketIO
        self.finished_sent = False
        self.abandon = False  # interrupted or failed run: close without lingering
        self.eos_socks: list[zmq.Socket] = []  # PUB sockets whose end marker is repeated
        self.next_eos = 0.0
        self.started = False
        self.stop_requested = False
        self.stop_reason = ""
        self.expected: dict[str, int | None] = {}
        self.errors = 0
        self.telemetry = spec.telemetry
        self.stats_every = spec.stats_interval
        self.next_stats = 0.0
        self.t_start = time.monotonic()
        self.dead_letter = spec.dead_letter
        # exactly-once: sources keep what is unacknowledged; sinks remember what they have seen
        self.eo = spec.delivery == "exactly-once"
        self.unacked: dict[int, Any] = {}
        self.resend = False
        self.seen = Seen(spec.sources)
        self.context = zctx.NodeContext(
            topology=spec.topology, node=spec.node, replica=spec.replica,
            replicas=spec.replicas, params=spec.params,
            verbose=spec.verbose, _stop=self._poll_stop,
        )
        zctx._set_current(self.context)

    # -- control plane -------------------------------------------------------------------
    def send(self, kind: str, **fields: Any) -> None:
        self.ctrl.send(P.pack(kind, **fields))

    def handle_control(self, msg: dict[str, Any]) -> None:
        t = msg["t"]
        if t == P.STOP:
            self.stop_requested = True
            self.abandon = self.abandon or bool(msg.get("abandon"))
            self.stop_reason = self.stop_reason or "stopped by zflow"
        elif t == P.START:
            self.started = True
            self.probing = False
        elif t == P.PROBE:
            self.probing = bool(msg.get("on"))
        elif t == P.DRAIN:
            box = self.inboxes.get(msg["socket"])
            if box is not None:
                box.report = True
                self.send(P.COUNT, socket=box.name, n=box.msgs)
        elif t == P.INPUT_END:
            box = self.inboxes.get(msg["socket"])
            self.expected[msg["socket"]] = msg.get("expected")
            if box is not None:
                box.ended = True
        elif t == P.CONNECT:
            self._connect(msg["endpoints"])
        elif t == P.ACK:
            pop = self.unacked.pop
            if "r" in msg:
                start, n = msg["r"]
                stride = self.seen.stride
                for i in range(start, start + n * stride, stride):
                    pop(i, None)
            else:
                for i in msg["ids"]:
                    pop(i, None)
        elif t == P.RESEND:
            self.resend = True
        elif t == P.LOW:
            self.seen.forget_below(msg["id"])

    def drain_control(self) -> None:
        while True:
            try:
                data = self.ctrl.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle_control(P.unpack(data))

    def _send_blocked(self) -> None:
        """A send waits on a full pipe: serve the control plane; give up if told to abandon."""
        self.drain_control()
        self.probe_tick()  # a restarted subscriber downstream may be waiting for our probe
        self.tick()
        if self.stop_requested and self.abandon:
            raise Stop()

    def _poll_stop(self) -> bool:
        self.drain_control()
        self._check_control_in()
        return self.stop_requested

    def wait_control(self, until: Any, timeout: float | None = None) -> None:
        """Serve the control plane (and probes) until `until()` is true."""
        poller = zmq.Poller()
        poller.register(self.ctrl, zmq.POLLIN)
        for s in {*self.control_in, *self.probe_waits}:
            poller.register(s, zmq.POLLIN)
        while not until():
            if self.stop_requested:
                raise Stop()
            for ev_sock, _ in poller.poll(5 if self.probing else 100):
                if ev_sock is self.ctrl:
                    self.drain_control()
                elif ev_sock in self.probe_waits:
                    self._take_probes(ev_sock)
                else:
                    self._check_control_in()
            self.probe_tick()
            self.repeat_end_markers()

    def repeat_end_markers(self) -> None:
        """PUB drops at its high-water mark, end markers included: after the end, repeat them
        every 100 ms until zflow stops this node (receivers count each sender once)."""
        now = time.monotonic()
        if self.eos_socks and now >= self.next_eos:
            self.next_eos = now + 0.1
            frame = codec.control_frame("eos", self.id)
            for sock in self.eos_socks:
                sock.send(frame)

    def probe_tick(self) -> None:
        """While asked to probe, each PUB socket sends one probe per call (see wait_control)."""
        if self.probing and self.probe_socks:
            frame = codec.control_frame("probe", self.id)
            for s in self.probe_socks:
                s.send(frame)

    def _take_probes(self, sock: zmq.Socket) -> None:
        seen = self.probe_waits[sock][1]
        word = self.control_in.get(sock)
        box = self.inboxes_by_sock.get(sock)
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            ctl = codec.parse_control_frame(frame)
            if ctl is not None:
                if ctl.get("probe"):
                    seen.add(ctl["probe"])
                continue
            if word is not None and frame == word:
                self.stop_requested = True
                self.stop_reason = f"received {word.decode(errors='replace')}"
            elif box is not None:
                box.held.append(frame)

    def subscribed(self) -> bool:
        """Every SUB has seen a probe from each zflow publisher: its subscription is live."""
        return all(expected <= seen for expected, seen in self.probe_waits.values())

    # -- sockets ---------------------------------------------------------------------------
    def build_sockets(self) -> dict[str, str]:
        bound: dict[str, str] = {}
        for s in self.spec.sockets:
            sock = self.ctx.socket(getattr(zmq, s.type))
            sock.setsockopt(zmq.LINGER, s.linger)
            sock.setsockopt(zmq.SNDHWM, s.hwm)
            sock.setsockopt(zmq.RCVHWM, s.hwm)
            if s.type == "SUB":
                for prefix in s.subscribe:
                    sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
                if s.probes_from or s.codec == "msgpack":
                    sock.setsockopt(zmq.SUBSCRIBE, codec.ZF)
                if s.probes_from:
                    self.probe_waits[sock] = (set(s.probes_from), set())
            self.sockets[s.name] = sock
            if s.mode == "bind":
                ep = s.bind_endpoint
                try:
                    sock.bind(ep)
                except zmq.ZMQError as e:
                    hint = ("another process is using it; stop it or choose another port "
                            "(or `bind: tcp` to let the OS pick one)" if e.errno == zmq.EADDRINUSE
                            else None)
                    raise NodeFailure("bind", f"cannot bind {ep}: {zmq.strerror(e.errno)}",
                                      socket=s.name, endpoint=ep, hint=hint) from None
                bound[s.name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            if s.stop_on:
                self.control_in[sock] = s.stop_on.encode()
            elif self.spec.shape == "custom":
                pass  # custom code owns its sockets; SocketIO counts what it moves
            elif s.send_on_end:
                self.control_out.append((sock, s.send_on_end.encode()))
            elif s.type in RECEIVING:
                self.inboxes[s.name] = Inbox(s.name, sock, s)
            elif s.type in SENDING:
                box = codec.IdOutbox if self.eo else codec.Outbox
                out = box(s.name, sock, s.codec, s.batch, s.topic)
                out.stride = self.spec.sources
                out.blocked = self._send_blocked
                sock.setsockopt(zmq.SNDTIMEO, 100)  # a blocked send still hears STOP
                self.outboxes.append(out)
            elif s.type in ("REP", "ROUTER") and self.spec.shape == "service":
                self.inboxes[s.name] = Inbox(s.name, sock, s)
            if s.probe:
                self.probe_socks.append(sock)
        self.inboxes_by_sock = {b.sock: b for b in self.inboxes.values()}
        self.context.sockets = dict(self.sockets)
        return bound

    def _connect(self, endpoints: dict[str, list[str]]) -> None:
        for name, eps in endpoints.items():
            sock = self.sockets[name]
            for ep in eps:
                try:
                    sock.connect(ep)
                except zmq.ZMQError as e:
                    raise NodeFailure("connect", f"cannot connect to {ep}: {e.strerror}",
                                      socket=name, endpoint=ep) from None
        self.connected = True

    def _check_control_in(self) -> None:
        for sock, word in self.control_in.items():
            while True:
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if frame == word:
                    self.stop_requested = True
                    self.stop_reason = f"received {word.decode(errors='replace')}"

    # -- telemetry -------------------------------------------------------------------------
    def counters(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {k: list(v) for k, v in self.custom_counts.items()}
        for b in self.inboxes.values():
            out[b.name] = [b.msgs, 0, b.nbytes, 0]
        for o in self.outboxes:
            out[o.name] = [0, o.msgs, 0, o.nbytes]
        return out

    def tick(self) -> None:
        if not self.telemetry:
            return
        now = time.monotonic()
        if now >= self.next_stats:
            self.next_stats = now + self.stats_every
            self.send(P.STATS, s=self.counters(), e=self.errors)

    # -- errors ----------------------------------------------------------------------------
    def _undecodable(self, box: Inbox, frame: bytes, exc: Exception) -> None:
        """A frame that cannot be decoded: handled per on_error, like a record that fails."""
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        err = DecodeError(f"cannot decode a {len(frame)}-byte frame on socket {box.name!r} "
                          f"({box.codec}): {why}")
        if self.spec.on_error == "fail":
            raise NodeFailure("decode", str(err), socket=box.name) from None
        self.record_error(frame, err)

    def record_error(self, record: Any, exc: BaseException) -> None:
        """on_error: fail re-raises; skip counts; dead-letter counts and appends a JSON line."""
        policy = self.spec.on_error
        if policy == "fail":
            raise exc
        self.errors += 1
        if policy == "dead-letter" and self.dead_letter:
            line = {
                "node": self.spec.node, "replica": self.spec.replica,
                "record": record if isinstance(record, (str, int, float, list, dict, bool))
                else repr(record),
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": "".join(traceback.format_exception(exc)[-3:]),
            }
            try:
                with open(self.dead_letter, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line, default=repr) + "\n")
            except OSError as e:
                raise NodeFailure("run", f"cannot write dead letter to {self.dead_letter}: "
                                         f"{e.strerror}") from None

    def _tracked(self, recs: list[Any], cur: list[Any]) -> Any:
        for r in recs:
            cur[0] = r
            yield r

    # -- shapes ----------------------------------------------------------------------------
    def run(self, target: Any) -> Any:
        shape = self.spec.shape
        params = self.context.params
        is_class = inspect.isclass(target)
        if shape == "source":
            return self.run_source(target(**params))
        if shape == "custom":
            self.context._io = SocketIO(self)
            return target(self.context)
        obj = target(**params) if is_class else target
        if shape == "service":
            return self.run_service(obj)
        return self.run_stream(obj, end=getattr(obj, "end", None) if is_class else None,
                               generator=inspect.isgeneratorfunction(
                                   obj.__call__ if is_class else obj))

    def run_source(self, iterable: Any) -> Any:
        if self.eo:
            return self.run_source_eo(iterable)
        outs = self.outboxes
        if hasattr(iterable, "__len__"):
            total = len(iterable)
            self.send(P.TOTAL, n=total)
            # a short stream is cut into enough frames to reach every receiving replica
            # (PUSH balances per frame): at least 4 frames per receiver, never over `batch`
            for o in outs:
                fair = total // (4 * max(1, self.spec.socket(o.name).peer_replicas))
                o.batch = max(1, min(o.batch, fair))
        it = iter(iterable)
        # Adaptive chunks: a fast source grows to full frames; a slow one (a chunk taking over
        # 1 ms to produce) shrinks to one record per frame, so batching never holds a record
        # back for long. Every chunk is flushed at once.
        cap = max([o.batch for o in outs] + [1])
        step = 1
        clock = time.perf_counter
        while True:
            t0 = clock()
            chunk = list(islice(it, step))
            if not chunk:
                break
            took = clock() - t0
            if took < 0.0002 and step < cap:
                step = min(cap, step * 2)
            elif took > 0.001 and step > 1:
                step //= 2
            for o in outs:
                o.extend(chunk)
                o.flush()
            self.drain_control()
            if self.control_in:
                self._check_control_in()
            self.probe_tick()
            self.tick()
            if self.stop_requested:
                break
        self.finish_stream(None)
        return None

    def run_source_eo(self, iterable: Any) -> Any:
        """exactly-once source: ids, a credit window, and resending what is not acknowledged.

        An id is `seq * sources + index`, so every source replica numbers its own records and a
        restarted source that replays its input produces the same ids (the sink drops them).
        """
        if hasattr(iterable, "__len__"):
            self.send(P.TOTAL, n=len(iterable))
        outs: list[codec.IdOutbox] = self.outboxes  # type: ignore[assignment]
        stride = self.spec.sources
        index = self.spec.source_index
        window = self.spec.window
        lease = self.spec.lease
        step = max([o.batch for o in outs] + [1])
        unacked = self.unacked
        it = iter(iterable)
        seq = 0
        last_progress = time.monotonic()
        next_low = last_progress + 0.25
        exhausted = False
        while not self.stop_requested:
            room = window - len(unacked)
            if not exhausted and room > 0:
                chunk = list(islice(it, min(step, room)))
                if chunk:
                    first = seq * stride + index
                    ids = list(range(first, first + len(chunk) * stride, stride))
                    seq += len(chunk)
                    unacked.update(zip(ids, chunk, strict=True))
                    for o in outs:
                        o.extend_ids(ids, chunk)
                        o.flush()
                else:
                    exhausted = True
            if exhausted and not unacked:
                break
            before = len(unacked)
            if exhausted or len(unacked) >= window:
                if self.ctrl.poll(50, zmq.POLLIN):
                    self.drain_control()
            else:
                self.drain_control()
            self.probe_tick()
            now = time.monotonic()
            if len(unacked) != before:
                last_progress = now
            elif unacked and now - last_progress > lease:
                self.resend = True  # nothing acknowledged for a lease: assume it was lost
            if now >= next_low:  # tell the sink what it may forget
                next_low = now + 0.25
                self.send(P.LOW, id=min(unacked) if unacked else seq * stride + index)
            if self.resend and unacked:
                self.resend = False
                last_progress = now
                ids = list(unacked)
                for o in outs:
                    o.extend_ids(ids, [unacked[i] for i in ids])
                    o.flush()
            self.tick()
        self.finish_stream(None)
        return None

    def _ingest(self, box: Inbox, frame: bytes, apply: Any) -> None:
        ids = None
        try:
            ctl = codec.parse_control_frame(frame) if box.zf else None
            if ctl is not None:  # a probe or an end marker, never data
                sender = ctl.get("eos")
                if sender:
                    box.eos.add(sender)
                    if len(box.eos) >= box.senders and box.end == "markers":
                        box.ended = True
                return
            if box.codec == "msgpack":
                if frame[:1] == codec.IDR:
                    first, n, recs = codec._unpackb(frame[1:])
                    ids = range(first, first + n * self.seen.stride, self.seen.stride)
                elif frame[:1] == codec.IDS:
                    ids, recs = codec._unpackb(frame[1:])
                else:
                    recs = codec.decode_batch(frame)
                if not isinstance(recs, list):
                    raise TypeError(f"decoded to {type(recs).__name__}, not a list of records")
            else:
                if not frame:
                    box.eos.add(str(len(box.eos)))
                    if len(box.eos) >= box.senders and box.end == "markers":
                        box.ended = True
                    return
                recs = [box.decode(frame)]
        except Exception as e:  # noqa: BLE001 - a frame that cannot be decoded is a bad record
            self._undecodable(box, frame, e)
            return
        box.nbytes += len(frame)
        if ids is None:
            box.msgs += len(recs)
            apply(recs)
        elif self.outboxes:
            box.msgs += len(recs)
            self.apply_ids(ids, recs)
        else:  # an exactly-once sink counts records once, not their resent duplicates
            before = self.seen.adds
            self.apply_ids(ids, recs)
            box.msgs += self.seen.adds - before
        if box.report:
            self.send(P.COUNT, socket=box.name, n=box.msgs)

    def run_stream(self, fn: Any, end: Any, generator: bool) -> Any:
        outs = self.outboxes
        sink = not outs
        cur: list[Any] = [None]
        tolerant = self.spec.on_error != "fail"

        def apply(recs: list[Any]) -> None:
            produced: list[Any] = []
            it = self._tracked(recs, cur) if tolerant else iter(recs)
            while True:
                try:
                    if generator:
                        for r in it:
                            produced.extend(fn(r))
                    elif sink:
                        collections.deque(map(fn, it), maxlen=0)
                    else:
                        produced.extend(filter(_not_none, map(fn, it)))
                    break
                except (Stop, KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001 - the user's function failed on a record
                    if not tolerant:
                        raise NodeFailure("run", f"{type(e).__name__}: {e}",
                                          traceback=traceback.format_exc()) from None
                    self.record_error(cur[0], e)
            if produced:
                for o in outs:
                    o.extend(produced)

        def apply_ids(ids: Any, recs: list[Any]) -> None:
            """exactly-once: sinks drop duplicates and acknowledge; transforms keep the ids and
            acknowledge what they drop (None results and skipped errors).

            `ids` is a range when the frame is a fresh contiguous run (the common case): a sink
            then checks and records the frame at once and acknowledges it as one range.
            """
            if generator:
                raise NodeFailure("run", "exactly-once needs transforms that return one record "
                                         "or None, not generators")
            if sink:
                if isinstance(ids, range) and self.seen.add_range(ids.start, len(ids)):
                    apply(recs)
                    self.send(P.ACK, r=[ids.start, len(ids)])
                    return
                new = [r for i, r in zip(ids, recs, strict=True) if self.seen.add(i)]
                if new:
                    apply(new)
                self.send(P.ACK, ids=list(ids))
                return
            produced: list[Any] = []
            it = iter(recs)
            while True:  # one call per record; an error resumes after the failing record
                try:
                    produced.extend(map(fn, it))
                    break
                except (Stop, KeyboardInterrupt, SystemExit, NodeFailure):
                    raise
                except Exception as e:  # noqa: BLE001 - the user's function failed on a record
                    if not tolerant:
                        raise NodeFailure("run", f"{type(e).__name__}: {e}",
                                          traceback=traceback.format_exc()) from None
                    self.record_error(recs[len(produced)], e)
                    produced.append(None)
            if produced.count(None) == 0:
                for ob in outs:
                    ob.extend_ids(ids, produced)  # type: ignore[attr-defined]
                return
            keep = [(i, o) for i, o in zip(ids, produced, strict=True) if o is not None]
            if keep:
                for ob in outs:
                    ob.extend_ids([i for i, _ in keep], [o for _, o in keep])  # type: ignore
            self.send(P.ACK, ids=[i for i, o in zip(ids, produced, strict=True) if o is None])

        self.apply_ids = apply_ids
        poller = zmq.Poller()
        poller.register(self.ctrl, zmq.POLLIN)
        for b in self.inboxes.values():
            poller.register(b.sock, zmq.POLLIN)
        for s in self.control_in:
            poller.register(s, zmq.POLLIN)
        for b in self.inboxes.values():  # frames that arrived before start
            held, b.held = b.held, []
            for frame in held:
                self._ingest(b, frame, apply)
        boxes = self.inboxes_by_sock
        ingest = self._ingest
        while not self.stop_requested:
            if self.inboxes and all(b.ended for b in self.inboxes.values()):
                self.finish_stream(end)
                return None
            if self.probing:  # a restarted subscriber is waiting for our probe
                self.probe_tick()
                events = poller.poll(10)
            else:
                events = poller.poll(self.stats_every * 1000 if self.telemetry else 1000)
                if not events:  # nothing to read: tell a draining supervisor we are idle
                    for b in self.inboxes.values():
                        if b.report and not b.ended:
                            self.send(P.COUNT, socket=b.name, n=b.msgs, idle=True)
            for sock, _ in events:
                box = boxes.get(sock)
                if box is None:
                    if sock is self.ctrl:
                        self.drain_control()
                    else:
                        self._check_control_in()
                    continue
                recv = sock.recv
                for _ in range(256):
                    try:
                        frame = recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    ingest(box, frame, apply)
            for o in outs:
                o.flush()
            self.tick()
        return None

    def custom_end_markers(self) -> None:
        """A custom node's PUB sockets end their subscribers' streams when it returns."""
        frame = codec.control_frame("eos", self.id)
        for x in self.spec.sockets:
            if x.type in ("PUB", "XPUB") and x.zflow_peers and not x.send_on_end:
                self.sockets[x.name].send(frame)
                self.eos_socks.append(self.sockets[x.name])

    def finish_stream(self, end: Any) -> None:
        """End of stream: end hook, flush, end markers, send_on_end, then report totals."""
        result = None
        if end is not None:
            per = {b.name: b.msgs for b in self.inboxes.values()}
            exp = [v for v in self.expected.values() if v is not None]
            unique = self.eo and not self.outboxes  # an exactly-once sink counts each id once
            totals = zctx.Totals(
                received=self.seen.adds if unique else sum(per.values()),
                expected=sum(exp) if exp and len(exp) == len(self.expected) else None,
                per_socket=per,
                sent=sum(o.msgs for o in self.outboxes),
                errors=self.errors,
                elapsed=time.monotonic() - self.t_start,
            )
            value = end(totals)
            if self.outboxes and value is not None and not isinstance(value, dict):
                for o in self.outboxes:
                    o.extend(list(value))
            elif isinstance(value, dict):
                result = value
        for o in self.outboxes:
            o.flush()
            spec = self.spec.socket(o.name)
            if o.sock.type in (zmq.PUB, zmq.XPUB) and spec.zflow_peers:
                o.end_marker(self.id, zf=True)
                self.eos_socks.append(o.sock)
            elif o.codec != "msgpack" and not spec.zflow_peers:
                for _ in range(max(1, spec.peer_replicas)):
                    o.end_marker(self.id, zf=False)  # plain programs read an empty message
        for sock, word in self.control_out:
            sock.send(word)
        self.send(P.FINISHED, s=self.counters(), e=self.errors, result=result)
        self.finished_sent = True

    def run_service(self, fn: Any) -> Any:
        poller = zmq.Poller()
        poller.register(self.ctrl, zmq.POLLIN)
        for b in self.inboxes.values():
            poller.register(b.sock, zmq.POLLIN)
        boxes = self.inboxes_by_sock
        out_counts: dict[str, list[int]] = {b.name: [0, 0] for b in self.inboxes.values()}
        while not self.stop_requested:
            if self.inboxes and all(b.ended for b in self.inboxes.values()):
                break
            for sock, _ in poller.poll(self.stats_every * 1000):
                if sock is self.ctrl:
                    self.drain_control()
                    continue
                box = boxes[sock]
                encode = codec.encode_one(box.codec)
                while True:
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    envelope, body = parts[:-1], parts[-1]
                    box.msgs += 1
                    box.nbytes += len(body)
                    try:
                        reply = encode(fn(box.decode(body)))
                    except Exception as e:  # noqa: BLE001 - report, and answer so REQ can go on
                        self.record_error(body, e)
                        reply = encode({"error": f"{type(e).__name__}: {e}"})
                    sock.send_multipart([*envelope, reply])
                    out_counts[box.name][0] += 1
                    out_counts[box.name][1] += len(reply)
            self.tick()
        s = self.counters()
        for name, (n, nb) in out_counts.items():
            s[name][1], s[name][3] = n, nb
        self.send(P.FINISHED, s=s, e=self.errors, result=None)
        self.finished_sent = True
        return None


_PIPELINE = (zmq.PUSH, zmq.PULL, zmq.PUB, zmq.SUB)


class SocketIO:
    """What `NodeContext.send/recv/request/proxy` do for custom nodes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.codecs = {s.name: s.codec for s in node.spec.sockets}
        self.counts = node.custom_counts
        self.held: dict[str, collections.deque] = {}  # records of a frame not yet returned

    def _count(self, name: str, col: int, nbytes: int) -> None:
        c = self.counts.setdefault(name, [0, 0, 0, 0])
        c[col] += 1
        c[col + 2] += nbytes

    def _sock(self, name: str) -> zmq.Socket:
        try:
            return self.node.sockets[name]
        except KeyError:
            raise KeyError(f"node {self.node.spec.node!r} has no socket {name!r}") from None

    def _batched(self, sock: zmq.Socket, name: str) -> bool:
        """Pipeline sockets between zflow nodes carry msgpack *frames* (lists of records)."""
        return self.codecs[name] == "msgpack" and sock.type in _PIPELINE

    def send(self, name: str, record: Any) -> None:
        sock = self._sock(name)
        if self._batched(sock, name):
            frame = b"\0" + codec._packb([record])
        else:
            frame = codec.encode_one(self.codecs[name])(record)
        if sock.type == zmq.DEALER:
            sock.send_multipart([b"", frame])
        else:
            sock.send(frame)
        self._count(name, 1, len(frame))
        self.node.tick()

    def recv(self, name: str, timeout: float | None) -> Any:
        sock = self._sock(name)
        held = self.held.get(name)
        if held:
            return held.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else (deadline - time.monotonic()) * 1000
            wait = 100 if left is None else max(0, min(100, left))
            if sock.poll(wait, zmq.POLLIN):
                parts = sock.recv_multipart()
                body = parts[-1]
                if codec.parse_control_frame(body) is not None or (
                        not body and self.codecs[name] != "msgpack"):
                    continue  # a probe or an end marker
                self._count(name, 0, len(body))
                if self._batched(sock, name):
                    recs = collections.deque(codec.decode_batch(body))
                    first = recs.popleft()
                    if recs:
                        self.held[name] = recs
                    return first
                return codec.decode_one(self.codecs[name])(body)
            if self.node._poll_stop() or (deadline is not None and time.monotonic() >= deadline):
                return None

    def proxy(self, frontend: str, backend: str) -> None:
        a, b = self._sock(frontend), self._sock(backend)
        names = {a: frontend, b: backend}
        poller = zmq.Poller()
        poller.register(a, zmq.POLLIN)
        poller.register(b, zmq.POLLIN)
        poller.register(self.node.ctrl, zmq.POLLIN)
        while not self.node.stop_requested:
            for sock, _ in poller.poll(self.node.stats_every * 1000):
                if sock is self.node.ctrl:
                    self.node.drain_control()
                    continue
                other = b if sock is a else a
                while True:
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    other.send_multipart(parts)
                    self._count(names[sock], 0, len(parts[-1]))
                    self._count(names[other], 1, len(parts[-1]))
            self.node.tick()


def main() -> int:
    _die_with_parent()
    spec = ReplicaSpec.from_json(os.environ[P.ENV_SPEC])
    try:
        import setproctitle

        setproctitle.setproctitle(spec.title)
    except ImportError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle

    def on_term(signum: int, frame: Any) -> None:
        raise Stop()

    signal.signal(signal.SIGTERM, on_term)
    node = Node(spec, os.environ[P.ENV_CONTROL])
    code = 0
    try:
        node.send(P.HELLO, pid=os.getpid())
        target = resolve_target(spec.target or "")
        check_params(target, spec.shape, spec.params)
        node.send(P.BOUND, endpoints=node.build_sockets())
        node.wait_control(lambda: node.connected)
        node.wait_control(node.subscribed)
        node.send(P.READY)
        node.wait_control(lambda: node.started)
        value = node.run(target)
        if spec.shape == "custom":
            node.custom_end_markers()
        if not node.finished_sent:
            # custom nodes return; a stop_on message or zflow's stop ends a stream early
            node.send(P.FINISHED, s=node.counters(), e=node.errors,
                      result=value if isinstance(value, dict) else None)
        # finished: wait to be stopped (or for a stop_on message) so peers can still reach us
        node.wait_control(lambda: node.stop_requested)
    except Stop:
        if not node.stop_requested:
            code = 128 + signal.SIGTERM  # killed by someone else than zflow: not a clean end
    except codec.EncodeError as e:
        node.send(P.FATAL, phase="run", message=str(e))
        code = 1
    except NodeFailure as f:
        node.send(P.FATAL, phase=f.phase, message=str(f), **f.extra)
        code = P.exit_code_for(f.phase)
        if f.extra.get("traceback"):
            sys.stderr.write(f.extra["traceback"])
    except Exception as e:  # noqa: BLE001 - report the user's crash to the supervisor
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        node.send(P.FATAL, phase="run", message=f"{type(e).__name__}: {e}", traceback=tb)
        code = 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no Stop raised out of the cleanup below
    if node.stop_reason:
        try:
            node.send(P.STOPPING, reason=node.stop_reason)
        except zmq.ZMQError:
            pass
    for s in node.sockets.values():
        # receiving sockets hold nothing worth waiting for; a SUB's queued subscription to a
        # publisher that already exited would otherwise hold the exit for the whole linger
        s.close(linger=0 if node.abandon or s.type in (zmq.PULL, zmq.SUB) else None)
    node.ctrl.close()
    node.ctx.term()
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
