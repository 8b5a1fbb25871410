"""flows/enterprise_orchestrator.py: a durable workflow whose body is a graph, on the
session's real Prefect server. Each route is taken for the task that needs it, the
reason/act loop stops at its cap, the breaker and the retry policy guard the agent,
and every decision is counted on the OpenTelemetry meter and shown as an artifact."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import beluga_flows as bf
import flows.enterprise_orchestrator as eo
from tests.prefect_api import artifacts, flow_run
from tests.procs import until

MANY_TERMS = "Which documents discuss retries, jitter, breakers, deadlines and observability?"


@pytest.fixture(scope="module")
def reader() -> Iterator[InMemoryMetricReader]:
    """An in-memory reader behind the example's decisions counter. The counter comes
    from the global OTel meter ``beluga_flows.examples``; a global provider can be set
    once per process (tests/test_telemetry.py sets its own), so this module gives the
    example the same counter from a private SDK provider instead."""
    found = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[found]).get_meter("beluga_flows.examples")
    counter = meter.create_counter("orchestrator.decisions")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(eo, "_decisions", counter)
        yield found


def decision_counts(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], int]:
    """``orchestrator.decisions`` by (node, choice, strategy)."""
    data = reader.get_metrics_data()
    counts: dict[tuple[str, str, str], int] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if sm.scope.name == "beluga_flows.examples" and m.name == "orchestrator.decisions":
                    for p in m.data.data_points:
                        a = p.attributes
                        counts[(a["node"], a["choice"], a["strategy"])] = p.value
    return counts


def start(task: str, **params: Any) -> bf.WorkflowHandle:
    wid = f"ent-{uuid.uuid4().hex[:10]}"
    return eo.enterprise.execute({"task": task, **params}, workflow_id=wid)


def result(handle: bf.WorkflowHandle) -> dict[str, Any]:
    out: dict[str, Any] = eo.enterprise.get_result(handle.workflow_id, handle.run_id, timeout=180)
    return out


@pytest.fixture(autouse=True)
def closed_breaker() -> Any:
    eo.AGENT_BREAKER.reset()
    yield
    eo.AGENT_BREAKER.reset()


@pytest.mark.parametrize(
    ("task", "strategy"),
    [
        *((task, strategy) for strategy, task in eo.EXAMPLES.items()),
        ("   ", "error_recovery"),
        ("x" * (eo.MAX_TASK_CHARS + 1), "error_recovery"),
        ("Please refund order 7", "approval"),
        ("1. count the invoices\n2. list the crashes", "parallel"),
        ("How do breakers work?", "react"),
        ("12 + 30", "react"),
        ("The export page is slow since Monday", "conditional"),
    ],
)
def test_the_strategy_is_a_pure_function_of_the_task(task: str, strategy: str) -> None:
    features = eo.analyse(task)
    assert eo.choose_strategy(features)[0] == strategy
    assert eo.choose_strategy(features) == eo.choose_strategy(eo.analyse(task))


def test_the_local_tools_do_real_work() -> None:
    assert eo.calc("17 * 23 + 4") == 395 and eo.calc("-3 * (2 + 4) / 4") == -4.5
    with pytest.raises(ValueError):
        eo.calc("__import__('os')")
    assert eo.search("jitter")["doc"] == "retries" and eo.search("zzz")["doc"] is None
    assert eo.count("timeout") > 0
    assert eo.triage("charged twice on the invoice") == "billing"
    assert eo.triage("it fails with a timeout") == "technical"
    assert eo.triage("hello there") == "general"


def test_outside_a_workflow_the_approval_node_is_invalid_state() -> None:
    state: dict[str, Any] = {"task": eo.EXAMPLES["approval"], "approval_timeout": 5}
    with pytest.raises(bf.OrchestratorError) as info:
        eo.build().invoke(state, provider="local")
    assert info.value.code is bf.ErrorCode.EXECUTION_FAILED and "human_approval" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, bf.OrchestratorError) and cause.code is bf.ErrorCode.INVALID_STATE


@pytest.fixture(scope="module")
def runs(
    prefect_server: Any, reader: InMemoryMetricReader
) -> dict[str, tuple[bf.WorkflowHandle, dict[str, Any]]]:
    """One workflow run per route that needs no reviewer, plus a capped react loop:
    all started at once, then waited for."""
    tasks = {k: ({"task": t}) for k, t in eo.EXAMPLES.items() if k != "approval"}
    tasks["react_capped"] = {"task": MANY_TERMS, "max_react_steps": 2}
    handles = {k: start(**params) for k, params in tasks.items()}
    return {k: (h, result(h)) for k, h in handles.items()}


def test_the_parallel_route_fans_out_one_agent_per_subtask(runs: Any) -> None:
    _, out = runs["parallel"]
    assert out["strategy"] == "parallel"
    assert [a["answer"] for a in out["result"]["answers"]] == [84.0, "retries", "circuit-breakers"]
    assert [d["node"] for d in out["decisions"]] == ["orchestrator", "parallel_executor"]


def test_the_conditional_route_sends_the_ticket_to_its_desk(runs: Any) -> None:
    _, out = runs["conditional"]
    assert out["strategy"] == "conditional"
    assert out["result"] == {"desk": "billing", "amounts": [49.9, 49.9], "total": 99.8}
    assert out["decisions"][-1] == {
        "node": "conditional_router",
        "choice": "billing",
        "why": "desk billing",
    }


def test_the_react_route_reasons_and_acts_until_it_can_answer(runs: Any) -> None:
    _, out = runs["react"]
    assert out["strategy"] == "react"
    res = out["result"]
    assert res["stopped"] == "answered" and res["steps"] == 2
    assert [(o["tool"], o["saw"]) for o in res["observations"]] == [
        ("calc", 395.0),
        ("count", eo.count("timeout")),
    ]
    assert [d["choice"] for d in out["decisions"]] == ["react", "calc", "count", "finish"]


def test_the_react_loop_stops_at_its_cap(runs: Any) -> None:
    _, out = runs["react_capped"]
    res = out["result"]
    assert eo.next_action(MANY_TERMS, res["observations"])[0] == "search"  # more to do
    assert res["stopped"] == "max_react_steps" and res["steps"] == 2
    assert [d["choice"] for d in out["decisions"]] == ["react", "search", "search", "finish"]


def test_an_unusable_task_goes_to_error_recovery(runs: Any) -> None:
    _, out = runs["error_recovery"]
    assert out["strategy"] == "error_recovery"
    assert out["result"] == {"degraded": False, "rejected": "the task is empty"}


def test_every_decision_is_a_metric_and_an_artifact(
    runs: Any, reader: InMemoryMetricReader
) -> None:
    counts = decision_counts(reader)
    for strategy in ("parallel", "conditional", "react", "error_recovery"):
        assert counts[("orchestrator", strategy, strategy)] >= 1
    assert counts[("react_agent", "calc", "react")] >= 1
    assert counts[("conditional_router", "billing", "conditional")] >= 1
    for handle, out in runs.values():
        # (at least one: a client retry of the write after a 503 from a busy SQLite
        # server may store it twice)
        tables = [a.data for a in artifacts(handle.run_id) if a.key == "orchestrator-decisions"]
        assert tables, handle
        for d in out["decisions"]:
            assert f"| {d['node']} | {d['choice']} |" in tables[-1]


@pytest.mark.usefixtures("prefect_server")
def test_retries_absorb_a_flaky_agent_and_the_breaker_guards_a_dead_one(tmp_path: Path) -> None:
    flaky, dead = tmp_path / "flaky", tmp_path / "dead"
    flaky.write_text("2")  # two transient failures: the third attempt answers
    dead.write_text("99")
    # One after the other: the breaker is shared by every run in this process.
    assert result(start(eo.EXAMPLES["conditional"], flaky=str(flaky)))["result"]["desk"] == (
        "billing"
    )
    assert flaky.read_text() == "0"

    out = result(start(eo.EXAMPLES["conditional"], flaky=str(dead)))
    assert dead.read_text() == "96"  # three attempts, then the orchestrator recovers
    assert out["strategy"] == "error_recovery" and out["result"]["degraded"] is True
    assert out["result"]["would_route_to"] == "conditional"
    assert out["decisions"][0]["why"].startswith("the analyst agent failed [ConnectionError]")

    eo.AGENT_BREAKER.trip()  # the agent is known to be down: no call reaches it
    dead.write_text("5")
    out = result(start(eo.EXAMPLES["react"], flaky=str(dead)))
    assert dead.read_text() == "5"
    assert out["result"]["breaker"] == "open" and out["result"]["would_route_to"] == "react"
    assert out["decisions"][0]["why"].startswith("the analyst agent failed [circuit_breaker_open]")


def _asks(handle: bf.WorkflowHandle) -> str:
    status: str = eo.enterprise.query(handle.workflow_id, handle.run_id, "status")
    return "" if status in ("pending", "scheduled", "running") else status


@pytest.mark.usefixtures("prefect_server")
def test_the_approval_route_waits_for_a_reviewer_and_carries_out_the_plan(
    reader: InMemoryMetricReader,
) -> None:
    handle = start(eo.EXAMPLES["approval"])
    assert until(lambda: _asks(handle), timeout=120, what="the approval request") == "paused"
    keyset = flow_run(handle.run_id).state.state_details.run_input_keyset
    assert keyset is not None  # the UI shows the approval form
    eo.enterprise.signal(
        handle.workflow_id,
        handle.run_id,
        "approval",
        {"approved": True, "reviewer": "ana", "comment": "go"},
    )
    out = result(handle)
    assert out["strategy"] == "approval"
    assert out["result"]["executed"] is True and out["result"]["reviewer"] == "ana"
    assert out["result"]["plan"] == [
        "step 1: Deploy release 4.2 to production",
        "step 2: delete the staging database",
    ]
    assert out["decisions"][-1] == {
        "node": "human_approval",
        "choice": "approved",
        "why": "by ana: go",
    }
    assert decision_counts(reader)[("human_approval", "approved", "approval")] >= 1
