"""The ZeroMQ Guide's task ventilator, as written there (no zflow import): it binds, waits for
Enter ("Press Enter when the workers are ready"), sends its tasks (1000; the Guide's 100) and
exits."""

import json
import os

import zmq

ctx = zmq.Context()
sender = ctx.socket(zmq.PUSH)
sender.bind(os.environ["ZFLOW_SOCKET_OUT_ENDPOINTS"])
input("Press Enter when the workers are ready: ")
print("Sending tasks to workers...", flush=True)
for task in range(1000):
    sender.send(json.dumps(task).encode())
sender.close(linger=-1)
ctx.term()
