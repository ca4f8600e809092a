"""The command line explains itself: help and examples, bare `zflow`, `-` for stdin, `--json` and
`NO_COLOR` on error paths, masked secrets in `--dry-run`, and shell completion."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zflow.cli import COMMANDS, DESCRIPTION, build_parser

ROOT = Path(__file__).resolve().parent.parent
TOPO = ROOT / "topologies"
SQUARES = "topologies/squares.yaml"
BAD = "tests/spec_corpus/invalid/bad_codec.yaml"
BAD_TEXT = (ROOT / BAD).read_text()


def zflow(*args: str, env: dict | None = None, stdin: str | None = None,
          cwd: Path = ROOT) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return subprocess.run([sys.executable, "-m", "zflow", *args], capture_output=True, text=True,
                          input=stdin, cwd=cwd, env={**base, **(env or {})})


# --- help ---------------------------------------------------------------------------------------


def test_top_level_help_describes_zflow_and_lists_every_command() -> None:
    p = zflow("--help")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[2] == DESCRIPTION and "parses arguments" not in p.stdout
    for name, text in COMMANDS:
        assert any(x.split() == [name, *text.split()] for x in lines), name
    assert "examples:" in p.stdout and "zflow up topologies/squares.yaml" in p.stdout


@pytest.mark.parametrize("command", [name for name, _ in COMMANDS])
def test_every_command_has_help_with_examples_and_exit_codes(command: str) -> None:
    p = zflow(command, "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"usage: zflow {command} ")
    assert "\nexamples:\n  zflow " in p.stdout and "\nexit codes:\n  0 " in p.stdout


def test_every_argument_and_option_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []
    up = sub.choices["up"]
    assert {a.dest: a.help for a in up._actions}["file"].startswith("a topology file")
    fmt = {a.dest: a.help for a in sub.choices["validate"]._actions}["format"]
    assert "human" in fmt and "json" in fmt and "github" in fmt


def test_up_help_talks_about_runs() -> None:
    p = zflow("up", "--help")
    assert "files valid" not in p.stdout
    assert "0    the run completed" in p.stdout and "130  the run was interrupted" in p.stdout
    assert "3    the run could not start" in p.stdout and "zflow up --dry-run" in p.stdout


def test_bare_zflow_prints_short_help_and_commands() -> None:
    p = zflow()
    assert p.returncode == 2 and p.stdout == ""
    assert "the following arguments are required" not in p.stderr
    assert DESCRIPTION in p.stderr and "commands:" in p.stderr
    assert all(name in p.stderr for name, _ in COMMANDS)
    assert "zflow COMMAND --help" in p.stderr


def test_usage_errors_point_to_the_commands_help() -> None:
    p = zflow("up", "--bogus", SQUARES)
    assert p.returncode == 2 and "Run 'zflow up --help' for its options." in p.stderr
    p = zflow("bogus")
    assert p.returncode == 2 and "Run 'zflow --help' for the commands." in p.stderr


# --- standard input -----------------------------------------------------------------------------


def test_validate_reads_stdin_and_names_it() -> None:
    p = zflow("validate", "-", stdin=BAD_TEXT, env={"NO_COLOR": "1"})
    assert p.returncode == 1
    assert p.stdout.startswith("<stdin>:8:44: error[ZF025]: codec 'pickle'")
    assert "out: {type: PUSH, bind: auto, codec: pickle}" in p.stdout  # the source line quoted
    assert "stdin.yaml" not in p.stdout + p.stderr
    p = zflow("validate", "--format", "json", "-", SQUARES, stdin=BAD_TEXT)
    assert [d["file"] for d in json.loads(p.stdout)] == ["<stdin>"]
    p = zflow("validate", "-", stdin=(TOPO / "squares.yaml").read_text())
    assert p.returncode == 0 and p.stdout == "1 file checked: 1 valid (0 errors, 0 warnings)\n"


def test_validate_import_check_from_stdin_looks_in_the_current_directory() -> None:
    p = zflow("validate", "--import-check", "-", stdin=(TOPO / "squares.yaml").read_text(),
              cwd=TOPO)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not [x for x in os.listdir(TOPO) if x.startswith(".zflow-stdin-")]
    p = zflow("validate", "--import-check", "-",
              stdin=(TOPO / "squares.yaml").read_text().replace("squares:square", "squares:nope"),
              cwd=TOPO, env={"NO_COLOR": "1"})
    assert p.returncode == 1 and p.stdout.startswith("<stdin>:")


def test_up_runs_a_topology_from_stdin() -> None:
    p = zflow("up", "--json", "-", "--set", "nodes.ventilator.params.count=100",
              stdin=(TOPO / "squares.yaml").read_text(), cwd=TOPO)
    assert p.returncode == 0, p.stderr[-2000:]
    result = [json.loads(x) for x in p.stdout.splitlines() if '"event": "result"' in x][-1]
    assert result["overall"] == "completed" and result["results"]["results"]["answers"] == 100
    p = zflow("up", "--dry-run", "-", stdin=(TOPO / "squares.yaml").read_text(), cwd=TOPO)
    assert p.returncode == 0 and "worker  ×10" in p.stdout


# --- --json and NO_COLOR on error paths --------------------------------------------------------


def test_up_json_prints_problems_as_json_on_stdout_and_nothing_human() -> None:
    want = json.loads(zflow("validate", "--format", "json", BAD).stdout)
    for args in (["up", "--json", BAD], ["up", "--dry-run", "--json", BAD]):
        p = zflow(*args)
        assert p.returncode == 1
        assert p.stderr == ""
        assert len(p.stdout.splitlines()) == 1  # one JSON line, like every line of --json
        assert json.loads(p.stdout) == want
    p = zflow("up", "--json", "-", stdin=BAD_TEXT)
    assert [d["file"] for d in json.loads(p.stdout)] == ["<stdin>"]
    p = zflow("up", "--json", "no/such/file.yaml")
    assert p.returncode == 2 and p.stderr == ""
    assert [(d["code"], d["file"]) for d in json.loads(p.stdout)] == [
        ("ZF001", "no/such/file.yaml")]
    p = zflow("up", "--json", SQUARES, "--scale", "wrker=2")
    assert p.returncode == 1 and json.loads(p.stdout)[0]["code"] == "ZF042"


@pytest.mark.parametrize("args", [["up", BAD], ["up", "--dry-run", BAD], ["validate", BAD],
                                  ["graph", BAD]])
def test_no_color_is_respected_on_error_paths(args: list[str]) -> None:
    forced = zflow(*args, env={"FORCE_COLOR": "1"})
    assert forced.returncode == 1 and "\x1b[" in forced.stdout + forced.stderr  # colour on…
    plain = zflow(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert plain.returncode == 1 and "error[ZF025]" in plain.stdout + plain.stderr
    assert "\x1b[" not in plain.stdout + plain.stderr  # …unless NO_COLOR


# --- secrets in --dry-run -----------------------------------------------------------------------

SECRET_TOPOLOGY = """\
version: 1
name: secrets
nodes:
  src:
    run: m:f
    env: {API_TOKEN: hunter2-secret, MODE: "${ZFLOW_TEST_MODE:-fast}"}
    sockets:
      out: {type: PUSH, bind: auto}
  dst:
    run: m:g
    sockets:
      inp: {type: PULL, connect: src.out}
"""


def test_dry_run_masks_env_values_unless_asked(tmp_path: Path) -> None:
    f = tmp_path / "secrets.yaml"
    f.write_text(SECRET_TOPOLOGY)
    text = zflow("up", "--dry-run", str(f))
    assert text.returncode == 0
    assert "hunter2-secret" not in text.stdout and "fast" not in text.stdout
    assert "src  API_TOKEN=***" in text.stdout and "--show-secrets" in text.stdout
    as_json = zflow("up", "--dry-run", "--json", str(f), "--set", "nodes.dst.env.X=also-secret")
    plan = json.loads(as_json.stdout)
    assert plan["nodes"]["src"]["env"] == {"API_TOKEN": "***", "MODE": "***"}
    assert plan["nodes"]["dst"]["env"] == {"X": "***"}
    assert "hunter2" not in as_json.stdout and "also-secret" not in as_json.stdout
    shown = zflow("up", "--dry-run", "--json", "--show-secrets", str(f))
    assert json.loads(shown.stdout)["nodes"]["src"]["env"]["API_TOKEN"] == "hunter2-secret"
    shown = zflow("up", "--dry-run", "--show-secrets", str(f))
    assert "src  API_TOKEN=hunter2-secret" in shown.stdout


# --- shell completion ---------------------------------------------------------------------------


@pytest.fixture
def on_path(tmp_path: Path) -> dict:
    """An environment whose PATH has a `zflow` that is this checkout (completion calls it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "zflow"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m zflow "$@"\n')
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_complete_nodes_helper() -> None:
    p = zflow("__complete-nodes", SQUARES)
    assert (p.returncode, p.stdout) == (0, "ventilator\nworker\nresults\n")
    p = zflow("__complete-nodes", "tests/spec_corpus/invalid/binary_tag.yaml")
    assert p.returncode == 0 and p.stderr == ""
    assert zflow("__complete-nodes", "no/such.yaml").stdout == ""
    assert "__complete-nodes" not in zflow("--help").stdout


def bash_complete(script: Path, env: dict, *words: str, cword: int = -1) -> list[str]:
    """COMPREPLY for the command line `words`; `cword`: the word being completed (the last)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    cword = cword % len(words)
    cmd = (f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={cword}; _zflow; "
           "printf '%s\\n' \"${COMPREPLY[@]}\"")
    p = subprocess.run(["bash", "--norc", "-c", cmd], capture_output=True, text=True, cwd=ROOT,
                       env=env)
    assert p.returncode == 0, p.stderr
    return [x for x in p.stdout.splitlines() if x]


def test_bash_completion(tmp_path: Path, on_path: dict) -> None:
    script = tmp_path / "zflow.bash"
    script.write_text(zflow("completion", "bash").stdout)
    assert bash_complete(script, on_path, "zflow", "") == [
        "validate", "up", "graph", "coordinator", "replica", "keys", "export", "schema",
        "completion", "ps", "top", "logs", "stop", "down", "--help", "--version"]
    assert bash_complete(script, on_path, "zflow", "up", "--dr") == ["--dry-run", "--drain-timeout"]
    assert bash_complete(script, on_path, "zflow", "graph", "--format", "") == [
        "text", "mermaid", "dot"]
    assert bash_complete(script, on_path, "zflow", "completion", "") == ["bash", "zsh", "fish"]
    # node names for --scale once a topology file is on the line
    assert bash_complete(script, on_path, "zflow", "up", SQUARES, "--scale", "w") == ["worker="]
    assert bash_complete(script, on_path, "zflow", "graph", "--scale", "", SQUARES,
                         cword=3) == ["ventilator=", "worker=", "results="]
    assert bash_complete(script, on_path, "zflow", "up", "--scale", "") == []
    files = bash_complete(script, on_path, "zflow", "up", "topologies/squ")
    assert "topologies/squares.yaml" in files and "topologies/squares.py" not in files


def test_run_names_complete_from_the_registry(tmp_path: Path, on_path: dict) -> None:
    """`zflow logs <TAB>` offers the runs of the user's registry (ZFLOW_STATE_DIR here)."""
    state = tmp_path / "state"
    for name in ("squares", "squares-2"):
        (state / name).mkdir(parents=True)
    env = {**on_path, "ZFLOW_STATE_DIR": str(state)}
    assert zflow("__complete-runs", env={"ZFLOW_STATE_DIR": str(state)}).stdout == \
        "squares\nsquares-2\n"
    script = tmp_path / "zflow.bash"
    script.write_text(zflow("completion", "bash").stdout)
    for cmd in ("ps", "top", "logs", "stop", "down"):
        assert bash_complete(script, env, "zflow", cmd, "squares-") == ["squares-2"], cmd
    assert bash_complete(script, env, "zflow", "up", "--me") == ["--metrics"]
    assert zflow("__complete-runs", env={"ZFLOW_STATE_DIR": str(tmp_path / "none")}).stdout == ""


def test_run_commands_help_names_their_exit_codes() -> None:
    logs = zflow("logs", "--help").stdout
    assert "zflow logs -f squares" in logs and "--since" in logs and "NODE[.N]" in logs
    assert "1    no run of that name, or no node or replica" in logs
    stop = zflow("stop", "--help").stdout
    assert "0    stopped, or had already ended" in stop and "stale run" in stop
    up = zflow("up", "--help").stdout
    assert "-d, --detach" in up and "--metrics [HOST:]PORT" in up and "zflow up -d " in up


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed")
def test_fish_completion(tmp_path: Path, on_path: dict) -> None:
    script = tmp_path / "zflow.fish"
    script.write_text(zflow("completion", "fish").stdout)

    def complete(line: str) -> list[str]:
        p = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                           capture_output=True, text=True, cwd=ROOT, env=on_path)
        assert p.returncode == 0, p.stderr
        return [x.split("\t")[0] for x in p.stdout.splitlines()]

    assert {"validate", "up", "graph", "schema", "completion"} <= set(complete("zflow "))
    assert set(complete(f"zflow up {SQUARES} --scale ")) == {"ventilator=", "worker=", "results="}
    assert set(complete("zflow graph --format ")) == {"text", "mermaid", "dot"}
    files = complete("zflow up topologies/squ")
    assert "topologies/squares.yaml" in files and "topologies/squares.py" not in files


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
def test_zsh_completion(tmp_path: Path, on_path: dict) -> None:
    script = tmp_path / "_zflow"
    script.write_text(zflow("completion", "zsh").stdout)
    p = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # the node-name helper, with compadd standing in for the completion system
    cmd = (f"source {script} 2>/dev/null; compadd() {{ print -r -- \"$*\" }}; "
           f"words=(zflow up {SQUARES} --scale ''); _zflow_nodes")
    p = subprocess.run(["zsh", "-f", "-c", cmd], capture_output=True, text=True, cwd=ROOT,
                       env=on_path)
    assert p.stdout.strip() == "-S = -- ventilator worker results"


def test_completion_scripts_know_every_option() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {o for p in sub.choices.values() for a in p._actions for o in a.option_strings
               if o.startswith("--")}
    for shell in ("bash", "zsh", "fish"):
        script = zflow("completion", shell).stdout
        for o in options:
            assert (o in script) or (shell == "fish" and f"-l {o[2:]}" in script), (shell, o)


def test_dry_run_masks_env_file_values_too(tmp_path: Path) -> None:
    (tmp_path / "secret.env").write_text("DB_PASS=from-env-file-secret\n")
    f = tmp_path / "secrets.yaml"
    f.write_text(SECRET_TOPOLOGY.replace("    run: m:g\n",
                                         "    run: m:g\n    env_file: secret.env\n"))
    text = zflow("up", "--dry-run", str(f))
    assert text.returncode == 0, text.stderr
    assert "from-env-file-secret" not in text.stdout and "dst  DB_PASS=***" in text.stdout
    plan = json.loads(zflow("up", "--dry-run", "--json", str(f)).stdout)
    assert plan["nodes"]["dst"]["env"] == {"DB_PASS": "***"}
    shown = zflow("up", "--dry-run", "--show-secrets", str(f))
    assert "dst  DB_PASS=from-env-file-secret" in shown.stdout


def test_up_no_log_prefix_prints_node_output_as_written() -> None:
    args = ("up", "-v", "--set", "nodes.ventilator.params.count=4", "--scale", "worker=2", SQUARES)
    p = zflow(*args[:1], "--no-log-prefix", *args[1:])
    assert p.returncode == 0, p.stderr
    said = [x for x in p.stdout.splitlines() if "answered:" in x]
    assert len(said) == 4 and all(x.startswith("Worker ") for x in said), p.stdout
    assert "│" not in p.stdout
    prefixed = zflow(*args)
    assert any(re.match(r"results\.0\s+│ Worker \d answered: \d", x)
               for x in prefixed.stdout.splitlines()), prefixed.stdout
    assert "--no-log-prefix" in zflow("up", "--help").stdout


@pytest.mark.parametrize("columns", [None, "100", "37", "0", "-5", "wide"])
def test_help_width_is_the_one_shutil_gives(columns: str | None, monkeypatch) -> None:
    """The parsers' formatter takes the terminal width without importing shutil."""
    import shutil

    from zflow.cli import _columns

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _columns() == shutil.get_terminal_size().columns
