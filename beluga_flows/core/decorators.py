"""``@step`` and ``@flow``: they validate options, attach a frozen spec, and run nothing.

A decorated function stays usable as itself: ``.fn`` is the original, calling the
decorated object runs it through the engine in force (a Prefect task run or flow run
by default; see :mod:`beluga_flows.engine`).

Example::

    import beluga_flows as bf

    @bf.step(retries=2, timeout=5)
    async def fetch(url: str) -> dict: ...

    @bf.flow
    def pipeline(n: int) -> int:
        return sum(double(i) for i in range(n))
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import AsyncGenerator, Callable
from typing import Any, overload

from beluga_flows import _sync
from beluga_flows._validate import config_error, non_negative_int, positive_int, seconds
from beluga_flows._validate import tags as check_tags
from beluga_flows.core import options as options_
from beluga_flows.core import streams
from beluga_flows.core.runnable import Runnable
from beluga_flows.core.specs import FlowSpec, StepSpec
from beluga_flows.engine import current_engine, get_engine
from beluga_flows.resilience import fallback as fallbacks
from beluga_flows.resilience.providers import ProviderLimits
from beluga_flows.resilience.retry import RetryPolicy

__all__ = ["Flow", "FlowSpec", "Step", "StepSpec", "as_step", "derive", "flow", "step"]


def _name(owner: str, value: Any, fn: Callable[..., Any]) -> str:
    if value is None:
        return getattr(fn, "__name__", None) or type(fn).__name__
    if not isinstance(value, str) or not value.strip():
        raise config_error(owner, f"name must be a non-empty string, got {value!r}")
    return value


def _description(owner: str, value: Any, fn: Callable[..., Any]) -> str | None:
    if value is None:
        return inspect.getdoc(fn)
    if not isinstance(value, str):
        raise config_error(owner, f"description must be a string, got {value!r}")
    return value


def _bool(owner: str, field_name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise config_error(owner, f"{field_name} must be True or False, got {value!r}")
    return value


def _check_callable(owner: str, fn: Any) -> None:
    if not callable(fn) or isinstance(fn, type):
        raise config_error(owner, f"expected a function, got {fn!r}")


class Step(Runnable):
    """A decorated step: call it like the function, or use it as a :class:`Runnable`.

    Calling a sync step returns its value; calling an async step returns an
    awaitable, and so does calling a sync step from async code (an event loop
    running in the caller's thread): its function runs in a worker thread while
    the loop goes on. ``invoke(input)`` passes ``input`` as the single argument.

    A generator function (async or sync) is a *streaming step*: invoked, it returns
    the list of its chunks (a ``str`` when every chunk is one); ``astream`` and a
    streamed graph (``stream_mode="messages"``) get the chunks as they are yielded.
    """

    def __init__(self, fn: Callable[..., Any], spec: StepSpec) -> None:
        self.fn = fn
        self.spec = spec
        self.name = spec.name
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return current_engine().run_step(self, args, kwargs)
        if _sync.in_running_loop():
            # Returning the value here would mean blocking the loop until the
            # thread is done (no cancel, no timeout, no gather could run meanwhile).
            pending: Any = current_engine().run_step(self, args, kwargs)
            # What Python's never-awaited warning names: the step, and the cure.
            pending.__qualname__ = f"{self.name!r} (a sync step called in async code: await it)"
            return pending
        return _sync.run_sync(lambda: current_engine().run_step(self, args, kwargs))

    async def ainvoke(self, input: Any, **opts: Any) -> Any:
        return await current_engine().run_step(self, (input,), {})

    async def astream(self, input: Any, **opts: Any) -> AsyncGenerator[Any, None]:
        """A streaming step's chunks as they are yielded (any other step: its output)."""
        if not self.spec.streaming:
            async for item in super().astream(input, **opts):
                yield item
            return
        run = functools.partial(self.ainvoke, input, **opts)
        async with contextlib.aclosing(streams.live(run, ("messages",), own_only=True)) as events:
            async for _, (_, chunk) in events:
                yield chunk

    def __repr__(self) -> str:
        return f"<step {self.name!r}>"


class Flow:
    """A decorated flow: calling it starts a flow run (a sub-flow inside another).

    A sync flow returns its value; an async flow returns an awaitable.
    """

    def __init__(self, fn: Callable[..., Any], spec: FlowSpec) -> None:
        self.fn = fn
        self.spec = spec
        self.name = spec.name
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return current_engine().run_flow(self, args, kwargs)
        return _sync.run_sync(lambda: current_engine().run_flow(self, args, kwargs))

    def to_prefect(self) -> Any:
        """The ``prefect.Flow`` behind this flow (for ``serve``/``deploy``).

        Asked of the engine registry, which loads the Prefect adapter on first use:
        the decorators sit above the engines and never import the adapter.
        """
        prefect: Any = get_engine("prefect")  # to_prefect is the PrefectEngine's own
        return prefect.to_prefect(self)

    @property
    def prefect_flow(self) -> Any:
        """:meth:`to_prefect` as an attribute: what a deployment's entrypoint names."""
        return self.to_prefect()

    def __repr__(self) -> str:
        return f"<flow {self.name!r}>"


def _retry_policy(owner: str, value: Any) -> RetryPolicy | None:
    if value is not None and not isinstance(value, RetryPolicy):
        raise config_error(owner, f"retry_policy must be a RetryPolicy, got {value!r}")
    return value


# The checks of the options a node (or any derived step) may override: the same
# ones ``@step`` runs.
_OVERRIDABLE: dict[str, Callable[[str, Any], Any]] = {
    "retry_policy": _retry_policy,
    "timeout": lambda owner, value: seconds(owner, "timeout", value),
    "track": lambda owner, value: _bool(owner, "track", value),
}


def derive(base: Step, name: str, owner: str = "step", **overrides: Any) -> Step:
    """``base`` under another ``name``: every option of its ``@step`` is kept but
    ``overrides`` (``retry_policy``, ``timeout``, ``track``), checked as ``@step``
    checks them. The spec is ``base.spec`` replaced, so no field can be dropped."""
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise config_error(owner, f"{unknown} cannot be overridden")
    checked = {key: _OVERRIDABLE[key](owner, value) for key, value in overrides.items()}
    spec = dataclasses.replace(base.spec, name=_name(owner, name, base.fn), **checked)
    return Step(base.fn, spec)


def _step_spec(fn: Callable[..., Any], options: dict[str, Any]) -> StepSpec:
    owner = "step"
    retries = non_negative_int(owner, "retries", options["retries"], maximum=100)
    policy = _retry_policy(owner, options["retry_policy"])
    if policy is not None and retries:
        raise config_error(owner, "give retries= or retry_policy=, not both")
    if policy is None and retries:
        policy = RetryPolicy.from_retries(retries)
    return StepSpec(
        name=_name(owner, options["name"], fn),
        description=_description(owner, options["description"], fn),
        retry_policy=policy,
        timeout=_OVERRIDABLE["timeout"](owner, options["timeout"]),
        cache=_bool(owner, "cache", options["cache"]),
        tags=check_tags(owner, options["tags"]),
        track=_OVERRIDABLE["track"](owner, options["track"]),
        circuit_breaker=options_.breaker(owner, options["circuit_breaker"]),
        streaming=streams.is_streaming(fn),
        fallback=fallbacks.check(owner, options["fallback"]),
        **options_.limits(owner, options),
    )


@overload
def step(fn: Callable[..., Any], /) -> Step: ...
@overload
def step(
    fn: None = None,
    /,
    *,
    name: str | None = ...,
    description: str | None = ...,
    retries: int = ...,
    retry_policy: RetryPolicy | None = ...,
    timeout: Any = ...,
    concurrency: str | None = ...,
    max_concurrency: int | None = ...,
    rate_limit: str | None = ...,
    circuit_breaker: Any = ...,
    cache: bool = ...,
    tags: Any = ...,
    track: bool = ...,
    fallback: Any = ...,
    provider: str | ProviderLimits | None = ...,
) -> Callable[[Callable[..., Any]], Step]: ...
def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    retries: int = 0,
    retry_policy: RetryPolicy | None = None,
    timeout: Any = None,
    concurrency: str | None = None,
    max_concurrency: int | None = None,
    rate_limit: str | None = None,
    circuit_breaker: Any = None,
    cache: bool = False,
    tags: Any = (),
    track: bool = True,
    fallback: Any = None,
    provider: str | ProviderLimits | None = None,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a step: a Prefect task run with retries and a timeout.

    ``retries=n`` is shorthand for ``RetryPolicy(max_attempts=n + 1)`` (exponential
    backoff from 0.5 s); ``timeout`` (seconds or ``timedelta``) bounds each attempt
    and raises ``TIMEOUT``; ``track=False`` runs inline without a task run, same
    policies. ``fallback`` (a value, or a callable given the error) is returned
    instead of raising after the last attempt fails; ``provider`` (a
    :class:`~beluga_flows.ProviderLimits` name, or one) makes every attempt take
    that provider's rpm / concurrency budgets. Bad options raise ``INVALID_CONFIG``
    here, not at run time.

    Example::

        @bf.step(retry_policy=bf.RetryPolicy(max_attempts=5), timeout=10)
        def fetch(url: str) -> bytes: ...

        @bf.step(provider="openai", retries=2, fallback=lambda err: "(no answer)")
        async def ask(q: str) -> str: ...
    """
    options = dict(
        name=name,
        description=description,
        retries=retries,
        retry_policy=retry_policy,
        timeout=timeout,
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        rate_limit=rate_limit,
        circuit_breaker=circuit_breaker,
        cache=cache,
        tags=tags,
        track=track,
        fallback=fallback,
        provider=provider,
    )

    def decorate(f: Callable[..., Any]) -> Step:
        _check_callable("step", f)
        return Step(f, _step_spec(f, options))

    return decorate if fn is None else decorate(fn)


def as_step(obj: Any, owner: str = "step") -> Runnable:
    """A chain or graph member: Runnables as they are, plain callables as tracked steps."""
    if isinstance(obj, Runnable):
        return obj
    _check_callable(owner, obj)
    made: Step = step(obj)
    return made


@overload
def flow(fn: Callable[..., Any], /) -> Flow: ...
@overload
def flow(
    fn: None = None,
    /,
    *,
    name: str | None = ...,
    description: str | None = ...,
    timeout: Any = ...,
    retries: int = ...,
    max_workers: int | None = ...,
    task_runner: Any = ...,
    tags: Any = ...,
    run_name: Any = ...,
) -> Callable[[Callable[..., Any]], Flow]: ...
def flow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: Any = None,
    retries: int = 0,
    max_workers: int | None = None,
    task_runner: Any = None,
    tags: Any = (),
    run_name: Any = None,
) -> Flow | Callable[[Callable[..., Any]], Flow]:
    """Make a function a flow: one Prefect flow run per call, visible in the UI.

    ``timeout`` bounds the run (``TIMEOUT``), ``retries`` re-runs a failed flow,
    ``max_workers`` bounds the steps running at once inside it, ``tags`` tag its
    flow runs. ``run_name`` names each run (a template of the parameters, or a
    callable returning the name) instead of Prefect's generated name: opt-in, as
    Prefect renames the run after creating it (two more API requests per run).

    Example::

        @bf.flow(timeout=60, run_name="nightly-{day}")
        def nightly(day: str) -> dict: ...
    """
    owner = "flow"

    def decorate(f: Callable[..., Any]) -> Flow:
        _check_callable(owner, f)
        workers = max_workers
        if workers is not None:
            positive_int(owner, "max_workers", workers, maximum=1000)
        spec = FlowSpec(
            name=_name(owner, name, f),
            description=_description(owner, description, f),
            timeout=seconds(owner, "timeout", timeout),
            retries=non_negative_int(owner, "retries", retries, maximum=20),
            max_workers=workers,
            task_runner=options_.task_runner(owner, task_runner),
            tags=check_tags(owner, tags),
            run_name=options_.run_name(owner, run_name),
        )
        return Flow(f, spec)

    return decorate if fn is None else decorate(fn)
