"""The status model as a file: what `zflow ps NAME` and `zflow top NAME` draw a detached run from.

`dump` keeps what the renderers read (replica states and counters, per-socket rates, results,
the last output lines); `restore` builds a `StatusModel` frozen at that moment, so the same
renderers as the live screen draw it (rates are the smoothed rates as they were, not decayed).
"""

from __future__ import annotations

from typing import Any

from zflow.status.model import EdgeInfo, Ewma, LogLine, NodeInfo, Replica, StatusModel, jsonable

#: output lines kept in the file (the live screen shows the last 5)
LOG_TAIL = 20


def dump(model: StatusModel) -> dict[str, Any]:
    """A JSON-serialisable picture of the model, enough for `restore`."""
    now = model.clock()
    reps: dict[str, list[dict[str, Any]]] = {}
    for node, rs in model.replicas.items():
        reps[node] = [{
            "state": r.state, "detail": r.detail, "sockets": {s: list(v) for s, v in
                                                              r.sockets.items()},
            "rates": {f"{s}\t{d}": round(e.value(now), 3) for (s, d), e in r.rates.items()},
            "errors": r.errors, "pid": r.pid, "cpu": r.cpu, "rss": r.rss,
            "cpu_s": r.cpu_s, "max_rss": r.max_rss,
            "exit_code": r.exit_code, "exited": r.exited, "restarts": r.restarts,
        } for r in rs]
    return {
        "topology": model.topology,
        "overall": model.overall,
        "duration": model.duration,
        "finished": model.finished,
        "exit_code": model.exit_code,
        "message": model.message,
        "total": model.total,
        "total_node": model.total_node,
        "nodes": [[n.name, n.replicas, n.shape, n.kind] for n in model.nodes.values()],
        "edges": [[e.src, e.dst, e.control, e.src_type] for e in model.edges],
        "replicas": reps,
        "results": jsonable(model.results),
        "dead_letters": dict(model.dead_letters),
        "losses": dict(model.losses),
        "errors": list(model.errors[-20:]),
        "logs": [[x.t, x.node, x.replica, x.stream, x.line] for x in list(model.logs)[-LOG_TAIL:]],
    }


def restore(saved: dict[str, Any]) -> StatusModel:
    """A model that shows what `dump` saw, at that moment (its clock is stopped there)."""
    duration = float(saved.get("duration") or 0.0)
    clock = _Stopped()
    model = StatusModel(saved["topology"], [NodeInfo(*n) for n in saved["nodes"]],
                        [EdgeInfo(*e) for e in saved["edges"]], clock=clock)
    clock.t = duration
    model.overall = saved.get("overall", "starting")
    model.exit_code = saved.get("exit_code")
    model.message = saved.get("message")
    if saved.get("total") is not None or saved.get("total_node"):
        model.set_total(saved.get("total"), saved.get("total_node"))
    if saved.get("finished"):
        model.finished_at = duration
    for node, rs in saved.get("replicas", {}).items():
        model.replicas[node] = [_replica(node, i, r, duration) for i, r in enumerate(rs)]
    model.results = dict(saved.get("results") or {})
    model.dead_letters = dict(saved.get("dead_letters") or {})
    model.losses = dict(saved.get("losses") or model.losses)
    model.errors = list(saved.get("errors") or [])
    for t, node, replica, stream, line in saved.get("logs", []):
        model.logs.append(LogLine(t, node, replica, stream, line))
    return model


class _Stopped:
    """A clock that reads one moment."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _replica(node: str, index: int, r: dict[str, Any], now: float) -> Replica:
    rep = Replica(node, index, 0.0, state=r["state"], detail=r.get("detail"))
    rep.sockets = {s: tuple(v) for s, v in r.get("sockets", {}).items()}  # type: ignore[misc]
    for key, rate in r.get("rates", {}).items():
        sock, _, d = key.partition("\t")
        e = Ewma(0.0)
        e.rate, e.last_t = float(rate), now
        counts = rep.sockets.get(sock)
        e.last_n = 0 if counts is None else counts[0 if d == "in" else 1]
        rep.rates[(sock, d)] = e
    rep.errors, rep.pid, rep.cpu, rep.rss = r.get("errors", 0), r.get("pid"), r.get("cpu"), \
        r.get("rss")
    rep.exit_code, rep.exited, rep.restarts = r.get("exit_code"), bool(r.get("exited")), \
        r.get("restarts", 0)
    if isinstance(r.get("cpu_s"), (int, float)):  # a status saved before these has neither
        rep.cpu_done, rep.cpu_known = float(r["cpu_s"]), True
    rep.max_rss = r.get("max_rss")
    return rep
