#!/usr/bin/env python3
"""A command node that is not a zflow node: plain pyzmq, configured by ZFLOW_* variables.

Reads JSON records on `inbox`, upper-cases `word`, sends them on `outbox`. An empty message on
`inbox` marks the end of one sender's stream; after ZFLOW_SOCKET_INBOX_SENDERS of them it sends
an empty message downstream and exits 0.
"""

import json
import os

import zmq


def socket(ctx: zmq.Context, name: str) -> zmq.Socket:
    key = f"ZFLOW_SOCKET_{name.upper()}"
    s = ctx.socket(getattr(zmq, os.environ[f"{key}_TYPE"]))
    s.setsockopt(zmq.LINGER, int(os.environ[f"{key}_LINGER"]))
    for ep in os.environ[f"{key}_ENDPOINTS"].split():
        (s.bind if os.environ[f"{key}_MODE"] == "bind" else s.connect)(ep)
    return s


def main() -> None:
    me = os.environ["ZFLOW_REPLICA_ID"]
    ctx = zmq.Context()
    inbox, outbox = socket(ctx, "inbox"), socket(ctx, "outbox")
    ends = int(os.environ["ZFLOW_SOCKET_INBOX_SENDERS"])
    n = 0
    while ends:
        msg = inbox.recv()
        if not msg:
            ends -= 1
            continue
        rec = json.loads(msg)
        rec["word"] = rec["word"].upper()
        rec["by"] = me
        outbox.send(json.dumps(rec).encode())
        n += 1
    outbox.send(b"")
    print(f"{me}: upper-cased {n} words", flush=True)
    inbox.close()
    outbox.close()
    ctx.term()


if __name__ == "__main__":
    main()
