"""Running the user's code in its shape: source, stream (transform or sink), service or custom.

Data is received by polling once and draining with NOBLOCK, records are processed a frame at a
time, and outgoing frames are flushed when full or as soon as the node has nothing more to read, so
an idle pipeline adds no batching delay.
"""

from __future__ import annotations

import collections
import functools
import inspect
import math
import operator
import time
import traceback
from itertools import islice
from typing import TYPE_CHECKING, Any

import zmq

from zflow.runtime import codec
from zflow.runtime import context as zctx
from zflow.runtime import protocol as P
from zflow.runtime.replica import exactly_once
from zflow.runtime.replica.errors import NodeFailure, Stop
from zflow.runtime.replica.on_error import record_error, undecodable
from zflow.runtime.replica.socketio import SocketIO
from zflow.runtime.replica.sockets import fair_batches
from zflow.runtime.replica.target import instance_call, takes_only_context

if TYPE_CHECKING:
    from zflow.runtime.replica.core import Node
    from zflow.runtime.replica.sockets import Inbox

_not_none = functools.partial(operator.is_not, None)
#: after its senders exited, an input ends once nothing has arrived for this long (seconds)
SETTLE = 0.1


def run(node: Node, target: Any) -> Any:
    """Run the resolved target in the node's shape; returns what a custom node returned."""
    shape = node.spec.shape
    params = node.context.params
    is_class = inspect.isclass(target)
    if shape == "source":
        return run_source(node, target(**params))
    if shape == "custom":
        node.context._io = SocketIO(node)
        if takes_only_context(target):  # params are in ctx.params
            value = target(node.context)
        else:
            value = target(node.context, **params)
        custom_end_markers(node)
        return value
    obj = target(**params) if is_class else target
    fn = _call_of(obj) if is_class else obj
    if shape == "service":
        return run_service(node, fn)
    return run_stream(node, fn, end=getattr(obj, "end", None) if is_class else None,
                      generator=inspect.isgeneratorfunction(fn))


def _call_of(obj: Any) -> Any:
    """What `obj(record)` runs, bound once: calling an instance looks `__call__` up on its type
    at every call, ~35 ns a record of squares' sink (~120 ns) that the bound method saves. As
    Python finds it (target.instance_call), bound if it is a descriptor; an instance without one
    (check_params refuses its class at start) is left to fail as not callable."""
    call = instance_call(type(obj))
    if call is None:
        return obj
    get = getattr(type(call), "__get__", None)
    return call if get is None else get(call, obj, type(obj))


# -- sources ---------------------------------------------------------------------------------
def run_source(node: Node, iterable: Any) -> Any:
    if node.eo:
        exactly_once.run_source(node, iterable)
        finish_stream(node, None)
        return None
    ctl = node.control
    outs = node.outboxes
    if hasattr(iterable, "__len__"):
        ctl.send(P.TOTAL, n=len(iterable))
        fair_batches(node, len(iterable))
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
        ctl.drain()
        if ctl.control_in:
            ctl.check_stop_on()
        ctl.probe_tick()
        ctl.tick()
        if ctl.stop_requested:
            break
    finish_stream(node, None)
    return None


# -- transforms and sinks --------------------------------------------------------------------
def _tracked(recs: list[Any], cur: list[Any]) -> Any:
    for r in recs:
        cur[0] = r
        yield r


ID_FRAMES = (codec.IDR, codec.IDS, codec.IDRG, codec.IDSG)


class ForgedFrame(ValueError):
    """An id frame whose ids do not fit its records: nobody's honest frame."""


def _ingest(node: Node, box: Inbox, frame: bytes, apply: Any, apply_ids: Any) -> None:
    ids = None
    grouped = False
    try:
        mark = codec.parse_control_frame(frame) if box.zf else None
        if mark is not None:  # a probe or an end marker, never data
            sender = mark.get("eos")
            if sender:
                box.eos.add(sender)
                if len(box.eos) >= box.senders and box.end == "markers":
                    box.ended = True
            return
        if box.codec == "msgpack":
            # a frame says how many records it holds only through its own list: a peer (or a
            # stranger on a tcp socket) cannot claim a count or ids it did not send
            kind = frame[:1]
            if kind in ID_FRAMES:
                if not (node.eo and box.end == "count"):
                    raise ValueError("an exactly-once frame on a socket without exactly-once")
                grouped = kind in (codec.IDRG, codec.IDSG)
                if kind in (codec.IDR, codec.IDRG):
                    first, n, recs = codec._unpackb(frame[1:])
                    recs = codec.rows(recs) if not grouped else recs
                    if (type(first) is not int or type(n) is not int
                            or not isinstance(recs, list) or n != len(recs)):
                        raise ForgedFrame("id range does not match its records")
                    ids = range(first, first + n * node.seen.stride, node.seen.stride)
                else:
                    ids, recs = codec._unpackb(frame[1:])
                    recs = codec.rows(recs) if not grouped else recs
                    if (not isinstance(ids, list) or not isinstance(recs, list)
                            or len(ids) != len(recs) or any(type(i) is not int for i in ids)):
                        raise ForgedFrame("ids do not match their records")
                if grouped and not all(isinstance(g, list) for g in recs):
                    raise ForgedFrame("a group of records that is not a list")
            elif node.eo and box.end == "count":
                raise ValueError("a frame without ids on an exactly-once socket")
            else:
                recs = codec.decode_batch(frame)
            if not isinstance(recs, list):
                raise TypeError(f"decoded to {type(recs).__name__}, not a list of records")
        else:
            if frame == box.marker:
                box.eos.add(str(len(box.eos)))
                if len(box.eos) >= box.senders and box.end == "markers":
                    box.ended = True
                return
            recs = [box.decode(frame)]
    except Exception as e:  # noqa: BLE001 - a frame that cannot be decoded is a bad record
        # records that cannot be decoded under honest ids: those ids are acknowledged (never
        # a frame whose ids do not fit its records: a forged frame acknowledges nothing)
        ids = codec.frame_ids(frame, node.seen.stride) if node.eo and box.end == "count" \
            and frame[:1] in ID_FRAMES and not isinstance(e, ForgedFrame) else None
        undecodable(node, box, frame, e, records=len(ids) if ids else 1)
        if ids:  # skipped, like a record that failed: resent, it would only fail again
            node.control.send(P.ACK, ids=list(ids))
        return
    box.nbytes += len(frame)
    if ids is None:
        box.msgs += len(recs)
        apply(recs)
    else:
        if node.outboxes:  # a transform holds these now: its sources learn it (a death resends)
            if isinstance(ids, range):
                node.control.took_rs.append([ids.start, len(ids)])  # see report_ranges
            else:
                node.control.send(P.TOOK, ids=ids)
        # an exactly-once sink counts records once, not their resent duplicates
        box.msgs += apply_ids(ids, recs, grouped)
    if box.report:
        node.control.send(P.COUNT, socket=box.name, n=box.msgs)


def run_stream(node: Node, fn: Any, end: Any, generator: bool) -> Any:
    ctl = node.control
    outs = node.outboxes
    sink = not outs
    cur: list[Any] = [None]
    tolerant = node.spec.on_error != "fail"

    def apply(recs: list[Any]) -> None:
        produced: list[Any] = []
        it = _tracked(recs, cur) if tolerant else iter(recs)
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
                record_error(node, cur[0], e)
        if produced:
            for o in outs:
                o.extend(produced)

    apply_ids = exactly_once.ids_applier(node, fn, apply, generator, tolerant)
    poller = zmq.Poller()
    poller.register(ctl.ctrl, zmq.POLLIN)
    for b in node.inboxes.values():
        poller.register(b.sock, zmq.POLLIN)
    for s in ctl.control_in:
        poller.register(s, zmq.POLLIN)
    for b in node.inboxes.values():  # frames that arrived before start
        held, b.held = b.held, []
        for frame in held:
            _ingest(node, b, frame, apply, apply_ids)
    ctl.report_ranges()
    boxes = node.inboxes_by_sock
    ingest = _ingest
    settle_until = 0.0
    while not ctl.stop_requested:
        if node.inboxes and all(b.ended for b in node.inboxes.values()):
            if not any(b.settle for b in node.inboxes.values()):
                finish_stream(node, end)
                return None
            # its senders exited: what they sent may still be arriving; end after a quiet spell
            now = time.monotonic()
            if not settle_until:
                settle_until = now + SETTLE
            elif now >= settle_until:
                finish_stream(node, end)
                return None
        due = ctl.ranges_due()  # exactly-once reports held back (Control.report_ranges)
        if settle_until or ctl.probing:  # settling, or a restarted subscriber awaits a probe
            if ctl.probing:
                ctl.probe_tick()
            events = poller.poll(10)
        elif due is not None:  # whole milliseconds, rounded up: pyzmq truncates (no spinning)
            events = poller.poll(max(0, math.ceil((due - time.monotonic()) * 1000)))
        else:
            events = poller.poll(ctl.stats_every * 1000 if ctl.telemetry else 1000)
            if not events:  # nothing to read: tell a draining supervisor we are idle
                for b in node.inboxes.values():
                    if b.report and not b.ended:
                        ctl.send(P.COUNT, socket=b.name, n=b.msgs, idle=True)
        for sock, _ in events:
            box = boxes.get(sock)
            if box is None:
                if sock is ctl.ctrl:
                    ctl.drain()
                else:
                    ctl.check_stop_on()
                continue
            recv = sock.recv
            tick = ctl.tick
            for _ in range(256):
                try:
                    frame = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                ingest(node, box, frame, apply, apply_ids)
                # a replica busy with a backlog still reports: what a replica that is killed
                # had moved must be known to within one report interval (loss accounting)
                tick()
            if settle_until:
                settle_until = time.monotonic() + SETTLE
        for o in outs:
            o.flush()
        ctl.report_ranges()
        ctl.tick()
    ctl.report_ranges(force=True)  # stopped: what it took and acknowledged, said
    return None


def finish_stream(node: Node, end: Any) -> None:
    """End of stream: end hook, flush, end markers, send_on_end, then report totals."""
    ctl = node.control
    ctl.report_ranges(force=True)
    result = None
    if end is not None:
        per = {b.name: b.msgs for b in node.inboxes.values()}
        exp = [v for v in ctl.expected.values() if v is not None]
        totals = zctx.Totals(
            received=sum(per.values()),  # an exactly-once sink counted each id once
            # exactly-once ends a stream once the sources have every record acknowledged:
            # what was sent here (less what was dropped, skipped or dead-lettered on the way,
            # which the run counts) has arrived, each record once
            expected=sum(exp) if exp and len(exp) == len(ctl.expected)
            else sum(per.values()) if node.eo else None,
            per_socket=per,
            sent=sum(o.msgs for o in node.outboxes),
            errors=node.errors,
            elapsed=time.monotonic() - node.t_start,
            interrupted=ctl.interrupted,
        )
        value = end(totals)
        if node.outboxes and value is not None and not isinstance(value, dict):
            for o in node.outboxes:
                o.extend(list(value))
        elif isinstance(value, dict):
            result = value
    for o in node.outboxes:
        o.flush()
        spec = node.spec.socket(o.name)
        if o.sock.type in (zmq.PUB, zmq.XPUB) and spec.zflow_peers:
            o.end_marker(node.id, zf=True)
            ctl.eos_socks.append(o.sock)
        elif o.codec != "msgpack" and not spec.zflow_peers and spec.end_marker is not None:
            for _ in range(max(1, spec.peer_replicas)):  # plain programs read the socket's marker
                o.end_marker(node.id, zf=False, word=spec.end_marker.encode())
    for sock, word in node.control_out:
        sock.send(word)
    ctl.send(P.FINISHED, s=ctl.counters(), e=node.errors, result=result)
    ctl.finished_sent = True


# -- services and custom nodes ---------------------------------------------------------------
def run_service(node: Node, fn: Any) -> Any:
    ctl = node.control
    poller = zmq.Poller()
    poller.register(ctl.ctrl, zmq.POLLIN)
    for b in node.inboxes.values():
        poller.register(b.sock, zmq.POLLIN)
    boxes = node.inboxes_by_sock
    out_counts: dict[str, list[int]] = {b.name: [0, 0] for b in node.inboxes.values()}
    while not ctl.stop_requested:
        if node.inboxes and all(b.ended for b in node.inboxes.values()):
            break
        for sock, _ in poller.poll(ctl.stats_every * 1000):
            if sock is ctl.ctrl:
                ctl.drain()
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
                    record_error(node, body, e)
                    why = f"{type(e).__name__}: {e}"
                    reply = why.encode() if box.codec == "raw" else encode({"error": why})
                sock.send_multipart([*envelope, reply])
                out_counts[box.name][0] += 1
                out_counts[box.name][1] += len(reply)
        ctl.tick()
    s = ctl.counters()
    for name, (n, nb) in out_counts.items():
        s[name][1], s[name][3] = n, nb
    ctl.send(P.FINISHED, s=s, e=node.errors, result=None)
    ctl.finished_sent = True
    return None


def custom_end_markers(node: Node) -> None:
    """A custom node's PUB sockets end their subscribers' streams when it returns."""
    frame = codec.control_frame("eos", node.id)
    for x in node.spec.sockets:
        if x.type in ("PUB", "XPUB") and x.zflow_peers and not x.send_on_end:
            node.sockets[x.name].send(frame)
            node.control.eos_socks.append(node.sockets[x.name])
