"""`zflow up --metrics [HOST:]PORT`: Prometheus exposition of the status model, and probes.

    /metrics   the text exposition format (prometheus_client), every counter of the status model
    /healthz   200 while the supervisor's loop is alive (it refreshed within HEALTH_STALE s)
    /ready     200 while the run is running (the barrier has opened, no stop begun), else 503

The HTTP server runs in a thread, but never reads the model, which the supervisor's thread
writes without locks: at each refresh (at most every SNAPSHOT_EVERY s) the supervisor takes a
snapshot, and a scrape reads the latest one. `prometheus_client` is the optional extra
`metrics`, imported only when the flag is given.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from zflow.runtime.states import STATES
from zflow.status.model import OVERALL_STATES

INSTALL_HINT = "pip install 'zflow[metrics]'  (or: pip install prometheus_client)"
#: seconds without a refresh after which /healthz says the supervisor is not alive
HEALTH_STALE = 5.0
SNAPSHOT_EVERY = 0.5


class MetricsError(Exception):
    """The endpoint cannot be served (the extra is missing, the address cannot be bound)."""


def require() -> None:
    """Fail early and clearly when the `metrics` extra is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsError(f"--metrics needs prometheus_client, which is not installed\n"
                           f"  hint: {INSTALL_HINT}") from None


def parse_address(text: str) -> tuple[str, int]:
    """`9100`, `:9100`, `0.0.0.0:9100`, `[::1]:9100` → (host, port); loopback by default."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not [HOST:]PORT (a port 0-65535; 0 picks a free one)")
    return host, int(port)


class MetricsServer:
    """Binds at once (so `up` fails before anything starts if it cannot), serves once attached."""

    def __init__(self, address: str) -> None:
        require()
        host, port = parse_address(address)
        server_cls = _server_class(host)
        try:
            self.httpd = server_cls((host, port), _Handler)
        except OSError as e:
            raise MetricsError(f"--metrics {address}: cannot listen on {host}:{port}: "
                               f"{e.strerror or e}\n  hint: choose another port (0 picks a free "
                               "one)") from None
        self.httpd.daemon_threads = True
        self.httpd.metrics = self  # type: ignore[attr-defined]
        bound_host, bound_port = self.httpd.server_address[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self.url = f"http://{shown}:{bound_port}/metrics"
        self.port = int(bound_port)
        self.snap: dict[str, Any] | None = None
        self.beat = time.monotonic()
        self._thread: threading.Thread | None = None
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # -- a view, driven by the supervisor --------------------------------------------------------
    def attach(self, model: Any) -> MetricsServer:
        self.model = model
        self._take()
        return self

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="zflow-metrics",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self.beat >= SNAPSHOT_EVERY:
            self._take()

    def event(self, kind: str, **fields: Any) -> None:
        if kind == "overall":  # /ready follows the run's phase at once
            self._take()

    def log(self, node: str, replica: int, stream: str, line: str) -> None:
        pass

    def close(self) -> None:
        self._take()
        if self._thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()

    def _take(self) -> None:
        self.beat = time.monotonic()
        self.snap = self.model.snapshot(logs=False)

    # -- what the handler asks ---------------------------------------------------------------
    def healthy(self) -> bool:
        return time.monotonic() - self.beat < HEALTH_STALE

    def ready(self) -> tuple[bool, str]:
        snap = self.snap or {}
        state = str(snap.get("overall", "starting"))
        return state == "running", state


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    if ":" not in host:
        return ThreadingHTTPServer
    import socket

    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return V6


class _Handler(BaseHTTPRequestHandler):
    server_version = "zflow"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        m: MetricsServer = self.server.metrics  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._reply(200, generate_latest(m.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok = m.healthy()
            self._reply(200 if ok else 503, b"ok\n" if ok else b"supervisor not responding\n")
        elif path == "/ready":
            ok, state = m.ready()
            self._reply(200 if ok else 503, f"{state}\n".encode())
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /ready\n")

    def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a scrape every few seconds is not news


class _Collector:
    """Metric families from the latest snapshot (counters are cumulative per replica slot,
    across restarts, so they never go down)."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.server.snap
        if not snap:
            return
        topo = str(snap["topology"])

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=["topology", *labels])

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["topology", *labels])

        run_state = gauge("zflow_run_state", "1 for the run's current state", ["state"])
        for s in OVERALL_STATES:
            run_state.add_metric([topo, s], 1.0 if snap["overall"] == s else 0.0)
        duration = gauge("zflow_run_duration_seconds", "seconds since the run started", [])
        duration.add_metric([topo], float(snap["duration"]))
        yield run_state
        yield duration

        n_in = counter("zflow_node_records_in", "records received by a node", ["node"])
        n_out = counter("zflow_node_records_out", "records sent by a node", ["node"])
        b_in = counter("zflow_node_bytes_in", "bytes received by a node", ["node"])
        b_out = counter("zflow_node_bytes_out", "bytes sent by a node", ["node"])
        n_rate = gauge("zflow_node_records_per_second", "a node's smoothed throughput", ["node"])
        n_err = counter("zflow_node_errors", "records a node's code failed on", ["node"])
        n_rst = counter("zflow_node_restarts", "replica restarts of a node", ["node"])
        n_reps = gauge("zflow_node_replicas", "replicas of a node", ["node"])
        n_ready = gauge("zflow_node_replicas_up", "replicas of a node that are up", ["node"])
        r_in = counter("zflow_replica_records_in", "records received by a replica",
                       ["node", "replica"])
        r_out = counter("zflow_replica_records_out", "records sent by a replica",
                        ["node", "replica"])
        r_err = counter("zflow_replica_errors", "records a replica failed on", ["node", "replica"])
        r_rst = counter("zflow_replica_restarts", "restarts of a replica slot", ["node", "replica"])
        r_state = gauge("zflow_replica_state", "1 for a replica's current state",
                        ["node", "replica", "state"])
        r_cpu = gauge("zflow_replica_cpu_percent", "a replica's CPU use", ["node", "replica"])
        r_rss = gauge("zflow_replica_rss_bytes", "a replica's resident memory",
                      ["node", "replica"])
        r_used = counter("zflow_replica_cpu_seconds", "CPU time a replica slot's processes "
                         "used, restarts included", ["node", "replica"])
        r_peak = gauge("zflow_replica_max_rss_bytes", "the peak resident memory of a replica "
                       "slot's processes", ["node", "replica"])
        s_in = counter("zflow_socket_records_in", "records received on a socket, all replicas",
                       ["node", "socket"])
        s_out = counter("zflow_socket_records_out", "records sent on a socket, all replicas",
                        ["node", "socket"])
        s_bin = counter("zflow_socket_bytes_in", "bytes received on a socket", ["node", "socket"])
        s_bout = counter("zflow_socket_bytes_out", "bytes sent on a socket", ["node", "socket"])
        for node, n in snap["nodes"].items():
            labels = [topo, node]
            # a command node's counts are unknown, not zero: left out
            _put(((n_in, "msgs_in"), (n_out, "msgs_out"), (b_in, "bytes_in"),
                  (b_out, "bytes_out"), (n_rate, "rate")), labels, n)
            n_err.add_metric(labels, float(n["errors"]))
            n_rst.add_metric(labels, float(n["restarts"]))
            n_reps.add_metric(labels, float(n["replicas"]))
            n_ready.add_metric(labels, float(n["ready"]))
            sockets: dict[str, list[int]] = {}
            for r in n["replica"]:
                rl = [topo, node, str(r["replica"])]
                if n["kind"] != "command":
                    r_in.add_metric(rl, float(r["msgs_in"]))
                    r_out.add_metric(rl, float(r["msgs_out"]))
                r_err.add_metric(rl, float(r["errors"]))
                r_rst.add_metric(rl, float(r["restarts"]))
                for s in STATES:
                    r_state.add_metric([*rl, s], 1.0 if r["state"] == s else 0.0)
                if r["cpu"] is not None:
                    r_cpu.add_metric(rl, float(r["cpu"]))
                if r["rss"] is not None:
                    r_rss.add_metric(rl, float(r["rss"]))
                if r["cpu_s"] is not None:
                    r_used.add_metric(rl, float(r["cpu_s"]))
                if r["max_rss"] is not None:
                    r_peak.add_metric(rl, float(r["max_rss"]))
                for sock, vals in r["sockets"].items():
                    acc = sockets.setdefault(sock, [0, 0, 0, 0])
                    for i, v in enumerate(vals[:4]):
                        acc[i] += int(v)
            for sock, (mi, mo, bi, bo) in sorted(sockets.items()):
                sl = [topo, node, sock]
                s_in.add_metric(sl, float(mi))
                s_out.add_metric(sl, float(mo))
                s_bin.add_metric(sl, float(bi))
                s_bout.add_metric(sl, float(bo))
        yield from (n_in, n_out, b_in, b_out, n_rate, n_err, n_rst, n_reps, n_ready,
                    r_in, r_out, r_err, r_rst, r_state, r_cpu, r_rss, r_used, r_peak, s_in, s_out,
                    s_bin, s_bout)

        e_sent = counter("zflow_edge_records_sent", "records sent on an edge", ["src", "dst"])
        e_recv = counter("zflow_edge_records_received", "records received on an edge",
                         ["src", "dst"])
        e_flight = gauge("zflow_edge_in_flight", "records sent on an edge and not yet received",
                         ["src", "dst"])
        e_rate = gauge("zflow_edge_records_per_second", "an edge's smoothed throughput",
                       ["src", "dst"])
        for e in snap["edges"]:
            el = [topo, e["src"], e["dst"]]
            # what cannot be told on this edge (fan-out, a shared socket) is left out
            _put(((e_sent, "sent"), (e_recv, "received"), (e_flight, "in_flight"),
                  (e_rate, "rate")), el, e)
        yield from (e_sent, e_recv, e_flight, e_rate)

        p = snap["progress"]
        done = gauge("zflow_progress_records", "records that reached the sinks", [])
        done.add_metric([topo], float(p["done"]))
        yield done
        if p["total"] is not None:
            total = gauge("zflow_progress_records_expected", "the stream's known length", [])
            total.add_metric([topo], float(p["total"]))
            yield total


def _put(pairs: tuple[tuple[Any, str], ...], labels: list[str], values: dict[str, Any]) -> None:
    """One sample per (family, key) whose value is known (None: not measurable, not zero)."""
    for fam, key in pairs:
        if values[key] is not None:
            fam.add_metric(labels, float(values[key]))
