"""OpenTelemetry through the API only (the SDK is the application's choice), plain
run counters, and one structured log record per run.

Names (``<prefix>`` is :func:`current_prefix`, ``beluga.orchestration`` by default;
the full table is in ``docs/observability.md``):

* runs — counters ``<prefix>.<kind>.executions`` (``success``) and ``.errors``
  (``error.code``), histogram ``<prefix>.<kind>.duration`` (``s``) for ``kind`` in
  chain, graph, workflow, definition; up-down counters
  ``<prefix>.active_{chains,graphs,workflows}`` (a definition run counts as a
  workflow, once: not again inside a durable workflow run). Name attribute
  ``chain.name`` / ``graph.name`` / ``workflow.name`` (a definition's
  ``workflow_id``).
* step calls — ``<prefix>.step.executions`` (``step.name``, ``success``),
  ``.step.errors`` (``error.code``), ``.step.retries``, histogram ``.step.duration``.
* ``<prefix>.breaker.state_changes``, ``<prefix>.breaker.store_errors``,
  ``<prefix>.sla.breaches``.
* spans ``chain.invoke`` > ``chain.step`` > ``step``, ``graph.invoke`` >
  ``graph.node`` > ``step``, ``workflow.invoke`` / ``workflow.<op>``,
  ``definition.execute`` > ``definition.step`` > ``step``; failed: status Error,
  ``error.code``.

No input or output data anywhere unless :data:`RECORD_DATA` is set (see
:mod:`beluga_flows.telemetry.runs`). The modules: ``meters`` (meter, prefix,
instrument cache, SDK detection), ``counters`` (:class:`RunCounters`,
:func:`get_metrics`), ``logs`` (the run record, :func:`configure_logging`),
``runs`` (spans and metrics of runs and step calls).

Example::

    async with execution("chain", "summarise"):
        ...
"""

from __future__ import annotations

from beluga_flows.telemetry.counters import (
    RunCounters,
    counters_in_force,
    get_metrics,
    use_counters,
)
from beluga_flows.telemetry.logs import LOGGER, configure_logging, log_run
from beluga_flows.telemetry.meters import (
    DEFAULT_PREFIX,
    Instruments,
    StepInstruments,
    counter,
    current_prefix,
    init_metrics,
    instruments,
    metrics_enabled,
    observed,
    step_instruments,
    tracer,
    tracing_enabled,
    use_prefix,
)
from beluga_flows.telemetry.runs import (
    NAME_KEY,
    RECORD_DATA,
    error_attrs,
    error_code,
    execution,
    fail,
    observe_step,
    record_breaker_change,
    record_breaker_store_error,
    record_sla_breach,
    record_value,
    span,
    start_span,
    step_fell_back,
    step_retried,
    use_record_data,
)

__all__ = [
    "DEFAULT_PREFIX",
    "LOGGER",
    "NAME_KEY",
    "RECORD_DATA",
    "Instruments",
    "RunCounters",
    "StepInstruments",
    "configure_logging",
    "counter",
    "counters_in_force",
    "current_prefix",
    "error_attrs",
    "error_code",
    "execution",
    "fail",
    "get_metrics",
    "init_metrics",
    "instruments",
    "log_run",
    "metrics_enabled",
    "observe_step",
    "observed",
    "record_breaker_change",
    "record_breaker_store_error",
    "record_sla_breach",
    "record_value",
    "span",
    "start_span",
    "step_instruments",
    "step_fell_back",
    "step_retried",
    "tracer",
    "tracing_enabled",
    "use_counters",
    "use_prefix",
    "use_record_data",
]
