"""Provider limits: the budgets of an LLM API (requests and tokens per minute,
concurrent calls, a pause before a retry), declared once by name and shared by every
step that names the provider.

Each attempt of a ``@step(provider="openai")`` takes a slot of ``max_concurrent``
for its duration, then one request of the ``rpm`` budget; ``consume_tokens(n)``
inside it takes ``n`` tokens of the ``tpm`` budget. Waiting for any of them past the
step's ``timeout`` is ``RATE_LIMIT_EXCEEDED`` (retryable) naming the provider and the
budget. The limits hold per attempt, inside the retry, like the other limits; a retry
of the step first pauses ``cooldown_on_retry`` seconds, *added* to the retry
policy's backoff.

The local engine keeps the budgets in-process (:class:`LocalProviders`: token
buckets of ``rpm`` and ``tpm`` refilled at ``rpm/60`` and ``tpm/60`` per second); the
Prefect engine keeps them on the server, shared by every process, as global
concurrency limits ``<name>:rpm`` and ``<name>:tpm`` (slot decay ``limit/60`` per
second) and ``<name>:concurrent``. Both engines run :func:`hold`; they differ only
in their :class:`ProviderBackend`.

Example::

    bf.ProviderLimits("openai", rpm=500, tpm=200_000, max_concurrent=20, cooldown_on_retry=5)

    @bf.step(provider="openai", retries=3, timeout=60)
    async def complete(prompt: str) -> str:
        reply = await client.chat(prompt)
        await bf.consume_tokens(reply.usage.total_tokens)
        return reply.text
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from beluga_flows import _sync
from beluga_flows._validate import config_error, positive_int, seconds
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.resilience.limits import Slots, TokenBucket

__all__ = [
    "LocalProviders",
    "ProviderBackend",
    "ProviderLimits",
    "consume_tokens",
    "cooldown",
    "hold",
    "provider_limits",
    "resolve",
    "retry_sleep",
]

_PROVIDERS: dict[str, ProviderLimits] = {}


@dataclass(frozen=True)
class ProviderLimits:
    """The limits of an LLM provider, declared by name (constructing one declares it;
    declaring a name again replaces the earlier declaration for calls that start
    afterwards, on the Prefect server too).

    ``rpm`` requests and ``tpm`` tokens per minute, ``max_concurrent`` calls at once,
    and ``cooldown_on_retry`` seconds (or a ``timedelta``) of pause before a retry,
    added to the retry policy's backoff. At least one of ``rpm``, ``tpm`` and
    ``max_concurrent``; every value positive (``INVALID_CONFIG`` otherwise).

    Example::

        bf.ProviderLimits("anthropic", rpm=50, tpm=40_000, max_concurrent=5)
    """

    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    cooldown_on_retry: float | None = None

    def __post_init__(self) -> None:
        own = "provider"
        name = self.name
        if not isinstance(name, str) or not name.strip():
            raise config_error(own, f"provider name must be a non-empty string, got {name!r}")
        for budget in ("rpm", "tpm", "max_concurrent"):
            if getattr(self, budget) is not None:
                positive_int(own, f"{name!r}: {budget}", getattr(self, budget))
        if self.rpm is None and self.tpm is None and self.max_concurrent is None:
            raise config_error(own, f"{name!r}: give at least one of rpm, tpm, max_concurrent")
        pause = seconds(own, f"{name!r}: cooldown_on_retry", self.cooldown_on_retry)
        object.__setattr__(self, "cooldown_on_retry", pause)
        _PROVIDERS[name] = self


def provider_limits(name: str) -> ProviderLimits:
    """The declared limits of provider ``name`` (``NOT_FOUND`` listing the declared ones)."""
    limits = _PROVIDERS.get(name)
    if limits is None:
        known = ", ".join(sorted(_PROVIDERS)) or "none"
        raise OrchestratorError(
            "limits",
            f"no provider {name!r}: declare it with bf.ProviderLimits({name!r}, rpm=...); "
            f"declared: {known}",
            ErrorCode.NOT_FOUND,
            limit=name,
        )
    return limits


def resolve(provider: str | ProviderLimits) -> ProviderLimits:
    """A step's ``provider=``: a name looked up now, or the limits themselves."""
    return provider if isinstance(provider, ProviderLimits) else provider_limits(provider)


def cooldown(provider: str | ProviderLimits | None) -> float:
    """The pause before a retry of a step of ``provider`` (0.0 for none)."""
    return (resolve(provider).cooldown_on_retry or 0.0) if provider is not None else 0.0


def retry_sleep(
    sleep: Callable[[float], Awaitable[None]], provider: str | ProviderLimits | None
) -> Callable[[float], Awaitable[None]]:
    """``sleep`` for the backoff of a retry loop, plus the provider's cooldown."""
    if provider is None:
        return sleep

    async def pause(delay: float) -> None:
        await sleep(delay + cooldown(provider))

    return pause


# ---------------------------------------------------------------- holding the budgets


class ProviderBackend(Protocol):
    """Where an engine keeps provider budgets. Each wait raises ``TimeoutError`` past
    ``timeout`` seconds (``None``: no bound); ``clock`` is the backend's time."""

    clock: Callable[[], float]

    def slot(
        self, limits: ProviderLimits, timeout: float | None
    ) -> AbstractAsyncContextManager[None]:
        """Hold one of ``limits.max_concurrent`` slots for the body."""

    async def request(self, limits: ProviderLimits, timeout: float | None) -> None:
        """Take one request of the ``rpm`` budget."""

    async def tokens(self, limits: ProviderLimits, n: int, timeout: float | None) -> None:
        """Take ``n`` tokens of the ``tpm`` budget."""


@dataclass
class _Attempt:
    """The provider-limited attempt running now (what :func:`consume_tokens` charges)."""

    limits: ProviderLimits
    backend: ProviderBackend
    deadline: float | None
    timeout: float | None

    async def take(self, n: int) -> None:
        left = None if self.deadline is None else max(0.0, self.deadline - self.backend.clock())
        waiting = self.backend.tokens(self.limits, n, left)
        await _within(self.limits, f"{n} tokens", f"tpm={self.limits.tpm}", self.timeout, waiting)


_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "beluga_provider_attempt", default=None
)


async def _within(
    limits: ProviderLimits, what: str, budget: str, timeout: float | None, waiting: Awaitable[Any]
) -> Any:
    try:
        return await waiting
    except TimeoutError:
        raise OrchestratorError(
            "limits",
            f"provider {limits.name!r}: no {what} within the step's timeout of "
            f"{timeout or 0:g}s ({budget})",
            ErrorCode.RATE_LIMIT_EXCEEDED,
            limit=limits.name,
        ) from None


@contextlib.asynccontextmanager
async def hold(
    backend: ProviderBackend, provider: str | ProviderLimits, timeout: float | None
) -> AsyncIterator[None]:
    """Hold one attempt's provider budgets for the body: a concurrent slot, then a
    request; ``consume_tokens`` in the body charges the ``tpm`` budget. Every wait
    together is bounded by ``timeout`` (``RATE_LIMIT_EXCEEDED`` past it), and so is
    a token wait, by the attempt's own deadline (less a margin: :func:`_margin`)."""
    limits = resolve(provider)
    clock = backend.clock
    deadline = None if timeout is None else clock() + timeout

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - clock())

    async with contextlib.AsyncExitStack() as stack:
        if limits.max_concurrent is not None:
            budget = f"max_concurrent={limits.max_concurrent}"
            slot = stack.enter_async_context(backend.slot(limits, left()))
            await _within(limits, "concurrent slot", budget, timeout, slot)
        if limits.rpm is not None:
            budget = f"rpm={limits.rpm}"
            await _within(limits, "request", budget, timeout, backend.request(limits, left()))
        body_deadline = None if timeout is None else clock() + timeout - _margin(timeout)
        token = _ATTEMPT.set(_Attempt(limits, backend, body_deadline, timeout))
        try:
            yield
        finally:
            _ATTEMPT.reset(token)


def _margin(timeout: float) -> float:
    """How long before the attempt's deadline a token wait gives up, so that it ends
    ``RATE_LIMIT_EXCEEDED`` (naming the budget) rather than racing the ``TIMEOUT``."""
    return min(0.1 * timeout, 0.5)


def consume_tokens(n: int) -> Any:
    """Take ``n`` tokens from the ``tpm`` budget of the current step's provider,
    waiting for them if need be: ``RATE_LIMIT_EXCEEDED`` if they do not come before
    the attempt's deadline (its timeout less 10 %, at most 0.5 s, so the error names
    the budget instead of the attempt timing out).

    Called plainly in a sync step, awaited in an async one. Outside a step with a
    provider, or for a provider without ``tpm``, it does nothing (so code shared with
    unlimited steps can charge tokens unconditionally). ``n`` larger than the whole
    ``tpm`` budget can never be served: ``INVALID_INPUT``.

    Example::

        @bf.step(provider="openai", timeout=30)
        async def summarise(text: str) -> str:
            await bf.consume_tokens(len(text) // 4)   # an estimate, before the call
            return await llm(text)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OrchestratorError(
            "limits", f"tokens must be an int >= 1, got {n!r}", ErrorCode.INVALID_INPUT
        )
    attempt = _ATTEMPT.get()
    tpm = attempt.limits.tpm if attempt is not None else None
    if attempt is None or tpm is None:
        return _nothing() if _sync.in_running_loop() else None
    if n > tpm:
        raise OrchestratorError(
            "limits",
            f"provider {attempt.limits.name!r}: {n} tokens exceed the whole budget tpm={tpm}",
            ErrorCode.INVALID_INPUT,
            limit=attempt.limits.name,
        )
    if _sync.in_running_loop():
        return attempt.take(n)
    return _sync.run_sync(lambda: attempt.take(n))


async def _nothing() -> None:
    return None


class LocalProviders:
    """Provider budgets in-process (the local engine's): a token bucket per ``rpm``
    and ``tpm`` budget and a slot count per ``max_concurrent``, on an injectable
    ``clock``/``sleep`` (a test's fake clock). A waiter reserves its tokens when it
    comes, so waiters are served in order, and one whose wait would end past its
    timeout fails at once instead of waiting to fail."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self._budgets: dict[str, tuple[ProviderLimits, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _of(self, limits: ProviderLimits) -> dict[str, Any]:
        with self._lock:
            return self._declared(limits)

    def _declared(self, limits: ProviderLimits) -> dict[str, Any]:
        known = self._budgets.get(limits.name)
        if known is None or known[0] != limits:  # new, or declared again differently
            budgets: dict[str, Any] = {}
            if limits.rpm is not None:
                budgets["rpm"] = TokenBucket(limits.rpm, limits.rpm / 60, self.clock)
            if limits.tpm is not None:
                budgets["tpm"] = TokenBucket(limits.tpm, limits.tpm / 60, self.clock)
            if limits.max_concurrent is not None:
                budgets["concurrent"] = Slots(limits.max_concurrent)
            known = self._budgets[limits.name] = (limits, budgets)
        return known[1]

    @contextlib.asynccontextmanager
    async def slot(self, limits: ProviderLimits, timeout: float | None) -> AsyncIterator[None]:
        slots: Slots = self._of(limits)["concurrent"]
        await slots.acquire(timeout)
        try:
            yield
        finally:
            slots.release()

    async def request(self, limits: ProviderLimits, timeout: float | None) -> None:
        await self._take(self._of(limits)["rpm"], 1, timeout)

    async def tokens(self, limits: ProviderLimits, n: int, timeout: float | None) -> None:
        await self._take(self._of(limits)["tpm"], n, timeout)

    async def _take(self, bucket: TokenBucket, n: int, timeout: float | None) -> None:
        wait = bucket.reserve(n, timeout)
        if wait is None:
            raise TimeoutError
        if wait > 0:
            try:
                await self.sleep(wait)
            except BaseException:
                bucket.refund(n)
                raise

    def in_use(self, name: str) -> int:
        """Concurrent slots of provider ``name`` held now."""
        known = self._budgets.get(name)
        slots = known[1].get("concurrent") if known is not None else None
        return slots.held if slots is not None else 0
