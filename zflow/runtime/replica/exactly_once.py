"""Exactly-once delivery, the replica's side: sources number their records and keep them until
acknowledged; sinks remember the ids they processed and drop the duplicates a resend brings.

The supervisor forwards acks from sinks (and transforms, for what they drop) to the source, and
the source's low-water mark (`low`) to the sinks.
"""

from __future__ import annotations

import bisect
import time
import traceback
from collections.abc import Iterator, MutableMapping
from itertools import islice
from typing import TYPE_CHECKING, Any

import zmq

from zflow.runtime import codec
from zflow.runtime import protocol as P
from zflow.runtime.replica.errors import NodeFailure, Stop
from zflow.runtime.replica.on_error import record_error
from zflow.runtime.replica.sockets import fair_batches

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


class Frame:
    """One frame a source sent: its ids are first, first+stride, … (n of them).

    It keeps the bytes it was sent as, not the records: they are decoded again only for the
    rare resend or dead letter. Wire bytes are several times smaller than the Python objects
    (1,000 squares answers: ~5.5 KB as a frame, ~220 KB as dicts), so the window's memory is
    what `window_bytes` says.
    """

    __slots__ = ("first", "n", "_records", "wire", "left", "left_n", "holder", "sent", "size")

    def __init__(self, first: int, n: int, records: list[Any] | None, sent: int, size: int,
                 wire: list[bytes] | None = None) -> None:
        self.first = first
        self.n = n
        self.size = size  # bytes on the wire: the window bounds these too
        self._records = records
        self.wire = wire
        #: once some ids were acknowledged alone: per record, 1 while unacknowledged (a byte a
        #: record, so a window of partly acknowledged frames, as a filter leaves them, stays
        #: small); None: all of them
        self.left: bytearray | None = None
        self.left_n = 0  # how many are still unacknowledged, with `left`
        #: the replica that last said it took these records (None: nobody yet)
        self.holder: str | None = None
        self.sent = sent  # the source's send counter when it was (re)sent

    @property
    def records(self) -> list[Any]:
        if self._records is not None:
            return self._records
        return [r for w in self.wire or () for r in codec.id_frame_records(w)]


class Unacked(MutableMapping):
    """What a source has sent and not had acknowledged, kept per frame.

    A frame is acknowledged as a whole in the common case (one dict operation per frame, not
    per record: this is what makes exactly-once cheap enough to be the default). It also
    remembers who holds each frame (`took` reports), so that when a replica dies the source
    resends only what that replica held: under continuous churn a death costs its share of the
    window, not the whole window. As a mapping it is id → record, for the rare paths (acks of
    single ids) and for tests.
    """

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.frames: dict[int, Frame] = {}  # first id → frame, in ascending order of ids
        self.count = 0  # records unacknowledged
        self.nbytes = 0  # their frames' bytes on the wire
        self.sent = 0  # frames sent (and resent): the order of sends, for `took`
        #: first-hop receivers → the latest send they took (per pipe, frames arrive in order)
        self.taken: dict[str, int] = {}
        #: frames nobody had taken when a receiver died (by first id), each with its send
        #: counter then and the receivers alive at the latest death
        self.suspects: dict[int, tuple[Frame, int, frozenset[str]]] = {}

    # -- the hot path --------------------------------------------------------------------------
    def add(self, first: int, records: list[Any], size: int = 0,
            wire: list[bytes] | None = None) -> Frame:
        """`records` were sent with ids first, first+stride, …; given the frames they went as
        (`wire`), the frame keeps those instead of the records."""
        f = Frame(first, len(records), None if wire else records, self.sent, size, wire)
        self.sent += 1
        self.frames[first] = f
        self.count += f.n
        self.nbytes += size
        return f

    def _drop(self, f: Frame) -> None:
        del self.frames[f.first]
        self.nbytes -= f.size

    def ack_range(self, start: int, n: int) -> None:
        f = self.frames.get(start)
        if f is not None and f.n == n and f.left is None:
            self._drop(f)
            self.count -= n
            return
        self.ack_ids(range(start, start + n * self.stride, self.stride))

    # -- the rest ------------------------------------------------------------------------------
    def _frame_of(self, firsts: list[int], i: int) -> Frame | None:
        j = bisect.bisect_right(firsts, i) - 1
        if j < 0:
            return None
        f = self.frames.get(firsts[j])
        if f is None or (i - f.first) % self.stride or (i - f.first) // self.stride >= f.n:
            return None
        return f

    def _overlapping(self, ids: Any) -> list[Frame]:
        """The frames holding any of `ids`. A contiguous range costs one bisect and a walk over
        the frames it spans, not a lookup per id: a `took` report usually arrives after the
        sink's ack already dropped its frame (the two travel different paths), and then this
        finds nothing at once."""
        if not isinstance(ids, range) or ids.step != self.stride:
            firsts = list(self.frames)
            return [g for g in (self._frame_of(firsts, i) for i in ids) if g is not None]
        if not ids:
            return []
        firsts = list(self.frames)
        j = max(0, bisect.bisect_right(firsts, ids.start) - 1)
        last = ids[-1]
        out = []
        while j < len(firsts) and firsts[j] <= last:
            g = self.frames[firsts[j]]
            j += 1
            if (g.first - ids.start) % self.stride:
                continue  # another source replica's ids
            if g.first + (g.n - 1) * self.stride >= ids.start:
                out.append(g)
        return out

    def _ids(self, f: Frame) -> Any:
        return range(f.first, f.first + f.n * self.stride, self.stride)

    def ack_ids(self, ids: Any) -> None:
        firsts = list(self.frames)
        for i in ids:
            f = self._frame_of(firsts, i)
            if f is None:
                continue
            k = (i - f.first) // self.stride
            if f.left is None:
                f.left = bytearray(b"\x01") * f.n
                f.left_n = f.n
            if f.left[k]:
                f.left[k] = 0
                f.left_n -= 1
                self.count -= 1
                if not f.left_n:
                    self._drop(f)

    def pending(self, f: Frame) -> tuple[list[int], list[Any]]:
        """The ids and records of `f` still unacknowledged."""
        ids = list(self._ids(f))
        if f.left is None:
            return ids, f.records
        left = f.left
        keep = [k for k in range(f.n) if left[k]]
        recs = f.records  # decoded once: a kept frame decodes at every read
        return [ids[k] for k in keep], [recs[k] for k in keep]

    def low(self) -> int | None:
        """The lowest unacknowledged id (None: everything is acknowledged)."""
        for f in self.frames.values():
            return f.first if f.left is None else f.first + f.left.index(1) * self.stride
        return None

    def took(self, ids: Any, by: str, first_hop: bool) -> None:
        """`by` took these ids (a whole frame, usually): it holds them now."""
        f = self.frames.get(ids[0]) if ids else None
        if f is None or len(ids) != f.n:
            for g in self._overlapping(ids):
                g.holder = by
            if f is None:
                return
        f.holder = by
        if first_hop and f.sent > self.taken.get(by, -1):
            self.taken[by] = f.sent

    def died(self, dead: str, live: list[str]) -> list[Frame]:
        """`dead` died: the frames it held, to resend now. Frames nobody had taken may sit in
        its pipe, or in a live receiver's: they become suspects (see `cleared`)."""
        self.taken.pop(dead, None)
        now = [f for f in self.frames.values() if f.holder == dead]
        others = frozenset(live) - {dead}
        for f in self.frames.values():
            if f.holder is None:  # a later death narrows whom it waits for: still sound
                self.suspects[f.first] = (f, f.sent, others)
        return now

    def cleared(self) -> list[Frame]:
        """Suspects now known to have been in a dead pipe: every receiver alive at the death
        has taken something sent after them, and a pipe delivers in order."""
        out = []
        for first, (f, sent, live) in list(self.suspects.items()):
            if self.frames.get(first) is not f or f.holder is not None or f.sent != sent:
                del self.suspects[first]  # acknowledged, taken, or resent since
            elif all(self.taken.get(r, -1) > sent for r in live):
                del self.suspects[first]
                out.append(f)
        return out

    def all_suspects(self) -> list[Frame]:
        """Every suspect still unacknowledged and untaken (the stream is ending and nothing
        moves: no live receiver will take a later frame to clear them)."""
        out = [f for first, (f, sent, _) in self.suspects.items()
               if self.frames.get(first) is f and f.holder is None and f.sent == sent]
        self.suspects.clear()
        return out

    def resent(self, f: Frame) -> None:
        f.holder = None
        f.sent = self.sent
        self.sent += 1

    # -- the mapping (id → record) -------------------------------------------------------------
    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        for f in list(self.frames.values()):
            yield from (self.pending(f)[0] if f.left is not None else self._ids(f))

    def __getitem__(self, i: int) -> Any:
        f = self._frame_of(list(self.frames), i)
        if f is None or (f.left is not None and not f.left[(i - f.first) // self.stride]):
            raise KeyError(i)
        return f.records[(i - f.first) // self.stride]

    def __setitem__(self, i: int, record: Any) -> None:
        if i in self:
            del self[i]
        self.add(i, [record])
        self.frames = dict(sorted(self.frames.items()))

    def __delitem__(self, i: int) -> None:
        if i not in self:
            raise KeyError(i)
        self.ack_ids([i])

    def clear(self) -> None:
        self.frames.clear()
        self.count = self.nbytes = 0
        self.suspects.clear()


def acknowledge(unacked: Unacked, stride: int, msg: dict[str, Any]) -> None:
    """A source forgets what was acknowledged: `r` = [start, n] for a contiguous range of ids
    (start, start+stride, …), `rs` a list of such ranges, or `ids` listed one by one."""
    if "rs" in msg:
        for start, n in msg["rs"]:
            unacked.ack_range(start, n)
    elif "r" in msg:
        start, n = msg["r"]
        unacked.ack_range(start, n)
    else:
        unacked.ack_ids(msg["ids"])


def ids_applier(node: Node, fn: Any, apply: Any, generator: bool, tolerant: bool) -> Any:
    """The stream runner's `apply` for frames that carry ids (see runners.run_stream).

    A transform that yields any number of records per record (a generator) keeps the ids of
    what it was given: the records it yields for one id travel together as a *group*, and
    every node after it passes groups on (a group of records per id), so the sink still drops
    a duplicate id as a whole and acknowledges what its source numbered.
    """
    outs = node.outboxes
    sink = not outs
    seen = node.seen
    send = node.control.send
    ack_rs = node.control.ack_rs

    def call(r: Any) -> list[Any]:
        """One record in, what the transform makes of it out (a list: none, one or more)."""
        if generator:
            return list(fn(r))
        out = fn(r)
        return [] if out is None else [out]

    def run_all(ids: Any, recs: list[Any], each: Any) -> list[Any]:
        """`each` over the records; an error resumes after the failing record (tolerant), or
        fails the replica naming the record's id (zflow counts attempts: a record that keeps
        failing is dead-lettered, see exits.py)."""
        produced: list[Any] = []
        it = iter(recs)
        while True:
            try:
                produced.extend(map(each, it))
                return produced
            except (Stop, KeyboardInterrupt, SystemExit, NodeFailure):
                raise
            except Exception as e:  # noqa: BLE001 - the user's function failed on a record
                if not tolerant:
                    raise NodeFailure("run", f"{type(e).__name__}: {e}",
                                      traceback=traceback.format_exc(),
                                      id=ids[len(produced)]) from None
                record_error(node, recs[len(produced)], e)
                produced.append(None)

    def apply_ids(ids: Any, recs: list[Any], grouped: bool = False) -> int:
        """exactly-once: sinks drop duplicates and acknowledge; transforms keep the ids and
        acknowledge what they drop (None results, empty groups and skipped errors). Returns
        the number of records taken in (a sink counts each id once).

        `ids` is a range when the frame is a fresh contiguous run (the common case): a sink
        then checks and records the frame at once and acknowledges it as one range.
        """
        if sink:
            if isinstance(ids, range) and seen.add_range(ids.start, len(ids)):
                new = recs
                ack_rs.append([ids.start, len(ids)])  # sent by Control.report_ranges
            else:
                new = [r for i, r in zip(ids, recs, strict=True) if seen.add(i)]
                send(P.ACK, ids=list(ids))
            if grouped:
                new = [x for g in new for x in g]
            if new:
                apply(new)
            return len(new)
        if grouped:  # a group in, a group out: what each of its records makes
            produced = run_all(ids, recs, lambda g: [y for x in g for y in call(x)] or None)
        elif generator:
            produced = run_all(ids, recs, lambda r: call(r) or None)
        else:
            produced = run_all(ids, recs, fn)
        out_grouped = grouped or generator
        taken = sum(map(len, recs)) if grouped else len(recs)
        # a frame out per frame in: the source's frames stay whole, so acknowledging one is
        # one step, and a frame that fails downstream takes no other frame's records with it
        if produced.count(None) == 0:
            for ob in outs:
                ob.extend_ids(ids, produced, out_grouped)  # type: ignore[attr-defined]
                ob.flush()
            return taken
        keep = [(i, o) for i, o in zip(ids, produced, strict=True) if o is not None]
        if keep:
            for ob in outs:
                ob.extend_ids([i for i, _ in keep], [o for _, o in keep],  # type: ignore
                              out_grouped)
                ob.flush()
        send(P.ACK, ids=[i for i, o in zip(ids, produced, strict=True) if o is None])
        return taken

    return apply_ids


#: an exhausted source whose acks stopped resends what may sit in a dead replica's pipe after
#: this long, not after the whole lease: at the end of a stream no live receiver takes a later
#: frame that would prove where it was
SUSPECT_WAIT = 0.5


def run_source(node: Node, iterable: Any) -> None:
    """exactly-once source: ids, a credit window, and resending what is not acknowledged.

    An id is `seq * sources + index`, so every source replica numbers its own records and a
    restarted source that replays its input produces the same ids (the sink drops them).
    A replica's death resends what it held (`resend {dead}`); nothing acknowledged for a lease,
    or a plain `resend`, resends everything unacknowledged.
    Returns once every record is acknowledged, or when told to stop; the caller ends the stream.
    """
    ctl = node.control
    spec = node.spec
    if hasattr(iterable, "__len__"):
        ctl.send(P.TOTAL, n=len(iterable))
        fair_batches(node, len(iterable))
    outs: list[codec.IdOutbox] = node.outboxes  # type: ignore[assignment]
    stride = spec.sources
    index = spec.source_index
    window = spec.window
    lease = spec.lease
    cap = max([o.batch for o in outs] + [1])
    step = cap if hasattr(iterable, "__len__") else 1  # what is in memory is never slow
    clock = time.perf_counter
    unacked: Unacked = node.unacked
    it = iter(iterable)
    seq = 0
    last_progress = time.monotonic()
    next_low = last_progress + 0.25
    exhausted = False

    def resend(frames: Any) -> None:
        for f in frames:
            ids, recs = unacked.pending(f)
            unacked.resent(f)
            for o in outs:
                o.extend_ids(ids, recs)
                o.flush()

    window_bytes = spec.window_bytes
    keeper = outs[0] if outs and isinstance(outs[0], codec.IdOutbox) else None
    while True:
        if ctl.stop_requested:
            if not ctl.interrupted or ctl.abandon or not unacked.count:
                break
            exhausted = True  # interrupted: nothing new, but what is in flight still counts
        room = window - unacked.count
        if not exhausted and room > 0 and unacked.nbytes < window_bytes:
            # adaptive chunks, as best-effort's source (runners.run_source): a slow source
            # sends each record as it comes instead of holding it for a full frame
            t0 = clock()
            chunk = list(islice(it, min(step, room)))
            took = clock() - t0
            if took < 0.0002 and step < cap:
                step = min(cap, step * 2)
            elif took > 0.001 and step > 1:
                step //= 2
            if chunk:
                first = seq * stride + index
                seq += len(chunk)
                ids = range(first, first + len(chunk) * stride, stride)
                kept: list[bytes] = []
                if keeper is not None:
                    keeper.kept = kept
                for o in outs:
                    o.extend_ids(ids, chunk)
                    o.flush()
                if keeper is not None:
                    keeper.kept = None
                unacked.add(first, chunk, sum(map(len, kept)), kept)
            else:
                exhausted = True
        if exhausted and not unacked.count:
            break
        before = unacked.count
        if exhausted or unacked.count >= window or unacked.nbytes >= window_bytes:
            if ctl.ctrl.poll(50, zmq.POLLIN):
                ctl.drain()
        else:
            ctl.drain()
        ctl.probe_tick()
        now = time.monotonic()
        if unacked.count != before:
            last_progress = now
        elif unacked.count and now - last_progress > lease:
            ctl.resend = True  # nothing acknowledged for a lease: assume it was lost
        if now >= next_low:  # tell the sink what it may forget
            next_low = now + 0.25
            low = unacked.low()
            ctl.send(P.LOW, id=seq * stride + index if low is None else low)
        if ctl.resend and unacked.count:
            ctl.resend = False
            ctl.deaths.clear()
            unacked.suspects.clear()
            last_progress = now
            resend(list(unacked.frames.values()))
        elif ctl.deaths:
            for dead, live in ctl.deaths:
                resend(unacked.died(dead, live))
            ctl.deaths.clear()
        if unacked.suspects:
            resend(unacked.cleared())
            if exhausted and now - last_progress > SUSPECT_WAIT:
                last_progress = now
                resend(unacked.all_suspects())
        ctl.tick()
