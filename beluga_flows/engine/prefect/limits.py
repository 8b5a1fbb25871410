"""Steps' concurrency, rate and provider limits as Prefect global concurrency limits.
Part of the Prefect adapter.

A limit a step names is created on the server the first time a process needs it
(from ``max_concurrency=`` or :func:`~beluga_flows.define_rate_limit`), then held
around each attempt; a slot or token that does not come within the step's timeout
is ``RESOURCE_EXHAUSTED``.

A :class:`~beluga_flows.ProviderLimits` ``openai`` is up to three limits, shared by
every process that talks to the server and visible in the UI (Concurrency → Global):
``openai:rpm`` (``rpm`` slots decaying at ``rpm/60`` per second: one slot per
request), ``openai:tpm`` (``tpm`` slots decaying at ``tpm/60``: ``consume_tokens(n)``
occupies ``n``) and ``openai:concurrent`` (``max_concurrent`` slots held for an
attempt). A process creates them when it first uses the declaration, and sets their
size to the declaration if they exist with another one. Waiting for them past the
step's timeout is ``RATE_LIMIT_EXCEEDED`` (:func:`beluga_flows.resilience.providers.hold`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.asyncio import concurrency as prefect_concurrency
from prefect.concurrency.asyncio import rate_limit as prefect_rate_limit
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_logger

from beluga_flows.core.specs import StepSpec
from beluga_flows.resilience import providers
from beluga_flows.resilience.limits import exhausted, missing, rate_limit_spec
from beluga_flows.resilience.providers import ProviderLimits

__all__ = ["PREFECT_PROVIDERS", "PrefectProviders", "hold"]


@contextlib.asynccontextmanager
async def hold(spec: StepSpec) -> AsyncIterator[None]:
    """Hold ``spec``'s rate-limit token and concurrency slot for the body."""
    async with contextlib.AsyncExitStack() as stack:
        if spec.provider is not None:
            held = providers.hold(PREFECT_PROVIDERS, spec.provider, spec.timeout)
            await stack.enter_async_context(held)
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
            await _create(client, create)
    _ENSURED.add(name)


async def _create(client: Any, create: GlobalConcurrencyLimitCreate) -> None:
    """Create a global concurrency limit (another process may have been first)."""
    try:
        await client.create_global_concurrency_limit(create)
    except ObjectAlreadyExists:
        return  # another process created it first
    decay = create.slot_decay_per_second
    get_logger("beluga_flows").info(
        "created Prefect global concurrency limit %r (%s slots%s)",
        create.name,
        create.limit,
        f", {decay}/s decay" if decay else "",
    )


async def _acquire(kind: str, name: str, timeout: float | None, waiting: Awaitable[Any]) -> None:
    try:
        await waiting
    except TimeoutError:
        raise exhausted(kind, name, timeout) from None


# ---------------------------------------------------------------- provider limits


class PrefectProviders:
    """Provider budgets as the server's global concurrency limits (the Prefect
    engine's :class:`~beluga_flows.resilience.providers.ProviderBackend`)."""

    clock = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._ensured: set[ProviderLimits] = set()

    @contextlib.asynccontextmanager
    async def slot(self, limits: ProviderLimits, timeout: float | None) -> AsyncIterator[None]:
        await self._ensure(limits)
        _bounded(timeout)
        name = f"{limits.name}:concurrent"
        async with prefect_concurrency(name, timeout_seconds=timeout, strict=True):
            yield

    async def request(self, limits: ProviderLimits, timeout: float | None) -> None:
        await self._ensure(limits)
        _bounded(timeout)
        await prefect_rate_limit(f"{limits.name}:rpm", timeout_seconds=timeout, strict=True)

    async def tokens(self, limits: ProviderLimits, n: int, timeout: float | None) -> None:
        await self._ensure(limits)
        _bounded(timeout)
        name = f"{limits.name}:tpm"
        await prefect_rate_limit(name, occupy=n, timeout_seconds=timeout, strict=True)

    async def _ensure(self, limits: ProviderLimits) -> None:
        """Create (or resize) the limits of ``limits`` on the server, once per
        declaration and process."""
        if limits in self._ensured:
            return
        budgets = [
            (f"{limits.name}:rpm", limits.rpm, True),
            (f"{limits.name}:tpm", limits.tpm, True),
            (f"{limits.name}:concurrent", limits.max_concurrent, False),
        ]
        async with get_client() as client:
            for name, size, decays in budgets:
                if size is not None:
                    await _declare(client, name, size, size / 60 if decays else None)
        self._ensured.add(limits)


def _bounded(timeout: float | None) -> None:
    if timeout is not None and timeout <= 0:
        raise TimeoutError  # no time left: not worth a request to the server


async def _declare(client: Any, name: str, limit: int, decay: float | None) -> None:
    """Make the global concurrency limit ``name`` have ``limit`` slots decaying at
    ``decay`` per second (none: a plain concurrency limit)."""
    try:
        found = await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        await _create(
            client,
            GlobalConcurrencyLimitCreate(
                name=name, limit=limit, slot_decay_per_second=decay or 0.0
            ),
        )
        return
    if found.limit != limit or (found.slot_decay_per_second or 0.0) != (decay or 0.0):
        update = GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=decay or 0.0)
        await client.update_global_concurrency_limit(name, update)


PREFECT_PROVIDERS = PrefectProviders()
