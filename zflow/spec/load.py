"""`load()`: one topology file from bytes on disk to a validated plain dict, or located problems.

Order matters and is part of the contract: read -> parse (positions kept) -> `${VAR}` substitution
-> `--set` / `--scale` overrides -> version -> schema -> ZeroMQ rules (-> import check, opt-in).
Validation therefore judges exactly the document that would run.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from zflow.records import field, record
from zflow.spec import rules
from zflow.spec.diagnostics import COMMAND_LINE, Diagnostic, make
from zflow.spec.envfile import apply_env_files
from zflow.spec.locate import Locator
from zflow.spec.schema import check_version, schema_diagnostics
from zflow.spec.subst import apply_overrides, substitute
from zflow.spec.yamlpos import parse, path_str

#: Largest topology file accepted (a real one is a few kilobytes).
MAX_BYTES = 2 * 1024 * 1024
#: the name of the file `zflow ... -` copies the standard input to: its parse is never cached (a
#: topology piped in, `envsubst < template.yaml | zflow validate -`, may hold secrets)
STDIN_COPY_PREFIX = ".zflow-stdin-"


@record
class LoadResult:
    """What `load()` found. `topology` is None whenever there is an error."""

    path: str
    topology: dict | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    unreadable: bool = False
    #: file name -> text, for quoting source lines (includes `<command line>` when overridden)
    sources: dict[str, str] = field(default_factory=dict)
    #: where each value of the document is (later checks, such as `zflow export`, locate with it)
    locator: Any = None

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]


def _pos_of(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: str, mode: int) -> Diagnostic | None:
    """ZF001 for anything but a regular file: a FIFO would block the open (or the read) until a
    writer comes, a device like /dev/zero never ends."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return make("ZF001", "is a directory, not a file", file=path)
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
    return make("ZF001", f"not a regular file ({kind})", file=path,
                hint="zflow reads topologies from regular files; for a pipe, give `-` and "
                     "redirect the pipe to standard input")


def read_text(path: str) -> tuple[str | None, Diagnostic | None]:
    """The file as text, or a diagnostic saying why it cannot be a topology file."""
    try:
        # stat before open: opening a FIFO blocks until a writer comes
        problem = _not_regular(path, os.stat(path).st_mode)
        if problem is not None:
            return None, problem
        # ... and the file may have been replaced since: open without blocking, look again
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            problem = _not_regular(path, os.fstat(fd).st_mode)
            if problem is not None:
                return None, problem
            os.set_blocking(fd, True)
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None, make("ZF001", "no such file", file=path)
    except IsADirectoryError:
        return None, make("ZF001", "is a directory, not a file", file=path)
    except PermissionError:
        return None, make("ZF001", "permission denied", file=path)
    except OSError as e:
        return None, make("ZF001", f"cannot read: {e.strerror or e}", file=path)
    if len(raw) > MAX_BYTES:
        return None, make("ZF003", f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB; "
                                   "that is not a topology", file=path)
    nul = raw.find(b"\0")
    if nul >= 0:
        head = raw[:nul].decode("utf-8", "replace")
        line, col = _pos_of(head, len(head))
        return None, make("ZF002", "binary file (contains NUL bytes), not a YAML topology",
                          file=path, line=line, col=col)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        head = raw[: e.start].decode("utf-8", "replace")
        line, col = _pos_of(head, len(head))
        return None, make("ZF002", f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                                   f"{e.start})", file=path, line=line, col=col,
                          hint="save the file as UTF-8")
    return text.removeprefix("\ufeff"), None


def strip_extensions(v: Any, path: tuple = ()) -> Any:
    """Drop `x-` keys everywhere except inside `params` (free user data, handed over as is)."""
    if isinstance(v, dict):
        if len(path) == 3 and path[0] == "nodes" and path[2] == "params":
            return v
        return {k: strip_extensions(x, path + (k,)) for k, x in v.items()
                if not (isinstance(k, str) and k.startswith("x-"))}
    if isinstance(v, list):
        return [strip_extensions(x, path + (i,)) for i, x in enumerate(v)]
    return v


def _already_reported(d: Diagnostic, reported: set) -> bool:
    """A value whose tag was refused or whose ${VAR} failed was reported once; say no more."""
    for p in reported:
        ps = path_str(p)
        if d.path == ps or d.path.startswith(ps + ".") or d.path.startswith(ps + "["):
            return True
    return False


def load(path: str, overrides: Sequence[str] = (), scale: Sequence[str] = (),
         env: Mapping[str, str] | None = None, *, import_check: bool = False) -> LoadResult:
    """Read, parse, substitute, override and validate one topology file. Never raises on input.

    `overrides` are `--set PATH=VALUE` strings, `scale` are `NODE=N` strings (sugar for
    `nodes.NODE.replicas=N`), `env` defaults to `os.environ`. With `import_check`, each `run:`
    target is also imported (in a subprocess) and checked to be callable.
    """
    path = os.fspath(path)
    res = LoadResult(path=path)
    text, problem = read_text(path)
    if problem is not None:
        res.diagnostics.append(problem)
        res.unreadable = True
        return res
    assert text is not None
    res.sources[path] = text
    doc, diags = parse(text, path, cache=not os.path.basename(path).startswith(STDIN_COPY_PREFIX))
    res.diagnostics.extend(diags)
    if doc is None:
        return res
    data, sdiags = substitute(doc.data, os.environ if env is None else env, Locator(path, doc))
    diags = list(sdiags)
    data, odiags, origins, cmdtext = apply_overrides(data, overrides, scale)
    diags.extend(odiags)
    if cmdtext:
        res.sources[COMMAND_LINE] = cmdtext
    loc = res.locator = Locator(path, doc, origins)
    vdiags = check_version(data, loc)
    diags.extend(vdiags)
    if not vdiags:
        later = schema_diagnostics(data, loc) + rules.check(data, loc)
        diags.extend(d for d in later if not _already_reported(d, doc.reported))
        if import_check and not any(d.is_error for d in diags + res.diagnostics):
            from zflow.spec.importcheck import check_imports

            diags.extend(check_imports(data, path, loc))
        if not any(d.is_error for d in diags + res.diagnostics):
            diags.extend(apply_env_files(data, path, loc))
    res.diagnostics.extend(diags)
    res.diagnostics.sort(key=Diagnostic.sort_key)
    if res.ok:
        res.topology = strip_extensions(data)
    return res
