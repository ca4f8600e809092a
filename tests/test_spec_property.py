"""Random edits of a valid topology never crash the validator: load() always returns, and every
diagnostic it returns is well formed and renders in all three formats."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zflow.spec import load, render

ROOT = Path(__file__).parent.parent
SQUARES = (ROOT / "topologies" / "squares.yaml").read_text()
LINES = SQUARES.splitlines(keepends=True)

# fragments that tend to hit interesting paths: YAML syntax, tags, anchors, types, endpoints
FRAGMENTS = [":", "- ", "{", "}", "[", "]", "&a ", "*a", "<<: *a", "!!python/name:os.system",
             "!x ", "\t", "---\n", "\"", "'", "#", "~", "null", "no", "0x1f", "1e9", "-1",
             "${HOME}", "${NOPE}", "${", "$$", "x-y: 1", "PUSH", "SUB", "PAIR", "REQ", "ROUTER",
             "bind: tcp://*:5557", "connect: nowhere.work", "inproc://a", "ipc://" + "p" * 120,
             "subscribe: ''", "shape: sink", "replicas: 3", "command: []", "codec: json",
             "stop_on: X", "send_on_end: X", "topic: t", "\x00", "\u00e9", "\ufeff", "? [a]\n"]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup", "swap", "chars"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "insert":
            frag = draw(st.sampled_from(FRAGMENTS))
            indent = " " * draw(st.sampled_from([0, 2, 4, 6, 8]))
            lines.insert(i, indent + frag + "\n")
        elif op == "delete" and lines:
            del lines[i]
        elif op == "replace" and lines:
            line = lines[i]
            j = draw(st.integers(0, len(line)))
            k = draw(st.integers(j, min(len(line), j + 8)))
            lines[i] = line[:j] + draw(st.sampled_from(FRAGMENTS)) + line[k:]
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "chars" and lines:
            lines[i] = draw(st.text(max_size=20)) + lines[i]
    return "".join(lines)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=mutated(), sets=st.lists(st.sampled_from(
    ["nodes.worker.replicas=2", "nodes.x.y=1", "version=2", "nodes=[]", "a..b=1", "=",
     "nodes.worker.sockets.work.connect=[ventilator.work, ventilator.work]", "name={a: [",
     "nodes.worker.command.0=x", "nodes.results.sockets=null"]), max_size=2),
       scale=st.lists(st.sampled_from(["worker=3", "nope=1", "worker=0", "x"]), max_size=1))
def test_mutations_never_crash(tmp_path_factory, text: str, sets: list[str],
                               scale: list[str]) -> None:
    path = tmp_path_factory.mktemp("m") / "t.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    res = load(str(path), overrides=sets, scale=scale, env={"HOME": "/h"})
    assert res.ok == (res.topology is not None)
    for d in res.diagnostics:
        assert d.severity in ("error", "warning") and d.code.startswith("ZF") and d.message
        assert d.line >= 0 and d.col >= 0
    for fmt in ("human", "json", "github"):
        render(res.diagnostics, fmt, io.StringIO(), color=True, sources=res.sources)


# Structurally odd documents (wrong types in every place) go straight to the schema translation
# and the ZeroMQ rules, which must skip what is malformed instead of raising.
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=True),
    st.text(max_size=5),
    st.sampled_from(["PUSH", "PULL", "SUB", "PUB", "PAIR", "REQ", "REP", "DEALER", "ROUTER",
                     "XPUB", "XSUB", "auto", "tcp", "ipc", "tcp://*:5", "tcp://127.0.0.1:5",
                     "a.s", "b.s", "inproc://x", "ipc:///a", "json", "sink", "m:f"]))
_KEYS = st.sampled_from(["type", "bind", "connect", "subscribe", "codec", "stop_on",
                         "send_on_end", "topic", "replicas", "shape", "run", "command",
                         "sockets", "s", "x-allow-public", "hwm", "sokets"])
_VALUES = st.recursive(_SCALARS, lambda c: st.one_of(st.lists(c, max_size=3),
                                                     st.dictionaries(_KEYS, c, max_size=4)),
                       max_leaves=20)
_DOCS = st.fixed_dictionaries({
    "version": st.just(1), "name": st.just("t"), "defaults": _VALUES,
    "nodes": st.dictionaries(st.sampled_from(["a", "b", "x-c"]), st.one_of(
        _VALUES,
        st.fixed_dictionaries({
            "run": st.just("m:f"), "replicas": _SCALARS,
            "sockets": st.dictionaries(st.sampled_from(["s", "t"]), st.one_of(
                _VALUES, st.dictionaries(_KEYS, _VALUES, max_size=5)), max_size=3)})),
        max_size=3)})


@settings(max_examples=150, deadline=None)
@given(doc=_DOCS)
def test_odd_structures_never_crash_schema_or_rules(doc: dict) -> None:
    from zflow.spec import infer_shape
    from zflow.spec.locate import Locator
    from zflow.spec.rules import check
    from zflow.spec.schema import schema_diagnostics

    loc = Locator("f.yaml", None)
    for d in schema_diagnostics(doc, loc) + check(doc, loc):
        assert d.code.startswith("ZF") and d.line >= 1
    for node in doc["nodes"].values():
        assert isinstance(infer_shape(node), str)
