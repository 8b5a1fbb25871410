"""The local engine with an injected clock: backoff is honoured, nobody sleeps."""

from __future__ import annotations

import random

import pytest

import beluga_flows as bf
from beluga_flows.testing import FakeClock


def test_backoff_delays_follow_the_policy_without_sleeping() -> None:
    clock = FakeClock()
    calls: list[float] = []

    @bf.step(retry_policy=bf.RetryPolicy(max_attempts=5, initial_delay=1, max_delay=3, jitter=0))
    def flaky() -> str:
        calls.append(clock())
        if len(calls) < 5:
            raise TimeoutError("slow upstream")
        return "ok"

    with bf.use_engine(bf.LocalEngine(sleep=clock.sleep)):
        assert flaky() == "ok"
    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]
    assert calls == [0.0, 1.0, 3.0, 6.0, 9.0]


def test_seeded_jitter_is_reproducible_through_the_engine() -> None:
    policy = bf.RetryPolicy(max_attempts=4, initial_delay=1, jitter=0.5)

    def run(seed: int) -> list[float]:
        clock = FakeClock()

        @bf.step(retry_policy=policy)
        def always() -> None:
            raise ConnectionError("down")

        engine = bf.LocalEngine(sleep=clock.sleep, rng=random.Random(seed))
        with bf.use_engine(engine), pytest.raises(ConnectionError) as info:
            always()
        assert info.value.attempts == 4  # type: ignore[attr-defined]
        return clock.sleeps

    first, again, other = run(3), run(3), run(4)
    assert first == again != other
    assert all(b * 0.5 <= d <= b * 1.5 for d, b in zip(first, [1, 2, 4], strict=True))


def test_chain_retries_back_off_on_the_injected_clock() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def once_broken(d: object) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("blip")
        return "fine"

    chain = bf.Chain([once_broken], retries=2)
    with bf.use_engine(bf.LocalEngine(sleep=clock.sleep)):
        assert chain.invoke("x") == "fine"
    assert len(clock.sleeps) == 2 and len(calls) == 3


def test_cached_inline_step_runs_once_per_input() -> None:
    calls: list[int] = []

    @bf.step(cache=True, track=False)
    def costly(x: int) -> int:
        calls.append(x)
        return x * x

    assert [costly(3), costly(3), costly(4)] == [9, 9, 16]
    assert calls == [3, 4]
