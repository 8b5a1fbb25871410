"""Soak: many step calls leave memory, file descriptors and threads where they were.

10,000 inline calls (plain, with a timeout, with retries, sync and async, from
async code and from sync code) and
1,000 tracked ones (Prefect task runs of one flow run on the session's server).
Each soak warms up first (caches, pools, the client), then runs the bulk and
compares the process's resident memory, open descriptors and threads with the
level after the warm-up.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from dataclasses import dataclass

import pytest

import beluga_flows as bf
from beluga_flows.tools.server import LocalServer

pytestmark = pytest.mark.slow

RETRY = bf.RetryPolicy(max_attempts=3, initial_delay=0, jitter=0, retry_on=(ConnectionError,))


@dataclass(frozen=True)
class Usage:
    """What the process holds now, read from /proc/self."""

    rss: int
    fds: int
    threads: int

    @classmethod
    def now(cls) -> Usage:
        gc.collect()
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return cls(rss, len(os.listdir("/proc/self/fd")), threading.active_count())

    @classmethod
    def settled(cls) -> Usage:
        """The level once threads that are on their way out have gone (a finished
        Prefect flow run's heartbeat thread lingers for up to a second or so)."""
        readings = []
        for _ in range(15):
            readings.append(cls.now())
            time.sleep(0.2)
        return min(readings, key=lambda u: u.threads)

    def holds(self, after: Usage) -> bool:
        """``after`` within 10 % of this (a descriptor or two of slack), no new threads."""
        return (
            after.rss <= self.rss * 1.10
            and after.fds <= max(self.fds * 1.10, self.fds + 2)
            and after.threads <= self.threads
        )

    def assert_flat(self) -> None:
        """The process comes back to this level (within :meth:`settled`'s moment)."""
        deadline = time.monotonic() + 10
        while not self.holds(after := Usage.now()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.holds(after), f"grew: {self} -> {after}"


def _inline_steps() -> list[bf.Step]:
    flaky_calls = [0]

    @bf.step(track=False)
    def plain(x: int) -> int:
        return x + 1

    @bf.step(track=False)
    async def aplain(x: int) -> int:
        return x + 1

    @bf.step(track=False, timeout=30)
    def timed(x: int) -> int:
        return x + 1

    @bf.step(track=False, timeout=30)
    async def atimed(x: int) -> int:
        return x + 1

    @bf.step(track=False, retry_policy=RETRY, timeout=30)
    def flaky(x: int) -> int:
        flaky_calls[0] += 1
        if flaky_calls[0] % 2:  # every call fails once, then succeeds
            raise ConnectionError("transient")
        return x + 1

    return [plain, aplain, timed, atimed, flaky]


def test_inline_step_calls_do_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BELUGA_FLOWS_PROVIDER", "local")
    steps = _inline_steps()

    plain = steps[0]

    async def calls(n: int) -> None:
        for i in range(n):
            assert await steps[i % len(steps)](i) == i + 1

    def one_round() -> None:
        asyncio.run(calls(900))
        for i in range(100):  # from sync code: each call is its own event loop
            assert plain(i) == i + 1

    one_round()
    before = Usage.settled()
    for _ in range(10):
        one_round()
    before.assert_flat()


def test_tracked_step_calls_in_one_flow_run_do_not_leak(prefect_server: LocalServer) -> None:
    @bf.step
    def tracked(x: int) -> int:
        return x + 1

    @bf.step(timeout=30, retry_policy=RETRY)
    async def atracked(x: int) -> int:
        return x + 1

    @bf.flow
    async def many(n: int) -> int:
        done = 0
        for i in range(n):
            done += await (tracked if i % 2 else atracked)(i) - i
        return done

    assert asyncio.run(many(100)) == 100
    before = Usage.settled()
    assert asyncio.run(many(1_000)) == 1_000
    before.assert_flat()
