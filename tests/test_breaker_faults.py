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
