"""One located-problem type for the validator and the runtime, and its three renderings.

A `Diagnostic` says what is wrong, where (file, 1-based line and column of the offending value or
key, and the dotted path inside the document), how bad (error or warning), under which stable code
(so CI logs, docs and `--list-codes` agree) and, when we know one, how to fix it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Literal, TextIO

from zflow.records import asdict, record

Severity = Literal["error", "warning"]

#: Pseudo file name for problems caused by `--set` / `--scale` arguments.
COMMAND_LINE = "<command line>"


@record(frozen=True)
class Diagnostic:
    """A problem at a place. `line`/`col` are 1-based; 0 means "no position" (e.g. missing file)."""

    severity: Severity
    code: str
    message: str
    path: str = ""
    file: str = ""
    line: int = 0
    col: int = 0
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self) -> tuple:
        """File order: command-line problems first, then by line and column."""
        return (self.file != COMMAND_LINE, self.line, self.col, self.code)

    def to_dict(self) -> dict:
        return asdict(self)


# code -> (default severity, one-line summary). Stable: never renumber, only add.
CODES: dict[str, tuple[Severity, str]] = {
    # reading and YAML
    "ZF001": ("error", "file cannot be read (missing, a directory or another file that is not "
                       "regular, no permission)"),
    "ZF002": ("error", "file is not UTF-8 text (binary, NUL bytes or invalid encoding)"),
    "ZF003": ("error", "file is too large for a topology"),
    "ZF004": ("error", "file is empty (no YAML document)"),
    "ZF005": ("error", "YAML syntax error"),
    "ZF006": ("error", "duplicate key in a mapping"),
    "ZF007": ("error", "YAML tag refused (tags that construct objects, or unknown tags)"),
    "ZF008": ("error", "nesting too deep"),
    "ZF009": ("error", "aliases expand to too large a document"),
    "ZF010": ("error", "more than one YAML document in the file"),
    "ZF011": ("error", "mapping key is not a plain scalar"),
    # structure (schema)
    "ZF020": ("error", "unsupported format version"),
    "ZF021": ("error", "top level is not a mapping"),
    "ZF022": ("error", "unknown key"),
    "ZF023": ("error", "required key missing"),
    "ZF024": ("error", "value has the wrong type"),
    "ZF025": ("error", "value is not one of the allowed values"),
    "ZF026": ("error", "number out of range"),
    "ZF027": ("error", "invalid name (topology, node or socket)"),
    "ZF028": ("error", "node needs exactly one of run / command"),
    "ZF029": ("error", "socket needs exactly one of bind / connect"),
    "ZF030": ("error", "run target is not `package.module:callable`"),
    "ZF031": ("error", "empty string, list or mapping where a value is needed"),
    "ZF039": ("error", "other schema violation"),
    # substitution and command line
    "ZF040": ("error", "environment variable unset and no default given"),
    "ZF041": ("error", "malformed ${...} substitution"),
    "ZF042": ("error", "bad --set / --scale argument"),
    "ZF043": ("error", "env_file cannot be read or has a line that is not KEY=VALUE"),
    # ZeroMQ rules
    "ZF050": ("error", "incompatible socket types on a connection"),
    "ZF051": ("error", "reference to an unknown node"),
    "ZF052": ("error", "reference to an unknown socket"),
    "ZF053": ("error", "reference to a socket that does not bind"),
    "ZF054": ("error", "malformed endpoint or reference"),
    "ZF055": ("error", "unsupported transport"),
    "ZF056": ("error", "inproc endpoint between processes"),
    "ZF057": ("error", "ipc path longer than 107 characters"),
    "ZF058": ("error", "endpoint bound by more than one socket"),
    "ZF059": ("error", "node with replicas > 1 binds a fixed endpoint"),
    "ZF060": ("error", "reference to a wildcard bind (no concrete address to connect to)"),
    "ZF061": ("error", "SUB socket without subscribe"),
    "ZF062": ("error", "subscribe on a socket that is not SUB"),
    "ZF063": ("error", "PAIR socket with more than one peer or replica"),
    "ZF064": ("warning", "socket has no peer"),
    "ZF065": ("error", "stop_on on a socket that does not receive"),
    "ZF066": ("error", "send_on_end on a socket that does not send"),
    "ZF067": ("error", "explicit shape contradicts the sockets"),
    "ZF068": ("error", "msgpack socket faces a command node"),
    "ZF069": ("warning", "tcp bind reachable beyond loopback without CURVE"),
    "ZF070": ("warning", "same endpoint connected twice by one socket"),
    "ZF071": ("error", "codec differs between the two ends of a connection"),
    "ZF072": ("error", "topic on a socket that does not publish (PUB / XPUB)"),
    "ZF073": ("error", "exactly-once (at-least-once) delivery needs a PUSH/PULL pipeline of zflow "
                       "nodes with one sink node (of one replica)"),
    "ZF074": ("error", "too many replicas over all nodes"),
    "ZF075": ("error", "stdin and ready are options of command nodes"),
    "ZF077": ("error", "ready.log is not a valid regular expression"),
    "ZF078": ("error", "preload is an option of run: nodes"),
    "ZF076": ("error", "end_marker / external_senders on a socket they do not apply to"),
    # --import-check
    "ZF080": ("error", "run target module cannot be found"),
    "ZF081": ("error", "run target module raised while importing"),
    "ZF082": ("error", "run target attribute not found in its module"),
    "ZF083": ("error", "run target is not callable"),
    "ZF084": ("error", "import check could not run"),
    # zflow export k8s: what cannot run on a cluster
    "ZF090": ("error", "ipc:// endpoint on a cluster (every replica is on its own host)"),
    "ZF091": ("error", "concrete endpoint between the topology's nodes on a cluster"),
    "ZF092": ("error", "host path on a cluster (cwd outside the topology's directory)"),
    "ZF093": ("error", "command node refers to a host file outside the topology's directory"),
    "ZF094": ("error", "Kubernetes name longer than 63 characters"),
    # zflow export slurm
    "ZF095": ("error", "a fraction of a CPU on Slurm (whole CPUs only)"),
}


#: Longest message or hint: a value quoted from the file (a 100 KB endpoint string, say) is cut
#: in the middle, so no diagnostic grows with the input.
MAX_TEXT = 500
#: Widest source excerpt quoted under a human diagnostic: a longer line is shown as a window of
#: this many characters around the column, with `…` where it was cut.
QUOTE_WIDTH = 200
#: human and github output show this many diagnostics of one code per file, then one
#: "… and N more" line (json lists every one).
REPEAT_LIMIT = 20


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text`, or its start and end joined by `…` when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 3
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def make(code: str, message: str, *, path: str = "", file: str = "", line: int = 0, col: int = 0,
         hint: str | None = None, severity: Severity | None = None) -> Diagnostic:
    """Build a diagnostic with the code's default severity (keeps severities in one table)."""
    sev = severity or CODES.get(code, ("error", ""))[0]
    return Diagnostic(sev, code, clip(message), clip(path, 2 * MAX_TEXT), file, line, col,
                      None if hint is None else clip(hint))


def codes_table() -> str:
    """The `--list-codes` text: code, severity, summary."""
    return "".join(f"{code}  {sev:<7}  {text}\n" for code, (sev, text) in CODES.items())


# ---------------------------------------------------------------------------------------------
# rendering

_ANSI = {"error": "\033[1;31m", "warning": "\033[1;33m", "bold": "\033[1m", "blue": "\033[1;34m",
         "cyan": "\033[36m", "reset": "\033[0m"}


def _token_len(text: str, col0: int, cmdline: bool = False) -> int:
    """Length of the YAML token starting at col0, so the caret underlines the whole value."""
    rest = text[col0:]
    if not rest:
        return 1
    if cmdline:
        m = re.match(r"[^.=\s\[]+", rest)
        return len(m.group(0)) if m else 1
    if rest[0] in "\"'":
        end = rest.find(rest[0], 1)
        return end + 1 if end > 0 else len(rest.rstrip())
    if rest[0] in "{[":
        return 1
    m = re.match(r"(?:[^,:{}\[\]#\s]|:(?!\s|$)|[ \t]+(?=[^\s,{}\[\]#:]))+", rest)
    return max(1, len(m.group(0).rstrip())) if m else 1


def window(src: str, col0: int, width: int = QUOTE_WIDTH) -> tuple[str, int]:
    """At most `width` characters of `src` around column `col0` (0-based), `…` marking a cut,
    and where `col0` lands in that excerpt."""
    if len(src) <= width:
        return src, col0
    start = max(0, min(col0 - width // 3, len(src) - width))
    end = start + width
    pre = "…" if start else ""
    post = "…" if end < len(src) else ""
    return pre + src[start:end] + post, col0 - start + len(pre)


def _human(d: Diagnostic, lines: list[str] | None, color: bool) -> str:
    def c(name: str, s: str) -> str:
        return f"{_ANSI[name]}{s}{_ANSI['reset']}" if color else s

    where = d.file or "<input>"
    if d.line > 0:
        where += f":{d.line}" + (f":{d.col}" if d.col > 0 else "")
    head = f"{c('bold', where + ':')} {c(d.severity, f'{d.severity}[{d.code}]')}: {d.message}"
    if d.path:
        head += c("cyan", f"  ({d.path})")
    out = [head]
    if lines is not None and 0 < d.line <= len(lines):
        line = lines[d.line - 1].replace("\t", " ")
        src, col0 = window(line, min(max(d.col - 1, 0), len(line)))
        num = str(d.line)
        pad = " " * len(num)
        out.append(c("blue", f" {num} | ") + src)
        if d.col > 0:
            post = 1 if src.endswith("…") and len(line) > QUOTE_WIDTH else 0
            caret = "^" * max(1, min(_token_len(src[: len(src) - post], col0,
                                                d.file == COMMAND_LINE),
                                     len(src) - post - col0))
            out.append(c("blue", f" {pad} | ") + " " * col0 + c(d.severity, caret))
    if d.hint:
        out.append(f"  {c('bold', 'hint')}: {d.hint}")
    return "\n".join(out) + "\n"


def _gh_escape(s: str, prop: bool = False) -> str:
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        s = s.replace(":", "%3A").replace(",", "%2C")
    return s


def _github(d: Diagnostic) -> str:
    props = [f"file={_gh_escape(d.file, True)}"]
    if d.line > 0:
        props.append(f"line={d.line}")
        if d.col > 0:
            props.append(f"col={d.col}")
    props.append(f"title={_gh_escape(d.code, True)}")
    msg = d.message + (f" ({d.path})" if d.path else "") + (f"\nhint: {d.hint}" if d.hint else "")
    return f"::{d.severity} {','.join(props)}::{_gh_escape(msg)}\n"


def _more(file: str, code: str, severity: str, n: int, fmt: str) -> str:
    text = f"… and {n} more {code} like this (--format json lists every one)"
    if fmt == "github":
        return (f"::{severity} file={_gh_escape(file, True)},title={_gh_escape(code, True)}::"
                f"{_gh_escape(text)}\n")
    return f"{file or '<input>'}: {text}\n"


def render(diags: Iterable[Diagnostic], fmt: str, stream: TextIO, color: bool = False,
           sources: Mapping[str, str] | None = None) -> None:
    """Write diagnostics as `human` (compiler style, quoting the source), `json` or `github`.

    `human` and `github` show the first REPEAT_LIMIT diagnostics of each code in each file and
    then one "… and N more" line per code; `json` lists every diagnostic.
    """
    diags = list(diags)
    if fmt == "json":
        json.dump([d.to_dict() for d in diags], stream, indent=2, ensure_ascii=False)
        stream.write("\n")
        return
    if fmt not in ("human", "github"):
        raise ValueError(f"unknown diagnostics format {fmt!r}")
    seen: Counter[tuple[str, str]] = Counter()
    hidden: dict[tuple[str, str], list] = {}
    split: dict[str, list[str] | None] = {}
    for d in diags:
        key = (d.file, d.code)
        seen[key] += 1
        if seen[key] > REPEAT_LIMIT:
            hidden.setdefault(key, [d.severity, 0])[1] += 1
            continue
        if fmt == "github":
            stream.write(_github(d))
            continue
        if d.file not in split:  # split each source once, not once per diagnostic
            text = (sources or {}).get(d.file)
            split[d.file] = None if text is None else text.splitlines()
        stream.write(_human(d, split[d.file], color))
    for (file, code), (severity, n) in hidden.items():
        stream.write(_more(file, code, severity, n, fmt))
