"""The topology spec: format v1, its JSON Schema, and a validator with compiler-grade messages.

Public interface (the runtime codes against these):

- `load(path, overrides=(), scale=(), env=None) -> LoadResult`
- `schema_text() -> str`
- `Diagnostic`, `render(diags, fmt, stream, color, sources)`
- `split_ref(s) -> (node, socket) | None`, `infer_shape(node) -> str`
"""

from __future__ import annotations

from zflow.spec.diagnostics import CODES, COMMAND_LINE, Diagnostic, render
from zflow.spec.load import LoadResult, load
from zflow.spec.rules import PEERS, Endpoint, infer_shape, inferred_shape, parse_endpoint, split_ref
from zflow.spec.schema import SOCKET_TYPES, schema_text

__all__ = ["CODES", "COMMAND_LINE", "PEERS", "SOCKET_TYPES", "Diagnostic", "Endpoint",
           "LoadResult", "infer_shape", "inferred_shape", "load", "parse_endpoint", "render",
           "schema_text", "split_ref"]
