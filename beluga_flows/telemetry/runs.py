"""Spans, metrics, counters and the log record of runs and step calls.

Privacy: names, counts and outcomes only. An error is an ``exception`` event with
its type and ``error.code`` and a status naming the same; its message (which may
quote data) and the stack trace are recorded only when :data:`RECORD_DATA` is true,
as are a run's ``input`` / ``output`` (``repr``, at most 1 KiB, see
:func:`record_value`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode

from beluga_flows.errors import OrchestratorError
from beluga_flows.telemetry.counters import counters_in_force
from beluga_flows.telemetry.logs import log_run, span_ids
from beluga_flows.telemetry.meters import (
    counter,
    instruments,
    metrics_enabled,
    step_instruments,
    tracer,
    tracing_enabled,
)

__all__ = [
    "NAME_KEY",
    "RECORD_DATA",
    "error_attrs",
    "error_code",
    "execution",
    "fail",
    "observe_step",
    "record_breaker_change",
    "record_breaker_store_error",
    "record_sla_breach",
    "record_value",
    "span",
    "start_span",
    "step_retried",
    "use_record_data",
]

T = TypeVar("T")

# Whether input/output data and error messages may be recorded (an orchestrator's
# ``record_data=True``); off by default.
RECORD_DATA: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "beluga_record_data", default=False
)
# The name attribute of each kind of run: a definition is a workflow.
NAME_KEY = {
    "chain": "chain.name",
    "graph": "graph.name",
    "workflow": "workflow.name",
    "definition": "workflow.name",
}
_DATA_LIMIT = 1024
_NO_DATA: Any = object()
# Inside a workflow run: a definition run there (a durable definition) is not
# counted active a second time.
_IN_WORKFLOW: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "beluga_in_workflow", default=False
)


@contextlib.contextmanager
def use_record_data(enabled: bool) -> Iterator[None]:
    """Record (or not) input/output data and error messages for runs made inside."""
    token = RECORD_DATA.set(bool(enabled))
    try:
        yield
    finally:
        RECORD_DATA.reset(token)


def error_code(err: BaseException) -> str:
    """The ``error.code`` of ``err``: its code, ``task_canceled`` for a cancellation,
    else ``execution_failed``."""
    if isinstance(err, OrchestratorError):
        return err.code.value
    if isinstance(err, asyncio.CancelledError):
        return "task_canceled"
    return "execution_failed"


def error_attrs(err: BaseException) -> dict[str, str]:
    """``error.code`` and ``error.type`` of ``err`` (never its message)."""
    return {"error.code": error_code(err), "error.type": type(err).__name__}


def _truncated(text: str) -> str:
    return text if len(text) <= _DATA_LIMIT else text[: _DATA_LIMIT - 1] + "…"


def fail(sp: Span, err: BaseException) -> None:
    """Mark ``sp`` failed by ``err``: status Error and ``error.code``, an
    ``exception`` event; the message and stack trace only with :data:`RECORD_DATA`."""
    attrs = error_attrs(err)
    if RECORD_DATA.get():
        sp.record_exception(err, attributes={"error.code": attrs["error.code"]})
        sp.set_status(Status(StatusCode.ERROR, _truncated(str(err))))
    else:
        sp.add_event(
            "exception", {"exception.type": attrs["error.type"], "error.code": attrs["error.code"]}
        )
        sp.set_status(Status(StatusCode.ERROR, f"{attrs['error.type']} [{attrs['error.code']}]"))
    sp.set_attribute("error.code", attrs["error.code"])


def record_value(sp: Span, key: str, value: Any) -> None:
    """Set attribute ``key`` (``input``, ``output``) to ``repr(value)`` cut to 1 KiB,
    when data may be recorded (:data:`RECORD_DATA`) and the span is recording."""
    if RECORD_DATA.get() and sp.is_recording():
        try:
            text = repr(value)
        except Exception:  # a repr that fails never fails the run
            text = f"<{type(value).__name__}>"
        sp.set_attribute(key, _truncated(text))


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
    with start_span(name, attrs) as sp:
        try:
            yield sp
        except BaseException as err:
            fail(sp, err)
            raise


@contextlib.asynccontextmanager
async def execution(
    kind: str,
    name: str,
    prefix: str | None = None,
    attrs: dict[str, Any] | None = None,
    *,
    span_name: str | None = None,
    input: Any = _NO_DATA,
) -> AsyncIterator[Span]:
    """One run of ``kind`` (``chain``, ``graph``, ``workflow``, ``definition``) named
    ``name``: span ``<kind>.invoke`` (or ``span_name``), the run metrics under
    ``prefix`` (default: the one in force), the plain counters of ``get_metrics``
    (and of :func:`~beluga_flows.telemetry.use_counters`), and one log record at
    the end. ``input`` is recorded as by :func:`record_value` (the caller records
    the output). Yields the span (a non-recording one without a tracer provider)."""
    operation = span_name or f"{kind}.invoke"
    key = NAME_KEY.get(kind, f"{kind}.name")
    base = {key: name}
    active = not (kind == "definition" and _IN_WORKFLOW.get())
    token = _IN_WORKFLOW.set(True) if kind == "workflow" else None
    counters = counters_in_force()
    for c in counters:
        c.started(kind, active)
    inst = instruments(kind, prefix) if metrics_enabled() else None
    if inst is not None and active:
        inst.active.add(1, base)
    cm = (
        start_span(operation, {**base, **(attrs or {})})
        if tracing_enabled()
        else contextlib.nullcontext(INVALID_SPAN)
    )
    start = time.perf_counter()
    failed: BaseException | None = None
    ids = None
    try:
        with cm as sp:
            ids = span_ids(sp)
            if input is not _NO_DATA:
                record_value(sp, "input", input)
            try:
                yield sp
            except BaseException as err:
                failed = err
                fail(sp, err)
                raise
    finally:
        duration = time.perf_counter() - start
        error = isinstance(failed, Exception)
        code = error_code(failed) if failed is not None else None
        for c in counters:
            c.finished(kind, not error, active)
        if inst is not None:
            inst.executions.add(1, {**base, "success": failed is None})
            if error:
                inst.errors.add(1, {**base, "error.code": code})
            inst.duration.record(duration, {**base, "success": failed is None})
            if active:
                inst.active.add(-1, base)
        status = "ok" if failed is None else "error" if error else "cancelled"
        message = _truncated(str(failed)) if failed is not None and RECORD_DATA.get() else None
        log_run(operation, key, name, duration, status, code, ids, message)
        if token is not None:
            _IN_WORKFLOW.reset(token)


class _StepCall:
    """What the telemetry layer learns about one step call while it runs."""

    __slots__ = ("attempts", "fallback", "span")

    def __init__(self, span: Span | None) -> None:
        self.attempts = 1
        self.span = span
        self.fallback: str | None = None  # the error code a fallback replaced


_STEP_CALL: contextvars.ContextVar[_StepCall | None] = contextvars.ContextVar(
    "beluga_step_call", default=None
)


async def observe_step(name: str, engine: str, body: Callable[[], Awaitable[T]]) -> T:
    """``await body()`` as one step call: span ``step`` (``step.name``, ``step.engine``,
    then ``step.attempts``, ``step.status``), ``step.executions`` (``success``),
    ``step.errors`` (``error.code``) and ``step.duration``. A call that returned its
    fallback (:func:`step_fell_back`) has status ``fallback``, counts as not a
    success, and its error is counted in ``step.errors``."""
    cm = (
        start_span("step", {"step.name": name, "step.engine": engine})
        if tracing_enabled()
        else contextlib.nullcontext()
    )
    inst = step_instruments() if metrics_enabled() else None
    start = time.perf_counter()
    with cm as sp:
        record = _StepCall(sp)
        token = _STEP_CALL.set(record)
        status, code = "cancelled", None
        try:
            result = await body()
            if record.fallback is None:
                status = "ok"
            else:
                status, code = "fallback", record.fallback
            return result
        except Exception as err:
            status, code = "error", error_code(err)
            record.attempts = getattr(err, "attempts", record.attempts)
            if sp is not None:
                fail(sp, err)
            raise
        finally:
            _STEP_CALL.reset(token)
            if sp is not None:
                sp.set_attributes({"step.attempts": record.attempts, "step.status": status})
            if inst is not None:
                base: dict[str, str | bool] = {"step.name": name, "success": status == "ok"}
                inst.executions.add(1, base)
                if code is not None:
                    inst.errors.add(1, {"step.name": name, "error.code": code})
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
    if metrics_enabled():
        step_instruments().retries.add(1, {"step.name": name, "error.code": code["error.code"]})


def step_fell_back(name: str, err: BaseException) -> None:
    """The current call of step ``name`` failed with ``err`` and returns its fallback:
    span attributes ``step.fallback`` and ``error.code``, a ``fallback`` event; the
    telemetry layer then counts ``err`` in ``step.errors`` (status ``fallback``)."""
    record = _STEP_CALL.get()
    if record is None:
        return
    code = error_attrs(err)
    record.fallback = code["error.code"]
    if record.span is not None:
        record.span.set_attributes({"step.fallback": True, "error.code": code["error.code"]})
        record.span.add_event("fallback", {"step.attempt": record.attempts, **code})


def record_breaker_change(breaker: Any, old: Any, new: Any) -> None:
    """Count breaker state changes: ``<prefix>.breaker.state_changes``."""
    if metrics_enabled():
        counter("breaker.state_changes", "circuit breaker state changes").add(
            1, {"breaker.name": breaker.name, "from": str(old), "to": str(new)}
        )


def record_breaker_store_error(name: str, op: str) -> None:
    """Count failed breaker store operations: ``<prefix>.breaker.store_errors``."""
    if metrics_enabled():
        counter(
            "breaker.store_errors",
            "breaker store operations that failed (process-local state used)",
        ).add(1, {"breaker.name": name, "op": op})


def record_sla_breach(workflow_id: str, target: str) -> None:
    """Count one SLA breach (``<prefix>.sla.breaches``) of a definition's target."""
    if metrics_enabled():
        counter("sla.breaches", "SLA targets breached").add(
            1, {"workflow.name": workflow_id, "sla.target": target}
        )
