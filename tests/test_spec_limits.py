"""Limits that keep a valid topology from hurting the machine, and a validator that stays bounded
on hostile input: numbers that size memory, node names, empty control words, special files, and
diagnostic output that cannot explode."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_spec_load import PIPE

from zflow.spec import Diagnostic, load, render, schema_text
from zflow.spec.diagnostics import CODES, clip

ROOT = Path(__file__).parent.parent
SQUARES = ROOT / "topologies" / "squares.yaml"
HUGE = "99999999999999999999999"



def write(tmp_path: Path, text: str, name: str = "t.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def zflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "zflow", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def errors(res) -> list[tuple[str, str, int]]:
    return [(d.code, d.path, d.line) for d in res.diagnostics if d.is_error]


# -- 1. numbers that size memory -----------------------------------------------------------------

def test_replicas_beyond_the_limit_are_refused_in_the_file(tmp_path: Path) -> None:
    text = SQUARES.read_text().replace("replicas: 10", f"replicas: {HUGE}")
    line = text.splitlines().index(f"    replicas: {HUGE}") + 1
    res = load(write(tmp_path, text), env={})
    (d,) = res.errors
    assert (d.code, d.path, d.line, d.col) == ("ZF026", "nodes.worker.replicas", line, 15)
    assert d.message == f"node 'worker' replicas must be ≤ 10000, got {HUGE}"
    assert d.hint and "process" in d.hint
    assert res.topology is None


def test_replicas_beyond_the_limit_are_refused_from_env_and_scale(tmp_path: Path) -> None:
    text = SQUARES.read_text().replace("replicas: 10", "replicas: ${R:-" + HUGE + "}")
    res = load(write(tmp_path, text), env={})
    assert [(c, p) for c, p, _ in errors(res)] == [("ZF026", "nodes.worker.replicas")]
    res = load(str(SQUARES), env={}, scale=[f"worker={HUGE}"])
    (d,) = res.errors
    assert (d.code, d.file, d.line) == ("ZF026", "<command line>", 1)
    assert load(str(SQUARES), env={}, scale=["worker=9998"]).ok  # + ventilator + results
    res = load(str(SQUARES), env={}, scale=["worker=10000"])  # each fits, the total does not
    assert [(d.code, d.file, d.line) for d in res.errors] == [("ZF074", "<command line>", 1)]
    # and `up --dry-run` refuses it before planning anything
    r = zflow("up", "--dry-run", "--scale", f"worker={HUGE}", str(SQUARES))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error[ZF026]: node 'worker' replicas must be ≤ 10000" in r.stderr
    assert r.stdout == ""


def test_total_replicas_are_limited(tmp_path: Path) -> None:
    text = PIPE.replace("    run: m:f\n", "    run: m:f\n    replicas: 6000\n").replace(
        "    run: m:g\n", "    run: m:g\n    replicas: 5000\n")
    res = load(write(tmp_path, text), env={})
    (d,) = res.errors
    assert (d.code, d.path, d.line) == ("ZF074", "nodes.dst.replicas", 11)
    assert "11000 replicas in total" in d.message and "10000" in d.message
    assert d.hint and "src: 6000" in d.hint
    assert load(write(tmp_path, text.replace("5000", "4000")), env={}).ok


@pytest.mark.parametrize("where,key,value,limit", [
    ("socket", "hwm", 1_000_001, 1_000_000),
    ("socket", "batch", 100_001, 100_000),
    ("socket", "linger", 3_600_001, 3_600_000),
    ("node", "max_restarts", 1001, 1000),
    ("node", "grace", 3601, 3600),
    ("node", "restart_window", 86401, 86400),
    ("node", "grace", ".inf", 3600),
    ("defaults", "hwm", HUGE, 1_000_000),
    ("defaults", "max_restarts", HUGE, 1000),
])
def test_numbers_that_size_memory_or_time_have_a_maximum(tmp_path: Path, where: str, key: str,
                                                          value: object, limit: int) -> None:
    if where == "socket":
        text = PIPE.replace("bind: auto}", f"bind: auto, {key}: {value}}}")
        path, line = f"nodes.src.sockets.out.{key}", 7
    elif where == "node":
        text = PIPE.replace("    run: m:f\n", f"    run: m:f\n    {key}: {value}\n")
        path, line = f"nodes.src.{key}", 6
    else:
        text = PIPE.replace("nodes:\n", f"defaults:\n  {key}: {value}\nnodes:\n")
        path, line = f"defaults.{key}", 4
    res = load(write(tmp_path, text), env={})
    assert errors(res) == [("ZF026", path, line)], res.diagnostics
    assert f"≤ {limit}" in res.errors[0].message and res.errors[0].hint
    ok = load(write(tmp_path, text.replace(f"{key}: {value}", f"{key}: {limit}")), env={})
    assert ok.ok, ok.diagnostics


def test_backoff_has_a_maximum(tmp_path: Path) -> None:
    text = PIPE.replace("    run: m:f\n", "    run: m:f\n    backoff: {initial: 1, max: 1e9}\n")
    res = load(write(tmp_path, text), env={})
    assert errors(res) == [("ZF026", "nodes.src.backoff.max", 6)]


def test_every_number_in_the_schema_is_bounded() -> None:
    def walk(node: object, path: str):
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number"):
                yield path, node
            for k, v in node.items():
                yield from walk(v, f"{path}/{k}")

    numbers = list(walk(json.loads(schema_text()), "#"))
    assert len(numbers) >= 9
    for path, node in numbers:
        assert "maximum" in node, path
        assert "minimum" in node or "exclusiveMinimum" in node, path


# -- 2. names ------------------------------------------------------------------------------------

def test_node_names_are_dns_labels_of_at_most_63_characters(tmp_path: Path) -> None:
    ok = "n" * 63
    res = load(write(tmp_path, PIPE.replace("src", ok)), env={})
    assert res.ok, res.diagnostics
    explicit = "version: 1\nname: t\nnodes:\n  ? {}\n  : run: m:f\n    sockets:\n      out: " \
        "{{type: PUSH, bind: tcp}}\n"  # YAML allows implicit keys up to 1024 characters only
    for name, text, col in (("n" * 64, PIPE.replace("src", "n" * 64), 3),
                            ("n" * 1000, PIPE.replace("src", "n" * 1000), 3),
                            ("n" * 5000, explicit.format("n" * 5000), 5)):
        res = load(write(tmp_path, text), env={})
        assert ("ZF027", clip(f"nodes.{name}", 1000), 4) in errors(res), res.diagnostics
        d = next(d for d in res.errors if d.code == "ZF027")
        assert d.col == col
        assert f"is {len(name)} characters long; at most 63" in d.message
        assert len(d.message) < 200  # the name is shortened in the message
        assert "host name" in (d.hint or "")
    for name, fix in (("my_src", "my-src"), ("Src", "src"), ("src-", "src"), ("1src", None)):
        res = load(write(tmp_path, PIPE.replace("src", name)), env={})
        assert ("ZF027", f"nodes.{name}", 4) in errors(res), (name, res.diagnostics)
        d = next(d for d in res.errors if d.code == "ZF027")
        assert "host name" in (d.hint or "")
        if fix:
            assert f"'{fix}'" in (d.hint or ""), d.hint


def test_long_node_and_socket_names_are_checked_against_the_ipc_limit(tmp_path: Path) -> None:
    # ipc://<run dir>/<node>.<replica>.<socket> must fit the 107-byte sun_path
    run_dir = len(tempfile.gettempdir()) + len("/zflow-12345678")
    node = "n" * 63
    room = 107 - run_dir - len(f"/{node}.0.")
    fits, too_long = "s" * room, "s" * (room + 1)
    text = PIPE.replace("src", node)
    res = load(write(tmp_path, text.replace("out", fits)), env={})
    assert res.ok, res.diagnostics
    res = load(write(tmp_path, text.replace("out", too_long)), env={})
    (d,) = res.errors
    assert (d.code, d.path, d.line) == ("ZF057", f"nodes.{node}.sockets.{too_long}.bind", 7)
    assert "108 characters" in d.message and "107" in d.message
    assert f"'{node}.{too_long}'" in d.message
    assert d.hint and "shorter" in d.hint
    # the replica number counts too: replica 10 needs one more character than replica 9
    res = load(write(tmp_path, text.replace("out", fits).replace(
        "    run: m:f\n", "    run: m:f\n    replicas: 11\n")), env={})
    assert [e.code for e in res.errors] == ["ZF057"]


# -- 3. empty control words ----------------------------------------------------------------------

@pytest.mark.parametrize("key,sock", [("stop_on", "inp"), ("send_on_end", "out")])
def test_empty_control_words_are_refused(tmp_path: Path, key: str, sock: str) -> None:
    text = PIPE.replace("bind: auto}", "bind: auto" + (", send_on_end: ''}" if sock == "out"
                                                       else "}"))
    text = text.replace("connect: src.out}", "connect: src.out" + (", stop_on: ''}"
                                                                  if sock == "inp" else "}"))
    res = load(write(tmp_path, text), env={})
    node = "src" if sock == "out" else "dst"
    line = 7 if sock == "out" else 11
    (d,) = res.errors
    assert (d.code, d.path, d.line) == ("ZF031", f"nodes.{node}.sockets.{sock}.{key}", line)
    assert d.message == f"socket '{node}.{sock}' {key} must not be an empty string"
    assert d.hint and "FINISHED" in d.hint


# -- 4. special files ----------------------------------------------------------------------------

def test_validate_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "t.yaml"
    os.mkfifo(fifo)
    r = zflow("validate", str(fifo), str(SQUARES), timeout=30)  # blocked forever before
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.startswith(f"{fifo}: error[ZF001]: not a regular file (a FIFO)")
    assert r.stdout.splitlines()[-1] == ("2 files checked: 1 valid, 1 unreadable (1 error, "
                                         "0 warnings)")
    r = zflow("up", "--dry-run", str(fifo), timeout=30)
    assert r.returncode == 2 and "not a regular file (a FIFO)" in r.stderr


def test_validate_refuses_a_device_at_once() -> None:
    r = zflow("validate", "/dev/zero", timeout=30)  # read forever before
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.startswith("/dev/zero: error[ZF001]: not a regular file (a character "
                               "device)")
    res = load("/dev/null", env={})
    assert res.unreadable and [d.code for d in res.diagnostics] == ["ZF001"]


# -- 5. bounded diagnostic output ----------------------------------------------------------------

def _flood(tmp_path: Path, n: int = 20000) -> tuple[str, str]:
    refs = ", ".join(["src.out"] * n)
    text = PIPE.replace("connect: src.out}", f"connect: [{refs}]}}")
    return write(tmp_path, text), text.splitlines()[10]


def test_a_flood_of_duplicates_gives_bounded_output(tmp_path: Path) -> None:
    path, line = _flood(tmp_path)
    assert 100_000 < os.path.getsize(path) < 200_000
    r = zflow("validate", path)
    assert r.returncode == 0, r.stderr  # warnings only
    assert len(r.stdout) < 100_000, len(r.stdout)
    out = r.stdout.splitlines()
    first = line.index("src.out, src.out") + len("src.out, ") + 1
    assert out[0].startswith(f"{path}:11:{first}: warning[ZF070]: 'dst.inp' connects to "
                             "src.out twice")
    # the quoted line is a window around the column, the caret under the value
    assert len(out[1]) < 260 and "…" in out[1]
    assert out[1][out[2].index("^"):].startswith("src.out, src.out")
    assert out[2].split("|", 1)[1].strip() == "^^^^^^^"
    assert sum(1 for x in out if "warning[ZF070]" in x) == 20
    assert "… and 19979 more ZF070 like this" in r.stdout
    assert out[-1] == "1 file checked: 1 valid (0 errors, 19999 warnings)"
    r = zflow("validate", "--format", "github", path)
    assert len(r.stdout) < 100_000
    assert r.stdout.count("::warning ") == 21 and "19979 more ZF070" in r.stdout
    # json keeps every entry (it quotes no source line), each of bounded size
    r = zflow("validate", "--format", "json", path)
    data = json.loads(r.stdout)
    assert len(data) == 19999 and len(r.stdout) < 19999 * 400


def test_quoted_lines_are_windowed_around_the_column() -> None:
    src = "x: [" + "a, " * 3000 + "PUSHH, " + "b, " * 3000 + "]\n"
    col = src.index("PUSHH") + 1
    d = Diagnostic("error", "ZF025", "bad", "x", "t.yaml", 1, col)
    buf = io.StringIO()
    render([d], "human", buf, sources={"t.yaml": src})
    head, quoted, caret = buf.getvalue().splitlines()
    assert head.startswith(f"t.yaml:1:{col}: error[ZF025]")
    assert 150 < len(quoted) < 230 and quoted.count("…") == 2
    assert quoted[caret.index("^"):].startswith("PUSHH")
    assert caret.split("|", 1)[1].strip() == "^^^^^"
    # the start of a long line: no leading ellipsis
    d = Diagnostic("error", "ZF025", "bad", "x", "t.yaml", 1, 1)
    buf = io.StringIO()
    render([d], "human", buf, sources={"t.yaml": src})
    quoted = buf.getvalue().splitlines()[1]
    assert quoted.startswith(" 1 | x: [a, ") and quoted.endswith("…")


def test_huge_values_are_shortened_in_messages(tmp_path: Path) -> None:
    target = "tcp://" + "h" * 50_000 + ":1"
    text = PIPE.replace("connect: src.out}", f"connect: [src.out, '{target}', '{target}']}}")
    res = load(write(tmp_path, text), env={})
    assert "ZF070" in [d.code for d in res.diagnostics]
    for d in res.diagnostics:
        assert len(d.message) <= 600 and len(d.hint or "") <= 600, d


def test_new_codes_are_listed() -> None:
    assert CODES["ZF074"][0] == "error"
    r = zflow("validate", "--list-codes")
    assert "ZF074  error" in r.stdout
