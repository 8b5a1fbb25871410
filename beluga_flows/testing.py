"""Test helpers shipped as real code: a fake clock and engine selection.

Example::

    clock = FakeClock()
    with use_engine(LocalEngine(sleep=clock.sleep)):
        flaky_step(1)            # retries without real sleeping
    assert clock.sleeps == [0.5, 1.0]
"""

from __future__ import annotations

import asyncio

from beluga_flows.engine import LocalEngine, use_engine

__all__ = ["FakeClock", "LocalEngine", "use_engine"]


class FakeClock:
    """A clock that moves only when something sleeps on it (or :meth:`advance`)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping."""
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, advance time, and yield to the loop once."""
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
