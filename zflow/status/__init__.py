"""Status layer of `zflow up`: the model the supervisor feeds, and the views that show it."""

from zflow.status.model import (
    OVERALL_STATES,
    STATES,
    EdgeInfo,
    NodeInfo,
    StatusModel,
)
from zflow.status.views import MODES, View, choose_mode, make_view

__all__ = [
    "MODES",
    "OVERALL_STATES",
    "STATES",
    "EdgeInfo",
    "NodeInfo",
    "StatusModel",
    "View",
    "choose_mode",
    "make_view",
]
