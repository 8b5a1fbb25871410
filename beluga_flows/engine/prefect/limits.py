"""Prefect's global concurrency and rate limits behind a step's ``concurrency=`` and
``rate_limit=`` (the limits layer of the middleware stack on the Prefect engine).

A limit a step names is created on the server the first time it is needed, from
``max_concurrency`` or :func:`beluga_flows.define_rate_limit` (``NOT_FOUND`` when it
is declared nowhere); a slot or token that does not come within the step's timeout
is ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import concurrency as prefect_concurrency
from prefect.concurrency.asyncio import rate_limit as prefect_rate_limit
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_logger

from beluga_flows.resilience.limits import exhausted, missing, rate_limit_spec

if TYPE_CHECKING:
    from beluga_flows.core.decorators import StepSpec

__all__ = ["hold"]


_ENSURED: set[str] = set()


async def _ensure_limit(name: str, slots: int | None, *, rate: bool) -> None:
    """Create the global concurrency limit ``name`` if missing (once per process)."""
    if name in _ENSURED:
        return
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            if rate:
                declared = rate_limit_spec(name)
                if declared is None:
                    raise missing(name, rate=True) from None
                create = GlobalConcurrencyLimitCreate(
                    name=name, limit=declared.burst, slot_decay_per_second=declared.per_second
                )
            elif slots is None:
                raise missing(name, rate=False) from None
            else:
                create = GlobalConcurrencyLimitCreate(name=name, limit=slots)
            try:
                await client.create_global_concurrency_limit(create)
                get_logger("beluga_flows").info(
                    "created Prefect global concurrency limit %r (%s)",
                    name,
                    f"{create.limit} slots"
                    + (f", {create.slot_decay_per_second}/s decay" if rate else ""),
                )
            except ObjectAlreadyExists:
                pass  # another process created it first
    _ENSURED.add(name)


async def _acquire(kind: str, name: str, timeout: float | None, waiting: Awaitable[Any]) -> None:
    try:
        await waiting
    except TimeoutError:
        raise exhausted(kind, name, timeout) from None


@contextlib.asynccontextmanager
async def hold(spec: StepSpec) -> AsyncIterator[None]:
    """Take ``spec``'s rate-limit token and hold its concurrency slot for the body."""
    async with contextlib.AsyncExitStack() as stack:
        if spec.rate_limit is not None:
            await _ensure_limit(spec.rate_limit, None, rate=True)
            await _acquire(
                "rate limit",
                spec.rate_limit,
                spec.timeout,
                prefect_rate_limit(spec.rate_limit, timeout_seconds=spec.timeout, strict=True),
            )
        if spec.concurrency is not None:
            await _ensure_limit(spec.concurrency, spec.max_concurrency, rate=False)
            slot = prefect_concurrency(spec.concurrency, timeout_seconds=spec.timeout, strict=True)
            await _acquire(
                "concurrency limit",
                spec.concurrency,
                spec.timeout,
                stack.enter_async_context(slot),
            )
        yield
