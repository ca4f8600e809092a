"""The parse cache of zflow.spec.yamlpos, and the plain-scalar path of `--set` values: both must
give exactly what PyYAML's parse gives, or nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zflow.spec import yamlcompose, yamlpos

TEXT = """version: 1
name: t
nodes:
  a:
    run: m:f
    params: {count: 3, ratio: .5, on: true, off: null, list: [1, "2", 0x10]}
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _no_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise AssertionError("parsed again: the cache was not used")

    monkeypatch.setattr(yamlcompose, "parse", fail)


def test_a_second_parse_of_the_same_text_comes_from_the_cache(cache: Path, monkeypatch) -> None:
    first, diags = yamlpos.parse(TEXT, "a.yaml")
    assert diags == [] and len(list(cache.iterdir())) == 1
    _no_pyyaml(monkeypatch)
    again, diags = yamlpos.parse(TEXT, "another-name.yaml")
    assert diags == []
    assert (again.data, again.values, again.keys) == (first.data, first.values, first.keys)
    assert again.data["nodes"]["a"]["params"] == {"count": 3, "ratio": 0.5, "on": True,
                                                  "off": None, "list": [1, "2", 16]}
    assert again.keys[("nodes", "a", "params")] == (6, 5)
    again.data["nodes"]["a"]["params"]["count"] = 99  # callers mutate what they get
    assert yamlpos.parse(TEXT, "a.yaml")[0].data["nodes"]["a"]["params"]["count"] == 3


def test_an_entry_is_used_only_for_its_own_text(cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(yamlpos, "_entry", lambda folder, text, stamp: os.path.join(folder, "1"))
    yamlpos.parse("a: 1\n", "f.yaml")
    doc, _ = yamlpos.parse("a: 2\n", "f.yaml")  # same entry name, another text
    assert doc.data == {"a": 2}


def test_an_entry_of_another_parser_or_pyyaml_is_not_used(cache: Path, monkeypatch) -> None:
    yamlpos.parse(TEXT, "a.yaml")
    real = yamlpos._stamp()
    other = (real[0] + 1, *real[1:])
    # its own entry under another name: both installations keep theirs
    (entry,) = cache.iterdir()
    assert entry.name == os.path.basename(yamlpos._entry(str(cache), TEXT, real))
    assert yamlpos._entry(str(cache), TEXT, other) != str(entry)
    # and an entry found under our name that another parser wrote is not used
    monkeypatch.setattr(yamlpos, "_entry", lambda folder, text, stamp: str(entry))
    monkeypatch.setattr(yamlpos, "_stamp", lambda: other)
    calls = []
    parse = yamlcompose.parse
    monkeypatch.setattr(yamlcompose, "parse", lambda *a: calls.append(a) or parse(*a))
    yamlpos.parse(TEXT, "a.yaml")
    assert len(calls) == 1


def test_a_corrupt_entry_is_parsed_again_and_replaced(cache: Path, monkeypatch) -> None:
    yamlpos.parse(TEXT, "a.yaml")
    (entry,) = cache.iterdir()
    entry.write_bytes(b"\x00not marshal")
    doc, diags = yamlpos.parse(TEXT, "a.yaml")
    assert diags == [] and doc.data["name"] == "t"
    _no_pyyaml(monkeypatch)
    assert yamlpos.parse(TEXT, "a.yaml")[0].data["name"] == "t"


def test_a_parse_with_diagnostics_is_not_cached(cache: Path) -> None:
    doc, diags = yamlpos.parse("a: 1\na: 2\n", "dup.yaml")
    assert [d.code for d in diags] == ["ZF006"]
    assert not cache.exists() or list(cache.iterdir()) == []


def test_no_cache_when_the_variable_is_empty(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ZFLOW_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert yamlpos.cache_dir() is None
    assert yamlpos.parse(TEXT, "a.yaml")[0].data["name"] == "t"
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_only_costs_the_parse(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ZFLOW_CACHE_DIR", str(blocker / "cache"))
    assert yamlpos.parse(TEXT, "a.yaml")[0].data["name"] == "t"
    assert yamlpos.parse(TEXT, "a.yaml")[0].data["name"] == "t"


def test_the_cache_keeps_a_bounded_number_of_entries(cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(yamlpos, "CACHE_MAX", 4)
    monkeypatch.setattr(yamlpos, "CACHE_KEEP", 2)
    stamp = yamlpos._stamp()
    for i in range(5):
        yamlpos.parse(f"a: {i}\n", "f.yaml")
        entry = cache / os.path.basename(yamlpos._entry(str(cache), f"a: {i}\n", stamp))
        os.utime(entry, ns=(i * 10**9, i * 10**9))  # written in this order
    left = sorted(p.name for p in cache.iterdir())
    assert left == sorted(os.path.basename(yamlpos._entry(str(cache), f"a: {i}\n", stamp))
                          for i in (3, 4))


def test_a_warm_validate_never_imports_pyyaml(cache: Path, tmp_path: Path) -> None:
    topo = Path(__file__).parent.parent / "topologies" / "squares.yaml"
    env = {**os.environ, "ZFLOW_CACHE_DIR": str(cache)}
    runs = [subprocess.run([sys.executable, "-X", "importtime", "-m", "zflow", "validate",
                            str(topo)], capture_output=True, text=True, env=env, timeout=60)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    imported = [{line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
                 if line.startswith("import time:")} for r in runs]
    assert "yaml" in imported[0] and "yaml" not in imported[1]


# --- --set values: the plain-scalar path gives what the parser gives ------------------------

#: values the plain path leaves to the parser: a dash alone or before a dash, document markers
REFUSED = ("-", "--", "---", "...", "....", "---x", "a b", "a: b", "[1]", "'x'", "#")


@pytest.mark.parametrize("text", [
    "10", "-3", "+7", "0x1F", "0o17", "1_000", "1.5", "-.5", ".5", "1e3", "1.0E-2", ".inf",
    "-.Inf", ".NaN", "true", "False", "TRUE", "yes", "no", "null", "Null", "NULL", "worker",
    "a.b/c", "-x", "x-", "2026-12-01", "1.2.3", "0777", "+", ".", "_", *REFUSED,
])
def test_a_plain_value_reads_as_yaml_reads_it(text: str) -> None:
    simple, value = yamlpos.plain_scalar(text)
    assert simple == (text not in REFUSED)
    if simple:
        assert _same(value, _parsed(text)), (text, value)


_ERROR = object()


def _parsed(text: str) -> object:
    doc, diags = yamlcompose.parse(text, "<value>")
    if any(d.is_error for d in diags):
        return _ERROR
    return None if doc is None else doc.data


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b  # NaN
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="aTtfnNx0189._/+-eEo", min_size=1, max_size=6))
def test_any_value_the_plain_path_takes_reads_as_yaml_reads_it(text: str) -> None:
    simple, value = yamlpos.plain_scalar(text)
    if simple:
        assert _same(value, _parsed(text)), text


def test_entries_are_private_and_a_folder_others_may_write_is_not_used(cache: Path,
                                                                        monkeypatch) -> None:
    yamlpos.parse(TEXT, "a.yaml")
    (entry,) = cache.iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700
    cache.chmod(0o777)
    _no_pyyaml(monkeypatch)
    with pytest.raises(AssertionError, match="cache was not used"):
        yamlpos.parse(TEXT, "a.yaml")  # not read from a folder anyone may write


def test_the_cache_folder_is_made_only_below_a_directory_of_ours(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("ZFLOW_CACHE_DIR", str(tmp_path / "home" / ".cache" / "zflow"))
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)  # someone else
    yamlpos.parse(TEXT, "a.yaml")
    assert not (tmp_path / "home" / ".cache").exists()


def test_the_standard_input_is_never_cached(cache: Path) -> None:
    secret = TEXT.replace("count: 3", "count: 3, token: hunter2")
    r = subprocess.run([sys.executable, "-m", "zflow", "validate", "-"], input=secret, text=True,
                       capture_output=True, env={**os.environ, "ZFLOW_CACHE_DIR": str(cache)},
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not cache.exists() or not any(
        b"hunter2" in p.read_bytes() for p in cache.iterdir())
