"""Hand-written baselines, one module each; every module is also a command that runs one pipeline
as its own process tree and prints one JSON line (see `common.report`).

- `seed`    : the seed's design, one JSON message per record, no sleeps (readiness handshake).
- `mpqueue` : multiprocessing.Queue workers.
- `batched` : pyzmq with 1000 records per msgpack frame, one Python call per record in the worker.
- `batched_dict` : the same, doing topologies/squares.py's per-record work (a dict per answer, a
  Python call per answer in the sink too): the like-for-like limit for zflow's squares.
"""

VARIANTS = ("seed", "mpqueue", "batched", "batched_dict")
