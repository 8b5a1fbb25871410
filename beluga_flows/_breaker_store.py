"""Where circuit-breaker state lives: one process (memory) or many (Redis).

A store does one thing: apply a pure function to a breaker's state atomically.
The memory store holds a lock only for that function (never across the protected
call); the Redis store runs it inside a WATCH/MULTI transaction, retried on
conflict, so N processes agree and only ``half_open_max_calls`` probes go out
across all of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ._validate import config_error, seconds
from .errors import ErrorCode, OrchestratorError

__all__ = ["BreakerState", "BreakerStore", "CircuitState", "MemoryStore", "RedisStore"]


class CircuitState(enum.StrEnum):
    """``closed`` (calls pass), ``open`` (calls fail fast), ``half_open`` (probing)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerState:
    """What a store keeps for one breaker (JSON-friendly).

    ``leases`` are the deadlines of the half-open probes in flight: a probe's slot is
    a lease that expires after ``recovery_timeout``, so a probe that never reports
    back (its process died, its store write failed) cannot hold it forever.
    """

    state: CircuitState = CircuitState.CLOSED
    failures: int = 0  # consecutive, while closed
    opened_at: float | None = None
    leases: tuple[float, ...] = field(default=())  # probe deadlines, oldest first
    successes: int = 0  # half-open successes so far
    outcomes: tuple[bool, ...] = field(default=())  # last `window` calls, True = failure

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            **dataclasses.asdict(self),
            "state": self.state.value,
            "leases": list(self.leases),
            "outcomes": list(self.outcomes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BreakerState:
        """The inverse of :meth:`to_json`.

        Unknown keys are ignored; a record written before leases (a bare ``probes``
        count, no deadlines) loads with no leases: its probes count as expired.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{
                **{k: v for k, v in data.items() if k in known},
                "state": CircuitState(data["state"]),
                "leases": tuple(data.get("leases", ())),
                "outcomes": tuple(data.get("outcomes", ())),
            }
        )


Update = Callable[[BreakerState], tuple[BreakerState, Any]]


@runtime_checkable
class BreakerStore(Protocol):
    """Atomic read-modify-write of breaker states, by breaker name."""

    async def load(self, name: str) -> BreakerState:
        """The stored state (a closed one when there is none)."""

    async def update(self, name: str, fn: Update) -> tuple[BreakerState, BreakerState, Any]:
        """Apply ``fn(state) -> (new state, result)`` atomically; ``(old, new, result)``."""


class MemoryStore(BreakerStore):
    """In-process state: shared by every breaker object of one process."""

    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}
        self._lock = threading.Lock()

    async def load(self, name: str) -> BreakerState:
        return self._states.get(name) or BreakerState()

    async def update(self, name: str, fn: Update) -> tuple[BreakerState, BreakerState, Any]:
        return self.apply(name, fn)

    def apply(self, name: str, fn: Update) -> tuple[BreakerState, BreakerState, Any]:
        """:meth:`update` without the coroutine (the lock is held for ``fn`` only)."""
        with self._lock:
            old = self._states.get(name) or BreakerState()
            new, result = fn(old)
            if new is not old:
                self._states[name] = new
        return old, new, result


class RedisStore(BreakerStore):
    """State in Redis, shared by every process that uses the same URL and prefix.

    Example::

        store = RedisStore("redis://127.0.0.1:6379/0")
        bf.CircuitBreaker("llm", store=store)

    A record not written for ``ttl`` seconds (a day by default, ``None``: never)
    expires; a closed breaker with nothing counted is not stored at all.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "beluga:breaker:",
        timeout: float = 2.0,
        ttl: float | None = 86400.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise config_error(
                "breaker", f"store URL must be redis://, rediss:// or unix://, got {url!r}"
            )
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        self._timeout = timeout
        # Stale state does not live forever: a record nobody has written for `ttl`
        # seconds expires (a breaker nobody called for a day). Keep it well above
        # every recovery_timeout so an OPEN record outlives its recovery time.
        ttl_ms = seconds("breaker", "ttl", ttl)
        self._ttl_ms = None if ttl_ms is None else max(1, int(ttl_ms * 1000))
        self._make: Callable[[], Any] = lambda: aioredis.Redis.from_url(  # type: ignore[no-untyped-call]
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._clients: dict[int, Any] = {}  # one client per event loop

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            client = self._clients[id(loop)] = self._make()
        return client

    def _unreachable(self, name: str, err: BaseException) -> OrchestratorError:
        return OrchestratorError(
            "breaker",
            f"breaker {name!r}: store {self.url} unreachable: {err}",
            ErrorCode.RESOURCE_EXHAUSTED,
            breaker=name,
        )

    async def load(self, name: str) -> BreakerState:
        from redis.exceptions import RedisError

        try:
            raw = await self._client().get(self.prefix + name)
        except (RedisError, OSError) as err:
            raise self._unreachable(name, err) from err
        return BreakerState.from_json(json.loads(raw)) if raw else BreakerState()

    async def update(self, name: str, fn: Update) -> tuple[BreakerState, BreakerState, Any]:
        from redis.exceptions import RedisError, WatchError

        key = self.prefix + name
        client = self._client()
        try:
            async with client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        old = BreakerState.from_json(json.loads(raw)) if raw else BreakerState()
                        new, result = fn(old)
                        if new is old:
                            await pipe.unwatch()
                            return old, new, result
                        pipe.multi()
                        if new == BreakerState():
                            pipe.delete(key)  # closed with nothing counted: nothing to keep
                        else:
                            pipe.set(key, json.dumps(new.to_json()), px=self._ttl_ms)
                        await pipe.execute()
                        return old, new, result
                    except WatchError:
                        continue  # another process changed it: decide again on fresh state
        except (RedisError, OSError) as err:
            raise self._unreachable(name, err) from err
