"""`zflow validate` end to end, as CI and pre-commit run it: exit codes and output formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
SQUARES = str(ROOT / "topologies" / "squares.yaml")
CORPUS = ROOT / "tests" / "spec_corpus"
BAD = str(CORPUS / "invalid" / "bad_socket_type.yaml")
WARN = str(CORPUS / "invalid" / "no_peer_warning.yaml")


def zflow(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "zflow", "validate", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def test_valid_file_exits_0() -> None:
    r = zflow(SQUARES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 valid" in r.stdout and r.stderr == ""


def test_invalid_file_exits_1_with_compiler_style_output() -> None:
    r = zflow(BAD)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{BAD}:8:19: error[ZF025]: unknown socket type 'PUSHH'")
    assert lines[1].endswith("out: {type: PUSHH, bind: auto}")
    assert lines[2].endswith("^^^^^")
    assert "hint: did you mean 'PUSH'?" in lines[3]
    assert "Traceback" not in r.stdout + r.stderr


def test_no_files_is_usage_error() -> None:
    r = zflow()
    assert r.returncode == 2 and "no files given" in r.stderr


def test_list_codes() -> None:
    r = zflow("--list-codes")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].startswith("ZF001")
    assert "ZF050" in r.stdout and "ZF064  warning" in r.stdout


def test_json_format_over_several_files() -> None:
    r = zflow("--format", "json", SQUARES, BAD, WARN)
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert {d["code"] for d in data} == {"ZF025", "ZF064"}
    assert {d["severity"] for d in data} == {"error", "warning"}
    for d in data:
        assert set(d) == {"severity", "code", "message", "path", "file", "line", "col", "hint"}


def test_github_format() -> None:
    r = zflow("--format", "github", BAD, WARN)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"::error file={BAD},line=8,col=19,title=ZF025::")
    assert lines[1].startswith(f"::warning file={WARN},line=16,col=7,title=ZF064::")


def test_warnings_pass_unless_strict() -> None:
    assert zflow(WARN).returncode == 0
    assert zflow("--strict", WARN).returncode == 1


def test_set_is_applied_before_validation() -> None:
    r = zflow("--set", "nodes.worker.replicas=0", SQUARES)
    assert r.returncode == 1 and "<command line>:1:" in r.stdout and "ZF026" in r.stdout
    assert zflow("--set", "nodes.worker.replicas=2", SQUARES).returncode == 0


def test_unreadable_inputs_exit_2_without_traceback(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (3 * 1024 * 1024))
    for f in (str(tmp_path / "missing.yaml"), str(binary), str(big), str(tmp_path)):
        r = zflow(f, SQUARES)
        assert r.returncode == 2, (f, r.stdout, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr
        assert "error[ZF00" in r.stdout


def test_empty_and_deep_files_exit_1_without_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 100000 + "]" * 100000 + "\n")
    r = zflow(str(empty), str(deep))
    assert r.returncode == 1
    assert "ZF004" in r.stdout and "ZF008" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_import_check(tmp_path: Path) -> None:
    (tmp_path / "nodes.py").write_text("def f(x):\n    return x\n")
    text = Path(SQUARES).read_text().replace("squares:", "nodes:")
    topo = tmp_path / "t.yaml"
    topo.write_text(text.replace("nodes:square", "nodes:f"))
    r = zflow("--import-check", str(topo))
    assert r.returncode == 1
    assert r.stdout.count("error[ZF082]") == 2  # numbers and ResultsManager are missing
    assert zflow(str(topo)).returncode == 0


def test_pre_commit_hook_definition() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == "zflow-validate"]
    assert hook["language"] == "python" and hook["entry"] == "zflow validate"
    import re

    pat = re.compile(hook["files"])
    assert pat.search("topologies/squares.yaml") and pat.search("etl/x.zflow.yml")
    assert not pat.search("config/app.yaml")
