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
                          text=True, env=env, cwd=ROOT)  # a hang: pytest-timeout


def test_valid_file_exits_0() -> None:
    r = zflow(SQUARES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "1 file checked: 1 valid (0 errors, 0 warnings)\n" and r.stderr == ""


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
    assert r.returncode == 2 and "no files given" in r.stderr and r.stdout == ""


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
    by_code = {d["code"]: d for d in data}
    bad, warn = by_code["ZF025"], by_code["ZF064"]
    assert (bad["file"], bad["line"], bad["col"]) == (BAD, 8, 19)
    assert bad["message"] == "unknown socket type 'PUSHH'" and "did you mean 'PUSH'?" in bad["hint"]
    assert (warn["file"], warn["line"], warn["col"]) == (WARN, 16, 7)
    assert warn["path"] == "nodes.lonely.sockets.inp" and "nothing connects to" in warn["message"]


def test_github_format() -> None:
    r = zflow("--format", "github", BAD, WARN)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"::error file={BAD},line=8,col=19,title=ZF025::")
    assert lines[1].startswith(f"::warning file={WARN},line=16,col=7,title=ZF064::")


def test_warnings_pass_unless_strict() -> None:
    located = f"{WARN}:16:7: warning[ZF064]: nothing connects to 'lonely.inp'"
    r = zflow(WARN)
    assert r.returncode == 0
    assert r.stdout.startswith(located)
    assert r.stdout.splitlines()[-1] == "1 file checked: 1 valid (0 errors, 1 warning)"
    r = zflow("--strict", WARN)
    assert r.returncode == 1
    assert r.stdout.startswith(located)
    assert r.stdout.splitlines()[-1] == ("1 file checked: 0 valid, 1 invalid (0 errors, "
                                         "1 warning), warnings count as errors (--strict)")


def test_set_is_applied_before_validation() -> None:
    r = zflow("--set", "nodes.worker.replicas=0", SQUARES)
    assert r.returncode == 1
    # located in the command line, not the file: the caret points at the value given
    lines = r.stdout.splitlines()
    assert lines[0].startswith("<command line>:1:29: error[ZF026]: node 'worker' replicas must be")
    assert lines[1].endswith("--set nodes.worker.replicas=0")
    assert lines[2].index("^") == lines[1].index("--set") + len("--set nodes.worker.replicas=")
    r = zflow("--set", "nodes.worker.replicas=2", SQUARES)
    assert r.returncode == 0 and "1 valid (0 errors, 0 warnings)" in r.stdout


def test_unreadable_inputs_exit_2_without_traceback(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (3 * 1024 * 1024))
    cases = {
        str(tmp_path / "missing.yaml"): ": error[ZF001]: no such file",
        str(binary): ":1:1: error[ZF002]: binary file (contains NUL bytes)",
        str(big): ": error[ZF003]: file is larger than 2 MiB",
        str(tmp_path): ": error[ZF001]: is a directory, not a file",
    }
    for f, said in cases.items():
        r = zflow(f, SQUARES)
        assert r.returncode == 2, (f, r.stdout, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr
        assert r.stdout.startswith(f + said), (f, r.stdout)
        assert r.stdout.splitlines()[-1] == ("2 files checked: 1 valid, 1 unreadable "
                                             "(1 error, 0 warnings)")


def test_empty_and_deep_files_exit_1_without_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 100000 + "]" * 100000 + "\n")
    r = zflow(str(empty), str(deep))
    assert r.returncode == 1
    assert f"{empty}:1:1: error[ZF004]: the file is empty (no YAML document)" in r.stdout
    # located at the bracket that goes one level too deep ("a: " then 64 levels)
    assert f"{deep}:1:{len('a: ') + 64}: error[ZF008]: nesting deeper than 64 levels" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_import_check(tmp_path: Path) -> None:
    (tmp_path / "nodes.py").write_text("def f(x):\n    return x\n")
    text = Path(SQUARES).read_text().replace("squares:", "nodes:")
    topo = tmp_path / "t.yaml"
    topo.write_text(text.replace("nodes:square", "nodes:f"))
    r = zflow("--import-check", str(topo))
    assert r.returncode == 1
    assert r.stdout.count("error[ZF082]") == 2  # numbers and ResultsManager are missing
    lines = topo.read_text().splitlines()
    for node, attr in (("ventilator", "numbers"), ("results", "ResultsManager")):
        line = next(i for i, x in enumerate(lines, 1) if x.strip() == f"run: nodes:{attr}")
        col = lines[line - 1].index("nodes:") + 1
        assert (f"{topo}:{line}:{col}: error[ZF082]: node '{node}': module 'nodes' has no "
                f"attribute '{attr}'") in r.stdout
    r = zflow(str(topo))
    assert r.returncode == 0 and "1 valid" in r.stdout


def test_pre_commit_hook_definition() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == "zflow-validate"]
    assert hook["language"] == "python" and hook["entry"] == "zflow validate"
    import re

    pat = re.compile(hook["files"])
    assert pat.search("topologies/squares.yaml") and pat.search("etl/x.zflow.yml")
    assert not pat.search("config/app.yaml")


def test_ipc_paths_are_checked_against_the_run_directory_without_tempfile(tmp_path: Path) -> None:
    """ZF057 is found whatever TMPDIR is, and tempfile is imported only when a path may not fit
    (its import is ~4 ms of every validate)."""
    topo = tmp_path / "t.yaml"
    topo.write_text("version: 1\nname: t\nnodes:\n  src:\n    run: m:f\n    sockets:\n"
                    f"      {'o' * 40}: {{type: PUSH, bind: auto}}\n"
                    "  dst:\n    run: m:g\n    sockets:\n"
                    f"      i: {{type: PULL, connect: src.{'o' * 40}}}\n")
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    runs = {}
    for name, tmpdir in (("short", "/tmp"), ("deep", str(deep))):
        env = {**os.environ, "NO_COLOR": "1", "TMPDIR": tmpdir, "PYTHONPATH": str(ROOT)}
        runs[name] = subprocess.run(  # in /: the current directory is a candidate too
            [sys.executable, "-X", "importtime", "-m", "zflow", "validate", str(topo)],
            capture_output=True, text=True, env=env, cwd="/")
    imported = {name: {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
                       if line.startswith("import time:")} for name, r in runs.items()}
    assert runs["short"].returncode == 0, runs["short"].stdout
    assert "tempfile" not in imported["short"]
    assert runs["deep"].returncode == 1
    assert "error[ZF057]" in runs["deep"].stdout and str(deep) in runs["deep"].stdout


def test_output_that_cannot_be_written_is_an_error_not_a_traceback() -> None:
    """validate's report to a full disk (/dev/full) is lost: exit 2 and a line that says so."""
    for args in ([SQUARES], ["--format", "json", SQUARES]):
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "zflow", "validate", *args], stdout=full,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr == "zflow: cannot write the output: No space left on device\n"
