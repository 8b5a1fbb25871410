"""Runnable: the one interface shared by steps, chains, graphs and workflow definitions.

Subclasses implement :meth:`Runnable.ainvoke` (and may override
:meth:`Runnable.astream`); the sync methods and batching come from here, written once.

``a | b`` builds a :class:`~beluga_flows.Chain`, yet the core sits *below* the graph
layer that defines chains. So the dependency is inverted: :mod:`beluga_flows.graph.chain`
registers its pipe constructor here (:func:`register_pipe`) when it is imported, and
``import beluga_flows`` always imports it (as does importing any submodule, which
runs the package's ``__init__`` first). The core never imports the graph.

Example::

    >>> import beluga_flows as bf
    >>> @bf.step(track=False)
    ... def double(x): return 2 * x
    >>> double.batch([1, 2, 3])
    [2, 4, 6]
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from beluga_flows import _sync
from beluga_flows._validate import positive_int
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["Runnable", "register_pipe"]

# ``left | right`` → a chain; set by beluga_flows.graph.chain (see the module docstring).
_PIPE: list[Callable[[Any, Any], Runnable]] = []


def register_pipe(pipe: Callable[[Any, Any], Runnable]) -> None:
    """Make ``pipe(left, right)`` what ``left | right`` returns (the chain module's
    ``Chain.pipe``, registered as it is imported)."""
    _PIPE[:] = [pipe]


def _pipe(left: Any, right: Any) -> Runnable:
    if not _PIPE:  # only when beluga_flows.graph.chain could not be imported
        raise OrchestratorError(
            "runnable", "`|` needs beluga_flows.graph.chain imported", ErrorCode.INVALID_STATE
        )
    return _PIPE[0](left, right)


class Runnable(abc.ABC):
    """Something that turns an input into an output: ``invoke``, ``batch``, ``stream``
    (and their async twins), composable with ``|`` into a :class:`~beluga_flows.Chain`.
    """

    name: str

    @abc.abstractmethod
    async def ainvoke(self, input: Any, **opts: Any) -> Any:
        """Run once on ``input`` and return the output."""

    def invoke(self, input: Any, **opts: Any) -> Any:
        """Sync :meth:`ainvoke`."""
        return _sync.run_sync(lambda: self.ainvoke(input, **opts))

    async def abatch(
        self,
        inputs: Iterable[Any],
        *,
        return_exceptions: bool = False,
        max_concurrency: int | None = None,
        **opts: Any,
    ) -> list[Any]:
        """Run on every input concurrently; results in input order.

        With ``return_exceptions=True`` a failed item is its exception; otherwise
        the first failure (by position) is raised once all items have settled.
        """
        items = list(inputs)
        if max_concurrency is not None:
            positive_int("batch", "max_concurrency", max_concurrency)
        sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None

        async def one(item: Any) -> Any:
            if sem is None:
                return await self.ainvoke(item, **opts)
            async with sem:
                return await self.ainvoke(item, **opts)

        results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancellation is never an item result
        if not return_exceptions:
            for r in results:
                if isinstance(r, Exception):
                    raise r
        return results

    def batch(
        self,
        inputs: Iterable[Any],
        *,
        return_exceptions: bool = False,
        max_concurrency: int | None = None,
        **opts: Any,
    ) -> list[Any]:
        """Sync :meth:`abatch`."""
        return _sync.run_sync(
            lambda: self.abatch(
                inputs, return_exceptions=return_exceptions, max_concurrency=max_concurrency, **opts
            )
        )

    async def astream(self, input: Any, **opts: Any) -> AsyncIterator[Any]:
        """Yield the output; an output that is itself an iterator is yielded item by item."""
        output = await self.ainvoke(input, **opts)
        async for item in _sync.iterate_output(output):
            yield item

    def stream(self, input: Any, **opts: Any) -> Iterator[Any]:
        """Sync :meth:`astream`."""
        return _sync.sync_iter(lambda: self.astream(input, **opts))

    def __or__(self, other: Any) -> Runnable:
        return _pipe(self, other)

    def __ror__(self, other: Any) -> Runnable:
        return _pipe(other, self)
