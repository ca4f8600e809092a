"""`on_error`: what happens to a record (or a frame) that cannot be processed.

fail stops the replica (phase "run", or "decode" for a frame); skip counts it; dead-letter counts
it and appends it, with the error, as a JSON line to the node's dead-letter file.
"""

from __future__ import annotations

import json
import traceback
from typing import TYPE_CHECKING, Any

from zflow.runtime.replica.errors import DecodeError, NodeFailure

if TYPE_CHECKING:
    from zflow.runtime.replica.core import Node
    from zflow.runtime.replica.sockets import Inbox


def undecodable(node: Node, box: Inbox, frame: bytes, exc: Exception) -> None:
    """A frame that cannot be decoded: handled per on_error, like a record that fails."""
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    err = DecodeError(f"cannot decode a {len(frame)}-byte frame on socket {box.name!r} "
                      f"({box.codec}): {why}")
    if node.spec.on_error == "fail":
        raise NodeFailure("decode", str(err), socket=box.name) from None
    record_error(node, frame, err)


def record_error(node: Node, record: Any, exc: BaseException) -> None:
    """on_error: fail re-raises; skip counts; dead-letter counts and appends a JSON line."""
    spec = node.spec
    policy = spec.on_error
    if policy == "fail":
        raise exc
    node.errors += 1
    if policy == "dead-letter" and spec.dead_letter:
        line = {
            "node": spec.node, "replica": spec.replica,
            "record": record if isinstance(record, (str, int, float, list, dict, bool))
            else repr(record),
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)[-3:]),
        }
        try:
            with open(spec.dead_letter, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, default=repr) + "\n")
        except OSError as e:
            raise NodeFailure("run", f"cannot write dead letter to {spec.dead_letter}: "
                                     f"{e.strerror}") from None
