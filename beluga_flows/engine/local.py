"""The in-process engine: the same semantics as the Prefect engine, no Prefect API.

Every step call runs the whole middleware stack in-process
(:func:`beluga_flows.core.middleware.run_inline`), retries included.

Used by ``provider="local"``, by ``track=False`` steps, and by tests that need an
injected clock (``LocalEngine(sleep=FakeClock().sleep)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from beluga_flows.core import middleware
from beluga_flows.core.specs import FlowLike, StepLike, StepSpec
from beluga_flows.engine.base import Engine, Sleep
from beluga_flows.resilience import providers
from beluga_flows.resilience.limits import LocalLimits
from beluga_flows.resilience.retry import RetryPolicy

# One set of in-process limits per process, as Prefect's are one per server.
LOCAL_LIMITS = LocalLimits()
LOCAL_PROVIDERS = providers.LocalProviders()

__all__ = ["LocalEngine"]

T = TypeVar("T")


class LocalEngine(Engine):
    """Run everything in the calling process: retries, timeouts and limits included.

    Example::

        engine = LocalEngine(sleep=FakeClock().sleep, rng=random.Random(7))
    """

    name = "local"

    def __init__(self, *, sleep: Sleep = asyncio.sleep, rng: random.Random | None = None) -> None:
        self.sleep = sleep
        self.rng = rng

    async def run_step(self, step: StepLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await middleware.run_inline(self, step, args, kwargs)

    async def run_flow(self, flow: FlowLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Like Prefect's flow retries: any failure, immediately, ``retries`` times.
        retries = flow.spec.retries
        policy = (
            RetryPolicy(max_attempts=retries + 1, initial_delay=0, jitter=0, retry_on=(Exception,))
            if retries
            else None
        )
        return await middleware.retrying(
            lambda: middleware.run_flow_body(flow, args, kwargs), policy, sleep=self.sleep
        )

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
        return await body(input)

    async def publish_markdown(self, key: str, markdown: str, description: str) -> None:
        return None  # nowhere to show it in-process

    def run_id(self) -> str | None:
        return None

    @contextlib.asynccontextmanager
    async def limits(self, spec: StepSpec) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if spec.provider is not None:
                held = providers.hold(LOCAL_PROVIDERS, spec.provider, spec.timeout)
                await stack.enter_async_context(held)
            if spec.rate_limit is not None:
                await LOCAL_LIMITS.take_rate(spec.rate_limit, spec.timeout)
            if spec.concurrency is not None:
                slot = LOCAL_LIMITS.hold(spec.concurrency, spec.max_concurrency, spec.timeout)
                await stack.enter_async_context(slot)
            yield

    def __repr__(self) -> str:
        return "LocalEngine()"
