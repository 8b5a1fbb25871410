"""The worker threads that run sync user code (and sync-on-loop edges).

Why not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so
one stuck call (a sync step abandoned at its timeout, blocked for good) hangs the
exit; and a stuck call holds one of its ``max_workers`` threads for good, so
enough of them starve every later call. Here:

* threads are daemons, started on demand and reused while idle (an idle thread
  retires after a while): the exit never waits for them;
* at most ``limit`` calls run at once, more wait their turn in order;
* a call its caller gave up on (:meth:`Workers.abandon`, at a timeout or a
  cancel) stops counting: a queued one never starts, a running one runs on in
  its thread, which then ends, while another thread takes its place.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Workers"]

T = TypeVar("T")
_Job = tuple["concurrent.futures.Future[Any]", Callable[[], Any]]
_IDLE_SECONDS = 30.0  # an idle thread retires after this long without work
_names = itertools.count(1)


class Workers:
    """Daemon threads for sync calls: ``submit`` a thunk, get a concurrent future."""

    def __init__(self, limit: int, prefix: str) -> None:
        self._limit = limit
        self._prefix = prefix
        self._reset()
        # A forked child has none of the parent's threads: it starts afresh.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._idle = 0  # threads waiting for a job (or about to)
        self._counted = 0  # threads that count against the limit
        self._running: set[concurrent.futures.Future[Any]] = set()  # counted jobs

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn()`` in a worker thread; its future holds the result."""
        job: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            self._jobs.append((job, fn))
            self._grow()
            self._cond.notify()
        return job

    def abandon(self, job: concurrent.futures.Future[Any]) -> None:
        """Nobody waits for ``job`` any more: if queued it never starts; if running
        it stops counting against the limit (its thread ends with the call)."""
        if job.cancel():  # still queued
            return
        with self._cond:
            if job in self._running:
                self._running.discard(job)
                self._counted -= 1
                self._grow()

    def _grow(self) -> None:
        # With the lock held: a thread for each queued job no idle thread takes.
        if len(self._jobs) > self._idle and self._counted < self._limit:
            self._counted += 1
            self._idle += 1
            name = f"{self._prefix}-{next(_names)}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while (item := self._next()) is not None:
            job, fn = item
            del item
            result: Any = None
            error: BaseException | None = None
            started = job.set_running_or_notify_cancel()  # False: cancelled while queued
            if started:
                try:
                    result = fn()
                except BaseException as exc:
                    error = exc
            del fn
            with self._cond:
                stays = job in self._running  # else abandoned: another thread counts
                self._running.discard(job)
                if stays:
                    self._idle += 1  # before the result: the next call reuses this thread
            if started and error is not None:
                job.set_exception(error)
            elif started:
                job.set_result(result)
            del job, result, error  # no frame → exception → frame cycle kept alive
            if not stays:
                return

    def _next(self) -> _Job | None:
        # The caller is already counted idle.
        with self._cond:
            while not self._jobs:
                if not self._cond.wait(_IDLE_SECONDS) and not self._jobs:
                    self._idle -= 1
                    self._counted -= 1  # retire
                    return None
            self._idle -= 1
            job, fn = self._jobs.popleft()
            self._running.add(job)
            return job, fn
