"""Engines behind the seam: ``"prefect"`` (default) and ``"local"`` (in-process).

:func:`get_engine` resolves a provider name (or an :class:`Engine` instance); the
engine in force for the current call is kept in a context variable so nested calls
(a step inside a chain run with ``provider="local"``) use the same one.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

from beluga_flows.engine.base import Engine
from beluga_flows.engine.local import LocalEngine
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["Engine", "LocalEngine", "current_engine", "get_engine", "known_engines", "use_engine"]

_ENGINES: dict[str, Engine] = {"local": LocalEngine()}
_CURRENT: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "beluga_engine", default=None
)
DEFAULT_PROVIDER_ENV = "BELUGA_FLOWS_PROVIDER"


def known_engines() -> list[str]:
    """The provider names :func:`get_engine` accepts."""
    return sorted({*_ENGINES, "prefect"})


def get_engine(provider: str | Engine | None = None) -> Engine:
    """The engine for ``provider``: a name, an engine, or ``None`` for the current one.

    Unknown names raise ``NOT_FOUND`` listing the known ones.
    """
    if provider is None:
        return current_engine()
    if not isinstance(provider, str):
        if isinstance(provider, Engine):
            return provider
        raise OrchestratorError(
            "provider",
            f"provider must be a name or an Engine, got {provider!r}",
            ErrorCode.INVALID_CONFIG,
        )
    engine = _ENGINES.get(provider)
    if engine is None and provider == "prefect":
        from beluga_flows.engine.prefect.adapter import (
            _ENGINE,  # the only import of Prefect, and a lazy one
        )

        engine = _ENGINES["prefect"] = _ENGINE
    if engine is None:
        raise OrchestratorError(
            "provider",
            f"unknown provider {provider!r}; known: {', '.join(known_engines())}",
            ErrorCode.NOT_FOUND,
        )
    return engine


def current_engine() -> Engine:
    """The engine in force: set by :func:`use_engine`, else ``$BELUGA_FLOWS_PROVIDER``,
    else Prefect."""
    engine = _CURRENT.get()
    if engine is not None:
        return engine
    return get_engine(os.environ.get(DEFAULT_PROVIDER_ENV) or "prefect")


@contextlib.contextmanager
def use_engine(provider: str | Engine | Any) -> Iterator[Engine]:
    """Make ``provider`` the engine for calls in this context.

    Example::

        with use_engine("local"):
            pipeline(3)          # no Prefect API involved
    """
    engine = get_engine(provider)
    token = _CURRENT.set(engine)
    try:
        yield engine
    finally:
        _CURRENT.reset(token)
