"""The PyYAML half of `zflow.spec.yamlpos`: compose a document and build plain values with
their positions. Imported only when `yamlpos` has no cached parse of the text (PyYAML's import
alone is ~16 ms of CPU, most of a warm `zflow validate`)."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from zflow.spec.diagnostics import Diagnostic, make
from zflow.spec.yamlpos import (
    _T,
    BOOL,
    FLOAT,
    INT,
    MAP,
    MAX_DEPTH,
    MAX_NODES,
    MERGE,
    NULL,
    RESOLVERS,
    SEQ,
    STR,
    Path,
    PosDoc,
    path_str,
    scalar_value,
)


class _Resolver(BaseResolver):
    """YAML 1.2 core schema: only true/false are booleans, no sexagesimals, no timestamps."""

    yaml_implicit_resolvers: dict = {}


for _tag, _regex, _first in RESOLVERS:
    _Resolver.add_implicit_resolver(_tag, _regex, _first)


class _TooDeep(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__("too deep")
        self.mark = mark


class _Loader(Reader, Scanner, Parser, Composer, _Resolver):
    """Composer only (never constructs objects), with a nesting guard against deep recursion."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _pos(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.doc = PosDoc()
        self.diags: list[Diagnostic] = []
        self.count = 0
        self.too_big = False

    def diag(self, code: str, msg: str, mark: Any, path: Path, hint: str | None = None) -> None:
        line, col = _pos(mark)
        self.diags.append(make(code, msg, path=path_str(path), file=self.file, line=line, col=col,
                               hint=hint))

    def build(self, node: Any, path: Path, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES or depth > MAX_DEPTH:
            if not self.too_big:
                self.too_big = True
                if depth > MAX_DEPTH:
                    self.diag("ZF008", f"nesting deeper than {MAX_DEPTH} levels (through aliases)",
                              node.start_mark, path)
                else:
                    self.diag("ZF009", f"aliases expand to more than {MAX_NODES} values",
                              node.start_mark, path,
                              hint="a topology never needs this; it looks like a 'billion laughs'"
                                   " document")
            return None
        self.doc.values.setdefault(path, _pos(node.start_mark))
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag not in (STR, INT, FLOAT, BOOL, NULL):
                self._refuse(node, path)
                return node.value
            return node.value if tag == STR else scalar_value(tag, node.value)
        if isinstance(node, yaml.SequenceNode):
            if tag != SEQ:
                self._refuse(node, path)
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if tag != MAP:
                self._refuse(node, path)
            return self._mapping(node, path, depth)
        return None  # pragma: no cover

    def _refuse(self, node: Any, path: Path) -> None:
        self.doc.reported.add(path)
        tag = node.tag
        short = tag.replace(_T, "!!") if tag.startswith(_T) else tag
        self.diag("ZF007", f"YAML tag {short} is refused", node.start_mark, path,
                  hint="topologies hold plain strings, numbers, booleans, lists and mappings; "
                       "remove the tag")

    def _key(self, knode: Any, path: Path) -> str | None:
        if not isinstance(knode, yaml.ScalarNode):
            self.diag("ZF011", "mapping keys must be plain strings, not a list or mapping",
                      knode.start_mark, path)
            return None
        if knode.tag not in (STR, INT, FLOAT, BOOL, NULL):
            self._refuse(knode, path)
        return knode.value

    def _mapping(self, node: Any, path: Path, depth: int) -> dict:
        out: dict[str, Any] = {}
        explicit: set[str] = set()
        merged: list[Any] = []
        for knode, vnode in node.value:
            if knode.tag == MERGE and isinstance(knode, yaml.ScalarNode) and knode.style is None:
                merged.append(vnode)
                continue
            key = self._key(knode, path)
            if key is None:
                continue
            kpath = path + (key,)
            if key in explicit:
                first = self.doc.keys.get(kpath)
                where = f" (first at line {first[0]})" if first else ""
                self.diag("ZF006", f"duplicate key '{key}'{where}", knode.start_mark, kpath,
                          hint="YAML keeps only one of them; remove or rename the other")
                continue
            explicit.add(key)
            self.doc.keys[kpath] = _pos(knode.start_mark)
            out[key] = self.build(vnode, kpath, depth + 1)
        # merge keys (`<<: *base`): explicit keys win, earlier merges win over later ones
        for vnode in merged:
            sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
            for src in sources:
                if not isinstance(src, yaml.MappingNode):
                    self.diag("ZF005", "`<<` merge needs a mapping or a list of mappings",
                              src.start_mark, path)
                    continue
                for knode, v in src.value:
                    key = self._key(knode, path) if not (knode.tag == MERGE) else None
                    if key is None or key in out:
                        continue
                    kpath = path + (key,)
                    self.doc.keys[kpath] = _pos(knode.start_mark)
                    out[key] = self.build(v, kpath, depth + 1)
        return out


def _offset_to_pos(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, col


def parse(text: str, file: str) -> tuple[PosDoc | None, list[Diagnostic]]:
    """Parse one YAML document. Returns (None, diags) when nothing usable could be built."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except _TooDeep as e:
        line, col = _pos(e.mark)
        return None, [make("ZF008", f"nesting deeper than {MAX_DEPTH} levels", file=file,
                           line=line, col=col)]
    except yaml.reader.ReaderError as e:
        line, col = _offset_to_pos(text, e.position)
        return None, [make("ZF002", f"unacceptable character #x{e.character:04x} in the file",
                           file=file, line=line, col=col,
                           hint="topology files are plain text; remove control characters")]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = _pos(mark) if mark else (0, 0)
        problem = e.problem or "invalid YAML"
        if "expected a single document" in (e.context or ""):
            return None, [make("ZF010", "more than one YAML document in the file", file=file,
                               line=line, col=col, hint="remove the `---` and what follows, or "
                               "split the file")]
        msg = problem
        if e.context:
            msg = f"{problem} ({e.context}"
            if e.context_mark and mark and e.context_mark.line != mark.line:
                msg += f" at line {e.context_mark.line + 1}"
            msg += ")"
        hint = None
        if "\\t" in problem or "'\\t'" in problem:
            hint = "YAML indentation uses spaces, not tabs"
        elif "mapping values are not allowed" in problem:
            hint = "a value with ': ' in it needs quotes, or the indentation is off"
        elif "could not find expected ':'" in problem:
            hint = "check the indentation of the lines above"
        return None, [make("ZF005", f"YAML syntax error: {msg}", file=file, line=line, col=col,
                           hint=hint)]
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML error is marked or a reader one
        return None, [make("ZF005", f"YAML error: {e}", file=file, line=1, col=1)]
    except RecursionError:  # pragma: no cover - the depth guard fires first
        return None, [make("ZF008", "nesting too deep", file=file, line=1, col=1)]
    if node is None:
        return None, [make("ZF004", "the file is empty (no YAML document)", file=file, line=1,
                           col=1, hint="start with `version: 1`")]
    b = _Builder(file)
    b.doc.data = b.build(node, (), 0)
    if b.too_big:
        return None, b.diags
    return b.doc, b.diags


