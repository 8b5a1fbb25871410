"""RetryPolicy: a small frozen value with a pure "delay before the next attempt, or
give up" decision.

Only the engine adapters turn a policy into behaviour: the local engine loops over
``next_delay``; the Prefect adapter translates it once into Prefect's ``retries``,
``retry_delay_seconds``, ``retry_jitter_factor`` and ``retry_condition_fn``.

Example::

    >>> import random
    >>> p = RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=0.0)
    >>> p.next_delay(1, ConnectionError(), random.Random(0))
    1.0
    >>> p.next_delay(3, ConnectionError(), random.Random(0)) is None   # exhausted
    True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from beluga_flows._validate import config_error, positive_int, seconds
from beluga_flows.errors import CODE_RULES, ErrorCode, OrchestratorError, matches

__all__ = ["NON_RETRYABLE_CODES", "RetryOn", "RetryPolicy"]

# Read from the one table in errors.py (what each code means for a retry and a breaker).
NON_RETRYABLE_CODES = frozenset(c for c, rule in CODE_RULES.items() if not rule.retryable)

RetryOn = Callable[[BaseException], bool] | tuple[type[BaseException] | ErrorCode, ...]
_MAX_ATTEMPTS = 1000


def _classified(err: BaseException) -> BaseException:
    """The error a retry decision looks at: a chain's EXECUTION_FAILED wrapper is
    judged by the step error that caused it."""
    while (
        isinstance(err, OrchestratorError)
        and err.code is ErrorCode.EXECUTION_FAILED
        and err.__cause__ is not None
    ):
        err = err.__cause__
    return err


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with a cap and jitter.

    ``max_attempts`` counts the first call. The delay before attempt ``n + 1`` is
    ``min(max_delay, initial_delay * multiplier ** (n - 1))`` spread by ``±jitter``
    (a fraction). ``retry_on`` is a predicate or a tuple of exception types and
    ``ErrorCode``s; by default an error with a code is retried when its code is
    retryable (:data:`~beluga_flows.errors.CODE_RULES`), an exception without one
    is retried, and control flow never is (cancellation is a ``BaseException``).
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.25
    retry_on: RetryOn | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        own = "retry_policy"
        positive_int(own, "max_attempts", self.max_attempts, maximum=_MAX_ATTEMPTS)
        initial = seconds(
            own, "initial_delay", self.initial_delay, allow_zero=True, allow_none=False
        )
        cap = seconds(own, "max_delay", self.max_delay, allow_zero=True, allow_none=False)
        object.__setattr__(self, "initial_delay", initial)
        object.__setattr__(self, "max_delay", cap)
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, int | float):
            raise config_error(own, f"multiplier must be a number >= 1, got {self.multiplier!r}")
        if not 1 <= self.multiplier < math.inf:  # nan fails this too
            raise config_error(own, f"multiplier must be finite and >= 1, got {self.multiplier!r}")
        jitter = self.jitter
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
            raise config_error(own, f"jitter must be a fraction in [0, 1], got {jitter!r}")
        object.__setattr__(self, "retry_on", _check_retry_on(self.retry_on))

    @classmethod
    def from_retries(cls, retries: int) -> RetryPolicy:
        """The policy behind the ``retries=n`` shorthand: ``n`` retries, default backoff."""
        return cls(max_attempts=retries + 1)

    def should_retry(self, err: BaseException) -> bool:
        """Whether ``err`` may be retried at all (ignores the attempt budget)."""
        if not isinstance(err, Exception):
            return False  # cancellation and other control flow
        err = _classified(err)
        if isinstance(err, OrchestratorError) and err.code is ErrorCode.TASK_CANCELED:
            return False
        retry_on = self.retry_on
        if retry_on is None:
            # only a code can say an error is permanent: an uncoded one is retried
            return not isinstance(err, OrchestratorError) or err.retryable
        if callable(retry_on):
            return bool(retry_on(err))
        return matches(err, retry_on)

    def backoff(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` (1-based), before jitter."""
        assert self.initial_delay is not None and self.max_delay is not None
        exponent = min(attempt - 1, 1024)  # avoid float overflow on huge budgets
        try:
            raw = self.initial_delay * self.multiplier**exponent
        except OverflowError:
            raw = self.max_delay
        return float(min(self.max_delay, raw))

    def next_delay(
        self, attempt: int, err: BaseException, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to give up.

        Pure: the same ``(attempt, err, rng state)`` gives the same answer.
        """
        if attempt >= self.max_attempts or not self.should_retry(err):
            return None
        base = self.backoff(attempt)
        if self.jitter == 0 or base == 0:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1.0 + spread))


def _check_retry_on(retry_on: Any) -> RetryOn | None:
    if retry_on is None or (callable(retry_on) and not isinstance(retry_on, type)):
        return retry_on  # type: ignore[no-any-return]
    items = (retry_on,) if isinstance(retry_on, type | ErrorCode) else retry_on
    if isinstance(items, list | tuple | set | frozenset):
        items = tuple(items)
        if items and all(
            isinstance(i, ErrorCode) or (isinstance(i, type) and issubclass(i, BaseException))
            for i in items
        ):
            return items
    raise config_error(
        "retry_policy",
        "retry_on must be a predicate or a tuple of exception types / ErrorCodes, "
        f"got {retry_on!r}",
    )
