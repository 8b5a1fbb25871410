"""Circuit breakers: states, a pure transition function, listeners, a registry.

Storage lives behind :class:`~beluga_flows.resilience.stores.BreakerStore` (in memory by
default, Redis for many processes); every decision is :func:`admit` /
:func:`record` on a :class:`BreakerState` value with an explicit ``now``, so the
same logic runs on every store and tests drive it with a fake clock. No lock is
held while the protected call runs.

Example::

    llm = bf.CircuitBreaker("llm", failure_threshold=5, recovery_timeout=30)

    @bf.step(circuit_breaker="llm", retries=3)
    async def complete(prompt: str) -> str: ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from beluga_flows import _sync, telemetry
from beluga_flows._validate import config_error, positive_int, seconds
from beluga_flows.errors import CODE_RULES, ErrorCode, OrchestratorError, matches
from beluga_flows.resilience.stores import (
    BreakerState,
    BreakerStore,
    CircuitState,
    FallbackStore,
    MemoryStore,
)

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitState",
    "admit",
    "all_breakers",
    "get_breaker",
    "record",
    "release",
]

T = TypeVar("T")
Listener = Callable[["CircuitBreaker", "CircuitState", "CircuitState"], Any]


@dataclass(frozen=True)
class BreakerConfig:
    """The validated thresholds of a breaker."""

    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    half_open_max_calls: int = 1
    success_threshold: int = 1
    failure_rate: float | None = None
    window: int | None = None
    slow_call_duration: float | None = None


def _opened(now: float) -> BreakerState:
    return BreakerState(state=CircuitState.OPEN, opened_at=now)


def visible_state(cfg: BreakerConfig, st: BreakerState, now: float) -> CircuitState:
    """The state a reader sees: open turns half-open once the recovery time passed."""
    opened = st.opened_at
    if (
        st.state is CircuitState.OPEN
        and opened is not None
        and now - opened >= cfg.recovery_timeout
    ):
        return CircuitState.HALF_OPEN
    return st.state


def admit(cfg: BreakerConfig, st: BreakerState, now: float) -> tuple[BreakerState, bool, bool]:
    """May a call go through? Returns ``(new state, allowed, is_probe)``.

    A half-open probe takes a lease until ``now + recovery_timeout``; expired leases
    (probes that never reported back) are dropped first.
    """
    if visible_state(cfg, st, now) is CircuitState.HALF_OPEN and st.state is CircuitState.OPEN:
        st = BreakerState(state=CircuitState.HALF_OPEN)
    if st.state is CircuitState.CLOSED:
        return st, True, False
    if st.state is CircuitState.HALF_OPEN:
        live = tuple(deadline for deadline in st.leases if deadline > now)
        if len(live) < cfg.half_open_max_calls:
            leases = tuple(sorted((*live, now + cfg.recovery_timeout)))
            return dataclasses.replace(st, leases=leases), True, True
    return st, False, False


def release(st: BreakerState) -> BreakerState:
    """A probe gives its lease back without a verdict (leases are interchangeable:
    the oldest goes)."""
    if st.state is not CircuitState.HALF_OPEN or not st.leases:
        return st
    return dataclasses.replace(st, leases=st.leases[1:])


def record(
    cfg: BreakerConfig, st: BreakerState, failed: bool, probe: bool, now: float
) -> BreakerState:
    """The state after a call that was admitted has finished."""
    if st.state is CircuitState.HALF_OPEN and probe:
        if failed:
            return _opened(now)
        successes = st.successes + 1
        if successes >= cfg.success_threshold:
            return BreakerState()
        return dataclasses.replace(release(st), successes=successes)
    if st.state is not CircuitState.CLOSED:
        return st  # a call admitted before the breaker opened: too late to matter
    if not failed and not st.failures and not cfg.window:
        return st  # the common case: nothing to write
    outcomes = st.outcomes
    if cfg.window:
        outcomes = (*outcomes, failed)[-cfg.window :]
    failures = st.failures + 1 if failed else 0
    if failed and failures >= cfg.failure_threshold:
        return _opened(now)
    rate, window = cfg.failure_rate, cfg.window
    full = rate is not None and window is not None and len(outcomes) >= window
    if full and rate is not None and sum(outcomes) / len(outcomes) >= rate:
        return _opened(now)
    return dataclasses.replace(st, failures=failures, outcomes=outcomes)


def _positive_int(name: str, field_name: str, value: Any) -> int:
    return positive_int("breaker", f"breaker {name!r}: {field_name}", value)


class CircuitBreaker:
    """A named circuit breaker, shared by every step that names it.

    Trips on ``failure_threshold`` consecutive failures, or when the share of
    failures over the last ``window`` calls reaches ``failure_rate``; calls slower
    than ``slow_call_duration`` count as failures. After ``recovery_timeout`` it
    lets ``half_open_max_calls`` probes through (across processes with a shared
    store) and closes after ``success_threshold`` successful probes. ``exclude``
    lists exception types or codes that do not count as failures (by default caller
    mistakes such as ``INVALID_INPUT``; cancellation never counts).
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout: Any = 30.0,
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        failure_rate: float | None = None,
        window: int | None = None,
        slow_call_duration: Any = None,
        store: BreakerStore | None = None,
        *,
        exclude: tuple[type[BaseException] | ErrorCode, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise config_error("breaker", f"breaker name must be a non-empty string, got {name!r}")
        if failure_rate is not None and (
            isinstance(failure_rate, bool)
            or not isinstance(failure_rate, int | float)
            or not 0 < failure_rate <= 1
        ):
            raise config_error(
                "breaker", f"breaker {name!r}: failure_rate must be in (0, 1], got {failure_rate!r}"
            )
        if window is not None:
            window = _positive_int(name, "window", window)
        elif failure_rate is not None:
            window = 20
        if store is not None and not isinstance(store, BreakerStore):
            raise config_error(
                "breaker", f"breaker {name!r}: store must be a BreakerStore, got {store!r}"
            )
        self.name = name
        self.config = BreakerConfig(
            failure_threshold=_positive_int(name, "failure_threshold", failure_threshold),
            recovery_timeout=seconds(
                "breaker", "recovery_timeout", recovery_timeout, allow_none=False
            )
            or 0.0,
            half_open_max_calls=_positive_int(name, "half_open_max_calls", half_open_max_calls),
            success_threshold=_positive_int(name, "success_threshold", success_threshold),
            failure_rate=failure_rate,
            window=window,
            slow_call_duration=seconds("breaker", "slow_call_duration", slow_call_duration),
        )
        self.store: BreakerStore = store if store is not None else MemoryStore()
        # A shared store that fails never fails a call: process-local state stands in.
        self._guarded = self.store if type(self.store) is MemoryStore else FallbackStore(self.store)
        self.exclude = tuple(exclude) if isinstance(exclude, tuple | list) else (exclude,)
        if not all(
            isinstance(e, ErrorCode) or (isinstance(e, type) and issubclass(e, BaseException))
            for e in self.exclude
        ):
            raise config_error(
                "breaker", f"breaker {name!r}: exclude lists exception types or ErrorCodes"
            )
        self.clock = clock
        self._listeners: list[Listener] = []
        self._last_seen = CircuitState.CLOSED
        with _REGISTRY_LOCK:
            _REGISTRY[name] = self

    # ---------------------------------------------------------------- state

    @property
    def state(self) -> CircuitState:
        """The current state (``half_open`` as soon as the recovery time has passed)."""
        st = _sync.run_sync(lambda: self._guarded.load(self.name))
        return visible_state(self.config, st, self.clock())

    async def astate(self) -> CircuitState:
        """:attr:`state`, awaitable."""
        return visible_state(self.config, await self._guarded.load(self.name), self.clock())

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(breaker, old, new)`` on every state change this process sees."""
        self._listeners.append(listener)

    async def atrip(self) -> None:
        """Open now."""
        await self._change(lambda st: (_opened(self.clock()), None))

    async def areset(self) -> None:
        """Close now and forget the counts."""
        await self._change(lambda st: (BreakerState(), None))

    def trip(self) -> None:
        """Open now (sync)."""
        _sync.run_sync(self.atrip)

    def reset(self) -> None:
        """Close now (sync)."""
        _sync.run_sync(self.areset)

    # ---------------------------------------------------------------- calls

    def counts_as_failure(self, err: BaseException) -> bool:
        """Whether ``err`` says the dependency is unhealthy."""
        if not isinstance(err, Exception):
            return False
        if isinstance(err, OrchestratorError) and CODE_RULES[err.code].neutral:
            return False  # caller mistakes and control flow say nothing about health
        return not matches(err, self.exclude)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` if the breaker admits it; fail fast with ``CIRCUIT_BREAKER_OPEN``."""
        now = self.clock()
        allowed, probe, clean = await self._change(lambda st: _admit_result(self.config, st, now))
        if not allowed:
            raise OrchestratorError(
                "breaker",
                f"circuit breaker {self.name!r} is open",
                ErrorCode.CIRCUIT_BREAKER_OPEN,
                breaker=self.name,
            )
        slow = self.config.slow_call_duration
        start = time.perf_counter() if slow is not None else 0.0
        try:
            result = await fn()
        except BaseException as err:
            if self.counts_as_failure(err):
                await self._finish(True, probe)
            elif probe:  # cancelled, or a neutral code: no verdict, the lease goes back
                await self._finish(None, probe)
            raise
        failed = slow is not None and time.perf_counter() - start > slow
        if failed or probe or not clean:  # a clean closed breaker has nothing to record
            await self._finish(failed, probe)
        return result

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Use the breaker as a decorator on a sync or async function.

        Example::

            @bf.CircuitBreaker("geo", failure_threshold=3)
            def geocode(address: str) -> dict: ...
        """
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded(*args: Any, **kwargs: Any) -> Any:
                return await self.call(lambda: fn(*args, **kwargs))

            return guarded

        @functools.wraps(fn)
        def guarded_sync(*args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                return fn(*args, **kwargs)  # on the caller's thread: no hop

            return _sync.run_sync(lambda: self.call(run))

        return guarded_sync

    async def _finish(self, failed: bool | None, probe: bool) -> None:
        """Report an admitted call; ``failed=None`` reports nothing but frees the lease."""
        now, cfg = self.clock(), self.config

        def report(st: BreakerState) -> tuple[BreakerState, None]:
            new = release(st) if failed is None else record(cfg, st, failed, probe, now)
            return new, None

        await self._change(report)

    async def _change(self, fn: Callable[[BreakerState], tuple[BreakerState, Any]]) -> Any:
        store = self._guarded
        if type(store) is MemoryStore:  # in-process: no need for a coroutine per call
            old, new, result = store.apply(self.name, fn)
        else:
            old, new, result = await store.update(self.name, fn)
        if old.state is not new.state:
            self._notify(old.state, new.state)
        return result

    def _notify(self, old: CircuitState, new: CircuitState) -> None:
        for listener in list(self._listeners) + list(_GLOBAL_LISTENERS):
            with contextlib.suppress(Exception):  # a listener never breaks the call
                listener(self, old, new)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r})"


def _admit_result(cfg: BreakerConfig, st: BreakerState, now: float) -> tuple[BreakerState, Any]:
    new, allowed, probe = admit(cfg, st, now)
    # "clean": closed with nothing counted, so a plain success changes nothing
    clean = new.state is CircuitState.CLOSED and not new.failures and not cfg.window
    return new, (allowed, probe, clean)


_REGISTRY: dict[str, CircuitBreaker] = {}
_REGISTRY_LOCK = threading.Lock()
_GLOBAL_LISTENERS: list[Listener] = []


def get_breaker(name: str) -> CircuitBreaker:
    """The breaker registered under ``name`` (a default one is made on first use)."""
    found = _REGISTRY.get(name)  # a dict read is atomic; creation takes the lock
    return found if found is not None else CircuitBreaker(name)


def all_breakers() -> list[CircuitBreaker]:
    """Every breaker registered in this process, by name (what a health check reports)."""
    with _REGISTRY_LOCK:
        return [b for _, b in sorted(_REGISTRY.items())]


def add_global_listener(listener: Listener) -> None:
    """Listen to every breaker's state changes (telemetry and Prefect events use it)."""
    if listener not in _GLOBAL_LISTENERS:
        _GLOBAL_LISTENERS.append(listener)


add_global_listener(telemetry.record_breaker_change)
