"""Safe YAML loading that remembers where every key and value came from.

PyYAML's loaders forget positions, silently keep the last of duplicate keys, turn `no` into False
(YAML 1.1: `restart: no` would become a boolean) and, unless one is careful, construct objects from
tags. So we compose the node graph with a YAML 1.2 core-schema resolver and build plain JSON-like
values ourselves, recording `path -> (line, col)` for each value and each mapping key
(`zflow.spec.yamlcompose`).

A parse depends on nothing but the text, so a clean one is kept in the user's cache, as Python
keeps `.pyc` files: a warm `zflow validate` or `zflow up` then never imports PyYAML (~16 ms of
CPU, a quarter of the command). An entry is used only if its text is the text being parsed and
it was written by this parser and this PyYAML, from a folder that is ours and that no one else
may write (entries are 0600); a copy of the standard input is never cached (load.py).
`ZFLOW_CACHE_DIR=` (empty) turns the cache off.
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any

from zflow.records import field, record

if TYPE_CHECKING:
    from zflow.spec.diagnostics import Diagnostic

MAX_DEPTH = 64
MAX_NODES = 200_000  # expanded values (after aliases): bounds "billion laughs"

Path = tuple  # tuple[str | int, ...]

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, MAP, SEQ, MERGE = (_T + t for t in
                                               ("str", "int", "float", "bool", "null", "map",
                                                "seq", "merge"))

#: YAML 1.2 core schema: only true/false are booleans, no sexagesimals, no timestamps. The
#: implicit tags of plain scalars as (tag, pattern, first characters), in the order PyYAML
#: tries them: `yamlcompose` registers them, `parse_value` resolves simple values with them.
RESOLVERS = [
    (BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    (INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")),
    (FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789.")),
    (NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    (MERGE, re.compile(r"^(?:<<)$"), ["<"]),
]


@record
class PosDoc:
    """Plain data plus where each value (`values`) and each mapping key (`keys`) starts."""

    data: Any = None
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    #: values already reported (refused tags): later checks stay quiet about them
    reported: set[Path] = field(default_factory=set)


def path_str(path: Path) -> str:
    """`('nodes','w','command',1)` -> `nodes.w.command[1]`."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def scalar_value(tag: str, text: str) -> Any:
    """Plain scalar text -> int/float/bool/None/str per the (core-schema) resolved tag."""
    if tag == INT:
        t = text.replace("_", "")
        try:
            if t[:2] in ("0o", "0x") or t[:3] in ("+0o", "-0o", "+0x", "-0x"):
                return int(t, 0)
            return int(t, 10)
        except ValueError:
            return text
    if tag == FLOAT:
        low = text.lower()
        if low.endswith(".inf"):
            return -math.inf if low.startswith("-") else math.inf
        if low == ".nan":
            return math.nan
        try:
            return float(text)
        except ValueError:
            return text
    if tag == BOOL:
        return text.lower() == "true"
    if tag == NULL:
        return None
    return text


#: a value YAML reads as one plain scalar whatever it holds: letters, digits and `_./+-`, not
#: starting with a dash before a non-word (`- x`, `--`) or with a document marker
_PLAIN = re.compile(r"(?!---|\.\.\.)(?:[A-Za-z0-9_./+]|-(?=[A-Za-z0-9_./+]))[A-Za-z0-9_./+-]*")


def plain_scalar(text: str) -> tuple[bool, Any]:
    """(True, value) when `text` is a plain scalar `_PLAIN` accepts, resolved as PyYAML would;
    (False, None) when it needs the YAML parser."""
    if not _PLAIN.fullmatch(text):
        return False, None
    for tag, pattern, first in RESOLVERS:
        if text[0] in first and pattern.match(text):
            return True, scalar_value(tag, text)
    return True, text


# ---------------------------------------------------------------------------------------------
# the parse cache

#: bump when what an entry holds changes shape
CACHE_FORMAT = 1
#: entries kept: a miss that finds more removes the oldest down to CACHE_KEEP
CACHE_MAX, CACHE_KEEP = 256, 192


def cache_dir() -> str | None:
    """$ZFLOW_CACHE_DIR (empty: no cache), else $XDG_CACHE_HOME/zflow, else ~/.cache/zflow."""
    d = os.environ.get("ZFLOW_CACHE_DIR")
    if d is not None:
        return d or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "zflow")


def _stamp() -> tuple | None:
    """What a cached parse was made by: this parser's two files and the PyYAML that ran them
    (its path and mtime: an upgrade rewrites it, another environment has its own)."""
    from importlib.util import find_spec

    try:
        spec = find_spec("yaml")
        files = [__file__, os.path.join(os.path.dirname(__file__), "yamlcompose.py"),
                 spec.origin if spec and spec.origin else ""]
        return (CACHE_FORMAT, *((f, os.stat(f).st_mtime_ns) for f in files))
    except (OSError, ImportError, ValueError):
        return None


def _entry(folder: str, text: str, stamp: tuple) -> str:
    """The entry of `text` as parsed by `stamp`'s parser: two installations of zflow (two
    virtual environments) share the cache without overwriting each other's entries."""
    import zlib

    crc = zlib.crc32(text.encode("utf-8", "surrogatepass"))
    return os.path.join(folder, f"yaml-{crc:08x}-{len(text)}-"
                                f"{zlib.crc32(repr(stamp).encode()):08x}.marshal")


def _trusted(folder: str) -> bool:
    """Ours and writable by us alone: an entry another user could write is not read."""
    st = os.stat(folder)
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _cached(text: str, folder: str, stamp: tuple) -> PosDoc | None:
    import marshal

    try:
        if not _trusted(folder):
            return None
        with open(_entry(folder, text, stamp), "rb") as f:
            kept_stamp, kept, data, values, keys = marshal.loads(f.read())
    except (OSError, ValueError, EOFError, TypeError):  # none yet, or unreadable: parse
        return None
    if kept != text or kept_stamp != stamp:
        return None
    return PosDoc(data, values, keys)


def _store(text: str, doc: PosDoc, folder: str, stamp: tuple) -> None:
    """Best effort: a cache that cannot be written only costs the next run its parse."""
    import marshal

    path = _entry(folder, text, stamp)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        if not os.path.isdir(folder):
            if not _may_make(folder):
                return
            os.makedirs(folder, mode=0o700, exist_ok=True)
        if not _trusted(folder):
            return
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(marshal.dumps((stamp, text, doc.data, doc.values, doc.keys)))
        os.replace(tmp, path)
        _evict(folder)
    except (OSError, ValueError):  # unwritable, full, or a value marshal cannot hold
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _may_make(folder: str) -> bool:
    """The cache folder is made only below a directory of ours: root under `sudo` with another
    user's HOME would otherwise leave that user a ~/.cache they cannot write."""
    parent = os.path.dirname(os.path.abspath(folder))
    while not os.path.isdir(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    return os.stat(parent).st_uid == os.getuid()


def _evict(folder: str) -> None:
    names = [n for n in os.listdir(folder) if n.startswith("yaml-") and n.endswith(".marshal")]
    if len(names) <= CACHE_MAX:
        return
    def mtime(name: str) -> int:
        try:
            return os.stat(os.path.join(folder, name)).st_mtime_ns
        except OSError:
            return 0
    for name in sorted(names, key=mtime)[:len(names) - CACHE_KEEP]:
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def parse(text: str, file: str, cache: bool = True) -> tuple[PosDoc | None, list[Diagnostic]]:
    """Parse one YAML document. Returns (None, diags) when nothing usable could be built.

    Only a parse with no diagnostics is cached (their messages name `file`; a clean parse does
    not depend on it)."""
    folder = cache_dir() if cache else None
    stamp = _stamp() if folder else None  # looked up once, for the read and a miss's write
    if folder and stamp is not None:
        doc = _cached(text, folder, stamp)
        if doc is not None:
            return doc, []
    from zflow.spec import yamlcompose

    doc, diags = yamlcompose.parse(text, file)
    if folder and stamp is not None and doc is not None and not diags:
        _store(text, doc, folder, stamp)
    return doc, diags


def parse_value(text: str) -> Any:
    """A `--set` value: one YAML scalar or flow collection, with the same safe rules as files.

    Raises ValueError with a short message when the text is not acceptable.
    """
    if not text.strip():
        return ""
    simple, value = plain_scalar(text)
    if simple:
        return value
    doc, diags = parse(text, "<value>", cache=False)  # values are too many and too small
    if diags and any(d.is_error for d in diags):
        raise ValueError(diags[0].message)
    return None if doc is None else doc.data
