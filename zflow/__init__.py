"""zflow: a declarative topology orchestrator for ZeroMQ.

Node code imports only this module: `zflow.context()` tells a node who it is (node name, replica
index, params) and `zflow.Totals` is what a sink's `end()` receives at end of stream.
"""

from zflow.runtime.context import NodeContext, Totals, context

__version__ = "0.1.0"
__all__ = ["NodeContext", "Totals", "context", "__version__"]
