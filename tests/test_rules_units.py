"""The ZeroMQ rules (zflow/spec/rules.py) case by case: every diagnostic's code, place (path, line,
column), message and hint, as `zflow validate` shows them.

`rule_diags` runs the rules alone on a YAML text (no schema, no version check), so each case
sees only what rules.py reports, in the order it reports it. Written to kill the mutants that
survived the corpus tests (docs/mutation.md).
"""

from __future__ import annotations

import tempfile
import textwrap

import pytest

from zflow.spec import load, rules
from zflow.spec.locate import Locator
from zflow.spec.rules import Endpoint, EndpointError, parse_endpoint
from zflow.spec.yamlpos import parse


def rule_diags(text: str, only: list[str] | None = None) -> list[tuple]:
    text = textwrap.dedent(text).strip("\n") + "\n"
    doc, problems = parse(text, "t.yaml")
    assert doc is not None, problems
    got = [(d.code, d.path, d.line, d.col, d.message, d.hint)
           for d in rules.check(doc.data, Locator("t.yaml", doc))]
    return [g for g in got if only is None or g[0] in only]


def test_socket_options() -> None:
    """Per-socket options: subscribe, stop_on, send_on_end, topic, PAIR replicas."""
    YAML = """
    nodes:
      a:
        run: m:f
        sockets:
          s: {type: SUB, connect: b.p}
          t:
            type: SUB
            connect: b.p
            subscribe: []
          u: {type: PUSH, connect: c.i, subscribe: x, stop_on: X, topic: t}
          v: {type: PULL, bind: auto, send_on_end: Y, topic: t}
          w: {type: SUB, connect: b.p, subscribe: "", topic: t}
          x: {type: XPUB, bind: auto, stop_on: X}
          y: {type: XSUB, connect: b.p, send_on_end: X}
          z: {type: PUB, bind: auto, topic: t, send_on_end: E}
          zz: {type: PULL, connect: b.q, stop_on: E}
      b:
        run: m:g
        sockets:
          p: {type: PUB, bind: auto}
          q: {type: PUSH, bind: auto}
      c:
        run: m:h
        replicas: 2
        sockets:
          i: {type: PULL, bind: auto}
          pr: {type: PAIR, bind: auto}
      d:
        run: m:h
        replicas: 1
        sockets:
          pr: {type: PAIR, connect: c.pr}
    """
    assert rule_diags(YAML) == [
        ('ZF061', 'nodes.a.sockets.s', 5, 7,
         "SUB socket 'a.s' has no subscribe: it would drop every message",
         'add `subscribe: ""` to receive everything, or a topic prefix'),
        ('ZF061', 'nodes.a.sockets.t.subscribe', 9, 20,
         "SUB socket 'a.t' subscribes to nothing",
         'use `subscribe: ""` to receive everything'),
        ('ZF062', 'nodes.a.sockets.u.subscribe', 10, 37,
         "subscribe is only for SUB sockets; 'a.u' is PUSH",
         'remove it, or make the socket `type: SUB`'),
        ('ZF065', 'nodes.a.sockets.u.stop_on', 10, 51,
         "stop_on needs a receiving socket; PUSH socket 'a.u' never receives data",
         'put stop_on on a PULL/SUB (receiving) socket, or use send_on_end here'),
        ('ZF072', 'nodes.a.sockets.u.topic', 10, 63,
         "topic is only for PUB and XPUB sockets; 'a.u' is PUSH",
         'remove it'),
        ('ZF066', 'nodes.a.sockets.v.send_on_end', 11, 35,
         "send_on_end needs a sending socket; PULL socket 'a.v' never sends data",
         'put send_on_end on a PUSH/PUB (sending) socket, or use stop_on here'),
        ('ZF072', 'nodes.a.sockets.v.topic', 11, 51,
         "topic is only for PUB and XPUB sockets; 'a.v' is PULL",
         'remove it'),
        ('ZF072', 'nodes.a.sockets.w.topic', 12, 51,
         "topic is only for PUB and XPUB sockets; 'a.w' is SUB",
         'SUB sockets filter with `subscribe:`'),
        ('ZF065', 'nodes.a.sockets.x.stop_on', 13, 35,
         "stop_on needs a receiving socket; XPUB socket 'a.x' never receives data",
         'put stop_on on a PULL/SUB (receiving) socket, or use send_on_end here'),
        ('ZF066', 'nodes.a.sockets.y.send_on_end', 14, 37,
         "send_on_end needs a sending socket; XSUB socket 'a.y' never sends data",
         'put send_on_end on a PUSH/PUB (sending) socket, or use stop_on here'),
        ('ZF063', 'nodes.c.replicas', 24, 15,
         "PAIR socket 'c.pr' is on a node with 2 replicas; PAIR has exactly one peer",
         'use replicas: 1, or PUSH/PULL or DEALER/ROUTER for many'),
        ('ZF064', 'nodes.a.sockets.v', 11, 7,
         "nothing connects to 'a.v', and with `bind: auto` nothing outside the topology can find "
         'it',
         'connect a socket to it with `connect: a.v`, or remove it'),
        ('ZF064', 'nodes.a.sockets.x', 13, 7,
         "nothing connects to 'a.x', and with `bind: auto` nothing outside the topology can find "
         'it',
         'connect a socket to it with `connect: a.x`, or remove it'),
        ('ZF064', 'nodes.a.sockets.z', 15, 7,
         "nothing connects to 'a.z', and with `bind: auto` nothing outside the topology can find "
         'it',
         'connect a socket to it with `connect: a.z`, or remove it'),
    ]


def test_fixed_binds() -> None:
    """Fixed endpoints: replicas collide (ZF059), public addresses need x-allow-public (ZF069)."""
    YAML = """
    nodes:
      a:
        run: m:f
        replicas: 2
        sockets:
          t1: {type: PUSH, bind: "tcp://127.0.0.1:6000"}
          t2: {type: PUSH, bind: "tcp://127.0.0.1:*"}
          i1: {type: PUSH, bind: "ipc:///tmp/a"}
          t3: {type: PUSH, bind: "tcp://127.0.0.1:0"}
      b:
        run: m:g
        sockets:
          pub: {type: PUSH, bind: "tcp://10.1.2.3:6001"}
          wild: {type: PUSH, bind: "tcp://*:6002"}
          ok: {type: PUSH, bind: "tcp://*:6003", x-allow-public: true}
          loc: {type: PUSH, bind: "tcp://localhost:6004"}
          v6: {type: PUSH, bind: "tcp://[::1]:6005"}
          lo: {type: PUSH, bind: "tcp://lo:6006"}
          bad: {type: PUSH, bind: "udp://x:1"}
          no: {type: PUSH, bind: "tcp://10.1.2.3:6009", x-allow-public: "yes"}
      c:
        run: m:h
        x-allow-public: true
        sockets:
          pub: {type: PUSH, bind: "tcp://10.1.2.3:6007"}
          host: {type: PUSH, bind: "tcp://example.org:6008"}
    """
    assert rule_diags(YAML, only=['ZF055', 'ZF059', 'ZF069']) == [
        ('ZF059', 'nodes.a.sockets.t1.bind', 6, 30,
         "node 'a' has 2 replicas but 'a.t1' binds the fixed endpoint tcp://127.0.0.1:6000: the "
         'replicas would collide',
         'use `bind: auto` (one endpoint per replica), or let a single-replica node bind and '
         'this one connect'),
        ('ZF059', 'nodes.a.sockets.i1.bind', 8, 30,
         "node 'a' has 2 replicas but 'a.i1' binds the fixed endpoint ipc:///tmp/a: the replicas "
         'would collide',
         'use `bind: auto` (one endpoint per replica), or let a single-replica node bind and '
         'this one connect'),
        ('ZF069', 'nodes.b.sockets.pub.bind', 13, 31,
         "'b.pub' binds tcp://10.1.2.3:6001, reachable from other machines, without encryption "
         'or authentication',
         'bind 127.0.0.1 (or `bind: auto`), or set `x-allow-public: true` on the socket if this '
         'is intended'),
        ('ZF069', 'nodes.b.sockets.wild.bind', 14, 32,
         "'b.wild' binds tcp://*:6002, reachable from other machines, without encryption or "
         'authentication',
         'bind 127.0.0.1 (or `bind: auto`), or set `x-allow-public: true` on the socket if this '
         'is intended'),
        ('ZF055', 'nodes.b.sockets.bad.bind', 19, 31,
         "transport 'udp' is not supported",
         'zflow uses tcp:// and ipc:// (pgm, udp, ws, ... are not supported)'),
        ('ZF069', 'nodes.b.sockets.no.bind', 20, 30,
         "'b.no' binds tcp://10.1.2.3:6009, reachable from other machines, without encryption or "
         'authentication',
         'bind 127.0.0.1 (or `bind: auto`), or set `x-allow-public: true` on the socket if this '
         'is intended'),
    ]


def test_allow_public_for_the_whole_file() -> None:
    YAML = """
    x-allow-public: true
    nodes:
      a:
        run: m:f
        sockets:
          pub: {type: PUSH, bind: "tcp://10.1.2.3:6001"}
          c: {type: PULL, connect: "tcp://10.1.2.3:6001"}
    """
    assert rule_diags(YAML) == []


def test_endpoint_clashes() -> None:
    """One binder per endpoint (ZF058): same port and host (localhost is 127.0.0.1, a wildcard
    host is every host), or same ipc path."""
    YAML = """
    nodes:
      a:
        run: m:f
        sockets:
          t1: {type: PUSH, bind: "tcp://127.0.0.1:7000"}
          t2: {type: PUSH, bind: "tcp://localhost:7000"}
          t3: {type: PUSH, bind: "tcp://*:7001", x-allow-public: true}
          t4: {type: PUSH, bind: "tcp://127.0.0.1:7001"}
          t5: {type: PUSH, bind: "tcp://127.0.0.2:7002"}
          t6: {type: PUSH, bind: "tcp://127.0.0.1:7002"}
          i1: {type: PUSH, bind: "ipc:///tmp/x"}
          i2: {type: PUSH, bind: "ipc:///tmp/x"}
          i3: {type: PUSH, bind: "ipc:///tmp/7000"}
          t7: {type: PUSH, bind: "tcp://127.0.0.1:7003"}
          t8: {type: PUSH, bind: "tcp://0.0.0.0:7003", x-allow-public: true}
          t9: {type: PUSH, bind: "tcp://127.0.0.1:7003"}
          i4: {type: PUSH, bind: "ipc:///tmp/y"}
    """
    assert rule_diags(YAML, only=['ZF058']) == [
        ('ZF058', 'nodes.a.sockets.t2.bind', 6, 30,
         "tcp://localhost:7000 is already bound by 'a.t1' (line 5): one binder per endpoint",
         'use another port or path, or `bind: auto`; other sockets connect to it'),
        ('ZF058', 'nodes.a.sockets.t4.bind', 8, 30,
         "tcp://127.0.0.1:7001 is already bound by 'a.t3' (line 7): one binder per endpoint",
         'use another port or path, or `bind: auto`; other sockets connect to it'),
        ('ZF058', 'nodes.a.sockets.i2.bind', 12, 30,
         "ipc:///tmp/x is already bound by 'a.i1' (line 11): one binder per endpoint",
         'use another port or path, or `bind: auto`; other sockets connect to it'),
        ('ZF058', 'nodes.a.sockets.t8.bind', 15, 30,
         "tcp://0.0.0.0:7003 is already bound by 'a.t7' (line 14): one binder per endpoint",
         'use another port or path, or `bind: auto`; other sockets connect to it'),
        ('ZF058', 'nodes.a.sockets.t9.bind', 16, 30,
         "tcp://127.0.0.1:7003 is already bound by 'a.t7' (line 14): one binder per endpoint",
         'use another port or path, or `bind: auto`; other sockets connect to it'),
    ]


def test_connects_to_concrete_endpoints_find_their_binder() -> None:
    """A connect to an endpoint that a socket of the topology binds is a link: the binder has a
    peer, and types are checked across it."""
    YAML = """
    nodes:
      a:
        run: m:f
        sockets:
          t1: {type: PUSH, bind: "tcp://127.0.0.1:7000"}
          t3: {type: PUSH, bind: "tcp://*:7001", x-allow-public: true}
          t5: {type: PUSH, bind: "tcp://127.0.0.2:7002"}
          i1: {type: PUSH, bind: "ipc:///tmp/x"}
          i3: {type: PUSH, bind: "ipc:///tmp/7000"}
          t7: {type: PUSH, bind: "tcp://127.0.0.1:7003"}
          w: {type: PUSH, bind: "tcp://0.0.0.0:7200", x-allow-public: true}
          u: {type: PUSH, bind: "tcp://127.0.0.1:7300"}
      b:
        run: m:g
        sockets:
          c1: {type: PULL, connect: ["tcp://localhost:7000", "ipc:///tmp/x", "tcp://localhost:7001"]}
          c2:
            type: PULL
            connect: ["tcp://127.0.0.1:7003", "ipc:///tmp/none", "tcp://127.0.0.1:7999",
                      "ipc:///tmp/7000", "tcp://127.0.0.1:7002"]
          e: {type: PUSH, connect: ["tcp://10.0.0.1:7200"]}
          f: {type: PUSH, connect: "tcp://127.0.0.1:7200"}
          g: {type: PUSH, connect: "tcp://127.0.0.1:7301"}
    """
    assert rule_diags(YAML) == [
        ('ZF050', 'nodes.b.sockets.f.connect', 22, 32,
         "PUSH socket 'b.f' cannot talk to PUSH socket 'a.w'",
         "PUSH peers with PULL: change one side's type"),
        ('ZF064', 'nodes.a.sockets.t5', 7, 7,
         "nothing in this topology connects to 'a.t5' (fine if an outside program does)",
         'connect a socket to it with `connect: a.t5`, or remove it'),
        ('ZF064', 'nodes.a.sockets.u', 12, 7,
         "nothing in this topology connects to 'a.u' (fine if an outside program does)",
         'connect a socket to it with `connect: a.u`, or remove it'),
    ]


def test_references() -> None:
    """node.socket references: unknown nodes and sockets (with a guess), connectors, wildcard
    binders, duplicates."""
    YAML = """
    nodes:
      src:
        run: m:f
        sockets:
          out: {type: PUSH, bind: auto}
          conn: {type: PUSH, connect: sink.inp}
          w: {type: PUSH, bind: "tcp://0.0.0.0:7100", x-allow-public: true}
          p: {type: PUSH, bind: "tcp://*:*", x-allow-public: true}
      x-tmpl:
        run: m:t
      sink:
        run: m:g
        sockets:
          inp: {type: PULL, connect: src.out}
          a:
            type: PULL
            connect: [srcc.out, x-tmpl.out, nope.out, src.outt, src.cone, src.qqq, empty.x,
                      nosock.x, src.conn]
          c:
            type: PULL
            connect: [src.w, src.p, " src.w ", "tcp://127.0.0.1:7100", "tcp://*:7100",
                      "tcp://127.0.0.1:7100"]
      empty:
        run: m:h
        sockets: {}
      nosock:
        run: m:h
    """
    assert rule_diags(YAML) == [
        ('ZF053', 'nodes.src.sockets.conn.connect', 6, 35,
         "'src.conn' connects to 'sink.inp', which connects too: one side must bind",
         "give 'sink.inp' `bind: auto` instead of connect"),
        ('ZF051', 'nodes.sink.sockets.a.connect[0]', 17, 19,
         "'sink.a' connects to 'srcc.out', but there is no node 'srcc'",
         "did you mean 'src.out'?"),
        ('ZF051', 'nodes.sink.sockets.a.connect[1]', 17, 29,
         "'sink.a' connects to 'x-tmpl.out', but there is no node 'x-tmpl'",
         'nodes: src, sink, empty, nosock'),
        ('ZF051', 'nodes.sink.sockets.a.connect[2]', 17, 41,
         "'sink.a' connects to 'nope.out', but there is no node 'nope'",
         'nodes: src, sink, empty, nosock'),
        ('ZF052', 'nodes.sink.sockets.a.connect[3]', 17, 51,
         "'sink.a' connects to 'src.outt', but node 'src' has no socket 'outt'",
         "did you mean 'src.out'?"),
        ('ZF052', 'nodes.sink.sockets.a.connect[4]', 17, 61,
         "'sink.a' connects to 'src.cone', but node 'src' has no socket 'cone'",
         "did you mean 'src.conn'?"),
        ('ZF052', 'nodes.sink.sockets.a.connect[5]', 17, 71,
         "'sink.a' connects to 'src.qqq', but node 'src' has no socket 'qqq'",
         "sockets of 'src': out, conn, w, p"),
        ('ZF052', 'nodes.sink.sockets.a.connect[6]', 17, 80,
         "'sink.a' connects to 'empty.x', but node 'empty' has no socket 'x'",
         "node 'empty' has no sockets"),
        ('ZF052', 'nodes.sink.sockets.a.connect[7]', 18, 19,
         "'sink.a' connects to 'nosock.x', but node 'nosock' has no socket 'x'",
         "node 'nosock' has no sockets"),
        ('ZF053', 'nodes.sink.sockets.a.connect[8]', 18, 29,
         "'sink.a' connects to 'src.conn', which connects too: one side must bind",
         "give 'src.conn' `bind: auto` instead of connect"),
        ('ZF060', 'nodes.sink.sockets.c.connect[0]', 21, 19,
         "'src.w' binds the wildcard address tcp://0.0.0.0:7100; a reference to it has no "
         'concrete address to connect to',
         "connect to a concrete endpoint (e.g. tcp://127.0.0.1:7100), or bind 'src.w' to "
         '127.0.0.1'),
        ('ZF060', 'nodes.sink.sockets.c.connect[1]', 21, 26,
         "'src.p' binds the wildcard address tcp://*:*; a reference to it has no concrete "
         'address to connect to',
         "connect to a concrete endpoint (e.g. tcp://127.0.0.1:PORT), or bind 'src.p' to "
         '127.0.0.1'),
        ('ZF070', 'nodes.sink.sockets.c.connect[2]', 21, 33,
         "'sink.c' connects to  src.w  twice",
         'remove the duplicate'),
        ('ZF070', 'nodes.sink.sockets.c.connect[3]', 21, 44,
         "'sink.c' connects to 'src.w' twice: as src.w and as tcp://127.0.0.1:7100",
         'remove one of them'),
        ('ZF054', 'nodes.sink.sockets.c.connect[4]', 21, 68,
         "cannot connect to the wildcard address in 'tcp://*:7100'",
         'connect to a concrete address, e.g. tcp://127.0.0.1:7100'),
        ('ZF070', 'nodes.sink.sockets.c.connect[5]', 22, 19,
         "'sink.c' connects to tcp://127.0.0.1:7100 twice",
         'remove the duplicate'),
    ]


def test_types_must_pair() -> None:
    """ZF050 names both types and what each one peers with."""
    YAML = """
    nodes:
      a:
        run: m:f
        sockets:
          p: {type: PUSH, bind: auto}
          q: {type: PUB, bind: auto}
          r: {type: ROUTER, bind: auto}
      b:
        run: m:g
        sockets:
          c: {type: PUSH, connect: a.p}
          d: {type: PULL, connect: a.q}
          e: {type: DEALER, connect: a.r}
          f: {type: SUB, connect: a.q, subscribe: ""}
    """
    assert rule_diags(YAML) == [
        ('ZF050', 'nodes.b.sockets.c.connect', 11, 32,
         "PUSH socket 'b.c' cannot talk to PUSH socket 'a.p'",
         "PUSH peers with PULL: change one side's type"),
        ('ZF050', 'nodes.b.sockets.d.connect', 12, 32,
         "PULL socket 'b.d' cannot talk to PUB socket 'a.q'",
         'PULL peers with PUSH; PUB peers with SUB or XSUB'),
    ]


def test_codecs_facing_command_nodes_and_each_other() -> None:
    """msgpack towards a command node (ZF068), at the codec when written, else at the socket;
    both ends of a link use one codec (ZF071)."""
    YAML = """
    defaults:
      codec: json
    nodes:
      cmd:
        command: [prog]
        sockets:
          out: {type: PUSH, bind: auto}
          inp: {type: PULL, connect: py.out}
      py:
        run: m:f
        sockets:
          out: {type: PUSH, bind: auto, codec: msgpack}
          inp: {type: PULL, connect: cmd.out}
          raw: {type: PULL, connect: py2.out, codec: raw}
      py2:
        run: m:g
        sockets:
          out: {type: PUSH, bind: auto}
          inp2: {type: PULL, connect: cmd.out, codec: msgpack}
          js: {type: PULL, connect: py.out}
    """
    assert rule_diags(YAML) == [
        ('ZF068', 'nodes.py.sockets.out.codec', 12, 44,
         "'py.out' uses the msgpack codec (zflow frames) but its peer 'cmd.inp' is a command node",
         'command nodes are plain ZeroMQ programs: set `codec: json` or `codec: raw` on this '
         'socket'),
        ('ZF071', 'nodes.py.sockets.raw.connect', 14, 34,
         "'py.raw' uses codec raw but 'py2.out' uses json",
         'both ends of a connection must use the same codec'),
        ('ZF068', 'nodes.py2.sockets.inp2.codec', 19, 51,
         "'py2.inp2' uses the msgpack codec (zflow frames) but its peer 'cmd.out' is a command "
         'node',
         'command nodes are plain ZeroMQ programs: set `codec: json` or `codec: raw` on this '
         'socket'),
        ('ZF071', 'nodes.py2.sockets.js.connect', 20, 33,
         "'py2.js' uses codec json but 'py.out' uses msgpack",
         'both ends of a connection must use the same codec'),
    ]


def test_implicit_msgpack_towards_a_command_node() -> None:
    YAML = """
    nodes:
      cmd:
        command: [prog]
        sockets:
          inp: {type: PULL, connect: py.out, codec: json}
      py:
        run: m:f
        sockets:
          out: {type: PUSH, bind: auto}
      both:
        command: [prog]
        run: m:f
        sockets:
          o: {type: PUSH, connect: cmd2.i}
      cmd2:
        command: [prog]
        sockets:
          i: {type: PULL, bind: auto}
    """
    assert rule_diags(YAML) == [
        ('ZF068', 'nodes.py.sockets.out', 9, 7,
         "'py.out' uses the msgpack codec (zflow frames) but its peer 'cmd.inp' is a command node",
         'command nodes are plain ZeroMQ programs: set `codec: json` or `codec: raw` on this '
         'socket'),
        ('ZF068', 'nodes.both.sockets.o', 14, 7,
         "'both.o' uses the msgpack codec (zflow frames) but its peer 'cmd2.i' is a command node",
         'command nodes are plain ZeroMQ programs: set `codec: json` or `codec: raw` on this '
         'socket'),
    ]


def test_pair_peers() -> None:
    """A PAIR socket has one peer: counted per connect, and per connector replica."""
    YAML = """
    nodes:
      a:
        run: m:f
        sockets:
          p: {type: PAIR, bind: auto}
          q: {type: PAIR, connect: [b.p, c.p]}
          one: {type: PAIR, bind: auto}
      b:
        run: m:g
        sockets:
          p: {type: PAIR, bind: auto}
          c1: {type: PAIR, connect: a.p}
      c:
        run: m:h
        sockets:
          p: {type: PAIR, bind: auto}
          c2: {type: PAIR, connect: a.p}
      d:
        run: m:h
        sockets:
          c3: {type: PAIR, connect: a.one}
    """
    assert rule_diags(YAML, only=['ZF063']) == [
        ('ZF063', 'nodes.a.sockets.p', 5, 7,
         "PAIR socket 'a.p' has 2 peers; PAIR talks to exactly one",
         'use DEALER/ROUTER or PUSH/PULL for more than one peer'),
        ('ZF063', 'nodes.a.sockets.q.connect', 6, 32,
         "PAIR socket 'a.q' has 2 peers; PAIR talks to exactly one",
         'use DEALER/ROUTER or PUSH/PULL for more than one peer'),
    ]


def test_shape_mismatch() -> None:
    """An explicit shape must match the sockets (ZF067); custom and command nodes are not
    checked."""
    YAML = """
    nodes:
      s1: {run: m:f, shape: sink, sockets: {o: {type: PUSH, connect: s5.i}}}
      s2:
        run: m:f
        shape: source
        sockets: {i: {type: PULL, connect: s5.o}, o: {type: PUB, bind: auto}}
      s3:
        run: m:f
        shape: transform
        sockets: {i: {type: SUB, connect: s2.o, subscribe: ""}}
      s4:
        run: m:f
        shape: service
        sockets: {r: {type: REP, bind: auto}, o: {type: PUSH, connect: s5.i}}
      s5:
        run: m:f
        shape: custom
        sockets: {i: {type: PULL, bind: auto}, o: {type: PUSH, bind: auto}}
      s6:
        command: [x]
        shape: sink
        codec: json
        sockets: {o: {type: REQ, connect: s4.r, codec: json}}
      s7: {run: m:f, shape: 3}
      s8:
        run: m:f
        shape: source
        sockets:
          c: {type: PULL, connect: s5.o, stop_on: X}
          x-y: {type: PULL}
          z: [1]
          t: {type: 5}
          u: {type: NOPE}
      s9: {run: m:f, shape: bogus}
      s10:
        run: m:f
        shape: service
        sockets: {r: {type: ROUTER, bind: auto}, d: {type: DEALER, connect: s10.r}}
      s11: {run: m:f, shape: sink, sockets: {r: {type: XPUB, bind: auto}}}
      s12: {run: m:f, shape: sink, sockets: {r: {type: XSUB, connect: s11.r}}}
      s13: {run: m:f, shape: sink, sockets: {r: {type: PAIR, connect: s14.r}}}
      s14: {run: m:f, shape: custom, sockets: {r: {type: PAIR, bind: auto}}}
      s15: {run: m:f, shape: sink, sockets: {r: {type: REQ, connect: s4.r}}}
      s16:
        run: m:f
        shape: sink
        sockets: {r: {type: ROUTER, bind: auto}, p: {type: REP, bind: auto}}
      s17:
        run: m:f
        shape: source
        sockets: {o: {type: PUSH, connect: s5.i}, c: {type: PUB, bind: auto, send_on_end: X}}
      s18:
        run: m:f
        shape: sink
        sockets: {i: {type: SUB, connect: s2.o, subscribe: ""}}
      s19:
        run: m:f
        shape: transform
        sockets: {i: {type: PULL, connect: s5.o}, o: {type: PUB, bind: auto}}
      s20:
        run: m:f
        shape: service
        sockets: {r: {type: ROUTER, connect: s16.r}}
      x-s: {run: m:f, shape: sink}
      s21: 4
    """
    assert rule_diags(YAML) == [
        ('ZF068', 'nodes.s4.sockets.r', 14, 15,
         "'s4.r' uses the msgpack codec (zflow frames) but its peer 's6.o' is a command node",
         'command nodes are plain ZeroMQ programs: set `codec: json` or `codec: raw` on this '
         'socket'),
        ('ZF064', 'nodes.s16.sockets.p', 47, 46,
         "nothing connects to 's16.p', and with `bind: auto` nothing outside the topology can "
         'find it',
         'connect a socket to it with `connect: s16.p`, or remove it'),
        ('ZF064', 'nodes.s17.sockets.c', 51, 47,
         "nothing connects to 's17.c', and with `bind: auto` nothing outside the topology can "
         'find it',
         'connect a socket to it with `connect: s17.c`, or remove it'),
        ('ZF064', 'nodes.s19.sockets.o', 59, 47,
         "nothing connects to 's19.o', and with `bind: auto` nothing outside the topology can "
         'find it',
         'connect a socket to it with `connect: s19.o`, or remove it'),
        ('ZF067', 'nodes.s1.shape', 2, 25,
         "node 's1' says shape sink, but its sockets make it a source",
         'remove `shape:` (inferred: source), fix the sockets, or use `shape: custom` to drive '
         'the sockets yourself'),
        ('ZF067', 'nodes.s2.shape', 5, 12,
         "node 's2' says shape source, but its sockets make it a transform",
         'remove `shape:` (inferred: transform), fix the sockets, or use `shape: custom` to '
         'drive the sockets yourself'),
        ('ZF067', 'nodes.s3.shape', 9, 12,
         "node 's3' says shape transform, but its sockets make it a sink",
         'remove `shape:` (inferred: sink), fix the sockets, or use `shape: custom` to drive the '
         'sockets yourself'),
        ('ZF067', 'nodes.s4.shape', 13, 12,
         "node 's4' says shape service, but its sockets make it a custom",
         'remove `shape:` (inferred: custom), fix the sockets, or use `shape: custom` to drive '
         'the sockets yourself'),
        ('ZF067', 'nodes.s10.shape', 37, 12,
         "node 's10' says shape service, but its sockets make it a custom",
         'remove `shape:` (inferred: custom), fix the sockets, or use `shape: custom` to drive '
         'the sockets yourself'),
        ('ZF067', 'nodes.s11.shape', 39, 26,
         "node 's11' says shape sink, but its sockets make it a custom",
         'remove `shape:` (inferred: custom), fix the sockets, or use `shape: custom` to drive '
         'the sockets yourself'),
        ('ZF067', 'nodes.s12.shape', 40, 26,
         "node 's12' says shape sink, but its sockets make it a custom",
         'remove `shape:` (inferred: custom), fix the sockets, or use `shape: custom` to drive '
         'the sockets yourself'),
        ('ZF067', 'nodes.s13.shape', 41, 26,
         "node 's13' says shape sink, but its sockets make it a custom",
         'remove `shape:` (inferred: custom), fix the sockets, or use `shape: custom` to drive '
         'the sockets yourself'),
        ('ZF067', 'nodes.s15.shape', 43, 26,
         "node 's15' says shape sink, but its sockets make it a custom",
         'remove `shape:` (inferred: custom), fix the sockets, or use `shape: custom` to drive '
         'the sockets yourself'),
        ('ZF067', 'nodes.s16.shape', 46, 12,
         "node 's16' says shape sink, but its sockets make it a service",
         'remove `shape:` (inferred: service), fix the sockets, or use `shape: custom` to drive '
         'the sockets yourself'),
    ]


def test_exactly_once_needs_push_pull_msgpack_zflow_nodes_and_one_sink() -> None:
    """ZF073: every way a topology falls outside exactly-once delivery."""
    YAML = """
    delivery: exactly-once
    nodes:
      src:
        run: m:f
        sockets:
          out: {type: PUSH, bind: auto}
          ctl: {type: SUB, connect: k1.ctl, subscribe: "", stop_on: END}
          pub: {type: PUB, bind: auto}
          js: {type: PUSH, bind: auto, codec: json}
          mp: {type: PUSH, bind: auto, codec: msgpack}
          bad: {type: NOPE, bind: auto}
      cmd:
        command: [prog]
      x-t: 3
      k1:
        run: m:g
        sockets:
          inp: {type: PULL, connect: [src.out, src.mp]}
          ctl: {type: PUB, bind: auto, send_on_end: END}
      k2:
        run: m:g
        replicas: 3
        sockets:
          inp: {type: PULL, connect: src.js, codec: json}
      k3:
        run: m:h
        replicas: 1
        sockets:
          inp: {type: SUB, connect: src.pub, subscribe: ""}
      k4: 5
    """
    assert rule_diags(YAML, only=['ZF073']) == [
        ('ZF073', 'nodes.src.sockets.pub.type', 8, 19,
         "'src.pub' is PUB: exactly-once delivery covers PUSH/PULL data sockets only",
         'use PUSH/PULL for the data path, or mark control channels with stop_on / send_on_end'),
        ('ZF073', 'nodes.src.sockets.js.codec', 9, 43,
         "'src.js' uses codec json: exactly-once needs zflow's msgpack frames",
         None),
        ('ZF073', 'nodes.k2.sockets.inp.codec', 24, 49,
         "'k2.inp' uses codec json: exactly-once needs zflow's msgpack frames",
         None),
        ('ZF073', 'nodes.k3.sockets.inp.type', 29, 19,
         "'k3.inp' is SUB: exactly-once delivery covers PUSH/PULL data sockets only",
         'use PUSH/PULL for the data path, or mark control channels with stop_on / send_on_end'),
        ('ZF073', 'nodes.cmd', 12, 3,
         "node 'cmd' is a command node: exactly-once needs zflow nodes end to end",
         None),
        ('ZF073', 'nodes.k2', 20, 3,
         "'k2' is a second sink: exactly-once acknowledges a record when one sink has it",
         'end the pipeline in one sink node'),
        ('ZF073', 'nodes.k2.replicas', 22, 15,
         "sink 'k2' has 3 replicas: duplicates must meet in one place to be dropped",
         'give the sink `replicas: 1`, or say `delivery: at-least-once`'),
        ('ZF073', 'nodes.k3', 25, 3,
         "'k3' is a second sink: exactly-once acknowledges a record when one sink has it",
         'end the pipeline in one sink node'),
    ]


def test_exactly_once_sink_replicas() -> None:
    YAML = """
    delivery: exactly-once
    nodes:
      k1:
        run: m:g
        replicas: 2
        sockets:
          inp: {type: PULL, bind: auto}
      t:
        run: m:g
        replicas: 2
        sockets:
          inp: {type: PULL, connect: k1.inp}
          out: {type: PUSH, bind: auto}
    """
    assert rule_diags(YAML, only=['ZF073']) == [
        ('ZF073', 'nodes.k1.replicas', 5, 15,
         "sink 'k1' has 2 replicas: duplicates must meet in one place to be dropped",
         'give the sink `replicas: 1`, or say `delivery: at-least-once`'),
    ]
    # at-least-once takes a sink of any number of replicas, and keeps the other rules
    alo = YAML.replace("delivery: exactly-once", "delivery: at-least-once")
    assert rule_diags(alo, only=['ZF073']) == []
    pub = alo.replace("out: {type: PUSH, bind: auto}", "out: {type: PUB, bind: auto}")
    assert [d[4] for d in rule_diags(pub, only=['ZF073'])] == [
        "'t.out' is PUB: at-least-once delivery covers PUSH/PULL data sockets only"]


def test_exactly_once_rules_apply_only_to_exactly_once() -> None:
    YAML = """
    delivery: best-effort
    nodes:
      k1:
        command: [x]
        sockets:
          inp: {type: PUB, bind: auto, codec: json}
      k2:
        run: m:f
        replicas: 2
        sockets:
          inp: {type: SUB, connect: k1.inp, codec: json, subscribe: ""}
      k3:
        run: m:f
        sockets:
          inp: {type: SUB, connect: k1.inp, codec: json, subscribe: ""}
    """
    assert rule_diags(YAML) == []


def test_odd_documents_are_skipped_not_fatal() -> None:
    """The checks skip what the schema reports (non-mappings, bad types, x- keys), never raise."""
    YAML = """
    defaults: [1]
    nodes:
      a:
        run: m:f
        replicas: true
        sockets:
          p: {type: PAIR, bind: auto}
          q: {type: PUSH, bind: 5}
          r: {type: PUSH, bind: auto, connect: b.i}
          s: {type: PULL, connect: [3, b.o, null]}
          t: {type: PUSH, connect: {x: 1}}
          u: {type: PUSH, bind: auto, codec: bogus}
          v: {type: 7, bind: auto, subscribe: x, stop_on: y, send_on_end: z, topic: t}
          w: {type: PUB, bind: auto, subscribe: x}
          x-z: {type: PAIR, bind: auto}
      b:
        run: m:g
        replicas: 0
        sockets:
          i: {type: PULL, bind: auto, codec: 5}
          o: {type: PUSH, bind: auto}
          pp: {type: PAIR, bind: auto}
          x-r: {type: PUSH, connect: b.i}
      c:
        run: m:h
        replicas: "3"
        sockets: [1]
      d: 5
      x-e:
        run: m:h
        replicas: 4
        sockets:
          p: {type: PAIR, bind: auto}
      e:
        run: m:h
        replicas: 2
        sockets:
          p: [PAIR]
    """
    assert rule_diags(YAML) == [
        ('ZF062', 'nodes.a.sockets.w.subscribe', 14, 34,
         "subscribe is only for SUB sockets; 'a.w' is PUB",
         'remove it, or make the socket `type: SUB`'),
        ('ZF064', 'nodes.a.sockets.p', 7, 7,
         "nothing connects to 'a.p', and with `bind: auto` nothing outside the topology can find "
         'it',
         'connect a socket to it with `connect: a.p`, or remove it'),
        ('ZF064', 'nodes.a.sockets.u', 12, 7,
         "nothing connects to 'a.u', and with `bind: auto` nothing outside the topology can find "
         'it',
         'connect a socket to it with `connect: a.u`, or remove it'),
        ('ZF064', 'nodes.a.sockets.w', 14, 7,
         "nothing connects to 'a.w', and with `bind: auto` nothing outside the topology can find "
         'it',
         'connect a socket to it with `connect: a.w`, or remove it'),
        ('ZF064', 'nodes.b.sockets.i', 20, 7,
         "nothing connects to 'b.i', and with `bind: auto` nothing outside the topology can find "
         'it',
         'connect a socket to it with `connect: b.i`, or remove it'),
        ('ZF064', 'nodes.b.sockets.pp', 22, 7,
         "nothing connects to 'b.pp', and with `bind: auto` nothing outside the topology can "
         'find it',
         'connect a socket to it with `connect: b.pp`, or remove it'),
    ]


def test_nodes_not_a_mapping() -> None:
    YAML = """
    nodes: [1]
    """
    assert rule_diags(YAML) == []


def test_socket_without_a_valid_entry() -> None:
    YAML = """
    defaults: {codec: 5}
    nodes:
      a:
        run: m:f
        sockets:
          o: {type: PUSH, bind: auto}
          x-o: {type: PUSH, bind: auto, codec: json}
          k: [1]
      b:
        run: m:f
        sockets:
          i: {type: PULL, connect: [a.o, a.x-o, a.k]}
    """
    assert rule_diags(YAML) == [
        ('ZF054', 'nodes.b.sockets.i.connect[1]', 12, 38,
         "'a.x-o' is not an endpoint or a node.socket reference",
         'connect: node.socket, tcp://127.0.0.1:5557 or ipc:///path'),
        ('ZF052', 'nodes.b.sockets.i.connect[2]', 12, 45,
         "'b.i' connects to 'a.k', but node 'a' has no socket 'k'",
         "did you mean 'a.k'?"),
    ]


def test_default_codec_applies_to_every_socket() -> None:
    YAML = """
    defaults: {codec: raw}
    nodes:
      a:
        run: m:f
        sockets:
          o: {type: PUSH, bind: auto}
      b:
        run: m:f
        sockets:
          i: {type: PULL, connect: a.o, codec: json}
          j: {type: PULL, connect: a.o}
    """
    assert rule_diags(YAML) == [
        ('ZF071', 'nodes.b.sockets.i.connect', 10, 32,
         "'b.i' uses codec json but 'a.o' uses raw",
         'both ends of a connection must use the same codec'),
    ]


def test_total_replicas_at_the_limit() -> None:
    YAML = """
    nodes:
      a: {run: m:f, replicas: 6000}
      b: {run: m:f, replicas: 3999}
      c: {run: m:f}
      x-d: {run: m:f, replicas: 9000}
      e: 5
    """
    assert rule_diags(YAML, only=['ZF074']) == []


def test_total_replicas_over_the_limit() -> None:
    """Every replica is a process: at most 10,000 in all (ZF074), said once,
    at the node that goes over, naming the largest five."""
    YAML = """
    nodes:
      a: {run: m:f, replicas: 10000}
      b: {run: m:f, replicas: 1}
      c: {run: m:f, replicas: 2}
      d: {run: m:f, replicas: 3}
      e: {run: m:f, replicas: 4}
      f: {run: m:f, replicas: 5}
      g: {run: m:f, replicas: 10001}
      h: {run: m:f, replicas: true}
    """
    assert rule_diags(YAML, only=['ZF074']) == [
        ('ZF074', 'nodes.b.replicas', 3, 27,
         '10015 replicas in total over all nodes; at most 10000 (every replica is a process on '
         'this machine)',
         'largest nodes: a: 10000, f: 5, e: 4, d: 3, c: 2'),
    ]


def test_total_replicas_over_the_limit_by_a_default() -> None:
    YAML = """
    nodes:
      a: {run: m:f, replicas: 9999}
      x-b: {run: m:f, replicas: 9}
      d: {run: m:f, replicas: 1}
      c:
        run: m:f
    """
    assert rule_diags(YAML, only=['ZF074']) == [
        ('ZF074', 'nodes.c', 5, 3,
         '10001 replicas in total over all nodes; at most 10000 (every replica is a process on '
         'this machine)',
         'largest nodes: a: 9999, d: 1, c: 1'),
    ]


def test_auto_ipc_paths_must_fit_a_unix_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TMPDIR=/tmpdir the run directory is /tmpdir/zflow-XXXXXXXX: 107 bytes hold a
    63-character node name, the last replica's index and an 18-character socket name."""
    monkeypatch.setattr(tempfile, "tempdir", "/tmpdir")
    assert rules.run_dir_template() == "/tmpdir/zflow-XXXXXXXX"
    n1, n2 = "n" + "a" * 61 + "1", "n" + "a" * 61 + "2"
    s18, s19 = "s" * 18, "t" * 19
    text = f"""
    nodes:
      {n1}:
        run: m:f
        replicas: 10
        sockets:
          {s18}: {{type: PUSH, bind: auto}}
          {s19}: {{type: PUSH, bind: ipc}}
          {"u" * 30}: {{type: PUSH, bind: tcp}}
          {"v" * 30}: {{type: PUSH, bind: "ipc:///x"}}
          {"w" * 30}: {{type: PUSH, connect: other.o}}
      {n2}:
        run: m:f
        replicas: 11
        sockets:
          {s18}: {{type: PUSH, bind: auto}}
      {"B" + "a" * 62}:
        run: m:f
        sockets:
          {"c" * 40}: {{type: PUSH, bind: auto}}
      ok:
        run: m:f
        sockets:
          {"9" + "d" * 60}: {{type: PUSH, bind: auto}}
    """
    hint = ("use a node and socket name 1 characters shorter, `bind: tcp`, or a shorter TMPDIR "
            "(the run directory is made in /tmpdir)")
    assert rule_diags(text, only=["ZF057"]) == [
        ("ZF057", f"nodes.{n1}.sockets.{s19}.bind", 7, 47,
         f"socket '{n1}.{s19}' would bind the ipc path /tmpdir/zflow-XXXXXXXX/{n1}.9.{s19}, "
         "108 characters; Linux allows at most 107", hint),
        ("ZF057", f"nodes.{n2}.sockets.{s18}.bind", 15, 46,
         f"socket '{n2}.{s18}' would bind the ipc path /tmpdir/zflow-XXXXXXXX/{n2}.10.{s18}, "
         "108 characters; Linux allows at most 107", hint),
    ]


def test_rules_of_a_document_that_is_not_a_mapping() -> None:
    assert rules.check([1], Locator("t.yaml", None)) == []
    assert rules.check(None, Locator("t.yaml", None)) == []


# -- endpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text,binding,want", [
    ("tcp://127.0.0.1:5", True, Endpoint("tcp", host="127.0.0.1", port=5)),
    ("tcp://h:1", True, Endpoint("tcp", host="h", port=1)),
    ("tcp://h:65535", False, Endpoint("tcp", host="h", port=65535)),
    ("tcp://h:0", True, Endpoint("tcp", host="h", port=None)),
    ("tcp://h:*", True, Endpoint("tcp", host="h", port=None)),
    ("tcp://*:5", True, Endpoint("tcp", host="*", port=5)),
    ("tcp://src;dst:9", False, Endpoint("tcp", host="dst", port=9)),  # a source address
    ("tcp://a;b;c:9", False, Endpoint("tcp", host="b;c", port=9)),
    ("tcp://[::1]:7", True, Endpoint("tcp", host="[::1]", port=7)),
    ("tcp://a:b:9", True, Endpoint("tcp", host="a:b", port=9)),  # the port is after the last ':'
    ("ipc://" + "p" * 107, True, Endpoint("ipc", path="p" * 107)),
    ("ipc://a://b", True, Endpoint("ipc", path="a://b")),
])
def test_endpoints_that_parse(text: str, binding: bool, want: Endpoint) -> None:
    assert parse_endpoint(text, binding=binding) == want


@pytest.mark.parametrize("text,binding,code,message,hint", [
    ("host:5", True, "ZF054", "'host:5' is not an endpoint",
     "bind: auto, tcp://127.0.0.1:5557 or ipc:///path"),
    ("host:5", False, "ZF054", "'host:5' is not an endpoint or a node.socket reference",
     "connect: node.socket, tcp://127.0.0.1:5557 or ipc:///path"),
    ("inproc://x", True, "ZF056", "inproc endpoint 'inproc://x' works only inside one process",
     "zflow runs every node (and every replica) as its own process: use `bind: auto` (ipc) or "
     "tcp"),
    ("ipc://", True, "ZF054", "ipc endpoint 'ipc://' has no path", None),
    ("ipc://" + "p" * 108, True, "ZF057", "ipc path is 108 characters; Linux allows at most 107",
     "use a shorter path, or `bind: auto` (a short private path)"),
    ("pgm://x", True, "ZF055", "transport 'pgm' is not supported",
     "zflow uses tcp:// and ipc:// (pgm, udp, ws, ... are not supported)"),
    ("tcp://h", True, "ZF054", "tcp endpoint 'tcp://h' has no port",
     "write tcp://HOST:PORT, e.g. tcp://127.0.0.1:5557"),
    ("tcp://h:", True, "ZF054", "tcp endpoint 'tcp://h:' has no port",
     "write tcp://HOST:PORT, e.g. tcp://127.0.0.1:5557"),
    ("tcp://h:0", False, "ZF054", "cannot connect to 'tcp://h:0': the port is a wildcard",
     "connect to a concrete port"),
    ("tcp://h:*", False, "ZF054", "cannot connect to 'tcp://h:*': the port is a wildcard",
     "connect to a concrete port"),
    ("tcp://h:65536", True, "ZF054", "tcp port '65536' in 'tcp://h:65536' is not 1..65535", None),
    ("tcp://h:x1", True, "ZF054", "tcp port 'x1' in 'tcp://h:x1' is not 1..65535", None),
    ("tcp://h:5://x", True, "ZF054", "tcp port '//x' in 'tcp://h:5://x' is not 1..65535", None),
    ("tcp://*:5", False, "ZF054", "cannot connect to the wildcard address in 'tcp://*:5'",
     "connect to a concrete address, e.g. tcp://127.0.0.1:5"),
    ("tcp://0.0.0.0:6", False, "ZF054",
     "cannot connect to the wildcard address in 'tcp://0.0.0.0:6'",
     "connect to a concrete address, e.g. tcp://127.0.0.1:6"),
    ("tcp://:5", False, "ZF054", "cannot connect to the wildcard address in 'tcp://:5'",
     "connect to a concrete address, e.g. tcp://127.0.0.1:5"),
    ("tcp://[::]:5", False, "ZF054", "cannot connect to the wildcard address in 'tcp://[::]:5'",
     "connect to a concrete address, e.g. tcp://127.0.0.1:5"),
])
def test_endpoints_that_do_not(text: str, binding: bool, code: str, message: str,
                               hint: str | None) -> None:
    with pytest.raises(EndpointError) as e:
        parse_endpoint(text, binding=binding)
    assert (e.value.code, e.value.message, e.value.hint) == (code, message, hint)
    assert str(e.value) == message


def test_endpoint_text_and_hosts() -> None:
    assert str(Endpoint("tcp", host="h", port=None)) == "tcp://h:*"
    assert str(Endpoint("tcp", host="h", port=5)) == "tcp://h:5"
    assert str(Endpoint("ipc", path="/r/x")) == "ipc:///r/x"
    assert Endpoint("tcp", host="localhost").norm_host() == "127.0.0.1"
    assert Endpoint("tcp", host="[::1]").norm_host() == "::1"
    assert Endpoint("tcp", host="10.0.0.1").norm_host() == "10.0.0.1"
    assert Endpoint("ipc", path="x").loopback and not Endpoint("ipc", path="x").wildcard_host
    assert Endpoint("tcp", host="[::1]").loopback and Endpoint("tcp", host="lo").loopback
    assert not Endpoint("tcp", host="example.org").loopback
    assert [Endpoint("tcp", host=h).wildcard_host for h in ("*", "0.0.0.0", "::", "[::]", "",
                                                             "127.0.0.1")] == [True] * 5 + [False]


def test_split_ref() -> None:
    assert rules.split_ref("a.b") == ("a", "b")
    assert rules.split_ref(" a-1.b_2 ") == ("a-1", "b_2")
    assert rules.split_ref("tcp://a.b:1") is None
    assert rules.split_ref("a.b.c") is None and rules.split_ref(3) is None


@pytest.mark.parametrize("types,shape", [
    ([], "source"), (["PUSH"], "source"), (["PUB"], "source"), (["PULL"], "sink"),
    (["SUB"], "sink"), (["PULL", "PUSH"], "transform"), (["SUB", "PUB"], "transform"),
    (["REP"], "service"), (["ROUTER", "REP"], "service"), (["REP", "PUSH"], "custom"),
    (["REQ"], "custom"), (["DEALER"], "custom"), (["PAIR"], "custom"), (["XPUB"], "custom"),
    (["XSUB"], "custom"), (["ROUTER", "DEALER"], "custom"),
])
def test_inferred_shape(types: list[str], shape: str) -> None:
    node = {"sockets": {f"s{i}": {"type": t} for i, t in enumerate(types)}}
    assert rules.inferred_shape(node) == shape
    assert rules.infer_shape(node) == shape
    assert rules.infer_shape({**node, "shape": "custom"}) == "custom"


def test_inferred_shape_ignores_control_and_odd_sockets() -> None:
    node = {"sockets": {"c": {"type": "PULL", "stop_on": "X"}, "e": {"type": "PUB",
                        "send_on_end": "Y"}, "x-a": {"type": "PULL"}, "b": [1],
                        "t": {"type": 4}, "u": {"type": "NOPE"}, "o": {"type": "PUSH"}}}
    assert rules.inferred_shape(node) == "source"
    assert rules.inferred_shape({"sockets": [1]}) == "source"
    assert rules.inferred_shape(3) == "source"
    assert rules.infer_shape({"shape": 3, "sockets": {"i": {"type": "PULL"}}}) == "sink"


def test_exactly_once_ignores_extension_nodes(tmp_path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        name: eo
        delivery: exactly-once
        nodes:
          src:
            run: m:f
            sockets:
              out: {type: PUSH, bind: auto}
          sink:
            run: m:g
            sockets:
              inp: {type: PULL, connect: src.out}
          x-spare:
            command: [prog]
          x-old-sink:
            run: m:g
            replicas: 2
            sockets:
              inp: {type: PULL, connect: src.out}
    """))
    res = load(str(path), env={})
    assert [(d.code, d.line) for d in res.diagnostics] == []
