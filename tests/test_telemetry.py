"""Spans and metrics, asserted exactly with the OpenTelemetry SDK's in-memory tools."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import beluga_flows as bf

PREFIX = "beluga.orchestration"
_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def otel_sdk() -> None:
    # Global providers can be set once per process; the API's proxies forward to them.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER


def points(metric: str, chain: str) -> list[Any]:
    data = _READER.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == metric:
                    found += [
                        p for p in m.data.data_points if p.attributes.get("chain.name") == chain
                    ]
    return found


def test_chain_spans_and_metrics(spans: InMemorySpanExporter) -> None:
    name = f"otel-{uuid.uuid4().hex[:6]}"

    @bf.step(track=False)
    def first(d: dict[str, Any]) -> str:
        return "secret-input-data"

    chain = bf.Chain([first, str.upper], name=name, provider="local")
    assert chain.invoke({"input": "secret-input-data"}) == "SECRET-INPUT-DATA"

    finished = [s for s in spans.get_finished_spans() if s.name.startswith("chain.")]
    assert [s.name for s in finished] == ["chain.step", "chain.step", "chain.invoke"]
    root = finished[-1]
    assert all(
        s.parent is not None and s.parent.span_id == root.context.span_id for s in finished[:2]
    )
    assert dict(root.attributes) == {"chain.name": name, "chain.steps": 2}
    assert [s.attributes["step.name"] for s in finished[:2]] == ["first", "upper"]
    for s in finished:  # no input data in attributes
        assert all("secret" not in str(v) for v in s.attributes.values())

    [executions] = points(f"{PREFIX}.chain.executions", name)
    assert executions.value == 1 and executions.attributes["status"] == "ok"
    [duration] = points(f"{PREFIX}.chain.duration", name)
    assert duration.count == 1 and duration.sum > 0
    [active] = points(f"{PREFIX}.active_chains", name)
    assert active.value == 0
    assert points(f"{PREFIX}.chain.errors", name) == []


def test_failed_chain_records_an_error(spans: InMemorySpanExporter) -> None:
    name = f"otel-fail-{uuid.uuid4().hex[:6]}"

    def broken(_: Any) -> None:
        raise ValueError("no")

    chain = bf.Chain([broken], name=name, provider="local")
    with pytest.raises(bf.OrchestratorError):
        chain.invoke("x")
    chain.batch(["x", "y"], return_exceptions=True)

    [errors] = points(f"{PREFIX}.chain.errors", name)
    assert errors.value == 3 and errors.attributes["error.code"] == "execution_failed"
    [executions] = points(f"{PREFIX}.chain.executions", name)
    assert executions.value == 3 and executions.attributes["status"] == "error"
    invokes = [s for s in spans.get_finished_spans() if s.name == "chain.invoke"]
    assert len(invokes) == 3 and all(s.status.status_code is StatusCode.ERROR for s in invokes)
    steps = [s for s in spans.get_finished_spans() if s.name == "chain.step"]
    assert all(s.status.status_code is StatusCode.ERROR for s in steps)


def test_workflow_spans_and_metrics(spans: InMemorySpanExporter, prefect_server: Any) -> None:
    from tests.workflow_app import steps

    handle = steps.execute({"ledger": "/dev/null", "n": 2})
    assert steps.get_result(handle.workflow_id, handle.run_id, timeout=60) == 1

    def named(name: str) -> list[Any]:
        return [s for s in spans.get_finished_spans() if s.name == name]

    [invoke] = named("workflow.invoke")
    assert dict(invoke.attributes) == {
        "workflow.name": "wf-ten-steps",
        "workflow.id": handle.workflow_id,
    }
    for op in ("workflow.execute", "workflow.get_result"):
        [sp] = named(op)
        assert sp.attributes["workflow.id"] == handle.workflow_id
    data = _READER.get_metrics_data()
    executions = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == f"{PREFIX}.workflow.executions"
        for p in m.data.data_points
        if p.attributes.get("workflow.name") == "wf-ten-steps"
    ]
    assert sum(p.value for p in executions) >= 1
