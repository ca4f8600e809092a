"""squares.py's nodes in a module that imports large libraries at the top, as real node modules
do (a model, pandas): what `preload: true` is for (benchmarks/preload.py)."""

from __future__ import annotations

import jsonschema  # noqa: F401 - the point: ~40 ms of imports per process
import rich.console  # noqa: F401
import rich.table  # noqa: F401
import yaml  # noqa: F401
from squares import ResultsManager, numbers, square

__all__ = ["ResultsManager", "numbers", "square"]
