"""`zflow validate FILE...`: report every problem in every file, exit 0 / 1 / 2."""

from __future__ import annotations

import os
import sys
from typing import Any

from zflow import exitcodes
from zflow.spec.diagnostics import codes_table, render
from zflow.spec.load import load


def _color(stream: Any) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def validate_command(args: Any) -> int:
    """Validate `args.files`; exit 0 all valid, 1 any invalid, 2 usage or unreadable input."""
    out = sys.stdout
    if getattr(args, "list_codes", False):
        out.write(codes_table())
        return exitcodes.OK
    files = list(getattr(args, "files", []) or [])
    if not files:
        print("zflow validate: error: no files given (usage: zflow validate FILE...)",
              file=sys.stderr)
        return exitcodes.USAGE
    fmt = getattr(args, "format", "human") or "human"
    strict = bool(getattr(args, "strict", False))
    sets = list(getattr(args, "set", []) or [])
    import_check = bool(getattr(args, "import_check", False))

    all_diags = []
    sources: dict[str, str] = {}
    invalid = unreadable = 0
    n_err = n_warn = 0
    for f in files:
        res = load(f, overrides=sets, import_check=import_check)
        sources.update(res.sources)
        errors, warnings = len(res.errors), len(res.warnings)
        n_err += errors
        n_warn += warnings
        if res.unreadable:
            unreadable += 1
        elif errors or (strict and warnings):
            invalid += 1
        if fmt == "json":
            all_diags.extend(res.diagnostics)
        else:
            render(res.diagnostics, fmt, out, color=_color(out), sources=res.sources)
    if fmt == "json":
        render(all_diags, "json", out)
    elif fmt == "human":
        good = len(files) - invalid - unreadable
        parts = [f"{len(files)} file{'s' if len(files) != 1 else ''} checked: {good} valid"]
        if invalid:
            parts.append(f"{invalid} invalid")
        if unreadable:
            parts.append(f"{unreadable} unreadable")
        tail = f" ({n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning" \
               f"{'s' if n_warn != 1 else ''})"
        if strict and n_warn:
            tail += ", warnings count as errors (--strict)"
        out.write(", ".join(parts) + tail + "\n")
    out.flush()
    if unreadable:
        return exitcodes.USAGE
    return exitcodes.FAILED if invalid else exitcodes.OK
