"""Live streams: where a graph's updates, a streaming step's chunks and ``emit`` go.

A *sink* is what a stream's consumer reads: an :class:`asyncio.Queue` on the
consumer's loop, put in a context variable around the run being streamed
(:func:`live`). Everything that runs inside that run — graph nodes, steps, their
worker threads, a private loop a timeout runs a step on, Prefect task runs (they
run on the caller's loop, in its context) — finds the sink there and pushes into
it; a push from another thread goes through ``loop.call_soon_threadsafe``, so it
arrives after everything that thread pushed before, and before the thread's result.
With nobody streaming the context variable is ``None`` and a push is one lookup.

A **streaming step** is a generator function (async or sync) under ``@bf.step``.
:func:`drainer` is the one place that turns one into a plain function: it iterates
the generator, pushes each chunk to ``stream_mode="messages"`` as
``(node_name, chunk)`` as it is yielded, and returns the chunks (:func:`joined`).
The middleware stack calls every user function through it, so retries (a new
generator per attempt), the timeout (over the whole generation), limits and the
breaker apply as to any step.

Example::

    @bf.step
    async def llm(prompt: str):
        for token in ("Hello", ", ", "world"):
            yield token                    # streamed live to stream_mode="messages"

    await llm("hi")                        # "Hello, world"
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any

from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "MODES",
    "NODE",
    "Sink",
    "claim",
    "drainer",
    "emit",
    "is_streaming",
    "joined",
    "live",
    "stream_modes",
]

MODES = ("values", "updates", "custom", "messages")
# What a nested stream passes on to the stream around it (a graph's own updates
# and values belong to that graph's stream only).
_FORWARDED = frozenset({"custom", "messages"})
_END = object()

# The sink of the stream the caller runs inside, if any.
_SINK: contextvars.ContextVar[Sink | None] = contextvars.ContextVar("beluga_sink", default=None)
# The graph node the caller runs inside: what a chunk is reported under.
NODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("beluga_node", default=None)


class Sink:
    """The queue of one live stream, fed from any thread, read on its own loop."""

    def __init__(self, modes: Iterable[str], parent: Sink | None = None, *, own_only: bool = False):
        self.modes = frozenset(modes)
        self.parent = parent
        self.own_only = own_only  # only the chunks of the streamed step itself
        self.claimed = False
        self.closed = False
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def push(self, mode: str, payload: Any) -> None:
        """Send ``payload`` to the consumer if it reads ``mode`` (from any thread)."""
        if mode in self.modes and not self.closed:
            if threading.get_ident() == self._thread:
                self.queue.put_nowait((mode, payload))
            else:
                with contextlib.suppress(RuntimeError):  # the consumer's loop is gone
                    self._loop.call_soon_threadsafe(self._put, (mode, payload))
        if self.parent is not None and mode in _FORWARDED:
            self.parent.push(mode, payload)

    def _put(self, item: Any) -> None:
        if not self.closed:
            self.queue.put_nowait(item)

    def node_finished(self, node: str, update: Any, state: dict[str, Any]) -> None:
        """A graph node's update was merged into ``state`` (called by the graph driver
        on the loop thread)."""
        if "updates" in self.modes:
            self.push("updates", (node, dict(update) if update else {}))
        if "values" in self.modes:
            self.push("values", dict(state))


def emit(value: Any) -> None:
    """Send ``value`` to the ``stream_mode="custom"`` consumer of the graph being
    streamed; nothing (one context lookup) when nobody streams.

    Call it from a node, or from a step (sync or async, tracked or not) running
    inside one. LangGraph's ``get_stream_writer()(value)``.

    Example::

        def search(state: dict) -> dict:
            bf.emit({"progress": 0.5})
            return {"hits": [...]}

        for event in graph.stream({}, stream_mode="custom"):
            print(event)                      # {"progress": 0.5}
    """
    sink = _SINK.get()
    if sink is not None:
        sink.push("custom", value)


def claim() -> Sink | None:
    """The sink a graph run pushes its updates and values to: the one it is
    streamed into, claimed by the outermost graph (a nested graph gets ``None``)."""
    sink = _SINK.get()
    if sink is None or sink.claimed or not sink.modes & {"updates", "values"}:
        return None
    sink.claimed = True
    return sink


def stream_modes(value: Any) -> tuple[frozenset[str], bool]:
    """``stream_mode`` checked: the modes, and whether one was named alone (its
    payloads are yielded bare; with a list, ``(mode, payload)`` pairs)."""
    single = isinstance(value, str)
    modes = [value] if single else value
    try:
        modes = list(modes)
    except TypeError:
        modes = [value]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise OrchestratorError(
            "graph",
            f"stream_mode must be one of {list(MODES)} or a list of them, got {value!r}",
            ErrorCode.INVALID_CONFIG,
        )
    return frozenset(modes), single


async def live(
    run: Callable[[], Awaitable[Any]], modes: Iterable[str], *, own_only: bool = False
) -> AsyncGenerator[tuple[str, Any], None]:
    """Run ``run()`` in a background task with a sink for ``modes`` and yield
    ``(mode, payload)`` while it runs; its error is raised after what came before it.

    A consumer that stops early (``break``, ``aclose()``, cancellation) cancels the
    run and waits for it to end. ``own_only``: the chunks of streaming steps called
    *by* the streamed step go to the outer stream only (``Step.astream``).
    """
    sink = Sink(modes, _SINK.get(), own_only=own_only)
    ctx = contextvars.copy_context()
    ctx.run(_SINK.set, sink)
    task = asyncio.get_running_loop().create_task(_called(run), context=ctx)
    task.add_done_callback(lambda _: sink.queue.put_nowait(_END))
    try:
        while (item := await sink.queue.get()) is not _END:
            yield item
        task.result()
    finally:
        sink.closed = True
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # seen here: no "exception was never retrieved"


async def _called(run: Callable[[], Awaitable[Any]]) -> Any:
    return await run()


# ---------------------------------------------------------------- streaming steps


def is_streaming(fn: Any) -> bool:
    """Whether ``fn`` is a generator function (async or sync): a streaming step."""
    return inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn)


def joined(chunks: list[Any]) -> Any:
    """A streaming step's value: its chunks, or their concatenation when every
    chunk is a ``str`` (a step that yielded nothing returns ``[]``)."""
    if chunks and all(type(c) is str for c in chunks):
        return "".join(chunks)
    return chunks


def drainer(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as the middleware calls it: a generator function becomes a function
    (a coroutine function for an async generator) that streams its chunks and
    returns them (:func:`joined`); any other function is returned as it is."""
    if inspect.isasyncgenfunction(fn):
        return functools.partial(_drain_async, fn)
    if inspect.isgeneratorfunction(fn):
        return functools.partial(_drain_sync, fn)
    return fn


def _target(fn: Callable[..., Any]) -> tuple[Sink | None, Sink | None, str]:
    """Where this generator's chunks go, the sink its body runs with, and its name."""
    sink = _SINK.get()
    inner = sink.parent if sink is not None and sink.own_only else sink
    return sink, inner, NODE.get() or str(getattr(fn, "__name__", "step"))


async def _drain_async(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    sink, inner, node = _target(fn)
    token = _SINK.set(inner) if inner is not sink else None
    chunks: list[Any] = []
    gen = fn(*args, **kwargs)
    try:
        async for chunk in gen:
            chunks.append(chunk)
            if sink is not None:
                sink.push("messages", (node, chunk))
    finally:
        await gen.aclose()  # a cancelled or failed run ends the generator now
        if token is not None:
            _SINK.reset(token)
    return joined(chunks)


def _drain_sync(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    sink, inner, node = _target(fn)
    token = _SINK.set(inner) if inner is not sink else None
    chunks: list[Any] = []
    gen = fn(*args, **kwargs)
    try:
        for chunk in gen:
            chunks.append(chunk)
            if sink is not None:
                sink.push("messages", (node, chunk))
    finally:
        gen.close()
        if token is not None:
            _SINK.reset(token)
    return joined(chunks)
