"""Node code for rpc.yaml and broker.yaml."""

from __future__ import annotations

import zflow


def handle(request: dict) -> dict:
    """Service: one reply per request; zflow does the socket work."""
    return {"n": request["n"], "square": request["n"] ** 2, "server": zflow.context().replica}


def client(ctx: zflow.NodeContext) -> dict:
    """Custom node: it owns its REQ loop; ctx.request() encodes with the socket's codec."""
    servers: set[int] = set()
    total = 0
    requests = int(ctx.params.get("requests", 100))
    for n in range(requests):
        reply = ctx.request("api", {"n": n})
        assert reply["square"] == n * n, reply
        total += reply["square"]
        servers.add(reply["server"])
    print(f"{ctx.name}: {requests} replies from {len(servers)} servers, sum {total}")
    return {"replies": requests, "servers": len(servers), "sum": total}


def broker(ctx: zflow.NodeContext) -> None:
    """Custom node: shuttle frames between clients and servers until zflow says stop."""
    ctx.proxy("frontend", "backend")
