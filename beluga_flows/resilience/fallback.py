"""``@step(fallback=...)``: what a step returns instead of raising, after its last attempt.

The fallback layer sits just inside the telemetry layer, outside the retry (see
:mod:`beluga_flows.core.middleware`): it sees only the error that ends a call —
retries exhausted, or an error the retry policy does not retry — never one an
attempt retries. A value is returned as it is; a callable is called with the error
(awaited if it is async) and its result returned. Cancellation is never replaced
(it is not an ``Exception``), nor is ``TASK_CANCELED``. If the fallback itself
raises, that error ends the call (the step's error is its ``__context__``).

The local engine runs this layer around its retry loop; on Prefect the last task-run
attempt runs it and ends ``Completed`` with the state message
``failed: <error>; returned the fallback`` (:func:`message`). Either way the
telemetry layer counts the error (``step.errors``, span ``step.fallback=true``).

Example::

    @bf.step(retries=2, fallback=lambda err: {"answer": None, "error": str(err)})
    async def ask(question: str) -> dict: ...

``fallback=None`` (the default) means no fallback: to fall back to ``None``, give
``fallback=lambda err: None``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from beluga_flows import _sync, telemetry
from beluga_flows._validate import config_error
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["check", "fall_back", "guard", "message", "replaces"]

T = TypeVar("T")


def check(owner: str, value: Any) -> Any:
    """Validate a ``fallback=`` option: a callable must take the error as its one
    positional argument (``INVALID_CONFIG`` otherwise); any other value is returned
    as it is."""
    if not callable(value) or value is None:
        return value
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return value
    try:
        signature.bind(OrchestratorError("step", "probe", ErrorCode.EXECUTION_FAILED))
    except TypeError:
        raise config_error(
            owner, f"a callable fallback is called with the error: {value!r} must take one argument"
        ) from None
    return value


def replaces(err: BaseException) -> bool:
    """Whether a fallback may stand in for ``err``: any error but cancellation."""
    if not isinstance(err, Exception):
        return False
    return not (isinstance(err, OrchestratorError) and err.code is ErrorCode.TASK_CANCELED)


async def fall_back(name: str, fallback: Any, err: BaseException) -> Any:
    """The value step ``name`` returns instead of raising ``err``: ``fallback``, or what
    ``fallback(err)`` returns. Tells the telemetry layer."""
    telemetry.step_fell_back(name, err)
    if not callable(fallback):
        return fallback
    # a sync fallback runs here: it is a default, keep it quick
    return await _sync.settled(fallback(err))


async def guard(name: str, fallback: Any, body: Callable[[], Awaitable[T]]) -> T | Any:
    """``await body()`` (a step call with its retries); its final error, if any,
    replaced by the fallback."""
    try:
        return await body()
    except Exception as err:
        if not replaces(err):
            raise
        return await fall_back(name, fallback, err)


def message(err: BaseException) -> str:
    """The state message of a task run that returned its fallback."""
    return f"failed: {err}; returned the fallback"
