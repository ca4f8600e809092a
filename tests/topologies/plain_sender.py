"""An ordinary pyzmq program, no zflow import: PUSH N JSON numbers, then exit 0 without any
end marker (as most programs written before zflow do). Optionally sends empty messages as data."""

import json
import os
import sys

import zmq

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ctx = zmq.Context()
out = ctx.socket(zmq.PUSH)
for ep in os.environ["ZFLOW_SOCKET_OUT_ENDPOINTS"].split():
    out.connect(ep)
for i in range(n):
    out.send(json.dumps(i).encode())
out.close(linger=-1)  # deliver everything, then exit
ctx.term()
