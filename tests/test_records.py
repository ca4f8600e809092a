"""zflow.records: the data classes zflow's own types are made with (instead of dataclasses)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zflow.records import FrozenInstanceError, asdict, field, fields, record, replace


@record
class Inner:
    name: str
    tags: list[str] = field(default_factory=list)


@record
class Outer:
    """Has its own docstring."""

    node: str
    count: int = 0
    inner: Inner | None = None
    seen: dict[str, int] = field(default_factory=dict)

    def double(self) -> int:
        return 2 * self.count


@record(frozen=True)
class Point:
    x: int
    y: int = 0


def test_fields_in_order_with_defaults_and_fresh_factories() -> None:
    a, b = Outer("a"), Outer(node="b", count=2)
    assert (a.node, a.count, a.inner, a.seen) == ("a", 0, None, {})
    assert (b.node, b.count, b.double()) == ("b", 2, 4)
    a.seen["x"] = 1
    assert b.seen == {} and Outer("c").seen == {}  # a factory makes one per instance
    assert fields(Outer) == ("node", "count", "inner", "seen") == fields(a)
    assert Outer.count == 0 and not hasattr(Outer, "seen")  # as dataclasses leave them
    assert Outer.__doc__ == "Has its own docstring."
    assert Outer.__match_args__ == fields(Outer)


@pytest.mark.parametrize("make, message", [
    (lambda: Outer(), "missing argument 'node'"),
    (lambda: Outer("a", 1, None, {}, 5), "takes 4 positional arguments but 5 were given"),
    (lambda: Outer("a", nodes="b"), "unexpected keyword argument 'nodes'"),
    (lambda: Outer("a", node="b"), "multiple values for argument 'node'"),
])
def test_wrong_arguments_say_what_is_wrong(make, message) -> None:
    with pytest.raises(TypeError, match=message):
        make()


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="field 'b' without a default follows one with a default"):
        @record
        class Bad:
            a: int = 0
            b: int


def test_repr_and_equality_by_value() -> None:
    a = Outer("a", 1, Inner("i", ["t"]))
    assert repr(a) == "Outer(node='a', count=1, inner=Inner(name='i', tags=['t']), seen={})"
    assert a == Outer("a", 1, Inner("i", ["t"]))
    assert a != Outer("a", 2, Inner("i", ["t"]))
    assert a != ("a", 1, Inner("i", ["t"]), {})  # not a tuple
    with pytest.raises(TypeError):
        hash(a)  # mutable, compared by value: unhashable, as a dataclass


def test_frozen_records_refuse_assignment_and_hash_by_value() -> None:
    p = Point(1, 2)
    with pytest.raises(FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y  # type: ignore[misc]
    assert hash(p) == hash(Point(1, 2)) and len({p, Point(1, 2), Point(2)}) == 2
    assert copy.deepcopy(p) == p and copy.deepcopy(Outer("a", 1)) == Outer("a", 1)


def test_asdict_and_replace() -> None:
    a = Outer("a", 1, Inner("i", ["t"]), {"k": 1})
    d = asdict(a)
    assert d == {"node": "a", "count": 1, "inner": {"name": "i", "tags": ["t"]}, "seen": {"k": 1}}
    d["inner"]["tags"].append("u")
    assert a.inner.tags == ["t"]  # a copy
    b = replace(a, count=5)
    assert (b.count, b.node, b.inner is a.inner) == (5, "a", True) and a.count == 1
    assert replace(Point(1), y=4) == Point(1, 4)


def test_zflow_up_and_validate_import_no_dataclasses(tmp_path: Path) -> None:
    """The reason this module exists: none of it on the way to the first replica."""
    topo = str(Path(__file__).parent.parent / "topologies" / "squares.yaml")
    for args in (["validate", topo], ["up", "--dry-run", topo]):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "zflow", *args],
                           capture_output=True, text=True, env={**os.environ}, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "zflow.records" in imported and "dataclasses" not in imported, args
