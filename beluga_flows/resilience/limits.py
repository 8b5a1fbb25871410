"""Concurrency and rate limits, by name.

On Prefect a step's ``concurrency="db", max_concurrency=3`` holds a slot of the
global concurrency limit ``db`` (created with 3 slots if missing) for the step's
run, and ``rate_limit="api"`` takes a slot of a limit with slot decay; the local
engine enforces the same limits in-process with the classes below. Waiting longer
than the step's timeout raises ``RESOURCE_EXHAUSTED``; slots are released on
success, failure, timeout and cancellation.

Example::

    bf.define_rate_limit("search-api", per_second=5, burst=5)

    @bf.step(rate_limit="search-api", concurrency="search", max_concurrency=3, timeout=10)
    async def search(q: str) -> list[str]: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from beluga_flows._validate import config_error, positive_int
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "LocalLimits",
    "RateLimit",
    "Slots",
    "TokenBucket",
    "define_rate_limit",
    "exhausted",
    "missing",
    "rate_limit_spec",
]


@dataclass(frozen=True)
class RateLimit:
    """``per_second`` calls on average, bursts of up to ``burst``."""

    name: str
    per_second: float
    burst: int = 1


_RATES: dict[str, RateLimit] = {}


def define_rate_limit(name: str, per_second: float, burst: int = 1) -> RateLimit:
    """Declare a rate limit for ``@step(rate_limit=name)``.

    The local engine enforces it in-process; the Prefect engine creates a global
    concurrency limit with ``burst`` slots decaying at ``per_second`` if none exists.
    """
    if not isinstance(name, str) or not name.strip():
        raise config_error(
            "rate_limit", f"rate limit name must be a non-empty string, got {name!r}"
        )
    if isinstance(per_second, bool) or not isinstance(per_second, int | float) or per_second <= 0:
        raise config_error("rate_limit", f"{name!r}: per_second must be > 0, got {per_second!r}")
    positive_int("rate_limit", f"{name!r}: burst", burst)
    spec = _RATES[name] = RateLimit(name, float(per_second), burst)
    return spec


def rate_limit_spec(name: str) -> RateLimit | None:
    """The declared rate limit ``name``, if any."""
    return _RATES.get(name)


def missing(name: str, *, rate: bool) -> OrchestratorError:
    """``NOT_FOUND`` for a limit nobody declared, saying how to declare it."""
    how = (
        "declare it with bf.define_rate_limit(name, per_second)"
        if rate
        else "give max_concurrency= to create it"
    )
    kind = "rate limit" if rate else "concurrency limit"
    return OrchestratorError(
        "limits", f"no {kind} {name!r}: {how}", ErrorCode.NOT_FOUND, limit=name
    )


def exhausted(kind: str, name: str, timeout: float | None) -> OrchestratorError:
    """``RESOURCE_EXHAUSTED``: no slot or token of ``name`` came within ``timeout``."""
    return OrchestratorError(
        "limits",
        f"{kind} {name!r}: no slot within {timeout:g}s",
        ErrorCode.RESOURCE_EXHAUSTED,
        limit=name,
    )


class Slots:
    """A counting semaphore usable from any thread and event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    async def acquire(self, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.held < self.limit:
                self.held += 1
                return True
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except (TimeoutError, asyncio.CancelledError):
            with self._lock:
                if (loop, fut) in self._waiters:
                    self._waiters.remove((loop, fut))
                    granted = False
                else:
                    granted = True  # the slot was handed over as we gave up: give it back
            if granted:
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                loop, fut = self._waiters.popleft()  # the slot passes straight on
                loop.call_soon_threadsafe(_grant, fut)
            else:
                self.held -= 1


def _grant(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class TokenBucket:
    """A token bucket: ``capacity`` tokens, refilled at ``per_second``, on ``clock``."""

    def __init__(
        self, capacity: float, per_second: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = float(capacity)
        self.per_second = per_second
        self.clock = clock
        self.tokens = float(capacity)
        self.stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now

    def wait_time(self) -> float:
        """Take a token (0.0) or say how long until one is due."""
        with self._lock:
            self._refill()
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.per_second

    def reserve(self, n: float, max_wait: float | None) -> float | None:
        """Take ``n`` tokens now, in advance if need be: the seconds until they are
        due (0.0: at once), or ``None`` (nothing taken) if that is past ``max_wait``.
        Reserving keeps waiters in the order they came."""
        with self._lock:
            self._refill()
            wait = max(0.0, (n - self.tokens) / self.per_second)
            if max_wait is not None and wait > max_wait:
                return None
            self.tokens -= n
            return wait

    def refund(self, n: float) -> None:
        """Give back ``n`` reserved tokens (their waiter gave up)."""
        with self._lock:
            self.tokens = min(self.capacity, self.tokens + n)


class LocalLimits:
    """In-process concurrency and rate limits (the local engine's)."""

    def __init__(self) -> None:
        self._slots: dict[str, Slots] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def _slots_for(self, name: str, limit: int | None) -> Slots:
        with self._lock:
            slots = self._slots.get(name)
            if slots is None:
                if limit is None:
                    raise missing(name, rate=False)
                slots = self._slots[name] = Slots(limit)
            return slots

    async def take_rate(self, name: str, timeout: float | None) -> None:
        """Wait for a token of rate limit ``name`` (``RESOURCE_EXHAUSTED`` past ``timeout``)."""
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                spec = rate_limit_spec(name)
                if spec is None:
                    raise missing(name, rate=True)
                bucket = self._buckets[name] = TokenBucket(spec.burst, spec.per_second)
        deadline = None if timeout is None else time.monotonic() + timeout
        while (delay := bucket.wait_time()) > 0:
            if deadline is not None and time.monotonic() + delay > deadline:
                raise exhausted("rate limit", name, timeout)
            await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def hold(
        self, name: str, limit: int | None, timeout: float | None
    ) -> AsyncIterator[None]:
        """Hold one slot of concurrency limit ``name`` for the body."""
        slots = self._slots_for(name, limit)
        try:
            await slots.acquire(timeout)
        except TimeoutError:
            raise exhausted("concurrency limit", name, timeout) from None
        try:
            yield
        finally:
            slots.release()

    def in_use(self, name: str) -> int:
        """Slots of ``name`` held now."""
        slots = self._slots.get(name)
        return slots.held if slots is not None else 0
