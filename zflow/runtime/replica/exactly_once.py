"""Exactly-once delivery, the replica's side: sources number their records and keep them until
acknowledged; sinks remember the ids they processed and drop the duplicates a resend brings.

The supervisor forwards acks from sinks (and transforms, for what they drop) to the source, and
the source's low-water mark (`low`) to the sinks.
"""

from __future__ import annotations

import bisect
import time
import traceback
from itertools import islice
from typing import TYPE_CHECKING, Any

import zmq

from zflow.runtime import codec
from zflow.runtime import protocol as P
from zflow.runtime.replica.errors import NodeFailure, Stop
from zflow.runtime.replica.on_error import record_error

if TYPE_CHECKING:
    from zflow.runtime.replica.core import Node


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


def acknowledge(unacked: dict[int, Any], stride: int, msg: dict[str, Any]) -> None:
    """A source forgets what was acknowledged: `r` = [start, n] for a contiguous range of ids
    (start, start+stride, …), or `ids` listed one by one."""
    pop = unacked.pop
    if "r" in msg:
        start, n = msg["r"]
        for i in range(start, start + n * stride, stride):
            pop(i, None)
    else:
        for i in msg["ids"]:
            pop(i, None)


def ids_applier(node: Node, fn: Any, apply: Any, generator: bool, tolerant: bool) -> Any:
    """The stream runner's `apply` for frames that carry ids (see runners.run_stream)."""
    outs = node.outboxes
    sink = not outs
    seen = node.seen
    send = node.control.send

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
            if isinstance(ids, range) and seen.add_range(ids.start, len(ids)):
                apply(recs)
                send(P.ACK, r=[ids.start, len(ids)])
                return
            new = [r for i, r in zip(ids, recs, strict=True) if seen.add(i)]
            if new:
                apply(new)
            send(P.ACK, ids=list(ids))
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
                record_error(node, recs[len(produced)], e)
                produced.append(None)
        if produced.count(None) == 0:
            for ob in outs:
                ob.extend_ids(ids, produced)  # type: ignore[attr-defined]
            return
        keep = [(i, o) for i, o in zip(ids, produced, strict=True) if o is not None]
        if keep:
            for ob in outs:
                ob.extend_ids([i for i, _ in keep], [o for _, o in keep])  # type: ignore
        send(P.ACK, ids=[i for i, o in zip(ids, produced, strict=True) if o is None])

    return apply_ids


def run_source(node: Node, iterable: Any) -> None:
    """exactly-once source: ids, a credit window, and resending what is not acknowledged.

    An id is `seq * sources + index`, so every source replica numbers its own records and a
    restarted source that replays its input produces the same ids (the sink drops them).
    Returns once every record is acknowledged, or when told to stop; the caller ends the stream.
    """
    ctl = node.control
    spec = node.spec
    if hasattr(iterable, "__len__"):
        ctl.send(P.TOTAL, n=len(iterable))
    outs: list[codec.IdOutbox] = node.outboxes  # type: ignore[assignment]
    stride = spec.sources
    index = spec.source_index
    window = spec.window
    lease = spec.lease
    step = max([o.batch for o in outs] + [1])
    unacked = node.unacked
    it = iter(iterable)
    seq = 0
    last_progress = time.monotonic()
    next_low = last_progress + 0.25
    exhausted = False
    while not ctl.stop_requested:
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
            if ctl.ctrl.poll(50, zmq.POLLIN):
                ctl.drain()
        else:
            ctl.drain()
        ctl.probe_tick()
        now = time.monotonic()
        if len(unacked) != before:
            last_progress = now
        elif unacked and now - last_progress > lease:
            ctl.resend = True  # nothing acknowledged for a lease: assume it was lost
        if now >= next_low:  # tell the sink what it may forget
            next_low = now + 0.25
            ctl.send(P.LOW, id=min(unacked) if unacked else seq * stride + index)
        if ctl.resend and unacked:
            ctl.resend = False
            last_progress = now
            ids = list(unacked)
            for o in outs:
                o.extend_ids(ids, [unacked[i] for i in ids])
                o.flush()
        ctl.tick()
