"""RetryPolicy: validation and the pure delay decision."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError, RetryPolicy


def err(code: ErrorCode) -> OrchestratorError:
    return OrchestratorError("op", "x", code)


def test_defaults() -> None:
    p = RetryPolicy()
    assert (p.max_attempts, p.initial_delay, p.max_delay, p.multiplier, p.jitter) == (
        3,
        0.5,
        30.0,
        2.0,
        0.25,
    )


def test_exponential_capped_without_jitter() -> None:
    p = RetryPolicy(max_attempts=10, initial_delay=1, max_delay=5, jitter=0)
    delays = [p.next_delay(n, ConnectionError(), random.Random(0)) for n in range(1, 10)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert p.next_delay(10, ConnectionError()) is None  # budget spent


def test_seeded_jitter_is_deterministic() -> None:
    p = RetryPolicy(max_attempts=5)
    a = [p.next_delay(n, ValueError(), random.Random(42)) for n in range(1, 5)]
    b = [p.next_delay(n, ValueError(), random.Random(42)) for n in range(1, 5)]
    assert a == b


@given(
    attempt=st.integers(1, 60),
    initial=st.floats(0, 10),
    cap=st.floats(0, 100),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_jittered_delay_stays_within_bounds(
    attempt: int, initial: float, cap: float, jitter: float, seed: int
) -> None:
    p = RetryPolicy(max_attempts=100, initial_delay=initial, max_delay=cap, jitter=jitter)
    delay = p.next_delay(attempt, TimeoutError(), random.Random(seed))
    base = p.backoff(attempt)
    assert delay is not None
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9
    assert base <= cap


def test_default_predicate_skips_caller_mistakes_and_control_flow() -> None:
    p = RetryPolicy()
    for code in (
        "invalid_config",
        "invalid_input",
        "not_found",
        "invalid_state",
        "task_canceled",
        "workflow_deadlock",
    ):
        assert not p.should_retry(err(ErrorCode(code))), code
    # issue 11: a cause-less EXECUTION_FAILED (and MAX_RETRIES_EXCEEDED) was retried
    # although its .retryable said False; the one code table now answers for both
    for failed in (err(ErrorCode.EXECUTION_FAILED), err(ErrorCode.MAX_RETRIES_EXCEEDED)):
        assert not p.should_retry(failed) and not failed.retryable
    wrapped = OrchestratorError("chain", ValueError("v"), ErrorCode.EXECUTION_FAILED)
    for retried in (err(ErrorCode.TIMEOUT), wrapped, ValueError()):
        assert p.should_retry(retried)
    assert not p.should_retry(asyncio.CancelledError())
    assert not p.should_retry(KeyboardInterrupt())


def test_execution_failed_is_judged_by_its_cause() -> None:
    wrapped = OrchestratorError("chain", err(ErrorCode.INVALID_INPUT), ErrorCode.EXECUTION_FAILED)
    assert not RetryPolicy().should_retry(wrapped)
    timeout = OrchestratorError("chain", err(ErrorCode.TIMEOUT), ErrorCode.EXECUTION_FAILED)
    assert RetryPolicy(retry_on=(ErrorCode.TIMEOUT,)).should_retry(timeout)


def test_retry_on_lists_only_what_it_names() -> None:
    p = RetryPolicy(retry_on=(ConnectionError, ErrorCode.RATE_LIMIT_EXCEEDED))
    assert p.should_retry(ConnectionRefusedError())
    assert p.should_retry(err(ErrorCode.RATE_LIMIT_EXCEEDED))
    assert not p.should_retry(err(ErrorCode.TIMEOUT))
    assert not p.should_retry(ValueError())
    pred = RetryPolicy(retry_on=lambda e: "again" in str(e))
    assert pred.should_retry(RuntimeError("try again")) and not pred.should_retry(RuntimeError())
    assert pred.next_delay(1, RuntimeError("no")) is None


def test_timedelta_delays() -> None:
    p = RetryPolicy(initial_delay=dt.timedelta(milliseconds=250), max_delay=dt.timedelta(seconds=2))
    assert (p.initial_delay, p.max_delay) == (0.25, 2.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"initial_delay": -1},
        {"max_delay": "soon"},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"retry_on": (ValueError, "timeout")},
        {"retry_on": 42},
    ],
)
def test_invalid_values_are_invalid_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(OrchestratorError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_CONFIG


def test_policy_is_frozen() -> None:
    p = RetryPolicy()
    with pytest.raises(AttributeError):
        p.max_attempts = 9  # type: ignore[misc]
    assert bf.RetryPolicy is RetryPolicy
