"""load() and its helpers: positions, YAML safety, substitution, overrides, rendering."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from zflow.spec import (
    COMMAND_LINE,
    Diagnostic,
    LoadResult,
    infer_shape,
    inferred_shape,
    load,
    render,
    split_ref,
)
from zflow.spec.diagnostics import CODES, codes_table

ROOT = Path(__file__).parent.parent
SQUARES = str(ROOT / "topologies" / "squares.yaml")

PIPE = """\
version: 1
name: t
nodes:
  src:
    run: m:f
    sockets:
      out: {type: PUSH, bind: auto}
  dst:
    run: m:g
    sockets:
      inp: {type: PULL, connect: src.out}
"""


def write(tmp_path: Path, text: str | bytes, name: str = "t.yaml") -> str:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return str(p)


def codes(res: LoadResult) -> list[str]:
    return [d.code for d in res.diagnostics]


def test_squares_loads_clean_without_defaults_merged() -> None:
    res = load(SQUARES, env={})
    assert res.ok and res.diagnostics == [] and not res.unreadable
    topo = res.topology
    assert topo is not None
    assert topo["nodes"]["worker"]["replicas"] == 10
    assert "hwm" not in topo["nodes"]["worker"]["sockets"]["work"]
    assert res.path == SQUARES


def test_positions_point_at_the_offending_value(tmp_path: Path) -> None:
    f = write(tmp_path, PIPE.replace("type: PULL", "type: PULLL"))
    (d,) = load(f).diagnostics
    assert (d.code, d.line, d.col, d.path) == ("ZF025", 11, 19,
                                               "nodes.dst.sockets.inp.type")
    assert d.hint == "did you mean 'PULL'?"


def test_unknown_key_points_at_key_with_did_you_mean(tmp_path: Path) -> None:
    f = write(tmp_path, PIPE.replace("    sockets:\n      inp", "    sokets:\n      inp"))
    ds = load(f).diagnostics
    d = next(d for d in ds if d.code == "ZF022")
    assert (d.line, d.col) == (10, 5) and "sockets" in (d.hint or "")


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    f = write(tmp_path, PIPE.replace("    run: m:g\n", "    run: m:g\n    run: m:h\n"))
    (d,) = load(f).diagnostics
    assert d.code == "ZF006" and d.line == 10 and "first at line 9" in d.message


def test_object_tags_are_refused_and_nothing_is_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    f = write(tmp_path, PIPE.replace(
        "run: m:f", f"run: !!python/object/apply:os.system ['touch {marker}']"))
    res = load(f)
    assert "ZF007" in codes(res) and not marker.exists()


def test_yaml_12_core_schema_no_is_a_string(tmp_path: Path) -> None:
    f = write(tmp_path, PIPE.replace("    run: m:g\n", "    run: m:g\n    restart: no\n"))
    res = load(f)
    assert res.ok, res.diagnostics
    assert res.topology and res.topology["nodes"]["dst"]["restart"] == "no"


@pytest.mark.parametrize("content,code", [
    (b"", "ZF004"),
    (b"# only a comment\n", "ZF004"),
    (b"[" * 5000 + b"]" * 5000, "ZF008"),
    (b"{a: " * 200 + b"1" + b"}" * 200, "ZF008"),
    (b"version: 1\n\xff\xfe\n", "ZF002"),
    (b"version: 1\x00\n", "ZF002"),
    (b"a: \x07\n", "ZF002"),
])
def test_hostile_files_give_one_clean_diagnostic(tmp_path: Path, content: bytes,
                                                 code: str) -> None:
    res = load(write(tmp_path, content))
    assert code in codes(res) and not res.ok and res.topology is None


def test_unreadable_files(tmp_path: Path) -> None:
    missing = load(str(tmp_path / "nope.yaml"))
    assert missing.unreadable and codes(missing) == ["ZF001"]
    assert load(str(tmp_path)).unreadable
    big = write(tmp_path, b"# " + b"x" * (3 * 1024 * 1024) + b"\n", "big.yaml")
    res = load(big)
    assert res.unreadable and codes(res) == ["ZF003"]
    assert load(write(tmp_path, b"\x00\x01\x02", "bin.yaml")).unreadable


def test_env_substitution(tmp_path: Path) -> None:
    text = PIPE.replace("    run: m:g\n", "    run: m:g\n    replicas: ${N}\n"
                        "    cwd: ${BASE:-/srv}/$$x/${SUB}\n")
    res = load(write(tmp_path, text), env={"N": "3", "SUB": "y: z"})
    assert res.ok, res.diagnostics
    node = res.topology["nodes"]["dst"]
    assert node["replicas"] == 3 and node["cwd"] == "/srv/$x/y: z"
    res = load(write(tmp_path, text), env={"N": "3"})
    (d,) = res.diagnostics
    assert d.code == "ZF040" and d.line == 11 and "SUB" in d.message
    res = load(write(tmp_path, text), env={"N": "three", "SUB": ""})
    assert codes(res) == ["ZF024"]


def test_overrides_and_scale(tmp_path: Path) -> None:
    f = write(tmp_path, PIPE)
    res = load(f, overrides=["nodes.dst.replicas=4", "nodes.src.params.count=7",
                             "nodes.dst.sockets.inp.connect=[src.out]"], scale=["src=2"])
    assert res.ok, res.diagnostics
    topo = res.topology
    assert topo["nodes"]["dst"]["replicas"] == 4
    assert topo["nodes"]["src"]["params"] == {"count": 7}
    assert topo["nodes"]["src"]["replicas"] == 2
    assert topo["nodes"]["dst"]["sockets"]["inp"]["connect"] == ["src.out"]


def test_bad_overrides_are_located_on_the_command_line(tmp_path: Path) -> None:
    f = write(tmp_path, PIPE)
    res = load(f, overrides=["nodes.dts.replicas=4", "nodes.dst.replicas=0", "novalue"],
               scale=["sr=2", "dst=x"])
    ds = [d for d in res.diagnostics if d.file == COMMAND_LINE]
    assert [(d.code, d.line) for d in ds] == [
        ("ZF042", 1), ("ZF026", 2), ("ZF042", 3), ("ZF042", 4), ("ZF042", 5)]
    assert "did you mean 'dst'" in ds[0].message and ds[0].col == 13
    assert "did you mean 'src'" in (ds[3].hint or "")
    assert res.sources[COMMAND_LINE].splitlines()[0] == "--set nodes.dts.replicas=4"


def test_x_keys_are_removed_except_in_params(tmp_path: Path) -> None:
    text = "x-top: 1\n" + PIPE.replace("    run: m:f\n", "    run: m:f\n    x-note: a\n"
                                       "    params: {x-keep: 1}\n")
    res = load(write(tmp_path, text))
    assert res.ok
    assert "x-top" not in res.topology
    assert res.topology["nodes"]["src"] == {"run": "m:f", "params": {"x-keep": 1},
                                            "sockets": {"out": {"type": "PUSH",
                                                                "bind": "auto"}}}


def test_validation_never_imports_user_code(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f(): pass\n")
    res = load(write(tmp_path, PIPE.replace("m:f", "evil:f").replace("m:g", "evil:f")))
    assert res.ok and not marker.exists()


def test_import_check(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text("def f(x):\n    return x\nVALUE = 3\n")
    (tmp_path / "boom.py").write_text("raise RuntimeError('no database')\n")
    text = PIPE.replace("m:f", "good:f").replace("m:g", "good:VALUE")
    res = load(write(tmp_path, text), import_check=True)
    assert codes(res) == ["ZF083"] and res.diagnostics[0].line == 9
    res = load(write(tmp_path, text.replace("good:VALUE", "boom:f")), import_check=True)
    (d,) = res.diagnostics
    assert d.code == "ZF081" and "RuntimeError: no database" in d.message
    res = load(write(tmp_path, text.replace("good:VALUE", "missing_mod:f")
                     .replace("good:f", "good:nothing")), import_check=True)
    assert codes(res) == ["ZF082", "ZF080"]


def test_diagnostics_sorted_in_file_order(tmp_path: Path) -> None:
    text = PIPE.replace("type: PUSH", "type: PUSHH").replace("run: m:g", "run: bad")
    text = text.replace("connect: src.out", "connect: nowhere.out")
    ds = load(write(tmp_path, text)).diagnostics
    assert [d.line for d in ds] == sorted(d.line for d in ds) and len(ds) >= 3


def test_split_ref() -> None:
    assert split_ref("ventilator.work") == ("ventilator", "work")
    assert split_ref("my-node.sock_1") == ("my-node", "sock_1")
    assert split_ref("tcp://127.0.0.1:5557") is None
    assert split_ref("ipc:///tmp/a.b") is None
    assert split_ref("ventilator") is None
    assert split_ref("a.b.c") is None


@pytest.mark.parametrize("types,shape", [
    ([], "source"), (["PUSH"], "source"), (["PULL"], "sink"), (["PULL", "PUSH"], "transform"),
    (["SUB", "PUB"], "transform"), (["REP"], "service"), (["ROUTER", "REP"], "service"),
    (["REP", "PUSH"], "custom"), (["REQ"], "custom"), (["PAIR"], "custom"),
    (["XPUB", "XSUB"], "custom"), (["DEALER"], "custom"),
])
def test_infer_shape(types: list[str], shape: str) -> None:
    node = {"run": "m:f", "sockets": {f"s{i}": {"type": t} for i, t in enumerate(types)}}
    assert infer_shape(node) == shape == inferred_shape(node)


def test_infer_shape_ignores_control_sockets_and_honours_explicit() -> None:
    node = {"sockets": {"in": {"type": "PULL"},
                        "ctl": {"type": "SUB", "stop_on": "X"},
                        "done": {"type": "PUB", "send_on_end": "X"}}}
    assert infer_shape(node) == "sink"
    assert infer_shape({**node, "shape": "custom"}) == "custom"


def _diag() -> Diagnostic:
    return Diagnostic("error", "ZF025", "unknown socket type 'PUSHH'",
                      "nodes.a.sockets.s.type", "t.yaml", 2, 13, "did you mean 'PUSH'?")


def test_render_human_quotes_source_with_caret() -> None:
    buf = io.StringIO()
    render([_diag()], "human", buf, color=False,
           sources={"t.yaml": "nodes:\n  s: {type: PUSHH, bind: auto}\n"})
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("t.yaml:2:13: error[ZF025]: unknown socket type 'PUSHH'")
    assert lines[1] == " 2 |   s: {type: PUSHH, bind: auto}"
    assert lines[2] == "   |" + " " * 13 + "^^^^^"
    assert lines[3] == "  hint: did you mean 'PUSH'?"


def test_render_json_and_github() -> None:
    buf = io.StringIO()
    render([_diag()], "json", buf)
    (obj,) = json.loads(buf.getvalue())
    assert obj == {"severity": "error", "code": "ZF025", "message": "unknown socket type 'PUSHH'",
                   "path": "nodes.a.sockets.s.type", "file": "t.yaml", "line": 2, "col": 13,
                   "hint": "did you mean 'PUSH'?"}
    buf = io.StringIO()
    warn = Diagnostic("warning", "ZF064", "a, b: c", file="d,e.yaml", line=3, col=1)
    render([_diag(), warn], "github", buf)
    first, second = buf.getvalue().splitlines()
    assert first.startswith("::error file=t.yaml,line=2,col=13,title=ZF025::unknown socket")
    assert "%0Ahint: did you mean 'PUSH'?" in first
    assert second == "::warning file=d%2Ce.yaml,line=3,col=1,title=ZF064::a, b: c"


def test_every_code_documented() -> None:
    doc = (ROOT / "docs" / "format.md").read_text()
    table = codes_table()
    for code in CODES:
        assert f"`{code}`" in doc, code
        assert code in table


# --- env_file -----------------------------------------------------------------------------------

ENV_FILE_TOPOLOGY = """\
version: 1
name: t
env_file: top.env
nodes:
  src:
    run: m:f
    env_file: [node.env]
    env: {C: explicit}
    sockets:
      out: {type: PUSH, bind: auto}
  dst:
    run: m:g
    env_file: other.env
    sockets:
      inp: {type: PULL, connect: src.out}
"""


def test_env_file_merges_under_env_with_node_files_over_top_level(tmp_path: Path) -> None:
    (tmp_path / "top.env").write_text('# comment\n\nA=top\nB=top\nexport C="quoted value"\n')
    (tmp_path / "node.env").write_text("B='node # kept'\nC=node-file  # a comment\nD=\n")
    (tmp_path / "other.env").write_text("E=e\n")
    res = load(write(tmp_path, ENV_FILE_TOPOLOGY), env={})
    assert res.ok, res.diagnostics
    nodes = res.topology["nodes"]
    assert nodes["src"]["env"] == {"A": "top", "B": "node # kept", "C": "explicit", "D": ""}
    assert nodes["dst"]["env"] == {"A": "top", "B": "top", "C": "quoted value", "E": "e"}


def test_missing_env_file_is_located_at_its_value_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "top.env").write_text("A=1\n")
    (tmp_path / "node.env").write_text("A=2\n")
    res = load(write(tmp_path, ENV_FILE_TOPOLOGY), env={})
    assert not res.ok and res.topology is None
    (d,) = res.errors
    assert (d.code, d.file, d.line, d.col) == ("ZF043", str(tmp_path / "t.yaml"), 13, 15)
    assert d.path == "nodes.dst.env_file" and "'other.env': no such file" in d.message
    assert d.hint and "relative to the topology file" in d.hint
    out = io.StringIO()
    render(res.diagnostics, "human", out, color=False, sources=res.sources)
    assert "t.yaml:13:15" in out.getvalue()


def test_env_file_bad_line_and_list_item_located(tmp_path: Path) -> None:
    (tmp_path / "top.env").write_text("A=1\n")
    (tmp_path / "other.env").write_text("E=1\n")
    (tmp_path / "node.env").write_text("ok=1\nnot a pair\n")
    res = load(write(tmp_path, ENV_FILE_TOPOLOGY), env={})
    (d,) = res.errors
    assert d.code == "ZF043" and d.path == "nodes.src.env_file[0]" and (d.line, d.col) == (7, 16)
    assert "line 2" in d.message and "KEY=VALUE" in (d.hint or "")


def test_env_file_must_be_a_path_or_list_of_paths(tmp_path: Path) -> None:
    res = load(write(tmp_path, ENV_FILE_TOPOLOGY.replace("env_file: top.env", "env_file: 5")),
               env={})
    assert codes(res) == ["ZF024"]


# --- `$` in commands ----------------------------------------------------------------------------

DOLLAR_COMMAND = """\
version: 1
name: t
nodes:
  src:
    command: [sh, -c, 'X=abc; echo ${#X}']
    params: {a: "${#Y}"}
"""


def test_a_failed_substitution_in_a_command_hints_at_double_dollar(tmp_path: Path) -> None:
    res = load(write(tmp_path, DOLLAR_COMMAND), env={})
    by_path = {d.path: d for d in res.errors}
    cmd = by_path["nodes.src.command[2]"]
    assert cmd.code == "ZF041" and (cmd.line, cmd.col) == (5, 23)
    assert "write $$ for a literal $" in (cmd.hint or "")
    assert "$${#X} passes ${#X} to the program" in (cmd.hint or "")
    # outside a command, the plain hint (no talk of programs)
    other = by_path["nodes.src.params.a"]
    assert "in a command" not in (other.hint or "")
    assert "'$$' is a literal '$'" in (other.hint or "")


def test_an_unset_variable_in_a_command_hints_at_double_dollar(tmp_path: Path) -> None:
    res = load(write(tmp_path, DOLLAR_COMMAND.replace("${#X}", "${HOME_DIR}").replace(
        '    params: {a: "${#Y}"}\n', "")), env={})
    (d,) = res.errors
    assert d.code == "ZF040" and "write $$ for a literal $" in (d.hint or "")
    assert d.hint.startswith("set it, or give a default: ${HOME_DIR:-value}")


def test_double_dollar_in_a_command_passes_the_dollar_through(tmp_path: Path) -> None:
    res = load(write(tmp_path, DOLLAR_COMMAND.replace("${#X}", "$${#X} $HOME").replace(
        '    params: {a: "${#Y}"}\n', "")), env={})
    assert res.errors == [] and res.topology is not None
    assert res.topology["nodes"]["src"]["command"][2] == "X=abc; echo ${#X} $HOME"
