"""The one sync/async bridge: worker threads, the home loop, ``run_sync``, ``sync_iter``.

Everything in beluga_flows is written once, async. Sync entry points reach it
through :func:`run_sync` / :func:`sync_iter` at the edge; sync user functions run in
a worker thread (:func:`in_thread`, with the caller's context variables) so the event
loop never blocks. Worker threads are daemons (:mod:`beluga_flows._threads`): a call
abandoned at its timeout runs on in its thread without holding up other calls or the
exit. How a call is carried out (timeout, retry, breaker, limits, telemetry) is
:mod:`beluga_flows.core.middleware`'s business; this module only moves work between
threads and loops.

Example::

    value = run_sync(lambda: chain.ainvoke(x))      # from sync code, any thread
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from beluga_flows._threads import Workers

__all__ = [
    "cancel_private",
    "in_running_loop",
    "in_thread",
    "iterate_output",
    "run_on_private_loop",
    "run_sync",
    "settled",
    "sync_iter",
    "thread_context",
    "workers",
]

T = TypeVar("T")

# Threads are cheap while they sleep; a small pool would serialise parallel sync
# steps (the default executor has min(32, cpus + 4) = 6 threads here). Threads are
# created on demand only; abandoned calls do not count against the 256.
workers = Workers(limit=256, prefix="beluga")

# The event loop that owns the current run, so sync code in a worker thread can
# hand coroutines back to it instead of starting a second loop.
_HOME_LOOP: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "beluga_home_loop", default=None
)


# ---------------------------------------------------------------- worker threads


async def in_thread(job: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """Wait for a worker thread's ``job``; a caller that stops waiting (a timeout,
    a cancel) abandons it, so it no longer takes a worker's place."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(job), timeout)
    except BaseException:
        workers.abandon(job)
        raise


def thread_context(loop: asyncio.AbstractEventLoop) -> contextvars.Context:
    """The caller's context for a worker thread, with ``loop`` as its home loop."""
    ctx = contextvars.copy_context()
    ctx.run(_HOME_LOOP.set, loop)
    return ctx


def run_on_private_loop(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], holder: dict[str, Any]
) -> Any:
    """Run async ``fn`` to completion on a new loop in this (worker) thread; the loop
    and its task are left in ``holder`` so another thread can cancel it
    (:func:`cancel_private`)."""
    loop = asyncio.new_event_loop()
    holder["loop"] = loop
    _HOME_LOOP.set(loop)
    try:
        task = loop.create_task(fn(*args, **kwargs))
        holder["task"] = task
        if holder.get("cancelled"):  # cancelled before the task existed: see cancel_private
            task.cancel()
        return loop.run_until_complete(task)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def cancel_private(holder: dict[str, Any]) -> None:
    """Cancel a call :func:`run_on_private_loop` runs (a no-op once it finished).

    The flag covers a call whose task does not exist yet: it cancels it as it starts.
    """
    holder["cancelled"] = True
    private, task = holder.get("loop"), holder.get("task")
    if private is not None and task is not None:
        with contextlib.suppress(RuntimeError):  # loop already closed: it finished
            private.call_soon_threadsafe(task.cancel)


# ---------------------------------------------------------------- the sync edge


def in_running_loop() -> bool:
    """Whether the calling thread is running an event loop."""
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
    if not in_running_loop():
        home = _HOME_LOOP.get()
        if home is not None and home.is_running() and not home.is_closed():
            return _submit_to(home, factory)
        return asyncio.run(_as_home(factory))
    ctx = contextvars.copy_context()
    return workers.submit(lambda: ctx.run(lambda: asyncio.run(_as_home(factory)))).result()


_DONE = object()


def sync_iter(factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Drive an async iterator from sync code, one item at a time."""
    if in_running_loop():
        # Sync streaming on a loop thread cannot interleave: buffer on a private loop.
        yield from run_sync(lambda: _collect(factory()))
        return
    home = _HOME_LOOP.get()
    if home is not None and home.is_running():

        def step_home(it: AsyncIterator[T]) -> Any:
            return _submit_to(home, lambda: _next(it))

        agen = factory()
        try:
            while (item := step_home(agen)) is not _DONE:
                yield item
        finally:  # a consumer that stops early closes the stream (it cancels its run)
            _submit_to(home, lambda: _close(agen))
        return
    with asyncio.Runner() as runner:
        agen = runner.run(_as_home(lambda: _make(factory)))
        try:
            while (item := runner.run(_as_home(lambda: _next(agen)))) is not _DONE:
                yield item
        finally:
            runner.run(_close(agen))


async def _make(factory: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
    return factory()


async def _next(it: AsyncIterator[T]) -> Any:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return _DONE


async def _close(it: AsyncIterator[Any]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


async def _collect(it: AsyncIterator[T]) -> list[T]:
    return [item async for item in it]


async def settled(value: Any) -> Any:
    """``value``, awaited first if it is awaitable: what a callback that may be sync
    or async (a hook, a router, a fallback, a ``done`` test) returns in the end."""
    if inspect.isawaitable(value):
        return await value
    return value


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
