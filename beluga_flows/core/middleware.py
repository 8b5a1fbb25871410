"""The middleware stack: how one call of a user function is carried out, written once.

Every step call — a bare step, a graph node, a chain member, a workflow step, on
every engine — goes through the same layers::

    telemetry ─▶ fallback ─▶ retry ─▶ circuit breaker ─▶ limits ─▶ timeout ─▶ your function

* **telemetry** (:func:`observed`) is outermost: one ``step`` span per call
  (``step.name``, ``step.engine``, ``step.attempts``, ``step.status``), the
  ``step.executions`` / ``step.errors`` / ``step.duration`` metrics, and
  ``step.retries`` plus a ``retry`` span event from the retry layer
  (:func:`note_retry`). This module decides where they go;
  :mod:`beluga_flows.telemetry` knows how to record them. Chains and graphs add their
  ``chain.step`` / ``graph.node`` span around it through :func:`run_member`, the one
  way a chain, graph, router or scatter/gather runs a member.
* **fallback** (:mod:`beluga_flows.resilience.fallback`): a step's ``fallback=``
  stands in for the error that ends the call (on Prefect, the last task-run attempt
  applies it, and the adapter knows which one is last).
* **retry** (:func:`retrying`) wraps each attempt, so the breaker, the limits and the
  timeout apply per attempt: a retry *waits* for a breaker to recover or a slot to
  free up (both codes are retryable), a slot held across a backoff would starve other
  calls, and on Prefect every attempt is a task run that must hold its own slot.
  On Prefect the retries are Prefect's task-run retries (visible as *Retrying*
  states): the policy decides (:func:`retry_decision`, called from the adapter's
  ``retry_condition_fn``), Prefect carries it out.
* **breaker → limits → timeout → call** is :func:`guarded_call`; the limits are the
  engine's (Prefect's global ones, or in-process).
* **call** goes through :func:`beluga_flows.core.streams.drainer`: a streaming step's
  generator is iterated there (chunks streamed live, whole generation timed).

One retry loop (:func:`retrying`, also used by chain, graph and flow retries) and one
timeout mechanism (:func:`call_with_timeout`, also the chain's and a flow body's).
The graph's own deadline stays in its driver loop: it is a deadline on a scheduler
that must report which nodes were still running, not on one call.

With no OpenTelemetry SDK installed the telemetry layer costs two attribute reads
(:func:`beluga_flows.telemetry.observed`): a policy-free inline step stays a plain
function call (the bench's inline chain: ~1-2 µs per step).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from beluga_flows import _sync, telemetry
from beluga_flows._digest import digest
from beluga_flows.core.hooks import Hooks, run_hooked
from beluga_flows.core.specs import FlowLike, StepLike
from beluga_flows.core.streams import drainer
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.resilience import fallback, providers
from beluga_flows.resilience.breaker import get_breaker
from beluga_flows.resilience.retry import RetryPolicy

if TYPE_CHECKING:
    from beluga_flows.engine.base import Engine, Sleep

__all__ = [
    "RUN_LABEL",
    "call",
    "call_with_timeout",
    "flow_slot",
    "guarded_call",
    "may_retry",
    "note_retry",
    "observed",
    "retry_decision",
    "retrying",
    "run_flow_body",
    "run_inline",
    "run_member",
    "set_attempts",
]

T = TypeVar("T")

# The display name of the next step run (a graph sets "<node>-<iteration>").
RUN_LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "beluga_run_label", default=None
)
# Bound on concurrently executing steps inside one flow run (@flow(max_workers=N)).
_FLOW_LIMIT: contextvars.ContextVar[asyncio.Semaphore | None] = contextvars.ContextVar(
    "beluga_flow_limit", default=None
)
_MISS = object()
# The in-process results of cache=True steps run inline, per step (weakly: a step
# that is gone takes its results with it; nothing is written onto the user's step).
_MEMO: weakref.WeakKeyDictionary[StepLike, dict[str, Any]] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------- the call


async def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a user function: await it if async, else run it in a worker thread (a
    generator function streams its chunks: :func:`beluga_flows.core.streams.drainer`)."""
    fn = drainer(fn)
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    ctx = _sync.thread_context(asyncio.get_running_loop())
    result = await _sync.in_thread(_sync.workers.submit(lambda: ctx.run(fn, *args, **kwargs)))
    if inspect.isawaitable(result):  # a sync callable that returned a coroutine
        return await result
    return result


async def call_with_timeout(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    *,
    op: str,
    name: str,
    preempt: bool = True,
    what: str | None = None,
) -> Any:
    """:func:`call` bounded by ``timeout`` seconds, raising ``TIMEOUT`` at the deadline.

    The deadline holds even for code that does not cooperate: a sync function is
    abandoned in its worker thread (it runs to completion, its result is dropped);
    an async function runs on a private event loop in a worker thread so that one
    that blocks cannot stall the caller, and is cancelled at its next ``await``.
    With ``preempt=False`` an async function stays on the caller's loop and is
    cancelled cooperatively (flow and chain bodies: they only orchestrate). A
    ``TIMEOUT`` whose call still runs in its thread remembers it, for
    :func:`may_retry`. The message names ``what`` (default: ``name`` quoted).
    """
    if timeout is None:
        return await call(fn, args, kwargs)
    fn = drainer(fn)  # a streaming step: the timeout bounds the whole generation
    ctx = _sync.thread_context(asyncio.get_running_loop())
    holder: dict[str, Any] = {}
    job: concurrent.futures.Future[Any] | None = None
    if inspect.iscoroutinefunction(fn) and not preempt:
        waiting: Awaitable[Any] = asyncio.wait_for(fn(*args, **kwargs), timeout)
    else:
        thunk = (
            functools.partial(_sync.run_on_private_loop, fn, args, kwargs, holder)
            if inspect.iscoroutinefunction(fn)
            else functools.partial(fn, *args, **kwargs)
        )
        job = _sync.workers.submit(lambda: ctx.run(thunk))
        waiting = _sync.in_thread(job, timeout)
    try:
        result = await waiting
    except asyncio.CancelledError:
        _sync.cancel_private(holder)  # the caller gave up (a hedge's loser …): so does the call
        raise
    except TimeoutError:
        _sync.cancel_private(holder)
        label = what if what is not None else repr(name)
        err = OrchestratorError(
            op,
            f"{label} timed out after {timeout:g}s",
            ErrorCode.TIMEOUT,
            **({"step": name} if what is None else {}),
        )
        if job is not None and not job.done():
            err._abandoned = (job, timeout)  # type: ignore[attr-defined]
        raise err from None
    if inspect.isawaitable(result):
        return await asyncio.wait_for(result, timeout)
    return result


# ---------------------------------------------------------------- retry


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy | None,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """Run ``attempt`` under ``policy`` (the one retry loop); the error that ends it
    carries ``.attempts``. ``on_retry(err, delay)`` hears of each retry."""
    n = 1
    while True:
        try:
            return await attempt()
        except Exception as err:
            delay = policy.next_delay(n, err, rng) if policy is not None else None
            if delay is None or not await may_retry(err):
                set_attempts(err, n)
                raise
            if on_retry is not None:
                on_retry(err, delay)
            await sleep(delay)
            n += 1


async def may_retry(err: BaseException) -> bool:
    """Whether a retry may follow the attempt that raised ``err``: not while the
    call it timed out still runs in its thread (the two would overlap). That call
    gets one more timeout to end; if it does not, ``err`` says why it is final."""
    abandoned = getattr(err, "_abandoned", None)
    if abandoned is None:
        return True
    job, grace = abandoned
    waiter = asyncio.wrap_future(job)
    await asyncio.wait([waiter], timeout=grace)
    if not waiter.done():
        waiter.cancel()
        if isinstance(err, OrchestratorError):
            err.message += (
                "; not retried: the timed-out call still runs in its thread "
                "and a retry would run beside it"
            )
        return False
    if not waiter.cancelled():
        waiter.exception()  # its outcome was dropped at the timeout: not an error here
    del err._abandoned  # type: ignore[attr-defined]
    return True


async def retry_decision(policy: RetryPolicy, name: str, err: BaseException | None) -> bool:
    """The policy's answer for an engine that carries retries out itself (Prefect's
    ``retry_condition_fn``): retry ``err``? A yes is counted like a local retry."""
    # Never a retry beside a timed-out call that still runs (as the local loop).
    if err is None or not policy.should_retry(err) or not await may_retry(err):
        return False
    note_retry(name, err, None)
    return True


def set_attempts(err: BaseException, attempts: int) -> None:
    """Tell the error how many attempts were made."""
    with contextlib.suppress(AttributeError, TypeError):  # exotic exceptions with __slots__
        err.attempts = attempts  # type: ignore[attr-defined]


# ---------------------------------------------------------------- telemetry


def note_retry(name: str, err: BaseException, delay: float | None) -> None:
    """The retry layer's report to the telemetry layer: one more attempt of ``name``."""
    telemetry.step_retried(name, err, delay)


def observed(engine: Engine, name: str, body: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    """The telemetry layer around one step call: ``body()`` inside a ``step`` span
    with the step metrics (:func:`beluga_flows.telemetry.observe_step`); just
    ``body()`` when nobody records them."""
    if not telemetry.observed():
        return body()
    return telemetry.observe_step(name, engine.name, body)


# ---------------------------------------------------------------- the stack


async def run_inline(
    engine: Engine,
    step: StepLike,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    observe: bool = True,
    fall_back: bool = True,
) -> Any:
    """A step call in-process, without a task run: the whole stack (``observe=False``:
    the telemetry layer is already around it; ``fall_back=False``: the fallback layer)."""
    spec = step.spec
    if observe and telemetry.observed():
        return await telemetry.observe_step(
            spec.name,
            engine.name,
            lambda: run_inline(engine, step, args, kwargs, observe=False),
        )
    if fall_back and spec.fallback is not None:
        inner = functools.partial(run_inline, engine, step, args, kwargs, observe=False)
        return await fallback.guard(spec.name, spec.fallback, lambda: inner(fall_back=False))
    unbounded = _FLOW_LIMIT.get() is None
    if spec.plain and unbounded:  # the hot path of inline glue steps
        if step.is_async:
            return await step.fn(*args, **kwargs)
        return await call(step.fn, args, kwargs)
    key = digest(args, kwargs) if spec.cache else None
    if key is not None and (hit := _MEMO.get(step, {}).get(key, _MISS)) is not _MISS:
        return hit
    if spec.retry_policy is None and unbounded:
        result = await guarded_call(engine, step, args, kwargs)
    else:
        async with flow_slot():
            result = await retrying(
                lambda: guarded_call(engine, step, args, kwargs),
                spec.retry_policy,
                sleep=providers.retry_sleep(engine.sleep, spec.provider),
                rng=engine.rng,
                on_retry=functools.partial(note_retry, spec.name),
            )
    if key is not None:
        _MEMO.setdefault(step, {})[key] = result
    return result


async def guarded_call(
    engine: Engine, step: StepLike, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """One attempt of a step call: ``breaker → limits → timeout → call`` (the retry
    wraps it: a local loop, or a Prefect task run's retries)."""
    spec = step.spec

    async def timed() -> Any:
        if spec.timeout is None and step.is_async and not spec.streaming:
            return await step.fn(*args, **kwargs)
        return await call_with_timeout(
            step.fn, args, kwargs, spec.timeout, op="step", name=spec.name
        )

    async def limited() -> Any:
        if not spec.limited:
            return await timed()
        async with engine.limits(spec):
            return await timed()

    named = spec.circuit_breaker
    if named is None:
        return await limited()
    breaker = get_breaker(named) if isinstance(named, str) else named
    return await breaker.call(limited)


async def run_member(
    engine: Engine,
    member: Any,
    value: Any,
    site: str | None,
    attrs: Mapping[str, Any],
    hooks: Hooks | None = None,
) -> Any:
    """Run one member of a chain, graph, router or scatter/gather on ``value``: a
    step through ``engine.run_step`` (the stack above), any other Runnable through
    its ``ainvoke``, inside a ``site`` span (``chain.step``, ``graph.node``; none
    when ``site`` is ``None``: a router's member runs inside its node's span).
    ``hooks`` (a chain's or graph's :class:`~beluga_flows.core.hooks.Hooks`) run
    around it (and its span), named ``attrs["step.name"]``."""
    if hooks is not None:
        name = str(attrs.get("step.name", getattr(member, "name", "?")))
        return await run_hooked(
            hooks, name, value, lambda: run_member(engine, member, value, site, attrs)
        )
    if site is None or not telemetry.tracing_enabled():
        return await _member(engine, member, value)
    with telemetry.span(site, **attrs):
        return await _member(engine, member, value)


def _member(engine: Engine, member: Any, value: Any) -> Awaitable[Any]:
    # A step: what carries a step spec and its function. Duck-typed because StepSpec
    # lives above this module until core/specs.py holds it (then: isinstance).
    spec = getattr(member, "spec", None)
    if spec is not None and hasattr(spec, "retry_policy") and hasattr(member, "fn"):
        return engine.run_step(member, (value,), {})
    return member.ainvoke(value)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- flow bodies


@contextlib.asynccontextmanager
async def flow_slot() -> AsyncIterator[None]:
    """Hold one of the current flow's ``max_workers`` slots (free when unbounded)."""
    sem = _FLOW_LIMIT.get()
    if sem is None:
        yield
        return
    # A step inside a step must not wait for its own parent's slot.
    token = _FLOW_LIMIT.set(None)
    try:
        async with sem:
            yield
    finally:
        _FLOW_LIMIT.reset(token)


async def run_flow_body(flow: FlowLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A ``@flow`` body with its timeout and its ``max_workers`` bound on steps."""
    spec = flow.spec
    token = _FLOW_LIMIT.set(asyncio.Semaphore(spec.max_workers) if spec.max_workers else None)
    try:
        return await call_with_timeout(
            flow.fn, args, kwargs, spec.timeout, op="flow", name=spec.name, preempt=False
        )
    finally:
        _FLOW_LIMIT.reset(token)
