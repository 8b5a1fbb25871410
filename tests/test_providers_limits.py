"""Provider limits: rpm, tpm, concurrent calls and a cooldown before a retry, in-process
(with a fake clock where time matters) and across processes on Prefect."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError
from beluga_flows.resilience import providers
from beluga_flows.testing import FakeClock

from .procs import stop, until

WORKER = Path(__file__).with_name("provider_worker.py")


def patience(engine: str, local: float) -> float:
    """A step timeout for waits that must succeed: inside a task run on the session's
    SQLite server a free slot can take ~2 s to come (measured), so Prefect gets 6 s."""
    return local if engine == "local" else 6.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _read_limit(name: str) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_global_concurrency_limit_by_name(name)


def server_limit(name: str) -> Any:
    """A global concurrency limit as the Prefect UI shows it."""
    return asyncio.run(_read_limit(name))


# ---------------------------------------------------------------- declaring


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "rpm": 1},
        {"name": 3, "rpm": 1},
        {"name": "p"},  # no limit at all
        {"name": "p", "cooldown_on_retry": 5},  # a cooldown is not a limit
        {"name": "p", "rpm": 0},
        {"name": "p", "tpm": -5},
        {"name": "p", "max_concurrent": 1.5},
        {"name": "p", "rpm": True},
        {"name": "p", "rpm": 10, "cooldown_on_retry": 0},
        {"name": "p", "rpm": 10, "cooldown_on_retry": "soon"},
    ],
)
def test_bad_provider_limits_are_invalid_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.ProviderLimits(**kwargs)
    assert info.value.code is ErrorCode.INVALID_CONFIG


def test_declaring_a_provider_again_replaces_it() -> None:
    name = unique("llm")
    first = bf.ProviderLimits(name, rpm=10)
    assert providers.provider_limits(name) is first
    second = bf.ProviderLimits(name, rpm=20, max_concurrent=2)
    assert providers.provider_limits(name) is second and second.rpm == 20
    with pytest.raises(Exception):  # frozen  # noqa: B017
        second.rpm = 5  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["", "  ", 3, object()])
def test_a_bad_provider_option_is_invalid_config_at_decoration(bad: Any) -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.step(provider=bad)(lambda: None)
    assert info.value.code is ErrorCode.INVALID_CONFIG


def test_an_undeclared_provider_is_not_found_listing_the_declared(engine: str) -> None:
    known = unique("known")
    bf.ProviderLimits(known, rpm=100)

    @bf.step(provider=unique("nobody"))
    def call() -> None: ...

    with pytest.raises(OrchestratorError) as info:
        call()
    assert info.value.code is ErrorCode.NOT_FOUND and known in str(info.value)


# ---------------------------------------------------------------- the budgets, in-process


def fake_backend() -> tuple[FakeClock, providers.LocalProviders]:
    clock = FakeClock(1000)
    return clock, providers.LocalProviders(clock=clock, sleep=clock.sleep)


def test_rpm_is_a_bucket_refilled_at_rpm_per_60_seconds() -> None:
    clock, backend = fake_backend()
    limits = bf.ProviderLimits(unique("rpm"), rpm=2)

    async def request(timeout: float | None) -> None:
        async with providers.hold(backend, limits, timeout):
            pass

    async def scenario() -> OrchestratorError:
        await request(None)
        await request(None)  # the burst: rpm requests at once
        assert clock.sleeps == []
        await request(None)  # then one every 60 / rpm = 30 s
        assert clock.sleeps == [30.0]
        with pytest.raises(OrchestratorError) as info:
            await request(10)  # due in 30 s: past the timeout, at once
        assert clock.sleeps == [30.0]
        return info.value

    err = asyncio.run(scenario())
    assert err.code is ErrorCode.RATE_LIMIT_EXCEEDED and err.retryable
    assert limits.name in str(err) and "rpm=2" in str(err)


def test_tpm_is_charged_by_consume_tokens() -> None:
    clock, backend = fake_backend()
    limits = bf.ProviderLimits(unique("tpm"), tpm=600)  # refills 10 tokens a second

    async def scenario() -> OrchestratorError:
        async with providers.hold(backend, limits, None):
            await bf.consume_tokens(600)
            assert clock.sleeps == []
            await bf.consume_tokens(100)
            assert clock.sleeps == [10.0]
        async with providers.hold(backend, limits, 20):  # deadline: 20 s less 0.5 s
            await bf.consume_tokens(150)  # due in 15 s
            with pytest.raises(OrchestratorError) as info:
                await bf.consume_tokens(50)  # due 5 s later: past it
        assert clock.sleeps == [10.0, 15.0]
        return info.value

    err = asyncio.run(scenario())
    assert err.code is ErrorCode.RATE_LIMIT_EXCEEDED
    assert limits.name in str(err) and "tpm=600" in str(err) and "50 tokens" in str(err)


def test_consume_tokens_outside_a_provider_step_does_nothing_and_checks_its_input() -> None:
    assert bf.consume_tokens(5) is None  # sync code, no provider: nothing

    async def in_async() -> None:
        await bf.consume_tokens(5)

    asyncio.run(in_async())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(OrchestratorError) as info:
            bf.consume_tokens(bad)  # type: ignore[arg-type]
        assert info.value.code is ErrorCode.INVALID_INPUT


def test_more_tokens_than_the_whole_budget_is_invalid_input(engine: str) -> None:
    bf.ProviderLimits(name := unique("small"), tpm=10)

    @bf.step(provider=name)
    def greedy() -> None:
        bf.consume_tokens(11)

    with pytest.raises(OrchestratorError) as info:
        greedy()
    assert info.value.code is ErrorCode.INVALID_INPUT and "tpm=10" in str(info.value)


def test_cooldown_on_retry_is_added_to_the_backoff() -> None:
    clock = FakeClock()
    name = unique("cool")
    bf.ProviderLimits(name, max_concurrent=5, cooldown_on_retry=5)
    calls: list[int] = []

    @bf.step(provider=name, retry_policy=bf.RetryPolicy(max_attempts=3, initial_delay=1, jitter=0))
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("429")
        return "ok"

    with bf.use_engine(bf.LocalEngine(sleep=clock.sleep)):
        assert flaky() == "ok"
    assert clock.sleeps == [1 + 5, 2 + 5]


# ---------------------------------------------------------------- both engines


def test_a_step_takes_a_request_per_attempt_and_fails_past_its_timeout(engine: str) -> None:
    name = unique("openai")
    bf.ProviderLimits(name, rpm=2)  # 2 now, then one every 30 s
    calls: list[int] = []

    @bf.step(provider=name, timeout=patience(engine, 1))
    def complete(i: int) -> int:
        calls.append(i)
        return i

    assert complete(1) == 1 and complete(2) == 2
    with pytest.raises(OrchestratorError) as info:
        complete(3)
    err = info.value
    assert err.code is ErrorCode.RATE_LIMIT_EXCEEDED and err.retryable
    assert name in str(err) and "rpm=2" in str(err)
    assert calls == [1, 2]  # the third never ran
    if engine == "prefect":
        limit = server_limit(f"{name}:rpm")
        assert (limit.limit, limit.slot_decay_per_second) == (2, pytest.approx(2 / 60))


def test_tokens_on_both_engines(engine: str) -> None:
    name = unique("tokens")
    bf.ProviderLimits(name, tpm=120)  # 2 tokens a second

    @bf.step(provider=name, timeout=patience(engine, 2))
    async def complete(n: int) -> int:
        await bf.consume_tokens(n)
        return n

    @bf.step(provider=name, timeout=patience(engine, 2))
    def complete_sync(n: int) -> int:
        bf.consume_tokens(n)
        return n

    assert asyncio.run(complete(100)) == 100
    assert complete_sync(20) == 20  # the rest of the budget
    with pytest.raises(OrchestratorError) as info:
        asyncio.run(complete(60))  # 30 s away
    assert info.value.code is ErrorCode.RATE_LIMIT_EXCEEDED and "tpm=120" in str(info.value)
    if engine == "prefect":
        limit = server_limit(f"{name}:tpm")
        assert (limit.limit, limit.slot_decay_per_second) == (120, pytest.approx(2.0))


def test_max_concurrent_bounds_calls_in_flight(engine: str) -> None:
    name = unique("conc")
    bf.ProviderLimits(name, max_concurrent=2)
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @bf.step(provider=name)
    async def complete(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.05)
        with lock:
            running[0] -= 1
        return i

    async def fan() -> list[int]:
        return list(await asyncio.gather(*(complete(i) for i in range(8))))

    assert asyncio.run(fan()) == list(range(8))
    assert peak[0] <= 2
    if engine == "local":
        from beluga_flows.engine.local import LOCAL_PROVIDERS

        assert LOCAL_PROVIDERS.in_use(name) == 0
    else:
        assert server_limit(f"{name}:concurrent").active_slots == 0


def test_a_provider_object_can_be_given_directly(engine: str) -> None:
    limits = bf.ProviderLimits(unique("direct"), rpm=1)

    @bf.step(provider=limits, timeout=patience(engine, 0.5))
    def complete() -> str:
        return "ok"

    assert complete() == "ok"
    with pytest.raises(OrchestratorError) as info:
        complete()
    assert info.value.code is ErrorCode.RATE_LIMIT_EXCEEDED


def test_the_cooldown_pauses_a_prefect_retry(prefect_server: Any) -> None:
    import time

    name = unique("pcool")
    bf.ProviderLimits(name, max_concurrent=3, cooldown_on_retry=0.5)
    starts: list[float] = []

    @bf.step(provider=name, retry_policy=bf.RetryPolicy(max_attempts=2, initial_delay=0))
    def flaky() -> str:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise ConnectionError("429")
        return "ok"

    with bf.use_engine("prefect"):
        assert flaky() == "ok"
    assert starts[1] - starts[0] >= 0.5  # a lower bound only: the pause happened


# ---------------------------------------------------------------- across processes


def test_the_rpm_budget_is_shared_by_three_processes(prefect_server: Any, tmp_path: Path) -> None:
    name = unique("shared")
    rpm, calls, timeout = 6, 4, 4.0
    cmd = [sys.executable, str(WORKER), name, str(rpm), str(calls), str(timeout), str(tmp_path)]
    # The workers import the package this test imports (this checkout's).
    path = [str(WORKER.parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    procs = [subprocess.Popen(cmd, env=env) for _ in range(3)]

    def files(pattern: str) -> int:
        assert all(p.poll() in (None, 0) for p in procs), "a worker failed"
        return len(list(tmp_path.glob(pattern)))

    try:
        until(lambda: files("ready-*") == 3, what="3 workers ready")
        (tmp_path / "go").touch()
        until(lambda: files("result-*.json") == 3, what="3 workers' results")
        assert [p.wait(60) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            stop(p)
    runs = [json.loads(f.read_text()) for f in tmp_path.glob("result-*.json")]
    outcomes = [r for run in runs for r in run["results"]]
    elapsed = max(run["end"] for run in runs) - min(run["start"] for run in runs)
    ok = outcomes.count("ok")
    print(f"{ok} of {len(outcomes)} calls got a request in {elapsed:.2f}s")
    assert len(outcomes) == 3 * calls
    assert set(outcomes) <= {"ok", "rate_limit_exceeded"}
    # 6 slots, plus what decayed (0.1 a second) while the calls ran; each process
    # alone would have got all 4 of its calls through.
    assert 1 <= ok <= rpm + int(elapsed * rpm / 60)
    limit = server_limit(f"{name}:rpm")
    assert (limit.limit, limit.slot_decay_per_second) == (rpm, pytest.approx(rpm / 60))
