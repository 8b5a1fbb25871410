"""What a user sees in the Prefect UI: runs, names, states and error codes."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError

from .prefect_api import artifacts, flow_runs, task_runs

pytestmark = pytest.mark.usefixtures("prefect_server")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_chain_outside_a_flow_is_one_flow_run_with_a_task_run_per_step() -> None:
    @bf.step
    def load(d: dict[str, Any]) -> list[int]:
        return [1, 2, 3]

    @bf.step
    async def total(xs: list[int]) -> int:
        return sum(xs)

    name = unique("sum-chain")
    assert bf.Chain([load, total], name=name).invoke({"input": "x"}) == 6
    [run] = flow_runs(name)
    assert run.state.is_completed() and "beluga:chain" in run.tags
    tasks = task_runs(run.id, expect=2)
    assert [t.name.rsplit("-", 1)[0] for t in tasks] == ["load", "total"]
    assert all(t.state.is_completed() for t in tasks)


def test_chain_inside_a_flow_runs_as_task_runs_of_that_flow() -> None:
    chain_name, flow_name = unique("inner"), unique("outer")

    @bf.step
    def a(x: int) -> int:
        return x + 1

    @bf.step(track=False)
    def glue(x: int) -> int:  # inline: no task run
        return x * 2

    chain = bf.Chain([a, glue, a], name=chain_name)

    @bf.flow(name=flow_name)
    def outer(x: int) -> int:
        return chain.invoke(x)

    assert outer(1) == 5
    assert flow_runs(chain_name, expect=0, timeout=0) == []
    [run] = flow_runs(flow_name)
    names = [t.name.rsplit("-", 1)[0] for t in task_runs(run.id, expect=2)]
    assert names == ["a", "a"]


def test_failed_runs_show_the_error_code_in_their_state_message() -> None:
    flow_name = unique("failing")

    @bf.step(timeout=0.2)
    async def too_slow() -> None:
        await asyncio.sleep(5)

    @bf.flow(name=flow_name)
    async def failing() -> None:
        await too_slow()

    with pytest.raises(OrchestratorError) as info:
        asyncio.run(failing())
    assert info.value.code is ErrorCode.TIMEOUT
    [run] = flow_runs(flow_name)
    assert run.state.is_failed() and "[timeout]" in run.state.message
    [task] = task_runs(run.id, expect=1)
    assert task.state.is_failed() and "[timeout]" in task.state.message


def test_failed_chain_flow_run_shows_execution_failed() -> None:
    name = unique("broken-chain")

    def boom(_: Any) -> None:
        raise ValueError("no")

    with pytest.raises(OrchestratorError):
        bf.Chain([boom], name=name).invoke("x")
    [run] = flow_runs(name)
    assert run.state.is_failed()
    assert "[execution_failed]" in run.state.message and "'boom'" in run.state.message


def test_retries_are_visible_as_task_run_attempts() -> None:
    flow_name = unique("retrying")
    calls: list[int] = []

    @bf.step(retry_policy=bf.RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0))
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("blip")
        return "ok"

    @bf.flow(name=flow_name)
    def retrying() -> str:
        return flaky()

    assert retrying() == "ok"
    [run] = flow_runs(flow_name)
    [task] = task_runs(run.id, expect=1)
    assert task.state.is_completed() and task.run_count == 3


def test_prefect_translation_keeps_retry_condition_a_plain_function() -> None:
    from beluga_flows.engine.prefect.adapter import prefect_task

    @bf.step(retry_policy=bf.RetryPolicy(max_attempts=4, initial_delay=1, max_delay=3))
    def s() -> None: ...

    task = prefect_task(s)
    assert task.retries == 3 and task.retry_delay_seconds == [1.0, 2.0, 3.0]
    assert task.retry_jitter_factor == 0.25
    # Prefect silently ignores a partial or callable object here (measured)
    assert inspect.isfunction(task.retry_condition_fn)


def test_sync_flows_run_on_prefects_async_engine() -> None:
    @bf.flow
    def plain(x: int) -> int:
        return x

    # A sync Prefect flow pays a ~1.1 s heartbeat join at exit; ours never is one.
    assert inspect.iscoroutinefunction(plain.to_prefect().fn)
    assert plain(3) == 3


def test_flow_tags_and_parameters_reach_the_api() -> None:
    flow_name = unique("tagged")

    @bf.step(tags=["io"])
    def load(day: str) -> str:
        return day

    @bf.flow(name=flow_name, tags=["nightly", "beluga"])
    def tagged(day: str, n: int = 2) -> str:
        return load(day) * n

    assert tagged("mo") == "momo"
    [run] = flow_runs(flow_name)
    assert {"nightly", "beluga", "beluga:flow"} <= set(run.tags)
    assert run.parameters == {"day": "mo", "n": 2}
    # A flow's tags mark its flow run; its task runs carry their step's tags only
    # (a tagged task run costs a tag-concurrency look-up in Prefect).
    [task] = task_runs(run.id, expect=1)
    assert task.tags == ["io"] and task.name.startswith("load-")
    assert not run.name.startswith(flow_name)  # Prefect's own name: no rename request


def test_a_flow_names_its_runs_only_when_asked() -> None:
    flow_name = unique("named")

    @bf.flow(name=flow_name, run_name="report-{day}")
    async def named(day: str) -> str:
        return day

    assert asyncio.run(named("mo")) == "mo"
    [run] = flow_runs(flow_name)
    assert run.name == "report-mo"
    with pytest.raises(OrchestratorError) as err:
        bf.flow(run_name="")(lambda: None)
    assert err.value.code is ErrorCode.INVALID_CONFIG


def test_a_graph_is_one_flow_run_with_a_task_run_per_node_execution() -> None:
    name = unique("loop-graph")
    g = bf.Graph(name=name, max_iterations=5, artifact=True)
    g.add_node("plan", lambda s: {"n": s.get("n", 0) + 1})
    g.add_node("glue", lambda s: None, track=False)  # inline: no task run
    g.add_edge(bf.START, "plan").add_edge("plan", "glue")
    g.add_conditional_edges(
        "glue", lambda s: "again" if s["n"] < 3 else "done", {"again": "plan", "done": bf.END}
    )
    assert g.invoke({})["n"] == 3
    [run] = flow_runs(name)
    assert run.state.is_completed() and "beluga:graph" in run.tags
    names = sorted(t.name for t in task_runs(run.id, expect=3))
    assert names == ["plan-1", "plan-2", "plan-3"]
    [artifact] = artifacts(run.id)
    assert artifact.type == "markdown" and "plan -. " not in artifact.data
    assert "glue -. again .-> plan" in artifact.data and artifact.data.startswith("```mermaid")


def test_a_graph_inside_a_flow_adds_its_task_runs_to_that_flow_run() -> None:
    graph_name, flow_name = unique("inner-graph"), unique("graph-host")
    g = bf.Graph(name=graph_name).add_node("only", lambda s: {"ok": True}).set_entry_point("only")

    @bf.flow(name=flow_name)
    async def host() -> dict[str, Any]:
        return dict(await g.ainvoke({}))

    assert asyncio.run(host()) == {"ok": True}
    assert flow_runs(graph_name, expect=0, timeout=0) == []
    [run] = flow_runs(flow_name)
    assert [t.name for t in task_runs(run.id, expect=1)] == ["only-1"]


def _events(api_url: str, prefix: str) -> list[dict[str, Any]]:
    import httpx

    body = {"filter": {"event": {"prefix": [prefix]}}, "limit": 50}
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return list(response.json()["events"])


def test_breaker_changes_are_prefect_events_and_fast_fails_show_their_code(
    prefect_server: Any,
) -> None:
    import time

    from prefect.events.worker import EventsWorker

    name, flow_name = unique("llm"), unique("breaker-flow")
    bf.CircuitBreaker(name, failure_threshold=1, recovery_timeout=60)

    @bf.step(circuit_breaker=name)
    def call_llm() -> None:
        raise ConnectionError("provider down")

    @bf.flow(name=flow_name)
    def guarded() -> list[str]:
        codes = []
        for _ in range(2):
            try:
                call_llm()
            except Exception as err:
                codes.append(getattr(err, "code", type(err).__name__))
        return [str(c) for c in codes]

    assert guarded() == ["ConnectionError", "circuit_breaker_open"]
    [run] = flow_runs(flow_name)
    first, second = task_runs(run.id, expect=2)
    assert "ConnectionError" in first.state.message
    assert "[circuit_breaker_open]" in second.state.message
    EventsWorker.drain_all(timeout=10)
    deadline = time.monotonic() + 20
    while True:
        mine = [
            e
            for e in _events(prefect_server.api_url, "beluga.breaker.")
            if e["resource"]["prefect.resource.id"] == f"beluga.breaker.{name}"
        ]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [e["event"] for e in mine] == ["beluga.breaker.opened"]
    assert mine[0]["payload"] == {"from": "closed", "to": "open"}


def test_prefect_runs_write_nothing_onto_the_users_steps_and_flows() -> None:
    """The adapter keeps its tasks and flows in weak-keyed maps (and the inline memo
    of cache=True steps lives in the engine): after Prefect runs a step, a flow and a
    workflow, each has exactly the attributes it had before."""

    @bf.step
    def tracked(x: int) -> int:
        return x + 1

    @bf.step(cache=True, track=False)
    def memo(x: int) -> int:
        return x * 2

    @bf.flow(name=unique("no-attrs"))
    def pipeline(x: int) -> int:
        return memo(tracked(x))

    def body(x: int) -> int:
        return tracked(x)

    wf = bf.Workflow(body, name=unique("wf-no-attrs"), mode="in_process")
    objects = {"step": tracked, "memo step": memo, "flow": pipeline, "workflow flow": wf.flow}
    before = {key: set(vars(obj)) for key, obj in objects.items()}
    assert pipeline(1) == 4
    assert pipeline.to_prefect() is pipeline.prefect_flow  # built once, kept aside
    handle = wf.execute({"x": 1})
    assert wf.get_result(handle.workflow_id, handle.run_id, timeout=60) == 2
    added = {key: set(vars(obj)) - before[key] for key, obj in objects.items()}
    assert added == {key: set() for key in objects}
