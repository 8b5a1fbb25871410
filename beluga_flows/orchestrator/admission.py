"""Admission control: at most ``limit`` runs at once, ``queue_size`` more waiting, and
``RESOURCE_EXHAUSTED`` for the rest.

An :class:`Admission` is shared by every run of one kind that one orchestrator
created, whichever thread or event loop it runs on (``chain.invoke`` from a Flask
handler thread, ``await chain.ainvoke`` on the app's loop, a sync workflow body in a
worker thread). So it is not an ``asyncio.Semaphore`` (bound to one loop) but a
counter under a ``threading.Lock`` with a FIFO of waiters, each woken on its own
loop (``call_soon_threadsafe``) or through a ``threading.Event``. A slot is handed
straight to the next waiter when released, so nobody can overtake the queue.

Example::

    gate = Admission("chains", limit=10, queue_size=100)
    async with gate.slot():
        ...                                  # at most 10 bodies here at once
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator

from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["Admission"]


class _Waiter:
    """One queued run: woken on its loop (async) or through its event (sync)."""

    __slots__ = ("event", "future", "granted", "loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None, future: asyncio.Future[None] | None
    ) -> None:
        self.loop = loop
        self.future = future
        self.event = threading.Event() if future is None else None
        self.granted = False

    def wake(self) -> bool:
        """Tell the waiter it holds a slot now; False when it can no longer hear it
        (its loop is closed)."""
        if self.event is not None:
            self.event.set()
            return True
        assert self.loop is not None and self.future is not None
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop is closed: nobody will take the slot
            return False
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Admission:
    """A thread- and asyncio-safe counting gate with a bounded FIFO queue.

    ``active`` is the number of slots held, ``waiting`` the number of runs queued.

    Example::

        gate = Admission("workflows", limit=2, queue_size=1)
        with gate.hold():            # from sync code (blocks while queued)
            ...
    """

    def __init__(self, kind: str, limit: int, queue_size: int) -> None:
        self.kind = kind
        self.limit = limit
        self.queue_size = queue_size
        self.active = 0
        self._queue: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """Runs queued for a slot now."""
        return len(self._queue)

    def _enter(self, waiter: _Waiter) -> bool:
        """Take a slot now (True), or queue ``waiter`` (False); full → ``RESOURCE_EXHAUSTED``."""
        with self._lock:
            if self.active < self.limit and not self._queue:
                self.active += 1
                return True
            if len(self._queue) >= self.queue_size:
                raise OrchestratorError(
                    "admission",
                    f"{self.active} {self.kind} running (max {self.limit}) and "
                    f"{len(self._queue)} queued (queue_size {self.queue_size})",
                    ErrorCode.RESOURCE_EXHAUSTED,
                )
            self._queue.append(waiter)
            return False

    def release(self) -> None:
        """Give a held slot back: to the first waiter that can take it, else free it."""
        while True:
            with self._lock:
                if not self._queue:
                    self.active -= 1
                    return
                waiter = self._queue.popleft()
                waiter.granted = True  # the slot moves to it: ``active`` is unchanged
            if waiter.wake():
                return

    def _abandon(self, waiter: _Waiter) -> None:
        """A queued run stopped waiting (cancelled): leave the queue, or pass on the
        slot it was granted meanwhile."""
        with self._lock:
            if not waiter.granted:
                self._queue.remove(waiter)
                return
        self.release()

    async def acquire(self) -> None:
        """Wait (on the current loop) for a slot; ``RESOURCE_EXHAUSTED`` when the queue
        is full."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop, loop.create_future())
        if self._enter(waiter):
            return
        assert waiter.future is not None
        try:
            await waiter.future
        except BaseException:
            self._abandon(waiter)
            raise

    def acquire_sync(self) -> None:
        """Block this thread until a slot is free (:meth:`acquire` for sync code)."""
        waiter = _Waiter(None, None)
        if self._enter(waiter):
            return
        assert waiter.event is not None
        try:
            waiter.event.wait()
        except BaseException:  # KeyboardInterrupt in the main thread
            self._abandon(waiter)
            raise

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body (async)."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a slot for the body (sync, blocking the thread while queued)."""
        self.acquire_sync()
        try:
            yield
        finally:
            self.release()

    def __repr__(self) -> str:
        return (
            f"Admission({self.kind!r}, active={self.active}/{self.limit}, "
            f"waiting={self.waiting}/{self.queue_size})"
        )
