"""The engine seam: the only place where a step, flow or run meets the outside world.

An engine carries out three things: run one step call, run a ``@flow`` body, and
make sure a body runs inside a flow run (starting one when there is none). The
policy logic they share lives here and in :mod:`beluga_flows._execute`, written once.

Engines are typed against :class:`~beluga_flows.core.specs.StepLike` /
``FlowLike`` (below them), never against the decorators (above them), and keep
what they remember about a step in weak-keyed maps, never on the user's object.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar, runtime_checkable

from beluga_flows import _execute
from beluga_flows._digest import digest
from beluga_flows.core.specs import FlowLike, StepLike, StepSpec
from beluga_flows.resilience.breaker import get_breaker

__all__ = ["Engine", "guarded_call", "input_hash", "run_flow_body", "run_inline"]

T = TypeVar("T")


@runtime_checkable
class Engine(Protocol):
    """What beluga_flows needs from an execution backend.

    ``sleep`` and ``rng`` are the engine's clock and randomness: every backoff in a
    run (step, chain, flow retries) waits through them, so tests inject a fake clock.
    """

    name: str
    sleep: _execute.Sleep
    rng: random.Random | None

    async def run_step(self, step: StepLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one call of ``step`` with all its policies and return its value."""

    async def run_flow(self, flow: FlowLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``flow`` as a flow run (a sub-flow when called inside one)."""

    async def in_flow(
        self,
        name: str,
        body: Callable[[Any], Awaitable[T]],
        input: Any,
        *,
        description: str | None = None,
        task_runner: Any = None,
        tags: tuple[str, ...] = (),
    ) -> T:
        """``await body(input)`` inside a flow run named ``name``: the current one when
        there is one, else a new one tagged ``tags`` (whose steps go to ``task_runner``
        if given)."""

    async def publish_markdown(self, key: str, markdown: str, description: str) -> None:
        """Attach a markdown document to the current run (the UI's Artifacts tab)."""

    def run_id(self) -> str | None:
        """The id of the flow run the caller is in, if any."""

    def limits(self, spec: StepSpec) -> AbstractAsyncContextManager[None]:
        """Hold the step's concurrency slot and rate-limit token for the body
        (``RESOURCE_EXHAUSTED`` when none comes within the step's timeout)."""


_MISS = object()
# The in-process results of cache=True steps run inline, per step (weakly: a step
# that is gone takes its results with it).
_MEMO: weakref.WeakKeyDictionary[StepLike, dict[str, Any]] = weakref.WeakKeyDictionary()


def input_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """A digest of a call's arguments that is the same in every process for the same
    content (``None`` when they have no canonical form and do not pickle): see
    :mod:`beluga_flows._digest`."""
    return digest(args, kwargs)


async def run_inline(
    engine: Engine,
    step: StepLike,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """A step call in-process, without a task run: ``retry → breaker → limits →
    timeout → call``."""
    spec = step.spec
    unbounded = _execute._FLOW_LIMIT.get() is None
    if spec.plain and unbounded:  # the hot path of inline glue steps
        return await _execute.call(step.fn, args, kwargs)
    key = input_hash(args, kwargs) if spec.cache else None
    if key is not None and (hit := _MEMO.get(step, {}).get(key, _MISS)) is not _MISS:
        return hit

    if spec.retry_policy is None and unbounded:
        result = await guarded_call(engine, step, args, kwargs)
    else:
        async with _execute.flow_slot():
            result = await _execute.retrying(
                lambda: guarded_call(engine, step, args, kwargs),
                spec.retry_policy,
                sleep=engine.sleep,
                rng=engine.rng,
            )
    if key is not None:
        _MEMO.setdefault(step, {})[key] = result
    return result


async def guarded_call(
    engine: Engine, step: StepLike, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """One attempt of a step call: ``breaker → limits → timeout → call`` (retries
    wrap it). The limits are the engine's: Prefect's global ones, or in-process."""
    spec = step.spec

    async def timed() -> Any:
        if spec.timeout is None and step.is_async:
            return await step.fn(*args, **kwargs)
        return await _execute.call_with_timeout(
            step.fn, args, kwargs, spec.timeout, op="step", name=spec.name
        )

    async def limited() -> Any:
        if not spec.limited:
            return await timed()
        async with engine.limits(spec):
            return await timed()

    named = spec.circuit_breaker
    if named is None:
        return await limited()
    breaker = get_breaker(named) if isinstance(named, str) else named
    return await breaker.call(limited)


async def run_flow_body(flow: FlowLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A ``@flow`` body with its timeout and its ``max_workers`` bound on steps."""
    spec = flow.spec
    token = _execute.set_flow_limit(spec.max_workers)
    try:
        return await _execute.call_with_timeout(
            flow.fn, args, kwargs, spec.timeout, op="flow", name=spec.name, preempt=False
        )
    finally:
        _execute._FLOW_LIMIT.reset(token)
