"""The topology JSON Schema and the translation of its errors into readable diagnostics.

jsonschema's own messages ("Additional properties are not allowed ('sokets' was unexpected)",
"... is not valid under any of the given schemas") are accurate but unhelpful; each error kind is
rewritten here into one sentence about the user's file, located at the offending key or value,
with a did-you-mean where a near miss is likely.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from zflow.spec.diagnostics import Diagnostic
from zflow.spec.locate import Locator
from zflow.spec.yamlpos import Path

if TYPE_CHECKING:  # jsonschema is imported only for a file that is not valid (fastcheck.py)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

SOCKET_TYPES = ("PUSH", "PULL", "PUB", "SUB", "XPUB", "XSUB", "REQ", "REP", "DEALER", "ROUTER",
                "PAIR")

# Unknown keys people reach for, and what zflow calls them.
_ALIASES = {
    "args": "command", "argv": "command", "cmd": "command", "exec": "command",
    "target": "run", "func": "run", "function": "run", "callable": "run", "entrypoint": "run",
    "entry": "run", "module": "run",
    "address": "bind' or 'connect", "endpoint": "bind' or 'connect", "addr": "bind' or 'connect",
    "topics": "subscribe", "subscription": "subscribe",
    "subscriptions": "subscribe", "filter": "subscribe",
    "kind": "type", "socket_type": "type", "socktype": "type",
    "instances": "replicas", "processes": "replicas", "scale": "replicas", "count": "replicas",
    "socket": "sockets", "ports": "sockets", "environment": "env", "parameters": "params",
    "options": "params", "config": "params", "args_": "params", "workdir": "cwd",
    "working_dir": "cwd", "high_water_mark": "hwm", "sndhwm": "hwm", "rcvhwm": "hwm",
    "serializer": "codec", "format": "codec", "encoding": "codec", "nodes_": "nodes",
    "node": "nodes", "defaults_": "defaults", "default": "defaults",
}


@lru_cache(maxsize=1)
def schema_text() -> str:
    """The schema JSON text shipped inside the package (`zflow schema` prints it verbatim)."""
    # beside this module, read directly: importlib.resources costs ~5 ms of imports per command
    with open(os.path.join(os.path.dirname(__file__), "topology.schema.json"),
              encoding="utf-8") as f:
        return f.read()


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(schema_text())


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


@lru_cache(maxsize=1)
def _checker() -> Any:
    from zflow.spec.fastcheck import Checker

    return Checker(schema())


def surely_valid(data: Any) -> bool:
    """True only when the schema accepts `data`: then jsonschema need not be imported."""
    from zflow.spec.fastcheck import Unsure

    try:
        return _checker().valid(data)
    except Unsure:
        return False


def did_you_mean(word: str, options: Any, cutoff: float = 0.6) -> str | None:
    """Closest option to `word` (case-insensitive first), or None."""
    options = [str(o) for o in options]
    for o in options:
        if o.lower() == str(word).lower():
            return o
    import difflib  # only for a misspelt word

    hit = difflib.get_close_matches(str(word), options, n=1, cutoff=cutoff)
    return hit[0] if hit else None


def where(path: Path) -> str:
    """Human name of the object at `path`: `node 'worker'`, `socket 'worker.work'`, ..."""
    p = tuple(path)
    if not p:
        return "the top level"
    if len(p) >= 4 and p[0] == "nodes" and p[2] == "sockets":
        base = f"socket '{p[1]}.{p[3]}'"
        return base if len(p) == 4 else f"{base} {'.'.join(map(str, p[4:]))}"
    if len(p) >= 2 and p[0] == "nodes":
        base = f"node '{p[1]}'"
        return base if len(p) == 2 else f"{base} {'.'.join(map(str, p[2:]))}"
    return "'" + ".".join(map(str, p)) + "'"


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string",
               "array": "a list", "object": "a mapping", "boolean": "true or false",
               "null": "empty"}


def describe(v: Any) -> str:
    """Short description of a value for messages: `the string '4x'`, `a list`, `empty (null)`."""
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {v}"
    if isinstance(v, str):
        s = v if len(v) <= 40 else v[:37] + "..."
        return f"the string {s!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return type(v).__name__


def _is_name_map(path: Path) -> str | None:
    p = tuple(path)
    if p == ("nodes",):
        return "node"
    if len(p) == 3 and p[0] == "nodes" and p[2] == "sockets":
        return "socket"
    return None


_NAME_RULES = {
    "node": "a node name is a DNS label, so that it can become a host name when nodes run on "
            "other machines: at most 63 characters, lower-case letters, digits and '-', starting "
            "with a letter and not ending with '-' (names starting with 'x-' are extensions)",
    "socket": "socket names use letters, digits and '_' and start with a letter or '_' (they "
              "become environment variable names)",
}
NODE_NAME_MAX = 63


def node_name_for(name: str) -> str | None:
    """A valid node name close to `name` (`My_Node` -> `my-node`), or None."""
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    s = re.sub(r"^[^a-z]+", "", s)[:NODE_NAME_MAX].rstrip("-")
    return s if s and s != name and not s.startswith("x-") else None


def _shown(name: str) -> str:
    """A name quoted for a message, shortened past 40 characters."""
    return describe(name).removeprefix("the string ")


def _bad_node_name(name: str, path: Path, loc: Locator, names: Any) -> Diagnostic:
    if len(name) > NODE_NAME_MAX:
        msg = (f"node name {_shown(name)} is {len(name)} "
               f"characters long; at most {NODE_NAME_MAX}")
    else:
        msg = f"invalid node name {name!r}"
    hint = _NAME_RULES["node"]
    fix = node_name_for(name)
    if fix and fix not in names:
        hint += f"; e.g. '{fix}'"
    return loc.diag("ZF027", msg, path, at="key", hint=hint)


#: Why a number has the maximum it has (docs/format.md, "Limits").
_MAX_HINTS = {
    "replicas": "every replica is a process on this machine: at most 10000 per node and 10000 "
                "over all nodes",
    "hwm": "hwm counts messages queued per pipe (a msgpack message is a frame of up to `batch` "
           "records); the default is 1000, or 100 on msgpack sockets that block",
    "batch": "batch is the most records held in one msgpack frame; the default is 1000",
    "linger": "linger is in milliseconds (default 1000); a replica is killed `grace` seconds "
              "after SIGTERM anyway",
    "max_restarts": "restarts allowed inside restart_window (default 5); more failures than "
                    "that is a crash loop",
    "restart_window": "seconds (default 60)",
    "grace": "seconds between SIGTERM and SIGKILL (default 5)",
    "initial": "seconds before the first restart (default 0.1)",
    "max": "longest delay between restarts, in seconds (default 5)",
}
_EMPTY_HINTS = {
    "stop_on": "stop_on is the message that stops the node, e.g. `stop_on: FINISHED`; an empty "
               "message is what an empty record looks like on the wire",
    "send_on_end": "send_on_end is the message sent when the stream ends, e.g. `send_on_end: "
                   "FINISHED`; an empty message is what an empty record looks like on the wire",
}


def _unknown_keys(err: ValidationError, loc: Locator) -> list[Diagnostic]:
    inst = err.instance
    if not isinstance(inst, dict):
        return []
    props = err.schema.get("properties", {})
    pats = [re.compile(p) for p in err.schema.get("patternProperties", {})]
    base = tuple(err.absolute_path)
    out = []
    kind = _is_name_map(base)
    for k in inst:
        if k in props or any(p.search(k) for p in pats):
            continue
        path = base + (k,)
        if kind == "node":
            out.append(_bad_node_name(str(k), path, loc, inst))
            continue
        if kind:
            out.append(loc.diag("ZF027", f"invalid {kind} name {_shown(str(k))}", path,
                                at="key", hint=_NAME_RULES[kind]))
            continue
        guess = did_you_mean(k, props) or _ALIASES.get(str(k).lower())
        if guess:
            hint = f"did you mean '{guess}'?"
        elif base and base[0] == "nodes" and len(base) == 2:
            hint = ("values for the node's code go under `params:`; extensions start with `x-`;"
                    f" known keys: {', '.join(props)}")
        else:
            hint = f"known keys here: {', '.join(props)}; extensions start with `x-`"
        out.append(loc.diag("ZF022", f"unknown key '{k}' in {where(base)}", path, at="key",
                            hint=hint))
    return out


_REQUIRED_HINTS = {
    "version": "add `version: 1` at the top",
    "name": "add `name: my-topology` at the top",
    "nodes": "add a `nodes:` mapping of node name -> node",
    "type": "add `type: PUSH` (or PULL, PUB, SUB, XPUB, XSUB, REQ, REP, DEALER, ROUTER, PAIR)",
}


def _one_of(err: ValidationError, loc: Locator) -> list[Diagnostic]:
    inst = err.instance
    path = tuple(err.absolute_path)
    if not isinstance(inst, dict):
        return []
    is_node = len(path) == 2
    a, b = ("run", "command") if is_node else ("bind", "connect")
    code = "ZF028" if is_node else "ZF029"
    if a in inst and b in inst:
        # point at whichever comes second in the file
        pa, pb = loc.key(path + (a,)), loc.key(path + (b,))
        second = b if pb[1:] >= pa[1:] else a
        hint = ("one node runs one thing: split it into two nodes" if is_node else
                "a socket either binds (stable side) or connects (dynamic side); drop one")
        return [loc.diag(code, f"{where(path)} has both '{a}' and '{b}'", path + (second,),
                         at="key", hint=hint)]
    if is_node:
        return [loc.diag(code, f"{where(path)} needs 'run' (a Python callable) or 'command' "
                               "(an executable)", path, at="key",
                         hint="e.g. `run: mymodule:func` or `command: [python3, tool.py]`")]
    return [loc.diag(code, f"{where(path)} needs 'bind' or 'connect'", path, at="key",
                     hint="`bind: auto` lets zflow pick an endpoint; `connect: node.socket` "
                          "connects to another node's bound socket")]


def _translate(err: ValidationError, loc: Locator) -> list[Diagnostic]:
    v = err.validator
    path = tuple(err.absolute_path)
    inst = err.instance
    key = path[-1] if path else ""
    if v == "additionalProperties":
        return _unknown_keys(err, loc)
    if v == "oneOf":
        return _one_of(err, loc)
    if v == "required":
        if not isinstance(inst, dict):
            return []
        out = []
        for k in err.validator_value:
            if k not in inst:
                out.append(loc.diag("ZF023", f"{where(path)} is missing required key '{k}'",
                                    path, at="key", hint=_REQUIRED_HINTS.get(k)))
        return out
    if v == "type":
        want = err.validator_value
        wants = [want] if isinstance(want, str) else list(want)
        expected = " or ".join(_TYPE_NAMES.get(w, w) for w in wants)
        hint = None
        if len(path) >= 3 and path[-2] == "env" and path[0] == "nodes":
            hint = f'quote it: `{key}: "{inst}"`' if inst is not None else 'use `""` for empty'
        elif isinstance(inst, str) and wants[0] in ("integer", "number"):
            hint = f"write a plain number, e.g. `{key}: 4`"
        elif key in ("connect", "subscribe"):
            expected = "a string or a list of strings"
        elif isinstance(key, int) and len(path) >= 2 and path[-2] in ("command", "connect",
                                                                       "subscribe"):
            hint = "quote it to make it a string"
        name = f"{where(path)}" if path else "the document"
        return [loc.diag("ZF024", f"{name} must be {expected}, not {describe(inst)}", path,
                         hint=hint)]
    if v == "enum":
        opts = err.validator_value
        guess = did_you_mean(inst, opts) if isinstance(inst, str) else None
        hint = f"did you mean '{guess}'?" if guess else None
        if key == "type":
            msg = f"unknown socket type {inst!r}" if isinstance(inst, str) else \
                f"socket type must be a name like PUSH, not {describe(inst)}"
            if guess and guess.lower() == str(inst).lower():
                hint = f"socket types are upper case: '{guess}'"
            return [loc.diag("ZF025", msg, path, hint=hint or
                             f"socket types: {', '.join(SOCKET_TYPES)}")]
        shown = inst if isinstance(inst, str) else describe(inst)
        return [loc.diag("ZF025", f"{key} {shown!r} is not one of: "
                                  f"{', '.join(map(str, opts))}", path, hint=hint)]
    if v == "const":
        return [loc.diag("ZF020", f"{key} must be {err.validator_value!r}, not {describe(inst)}",
                         path)]
    if v == "pattern":
        if key == "run":
            return [loc.diag("ZF030", f"run target {inst!r} is not `package.module:callable`",
                             path, hint="e.g. `run: mypackage.tasks:square` (the part after ':' "
                                        "may be dotted: `mod:Class.method`)")]
        if key == "name" and len(path) == 1:
            return [loc.diag("ZF027", f"invalid topology name {inst!r}", path,
                             hint="start with a letter; then letters, digits, '_', '.', '-'")]
        return [loc.diag("ZF039", f"{where(path)}: {inst!r} does not match "
                                  f"{err.validator_value}", path)]
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤",
              "exclusiveMaximum": "<"}[v]
        hint = _MAX_HINTS.get(str(key)) if v in ("maximum", "exclusiveMaximum") else None
        return [loc.diag("ZF026", f"{where(path)} must be {op} {err.validator_value}, got {inst}",
                         path, hint=hint)]
    if v in ("minItems", "minProperties", "minLength"):
        what = {"minItems": "list", "minProperties": "mapping", "minLength": "string"}[v]
        hint = None
        if path == ("nodes",):
            hint = "add at least one node"
        elif key == "command":
            hint = "give the program and its arguments, e.g. `command: [python3, tool.py]`"
        elif v == "minLength":
            hint = _EMPTY_HINTS.get(str(key))
        return [loc.diag("ZF031", f"{where(path)} must not be an empty {what}", path, hint=hint)]
    return [loc.diag("ZF039", f"{where(path)}: {err.message}", path)]


def check_version(data: Any, loc: Locator) -> list[Diagnostic]:
    """Refuse an unknown major version before the schema, whose errors would be noise."""
    if not isinstance(data, dict) or "version" not in data:
        return []
    ver = data["version"]
    if ver == 1 and not isinstance(ver, bool) and isinstance(ver, int):
        return []
    if isinstance(ver, int) and not isinstance(ver, bool) and ver > 1:
        return [loc.diag("ZF020", f"topology format version {ver} is not supported: this zflow "
                                  "reads version 1", ("version",),
                         hint="upgrade zflow, or rewrite the file for format version 1")]
    if isinstance(ver, (int, float)) and not isinstance(ver, bool) and ver == 1:
        return [loc.diag("ZF020", "version must be the integer 1", ("version",),
                         hint="write `version: 1`")]
    return [loc.diag("ZF020", f"version must be 1, not {describe(ver)}", ("version",),
                     hint="write `version: 1`")]


def schema_diagnostics(data: Any, loc: Locator) -> list[Diagnostic]:
    """Validate `data` against the schema; every error rewritten and located."""
    if not isinstance(data, dict):
        return [loc.diag("ZF021", f"the top level must be a mapping (version, name, nodes), not "
                                  f"{describe(data)}", (), hint="start with `version: 1`")]
    if surely_valid(data):
        return []
    out: list[Diagnostic] = []
    seen = set()
    for err in validator().iter_errors(data):
        if tuple(err.absolute_path) == ("version",):
            continue  # check_version reports version problems
        for d in _translate(err, loc):
            k = (d.code, d.path, d.message)
            if k not in seen:
                seen.add(k)
                out.append(d)
    return out
