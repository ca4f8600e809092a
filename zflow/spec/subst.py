"""`${VAR}` substitution on parsed values, and `--set` / `--scale` overrides.

Substituting on parsed string values (never on the raw text) means an environment variable can
never inject YAML structure. Overrides are applied to the parsed document before validation, so
the validator judges exactly what would run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from zflow.spec.diagnostics import COMMAND_LINE, Diagnostic, make
from zflow.spec.locate import Locator
from zflow.spec.schema import did_you_mean
from zflow.spec.yamlpos import Path, parse_value, path_str

_REF = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.S)
_WHOLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")

_NUM_SOCKET = {"hwm", "linger", "batch"}
_NUM_NODE = {"replicas", "max_restarts", "restart_window", "grace"}
_NUM_DEFAULTS = _NUM_SOCKET | {"max_restarts", "restart_window", "grace"}


def expects_number(path: Path) -> bool:
    """Whether the schema wants a number at `path` (for converting a whole `${VAR}` value)."""
    p = tuple(path)
    if len(p) == 2 and p[0] == "defaults":
        return p[1] in _NUM_DEFAULTS
    if len(p) == 3 and p[0] == "defaults" and p[1] == "backoff":
        return p[2] in ("initial", "max")
    if len(p) == 3 and p[0] == "nodes":
        return p[2] in _NUM_NODE
    if len(p) == 4 and p[0] == "nodes" and p[2] == "backoff":
        return p[3] in ("initial", "max")
    if len(p) == 5 and p[0] == "nodes" and p[2] == "sockets":
        return p[4] in _NUM_SOCKET
    return False


def _to_number(s: str) -> Any:
    try:
        return int(s.strip(), 10)
    except ValueError:
        pass
    try:
        return float(s.strip())
    except ValueError:
        return s


def substitute(data: Any, env: Mapping[str, str], loc: Locator,
               path: Path = ()) -> tuple[Any, list[Diagnostic]]:
    """Replace `${VAR}`, `${VAR:-default}` and `$$` in every string value (not in keys)."""
    diags: list[Diagnostic] = []

    def walk(v: Any, p: Path) -> Any:
        if isinstance(v, dict):
            return {k: walk(x, p + (k,)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, p + (i,)) for i, x in enumerate(v)]
        if not isinstance(v, str) or "$" not in v:
            return v
        bad = False
        in_command = len(p) >= 3 and p[0] == "nodes" and p[2] == "command"

        def hinted(hint: str, text: str) -> str:
            """In a command, `$` is the shell's too: say how to pass it through."""
            if not in_command:
                return hint + "; '$$' is a literal '$'"
            return (hint + f"; in a command, write $$ for a literal $ (${text} passes {text} "
                           "to the program)")

        def repl(m: re.Match) -> str:
            nonlocal bad
            text = m.group(0)
            if text == "$$":
                return "$"
            inner = m.group(1)
            if inner is None:
                bad = True
                diags.append(loc.diag("ZF041", f"unterminated '${{' in {v!r}", p,
                                      hint=hinted("close it with '}'", text)))
                return text
            nm = _NAME.match(inner)
            if not nm:
                bad = True
                diags.append(loc.diag("ZF041", f"malformed substitution {text!r}", p,
                                      hint=hinted("use ${NAME} or ${NAME:-default}", text)))
                return text
            name, default = nm.group(1), nm.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            bad = True
            unset = f"set it, or give a default: ${{{name}:-value}}"
            diags.append(loc.diag("ZF040", f"environment variable {name} is not set", p,
                                  hint=hinted(unset, text) if in_command else unset))
            return text

        out = _REF.sub(repl, v)
        if bad:
            loc.doc.reported.add(p)
        if not bad and _WHOLE.match(v) and expects_number(p):
            return _to_number(out)
        return out

    return walk(data, path), diags


def _split_path(text: str) -> list[str | int]:
    parts: list[str | int] = []
    for seg in re.split(r"\.(?![^\[]*\])", text):
        m = re.match(r"^([^\[\]]*)((?:\[\d+\])*)$", seg)
        if not m:
            raise ValueError(seg)
        if m.group(1):
            parts.append(int(m.group(1)) if m.group(1).isdigit() else m.group(1))
        elif not m.group(2):
            raise ValueError(seg)
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts


_CREATABLE = {"params", "env", "backoff", "defaults", "sockets"}


def _set(data: Any, parts: list, value: Any) -> tuple[str, int] | None:
    """Set `value` at `parts` (int segments naming mapping keys become strings in place).

    Returns (problem, index of the bad segment) or None.
    """
    cur = data
    for i, seg in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, dict):
            if isinstance(seg, int):
                seg = parts[i] = str(seg)
            if last:
                cur[seg] = value
                return None
            if seg not in cur:
                if seg in _CREATABLE:
                    cur[seg] = {}
                else:
                    guess = did_you_mean(seg, [k for k in cur if isinstance(k, str)])
                    return (f"no key '{seg}' here" + (f"; did you mean '{guess}'?" if guess
                                                      else ""), i)
            cur = cur[seg]
        elif isinstance(cur, list):
            if not isinstance(seg, int) or not 0 <= seg < len(cur):
                return (f"'{seg}' is not an index of this list (0..{len(cur) - 1})", i)
            if last:
                cur[seg] = value
                return None
            cur = cur[seg]
        else:
            return ("the value before this is not a mapping or a list", i)
    return None  # pragma: no cover


def _seg_col(text: str, parts_text: str, index: int) -> int:
    """1-based column, within a `--set ...` line, of path segment `index`."""
    offset = len("--set ")
    segs = re.split(r"\.(?![^\[]*\])", parts_text)
    return offset + sum(len(s) + 1 for s in segs[:index]) + 1


def apply_overrides(data: Any, overrides: Sequence[str], scale: Sequence[str]
                    ) -> tuple[Any, list[Diagnostic], dict[Path, tuple[int, int]], str]:
    """Apply `--set PATH=VALUE` then `--scale NODE=N`.

    Returns (data, diagnostics, {path: (line, col) in the command-line text}, that text).
    """
    diags: list[Diagnostic] = []
    origins: dict[Path, tuple[int, int]] = {}
    lines = [f"--set {s}" for s in overrides] + [f"--scale {s}" for s in scale]
    cmdtext = "\n".join(lines) + ("\n" if lines else "")

    def err(line: int, col: int, msg: str, hint: str | None = None, path: str = "") -> None:
        diags.append(make("ZF042", msg, path=path, file=COMMAND_LINE, line=line, col=col,
                          hint=hint))

    for n, raw in enumerate(overrides, start=1):
        if "=" not in raw:
            err(n, 7, f"--set needs PATH=VALUE, got {raw!r}", "e.g. --set nodes.worker.replicas=4")
            continue
        ptext, vtext = raw.split("=", 1)
        ptext = ptext.strip()
        try:
            parts = _split_path(ptext)
            if not parts:
                raise ValueError(ptext)
        except ValueError:
            err(n, 7, f"bad path {ptext!r} in --set", "a dotted path, e.g. nodes.worker.replicas")
            continue
        try:
            value = parse_value(vtext)
        except ValueError as e:
            err(n, 7 + len(raw.split("=", 1)[0]) + 1, f"bad value in --set: {e}",
                "quote it for a literal string, e.g. --set 'x=\"a: b\"'", path_str(tuple(parts)))
            continue
        if not isinstance(data, dict):
            continue
        problem = _set(data, parts, value)
        if problem:
            msg, i = problem
            err(n, _seg_col(raw, ptext, i), f"--set {ptext}: {msg}", None,
                path_str(tuple(parts[: i + 1])))
            continue
        origins[tuple(parts)] = (n, 7 + len(raw.split("=", 1)[0]) + 1)
    for m, raw in enumerate(scale, start=len(overrides) + 1):
        node, sep, count = raw.partition("=")
        node = node.strip()
        if not sep:
            err(m, 9, f"--scale needs NODE=N, got {raw!r}", "e.g. --scale worker=4")
            continue
        try:
            n_rep = int(count.strip(), 10)
        except ValueError:
            err(m, 9 + len(node) + 1, f"--scale {node}: {count!r} is not a whole number")
            continue
        if n_rep < 1:
            err(m, 9 + len(node) + 1, f"--scale {node}: replicas must be ≥ 1, got {n_rep}")
            continue
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, dict):
            continue
        if not isinstance(nodes.get(node), dict):
            guess = did_you_mean(node, [k for k in nodes if not str(k).startswith("x-")])
            err(m, 9, f"--scale: no node named '{node}'",
                f"did you mean '{guess}'?" if guess else f"nodes: {', '.join(map(str, nodes))}",
                f"nodes.{node}")
            continue
        nodes[node]["replicas"] = n_rep
        origins[("nodes", node, "replicas")] = (m, 9 + len(node) + 1)
    return data, diags, origins, cmdtext
