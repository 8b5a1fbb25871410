"""Where circuit-breaker state lives: one process (memory) or many (Redis).

A store does one thing: apply a pure function to a breaker's state atomically.
The memory store holds a lock only for that function (never across the protected
call); the Redis store runs it inside a WATCH/MULTI transaction, retried on
conflict, so N processes agree and only ``half_open_max_calls`` probes go out
across all of them.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import enum
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from beluga_flows import telemetry
from beluga_flows._validate import config_error, positive_int, seconds
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "BreakerState",
    "BreakerStore",
    "CircuitState",
    "FallbackStore",
    "MemoryStore",
    "RedisStore",
]

_log = logging.getLogger("beluga_flows.breaker")


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


class FallbackStore(BreakerStore):
    """A shared store, with process-local state while it cannot be reached.

    When the shared store fails, the breaker goes on from a local copy of the last
    state it saw there (an open breaker stays open), logs one warning per outage and
    counts every failed operation (``<prefix>.breaker.store_errors``). It tries the
    shared store again ``retry_after`` seconds later (not on every call: a paused
    server would cost ``timeout`` per call); once it answers, the shared state is
    authoritative again and the local one is dropped (what the local state decided
    during the outage is not written through: the shared state may have moved on).
    """

    def __init__(self, shared: BreakerStore, retry_after: float = 1.0) -> None:
        self.shared, self.local, self.retry_after = shared, MemoryStore(), retry_after
        self._last: dict[str, BreakerState] = {}  # the last state seen in the shared store
        self._retry_at: float | None = None  # monotonic; None while the shared store answers

    async def load(self, name: str) -> BreakerState:
        if self._reachable():
            try:
                st = self._last[name] = await self.shared.load(name)
            except Exception as err:
                self._failed(name, "load", err)
            else:
                self._recovered(name)
                return st
        return await self.local.load(name)

    async def update(self, name: str, fn: Update) -> tuple[BreakerState, BreakerState, Any]:
        if self._reachable():
            try:
                old, new, result = await self.shared.update(name, fn)
            except Exception as err:
                self._failed(name, "update", err)
            else:
                self._last[name] = new
                self._recovered(name)
                return old, new, result
        return self.local.apply(name, fn)  # fn is pure: deciding again locally is safe

    def _reachable(self) -> bool:
        return self._retry_at is None or time.monotonic() >= self._retry_at

    def _failed(self, name: str, op: str, err: Exception) -> None:
        telemetry.record_breaker_store_error(name, op)
        if self._retry_at is None:  # the outage starts: once per outage
            last = self._last.get(name, BreakerState())
            self.local.apply(name, lambda st: (last, None))
            _log.warning(
                "breaker %r: store unreachable, using process-local state until it "
                "answers again: %s",
                name,
                err,
            )
        self._retry_at = time.monotonic() + self.retry_after

    def _recovered(self, name: str) -> None:
        if self._retry_at is not None:
            self._retry_at = None
            _log.info("breaker %r: store reachable again, using its shared state", name)


class RedisStore(BreakerStore):
    """State in Redis, shared by every process that uses the same URL and prefix.

    Example::

        store = RedisStore("redis://127.0.0.1:6379/0")
        bf.CircuitBreaker("llm", store=store)

    One client per store, whatever the caller: a thread-safe connection pool driven
    from a small private thread pool (async callers await it, sync callers such as
    ``breaker.state`` from a Flask handler reuse it), so connections stay bounded by
    ``max_connections``. :meth:`close` releases them (also done at exit).

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
        max_connections: int = 4,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise config_error(
                "breaker", f"store URL must be redis://, rediss:// or unix://, got {url!r}"
            )
        import redis

        self.url = url
        self.prefix = prefix
        # Stale state does not live forever: a record nobody has written for `ttl`
        # seconds expires (a breaker nobody called for a day). Keep it well above
        # every recovery_timeout so an OPEN record outlives its recovery time.
        ttl_s = seconds("breaker", "ttl", ttl)
        self._ttl_ms = None if ttl_s is None else max(1, int(ttl_s * 1000))
        workers = positive_int("breaker", "max_connections", max_connections)
        wait = seconds("breaker", "timeout", timeout, allow_none=False)
        # A sync client: its pool is thread-safe and bound to no event loop (an
        # asyncio client belongs to the loop it first ran on, and sync callers get
        # a fresh loop per call). One connection per worker thread at most.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=wait, socket_connect_timeout=wait, max_connections=workers
        )
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="beluga-breaker-redis")
        self._closed = False
        atexit.register(_close_at_exit, weakref.ref(self))

    def close(self) -> None:
        """Close the connections and the threads (idempotent; later calls fail)."""
        if not self._closed:
            self._closed = True
            self._threads.shutdown(wait=False)
            self._redis.close()

    async def _run(self, name: str, fn: Callable[[], Any]) -> Any:
        from redis.exceptions import RedisError

        if self._closed:
            raise OrchestratorError(
                "breaker", f"breaker {name!r}: store {self.url} is closed", ErrorCode.INVALID_STATE
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, fn)
        except (RedisError, OSError) as err:
            raise OrchestratorError(
                "breaker",
                f"breaker {name!r}: store {self.url} unreachable: {err}",
                ErrorCode.RESOURCE_EXHAUSTED,
                breaker=name,
            ) from err

    async def ping(self) -> None:
        """Round-trip to Redis (``RESOURCE_EXHAUSTED`` when it cannot be reached): what a
        health check calls."""
        await self._run("ping", self._redis.ping)

    async def load(self, name: str) -> BreakerState:
        raw = await self._run(name, lambda: self._redis.get(self.prefix + name))
        return BreakerState.from_json(json.loads(raw)) if raw else BreakerState()

    async def update(self, name: str, fn: Update) -> tuple[BreakerState, BreakerState, Any]:
        return await self._run(name, lambda: self._transaction(self.prefix + name, fn))  # type: ignore[no-any-return]

    def _transaction(self, key: str, fn: Update) -> tuple[BreakerState, BreakerState, Any]:
        from redis.exceptions import WatchError

        with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    old = BreakerState.from_json(json.loads(raw)) if raw else BreakerState()
                    new, result = fn(old)
                    if new is old:
                        pipe.unwatch()
                        return old, new, result
                    pipe.multi()
                    if new == BreakerState():
                        pipe.delete(key)  # closed with nothing counted: nothing to keep
                    else:
                        pipe.set(key, json.dumps(new.to_json()), px=self._ttl_ms)
                    pipe.execute()
                    return old, new, result
                except WatchError:
                    continue  # another process changed it: decide again on fresh state


def _close_at_exit(ref: weakref.ref[RedisStore]) -> None:
    store = ref()
    if store is not None:
        store.close()
