"""`on_error`: what happens to a record (or a frame) that cannot be processed.

fail stops the replica (phase "run"); skip counts it; dead-letter counts it and appends it, with
the error, as a JSON line to the node's dead-letter file. A frame that cannot be decoded is never
fatal, whatever the policy: it may come from anyone who can reach the socket, and failing would
restart the node and lose what it holds. It is counted (and dead-lettered with `dead-letter`), and
the run ends incomplete.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import TYPE_CHECKING, Any

from zflow.runtime.replica.errors import DecodeError, NodeFailure

if TYPE_CHECKING:
    from zflow.runtime.replica.core import Node
    from zflow.runtime.replica.sockets import Inbox


def undecodable(node: Node, box: Inbox, frame: bytes, exc: Exception,
                records: int = 1) -> None:
    """A frame that cannot be decoded: counted (as the records it held, where its ids say),
    dead-lettered if asked, never fatal."""
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    err = DecodeError(f"cannot decode a {len(frame)}-byte frame on socket {box.name!r} "
                      f"({box.codec}): {why}")
    node.errors += records
    if node.spec.on_error == "dead-letter":
        _dead_letter(node, frame[:4096], err)
    if node.errors - records < 3:  # said, but a flood of garbage does not flood the output
        print(f"zflow: {err}; skipped", file=sys.stderr, flush=True)


def record_error(node: Node, record: Any, exc: BaseException) -> None:
    """on_error: fail re-raises; skip counts; dead-letter counts and appends a JSON line."""
    spec = node.spec
    policy = spec.on_error
    if policy == "fail":
        raise exc
    node.errors += 1
    if policy == "dead-letter":
        _dead_letter(node, record, exc)


def _dead_letter(node: Node, record: Any, exc: BaseException) -> None:
    spec = node.spec
    write_dead_letter(spec.dead_letter, {
        "node": spec.node, "replica": spec.replica, "record": record,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)[-3:]),
    })


def write_dead_letter(path: str, line: dict[str, Any]) -> None:
    """Append one JSON line; a record JSON cannot carry is written as its repr()."""
    if not path:
        return
    rec = line.get("record")
    if not isinstance(rec, (str, int, float, list, dict, bool)):
        line = {**line, "record": repr(rec)}
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=repr) + "\n")
    except OSError as e:
        raise NodeFailure("run", f"cannot write dead letter to {path}: {e.strerror}") from None
