"""The registry of named actions a workflow definition calls.

Example::

    @bf.action("fetch_customer")
    def fetch_customer(customer_id: str) -> dict: ...

    @bf.action                      # named after the function: "score"
    async def score(data: dict) -> float: ...

    bf.register_action("notify", send_mail)

An action is a plain function (sync or async) or a ``@bf.step`` (which keeps its
retry policy, timeout, breaker and limits; a definition's own ``retry_policy`` and
``timeout`` override them). A name is taken once per process: registering it again
is ``INVALID_CONFIG`` (``unregister_action`` frees it, for tests and reloads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from beluga_flows._validate import config_error

__all__ = ["action", "lookup", "register_action", "registered", "unregister_action"]

F = TypeVar("F", bound=Callable[..., Any])
_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_action(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` as the action ``name`` (``INVALID_CONFIG`` if taken or bad)."""
    if not isinstance(name, str) or not name.strip():
        raise config_error("action", f"an action name is a non-empty string, got {name!r}")
    if not callable(fn) or isinstance(fn, type):
        raise config_error("action", f"action {name!r} must be a function, got {fn!r}")
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise config_error("action", f"action name {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def unregister_action(name: str) -> None:
    """Forget the action ``name`` (no error when unknown)."""
    _REGISTRY.pop(name, None)


@overload
def action(name: F) -> F: ...
@overload
def action(name: str | None = None) -> Callable[[F], F]: ...
def action(name: Any = None) -> Any:
    """Register the decorated function as an action (bare: under its own name)."""
    if callable(name) and not isinstance(name, str):
        fn = name
        register_action(getattr(fn, "__name__", type(fn).__name__), fn)
        return fn

    def register(fn: F) -> F:
        label = name if name is not None else getattr(fn, "__name__", None)
        register_action(label, fn)  # type: ignore[arg-type]
        return fn

    return register


def registered() -> Mapping[str, Callable[..., Any]]:
    """The global registry (a read-only view)."""
    from types import MappingProxyType

    return MappingProxyType(_REGISTRY)


def lookup(
    actions: Mapping[str, Callable[..., Any]] | None, name: str
) -> Callable[..., Any] | None:
    """``name`` in ``actions``, or in the global registry when ``actions`` is None."""
    return (_REGISTRY if actions is None else actions).get(name)
