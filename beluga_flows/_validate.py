"""Small validators shared by every builder: each raises ``INVALID_CONFIG`` naming the field."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["config_error", "non_negative_int", "positive_int", "seconds", "tags"]

MAX_SECONDS = 24 * 3600.0


def config_error(owner: str, message: str) -> OrchestratorError:
    """An ``INVALID_CONFIG`` error raised while building ``owner``."""
    return OrchestratorError(owner, message, ErrorCode.INVALID_CONFIG)


def seconds(
    owner: str, field: str, value: Any, *, allow_zero: bool = False, allow_none: bool = True
) -> float | None:
    """Normalise a ``float | int | timedelta`` duration to float seconds, once."""
    if value is None:
        if allow_none:
            return None
        raise config_error(owner, f"{field} is required")
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise config_error(
            owner, f"{field} must be seconds (int, float or timedelta), got {value!r}"
        )
    try:
        result = float(value)
    except OverflowError:  # an int beyond any float
        result = math.inf
    if not math.isfinite(result):  # nan, or a wait that never ends
        raise config_error(owner, f"{field} must be a finite number of seconds, got {value!r}")
    if result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise config_error(owner, f"{field} must be {bound}, got {value!r}")
    if result > MAX_SECONDS and field.endswith("timeout"):
        raise config_error(owner, f"{field} must be at most 24 h, got {value!r}")
    return result


def positive_int(owner: str, field: str, value: Any, *, maximum: int | None = None) -> int:
    """Validate a count that must be at least 1 (``max_workers``, ``window`` …)."""
    bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
    if bad or (maximum is not None and value > maximum):
        bound = ">= 1" if maximum is None else f"in 1..{maximum}"
        raise config_error(owner, f"{field} must be an int {bound}, got {value!r}")
    return int(value)


def non_negative_int(owner: str, field: str, value: Any, *, maximum: int | None = None) -> int:
    """Validate a count such as ``retries``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise config_error(owner, f"{field} must be an int >= 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise config_error(owner, f"{field} must be at most {maximum}, got {value!r}")
    return value


def tags(owner: str, value: Any) -> tuple[str, ...]:
    """Tags are a string or an iterable of non-empty strings."""
    items = (value,) if isinstance(value, str) else value
    try:
        result = tuple(items)
    except TypeError:
        raise config_error(owner, f"tags must be strings, got {value!r}") from None
    if not all(isinstance(t, str) and t for t in result):
        raise config_error(owner, f"tags must be non-empty strings, got {value!r}")
    return result


def identifier(op: str, value: Any, what: str = "workflow_id") -> str:
    """A non-empty id or name of at most 255 characters (``INVALID_INPUT`` otherwise)."""
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise OrchestratorError(
            op,
            f"{what} must be a non-empty string of ≤ 255 chars, got {value!r}",
            ErrorCode.INVALID_INPUT,
        )
    return value
