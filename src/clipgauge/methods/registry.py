"""Methods by name. Each method module ends with one `register(...)` line."""

from __future__ import annotations

from clipgauge.methods.base import Method, MethodError

_METHODS: dict[str, type[Method]] = {}


def register(method_class: type[Method]) -> type[Method]:
    """Make a Method subclass available under its `name` (a second class with it is an error)."""
    name = method_class.name
    if name in _METHODS and _METHODS[name] is not method_class:
        raise ValueError(f"method name {name!r} is already registered by {_METHODS[name]}")
    _METHODS[name] = method_class
    return method_class


def get_method(name: str) -> Method:
    """A fresh instance of the method registered as `name`."""
    try:
        return _METHODS[name]()
    except KeyError:
        raise MethodError(
            f"unknown method {name!r}; available: {', '.join(method_names())}"
        ) from None


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    return list(_METHODS)


def baseline_method() -> str:
    """The registered method that trains nothing: the zero-shot baseline of every study."""
    names = [name for name, cls in _METHODS.items() if cls.trains_nothing]
    if len(names) != 1:
        raise MethodError(f"exactly one registered method must train nothing, found {names}")
    return names[0]
