"""The checks of ``@step`` / ``@flow`` options that name limits, breakers, task runners
and run names: each returns the checked value or raises ``INVALID_CONFIG`` naming
the option, at decoration time.

Example::

    breaker("step", "payments")  # -> "payments" (a breaker shared by name)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from beluga_flows._validate import config_error, positive_int
from beluga_flows.resilience.breaker import CircuitBreaker
from beluga_flows.resilience.providers import ProviderLimits

__all__ = ["breaker", "limit_name", "limits", "run_name", "task_runner"]


def limit_name(owner: str, field_name: str, value: Any) -> str | None:
    """A limit name (``concurrency=``, ``rate_limit=``, ``provider=``), or ``None``."""
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise config_error(owner, f"{field_name} must be a non-empty limit name, got {value!r}")
    return value


def limits(owner: str, options: dict[str, Any]) -> dict[str, Any]:
    """The checked limit options of ``@step``: concurrency, slots, rate limit, provider."""
    name = limit_name(owner, "concurrency", options["concurrency"])
    slots = options["max_concurrency"]
    if slots is not None:
        positive_int(owner, "max_concurrency", slots)
        if name is None:
            raise config_error(owner, "max_concurrency needs concurrency=<limit name>")
    provider = options["provider"]
    if not isinstance(provider, ProviderLimits):
        provider = limit_name(owner, "provider", provider)  # declared by call time
    return {
        "concurrency": name,
        "max_concurrency": slots,
        "rate_limit": limit_name(owner, "rate_limit", options["rate_limit"]),
        "provider": provider,
    }


def breaker(owner: str, value: Any) -> str | CircuitBreaker | None:
    """``circuit_breaker=``: a breaker name (resolved at call time) or a breaker."""
    if value is None or isinstance(value, CircuitBreaker):
        return value
    if isinstance(value, str) and value:
        return value  # shared by name, resolved at call time
    raise config_error(
        owner, f"circuit_breaker must be a breaker name or a CircuitBreaker, got {value!r}"
    )


def task_runner(owner: str, value: Any) -> Any:
    """``task_runner=``: a Prefect task runner, or ``None``."""
    if value is not None and not (hasattr(value, "submit") and hasattr(value, "duplicate")):
        raise config_error(owner, f"task_runner must be a Prefect TaskRunner, got {value!r}")
    return value


def run_name(owner: str, value: Any) -> str | Callable[[], str] | None:
    """``run_name=`` of a flow: a Prefect run-name template or a callable, or ``None``."""
    if value is None or callable(value) or (isinstance(value, str) and value.strip()):
        return value  # type: ignore[no-any-return]
    raise config_error(owner, f"run_name must be a non-empty string or a callable, got {value!r}")
