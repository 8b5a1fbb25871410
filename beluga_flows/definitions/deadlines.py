"""Per-attempt timeouts of async actions, on one loop timer per event loop.

``asyncio.timeout()`` arms a loop timer for every call (4-7 µs each, and a cancelled
timer stays in the loop's heap until its time comes). A definition gives every step
a timeout (300 s by default) that almost never fires, so its attempts share one
timer: each attempt is an entry in a heap ordered by deadline, the loop timer waits
for the earliest one, and an attempt that ends marks its entry done (done entries
leave the heap as soon as they reach its top). When a deadline passes, the attempt's
task is cancelled and the attempt raises ``TIMEOUT``.

Example::

    entry = deadlines().add(2.0)
    try:
        await work()
    except asyncio.CancelledError:
        if entry.fired: ...   # our deadline, not somebody's cancel
    finally:
        deadlines().done(entry)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from typing import Any

__all__ = ["Deadlines", "Entry", "deadlines"]


class Entry:
    """One attempt's deadline."""

    __slots__ = ("done", "fired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[Any] | None) -> None:
        self.when = when
        self.task = task
        self.done = False
        self.fired = False


class Deadlines:
    """The deadlines of the attempts running on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, Entry]] = []
        self.timer: asyncio.TimerHandle | None = None
        self._seq = itertools.count()

    def add(self, timeout: float) -> Entry:
        """Start the current task's deadline, ``timeout`` seconds from now."""
        entry = Entry(self.loop.time() + timeout, asyncio.current_task(self.loop))
        heapq.heappush(self.heap, (entry.when, next(self._seq), entry))
        if self.timer is None or entry.when < self.timer.when():
            self._arm()
        return entry

    def done(self, entry: Entry) -> None:
        """The attempt ended (whatever way): its deadline no longer counts."""
        entry.done = True
        heap = self.heap
        while heap and heap[0][2].done:
            heapq.heappop(heap)

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(self.heap[0][0], self._fire) if self.heap else None

    def _fire(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.heap and self.heap[0][0] <= now:
            entry = heapq.heappop(self.heap)[2]
            if not entry.done and entry.task is not None:
                entry.fired = True
                entry.task.cancel()
        while self.heap and self.heap[0][2].done:
            heapq.heappop(self.heap)
        if self.heap:
            self._arm()


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)


def deadlines() -> Deadlines:
    """The running loop's :class:`Deadlines`."""
    loop = asyncio.get_running_loop()
    last = _LAST[0]
    if last is not None and last.loop is loop:  # the common case: one loop at a time
        return last
    found = _PER_LOOP.get(loop)
    if found is None:
        found = _PER_LOOP[loop] = Deadlines(loop)
    _LAST[0] = found
    return found


# The last loop's deadlines (a strong reference to one loop at most: the one in use).
_LAST: list[Deadlines | None] = [None]
