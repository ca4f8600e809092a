"""zflow: a declarative topology orchestrator for ZeroMQ.

Node code imports only this module: `zflow.context()` tells a node who it is (node name, replica
index, params) and `zflow.Totals` is what a sink's `end()` receives at end of stream.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["NodeContext", "Totals", "context", "__version__"]


def __getattr__(name: str) -> Any:
    """The node API is imported on first use: the CLI, the fork server and the orphan guard
    import `zflow` for its subpackages and need none of it."""
    if name in ("NodeContext", "Totals", "context"):
        from zflow.runtime import context as _context

        for n in ("NodeContext", "Totals", "context"):  # from now on plain attributes: node
            globals()[n] = getattr(_context, n)  # code calls zflow.context() per record
        return globals()[name]
    raise AttributeError(f"module 'zflow' has no attribute {name!r}")
