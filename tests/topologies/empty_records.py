"""The ZeroMQ Guide's style of worker output: some results are empty messages, which are data
here (`end_marker: null`). Plain pyzmq, no zflow import: sends 101 messages, 50 of them empty."""

import os

import zmq

ctx = zmq.Context()
out = ctx.socket(zmq.PUSH)
for ep in os.environ["ZFLOW_SOCKET_OUT_ENDPOINTS"].split():
    out.connect(ep)
for i in range(101):
    out.send(b"" if i % 2 else str(i).encode())
out.close(linger=-1)
ctx.term()
