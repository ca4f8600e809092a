"""A Python node's `run:` target: importing it, and checking that its params fit.

A replica resolves its target before it binds anything, so a target that cannot be used is a
start failure (exit code 3). `zflow validate --import-check` resolves targets the same way, in a
child process (`python -m zflow.runtime.replica.target DIR`, see zflow/spec/importcheck.py), and
reports each failure under its diagnostic code. Nothing here imports zmq: that child stays light.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import traceback
from typing import Any

from zflow.runtime.replica.errors import NodeFailure

#: the import-check diagnostic for each way a target can be unusable
NOT_FOUND, RAISED, NO_ATTRIBUTE, NOT_CALLABLE = "ZF080", "ZF081", "ZF082", "ZF083"
#: precedes the import check's results on the child's stdout (user modules may print at import)
MARK = "@@ZFLOW@@"


class TargetError(NodeFailure):
    """A `run:` target that cannot be used: phase "import"; `code` is its import-check code."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__("import", message, **extra)
        self.code = code


def _is_missing(e: ModuleNotFoundError, mod_name: str) -> bool:
    """The target module (or a package above it) does not exist, rather than something it
    imports."""
    return e.name is not None and (mod_name == e.name or mod_name.startswith(e.name + "."))


def resolve_target(target: str) -> Any:
    """`pkg.mod:attr.sub` → the object. Raises TargetError with a clear message."""
    mod_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        code = NOT_FOUND if _is_missing(e, mod_name) else RAISED
        raise TargetError(code, f"cannot import module {mod_name!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any error raised by the user's module at import
        tb = traceback.format_exc(limit=-3)
        raise TargetError(
            RAISED, f"importing {mod_name!r} raised {type(e).__name__}: {e}", traceback=tb
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(NO_ATTRIBUTE, f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(NOT_CALLABLE, f"{target!r} is {type(obj).__name__}, not callable")
    return obj


def accepts(target: Any, *args: Any, **kwargs: Any) -> bool:
    """Whether `target(*args, **kwargs)` fits its signature (True when it cannot be known)."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def takes_only_context(target: Any) -> bool:
    """`def client(ctx)`: a custom node that reads its params from `ctx.params`."""
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(params) == 1 and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def instance_call(cls: type) -> Any:
    """The `__call__` that calling an instance of `cls` runs: on its MRO, as Python finds it
    (not on the instance, not the metaclass's); None when its instances are not callable."""
    for klass in cls.__mro__:
        if "__call__" in vars(klass):
            return vars(klass)["__call__"]
    return None


def check_params(target: Any, shape: str, params: dict[str, Any]) -> None:
    """Sources, classes and custom nodes receive `params` as keyword arguments (a custom node
    that takes only its context reads them from `ctx.params`): check they fit before start.
    A class used as a stream or service node is called per record: it needs a `__call__`."""
    if inspect.isclass(target) and shape not in ("source", "custom") \
            and instance_call(target) is None:
        raise NodeFailure(
            "import", f"{target.__qualname__} objects are not callable: a {shape} node's class "
                      "is called with each record",
            hint="give the class a __call__(self, record) method")
    if shape == "custom":
        if takes_only_context(target) or accepts(target, None, **params):
            return
        args: tuple[Any, ...] = (None,)
    elif shape == "source" or inspect.isclass(target):
        args = ()
    else:
        return
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args, **params)
    except TypeError as e:
        name = getattr(target, "__qualname__", repr(target))
        raise NodeFailure(
            "import", f"params {sorted(params)} do not fit {name}{sig}: {e}",
            hint="params are passed as keyword arguments to sources, classes and custom nodes "
                 "(after the context)",
        ) from None


def check_targets(targets: list[str]) -> list[list[str] | None]:
    """The import check: per target, None if it resolves, else [code, message]."""
    results: list[list[str] | None] = []
    for t in targets:
        try:
            resolve_target(t)
        except TargetError as e:
            results.append([e.code, str(e)])
            continue
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - e.g. sys.exit() at import: report it
            mod_name = t.partition(":")[0]
            results.append([RAISED, f"importing {mod_name!r} raised {type(e).__name__}: {e}"])
            continue
        results.append(None)
    return results


if __name__ == "__main__":
    # the import check's child: argv[1] = directory to put first on sys.path, stdin = JSON list
    # of targets; the results follow MARK on stdout
    sys.path.insert(0, sys.argv[1])
    found = check_targets(json.load(sys.stdin))
    sys.stdout.write("\n" + MARK + json.dumps(found))
