"""OpenTelemetry through the API only: the SDK is the application's choice.

Metric names are ``<prefix>.{chain,graph,workflow}.executions|errors|duration`` and
``<prefix>.active_{chains,graphs,workflows}``; spans are ``<kind>.invoke`` and
``<kind>.step`` / ``<kind>.node``. Span attributes carry names and outcomes, never
input data.

Example::

    async with execution("chain", "summarise"):
        ...
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from beluga_flows.errors import OrchestratorError

__all__ = [
    "record_breaker_change",
    "record_breaker_store_error",
    "DEFAULT_PREFIX",
    "execution",
    "instruments",
    "span",
    "tracer",
    "tracing_enabled",
]

DEFAULT_PREFIX = "beluga.orchestration"
tracer = trace.get_tracer("beluga_flows")
_meter = metrics.get_meter("beluga_flows")


@dataclass(frozen=True)
class Instruments:
    """The instruments of one kind of run (chain, graph, workflow)."""

    executions: metrics.Counter
    errors: metrics.Counter
    duration: metrics.Histogram
    active: metrics.UpDownCounter


_instruments: dict[tuple[str, str], Instruments] = {}


def instruments(kind: str, prefix: str = DEFAULT_PREFIX) -> Instruments:
    """The (cached) instruments for ``kind`` under ``prefix``."""
    key = (kind, prefix)
    found = _instruments.get(key)
    if found is None:
        found = _instruments[key] = Instruments(
            executions=_meter.create_counter(
                f"{prefix}.{kind}.executions", description=f"{kind} executions"
            ),
            errors=_meter.create_counter(f"{prefix}.{kind}.errors", description=f"{kind} errors"),
            duration=_meter.create_histogram(
                f"{prefix}.{kind}.duration", unit="s", description=f"{kind} duration"
            ),
            active=_meter.create_up_down_counter(
                f"{prefix}.active_{kind}s", description=f"{kind}s executing now"
            ),
        )
    return found


def _error_attrs(err: BaseException) -> dict[str, str]:
    code = err.code.value if isinstance(err, OrchestratorError) else "execution_failed"
    return {"error.code": code, "error.type": type(err).__name__}


def _fail(sp: Span, err: BaseException) -> None:
    sp.record_exception(err)
    sp.set_status(Status(StatusCode.ERROR, str(err)))


@contextlib.asynccontextmanager
async def execution(
    kind: str, name: str, prefix: str = DEFAULT_PREFIX, attrs: dict[str, Any] | None = None
) -> AsyncIterator[Span]:
    """Span ``<kind>.invoke`` plus the execution/error/duration/active metrics."""
    inst = instruments(kind, prefix)
    base = {f"{kind}.name": name}
    inst.active.add(1, base)
    start = time.perf_counter()
    status = "ok"
    with tracer.start_as_current_span(
        f"{kind}.invoke",
        attributes={**base, **(attrs or {})},
        record_exception=False,
        set_status_on_exception=False,
    ) as sp:
        try:
            yield sp
        except BaseException as err:
            status = "error"
            if isinstance(err, Exception):
                inst.errors.add(1, {**base, **_error_attrs(err)})
            _fail(sp, err)
            raise
        finally:
            inst.executions.add(1, {**base, "status": status})
            inst.duration.record(time.perf_counter() - start, {**base, "status": status})
            inst.active.add(-1, base)


def tracing_enabled() -> bool:
    """Whether the application installed a tracer provider (an SDK)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextlib.contextmanager
def span(name: str, **attrs: Any) -> Iterator[Span | None]:
    """A child span that records a failure as its status.

    Without a tracer provider there is nobody to record it: the hot path (a span
    per graph node or chain step) then skips the API's no-op span machinery.
    """
    if not tracing_enabled():
        yield None
        return
    with tracer.start_as_current_span(
        name, attributes=attrs, record_exception=False, set_status_on_exception=False
    ) as sp:
        try:
            yield sp
        except BaseException as err:
            _fail(sp, err)
            raise


_breaker_changes: metrics.Counter | None = None


def record_breaker_change(breaker: Any, old: Any, new: Any) -> None:
    """Count breaker state changes: ``<prefix>.breaker.state_changes``."""
    global _breaker_changes
    if _breaker_changes is None:
        _breaker_changes = _meter.create_counter(
            f"{DEFAULT_PREFIX}.breaker.state_changes", description="circuit breaker state changes"
        )
    _breaker_changes.add(1, {"breaker.name": breaker.name, "from": str(old), "to": str(new)})


_breaker_store_errors: metrics.Counter | None = None


def record_breaker_store_error(name: str, op: str) -> None:
    """Count failed breaker store operations: ``<prefix>.breaker.store_errors``."""
    global _breaker_store_errors
    if _breaker_store_errors is None:
        _breaker_store_errors = _meter.create_counter(
            f"{DEFAULT_PREFIX}.breaker.store_errors",
            description="breaker store operations that failed (process-local state used)",
        )
    _breaker_store_errors.add(1, {"breaker.name": name, "op": op})
