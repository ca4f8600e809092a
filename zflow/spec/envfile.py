"""`env_file:` (top level and per node): files of `KEY=VALUE` lines merged under a node's `env`.

Like Compose: a path (or a list of paths, later files winning) relative to the topology file's
directory. Lines are `KEY=VALUE` (an optional `export ` prefix is allowed), `#` starts a comment
line, blank lines are skipped, a value may be quoted with `'` or `"` (the quotes are removed, and
in an unquoted value ` #` starts a comment). No `${VAR}` substitution happens inside the file.

Precedence, lowest first: top-level `env_file`, the node's `env_file`, the node's `env`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from zflow.spec.diagnostics import Diagnostic
from zflow.spec.locate import Locator
from zflow.spec.yamlpos import Path

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
#: largest env file read (a real one is a few hundred bytes)
MAX_ENV_FILE = 1024 * 1024


def parse_env_text(text: str) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """(values, [(line number, problem)]) of an env file's text."""
    values: dict[str, str] = {}
    problems: list[tuple[int, str]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            problems.append((n, f"expected KEY=VALUE, got {raw.strip()!r}"))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
            value = value[1:-1]
        elif value[:1] in ("'", '"'):
            problems.append((n, f"unterminated quote in the value of {key}"))
            continue
        else:
            value = re.split(r"\s#", value, maxsplit=1)[0].rstrip()
        values[key] = value
    return values, problems


def _read(where: str) -> tuple[str | None, str | None]:
    try:
        with open(where, "rb") as f:
            raw = f.read(MAX_ENV_FILE + 1)
    except FileNotFoundError:
        return None, "no such file"
    except IsADirectoryError:
        return None, "is a directory, not a file"
    except PermissionError:
        return None, "permission denied"
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    if len(raw) > MAX_ENV_FILE:
        return None, "larger than 1 MiB; that is not an env file"
    try:
        return raw.decode("utf-8").removeprefix("\ufeff"), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"


def _load_files(value: Any, path: Path, base_dir: str, loc: Locator,
                diags: list[Diagnostic]) -> dict[str, str]:
    out: dict[str, str] = {}
    items = [(path, value)] if isinstance(value, str) else [
        (path + (i,), v) for i, v in enumerate(value or [])]
    for p, name in items:
        if not isinstance(name, str):
            continue
        where = name if os.path.isabs(name) else os.path.join(base_dir, name)
        text, problem = _read(where)
        if text is None:
            diags.append(loc.diag("ZF043", f"env_file {name!r}: {problem} ({where})", p,
                                  hint="env_file paths are relative to the topology file's "
                                       "directory; create the file or fix the path"))
            continue
        values, problems = parse_env_text(text)
        for line, msg in problems:
            diags.append(loc.diag("ZF043", f"env_file {name!r}, line {line}: {msg}", p,
                                  hint="each line is KEY=VALUE; '#' starts a comment line"))
        out.update(values)
    return out


def apply_env_files(data: Any, file: str, loc: Locator) -> list[Diagnostic]:
    """Read every `env_file` of a validated document and merge it under each node's `env`
    (in place). Returns the problems (ZF043), located at the `env_file` value."""
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        return []
    diags: list[Diagnostic] = []
    base_dir = os.path.dirname(os.path.abspath(file))
    top = _load_files(data["env_file"], ("env_file",), base_dir, loc, diags) \
        if "env_file" in data else {}
    for name, nd in data["nodes"].items():
        if not isinstance(nd, dict) or str(name).startswith("x-"):
            continue
        own = _load_files(nd["env_file"], ("nodes", name, "env_file"), base_dir, loc, diags) \
            if "env_file" in nd else {}
        if top or own:
            nd["env"] = {**top, **own, **(nd.get("env") or {})}
    return diags
