"""The one error type of beluga_flows, its codes, and the one table that classifies them.

Hierarchy::

    Exception
    └── OrchestratorError            .op .code .err .retryable (+ .step, .attempts, .run_id
                                      when known)

Every :class:`ErrorCode` has one row in :data:`CODE_RULES`, and everything that
classifies an error reads that row: :attr:`OrchestratorError.retryable` and
:func:`is_retryable`, the default :meth:`RetryPolicy.should_retry
<beluga_flows.retry.RetryPolicy.should_retry>` and
:meth:`CircuitBreaker.counts_as_failure
<beluga_flows.breaker.CircuitBreaker.counts_as_failure>`. A code is in one of three
classes:

=========  ====================================================  =========  ==========
class      codes                                                 retryable  breaker
=========  ====================================================  =========  ==========
transient  timeout, dependency_failed, resource_exhausted,        yes        a failure
           circuit_breaker_open, rate_limit_exceeded
failure    execution_failed, max_retries_exceeded                no         a failure
mistake    invalid_config, invalid_input, not_found,             no         neutral
           invalid_state, task_canceled, workflow_deadlock
=========  ====================================================  =========  ==========

* ``retryable`` means "the default retry policy retries it": ``err.retryable``,
  ``is_retryable(err)`` and ``RetryPolicy().should_retry(err)`` give one answer for
  an error with a code. A *failure* is not retried by default: a cause-less
  ``EXECUTION_FAILED`` is an error its raiser classified as failed without saying it
  is transient, and ``MAX_RETRIES_EXCEEDED`` says a retry budget is already spent
  (retrying it again multiplies nested budgets).
* An ``EXECUTION_FAILED`` that wraps a cause (a chain naming its failing step) is
  judged by the retry policy by that cause, and an exception without a code (a
  plain ``ValueError`` from your function) is retried by the default policy: only a
  code can say an error is permanent. ``is_retryable`` is stricter for those: it is
  True only for errors known to be transient (``TimeoutError``, ``ConnectionError``,
  httpx transport errors, HTTP 429/502/503/504).
* *neutral* codes never count against a circuit breaker: they say nothing about the
  dependency's health (the caller's mistake, or control flow).

Changed by issue 11 (the tables disagreed): the default policy no longer retries a
cause-less ``EXECUTION_FAILED`` or ``MAX_RETRIES_EXCEEDED``, and a
``WORKFLOW_DEADLOCK`` (a workflow's structure, not a dependency) no longer counts
against a breaker.

Control flow (cancellation, pause, terminate) is not an error: it travels as
``BaseException`` subclasses (``asyncio.CancelledError``, Prefect's signals) that
retries and breakers never catch.

Example::

    >>> err = OrchestratorError("chain", "step 1 'fetch' failed", ErrorCode.EXECUTION_FAILED)
    >>> str(err)
    "orchestrator chain [execution_failed]: step 1 'fetch' failed"
    >>> err.retryable
    False
"""

from __future__ import annotations

import enum
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "CODE_RULES",
    "NEUTRAL_CODES",
    "RETRYABLE_CODES",
    "CodeRule",
    "ErrorCode",
    "OrchestratorError",
    "is_retryable",
    "matches",
]


class ErrorCode(enum.StrEnum):
    """Why an orchestration operation failed; the value is the lower-case name."""

    INVALID_CONFIG = "invalid_config"
    EXECUTION_FAILED = "execution_failed"
    TIMEOUT = "timeout"
    DEPENDENCY_FAILED = "dependency_failed"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    INVALID_STATE = "invalid_state"
    NOT_FOUND = "not_found"
    CIRCUIT_BREAKER_OPEN = "circuit_breaker_open"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    INVALID_INPUT = "invalid_input"
    WORKFLOW_DEADLOCK = "workflow_deadlock"
    TASK_CANCELED = "task_canceled"
    MAX_RETRIES_EXCEEDED = "max_retries_exceeded"


@dataclass(frozen=True)
class CodeRule:
    """How one code is classified: retried by default? neutral for a breaker?"""

    retryable: bool
    neutral: bool


_TRANSIENT = CodeRule(retryable=True, neutral=False)
_FAILURE = CodeRule(retryable=False, neutral=False)
_MISTAKE = CodeRule(retryable=False, neutral=True)

CODE_RULES: Mapping[ErrorCode, CodeRule] = MappingProxyType(
    {
        ErrorCode.INVALID_CONFIG: _MISTAKE,
        ErrorCode.EXECUTION_FAILED: _FAILURE,
        ErrorCode.TIMEOUT: _TRANSIENT,
        ErrorCode.DEPENDENCY_FAILED: _TRANSIENT,
        ErrorCode.RESOURCE_EXHAUSTED: _TRANSIENT,
        ErrorCode.INVALID_STATE: _MISTAKE,
        ErrorCode.NOT_FOUND: _MISTAKE,
        ErrorCode.CIRCUIT_BREAKER_OPEN: _TRANSIENT,
        ErrorCode.RATE_LIMIT_EXCEEDED: _TRANSIENT,
        ErrorCode.INVALID_INPUT: _MISTAKE,
        ErrorCode.WORKFLOW_DEADLOCK: _MISTAKE,
        ErrorCode.TASK_CANCELED: _MISTAKE,
        ErrorCode.MAX_RETRIES_EXCEEDED: _FAILURE,
    }
)
RETRYABLE_CODES = frozenset(c for c, rule in CODE_RULES.items() if rule.retryable)
NEUTRAL_CODES = frozenset(c for c, rule in CODE_RULES.items() if rule.neutral)

_TRANSIENT_HTTP_STATUS = frozenset({429, 502, 503, 504})


class OrchestratorError(Exception):
    """An orchestration failure with a machine-readable :class:`ErrorCode`.

    ``err_or_message`` is either the underlying exception (kept as ``.err`` and as
    ``__cause__``) or a message string. Extra keyword attributes (``step=``,
    ``attempts=``, ``run_id=`` …) are stored on the error for callers to inspect.

    Example::

        raise OrchestratorError("step", "deadline of 2s passed", ErrorCode.TIMEOUT)
    """

    def __init__(
        self,
        op: str,
        err_or_message: BaseException | str,
        code: ErrorCode | str = ErrorCode.EXECUTION_FAILED,
        **attrs: Any,
    ) -> None:
        self.op = op
        self.code = ErrorCode(code)
        if isinstance(err_or_message, BaseException):
            self.err: BaseException | None = err_or_message
            self.message = str(err_or_message) or type(err_or_message).__name__
            self.__cause__ = err_or_message
        else:
            self.err = None
            self.message = str(err_or_message)
        for key, value in attrs.items():
            setattr(self, key, value)
        super().__init__(str(self))

    @property
    def retryable(self) -> bool:
        """Whether the default retry policy retries this code (see ``CODE_RULES``)."""
        return CODE_RULES[self.code].retryable

    def __str__(self) -> str:
        return f"orchestrator {self.op} [{self.code.value}]: {self.message}"

    def __repr__(self) -> str:
        return (
            f"OrchestratorError(op={self.op!r}, code={self.code.value!r}, message={self.message!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (Dask workers, subprocess runs): keep the
        # wrapped error when it pickles, else its text, never fail to pickle.
        err: BaseException | str = self.err if self.err is not None else self.message
        if self.err is not None:
            try:
                pickle.dumps(self.err)
            except Exception:
                err = f"{type(self.err).__name__}: {self.message}"
        state = {k: v for k, v in self.__dict__.items() if k not in {"op", "code", "err"}}
        state = {k: v for k, v in state.items() if _picklable(v)}
        return (_rebuild, (type(self), self.op, err, self.code.value, self.message), state)


def _rebuild(
    cls: type[OrchestratorError], op: str, err: BaseException | str, code: str, message: str
) -> OrchestratorError:
    new = cls(op, err, code)
    new.message = message
    return new


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def _http_status(err: BaseException) -> int | None:
    status = getattr(err, "status_code", None)
    if status is None:
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def is_retryable(err: BaseException) -> bool:
    """Whether ``err`` is worth retrying.

    True for the retryable codes, ``TimeoutError``, ``ConnectionError``, httpx
    transport errors and HTTP 429/502/503/504 responses; False for everything else,
    including control flow (cancellation).

    Example::

        >>> is_retryable(TimeoutError())
        True
        >>> is_retryable(ValueError("bad"))
        False
    """
    if isinstance(err, OrchestratorError):
        return err.retryable
    if not isinstance(err, Exception):
        return False
    if isinstance(err, TimeoutError | ConnectionError):
        return True
    httpx = sys.modules.get("httpx")  # an httpx error implies httpx is imported
    if httpx is not None and isinstance(err, httpx.TransportError):
        return True
    return _http_status(err) in _TRANSIENT_HTTP_STATUS


def matches(err: BaseException, kinds: tuple[type[BaseException] | ErrorCode, ...]) -> bool:
    """Whether ``err`` is an instance of one of ``kinds`` or carries one of its codes."""
    for kind in kinds:
        if isinstance(kind, ErrorCode):
            if isinstance(err, OrchestratorError) and err.code is kind:
                return True
        elif isinstance(err, kind):
            return True
    return False
