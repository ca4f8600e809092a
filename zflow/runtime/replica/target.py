"""A Python node's `run:` target: importing it, and checking that its params fit.

A replica resolves its target before it binds anything, so a target that cannot be used is a
start failure (exit code 3).
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from typing import Any

from zflow.runtime.replica.errors import NodeFailure


def resolve_target(target: str) -> Any:
    """`pkg.mod:attr.sub` → the object. Raises NodeFailure with a clear message."""
    mod_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise NodeFailure("import", f"cannot import module {mod_name!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any error raised by the user's module at import
        tb = traceback.format_exc(limit=-3)
        raise NodeFailure(
            "import", f"importing {mod_name!r} raised {type(e).__name__}: {e}", traceback=tb
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise NodeFailure("import", f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise NodeFailure("import", f"{target!r} is {type(obj).__name__}, not callable")
    return obj


def check_params(target: Any, shape: str, params: dict[str, Any]) -> None:
    """Sources and classes receive `params` as keyword arguments: check they fit before start."""
    if not (shape == "source" or (inspect.isclass(target) and shape != "custom")):
        return
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(**params)
    except TypeError as e:
        name = getattr(target, "__qualname__", repr(target))
        raise NodeFailure(
            "import", f"params {sorted(params)} do not fit {name}{sig}: {e}",
            hint="params are passed as keyword arguments to sources and classes",
        ) from None
