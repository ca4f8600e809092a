"""An ordinary pyzmq REP server, no zflow import: answers forever (it never ends by itself)."""

import json
import os

import zmq

ctx = zmq.Context()
rep = ctx.socket(zmq.REP)
rep.bind(os.environ["ZFLOW_SOCKET_API_ENDPOINTS"])
while True:
    request = json.loads(rep.recv())
    rep.send(json.dumps({"n": request["n"], "square": request["n"] ** 2}).encode())
