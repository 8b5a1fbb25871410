"""The frozen specs of steps and flows, and the protocols the engines are typed against.

This module sits *below* the engines (see the layer order in :mod:`beluga_flows`):
an engine runs "something with a name, a function, a spec and an ``is_async``
flag" — :class:`StepLike` / :class:`FlowLike` — so it never imports the decorators
that make :class:`~beluga_flows.Step` and :class:`~beluga_flows.Flow` (and call the
engine in turn).

Example::

    def describe(step: StepLike) -> str:
        return f"{step.name}: timeout {step.spec.timeout}"
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from beluga_flows.resilience.breaker import CircuitBreaker
from beluga_flows.resilience.providers import ProviderLimits
from beluga_flows.resilience.retry import RetryPolicy

__all__ = ["FlowLike", "FlowSpec", "StepLike", "StepSpec"]


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    """The validated options of a step."""

    name: str
    description: str | None = None
    retry_policy: RetryPolicy | None = None
    timeout: float | None = None
    cache: bool = False
    tags: tuple[str, ...] = ()
    track: bool = True
    circuit_breaker: str | CircuitBreaker | None = None
    concurrency: str | None = None
    max_concurrency: int | None = None
    rate_limit: str | None = None
    # A generator function (async or sync): its chunks are streamed as it yields them.
    streaming: bool = False
    # What the step returns instead of raising after its last attempt (None: nothing).
    fallback: Any = field(default=None, compare=False)
    provider: str | ProviderLimits | None = None

    @property
    def limited(self) -> bool:
        """Whether calls take a concurrency slot, a rate-limit token or provider limits."""
        return (
            self.concurrency is not None or self.rate_limit is not None or self.provider is not None
        )

    @functools.cached_property
    def plain(self) -> bool:
        """No policy at all: an inline call is just the function call (computed once)."""
        return (
            self.retry_policy is None
            and self.timeout is None
            and not self.cache
            and self.circuit_breaker is None
            and not self.limited
            and not self.streaming
            and self.fallback is None
        )


@dataclass(frozen=True, kw_only=True)
class FlowSpec:
    """The validated options of a flow."""

    name: str
    description: str | None = None
    timeout: float | None = None
    retries: int = 0
    max_workers: int | None = None
    task_runner: Any = field(default=None, compare=False)
    tags: tuple[str, ...] = ()
    run_name: str | Callable[[], str] | None = field(default=None, compare=False)


class StepLike(Protocol):
    """What an engine needs of a step (:class:`~beluga_flows.Step` is one).

    Engines key their caches on the step object itself (weakly), so a step must be
    hashable by identity and weak-referenceable, as every plain class instance is.
    """

    @property
    def name(self) -> str:
        """The step's name (its task runs are named after it)."""

    @property
    def fn(self) -> Callable[..., Any]:
        """The user's function."""

    @property
    def spec(self) -> StepSpec:
        """The validated options."""

    @property
    def is_async(self) -> bool:
        """Whether calling ``fn`` must be awaited (a coroutine or async-generator function)."""


class FlowLike(Protocol):
    """What an engine needs of a flow (:class:`~beluga_flows.Flow` is one)."""

    @property
    def name(self) -> str:
        """The flow's name."""

    @property
    def fn(self) -> Callable[..., Any]:
        """The user's function."""

    @property
    def spec(self) -> FlowSpec:
        """The validated options."""

    @property
    def is_async(self) -> bool:
        """Whether ``fn`` is a coroutine function."""
