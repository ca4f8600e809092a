"""Frames on the data plane.

zflow-to-zflow sockets (codec `msgpack`) carry *batches*: one frame holds up to `batch` records, so
ZeroMQ and the codec are paid per frame, not per record (zeromq-facts.md: 1000 records per frame
moves ~8M rec/s here, one message per record ~0.12-0.7M). A frame is `topic + b"\\0" +
msgpack(list)`; the topic is empty except on PUB sockets with a `topic:` field, so SUB prefix
filters keep working. Frames starting with 0xFF (never valid UTF-8, so never a topic) are zflow's
own: readiness probes and end-of-stream markers on PUB/SUB. Sockets facing plain ZeroMQ programs
(codec `json` or `raw`) carry one record per message, and an empty message marks the end of one
sender's stream.

A batch of dicts with the same string keys in the same order (what most nodes send: squares'
workers send `{"worker", "result"}`) travels column-wise, as a msgpack map `{key: [values]}` in
place of the list of records; receivers rebuild the records before any node code sees them. The
sink of squares spent half its time unpacking 1000 small dicts a frame, each with its own key
strings: columns unpack and rebuild in ~0.75x the time (the sender pays about what the receiver
saves, but the sink is the one process a pipeline waits on), and frames are ~3.5x smaller.

Nothing received is ever unpickled: msgpack and json only build plain data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import msgpack
import zmq

ZF = b"\xff"
#: exactly-once frames: `IDS + msgpack([ids, records])`, or for ids first, first+stride, … (a
#: fresh run from one source, the common case) `IDR + msgpack([first, n, records])`
IDS = b"\x01"
IDR = b"\x02"
#: the same, where each record is a *group*: the list of records a generator transform made of
#: one record (ids stay those the source gave; see replica/exactly_once.ids_applier)
IDSG = b"\x03"
IDRG = b"\x04"
_packb = msgpack.packb
_unpackb = msgpack.unpackb
#: fewer records than this, or more keys, go row-wise: columns would not pay for the check
COLUMNS_MIN_RECORDS = 8
COLUMNS_MAX_KEYS = 32


def columns(recs: list[Any]) -> dict[str, Any] | None:
    """`recs` as `{key: [values]}` when every record is a dict with the same str keys, else None.

    The keys are checked as a set (a record with another key order still has exactly these
    keys): checking each record's order costs the sender twice what columns save the receiver.
    Records come back equal, their keys in the order of the frame's first record.
    """
    if len(recs) < COLUMNS_MIN_RECORDS:
        return None
    first = recs[0]
    if type(first) is not dict or not 0 < len(first) <= COLUMNS_MAX_KEYS:
        return None
    keys = tuple(first)
    if any(type(k) is not str for k in keys):  # msgpack maps carry str keys to zflow receivers
        return None
    n = len(recs)
    if [*map(type, recs)].count(dict) != n or [*map(len, recs)].count(len(keys)) != n:
        return None
    try:  # every record has len(keys) keys, so having all of them means having only them
        return {k: [*map(itemgetter(k), recs)] for k in keys}
    except KeyError:
        return None


_ROW_BUILDERS: dict[int, Callable[[tuple, list], list[dict]]] = {}


def _row_builder(n: int) -> Callable[[tuple, list], list[dict]]:
    """`lambda k, cols: [{k[0]: v0, k[1]: v1} for v0, v1 in zip(*cols)]` for n keys: a dict
    display is ~2x faster than dict(zip(keys, row)). The code depends on n alone, never on
    received data."""
    build = _ROW_BUILDERS.get(n)
    if build is None:
        names = ", ".join(f"v{i}" for i in range(n)) + ("," if n == 1 else "")
        display = ", ".join(f"k[{i}]: v{i}" for i in range(n))
        build = _ROW_BUILDERS[n] = eval(  # noqa: S307 - built from an int, see above
            f"lambda k, cols: [{{{display}}} for {names} in zip(*cols)]")
    return build


def rows(value: Any) -> Any:
    """The records of a decoded frame body: a list as it is, columns rebuilt into dicts.
    Anything else is returned for the caller to refuse."""
    if type(value) is not dict:
        return value
    cols = list(value.values())
    if not 0 < len(cols) <= COLUMNS_MAX_KEYS or any(type(c) is not list for c in cols) or len(
            set(map(len, cols))) != 1:
        raise ValueError("columns of a zflow frame that are not lists of one length")
    return _row_builder(len(cols))(tuple(value), cols)


def pack_records(recs: list[Any]) -> bytes:
    """A list of records as a frame body: column-wise where `columns` allows, else row-wise."""
    return _pack(columns(recs) or recs)


def control_frame(kind: str, sender: str) -> bytes:
    return ZF + _packb({kind: sender})


def parse_control_frame(frame: bytes) -> dict[str, Any] | None:
    """zflow's probe or end marker, or None: a raw record may start with 0xFF too (a JPEG)."""
    if frame[:1] != ZF:
        return None
    try:
        value = _unpackb(frame[1:])
    except Exception:  # noqa: BLE001 - not ours: it is data
        return None
    if isinstance(value, dict) and len(value) == 1 and ("eos" in value or "probe" in value):
        return value
    return None


class Outbox:
    """Buffers records for one sending socket and sends them as frames.

    Counting happens per frame: `msgs`/`nbytes` are read by telemetry, never locked.
    """

    __slots__ = ("sock", "codec", "batch", "topic", "pending", "msgs", "nbytes", "_send", "name",
                 "blocked", "stride", "marker")

    def __init__(self, name: str, sock: Any, codec: str, batch: int, topic: str | None) -> None:
        self.name = name
        self.sock = sock
        self.codec = codec
        self.batch = batch if codec == "msgpack" else 1
        self.topic = topic
        self.pending: list[Any] = []
        self.msgs = 0
        self.nbytes = 0
        self._send = self._send_frame
        #: called when a send has waited SNDTIMEO for a full pipe; it may raise to give up
        self.blocked: Callable[[], None] | None = None
        self.stride = 1  # exactly-once: ids of one source are `stride` apart
        #: json/raw: the end marker a record must not be (None: any record may be sent)
        self.marker: bytes | None = b""

    def _send_frame(self, frame: bytes) -> None:
        """Send, and while the pipe is full (slow or dead receivers) let the node hear zflow."""
        send = self.sock.send
        while True:
            try:
                send(frame)
                return
            except zmq.Again:
                if self.blocked is not None:
                    self.blocked()

    def add(self, record: Any) -> None:
        self.pending.append(record)
        if len(self.pending) >= self.batch:
            self.flush()

    def extend(self, records: list[Any]) -> None:
        self.pending.extend(records)
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = []
        send = self._send
        if self.codec == "msgpack":
            if self.topic is None:
                b = self.batch
                for i in range(0, len(pending), b):
                    chunk = pending[i : i + b]
                    frame = b"\0" + pack_records(chunk)
                    send(frame)
                    self.msgs += len(chunk)
                    self.nbytes += len(frame)
            else:
                self._flush_topics(pending)
            return
        encode = encode_one(self.codec)
        for rec in pending:
            frame = encode(rec)
            if frame == self.marker:
                continue  # it would read as end of stream: not sent, not counted
            send(frame)
            self.msgs += 1
            self.nbytes += len(frame)

    def _flush_topics(self, pending: list[Any]) -> None:
        key = self.topic
        groups: dict[str, list[Any]] = {}
        for rec in pending:
            topic = rec.get(key, "") if isinstance(rec, dict) else ""
            groups.setdefault(str(topic), []).append(rec)
        for topic, recs in groups.items():
            frame = topic.encode() + b"\0" + pack_records(recs)
            self._send(frame)
            self.msgs += len(recs)
            self.nbytes += len(frame)

    def end_marker(self, sender: str, zf: bool, word: bytes = b"") -> None:
        """Tell receivers this sender's stream ended: a zflow frame for zflow subscribers, the
        socket's end marker (an empty message unless the topology says) for plain programs."""
        self.flush()
        self._send(control_frame("eos", sender) if zf else word)


class IdOutbox(Outbox):
    """exactly-once: every record travels with its id, so the sink can acknowledge and dedupe.

    Ids usually come as a `range` (a fresh frame from a source, passed on 1:1 by transforms):
    it is kept as one, so a frame costs no per-record work for its ids.
    """

    __slots__ = ("ids", "run", "grouped", "kept")

    def __init__(self, name: str, sock: Any, codec: str, batch: int, topic: str | None) -> None:
        super().__init__(name, sock, codec, batch, topic)
        self.ids: list[int] = []
        self.run: range | None = None  # the pending ids, while they are one range
        self.grouped = False  # the pending records are groups
        #: a source keeps what it sends until acknowledged: the frames, not the records (see
        #: exactly_once.Frame); None: not kept
        self.kept: list[bytes] | None = None

    def extend_ids(self, ids: Any, records: list[Any], grouped: bool = False) -> None:
        if grouped != self.grouped:
            self.flush()
            self.grouped = grouped
        if not self.pending and isinstance(ids, range) and ids.step == self.stride:
            self.run = ids
        else:
            if self.run is not None:
                self.ids, self.run = list(self.run), None
            self.ids.extend(ids)
        self.pending.extend(records)
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        pending, ids, run = self.pending, self.ids, self.run
        if not pending:
            return
        self.pending, self.ids, self.run = [], [], None
        b = self.batch
        stride = self.stride
        ranged, listed = (IDRG, IDSG) if self.grouped else (IDR, IDS)
        for i in range(0, len(pending), b):
            chunk = pending[i : i + b]
            body: Any = chunk if self.grouped else columns(chunk) or chunk
            if run is not None:
                r = run[i : i + b]
                frame = ranged + _pack([r.start, len(r), body])
            else:
                cids = ids[i : i + b]
                first, n = cids[0], len(cids)
                if cids[-1] == first + (n - 1) * stride and cids == list(
                        range(first, first + n * stride, stride)):
                    frame = ranged + _pack([first, n, body])
                else:
                    frame = listed + _pack([cids, body])
            self._send(frame)
            if self.kept is not None:
                self.kept.append(frame)
            self.msgs += sum(map(len, chunk)) if self.grouped else len(chunk)
            self.nbytes += len(frame)


def id_frame_records(frame: bytes) -> list[Any]:
    """The records of an ungrouped exactly-once frame this process encoded (IDR or IDS)."""
    head = _unpackb(frame[1:])
    return rows(head[2] if frame[:1] == IDR else head[1])


class EncodeError(Exception):
    """A record that the socket's codec cannot carry (said plainly, not as a traceback)."""


def _pack(obj: Any) -> bytes:
    try:
        return _packb(obj)
    except (OverflowError, TypeError, ValueError) as e:
        raise EncodeError(
            f"a record cannot be sent with msgpack ({e}); records are dicts, lists, str, "
            "bytes, float, bool, None and ints within 64 bits") from None


def encode_one(codec: str) -> Callable[[Any], bytes]:
    if codec == "json":
        return lambda rec: json.dumps(rec, separators=(",", ":")).encode()
    if codec == "raw":
        return _raw
    return _packb


def _raw(rec: Any) -> bytes:
    """`codec: raw` carries bytes, or text as UTF-8; anything else is a mistake to say plainly
    (it used to send `repr()` of a dict)."""
    if isinstance(rec, bytes):
        return rec
    if isinstance(rec, str):
        return rec.encode()
    if isinstance(rec, (bytearray, memoryview)):
        return bytes(rec)
    raise EncodeError(f"a {type(rec).__name__} record cannot be sent on a `codec: raw` socket: "
                      "raw sockets carry bytes or str (use codec: json or msgpack for "
                      "structured records)")


def decode_one(codec: str) -> Callable[[bytes], Any]:
    if codec == "json":
        return json.loads
    if codec == "raw":
        return bytes
    return _unpackb


def frame_ids(frame: bytes, stride: int) -> range | list[int] | None:
    """The ids of an exactly-once frame whose records cannot be decoded (None: not even its
    ids), so that they can be acknowledged as skipped instead of resent to fail again."""
    try:
        u = msgpack.Unpacker()
        u.feed(frame[1:])
        if u.read_array_header() not in (2, 3):
            return None
        head = u.unpack()
        if frame[:1] in (IDR, IDRG):
            n = u.unpack()
            if type(head) is int and type(n) is int and 0 <= n <= 1 << 20:
                return range(head, head + n * stride, stride)
        elif isinstance(head, list) and all(type(i) is int for i in head):
            return head
    except Exception:  # noqa: BLE001 - not even the ids: nothing to acknowledge
        return None
    return None


def decode_batch(frame: bytes) -> list[Any]:
    """A msgpack data frame's records (topic stripped, columns rebuilt)."""
    if frame[:1] == b"\0":
        return rows(_unpackb(frame[1:]))
    i = frame.find(b"\0")
    if i < 0:
        raise ValueError("not a zflow msgpack frame (no topic separator)")
    return rows(_unpackb(frame[i + 1 :]))
