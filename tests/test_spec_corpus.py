"""The corpus: every invalid file reports its declared code at its declared line; valid files are
clean even under --strict, and together they use every socket type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zflow.spec import SOCKET_TYPES, load

CORPUS = Path(__file__).parent / "spec_corpus"
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))
VALID = sorted((CORPUS / "valid").glob("*.yaml"))
EXPECT = re.compile(rb"^# expect: (ZF\d{3}) line (\d+)")


def test_corpus_is_big_enough() -> None:
    assert len(INVALID) >= 35
    assert len(VALID) >= 5


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_file_reports_expected_code_at_line(path: Path) -> None:
    first = path.read_bytes().split(b"\n", 1)[0]
    m = EXPECT.match(first)
    assert m, f"{path.name}: first line must be '# expect: ZFnnn line N'"
    code, line = m.group(1).decode(), int(m.group(2))
    res = load(str(path), env={})
    got = [(d.code, d.line) for d in res.diagnostics]
    assert (code, line) in got, f"{path.name}: want {code} at line {line}, got {got}"
    for d in res.diagnostics:
        assert d.file == str(path) and d.line >= 1 and d.col >= 1, d
    if any(d.severity == "error" for d in res.diagnostics):
        assert res.topology is None and not res.ok


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_file_is_clean(path: Path) -> None:
    res = load(str(path), env={})
    assert res.diagnostics == []
    assert res.ok and not res.unreadable
    assert isinstance(res.topology, dict)


def test_valid_corpus_covers_every_socket_type() -> None:
    seen = set()
    for path in VALID:
        topo = load(str(path), env={}).topology
        assert topo
        for node in topo["nodes"].values():
            seen.update(s["type"] for s in node.get("sockets", {}).values())
    assert seen == set(SOCKET_TYPES)


def test_repository_topologies_are_clean() -> None:
    root = Path(__file__).parent.parent / "topologies"
    files = sorted(root.glob("*.yaml"))
    assert any(f.name == "squares.yaml" for f in files)
    for f in files:
        res = load(str(f), env={})
        assert res.diagnostics == [], (f.name, res.diagnostics)
