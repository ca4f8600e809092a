"""Plain data classes for zflow's own types, without dataclasses' start-up cost.

`@dataclass` writes `__init__`, `__repr__` and `__eq__` as source text and compiles them for
every class, and its module imports `inspect` (and with it `ast`, `dis`, `tokenize`): for the
30 classes `zflow up` and its fork server imported before the first replica started, 16 ms of
decoration and ~7 ms of imports, a tenth of a 10k-record run (issue 16). The node API's types
(`zflow.NodeContext`, `zflow.Totals`) and `zflow.testing`'s results stay dataclasses: user code
may hand them to `dataclasses` functions. `@record` gives the same classes from methods
written once: fields are the class's annotations in order, a default is the class attribute,
`field(default_factory=...)` makes a fresh one per instance, `frozen=True` refuses assignment and
hashes. `asdict`, `replace` and `fields` are the three dataclasses functions zflow uses.

Only what zflow's records need: no inheritance of fields, no `__post_init__`, no ordering. An
instance costs ~1 µs more to make than a dataclass's; none is made per record.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")

_MISSING = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make


def field(*, default_factory: Any) -> Any:
    """A default made afresh for each instance (a list, a dict, a deque)."""
    return _Factory(default_factory)


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    names, defaults = type(self).__record_fields__, type(self).__record_defaults__
    if len(args) > len(names):
        raise TypeError(f"{type(self).__name__}() takes {len(names)} positional arguments but "
                        f"{len(args)} were given")
    put = object.__setattr__
    for name, value in zip(names, args, strict=False):  # fewer args than names: defaults
        put(self, name, value)
    for name in names[len(args):]:
        if name in kwargs:
            value = kwargs.pop(name)
        else:
            value = defaults.get(name, _MISSING)
            if value is _MISSING:
                raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            if type(value) is _Factory:
                value = value.make()
        put(self, name, value)
    if kwargs:
        extra = next(iter(kwargs))
        raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {extra!r}"
                        if extra not in names else
                        f"{type(self).__name__}() got multiple values for argument {extra!r}")


def _values(self: Any) -> tuple:
    return tuple(getattr(self, n) for n in self.__record_fields__)


def _repr(self: Any) -> str:
    inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__record_fields__)
    return f"{type(self).__qualname__}({inner})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def record(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """`@record` or `@record(frozen=True)`: see the module docstring."""

    def wrap(cls: type[T]) -> type[T]:
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults: dict[str, Any] = {}
        required_after_default = None
        for name in names:
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
                if type(defaults[name]) is _Factory:
                    delattr(cls, name)  # as dataclasses: the class has no such attribute
            elif defaults and required_after_default is None:
                required_after_default = name
        if required_after_default is not None:
            raise TypeError(f"{cls.__name__}: field {required_after_default!r} without a "
                            "default follows one with a default")
        cls.__record_fields__ = names  # type: ignore[attr-defined]
        cls.__record_defaults__ = defaults  # type: ignore[attr-defined]
        cls.__match_args__ = names  # type: ignore[attr-defined]
        cls.__init__ = _init  # type: ignore[misc]
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = _repr  # type: ignore[method-assign]
        if "__eq__" not in cls.__dict__:
            cls.__eq__ = _eq  # type: ignore[method-assign]
        if frozen:
            cls.__hash__ = _hash  # type: ignore[method-assign]
            cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign]
            cls.__delattr__ = _frozen_delattr  # type: ignore[method-assign]
        else:
            cls.__hash__ = None  # type: ignore[assignment]  # mutable and compared by value
        return cls

    return wrap if cls is None else wrap(cls)


def is_record(obj: Any) -> bool:
    return hasattr(type(obj), "__record_fields__") and not isinstance(obj, type)


def fields(obj: Any) -> tuple[str, ...]:
    """The field names of a record or record class, in order."""
    return obj.__record_fields__


def asdict(obj: Any) -> Any:
    """A record as a dict, records inside it too (lists, tuples and dicts are copied)."""
    if is_record(obj):
        return {n: asdict(getattr(obj, n)) for n in obj.__record_fields__}
    if type(obj) is list:
        return [asdict(v) for v in obj]
    if type(obj) is tuple:
        return tuple(asdict(v) for v in obj)
    if type(obj) is dict:
        return {asdict(k): asdict(v) for k, v in obj.items()}
    return obj


def replace(obj: T, **changes: Any) -> T:
    """A copy of the record with some fields changed."""
    return type(obj)(**{**{n: getattr(obj, n) for n in fields(obj)}, **changes})
