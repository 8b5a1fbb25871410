"""The async driver: how one call of a user function is carried out.

Everything here is written once, async. Sync entry points reach it through
:func:`run_sync` / :func:`sync_iter` at the edge; sync user functions run in a
worker thread (with the caller's context variables) so the event loop never blocks.
Worker threads are daemons (:mod:`beluga_flows._threads`): a call abandoned at its
timeout runs on in its thread without holding up other calls or the exit, and
:func:`retrying` never starts a retry beside it (:func:`may_retry`).

The middleware order for one step call is ``retry → timeout → call`` (telemetry,
breakers and limits wrap outside it). The local engine runs the whole stack; the
Prefect adapter lets Prefect do the retries (visible as task-run states) and runs
``timeout → call`` inside the task run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar

from beluga_flows._threads import Workers
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "RUN_LABEL",
    "Sleep",
    "call",
    "call_with_timeout",
    "flow_slot",
    "iterate_output",
    "may_retry",
    "retrying",
    "run_sync",
    "set_flow_limit",
    "sync_iter",
]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

# Threads are cheap while they sleep; a small pool would serialise parallel sync
# steps (the default executor has min(32, cpus + 4) = 6 threads here). Threads are
# created on demand only; abandoned calls do not count against the 256.
_workers = Workers(limit=256, prefix="beluga")

# The event loop that owns the current run, so sync code in a worker thread can
# hand coroutines back to it instead of starting a second loop.
_HOME_LOOP: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "beluga_home_loop", default=None
)
# The display name of the next step run (a graph sets "<node>-<iteration>").
RUN_LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "beluga_run_label", default=None
)
# Bound on concurrently executing steps inside one flow run (@flow(max_workers=N)).
_FLOW_LIMIT: contextvars.ContextVar[asyncio.Semaphore | None] = contextvars.ContextVar(
    "beluga_flow_limit", default=None
)


# ---------------------------------------------------------------- calling user code


async def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a user function: await it if async, else run it in a worker thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    ctx = _thread_context(asyncio.get_running_loop())
    result = await _in_thread(_workers.submit(lambda: ctx.run(fn, *args, **kwargs)))
    if inspect.isawaitable(result):  # a sync callable that returned a coroutine
        return await result
    return result


async def _in_thread(job: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """Wait for a worker thread's ``job``; a caller that stops waiting (a timeout,
    a cancel) abandons it, so it no longer takes a worker's place."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(job), timeout)
    except BaseException:
        _workers.abandon(job)
        raise


def _thread_context(loop: asyncio.AbstractEventLoop) -> contextvars.Context:
    """The caller's context for a worker thread, with ``loop`` as its home loop."""
    ctx = contextvars.copy_context()
    ctx.run(_HOME_LOOP.set, loop)
    return ctx


def _run_on_private_loop(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], holder: dict[str, Any]
) -> Any:
    loop = asyncio.new_event_loop()
    holder["loop"] = loop
    _HOME_LOOP.set(loop)
    try:
        task = loop.create_task(fn(*args, **kwargs))
        holder["task"] = task
        return loop.run_until_complete(task)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def call_with_timeout(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    *,
    op: str,
    name: str,
    preempt: bool = True,
) -> Any:
    """:func:`call` bounded by ``timeout`` seconds, raising ``TIMEOUT`` at the deadline.

    The deadline holds even for code that does not cooperate: a sync function is
    abandoned in its worker thread (it runs to completion, its result is dropped);
    an async function runs on a private event loop in a worker thread so that one
    that blocks cannot stall the caller, and is cancelled at its next ``await``.
    With ``preempt=False`` an async function stays on the caller's loop and is
    cancelled cooperatively (flow bodies: they only orchestrate). A ``TIMEOUT``
    whose call still runs in its thread remembers it, for :func:`may_retry`.
    """
    if timeout is None:
        return await call(fn, args, kwargs)
    loop = asyncio.get_running_loop()
    ctx = _thread_context(loop)
    holder: dict[str, Any] = {}
    job: concurrent.futures.Future[Any] | None = None
    if inspect.iscoroutinefunction(fn) and not preempt:
        waiting: Awaitable[Any] = asyncio.wait_for(fn(*args, **kwargs), timeout)
    else:
        thunk = (
            functools.partial(_run_on_private_loop, fn, args, kwargs, holder)
            if inspect.iscoroutinefunction(fn)
            else functools.partial(fn, *args, **kwargs)
        )
        job = _workers.submit(lambda: ctx.run(thunk))
        waiting = _in_thread(job, timeout)
    try:
        result = await waiting
    except TimeoutError:
        private, task = holder.get("loop"), holder.get("task")
        if private is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: it finished
                private.call_soon_threadsafe(task.cancel)
        err = OrchestratorError(
            op, f"{name!r} timed out after {timeout:g}s", ErrorCode.TIMEOUT, step=name
        )
        if job is not None and not job.done():
            err._abandoned = (job, timeout)  # type: ignore[attr-defined]
        raise err from None
    if inspect.isawaitable(result):
        return await asyncio.wait_for(result, timeout)
    return result


class RetryDecision(Protocol):
    """What :func:`retrying` asks of a policy (:class:`~beluga_flows.resilience.retry.RetryPolicy`
    answers it); a protocol, so this bottom layer does not import the resilience layer."""

    def next_delay(
        self, attempt: int, err: BaseException, rng: random.Random | None = None
    ) -> float | None:
        """Seconds before attempt ``attempt + 1``, or ``None`` to give up."""


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryDecision | None,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``attempt`` under ``policy``; the error that ends it carries ``.attempts``."""
    n = 1
    while True:
        try:
            return await attempt()
        except Exception as err:
            delay = policy.next_delay(n, err, rng) if policy is not None else None
            if delay is None or not await may_retry(err):
                _set_attempts(err, n)
                raise
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


def _set_attempts(err: BaseException, attempts: int) -> None:
    with contextlib.suppress(AttributeError, TypeError):  # exotic exceptions with __slots__
        err.attempts = attempts  # type: ignore[attr-defined]


# ---------------------------------------------------------------- flow-level limits


def set_flow_limit(max_workers: int | None) -> contextvars.Token[asyncio.Semaphore | None]:
    """Bound the steps that run at once inside the current flow run."""
    return _FLOW_LIMIT.set(asyncio.Semaphore(max_workers) if max_workers else None)


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


# ---------------------------------------------------------------- the sync edge


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _submit_to(loop: asyncio.AbstractEventLoop, factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on ``loop`` (another thread's) in the caller's context."""
    ctx = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        async def main() -> T:
            return await factory()

        task = loop.create_task(main(), context=ctx)

        def finish(t: asyncio.Task[T]) -> None:
            if t.cancelled():
                done.cancel()
            elif t.exception() is not None:
                done.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                done.set_result(t.result())

        task.add_done_callback(finish)

    loop.call_soon_threadsafe(start)
    return done.result()


async def _as_home(factory: Callable[[], Awaitable[T]]) -> T:
    token = _HOME_LOOP.set(asyncio.get_running_loop())
    try:
        return await factory()
    finally:
        _HOME_LOOP.reset(token)


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run async work from sync code and return its result.

    In a worker thread of a running beluga run, the work goes back to that run's
    event loop (so Prefect's run context and client are shared). With no loop
    anywhere, it gets a fresh loop. Called synchronously *on* a running loop, it
    runs on a private loop in a worker thread rather than deadlock.
    """
    if not _in_running_loop():
        home = _HOME_LOOP.get()
        if home is not None and home.is_running() and not home.is_closed():
            return _submit_to(home, factory)
        return asyncio.run(_as_home(factory))
    ctx = contextvars.copy_context()
    return _workers.submit(lambda: ctx.run(lambda: asyncio.run(_as_home(factory)))).result()


_DONE = object()


def sync_iter(factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Drive an async iterator from sync code, one item at a time."""
    if _in_running_loop():
        # Sync streaming on a loop thread cannot interleave: buffer on a private loop.
        yield from run_sync(lambda: _collect(factory()))
        return
    home = _HOME_LOOP.get()
    if home is not None and home.is_running():

        def step_home(it: AsyncIterator[T]) -> Any:
            return _submit_to(home, lambda: _next(it))

        agen = factory()
        while (item := step_home(agen)) is not _DONE:
            yield item
        return
    with asyncio.Runner() as runner:
        agen = runner.run(_as_home(lambda: _make(factory)))
        while (item := runner.run(_as_home(lambda: _next(agen)))) is not _DONE:
            yield item


async def _make(factory: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
    return factory()


async def _next(it: AsyncIterator[T]) -> Any:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return _DONE


async def _collect(it: AsyncIterator[T]) -> list[T]:
    return [item async for item in it]


async def iterate_output(output: Any) -> AsyncIterator[Any]:
    """Stream a result: items of an (async) iterator, else the value once."""
    if hasattr(output, "__aiter__"):
        async for item in output:
            yield item
    elif isinstance(output, Iterator):
        for item in output:
            yield item
    else:
        yield output
