"""Hand-written baselines, one module each; every module is also a command that runs one pipeline
as its own process tree and prints one JSON line (see `common.report`).

- `seed`    : the seed's design, one JSON message per record, no sleeps (readiness handshake).
- `mpqueue` : multiprocessing.Queue workers.
- `batched` : pyzmq with 1000 records per msgpack frame, one Python call per record in the worker.
"""

VARIANTS = ("seed", "mpqueue", "batched")
