"""Concurrency and rate limits on both engines (Prefect's global limits, in-process)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def in_use(engine: str, name: str) -> int:
    if engine == "local":
        from beluga_flows.engine.local import LOCAL_LIMITS

        return LOCAL_LIMITS.in_use(name)
    from prefect.client.orchestration import get_client

    async def read() -> int:
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(name)
            return int(limit.active_slots)

    return asyncio.run(read())


def test_twenty_steps_never_exceed_three_in_flight(engine: str) -> None:
    name = unique("db")
    spans: list[tuple[float, float]] = []

    @bf.step(concurrency=name, max_concurrency=3)
    async def query(i: int) -> int:
        start = time.monotonic()
        await asyncio.sleep(0.1)
        spans.append((start, time.monotonic()))
        return i

    @bf.flow
    async def fan() -> list[int]:
        return list(await asyncio.gather(*(query(i) for i in range(20))))

    assert asyncio.run(fan()) == list(range(20))
    assert len(spans) == 20 and max_overlap(spans) <= 3
    assert in_use(engine, name) == 0


def test_waiting_past_the_timeout_is_resource_exhausted(engine: str) -> None:
    name = unique("one")
    hold = threading.Event()  # set from the step's own thread (it has a timeout)

    @bf.step(concurrency=name, max_concurrency=1, timeout=10)
    async def holder() -> None:
        hold.set()
        await asyncio.sleep(2)

    @bf.step(concurrency=name, max_concurrency=1, timeout=0.5)
    async def waiter() -> None:
        return None

    async def scenario() -> OrchestratorError:
        first = asyncio.ensure_future(holder())
        assert await asyncio.to_thread(hold.wait, 30)
        with pytest.raises(OrchestratorError) as info:
            await waiter()
        await first
        return info.value

    err = asyncio.run(scenario())
    assert err.code is ErrorCode.RESOURCE_EXHAUSTED and name in str(err) and err.retryable
    assert in_use(engine, name) == 0


def test_no_slot_leaks_when_a_step_is_killed_by_its_timeout(engine: str) -> None:
    name = unique("leak")

    # The step's timeout bounds its wait for the slot too, and on Prefect's SQLite
    # server a lease can take seconds to come (RESOURCE_EXHAUSTED then, by contract):
    # the prefect variant gives the step the time to get its slot before it is stuck.
    timeout = 0.3 if engine == "local" else 6.0

    @bf.step(concurrency=name, max_concurrency=1, timeout=timeout)
    def stuck() -> None:
        time.sleep(timeout + 2)

    @bf.step(concurrency=name, max_concurrency=1, timeout=5)
    def next_in_line() -> str:
        return "got the slot"

    with pytest.raises(OrchestratorError) as info:
        stuck()
    assert info.value.code is ErrorCode.TIMEOUT
    assert in_use(engine, name) == 0
    assert next_in_line() == "got the slot"


def test_rate_limit_spaces_calls(engine: str) -> None:
    name = unique("api")
    bf.define_rate_limit(name, per_second=5, burst=1)
    stamps: list[float] = []

    @bf.step(rate_limit=name)
    async def call_api(i: int) -> int:
        stamps.append(time.monotonic())
        return i

    async def scenario() -> None:
        for i in range(4):
            await call_api(i)

    asyncio.run(scenario())
    assert stamps[-1] - stamps[0] >= 3 * 0.2 * 0.9  # 5/s: at least ~0.2 s apart


def test_unknown_limits_are_not_found(engine: str) -> None:
    @bf.step(concurrency=unique("nowhere"))
    def no_slots() -> None: ...

    @bf.step(rate_limit=unique("undeclared"))
    def no_rate() -> None: ...

    for fn in (no_slots, no_rate):
        with pytest.raises(OrchestratorError) as info:
            fn()
        assert info.value.code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize("args", [("", 1.0), ("x", 0), ("x", -1.0), ("x", 1.0, 0), ("x", "fast")])
def test_bad_rate_limit_declarations(args: tuple[Any, ...]) -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.define_rate_limit(*args)
    assert info.value.code is ErrorCode.INVALID_CONFIG
