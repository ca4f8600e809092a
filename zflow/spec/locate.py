"""Turn a document path into a place a human can open: file, line, column.

Values overridden on the command line (`--set`, `--scale`) are located in the `<command line>`
pseudo file, so a bad override points at the argument rather than at a file line it replaced.
"""

from __future__ import annotations

from zflow.spec.diagnostics import COMMAND_LINE, Diagnostic, Severity, make
from zflow.spec.yamlpos import Path, PosDoc, path_str


class Locator:
    """Positions of values and keys, with command-line overrides taking precedence."""

    def __init__(self, file: str, doc: PosDoc | None,
                 overrides: dict[Path, tuple[int, int]] | None = None) -> None:
        self.file = file
        self.doc = doc or PosDoc()
        self.overrides = overrides or {}

    def _override(self, path: Path) -> tuple[int, int] | None:
        for n in range(len(path), 0, -1):
            hit = self.overrides.get(tuple(path[:n]))
            if hit:
                return hit
        return None

    def value(self, path: Path) -> tuple[str, int, int]:
        """Where the value at `path` starts (or its nearest located ancestor)."""
        path = tuple(path)
        hit = self._override(path)
        if hit:
            return (COMMAND_LINE, *hit)
        for n in range(len(path), -1, -1):
            pos = self.doc.values.get(path[:n])
            if pos:
                return (self.file, *pos)
        return (self.file, 1, 1)

    def key(self, path: Path) -> tuple[str, int, int]:
        """Where the key naming `path` is (`work:` for nodes.w.sockets.work); value as fallback."""
        path = tuple(path)
        hit = self._override(path)
        if hit:
            return (COMMAND_LINE, *hit)
        pos = self.doc.keys.get(path)
        if pos:
            return (self.file, *pos)
        return self.value(path)

    def diag(self, code: str, message: str, path: Path, *, at: str = "value",
             hint: str | None = None, severity: Severity | None = None) -> Diagnostic:
        """A diagnostic located at the value (`at="value"`) or key (`at="key"`) of `path`."""
        file, line, col = self.key(path) if at == "key" else self.value(path)
        return make(code, message, path=path_str(path), file=file, line=line, col=col, hint=hint,
                    severity=severity)
