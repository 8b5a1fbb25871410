"""OpenTelemetry through the API only: the SDK is the application's choice.

Metric names are ``<prefix>.{chain,graph,workflow}.executions|errors|duration`` and
``<prefix>.active_{chains,graphs,workflows}``; every step call adds
``<prefix>.step.calls`` (``step.name``, ``status``, ``error.code``),
``<prefix>.step.duration`` and, per retry, ``<prefix>.step.retries``. Spans are
``<kind>.invoke``, ``chain.step`` / ``graph.node`` (where a member runs) and ``step``
(one per step call, placed by :mod:`beluga_flows.core.middleware`). Span attributes
carry names and outcomes, never input data.

Example::

    async with execution("chain", "summarise"):
        ...
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_state
from opentelemetry.trace import Span, Status, StatusCode

from beluga_flows.errors import OrchestratorError

__all__ = [
    "DEFAULT_PREFIX",
    "StepInstruments",
    "error_attrs",
    "execution",
    "fail",
    "instruments",
    "metrics_enabled",
    "observe_step",
    "observed",
    "record_breaker_change",
    "record_breaker_store_error",
    "record_sla_breach",
    "span",
    "start_span",
    "step_instruments",
    "step_retried",
    "tracer",
    "tracing_enabled",
]

T = TypeVar("T")
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


@dataclass(frozen=True)
class StepInstruments:
    """The instruments every step call reports to (see the module docstring)."""

    calls: metrics.Counter
    duration: metrics.Histogram
    retries: metrics.Counter


_step_instruments: StepInstruments | None = None


def step_instruments() -> StepInstruments:
    """The (cached) step instruments under :data:`DEFAULT_PREFIX`."""
    global _step_instruments
    if _step_instruments is None:
        p = f"{DEFAULT_PREFIX}.step"
        _step_instruments = StepInstruments(
            calls=_meter.create_counter(f"{p}.calls", description="step calls"),
            duration=_meter.create_histogram(
                f"{p}.duration", unit="s", description="step call duration, retries included"
            ),
            retries=_meter.create_counter(f"{p}.retries", description="step retries"),
        )
    return _step_instruments


def error_attrs(err: BaseException) -> dict[str, str]:
    """``error.code`` and ``error.type`` of ``err`` (never its message)."""
    code = err.code.value if isinstance(err, OrchestratorError) else "execution_failed"
    return {"error.code": code, "error.type": type(err).__name__}


def fail(sp: Span, err: BaseException) -> None:
    """Mark ``sp`` failed by ``err`` (status Error, ``error.code`` when it has one)."""
    sp.record_exception(err)
    sp.set_status(Status(StatusCode.ERROR, str(err)))
    if isinstance(err, Exception):
        sp.set_attribute("error.code", error_attrs(err)["error.code"])


@contextlib.asynccontextmanager
async def execution(
    kind: str,
    name: str,
    prefix: str = DEFAULT_PREFIX,
    attrs: dict[str, Any] | None = None,
    *,
    span_name: str | None = None,
) -> AsyncIterator[Span]:
    """Span ``<kind>.invoke`` (or ``span_name``) plus the execution/error/duration/active
    metrics."""
    inst = instruments(kind, prefix)
    base = {f"{kind}.name": name}
    inst.active.add(1, base)
    start = time.perf_counter()
    status = "ok"
    with tracer.start_as_current_span(
        span_name or f"{kind}.invoke",
        attributes={**base, **(attrs or {})},
        record_exception=False,
        set_status_on_exception=False,
    ) as sp:
        try:
            yield sp
        except BaseException as err:
            status = "error"
            if isinstance(err, Exception):
                inst.errors.add(1, {**base, **error_attrs(err)})
            fail(sp, err)
            raise
        finally:
            inst.executions.add(1, {**base, "status": status})
            inst.duration.record(time.perf_counter() - start, {**base, "status": status})
            inst.active.add(-1, base)


# Whether an SDK is installed is asked once per step call, so it must cost next to
# nothing: the API's own getters look the provider up in ``os.environ`` each time
# (~1.5 µs). The globals below are what they read after the first call (this module
# calls them at import through get_tracer/get_meter, which resolves any provider
# named by environment); a global provider is set once per process, so a yes is final.
_ASK = object()
_enabled = {"trace": False, "metrics": False}


def _set(kind: str) -> bool:
    if kind == "trace":
        value = getattr(trace, "_TRACER_PROVIDER", _ASK)
        if value is _ASK:  # an API without that global: ask it the slow way
            value = trace.get_tracer_provider()
            value = None if isinstance(value, trace.ProxyTracerProvider) else value
    else:
        value = getattr(_metrics_state, "_METER_PROVIDER", _ASK)
        if value is _ASK:
            value = metrics.get_meter_provider()
            value = None if isinstance(value, _metrics_state._ProxyMeterProvider) else value
    _enabled[kind] = value is not None
    return _enabled[kind]


def tracing_enabled() -> bool:
    """Whether the application installed a tracer provider (an SDK)."""
    return _enabled["trace"] or _set("trace")


def metrics_enabled() -> bool:
    """Whether the application installed a meter provider (an SDK)."""
    return _enabled["metrics"] or _set("metrics")


def observed() -> bool:
    """Whether anybody records spans or metrics (else telemetry may be skipped)."""
    return tracing_enabled() or metrics_enabled()


def start_span(name: str, attrs: dict[str, Any]) -> contextlib.AbstractContextManager[Span]:
    """A current span whose failure the caller records (:func:`fail`)."""
    return tracer.start_as_current_span(
        name, attributes=attrs, record_exception=False, set_status_on_exception=False
    )


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
            fail(sp, err)
            raise


class _StepCall:
    """What the telemetry layer learns about one step call while it runs."""

    __slots__ = ("attempts", "span")

    def __init__(self, span: Span | None) -> None:
        self.attempts = 1
        self.span = span


_STEP_CALL: contextvars.ContextVar[_StepCall | None] = contextvars.ContextVar(
    "beluga_step_call", default=None
)


async def observe_step(name: str, engine: str, body: Callable[[], Awaitable[T]]) -> T:
    """``await body()`` as one step call: span ``step`` (``step.name``, ``step.engine``,
    then ``step.attempts``, ``step.status``), ``step.calls`` and ``step.duration``."""
    cm = (
        start_span("step", {"step.name": name, "step.engine": engine})
        if tracing_enabled()
        else contextlib.nullcontext()
    )
    inst = step_instruments()
    start = time.perf_counter()
    with cm as sp:
        record = _StepCall(sp)
        token = _STEP_CALL.set(record)
        status, error = "cancelled", {}
        try:
            result = await body()
            status = "ok"
            return result
        except Exception as err:
            status, error = "error", {"error.code": error_attrs(err)["error.code"]}
            record.attempts = getattr(err, "attempts", record.attempts)
            if sp is not None:
                fail(sp, err)
            raise
        finally:
            _STEP_CALL.reset(token)
            if sp is not None:
                sp.set_attributes({"step.attempts": record.attempts, "step.status": status})
            base = {"step.name": name, "status": status}
            inst.calls.add(1, {**base, **error})
            inst.duration.record(time.perf_counter() - start, base)


def step_retried(name: str, err: BaseException, delay: float | None) -> None:
    """One more attempt of the current call of step ``name``: ``step.retries``, and a
    ``retry`` event on its span (``step.attempt``, ``error.code``, ``retry.delay``)."""
    code = error_attrs(err)
    record = _STEP_CALL.get()
    if record is not None:
        record.attempts += 1
        if record.span is not None:
            event: dict[str, str | int | float] = {"step.attempt": record.attempts, **code}
            if delay is not None:
                event["retry.delay"] = delay
            record.span.add_event("retry", event)
    step_instruments().retries.add(1, {"step.name": name, "error.code": code["error.code"]})


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


def record_sla_breach(workflow_id: str, target: str, prefix: str = DEFAULT_PREFIX) -> None:
    """Count one SLA breach (``<prefix>.sla.breaches``) of a definition's target."""
    counter = _sla_counters.get(prefix)
    if counter is None:
        counter = _sla_counters[prefix] = _meter.create_counter(
            f"{prefix}.sla.breaches", description="SLA targets breached"
        )
    counter.add(1, {"workflow.name": workflow_id, "sla.target": target})


_sla_counters: dict[str, metrics.Counter] = {}


def record_breaker_store_error(name: str, op: str) -> None:
    """Count failed breaker store operations: ``<prefix>.breaker.store_errors``."""
    global _breaker_store_errors
    if _breaker_store_errors is None:
        _breaker_store_errors = _meter.create_counter(
            f"{DEFAULT_PREFIX}.breaker.store_errors",
            description="breaker store operations that failed (process-local state used)",
        )
    _breaker_store_errors.add(1, {"breaker.name": name, "op": op})
