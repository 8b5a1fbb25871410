"""The meter, the metric prefix in force, and the (cached) instruments per prefix.

Instruments are created once per ``(prefix, kind)`` on the meter in force and cached;
:func:`init_metrics` with a meter replaces the meter and drops the cache. Whether an
SDK is installed is asked on every step call, so that answer is cached too (see
:func:`tracing_enabled`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_state

from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "DEFAULT_PREFIX",
    "Instruments",
    "StepInstruments",
    "counter",
    "current_prefix",
    "init_metrics",
    "instruments",
    "metrics_enabled",
    "observed",
    "step_instruments",
    "tracer",
    "tracing_enabled",
    "use_prefix",
]

DEFAULT_PREFIX = "beluga.orchestration"
tracer = trace.get_tracer("beluga_flows")

# The process default (init_metrics(prefix=...)) and the meter in force; one dict so
# that a reader never sees one without the other.
_state: dict[str, Any] = {"prefix": DEFAULT_PREFIX, "meter": metrics.get_meter("beluga_flows")}
_PREFIX: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "beluga_metrics_prefix", default=None
)


def current_prefix() -> str:
    """The metric prefix in force: the innermost :func:`use_prefix`, else the process
    default (``beluga.orchestration`` unless :func:`init_metrics` set another)."""
    return _PREFIX.get() or _state["prefix"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def use_prefix(prefix: str) -> Iterator[None]:
    """Record every metric made inside under ``prefix`` (an orchestrator's
    ``metrics_prefix``)::

        with use_prefix("myapp.orchestration"):
            await chain.ainvoke(x)      # myapp.orchestration.chain.executions, ...
    """
    _check_prefix(prefix)
    token = _PREFIX.set(prefix)
    try:
        yield
    finally:
        _PREFIX.reset(token)


def _check_prefix(prefix: Any) -> None:
    if not isinstance(prefix, str) or not prefix.strip():
        raise OrchestratorError(
            "init_metrics", "metrics_prefix must be a non-empty string", ErrorCode.INVALID_CONFIG
        )


def init_metrics(meter: metrics.Meter | None = None, prefix: str | None = None) -> None:
    """Set up beluga's metrics for the process (idempotent).

    ``meter`` replaces the global OpenTelemetry meter for beluga's instruments (for an
    SDK ``MeterProvider`` the application does not install globally); ``prefix`` is
    the default metric prefix of every run not inside :func:`use_prefix`. ``None``
    leaves either as it is. The plain counters of :func:`get_metrics` need neither.

    Example::

        bf.init_metrics(MeterProvider(metric_readers=[reader]).get_meter("app"), "app")
    """
    if prefix is not None:
        _check_prefix(prefix)
        _state["prefix"] = prefix
    if meter is not None and meter is not _state["meter"]:
        _state["meter"] = meter
        _cache.clear()
        _enabled["metrics"] = True


def counter(name: str, description: str) -> metrics.Counter:
    """The (cached) counter ``<prefix>.<name>`` under the prefix in force."""
    prefix = current_prefix()
    key = (prefix, name)
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _state["meter"].create_counter(
            f"{prefix}.{name}", description=description
        )
    return found  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Instruments:
    """The instruments of one kind of run (chain, graph, workflow, definition)."""

    executions: metrics.Counter
    errors: metrics.Counter
    duration: metrics.Histogram
    active: metrics.UpDownCounter


_cache: dict[tuple[str, str], Any] = {}
# The ``active_*`` counter of each kind: a definition run is a workflow run.
_ACTIVE_OF = {"chain": "chains", "graph": "graphs", "workflow": "workflows"}


def instruments(kind: str, prefix: str | None = None) -> Instruments:
    """The (cached) instruments for ``kind`` under ``prefix`` (default: the one in
    force). A definition has no ``active_definitions``: ``active`` is the
    ``active_workflows`` counter for it (a definition run is a workflow run)."""
    prefix = prefix or current_prefix()
    key = (prefix, kind)
    found = _cache.get(key)
    if found is None:
        meter = _state["meter"]
        plural = _ACTIVE_OF.get(kind, "workflows")
        found = _cache[key] = Instruments(
            executions=meter.create_counter(
                f"{prefix}.{kind}.executions", description=f"finished {kind} runs"
            ),
            errors=meter.create_counter(
                f"{prefix}.{kind}.errors", description=f"failed {kind} runs"
            ),
            duration=meter.create_histogram(
                f"{prefix}.{kind}.duration", unit="s", description=f"{kind} run duration"
            ),
            active=meter.create_up_down_counter(
                f"{prefix}.active_{plural}", description=f"{plural} executing now"
            ),
        )
    return found  # type: ignore[no-any-return]


@dataclass(frozen=True)
class StepInstruments:
    """The instruments every step call reports to."""

    executions: metrics.Counter
    errors: metrics.Counter
    duration: metrics.Histogram
    retries: metrics.Counter


def step_instruments(prefix: str | None = None) -> StepInstruments:
    """The (cached) step instruments under ``prefix`` (default: the one in force)."""
    prefix = prefix or current_prefix()
    key = (prefix, "step")
    found = _cache.get(key)
    if found is None:
        meter, p = _state["meter"], f"{prefix}.step"
        found = _cache[key] = StepInstruments(
            executions=meter.create_counter(f"{p}.executions", description="step calls"),
            errors=meter.create_counter(f"{p}.errors", description="failed step calls"),
            duration=meter.create_histogram(
                f"{p}.duration", unit="s", description="step call duration, retries included"
            ),
            retries=meter.create_counter(f"{p}.retries", description="step retries"),
        )
    return found  # type: ignore[no-any-return]


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
    """Whether a meter provider is installed (or :func:`init_metrics` got a meter)."""
    return _enabled["metrics"] or _set("metrics")


def observed() -> bool:
    """Whether anybody records spans or metrics (else step telemetry may be skipped)."""
    return _enabled["trace"] or _enabled["metrics"] or _set("trace") or _set("metrics")
