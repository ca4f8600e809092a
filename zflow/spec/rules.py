"""ZeroMQ rules the schema cannot express (see the project's zeromq-facts notes).

Each check has a stable code and a hint. The checks are written defensively: they run even when
the schema found problems, skip whatever is malformed (the schema already said so), and never
raise on odd input, so every problem in a file is reported in one pass.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from zflow import rundir
from zflow.records import field, record
from zflow.spec.diagnostics import Diagnostic
from zflow.spec.locate import Locator
from zflow.spec.schema import did_you_mean
from zflow.spec.yamlpos import Path

#: Which types may talk to each other (libzmq checks this in the handshake).
PEERS: dict[str, frozenset[str]] = {
    "PUSH": frozenset({"PULL"}),
    "PULL": frozenset({"PUSH"}),
    "PUB": frozenset({"SUB", "XSUB"}),
    "XPUB": frozenset({"SUB", "XSUB"}),
    "SUB": frozenset({"PUB", "XPUB"}),
    "XSUB": frozenset({"PUB", "XPUB"}),
    "REQ": frozenset({"REP", "ROUTER"}),
    "REP": frozenset({"REQ", "DEALER"}),
    "DEALER": frozenset({"REP", "DEALER", "ROUTER"}),
    "ROUTER": frozenset({"REQ", "DEALER", "ROUTER"}),
    "PAIR": frozenset({"PAIR"}),
}
#: Types that receive data records (XPUB only receives subscriptions).
RECEIVING = frozenset({"PULL", "SUB", "XSUB", "REQ", "REP", "DEALER", "ROUTER", "PAIR"})
#: Types that send data records (XSUB only sends subscriptions).
SENDING = frozenset({"PUSH", "PUB", "XPUB", "REQ", "REP", "DEALER", "ROUTER", "PAIR"})

AUTO_BINDS = frozenset({"auto", "ipc", "tcp"})
CODECS = frozenset({"msgpack", "json", "raw"})
IPC_MAX = 107
#: Most replicas of one topology, all nodes together (the schema caps each node at the same):
#: every replica is a process on this machine (docs/format.md, "Limits").
MAX_REPLICAS = 10_000
_NODE_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_SOCKET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]", ""})
_REF = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_]*)$")


def split_ref(s: Any) -> tuple[str, str] | None:
    """`'ventilator.work'` -> `('ventilator', 'work')`; an endpoint (`tcp://...`) -> None."""
    if not isinstance(s, str) or "://" in s:
        return None
    m = _REF.match(s.strip())
    return (m.group(1), m.group(2)) if m else None


def _data_sockets(node: Any) -> list[str]:
    socks = node.get("sockets") if isinstance(node, dict) else None
    if not isinstance(socks, dict):
        return []
    out = []
    for name, s in socks.items():
        if str(name).startswith("x-") or not isinstance(s, dict):
            continue
        if "stop_on" in s or "send_on_end" in s:
            continue
        t = s.get("type")
        if isinstance(t, str) and t in PEERS:
            out.append(t)
    return out


def inferred_shape(node: Any) -> str:
    """Shape from the data sockets alone (docs/format.md, "Shape inference")."""
    types = _data_sockets(node)
    if any(t in ("REQ", "DEALER", "PAIR", "XPUB", "XSUB") for t in types):
        return "custom"
    if any(t in ("REP", "ROUTER") for t in types):
        return "service" if all(t in ("REP", "ROUTER") for t in types) else "custom"
    recv = any(t in ("PULL", "SUB") for t in types)
    send = any(t in ("PUSH", "PUB") for t in types)
    if not recv:
        return "source"
    return "transform" if send else "sink"


def infer_shape(node: Any) -> str:
    """The node's shape: its explicit `shape:` when given, else inferred from its sockets."""
    if isinstance(node, dict) and isinstance(node.get("shape"), str):
        return node["shape"]
    return inferred_shape(node)


# ---------------------------------------------------------------------------------------------
# endpoints


@record(frozen=True)
class Endpoint:
    """A parsed concrete endpoint. `port` None means "any port" (`*` or 0)."""

    transport: str
    host: str = ""
    port: int | None = None
    path: str = ""

    @property
    def wildcard_host(self) -> bool:
        return self.transport == "tcp" and self.host in _WILDCARD_HOSTS

    @property
    def loopback(self) -> bool:
        if self.transport != "tcp":
            return True
        h = self.host.strip("[]")
        if h in ("localhost", "lo"):
            return True
        import ipaddress  # only for tcp hosts by address: ~2 ms at every start otherwise

        try:
            return ipaddress.ip_address(h).is_loopback
        except ValueError:
            return False

    def norm_host(self) -> str:
        h = self.host.strip("[]")
        return "127.0.0.1" if h == "localhost" else h

    def __str__(self) -> str:
        if self.transport == "tcp":
            return f"tcp://{self.host}:{'*' if self.port is None else self.port}"
        return f"{self.transport}://{self.path}"


def reaches(bound: Endpoint, target: Endpoint) -> bool:
    """Whether connecting to `target` reaches a socket bound at the concrete `bound`."""
    if bound.transport != target.transport:
        return False
    if bound.transport == "ipc":
        return bound.path == target.path
    return bound.port is not None and bound.port == target.port and (
        bound.norm_host() == target.norm_host() or (bound.wildcard_host and target.loopback))


def _longest_tempdir() -> int:
    """The longest directory a run directory may be made in, in bytes (rundir.base picks the
    first usable one of these), unless tempfile has been imported and told."""
    if "tempfile" in sys.modules:
        return len(os.fsencode(sys.modules["tempfile"].gettempdir()))
    return max(len(os.fsencode(d)) for d in rundir.candidates())


def run_dir_template() -> str:
    """The run directory `zflow up` makes for ipc endpoints (zflow.rundir.make), with its random
    characters as X."""
    try:
        where = rundir.base()
    except OSError:  # nowhere usable now: `zflow up` will say so; measure the first choice
        where = rundir.candidates()[0]
    return os.path.join(where, rundir.TEMPLATE)


class EndpointError(ValueError):
    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def parse_endpoint(s: str, *, binding: bool) -> Endpoint:
    """Parse `tcp://host:port` / `ipc://path`; raise EndpointError (with a code) otherwise."""
    verb = "bind" if binding else "connect"
    if "://" not in s:
        raise EndpointError("ZF054", f"{s!r} is not an endpoint" + (
            "" if binding else " or a node.socket reference"),
            hint="bind: auto, tcp://127.0.0.1:5557 or ipc:///path" if binding
            else "connect: node.socket, tcp://127.0.0.1:5557 or ipc:///path")
    transport, rest = s.split("://", 1)
    if transport == "inproc":
        raise EndpointError("ZF056", f"inproc endpoint {s!r} works only inside one process",
                            hint="zflow runs every node (and every replica) as its own process: "
                                 "use `bind: auto` (ipc) or tcp")
    if transport == "ipc":
        if not rest:
            raise EndpointError("ZF054", f"ipc endpoint {s!r} has no path")
        if len(rest) > IPC_MAX:
            raise EndpointError("ZF057", f"ipc path is {len(rest)} characters; Linux allows at "
                                         f"most {IPC_MAX}",
                                hint="use a shorter path, or `bind: auto` (a short private path)")
        return Endpoint("ipc", path=rest)
    if transport != "tcp":
        raise EndpointError("ZF055", f"transport {transport!r} is not supported",
                            hint="zflow uses tcp:// and ipc:// (pgm, udp, ws, ... are not "
                                 "supported)")
    if ";" in rest:  # tcp://source;host:port (connect with a source address)
        rest = rest.split(";", 1)[1]
    host, sep, port_s = rest.rpartition(":")
    if not sep or not port_s:
        raise EndpointError("ZF054", f"tcp endpoint {s!r} has no port",
                            hint="write tcp://HOST:PORT, e.g. tcp://127.0.0.1:5557")
    if port_s in ("*", "0"):
        if not binding:
            raise EndpointError("ZF054", f"cannot {verb} to {s!r}: the port is a wildcard",
                                hint="connect to a concrete port")
        port = None
    else:
        if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
            raise EndpointError("ZF054", f"tcp port {port_s!r} in {s!r} is not 1..65535")
        port = int(port_s)
    if not binding and host in _WILDCARD_HOSTS:
        raise EndpointError("ZF054", f"cannot connect to the wildcard address in {s!r}",
                            hint="connect to a concrete address, e.g. tcp://127.0.0.1:"
                                 f"{port_s}")
    return Endpoint("tcp", host=host, port=port)


# ---------------------------------------------------------------------------------------------
# the model the checks run on


@record
class Sock:
    node: str
    name: str
    d: dict
    type: str | None
    replicas: int
    command: bool
    codec: str
    codec_explicit: bool
    bind: str | None = None
    bind_ep: Endpoint | None = None
    connects: list[tuple[Path, str]] = field(default_factory=list)
    peers: int = 0  # connectors (x replicas) attached to a binder; targets for a connector

    @property
    def path(self) -> Path:
        return ("nodes", self.node, "sockets", self.name)

    @property
    def label(self) -> str:
        return f"{self.node}.{self.name}"


def _replicas(node: dict) -> int:
    r = node.get("replicas", 1)
    return r if isinstance(r, int) and not isinstance(r, bool) and r >= 1 else 1


def _sockets(data: dict) -> dict[tuple[str, str], Sock]:
    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    dcodec = defaults.get("codec") if isinstance(defaults.get("codec"), str) else "msgpack"
    out: dict[tuple[str, str], Sock] = {}
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        return out
    for nname, node in nodes.items():
        if str(nname).startswith("x-") or not isinstance(node, dict):
            continue
        socks = node.get("sockets")
        if not isinstance(socks, dict):
            continue
        for sname, s in socks.items():
            if str(sname).startswith("x-") or not isinstance(s, dict):
                continue
            t = s.get("type") if isinstance(s.get("type"), str) and s["type"] in PEERS else None
            codec = s.get("codec") if isinstance(s.get("codec"), str) else dcodec
            if codec not in CODECS:
                codec = ""  # the schema reports it; codec checks skip it
            sock = Sock(str(nname), str(sname), s, t, _replicas(node),
                        "command" in node and "run" not in node, codec, "codec" in s)
            if "bind" in s and "connect" not in s and isinstance(s["bind"], str):
                sock.bind = s["bind"]
            elif "connect" in s and "bind" not in s:
                c = s["connect"]
                base = sock.path + ("connect",)
                if isinstance(c, str):
                    sock.connects = [(base, c)]
                elif isinstance(c, list):
                    sock.connects = [(base + (i,), x) for i, x in enumerate(c)
                                     if isinstance(x, str)]
            out[(str(nname), str(sname))] = sock
    return out


def _allow_public(data: dict, s: Sock) -> bool:
    node = data["nodes"][s.node]
    return any(isinstance(o, dict) and o.get("x-allow-public") is True
               for o in (s.d, node, data))


# ---------------------------------------------------------------------------------------------
# checks


def _pair_hint(ctype: str, btype: str) -> str:
    want = " or ".join(sorted(PEERS[ctype]))
    if ctype == btype:
        return f"{ctype} peers with {want}: change one side's type"
    return (f"{ctype} peers with {want}; {btype} peers with "
            f"{' or '.join(sorted(PEERS[btype]))}")


def check(data: Any, loc: Locator) -> list[Diagnostic]:
    """Every ZeroMQ rule over a (possibly partly invalid) document."""
    if not isinstance(data, dict):
        return []
    out: list[Diagnostic] = []
    socks = _sockets(data)
    nodes = data.get("nodes") if isinstance(data.get("nodes"), dict) else {}

    for name, nd in nodes.items():
        if isinstance(nd, dict) and nd.get("stdin", "none") != "none" and "command" not in nd:
            out.append(loc.diag("ZF075", f"node '{name}' runs Python code (run:), which has no "
                                         "standard input to wait on", ("nodes", name, "stdin"),
                                at="key", hint="remove stdin, or run the program as a "
                                               "command: node"))
        if isinstance(nd, dict) and "ready" in nd and "command" not in nd:
            out.append(loc.diag("ZF075", f"node '{name}' runs Python code (run:), which tells "
                                         "zflow itself when it is ready", ("nodes", name, "ready"),
                                at="key", hint="remove ready (it is for command: nodes)"))
        if isinstance(nd, dict) and nd.get("preload") is True and "command" in nd:
            out.append(loc.diag("ZF078", f"node '{name}' runs a program (command:), which is "
                                         "exec'd: there is no Python module to preload",
                                ("nodes", name, "preload"), at="key",
                                hint="remove preload (it is for run: nodes)"))
        pattern = nd.get("ready", {}).get("log") if isinstance(nd, dict) and isinstance(
            nd.get("ready"), dict) else None
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as e:
                out.append(loc.diag("ZF077", f"ready.log of node '{name}' is not a regular "
                                             f"expression: {e}", ("nodes", name, "ready", "log"),
                                    hint="escape special characters with \\, e.g. "
                                         "`ready \\(ok\\)`"))

    # -- per-socket options
    for s in socks.values():
        p, t = s.path, s.type
        if "end_marker" in s.d and s.d.get("codec", "msgpack") == "msgpack":
            out.append(loc.diag("ZF076", f"end_marker on '{s.label}': msgpack sockets end their "
                                         "streams with zflow's own frames",
                                p + ("end_marker",), at="key",
                                hint="end_marker is for `codec: json` or `raw` sockets that face "
                                     "plain programs"))
        if s.d.get("external_senders") and t is not None and t not in RECEIVING:
            out.append(loc.diag("ZF076", f"external_senders on '{s.label}': a {t} socket "
                                         "receives no stream to end", p + ("external_senders",),
                                at="key", hint="put it on the PULL/SUB socket fed from outside"))
        if t == "SUB":
            sub = s.d.get("subscribe")
            if "subscribe" not in s.d:
                out.append(loc.diag("ZF061", f"SUB socket '{s.label}' has no subscribe: it would "
                                             "drop every message", p, at="key",
                                    hint='add `subscribe: ""` to receive everything, or a topic'
                                         ' prefix'))
            elif sub == []:
                out.append(loc.diag("ZF061", f"SUB socket '{s.label}' subscribes to nothing",
                                    p + ("subscribe",),
                                    hint='use `subscribe: ""` to receive everything'))
        elif t is not None and "subscribe" in s.d:
            out.append(loc.diag("ZF062", f"subscribe is only for SUB sockets; '{s.label}' is "
                                         f"{t}", p + ("subscribe",), at="key",
                                hint="remove it, or make the socket `type: SUB`"))
        if t is not None and "stop_on" in s.d and t not in RECEIVING:
            out.append(loc.diag("ZF065", f"stop_on needs a receiving socket; {t} socket "
                                         f"'{s.label}' never receives data",
                                p + ("stop_on",), at="key",
                                hint="put stop_on on a PULL/SUB (receiving) socket, or use "
                                     "send_on_end here" if t in SENDING else None))
        if t is not None and "send_on_end" in s.d and t not in SENDING:
            out.append(loc.diag("ZF066", f"send_on_end needs a sending socket; {t} socket "
                                         f"'{s.label}' never sends data",
                                p + ("send_on_end",), at="key",
                                hint="put send_on_end on a PUSH/PUB (sending) socket, or use "
                                     "stop_on here" if t in RECEIVING else None))
        if t is not None and "topic" in s.d and t not in ("PUB", "XPUB"):
            out.append(loc.diag("ZF072", f"topic is only for PUB and XPUB sockets; '{s.label}' "
                                         f"is {t}", p + ("topic",), at="key",
                                hint="SUB sockets filter with `subscribe:`" if t == "SUB"
                                else "remove it"))
        if t == "PAIR" and s.replicas > 1:
            out.append(loc.diag("ZF063", f"PAIR socket '{s.label}' is on a node with "
                                         f"{s.replicas} replicas; PAIR has exactly one peer",
                                ("nodes", s.node, "replicas"),
                                hint="use replicas: 1, or PUSH/PULL or DEALER/ROUTER for many"))

    out.extend(_auto_ipc_paths(socks, loc))
    out.extend(_total_replicas(nodes, loc))

    # -- binds
    bound: list[tuple[Sock, Endpoint]] = []
    for s in socks.values():
        if s.bind is None:
            continue
        bp = s.path + ("bind",)
        if s.bind in AUTO_BINDS:
            continue
        try:
            ep = parse_endpoint(s.bind, binding=True)
        except EndpointError as e:
            out.append(loc.diag(e.code, e.message, bp, hint=e.hint))
            continue
        s.bind_ep = ep
        fixed = not (ep.transport == "tcp" and ep.port is None)
        if fixed and s.replicas > 1:
            out.append(loc.diag("ZF059", f"node '{s.node}' has {s.replicas} replicas but "
                                         f"'{s.label}' binds the fixed endpoint {s.bind}: the "
                                         "replicas would collide", bp,
                                hint="use `bind: auto` (one endpoint per replica), or let a "
                                     "single-replica node bind and this one connect"))
        if ep.transport == "tcp" and not ep.loopback and not _allow_public(data, s):
            out.append(loc.diag("ZF069", f"'{s.label}' binds {s.bind}, reachable from other "
                                         "machines, without encryption or authentication", bp,
                                hint="bind 127.0.0.1 (or `bind: auto`), or set `x-allow-public: "
                                     "true` on the socket if this is intended"))
        if fixed:
            bound.append((s, ep))

    # -- endpoint clashes (one binder per endpoint)
    for i, (s2, e2) in enumerate(bound):
        for s1, e1 in bound[:i]:
            if e1.transport != e2.transport:
                continue
            if e1.transport == "tcp":
                clash = e1.port == e2.port and (e1.norm_host() == e2.norm_host()
                                                or e1.wildcard_host or e2.wildcard_host)
            else:
                clash = e1.path == e2.path
            if clash:
                _f, line, _c = loc.value(s1.path + ("bind",))
                out.append(loc.diag("ZF058", f"{s2.bind} is already bound by '{s1.label}' "
                                             f"(line {line}): one binder per endpoint",
                                    s2.path + ("bind",),
                                    hint="use another port or path, or `bind: auto`; other "
                                         "sockets connect to it"))
                break

    def binder_for(ep: Endpoint) -> Sock | None:
        return next((s for s, b in bound if reaches(b, ep)), None)

    # -- connects: resolve references, check peers
    edges: list[tuple[Sock, Sock, Path]] = []
    for s in socks.values():
        seen_targets: set[str] = set()
        linked: dict[str, str] = {}  # binder label -> how this socket named it first

        def twice(b: Sock, target: str, cp: Path, s: Sock = s,
                  linked: dict[str, str] = linked) -> bool:
            """A second way of naming a binder already connected (`b.s` and its endpoint)."""
            first = linked.setdefault(b.label, target)
            if first == target:
                return False
            out.append(loc.diag("ZF070", f"'{s.label}' connects to '{b.label}' twice: as "
                                         f"{first} and as {target}", cp,
                                hint="remove one of them"))
            return True

        for cp, target in s.connects:
            tnorm = target.strip()
            if tnorm in seen_targets:
                out.append(loc.diag("ZF070", f"'{s.label}' connects to {target} twice", cp,
                                    hint="remove the duplicate"))
                continue
            seen_targets.add(tnorm)
            ref = split_ref(tnorm)
            if ref is None:
                try:
                    ep = parse_endpoint(tnorm, binding=False)
                except EndpointError as e:
                    out.append(loc.diag(e.code, e.message, cp, hint=e.hint))
                    continue
                b = binder_for(ep)
                if b is not None and twice(b, tnorm, cp):
                    continue
                s.peers += 1
                if b is not None:
                    edges.append((s, b, cp))
                continue
            nname, sname = ref
            node = nodes.get(nname)
            if not isinstance(node, dict) or nname.startswith("x-"):
                names = [n for n in nodes if not str(n).startswith("x-")]
                guess = did_you_mean(nname, names)
                out.append(loc.diag("ZF051", f"'{s.label}' connects to '{tnorm}', but there is "
                                             f"no node '{nname}'", cp,
                                    hint=f"did you mean '{guess}.{sname}'?" if guess
                                    else f"nodes: {', '.join(map(str, names))}"))
                continue
            b = socks.get((nname, sname))
            if b is None:
                nsocks = node.get("sockets") if isinstance(node.get("sockets"), dict) else {}
                names = [n for n in nsocks if not str(n).startswith("x-")]
                binders = [n for n in names if isinstance(nsocks[n], dict) and "bind" in
                           nsocks[n]]
                guess = did_you_mean(sname, binders) or did_you_mean(sname, names)
                hint = (f"did you mean '{nname}.{guess}'?" if guess else
                        f"sockets of '{nname}': {', '.join(map(str, names))}" if names else
                        f"node '{nname}' has no sockets")
                out.append(loc.diag("ZF052", f"'{s.label}' connects to '{tnorm}', but node "
                                             f"'{nname}' has no socket '{sname}'", cp, hint=hint))
                continue
            if b.bind is None:
                if "connect" in b.d and "bind" not in b.d:
                    out.append(loc.diag("ZF053", f"'{s.label}' connects to '{b.label}', which "
                                                 "connects too: one side must bind", cp,
                                        hint=f"give '{b.label}' `bind: auto` instead of "
                                             "connect"))
                continue
            if twice(b, tnorm, cp):
                continue
            s.peers += 1
            if b.bind_ep is not None and b.bind_ep.wildcard_host:
                out.append(loc.diag("ZF060", f"'{b.label}' binds the wildcard address {b.bind};"
                                             " a reference to it has no concrete address to "
                                             "connect to", cp,
                                    hint=f"connect to a concrete endpoint (e.g. "
                                         f"tcp://127.0.0.1:{b.bind_ep.port or 'PORT'}), or bind "
                                         f"'{b.label}' to 127.0.0.1"))
            edges.append((s, b, cp))

    # a broken reference leaves who-connects-to-what unknown: no "no peer" guesses then
    broken_refs = any(d.code in ("ZF051", "ZF052") for d in out)

    # -- per connection: types, codecs
    for c, b, cp in edges:
        b.peers += c.replicas
        if c.type and b.type and b.type not in PEERS[c.type]:
            out.append(loc.diag("ZF050", f"{c.type} socket '{c.label}' cannot talk to {b.type} "
                                         f"socket '{b.label}'", cp,
                                hint=_pair_hint(c.type, b.type)))
            continue
        for z, other in ((c, b), (b, c)):
            if not z.command and other.command and z.codec == "msgpack":
                at = z.path + ("codec",) if z.codec_explicit else z.path
                out.append(loc.diag("ZF068", f"'{z.label}' uses the msgpack codec (zflow frames) "
                                             f"but its peer '{other.label}' is a command node",
                                    at, at="value" if z.codec_explicit else "key",
                                    hint="command nodes are plain ZeroMQ programs: set `codec: "
                                         "json` or `codec: raw` on this socket"))
        if not c.command and not b.command and c.codec and b.codec and c.codec != b.codec:
            out.append(loc.diag("ZF071", f"'{c.label}' uses codec {c.codec} but '{b.label}' "
                                         f"uses {b.codec}", cp,
                                hint="both ends of a connection must use the same codec"))

    # -- PAIR peers, sockets without peers
    for s in socks.values():
        if s.type == "PAIR" and s.peers > 1:
            where = s.path + ("connect",) if s.connects else s.path
            out.append(loc.diag("ZF063", f"PAIR socket '{s.label}' has {s.peers} peers; PAIR "
                                         "talks to exactly one", where,
                                at="value" if s.connects else "key",
                                hint="use DEALER/ROUTER or PUSH/PULL for more than one peer"))
        outside = s.bind not in AUTO_BINDS and bool(s.d.get("external_senders"))
        if (s.bind is not None and s.peers == 0 and s.type is not None and not broken_refs
                and not outside):  # external_senders: the outside is declared
            if s.bind in AUTO_BINDS:
                msg = (f"nothing connects to '{s.label}', and with `bind: {s.bind}` nothing "
                       "outside the topology can find it")
            else:
                msg = (f"nothing in this topology connects to '{s.label}' (fine if an outside "
                       "program does)")
            out.append(loc.diag("ZF064", msg, s.path, at="key",
                                hint=f"connect a socket to it with `connect: {s.label}`, or "
                                     "remove it"))

    # -- shapes
    for nname, node in nodes.items():
        if str(nname).startswith("x-") or not isinstance(node, dict):
            continue
        shape = node.get("shape")
        if not isinstance(shape, str) or shape == "custom" or "command" in node:
            continue
        got = inferred_shape(node)
        if shape in ("source", "transform", "sink", "service") and shape != got:
            out.append(loc.diag("ZF067", f"node '{nname}' says shape {shape}, but its sockets "
                                         f"make it a {got}", ("nodes", nname, "shape"),
                                hint=f"remove `shape:` (inferred: {got}), fix the sockets, or "
                                     "use `shape: custom` to drive the sockets yourself"))
    out.extend(_exactly_once(data, nodes, socks, loc))
    return out


def _auto_ipc_paths(socks: dict[tuple[str, str], Sock], loc: Locator) -> list[Diagnostic]:
    """`bind: auto` / `ipc` becomes ipc://<run dir>/<node>.<replica>.<socket>: it must fit the
    107 bytes of a Unix socket path, or the replica fails at start ("File name too long")."""
    out: list[Diagnostic] = []
    names = [(s, f"{s.node}.{min(s.replicas, MAX_REPLICAS) - 1}.{s.name}") for s in socks.values()
             if s.bind in ("auto", "ipc") and _NODE_NAME.match(s.node)
             and _SOCKET_NAME.match(s.name)]  # bad names are reported already
    longest = max((len(name.encode()) for _, name in names), default=0)
    if not names or _longest_tempdir() + len(f"/{rundir.TEMPLATE}/") + longest <= IPC_MAX:
        return out  # fits wherever the run directory is made: no need to look further
    run_dir = run_dir_template()
    for s, name in names:
        path = f"{run_dir}/{name}"
        n = len(path.encode())
        if n > IPC_MAX:
            out.append(loc.diag("ZF057", f"socket '{s.label}' would bind the ipc path {path}, "
                                         f"{n} characters; Linux allows at most {IPC_MAX}",
                                s.path + ("bind",),
                                hint=f"use a node and socket name {n - IPC_MAX} characters "
                                     "shorter, `bind: tcp`, or a shorter TMPDIR (the run "
                                     f"directory is made in {os.path.dirname(run_dir)})"))
    return out


def _total_replicas(nodes: dict, loc: Locator) -> list[Diagnostic]:
    """Each node is capped by the schema; all of them together are capped here."""
    counts: list[tuple[str, int]] = []
    for name, node in nodes.items():
        if str(name).startswith("x-") or not isinstance(node, dict):
            continue
        r = node.get("replicas", 1)
        if isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= MAX_REPLICAS:
            counts.append((str(name), r))  # out-of-range values: the schema says so
    total = 0
    for name, r in counts:
        total += r
        if total > MAX_REPLICAS:
            total = sum(c for _n, c in counts)
            big = sorted(counts, key=lambda x: -x[1])[:5]
            at = ("nodes", name, "replicas") if "replicas" in nodes[name] else ("nodes", name)
            return [loc.diag("ZF074", f"{total} replicas in total over all nodes; at most "
                                      f"{MAX_REPLICAS} (every replica is a process on this "
                                      "machine)", at, at="value" if len(at) == 3 else "key",
                             hint="largest nodes: " + ", ".join(f"{n}: {c}" for n, c in big))]
    return []


def _exactly_once(data: dict, nodes: dict, socks: dict[tuple[str, str], Sock],
                  loc: Any) -> list[Diagnostic]:
    """`delivery: exactly-once` works on zflow PUSH/PULL pipelines whose sink is one replica;
    `at-least-once` on the same with a sink of any number of replicas."""
    asked = data.get("delivery")
    if asked not in ("exactly-once", "at-least-once"):
        return []
    out: list[Diagnostic] = []
    sink_seen = False
    for s in socks.values():
        role_control = "stop_on" in s.d or "send_on_end" in s.d
        if role_control or s.type is None:
            continue
        if s.type not in ("PUSH", "PULL"):
            out.append(loc.diag("ZF073", f"'{s.label}' is {s.type}: {asked} delivery "
                                         "covers PUSH/PULL data sockets only", s.path + ("type",),
                                hint="use PUSH/PULL for the data path, or mark control "
                                     "channels with stop_on / send_on_end"))
        elif s.d.get("codec", "msgpack") != "msgpack":
            out.append(loc.diag("ZF073", f"'{s.label}' uses codec {s.d.get('codec')}: "
                                         f"{asked} needs zflow's msgpack frames",
                                s.path + ("codec",)))
    for name, nd in nodes.items():
        if str(name).startswith("x-"):
            continue  # extensions are kept and ignored (docs/format.md)
        if not isinstance(nd, dict) or "command" in nd:
            if isinstance(nd, dict):
                out.append(loc.diag("ZF073", f"node '{name}' is a command node: {asked} "
                                             "needs zflow nodes end to end", ("nodes", name),
                                    at="key"))
            continue
        if infer_shape(nd) == "sink" and sink_seen:
            out.append(loc.diag("ZF073", f"'{name}' is a second sink: {asked} "
                                         "acknowledges a record when one sink has it",
                                ("nodes", name), at="key",
                                hint="end the pipeline in one sink node"))
        if infer_shape(nd) == "sink":
            sink_seen = True
        if infer_shape(nd) == "sink" and _replicas(nd) > 1 and asked == "exactly-once":
            p = ("nodes", name, "replicas") if "replicas" in nd else ("nodes", name)
            out.append(loc.diag("ZF073", f"sink '{name}' has {_replicas(nd)} replicas: "
                                         "duplicates must meet in one place to be dropped", p,
                                hint="give the sink `replicas: 1`, or say `delivery: "
                                     "at-least-once`"))
    return out
