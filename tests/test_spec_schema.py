"""The shipped schema: printed == committed, well-formed, documented, and plain jsonschema accepts
every repository topology (what editors and CI see)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from zflow.spec import schema_text

ROOT = Path(__file__).parent.parent
COMMITTED = ROOT / "schemas" / "topology.schema.json"


def test_zflow_schema_prints_the_committed_copy_byte_for_byte() -> None:
    out = subprocess.run([sys.executable, "-m", "zflow", "schema"], capture_output=True,
                         check=True, cwd=ROOT).stdout
    assert out == COMMITTED.read_bytes()
    assert schema_text().encode() == COMMITTED.read_bytes()


def test_schema_is_valid_draft_2020_12() -> None:
    schema = json.loads(schema_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _walk(node: object, path: str = "#"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def test_every_property_has_a_description_and_objects_are_closed() -> None:
    schema = json.loads(schema_text())
    defs = schema["$defs"]
    for path, node in _walk(schema):
        for name, sub in node.get("properties", {}).items():
            target = sub
            if "$ref" in sub:
                target = defs[sub["$ref"].rsplit("/", 1)[1]]
            assert target.get("description") or sub.get("description"), f"{path}/{name}"
        if node.get("type") == "object" and path != "#/$defs/node/properties/params":
            assert node.get("additionalProperties") is not True, path
            assert "additionalProperties" in node, path
            if node["additionalProperties"] is False:
                assert "^x-" in node.get("patternProperties", {}), path


def test_socket_types_are_an_enum() -> None:
    schema = json.loads(schema_text())
    types = schema["$defs"]["socket"]["properties"]["type"]["enum"]
    assert types == ["PUSH", "PULL", "PUB", "SUB", "XPUB", "XSUB", "REQ", "REP", "DEALER",
                     "ROUTER", "PAIR"]


TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml")) + sorted(
    (ROOT / "tests" / "spec_corpus" / "valid").glob("*.yaml"))


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_plain_jsonschema_accepts_topology(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    if path.name == "features.yaml":
        pytest.skip("uses ${VAR} in a number field (zflow substitutes before validating)")
    errors = list(Draft202012Validator(json.loads(schema_text())).iter_errors(data))
    assert errors == [], [e.message for e in errors]


def test_plain_jsonschema_rejects_basic_mistakes() -> None:
    v = Draft202012Validator(json.loads(schema_text()))
    base = {"version": 1, "name": "t",
            "nodes": {"a": {"run": "m:f", "sockets": {"s": {"type": "PUSH", "bind": "auto"}}}}}
    assert v.is_valid(base)
    bad = json.loads(json.dumps(base))
    bad["nodes"]["a"]["sockets"]["s"]["type"] = "push"
    assert not v.is_valid(bad)
    bad = json.loads(json.dumps(base))
    bad["nodes"]["a"]["command"] = ["x"]
    assert not v.is_valid(bad)
    bad = json.loads(json.dumps(base))
    bad["nodes"]["a"]["sockets"]["s"]["connect"] = "b.s"
    assert not v.is_valid(bad)
    bad = json.loads(json.dumps(base))
    bad["nodes"]["a"]["sokets"] = {}
    assert not v.is_valid(bad)
    ext = json.loads(json.dumps(base))
    ext["x-anything"] = {"a": 1}
    ext["nodes"]["a"]["x-owner"] = "me"
    ext["nodes"]["a"]["sockets"]["s"]["x-note"] = 1
    assert v.is_valid(ext)
