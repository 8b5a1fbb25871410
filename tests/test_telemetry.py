"""Spans and metrics, asserted exactly with the OpenTelemetry SDK's in-memory tools."""

from __future__ import annotations

import asyncio
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


def points(metric: str, name: str, key: str = "chain.name") -> list[Any]:
    """The points of ``metric`` whose attribute ``key`` is ``name``."""
    data = _READER.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == metric:
                    found += [p for p in m.data.data_points if p.attributes.get(key) == name]
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
    assert dict(executions.attributes) == {"chain.name": name, "success": True}
    assert executions.value == 1
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
    assert dict(errors.attributes) == {"chain.name": name, "error.code": "execution_failed"}
    assert errors.value == 3
    [executions] = points(f"{PREFIX}.chain.executions", name)
    assert executions.value == 3 and executions.attributes["success"] is False
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
    # Workflow steps are step calls like any other: one ``step`` span each.
    work = [s for s in named("step") if s.attributes["step.name"] == "work"]
    assert [(s.attributes["step.engine"], s.attributes["step.status"]) for s in work] == [
        ("prefect", "ok"),
        ("prefect", "ok"),
    ]
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


# ---------------------------------------------------------------- the step stack


def step_points(metric: str, step: str) -> list[Any]:
    """The points of ``<prefix>.step.<metric>`` for step ``step``, as attribute dicts
    with their value (counters) or count (histograms)."""
    data = _READER.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == f"{PREFIX}.step.{metric}":
                    for p in m.data.data_points:
                        if p.attributes.get("step.name") == step:
                            value = getattr(p, "value", None)
                            found.append((dict(p.attributes), p.count if value is None else value))
    return sorted(found, key=str)


def step_spans(spans: InMemorySpanExporter, step: str) -> list[Any]:
    return [
        s
        for s in spans.get_finished_spans()
        if s.name == "step" and s.attributes.get("step.name") == step
    ]


def test_a_local_step_with_a_retry_is_one_span_with_a_retry_event(
    spans: InMemorySpanExporter,
) -> None:
    name = f"flaky-{uuid.uuid4().hex[:6]}"
    calls = []

    @bf.step(name=name, retry_policy=bf.RetryPolicy(max_attempts=3, initial_delay=0, jitter=0))
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ConnectionError("blip")
        return x * 2

    with bf.use_engine("local"):
        assert flaky(21) == 42

    [sp] = spans.get_finished_spans()
    assert dict(sp.attributes) == {
        "step.name": name,
        "step.engine": "local",
        "step.attempts": 2,
        "step.status": "ok",
    }
    assert sp.status.status_code is StatusCode.UNSET
    [event] = sp.events
    assert event.name == "retry"
    assert dict(event.attributes) == {
        "step.attempt": 2,
        "error.code": "execution_failed",
        "error.type": "ConnectionError",
        "retry.delay": 0.0,
    }
    assert step_points("executions", name) == [({"step.name": name, "success": True}, 1)]
    assert step_points("duration", name) == [({"step.name": name, "success": True}, 1)]
    assert step_points("errors", name) == []
    assert step_points("retries", name) == [
        ({"step.name": name, "error.code": "execution_failed"}, 1)
    ]


def test_a_failed_step_records_its_attempts_and_error_code(spans: InMemorySpanExporter) -> None:
    name = f"slow-{uuid.uuid4().hex[:6]}"

    @bf.step(name=name, timeout=0.05, track=False)
    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(bf.OrchestratorError):
        asyncio.run(slow())

    [sp] = step_spans(spans, name)
    assert sp.attributes["step.attempts"] == 1 and sp.attributes["step.status"] == "error"
    assert sp.status.status_code is StatusCode.ERROR and sp.attributes["error.code"] == "timeout"
    [event] = sp.events  # the exception's type and code, not its message
    assert (event.name, dict(event.attributes)) == (
        "exception",
        {"exception.type": "OrchestratorError", "error.code": "timeout"},
    )
    assert step_points("executions", name) == [({"step.name": name, "success": False}, 1)]
    assert step_points("errors", name) == [({"step.name": name, "error.code": "timeout"}, 1)]
    assert step_points("retries", name) == []


def test_a_graph_node_is_a_graph_node_span_around_its_step_span(
    spans: InMemorySpanExporter,
) -> None:
    graph = f"g-{uuid.uuid4().hex[:6]}"
    g = bf.Graph(name=graph, provider="local")
    g.add_node("count", lambda s: {"n": s["n"] + 1}, track=False)
    g.add_edge(bf.START, "count")
    assert g.invoke({"n": 1})["n"] == 2

    sp, node, invoke = spans.get_finished_spans()  # every span of the run, in end order
    assert (sp.name, node.name, invoke.name) == ("step", "graph.node", "graph.invoke")
    assert dict(node.attributes) == {"graph.name": graph, "step.name": "count", "node.iteration": 1}
    assert node.parent is not None and node.parent.span_id == invoke.context.span_id
    assert sp.parent is not None and sp.parent.span_id == node.context.span_id
    assert dict(sp.attributes) == {
        "step.name": "count",
        "step.engine": "local",
        "step.attempts": 1,
        "step.status": "ok",
    }


def test_a_chain_step_is_a_chain_step_span_around_its_step_span(
    spans: InMemorySpanExporter,
) -> None:
    first = f"first-{uuid.uuid4().hex[:6]}"

    @bf.step(name=first, track=False)
    def one(x: int) -> int:
        return x + 1

    chain = bf.Chain([one], name=f"c-{first}", provider="local")
    assert chain.invoke(1) == 2

    sp, site, invoke = spans.get_finished_spans()
    assert (sp.name, site.name, invoke.name) == ("step", "chain.step", "chain.invoke")
    assert dict(site.attributes) == {
        "chain.name": f"c-{first}",
        "step.name": first,
        "step.index": 0,
    }
    assert sp.parent is not None and sp.parent.span_id == site.context.span_id
    assert step_points("executions", first) == [({"step.name": first, "success": True}, 1)]


def test_a_prefect_step_counts_prefect_task_run_retries(
    spans: InMemorySpanExporter, prefect_server: Any
) -> None:
    name = f"pflaky-{uuid.uuid4().hex[:6]}"
    calls = []

    @bf.step(name=name, retry_policy=bf.RetryPolicy(max_attempts=3, initial_delay=0, jitter=0))
    async def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("blip")
        return x * 2

    @bf.flow(name=f"f-{name}")
    async def pipeline() -> int:
        return await flaky(21)  # type: ignore[no-any-return]

    with bf.use_engine("prefect"):
        assert asyncio.run(pipeline()) == 42

    # Prefect's own spans: the flow run's, and the task run's (all attempts) inside ours.
    task_run, sp, flow_run = spans.get_finished_spans()
    assert sp.name == "step" and flow_run.attributes is not None
    assert flow_run.attributes["prefect.run.type"] == "flow"
    assert "beluga:flow" in flow_run.attributes["prefect.tags"]  # type: ignore[operator]
    assert task_run.name.startswith(f"{name}-") and task_run.parent is not None
    assert task_run.parent.span_id == sp.context.span_id
    assert sp.parent is not None and sp.parent.span_id == flow_run.context.span_id
    assert dict(sp.attributes) == {
        "step.name": name,
        "step.engine": "prefect",
        "step.attempts": 3,
        "step.status": "ok",
    }
    assert [(e.name, e.attributes["step.attempt"]) for e in sp.events] == [
        ("retry", 2),
        ("retry", 3),
    ]
    assert step_points("executions", name) == [({"step.name": name, "success": True}, 1)]
    assert step_points("retries", name) == [
        ({"step.name": name, "error.code": "execution_failed"}, 2)
    ]


def test_router_and_scatter_gather_members_are_step_calls(spans: InMemorySpanExporter) -> None:
    tag = uuid.uuid4().hex[:6]

    def shout(x: str) -> str:
        return x.upper()

    def whisper(x: str) -> str:
        return x.lower()

    shout.__name__, whisper.__name__ = f"shout_{tag}", f"whisper_{tag}"
    router = bf.Router(lambda x: "loud", {"loud": shout, "quiet": whisper})
    fan = bf.scatter_gather([shout, whisper], aggregate=" ".join)
    with bf.use_engine("local"):
        assert router.invoke("Hi") == "HI"
        assert fan.invoke("Hi") == "HI hi"

    assert len(step_spans(spans, f"shout_{tag}")) == 2
    assert len(step_spans(spans, f"whisper_{tag}")) == 1
    assert [sp.attributes["step.status"] for sp in step_spans(spans, "<lambda>")] == ["ok"]
    assert step_points("executions", f"shout_{tag}") == [
        ({"step.name": f"shout_{tag}", "success": True}, 2)
    ]


def test_a_definition_run_has_its_spans_metrics_and_sla_breaches(
    spans: InMemorySpanExporter,
) -> None:
    wid = f"otel-def-{uuid.uuid4().hex[:6]}"

    async def slow(n: int) -> int:
        await asyncio.sleep(0.05)
        return n + 1

    def broken(data: dict[str, Any]) -> None:
        raise ValueError("secret-output-data")

    definition = bf.WorkflowDefinition.from_dict(
        {
            "workflow_id": wid,
            "steps": [
                {"step_id": "one", "action": "slow", "input_mapping": {"n": "n"}},
                {"step_id": "two", "action": "broken", "dependencies": ["one"]},
            ],
            "sla_targets": {"steps": {"one": 0.01}},
        }
    )
    engine = bf.WorkflowEngine({"slow": slow, "broken": broken}, provider="local")
    result = engine.execute(definition, {"n": 41})
    assert result.status == "failed"

    finished = [s for s in spans.get_finished_spans() if s.name.startswith("definition.")]
    assert [s.name for s in finished] == [
        "definition.step",
        "definition.step",
        "definition.execute",
    ]
    root = finished[-1]
    assert all(
        s.parent is not None and s.parent.span_id == root.context.span_id for s in finished[:2]
    )
    assert dict(root.attributes) == {
        "workflow.name": wid,
        "definition.version": "1.0",
        "definition.steps": 2,
        "error.code": "execution_failed",
    }
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.code"] == "execution_failed"
    assert [dict(s.attributes) for s in finished[:1]] == [
        {"workflow.name": wid, "step.name": "one", "node.iteration": 1}
    ]
    assert [s.attributes["step.name"] for s in finished[:2]] == ["one", "two"]
    assert finished[1].status.status_code is StatusCode.ERROR
    for s in spans.get_finished_spans():  # no input or output data in any attribute
        assert "secret-output-data" not in str(dict(s.attributes or {}))

    def of(metric: str, key: str = "workflow.name") -> list[Any]:
        return points(f"{PREFIX}.{metric}", wid, key)

    assert sum(p.value for p in of("definition.executions")) == 1
    assert sum(p.value for p in of("definition.errors")) == 1
    (duration,) = of("definition.duration")
    assert duration.count == 1
    (breach,) = of("sla.breaches", "workflow.name")
    assert breach.value == 1 and breach.attributes["sla.target"] == "one"


# ---------------------------------------------------------------- names, prefix, counters


def _same(x: Any) -> Any:
    return x


def metric_units() -> dict[str, str]:
    """Every exported beluga metric name with its unit."""
    data = _READER.get_metrics_data()
    return {
        m.name: m.unit
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        if sm.scope.name == "beluga_flows"
        for m in sm.metrics
    }


def run_each_kind(tag: str) -> None:
    """One chain, one graph and one definition run (local), each with a step."""

    @bf.step(name=f"inc-{tag}", track=False)
    def inc(x: int) -> int:
        return x + 1

    assert bf.Chain([inc], name=f"c-{tag}", provider="local").invoke(1) == 2
    g = bf.Graph(name=f"g-{tag}", provider="local")
    g.add_node("n", lambda s: {"n": s["n"] + 1}, track=False)
    g.add_edge(bf.START, "n")
    assert g.invoke({"n": 1})["n"] == 2
    definition = bf.WorkflowDefinition.from_dict(
        {"workflow_id": f"d-{tag}", "steps": [{"step_id": "one", "action": "inc"}]}
    )
    result = bf.WorkflowEngine({"inc": lambda d: 1}, provider="local").execute(definition, {})
    assert result.status == "completed"


def test_the_metric_names_and_units_are_the_contracts() -> None:
    run_each_kind(uuid.uuid4().hex[:6])
    units = metric_units()
    for kind in ("chain", "graph", "definition"):
        assert units[f"{PREFIX}.{kind}.executions"] == ""
        assert units[f"{PREFIX}.{kind}.duration"] == "s"
    for plural in ("chains", "graphs", "workflows"):
        assert f"{PREFIX}.active_{plural}" in units
    assert f"{PREFIX}.active_definitions" not in units  # a definition is a workflow
    assert units[f"{PREFIX}.step.executions"] == "" and units[f"{PREFIX}.step.duration"] == "s"
    assert not any(name.endswith("step.calls") for name in units)


def test_use_prefix_puts_every_instrument_under_its_prefix(spans: InMemorySpanExporter) -> None:
    tag, prefix = uuid.uuid4().hex[:6], f"app{uuid.uuid4().hex[:4]}.orchestration"
    with bf.telemetry.use_prefix(prefix):
        run_each_kind(tag)
        bf.CircuitBreaker(f"b-{tag}").trip()
        flaky_calls: list[int] = []

        @bf.step(name=f"flaky-{tag}", retries=1, track=False)
        def flaky() -> int:
            flaky_calls.append(1)
            if len(flaky_calls) == 1:
                raise ConnectionError("blip")
            return 1

        with bf.use_engine("local"):
            assert flaky() == 1
    assert bf.telemetry.current_prefix() == PREFIX

    def at(metric: str, name: str, key: str) -> list[Any]:
        return points(f"{prefix}.{metric}", name, key)

    assert [p.value for p in at("chain.executions", f"c-{tag}", "chain.name")] == [1]
    assert [p.value for p in at("active_chains", f"c-{tag}", "chain.name")] == [0]
    assert [p.value for p in at("graph.executions", f"g-{tag}", "graph.name")] == [1]
    assert [p.value for p in at("definition.executions", f"d-{tag}", "workflow.name")] == [1]
    assert [p.value for p in at("active_workflows", f"d-{tag}", "workflow.name")] == [0]
    assert [p.value for p in at("step.executions", f"inc-{tag}", "step.name")] == [1]
    assert [p.value for p in at("step.retries", f"flaky-{tag}", "step.name")] == [1]
    [change] = at("breaker.state_changes", f"b-{tag}", "breaker.name")
    assert dict(change.attributes) == {"breaker.name": f"b-{tag}", "from": "closed", "to": "open"}
    assert points(f"{PREFIX}.chain.executions", f"c-{tag}") == []  # nothing under the default


def test_get_metrics_counts_runs_without_any_sdk_and_per_counters() -> None:
    tag = uuid.uuid4().hex[:6]
    seen: list[dict[str, int]] = []
    mine = bf.telemetry.RunCounters()

    @bf.step(track=False)
    def look(x: int) -> int:
        seen.append(bf.get_metrics())
        seen.append(mine.snapshot())
        return x

    def broken(_: Any) -> None:
        raise ValueError("no")

    before = bf.get_metrics()
    with bf.telemetry.use_counters(mine):
        assert bf.Chain([look], name=f"m-{tag}", provider="local").invoke(1) == 1
        with pytest.raises(bf.OrchestratorError):
            bf.Chain([broken], name=f"b-{tag}", provider="local").invoke(1)
    after = bf.get_metrics()
    assert seen[0]["active_chains"] >= before["active_chains"] + 1
    assert seen[1]["active_chains"] == 1  # the chain running `look`, counted by `mine`
    assert mine.snapshot() == {
        "active_chains": 0,
        "active_graphs": 0,
        "active_workflows": 0,
        "total_executions": 2,
        "error_count": 1,
    }
    assert after["total_executions"] - before["total_executions"] >= 2
    assert after["error_count"] - before["error_count"] >= 1


def test_init_metrics_takes_a_meter_and_a_default_prefix() -> None:
    from beluga_flows.telemetry import meters

    reader = InMemoryMetricReader()
    own = MeterProvider(metric_readers=[reader]).get_meter("app")
    saved = meters._state["meter"]
    tag = uuid.uuid4().hex[:6]
    try:
        bf.init_metrics(own, prefix="own.prefix")
        bf.init_metrics(own, prefix="own.prefix")  # idempotent
        assert bf.telemetry.current_prefix() == "own.prefix"
        bf.Chain([_same], name=f"i-{tag}", provider="local").invoke("x")
        with pytest.raises(bf.OrchestratorError, match="metrics_prefix"):
            bf.init_metrics(prefix="")
    finally:
        bf.init_metrics(saved, prefix=PREFIX)
    data = reader.get_metrics_data()
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"own.prefix.chain.executions", "own.prefix.active_chains"} <= names
    assert points(f"{PREFIX}.chain.executions", f"i-{tag}") == []


# ---------------------------------------------------------------- logs


def test_each_run_logs_one_record_with_its_fields(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    tag = uuid.uuid4().hex[:6]

    def broken(_: Any) -> None:
        raise ValueError("no")

    caplog.set_level("INFO", logger="beluga_flows")
    bf.Chain([_same], name=f"ok-{tag}", provider="local").invoke("x")
    with pytest.raises(bf.OrchestratorError):
        bf.Chain([broken], name=f"bad-{tag}", provider="local").invoke("x")

    ok, bad = (
        [r for r in caplog.records if getattr(r, "chain.name", None) == n]
        for n in (f"ok-{tag}", f"bad-{tag}")
    )
    [ok_record], [bad_record] = ok, bad
    [ok_span] = [
        s for s in spans.get_finished_spans() if s.attributes.get("chain.name") == f"ok-{tag}"
    ][-1:]
    assert (ok_record.name, ok_record.levelname) == ("beluga_flows", "INFO")
    fields = {k: getattr(ok_record, k) for k in ("operation", "status", "trace.id", "span.id")}
    assert fields == {
        "operation": "chain.invoke",
        "status": "ok",
        "trace.id": f"{ok_span.context.trace_id:032x}",
        "span.id": f"{ok_span.context.span_id:016x}",
    }
    assert 0 < ok_record.duration < 5 and not hasattr(ok_record, "error.code")
    assert bad_record.levelname == "ERROR" and bad_record.status == "error"
    assert getattr(bad_record, "error.code") == "execution_failed"
    assert "no" not in bad_record.getMessage().split()  # the error's message is data


def test_configure_logging_writes_json_lines() -> None:
    import io
    import json
    import logging

    tag = uuid.uuid4().hex[:6]
    stream = io.StringIO()
    logger = bf.configure_logging(json=True, level="INFO", stream=stream)
    try:
        bf.configure_logging(json=True, level="INFO", stream=stream)  # replaces, not adds
        bf.Chain([_same], name=f"j-{tag}", provider="local").invoke("x")
        g = bf.Graph(name=f"jg-{tag}", provider="local")
        g.add_node("n", lambda s: None, track=False)
        g.add_edge(bf.START, "n")
        g.invoke({})
    finally:
        for h in [h for h in logger.handlers if h.formatter is not None]:
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [r for r in lines if tag in r.get("chain.name", r.get("graph.name", ""))]
    assert [(r["operation"], r["status"], r["level"]) for r in mine] == [
        ("chain.invoke", "ok", "INFO"),
        ("graph.invoke", "ok", "INFO"),
    ]
    for r in mine:
        assert {"message", "time", "duration", "trace.id", "span.id"} <= set(r)
        assert len(r["trace.id"]) == 32 and len(r["span.id"]) == 16


# ---------------------------------------------------------------- privacy


SECRET = "s3cr3t-4f9a"


def run_with_secrets(tag: str) -> None:
    """A chain, a graph, a definition and a failing step, with SECRET in their data."""

    @bf.step(name=f"leaky-{tag}", track=False)
    def leaky(x: Any) -> None:
        raise ValueError(f"bad value {SECRET}")

    bf.Chain([lambda d: {"out": SECRET + d["in"]}], name=f"pc-{tag}", provider="local").invoke(
        {"in": SECRET}
    )
    g = bf.Graph(name=f"pg-{tag}", provider="local")
    g.add_node("n", lambda s: {"out": SECRET}, track=False)
    g.add_edge(bf.START, "n")
    g.invoke({"in": SECRET})
    definition = bf.WorkflowDefinition.from_dict(
        {"workflow_id": f"pd-{tag}", "steps": [{"step_id": "one", "action": "echo"}]}
    )
    bf.WorkflowEngine({"echo": lambda d: {"out": SECRET}}, provider="local").execute(
        definition, {"in": SECRET}
    )
    with pytest.raises(bf.OrchestratorError):
        bf.Chain([leaky], name=f"pf-{tag}", provider="local").invoke(SECRET)


def everything_recorded(spans: InMemorySpanExporter, records: list[Any]) -> str:
    """Every span (name, status, attributes, events), metric point and log record, as text."""
    out = []
    for s in spans.get_finished_spans():
        out.append(f"{s.name} {s.status.description} {dict(s.attributes or {})}")
        out += [f"{e.name} {dict(e.attributes or {})}" for e in s.events]
    data = _READER.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out += [f"{m.name} {dict(p.attributes)}" for p in m.data.data_points]
    for r in records:
        out.append(f"{r.getMessage()} {r.__dict__}")
    return "\n".join(out)


@pytest.mark.parametrize("record_data", [False, True])
def test_no_data_is_recorded_unless_record_data(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, record_data: bool
) -> None:
    caplog.set_level("DEBUG", logger="beluga_flows")
    with bf.telemetry.use_record_data(record_data):
        run_with_secrets(uuid.uuid4().hex[:6])
    recorded = everything_recorded(spans, caplog.records)
    assert recorded.count("chain.invoke") >= 2 and "definition.execute" in recorded
    assert (SECRET in recorded) is record_data
    if record_data:  # inputs, outputs and the failure's message
        invokes = [s for s in spans.get_finished_spans() if s.name == "chain.invoke"]
        assert SECRET in invokes[0].attributes["input"]
        assert SECRET in invokes[0].attributes["output"]
        assert any(
            SECRET in str(e.attributes) for s in spans.get_finished_spans() for e in s.events
        )


@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_a_fallback_is_counted_as_the_error_it_replaced(
    spans: InMemorySpanExporter, engine: str, request: pytest.FixtureRequest
) -> None:
    if engine == "prefect":
        request.getfixturevalue("prefect_server")
    name = f"fb-{engine}-{uuid.uuid4().hex[:6]}"
    policy = bf.RetryPolicy(max_attempts=2, initial_delay=0, jitter=0)

    @bf.step(name=name, retry_policy=policy, fallback="default")
    def down() -> str:
        raise ConnectionError("down")

    with bf.use_engine(engine):
        assert down() == "default"

    [sp] = step_spans(spans, name)
    assert sp.attributes["step.status"] == "fallback" and sp.attributes["step.fallback"] is True
    assert sp.attributes["step.attempts"] == 2
    assert sp.attributes["error.code"] == "execution_failed"
    assert [e.name for e in sp.events] == ["retry", "fallback"]
    assert step_points("executions", name) == [({"step.name": name, "success": False}, 1)]
    assert step_points("errors", name) == [
        ({"step.name": name, "error.code": "execution_failed"}, 1)
    ]
