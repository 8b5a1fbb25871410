"""Circuit breakers: pure transitions, stores (memory and a real Redis), steps."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import CircuitState, ErrorCode, OrchestratorError
from beluga_flows.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    admit,
    get_breaker,
    record,
    visible_state,
)
from beluga_flows.testing import FakeClock

CLOSED, OPEN, HALF = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def unique(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ pure transitions


def test_consecutive_failures_trip_and_a_success_resets_the_count() -> None:
    cfg = BreakerConfig(failure_threshold=3)
    st = BreakerState()
    for outcome in (True, True, False, True, True):
        st = record(cfg, st, outcome, False, now=0)
    assert st.state is CLOSED and st.failures == 2
    st = record(cfg, st, True, False, now=7)
    assert st.state is OPEN and st.opened_at == 7


def test_failure_rate_over_a_window_of_calls() -> None:
    cfg = BreakerConfig(failure_threshold=100, failure_rate=0.5, window=4)
    st = BreakerState()
    for outcome in (True, False, True):
        st = record(cfg, st, outcome, False, now=0)
    assert st.state is CLOSED  # the window is not full yet
    st = record(cfg, st, False, False, now=0)
    assert st.state is OPEN  # 2 failures in the last 4 calls


def test_recovery_admits_a_bounded_number_of_probes() -> None:
    cfg = BreakerConfig(recovery_timeout=10, half_open_max_calls=2, success_threshold=2)
    st = BreakerState(state=OPEN, opened_at=100)
    assert visible_state(cfg, st, 109.9) is OPEN
    assert admit(cfg, st, 109.9)[1] is False
    assert visible_state(cfg, st, 110) is HALF  # readable before any call
    st, ok1, probe1 = admit(cfg, st, 110)
    st, ok2, _ = admit(cfg, st, 110)
    st, ok3, _ = admit(cfg, st, 110)
    assert (ok1, ok2, ok3, probe1) == (True, True, False, True) and st.state is HALF
    st = record(cfg, st, False, True, now=111)
    assert st.state is HALF  # one success of two
    st = record(cfg, st, False, True, now=111)
    assert st == BreakerState()  # closed, counts forgotten


def test_a_failed_probe_reopens() -> None:
    cfg = BreakerConfig(recovery_timeout=1)
    st, ok, probe = admit(cfg, BreakerState(state=OPEN, opened_at=0), now=5)
    assert ok and probe
    st = record(cfg, st, True, True, now=6)
    assert st.state is OPEN and st.opened_at == 6


def test_a_probe_slot_is_a_lease_that_expires_after_the_recovery_timeout() -> None:
    # issue 11: a probe that never reported back (its process died) held its slot forever
    cfg = BreakerConfig(recovery_timeout=10)
    st, ok, probe = admit(cfg, BreakerState(state=OPEN, opened_at=0), now=10)
    assert ok and probe
    assert admit(cfg, st, 19.9)[1] is False  # the lease holds the only slot
    st, ok, probe = admit(cfg, st, 20)  # the first probe never reported: its lease expired
    assert ok and probe and st.leases == (30,)
    assert record(cfg, st, False, True, now=21) == BreakerState()


def test_a_stored_record_from_before_leases_still_loads_and_is_not_stuck() -> None:
    old = {"state": "half_open", "failures": 0, "opened_at": None, "probes": 1}
    st = BreakerState.from_json({**old, "successes": 0, "outcomes": []})
    assert st.state is HALF and st.leases == ()  # a probe count without deadlines
    assert admit(BreakerConfig(), st, now=0)[1] is True
    again = BreakerState.from_json(st.to_json())
    assert again == st


# ------------------------------------------------------------------ the breaker object


def test_open_breaker_fails_fast_then_recovers() -> None:
    clock = FakeClock(1000)
    changes: list[tuple[str, str]] = []
    breaker = bf.CircuitBreaker(unique(), failure_threshold=2, recovery_timeout=30, clock=clock)
    breaker.add_listener(lambda b, old, new: changes.append((old, new)))
    calls: list[int] = []

    async def dependency(ok: bool) -> str:
        calls.append(1)
        if not ok:
            raise ConnectionError("down")
        return "up"

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breaker.call(lambda: dependency(False))
        with pytest.raises(OrchestratorError) as info:
            await breaker.call(lambda: dependency(True))
        assert info.value.code is ErrorCode.CIRCUIT_BREAKER_OPEN and info.value.retryable
        clock.advance(30)
        assert await breaker.astate() is HALF
        assert await breaker.call(lambda: dependency(True)) == "up"

    asyncio.run(scenario())
    assert len(calls) == 3  # nothing reached the dependency while open
    assert breaker.state is CLOSED
    assert changes == [(CLOSED, OPEN), (OPEN, HALF), (HALF, CLOSED)]


def test_a_cancelled_or_neutral_probe_reports_nothing_and_frees_its_slot() -> None:
    # issue 11: either closed the breaker as if the probe had succeeded
    clock = FakeClock(0)
    breaker = bf.CircuitBreaker(unique(), recovery_timeout=10, clock=clock)

    async def mistake() -> None:
        raise OrchestratorError("x", "bad input", ErrorCode.INVALID_INPUT)

    async def ok() -> str:
        return "up"

    async def scenario() -> None:
        await breaker.atrip()
        clock.advance(10)
        with pytest.raises(OrchestratorError):
            await breaker.call(mistake)
        assert await breaker.astate() is HALF
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(breaker.call(hang))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await breaker.astate() is HALF
        assert (await breaker.store.load(breaker.name)).leases == ()  # both slots came back
        assert await breaker.call(ok) == "up"  # the next probe goes out (no clock moved)
        assert await breaker.astate() is CLOSED

    asyncio.run(scenario())


def test_slow_calls_count_as_failures_and_caller_mistakes_do_not() -> None:
    breaker = bf.CircuitBreaker(unique(), failure_threshold=2, slow_call_duration=0.01)

    async def slow() -> None:
        await asyncio.sleep(0.03)

    async def mistake() -> None:
        raise OrchestratorError("x", "bad input", ErrorCode.INVALID_INPUT)

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(OrchestratorError):
                await breaker.call(mistake)
        assert await breaker.astate() is CLOSED
        await breaker.call(slow)
        await breaker.call(slow)
        assert await breaker.astate() is OPEN

    asyncio.run(scenario())


def test_trip_reset_and_sharing_by_name() -> None:
    name = unique()
    breaker = bf.CircuitBreaker(name)
    assert get_breaker(name) is breaker
    breaker.trip()
    assert breaker.state is OPEN
    breaker.reset()
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    "options",
    [
        {"failure_threshold": 0},
        {"recovery_timeout": 0},
        {"recovery_timeout": -5},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"window": 0},
        {"half_open_max_calls": 0},
        {"success_threshold": 0},
        {"slow_call_duration": -1},
        {"store": "redis"},
        {"exclude": ("ValueError",)},
    ],
)
def test_bad_breaker_options(options: dict[str, Any]) -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.CircuitBreaker("bad", **options)
    assert info.value.code is ErrorCode.INVALID_CONFIG


def test_bad_store_urls() -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.RedisStore("http://127.0.0.1:6379")
    assert info.value.code is ErrorCode.INVALID_CONFIG


def test_unreachable_store_falls_back_to_local_state_not_a_hang() -> None:
    # issue 11 changed this: an unreachable store used to fail the call with
    # RESOURCE_EXHAUSTED; now the call goes on with process-local breaker state
    from beluga_flows.tools.server import free_port

    store = bf.RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=1)
    breaker = bf.CircuitBreaker(unique(), store=store)

    async def ok() -> str:
        return "ran"

    start = time.monotonic()
    assert asyncio.run(breaker.call(ok)) == "ran"
    assert breaker.state is CLOSED
    assert time.monotonic() - start < 10


# ------------------------------------------------------------------ store contract


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[bf.BreakerStore]:
    if request.param == "memory":
        yield bf.MemoryStore()
    else:
        yield bf.RedisStore(request.getfixturevalue("redis_url"))


def test_store_round_trip(store: bf.BreakerStore) -> None:
    name = unique()

    async def scenario() -> None:
        assert await store.load(name) == BreakerState()
        opened = BreakerState(state=OPEN, opened_at=12.5, outcomes=(True, False))
        old, new, result = await store.update(name, lambda st: (opened, "r"))
        assert (old, new, result) == (BreakerState(), opened, "r")
        assert await store.load(name) == opened

    asyncio.run(scenario())


def test_redis_records_expire_when_stale_and_a_clean_closed_one_is_not_kept(
    redis_url: str,
) -> None:
    import redis

    name, raw = unique(), redis.Redis.from_url(redis_url)
    breaker = bf.CircuitBreaker(name, store=bf.RedisStore(redis_url, ttl=600))
    breaker.trip()
    assert 0 < raw.pttl(f"beluga:breaker:{name}") <= 600_000
    breaker.reset()
    assert raw.exists(f"beluga:breaker:{name}") == 0
    with pytest.raises(OrchestratorError) as info:
        bf.RedisStore(redis_url, ttl=-1)
    assert info.value.code is ErrorCode.INVALID_CONFIG


def test_store_admits_exactly_the_probe_budget_under_contention(store: bf.BreakerStore) -> None:
    clock = FakeClock(100)
    breaker = bf.CircuitBreaker(
        unique(), half_open_max_calls=3, recovery_timeout=5, store=store, clock=clock
    )
    started: list[int] = []

    async def probe() -> None:
        started.append(1)
        await asyncio.sleep(0.2)

    async def scenario() -> list[Any]:
        await breaker.atrip()
        clock.advance(5)
        return await asyncio.gather(
            *(breaker.call(probe) for _ in range(30)), return_exceptions=True
        )

    results = asyncio.run(scenario())
    rejected = [r for r in results if isinstance(r, OrchestratorError)]
    assert len(started) == 3 and len(rejected) == 27
    assert all(r.code is ErrorCode.CIRCUIT_BREAKER_OPEN for r in rejected)
    assert breaker.state is CLOSED  # success_threshold=1: the first probe closed it


# ------------------------------------------------------------------ steps


def test_step_breaker_stops_calls_while_open(engine: str) -> None:
    name = unique("dep")
    bf.CircuitBreaker(name, failure_threshold=2, recovery_timeout=60)
    calls: list[int] = []

    @bf.step(
        circuit_breaker=name,
        retry_policy=bf.RetryPolicy(max_attempts=5, initial_delay=0.01, jitter=0),
    )
    def flaky() -> None:
        calls.append(1)
        raise ConnectionError("dependency down")

    with pytest.raises(OrchestratorError) as info:
        flaky()
    assert info.value.code is ErrorCode.CIRCUIT_BREAKER_OPEN
    assert len(calls) == 2  # the rest of the attempts failed fast
    assert info.value.attempts == 5  # type: ignore[attr-defined]


def test_four_processes_share_one_redis_breaker_and_its_probe_budget(redis_url: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    import redis

    name = unique("shared")
    breaker = bf.CircuitBreaker(
        name, recovery_timeout=1, half_open_max_calls=2, store=bf.RedisStore(redis_url)
    )
    breaker.trip()
    start_at = time.time() + 3.0  # past the recovery time, after the workers have started
    worker = Path(__file__).with_name("breaker_worker.py")
    procs = [
        subprocess.Popen([sys.executable, str(worker), redis_url, name, str(start_at), "5"])
        for _ in range(4)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    counts = redis.Redis.from_url(redis_url)
    assert int(counts.get(f"probes:{name}")) == 2  # exactly half_open_max_calls, across all 4
    assert int(counts.get(f"rejected:{name}")) == 18
    # the failed probes reopened it (the stored record: a second later, with
    # recovery_timeout=1, `state` already reads half_open on a loaded machine)
    assert asyncio.run(breaker.store.load(name)).state is OPEN


def test_fault_injection_flaky_dependency_behind_retries_and_a_breaker(engine: str) -> None:
    import random

    rng = random.Random(2024)
    clock = FakeClock(0)
    name = unique("flaky")
    breaker = bf.CircuitBreaker(
        name, failure_threshold=100, failure_rate=0.5, window=6, recovery_timeout=30, clock=clock
    )
    calls_when_opened: list[int] = []
    calls: list[bool] = []
    breaker.add_listener(
        lambda b, old, new: calls_when_opened.append(len(calls)) if new is OPEN else None
    )

    @bf.step(
        circuit_breaker=name,
        retry_policy=bf.RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=0),
    )
    def dependency(i: int) -> int:
        ok = rng.random() >= 0.5  # fails half of the time
        calls.append(ok)
        if not ok:
            raise ConnectionError("injected fault")
        return i

    outcomes = []
    for i in range(30):
        try:
            outcomes.append(dependency(i))
        except OrchestratorError as err:
            outcomes.append(err.code)
        except ConnectionError:
            outcomes.append("failed")
    assert calls_when_opened, "the breaker never opened"
    opened_after = calls_when_opened[0]
    assert len(calls) == opened_after  # no call reached the dependency while open
    assert ErrorCode.CIRCUIT_BREAKER_OPEN in outcomes
    assert all(o is ErrorCode.CIRCUIT_BREAKER_OPEN for o in outcomes[-5:])


def test_breaker_as_a_decorator_on_sync_and_async_functions() -> None:
    breaker = bf.CircuitBreaker(unique(), failure_threshold=1)
    calls: list[str] = []

    @breaker
    def sync_dep(fail: bool) -> str:
        calls.append("sync")
        if fail:
            raise ConnectionError("no")
        return "sync ok"

    @breaker
    async def async_dep() -> str:
        calls.append("async")
        return "async ok"

    assert sync_dep(False) == "sync ok" and asyncio.run(async_dep()) == "async ok"
    with pytest.raises(ConnectionError):
        sync_dep(True)
    for attempt in (lambda: sync_dep(False), lambda: asyncio.run(async_dep())):
        with pytest.raises(OrchestratorError) as info:
            attempt()
        assert info.value.code is ErrorCode.CIRCUIT_BREAKER_OPEN
    assert calls == ["sync", "async", "sync"]
