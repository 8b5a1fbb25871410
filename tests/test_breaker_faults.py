"""Circuit breakers under faults: killed probes, failing stores, Redis outages.

Real processes throughout: a private redis-server per test (stopped, paused and
restarted on its port), worker processes that are SIGKILLed mid-call.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import beluga_flows as bf
from beluga_flows import CircuitState, ErrorCode, OrchestratorError
from beluga_flows.resilience.breaker import BreakerState
from beluga_flows.testing import FakeClock

from .procs import until
from .redis_proc import RedisProc

CLOSED, OPEN, HALF = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def unique(prefix: str = "f") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProc]:
    proc = RedisProc(tmp_path).start()
    yield proc
    proc.kill()


def test_a_killed_probe_frees_its_slot_after_the_recovery_timeout(redis_url: str) -> None:
    # issue 11: a probe slot had no lease; a probe whose process died held it forever
    name, clock = unique("lease"), FakeClock(1000)
    breaker = bf.CircuitBreaker(
        name, recovery_timeout=10, store=bf.RedisStore(redis_url), clock=clock
    )
    breaker.trip()  # opened at 1000: half-open from 1010
    marker = redis.Redis.from_url(redis_url)
    worker = Path(__file__).with_name("breaker_probe_worker.py")
    proc = subprocess.Popen([sys.executable, str(worker), redis_url, name, "1010", "10"])
    try:
        until(lambda: marker.get(f"admitted:{name}") or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "the worker was not admitted as the probe"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def ok() -> str:
        return "up"

    clock.now = 1015  # the dead probe's lease (until 1020) still holds the only slot
    with pytest.raises(OrchestratorError) as info:
        asyncio.run(breaker.call(ok))
    assert info.value.code is ErrorCode.CIRCUIT_BREAKER_OPEN
    clock.now = 1020  # its lease expired: this process's probe gets through
    assert asyncio.run(breaker.call(ok)) == "up"
    assert breaker.state is CLOSED


def test_sync_callers_share_one_bounded_set_of_connections(server: RedisProc) -> None:
    # issue 11: a client per event loop, and sync callers got a fresh loop per call:
    # one leaked socket per request
    store = bf.RedisStore(server.url)
    breaker = bf.CircuitBreaker(unique("conn"), window=10, failure_rate=0.9, store=store)

    @breaker
    def lookup(i: int) -> int:
        return i

    for i in range(200):
        assert breaker.state is CLOSED
        assert lookup(i) == i
    assert server.clients() <= 6  # the store's few pooled connections and this reader
    store.close()
    assert server.clients() == 1  # closed: only the reader is left


def _half_open(server: RedisProc) -> tuple[bf.CircuitBreaker, FakeClock]:
    """A Redis-backed breaker whose next call is a probe (so its report writes)."""
    clock = FakeClock(0)
    breaker = bf.CircuitBreaker(
        unique("result"),
        recovery_timeout=10,
        store=bf.RedisStore(server.url, timeout=1),
        clock=clock,
    )
    breaker.trip()
    clock.advance(10)
    return breaker, clock


def test_a_store_lost_after_the_call_never_discards_its_result(
    server: RedisProc, caplog: pytest.LogCaptureFixture
) -> None:
    # issue 11: the store's RESOURCE_EXHAUSTED replaced the result, and the retry
    # policy ran the (maybe non-idempotent) call again
    breaker, _ = _half_open(server)
    calls: list[int] = []

    @bf.step(circuit_breaker=breaker, retries=2, track=False)
    def charge(amount: int) -> str:
        calls.append(amount)
        server.kill()  # the store goes away while the call runs
        return f"charged {amount}"

    # the local engine: Prefect's logging set-up would replace caplog's root handler
    with bf.use_engine("local"), caplog.at_level("WARNING", logger="beluga_flows.breaker"):
        assert charge(5) == "charged 5"
    assert calls == [5]
    assert [r for r in caplog.records if breaker.name in r.getMessage()]  # logged


def test_a_store_lost_during_a_failing_or_cancelled_call_keeps_the_original_error(
    server: RedisProc,
) -> None:
    breaker, _ = _half_open(server)

    async def broken() -> None:
        server.kill()
        raise ValueError("the call's own error")

    with pytest.raises(ValueError, match="own error"):
        asyncio.run(breaker.call(broken))
    breaker, _ = _half_open(server.start())

    async def cancelled() -> None:
        started = asyncio.Event()

        async def hang() -> None:
            server.kill()
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(breaker.call(hang))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())


def test_a_redis_outage_falls_back_to_local_state_and_converges_when_redis_returns(
    server: RedisProc, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("outage")
    breaker = bf.CircuitBreaker(
        name, failure_threshold=2, store=bf.RedisStore(server.url, timeout=1)
    )

    async def ok() -> str:
        return "up"

    async def down() -> None:
        raise ConnectionError("dependency down")

    assert asyncio.run(breaker.call(ok)) == "up"
    server.kill()
    with caplog.at_level("WARNING", logger="beluga_flows.breaker"):
        for _ in range(3):
            assert asyncio.run(breaker.call(ok)) == "up"  # calls go on
        for _ in range(2):
            with pytest.raises(ConnectionError):
                asyncio.run(breaker.call(down))
        with pytest.raises(OrchestratorError) as info:  # the local state still protects
            asyncio.run(breaker.call(ok))
        assert info.value.code is ErrorCode.CIRCUIT_BREAKER_OPEN
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and name in r.getMessage()]
    assert len(warnings) == 1  # once per outage
    server.start()  # back on the same port: the shared (closed) state is authoritative again

    def passes() -> bool:
        try:
            return asyncio.run(breaker.call(ok)) == "up"
        except OrchestratorError:
            return False

    until(passes, timeout=30, what="the breaker to use Redis again")
    other = bf.RedisStore(server.url)
    opened = BreakerState(state=OPEN, opened_at=2**40)  # another process trips it
    asyncio.run(other.update(name, lambda st: (opened, None)))
    assert breaker.state is OPEN
    other.close()
