"""The engine seam: the only place where a step, flow or run meets the outside world.

An engine carries out three things: run one step call, run a ``@flow`` body, and
make sure a body runs inside a flow run (starting one when there is none). How one
step call is carried out (telemetry, retry, breaker, limits, timeout) is written once,
in :mod:`beluga_flows.core.middleware`, which both engines run.

Engines are typed against :class:`~beluga_flows.core.specs.StepLike` /
``FlowLike`` (below them), never against the decorators (above them), and keep
what they remember about a step in weak-keyed maps, never on the user's object.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar, runtime_checkable

from beluga_flows._digest import digest
from beluga_flows.core.specs import FlowLike, StepLike, StepSpec

__all__ = ["Engine", "Sleep", "input_hash"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@runtime_checkable
class Engine(Protocol):
    """What beluga_flows needs from an execution backend.

    ``sleep`` and ``rng`` are the engine's clock and randomness: every backoff in a
    run (step, chain, flow retries) waits through them, so tests inject a fake clock.
    """

    name: str
    sleep: Sleep
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
        (``RESOURCE_EXHAUSTED`` when none comes within the step's timeout), and its
        provider's budgets (:func:`beluga_flows.resilience.providers.hold` on the
        engine's backend: ``RATE_LIMIT_EXCEEDED``)."""


def input_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """A digest of a call's arguments that is the same in every process for the same
    content (``None`` when they have no canonical form and do not pickle): see
    :mod:`beluga_flows._digest`."""
    return digest(args, kwargs)
