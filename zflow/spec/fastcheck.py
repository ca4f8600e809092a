"""A fast yes/no against the topology schema, so a valid file never imports jsonschema.

Importing jsonschema (with referencing, attrs, rpds) costs ~35-45 ms of every `zflow up` and
`zflow validate`; checking a topology with it takes ~1 ms more. This interprets only the keywords
the shipped schema uses, with Draft 2020-12's meaning. It is exact where it answers: anything it
does not model (a keyword, a non-string key, a type YAML can make but JSON cannot) raises
`Unsure`, and the caller then asks jsonschema. An invalid document is always handed to
jsonschema too: its errors, translated in schema.py, are the diagnostics; this never writes one.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

#: keywords that only annotate: they never make a document invalid
_ANNOTATIONS = frozenset(("$schema", "$id", "title", "description", "default", "examples",
                          "$comment", "markdownDescription", "deprecated"))
_JSON_SCALARS = (str, int, float, bool, type(None))


class Unsure(Exception):
    """The document uses something this checker does not model: ask jsonschema."""


@cache
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _is_type(v: Any, t: str) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "null":
        return v is None
    if isinstance(v, bool):
        return False
    if t == "integer":  # 2020-12: 1.0 is an integer
        return isinstance(v, int) or (isinstance(v, float) and v.is_integer())
    if t == "number":
        return isinstance(v, (int, float))
    raise Unsure(f"type {t!r}")


def _equal(a: Any, b: Any) -> bool:
    """jsonschema's equality: true is not 1, 1 is 1.0, containers compared member-wise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


class Checker:
    """`valid(doc)`: True or False exactly as Draft202012Validator(schema) would say, or Unsure."""

    def __init__(self, schema: dict) -> None:
        self.root = schema

    def valid(self, doc: Any) -> bool:
        return self._valid(doc, self.root)

    def _ref(self, ref: str) -> dict:
        if not ref.startswith("#/"):
            raise Unsure(f"$ref {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _valid(self, v: Any, s: Any) -> bool:  # noqa: C901 - one branch per keyword
        if s is True:
            return True
        if s is False:
            return False
        if not isinstance(v, _JSON_SCALARS) and not isinstance(v, (dict, list)):
            raise Unsure(f"a {type(v).__name__} value")
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            raise Unsure("a non-finite number")
        ok = True  # every keyword is looked at, so an unknown one is never skipped over
        for key, want in s.items():
            if key in _ANNOTATIONS or key == "$defs":
                continue
            if key == "$ref":
                ok = self._valid(v, self._ref(want)) and ok
            elif key == "type":
                ok = ok and (any(_is_type(v, t) for t in want) if isinstance(want, list)
                             else _is_type(v, want))
            elif key == "const":
                ok = ok and _equal(v, want)
            elif key == "enum":
                ok = ok and any(_equal(v, w) for w in want)
            elif key == "oneOf":
                ok = sum(self._valid(v, sub) for sub in want) == 1 and ok
            elif key in ("properties", "patternProperties", "additionalProperties", "required",
                         "minProperties", "maxProperties"):
                if isinstance(v, dict):
                    ok = self._object(v, key, want, s) and ok
            elif key in ("items", "minItems"):
                if isinstance(v, list):
                    ok = (all(self._valid(x, want) for x in v) if key == "items"
                          else len(v) >= want) and ok
            elif key in ("minLength", "maxLength", "pattern"):
                if isinstance(v, str):
                    if key == "pattern":
                        ok = ok and _regex(want).search(v) is not None
                    else:
                        ok = ok and (len(v) >= want if key == "minLength" else len(v) <= want)
            elif key in ("minimum", "maximum", "exclusiveMinimum"):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    ok = ok and (v >= want if key == "minimum" else
                                 v <= want if key == "maximum" else v > want)
            else:
                raise Unsure(f"keyword {key!r}")
        return ok

    def _object(self, v: dict, key: str, want: Any, s: dict) -> bool:
        if any(not isinstance(k, str) for k in v):
            raise Unsure("a key that is not a string")
        if key == "required":
            return all(k in v for k in want)
        if key == "minProperties":
            return len(v) >= want
        if key == "maxProperties":
            return len(v) <= want
        if key == "properties":
            return all(self._valid(v[k], sub) for k, sub in want.items() if k in v)
        if key == "patternProperties":
            return all(self._valid(x, sub) for pat, sub in want.items()
                       for k, x in v.items() if _regex(pat).search(k))
        # additionalProperties: the keys neither `properties` nor `patternProperties` cover
        props = s.get("properties", {})
        pats = [_regex(p) for p in s.get("patternProperties", {})]
        return all(self._valid(x, want) for k, x in v.items()
                   if k not in props and not any(p.search(k) for p in pats))
