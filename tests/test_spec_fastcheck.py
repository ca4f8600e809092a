"""fastcheck says valid/invalid exactly as jsonschema does (or that it is unsure), so skipping
jsonschema for a valid file changes no diagnostic; and a valid file does not import it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from zflow.spec.fastcheck import Checker, Unsure
from zflow.spec.schema import schema

ROOT = Path(__file__).parent.parent
FILES = sorted([*ROOT.glob("topologies/*.yaml"), *ROOT.glob("tests/spec_corpus/*/*.yaml")])
JSONSCHEMA = Draft202012Validator(schema())
CHECKER = Checker(schema())
SQUARES = yaml.safe_load((ROOT / "topologies" / "squares.yaml").read_text())


def _agrees(doc: object) -> bool | None:
    """fastcheck's verdict when it has one; fails the test where it differs from jsonschema's."""
    try:
        verdict = CHECKER.valid(doc)
    except Unsure:
        return None
    assert verdict == JSONSCHEMA.is_valid(doc), json.dumps(doc, default=repr)[:400]
    return verdict


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_same_verdict_as_jsonschema_on_every_file(path: Path) -> None:
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        pytest.skip("not YAML: never reaches the schema")
    _agrees(doc)


def test_it_answers_for_the_shipped_topologies_and_the_invalid_corpus() -> None:
    """Not unsure everywhere (which would agree trivially and save nothing)."""
    verdicts = []
    for p in FILES:
        try:
            verdicts.append(_agrees(yaml.safe_load(p.read_text())))
        except (yaml.YAMLError, UnicodeDecodeError, ValueError):
            continue
    assert verdicts.count(True) >= 8 and verdicts.count(False) >= 20


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 70000), st.floats(-2, 3),
                   st.sampled_from(["", "x", "PUSH", "sub", "tcp://*:1", "auto", "a:b", "1x",
                                    "fail", "skip", "msgpack", "json", "on-failure", "-"]),
                   st.lists(st.sampled_from(["a", "b", 1]), max_size=2),
                   st.dictionaries(st.sampled_from(["type", "bind", "x", "initial"]),
                                   st.sampled_from([1, "PUSH", None]), max_size=2))
KEYS = st.sampled_from(["type", "bind", "connect", "replicas", "run", "command", "hwm", "codec",
                        "restart", "backoff", "on_error", "subscribe", "version", "name",
                        "params", "nodes", "defaults", "batch", "grace", "x-note", "bogus", 3])


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, prefix + (k,)))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_same_verdict_as_jsonschema_on_random_edits(data: st.DataObject) -> None:
    doc = copy.deepcopy(SQUARES)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if not path:
            continue
        if data.draw(st.booleans()) or not isinstance(parent[path[-1]], dict):
            parent[path[-1]] = data.draw(VALUES)
        else:
            parent[path[-1]][data.draw(KEYS)] = data.draw(VALUES)
    _agrees(doc)


def test_unmodelled_input_is_unsure_not_a_verdict() -> None:
    with pytest.raises(Unsure):
        Checker({"type": "object", "unevaluatedProperties": False}).valid({})
    with pytest.raises(Unsure):
        CHECKER.valid({**SQUARES, "name": b"bytes"})


def test_a_valid_file_does_not_import_jsonschema_and_an_invalid_one_does() -> None:
    code = ("import sys; from zflow.spec import load; r = load(sys.argv[1]); "
            "print(r.ok, 'jsonschema' in sys.modules)")
    ok = subprocess.run([sys.executable, "-c", code, str(ROOT / "topologies" / "squares.yaml")],
                        capture_output=True, text=True, check=True).stdout.split()
    assert ok == ["True", "False"]
    bad = ROOT / "tests" / "spec_corpus" / "invalid"
    bad_file = next(p for p in sorted(bad.glob("*.yaml")) if not _agrees(
        yaml.safe_load(p.read_text())) and _agrees(yaml.safe_load(p.read_text())) is not None)
    out = subprocess.run([sys.executable, "-c", code, str(bad_file)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "True"]
