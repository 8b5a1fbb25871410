"""Errors: codes, message format, retry classification, pickling."""

from __future__ import annotations

import asyncio
import io
import pickle

import httpx
import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError, is_retryable

ALL_CODES = [
    "invalid_config",
    "execution_failed",
    "timeout",
    "dependency_failed",
    "resource_exhausted",
    "invalid_state",
    "not_found",
    "circuit_breaker_open",
    "rate_limit_exceeded",
    "invalid_input",
    "workflow_deadlock",
    "task_canceled",
    "max_retries_exceeded",
]
RETRYABLE = {
    "timeout",
    "dependency_failed",
    "resource_exhausted",
    "circuit_breaker_open",
    "rate_limit_exceeded",
}
# caller mistakes and control flow: say nothing about a dependency's health
NEUTRAL = {
    "invalid_config",
    "invalid_input",
    "not_found",
    "invalid_state",
    "task_canceled",
    "workflow_deadlock",
}


def test_error_codes_are_the_thirteen_str_values() -> None:
    assert [c.value for c in ErrorCode] == ALL_CODES
    for code in ErrorCode:
        assert isinstance(code, str)
        assert code.name == code.value.upper()
    assert ErrorCode("task_canceled") is ErrorCode.TASK_CANCELED


def test_str_format_and_attributes() -> None:
    cause = ValueError("bad value")
    err = OrchestratorError("chain", cause, ErrorCode.EXECUTION_FAILED)
    assert str(err) == "orchestrator chain [execution_failed]: bad value"
    assert err.op == "chain" and err.code is ErrorCode.EXECUTION_FAILED
    assert err.err is cause and err.__cause__ is cause
    msg = OrchestratorError("step", "took too long", "timeout", step="fetch")
    assert str(msg) == "orchestrator step [timeout]: took too long"
    assert msg.err is None and msg.step == "fetch" and msg.code is ErrorCode.TIMEOUT


@pytest.mark.parametrize("code", list(ErrorCode))
def test_retryable_by_code(code: ErrorCode) -> None:
    err = OrchestratorError("op", "x", code)
    assert err.retryable is (code.value in RETRYABLE)
    assert is_retryable(err) is (code.value in RETRYABLE)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_one_answer_per_code_for_retryable_the_default_policy_and_breakers(
    code: ErrorCode,
) -> None:
    # issue 11: three tables disagreed (a cause-less EXECUTION_FAILED said
    # retryable=False while the default policy retried it)
    err = OrchestratorError("op", "x", code)
    assert bf.RetryPolicy().should_retry(err) is err.retryable is (code.value in RETRYABLE)
    breaker = bf.CircuitBreaker(f"codes-{code.value}")
    assert breaker.counts_as_failure(err) is (code.value not in NEUTRAL)


def test_a_wrapper_is_judged_by_its_cause_and_a_plain_exception_is_retried() -> None:
    policy = bf.RetryPolicy()
    wrapped = OrchestratorError("chain", ConnectionError("reset"), ErrorCode.EXECUTION_FAILED)
    assert policy.should_retry(wrapped) and not wrapped.retryable  # the code is not transient
    assert policy.should_retry(ValueError("unclassified")) and not is_retryable(ValueError())


def _status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.1/")
    return httpx.HTTPStatusError(
        "x", request=request, response=httpx.Response(status, request=request)
    )


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (TimeoutError(), True),
        (ConnectionError(), True),
        (ConnectionRefusedError(), True),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (_status_error(429), True),
        (_status_error(503), True),
        (_status_error(404), False),
        (_status_error(500), False),
        (ValueError("no"), False),
        (KeyError("k"), False),
        (asyncio.CancelledError(), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_is_retryable_for_python_errors(err: BaseException, expected: bool) -> None:
    assert is_retryable(err) is expected


def test_errors_survive_pickling() -> None:
    err = OrchestratorError("chain", ValueError("v"), ErrorCode.EXECUTION_FAILED, step="s1")
    err.attempts = 3
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is OrchestratorError
    assert str(back) == str(err)
    assert back.code is ErrorCode.EXECUTION_FAILED and back.step == "s1" and back.attempts == 3
    assert isinstance(back.err, ValueError) and back.retryable is False


def test_unpicklable_cause_degrades_to_text() -> None:
    class Local(Exception):  # defined in a function: cannot be pickled
        pass

    err = OrchestratorError("step", Local("lost handle"), ErrorCode.TIMEOUT)
    err.handle = lambda: None  # an unpicklable attribute is dropped, not fatal
    # A plain pickler: importing Dask installs tblib's reducers for every exception
    # class process-wide, which pickle __cause__ themselves.
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.dispatch_table = {}
    pickler.dump(err)
    back = pickle.loads(buffer.getvalue())
    assert str(back) == "orchestrator step [timeout]: lost handle"
    assert back.retryable and not hasattr(back, "handle")


def test_unknown_code_is_rejected() -> None:
    with pytest.raises(ValueError):
        OrchestratorError("op", "x", "no_such_code")


def test_exported_from_package() -> None:
    assert bf.ErrorCode is ErrorCode and bf.is_retryable is is_retryable
