"""Graphs (API.md §4) on both engines: builder checks, state, routing, loops, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import threading
import uuid
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import END, START, ErrorCode, NodeStatus, OrchestratorError
from beluga_flows.core.decorators import StepSpec


def code_of(fn: Any) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as info:
        fn()
    return info.value


def identity(state: dict[str, Any]) -> None:
    return None


# ------------------------------------------------------------------ compile


def test_builder_mistakes_name_the_culprit() -> None:
    g = bf.Graph()
    g.add_node("a", identity)
    err = code_of(lambda: g.add_node("a", identity))
    assert err.code is ErrorCode.INVALID_CONFIG and "'a'" in str(err)

    g.add_edge("a", "ghost")
    err = code_of(g.compile)
    assert err.code is ErrorCode.NOT_FOUND and "'ghost'" in str(err)

    no_entry = bf.Graph().add_node("a", identity)
    assert code_of(no_entry.compile).code is ErrorCode.INVALID_CONFIG

    bad_entry = bf.Graph().add_node("a", identity).set_entry_point("b")
    assert code_of(bad_entry.compile).code is ErrorCode.NOT_FOUND
    bad_finish = bf.Graph().add_node("a", identity).set_entry_point("a").set_finish_point("z")
    assert code_of(bad_finish.compile).code is ErrorCode.NOT_FOUND

    island = bf.Graph().add_node("a", identity).add_node("island", identity).set_entry_point("a")
    err = code_of(island.compile)
    assert err.code is ErrorCode.INVALID_CONFIG and "'island'" in str(err)

    assert code_of(lambda: bf.Graph().add_node("x", 42)).code is ErrorCode.INVALID_CONFIG
    assert code_of(lambda: bf.Graph(max_workers=0)).code is ErrorCode.INVALID_CONFIG
    assert code_of(lambda: bf.Graph(max_iterations=0)).code is ErrorCode.INVALID_CONFIG
    assert code_of(lambda: bf.Graph(reducers={"k": 1})).code is ErrorCode.INVALID_CONFIG
    assert code_of(lambda: bf.Graph(artifact="yes")).code is ErrorCode.INVALID_CONFIG
    assert code_of(lambda: bf.Graph(provider="nope")).code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize(
    "edges", [[("a", "b"), ("b", "a")], [("a", "a")], [("a", "b"), ("b", "c"), ("c", "b")]]
)
def test_cycles_of_plain_edges_are_rejected(edges: list[tuple[str, str]]) -> None:
    g = bf.Graph().set_entry_point("a")
    for n in sorted({n for e in edges for n in e}):
        g.add_node(n, identity)
    for e in edges:
        g.add_edge(*e)
    err = code_of(g.compile)
    assert err.code is ErrorCode.INVALID_CONFIG and "cycle" in str(err)


def test_compile_leaves_the_builder_as_it_was() -> None:
    g = bf.Graph(name="b").add_node("a", identity).set_entry_point("a")
    first = g.compile()
    g.add_node("b", identity).add_edge("a", "b")
    second = g.compile()
    assert first.plan.nodes == ("a",) and second.plan.nodes == ("a", "b")
    assert g._entry == ["a"] and g._edges == [("a", "b")]
    assert isinstance(first, bf.CompiledGraph) and isinstance(first, bf.Runnable)


def test_mermaid_drawing() -> None:
    g = bf.Graph().add_node("plan", identity).add_node("review", identity)
    g.add_edge(START, "plan").add_edge("plan", "review")
    g.add_conditional_edges("review", identity, {"again": "plan", "done": END})
    drawing = g.draw_mermaid()
    assert drawing.startswith("flowchart TD")
    for line in (
        "__start__ --> plan",
        "plan --> review",
        "review -. again .-> plan",
        "review -. done .-> __end__",
    ):
        assert line in drawing


# ------------------------------------------------------------------ running (both engines)


def research_graph(**options: Any) -> bf.Graph:
    async def plan(s: dict[str, Any]) -> dict[str, Any]:
        return {"round": s.get("round", 0) + 1, "log": ["plan"]}

    def search(s: dict[str, Any]) -> dict[str, Any]:
        return {"docs": [f"doc{s['round']}"], "log": ["search"]}

    async def fetch(s: dict[str, Any]) -> dict[str, Any]:
        return {"docs": [f"page{s['round']}"], "log": ["fetch"]}

    def review(s: dict[str, Any]) -> dict[str, Any]:
        return {"log": ["review"]}

    g = bf.Graph(name="research", reducers={"docs": operator.add, "log": operator.add}, **options)
    for name, fn in [("plan", plan), ("search", search), ("fetch", fetch), ("review", review)]:
        g.add_node(name, fn)
    g.add_edge(START, "plan").add_edge("plan", "search").add_edge("plan", "fetch")
    g.add_edge("search", "review").add_edge("fetch", "review")
    g.add_conditional_edges(
        "review", lambda s: "again" if s["round"] < 2 else "done", {"again": "plan", "done": END}
    )
    return g


def test_fan_out_fan_in_and_a_bounded_loop(engine: str) -> None:
    result = research_graph().invoke({"question": "q"})
    assert isinstance(result, dict) and result["question"] == "q" and result["round"] == 2
    assert sorted(result["docs"]) == ["doc1", "doc2", "page1", "page2"]
    assert result["log"][0] == "plan" and result["log"].count("review") == 2
    assert result.report.iterations == {"plan": 2, "search": 2, "fetch": 2, "review": 2}
    assert set(result.report.statuses.values()) == {NodeStatus.COMPLETED}


def test_sequential_mode_gives_the_same_state_in_a_fixed_order(engine: str) -> None:
    result = research_graph(parallel=False).invoke({})
    assert result["log"] == ["plan", "search", "fetch", "review"] * 2


def test_loop_past_max_iterations_is_a_deadlock(engine: str) -> None:
    g = bf.Graph(max_iterations=3)
    g.add_node("spin", lambda s: {"n": s.get("n", 0) + 1}).set_entry_point("spin")
    g.add_conditional_edges("spin", lambda s: "spin")
    err = code_of(lambda: g.invoke({}))
    assert err.code is ErrorCode.WORKFLOW_DEADLOCK and "'spin'" in str(err)
    assert err.report.iterations["spin"] == 3  # type: ignore[attr-defined]


def test_router_fan_out_and_unknown_keys(engine: str) -> None:
    g = bf.Graph(reducers={"hits": operator.add})
    g.add_node("split", identity).set_entry_point("split")
    for name in ("x", "y", "z"):
        g.add_node(name, lambda s, name=name: {"hits": [name]})
    g.add_conditional_edges("split", lambda s: s["pick"], ["x", "y", "z"])
    assert sorted(g.invoke({"pick": ["x", "z"]})["hits"]) == ["x", "z"]
    err = code_of(lambda: g.invoke({"pick": "w"}))
    assert err.code is ErrorCode.INVALID_STATE and "'w'" in str(err)


def test_parallel_writers_without_a_reducer(engine: str) -> None:
    g = bf.Graph().set_entry_point(["left", "right"])
    g.add_node("left", lambda s: {"answer": 1}).add_node("right", lambda s: {"answer": 2})
    err = code_of(lambda: g.invoke({}))
    assert err.code is ErrorCode.INVALID_STATE
    assert "'left'" in str(err) and "'right'" in str(err)


def test_a_failing_node_reports_dependants_and_lets_others_finish(engine: str) -> None:
    def broken(s: dict[str, Any]) -> None:
        raise ValueError("index corrupt")

    g = bf.Graph(reducers={"done": operator.add}).set_entry_point(["bad", "good"])
    g.add_node("bad", broken).add_node("after_bad", lambda s: {"done": ["after_bad"]})
    g.add_node("good", lambda s: {"done": ["good"]}).add_node(
        "after_good", lambda s: {"done": ["ag"]}
    )
    g.add_edge("bad", "after_bad").add_edge("good", "after_good")
    err = code_of(lambda: g.invoke({}))
    assert err.code is ErrorCode.EXECUTION_FAILED and "'bad'" in str(err)
    assert isinstance(err.__cause__, ValueError)
    statuses = err.report.statuses  # type: ignore[attr-defined]
    assert statuses == {
        "bad": NodeStatus.FAILED,
        "after_bad": NodeStatus.DEPENDENCY_FAILED,
        "good": NodeStatus.COMPLETED,
        "after_good": NodeStatus.COMPLETED,
    }


def test_no_barrier_between_branches(engine: str) -> None:
    released = threading.Event()

    async def slow(s: dict[str, Any]) -> dict[str, Any]:
        # Deadlocks (and fails) if fast2 had to wait for this node to finish.
        ok = await asyncio.to_thread(released.wait, 60)
        return {"slow": ok}

    def fast2(s: dict[str, Any]) -> dict[str, Any]:
        released.set()
        return {"fast2": True}

    g = bf.Graph().set_entry_point(["slow", "fast"])
    g.add_node("slow", slow).add_node("fast", identity).add_node("fast2", fast2)
    g.add_edge("fast", "fast2")
    assert g.invoke({}) == {"slow": True, "fast2": True}


def test_graph_timeout(engine: str) -> None:
    async def stuck(s: dict[str, Any]) -> None:
        await asyncio.sleep(10)

    g = bf.Graph(timeout=0.5).add_node("stuck", stuck).set_entry_point("stuck")
    err = code_of(lambda: g.invoke({}))
    assert err.code is ErrorCode.TIMEOUT and "stuck" in str(err)
    assert err.report.statuses["stuck"] is NodeStatus.RUNNING  # type: ignore[attr-defined]


def test_node_retry_and_timeout_overrides(engine: str) -> None:
    calls: list[int] = []

    def flaky(s: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError("blip")
        return {"ok": True}

    g = bf.Graph().set_entry_point("flaky")
    g.add_node("flaky", flaky, retry_policy=bf.RetryPolicy(initial_delay=0.01, jitter=0))
    assert g.invoke({}) == {"ok": True} and len(calls) == 2


def test_subgraphs_chains_and_finish_points(engine: str) -> None:
    inner = bf.Graph(name="inner").add_node("double", lambda s: {"x": s["x"] * 2})
    inner.set_entry_point("double")
    chain = bf.Chain([lambda s: {"y": s["x"] + 1}])
    g = bf.Graph().add_node("sub", inner).add_node("chain", chain).add_node("never", identity)
    g.set_entry_point("sub").add_edge("sub", "chain").add_edge("chain", "never")
    g.set_finish_point("chain")
    result = g.invoke({"x": 5})
    assert result == {"x": 10, "y": 11}
    assert result.report.statuses["never"] is NodeStatus.SKIPPED


def test_bad_state_input_and_bad_node_output(engine: str) -> None:
    g = bf.Graph().add_node("n", lambda s: "not a dict").set_entry_point("n")
    assert code_of(lambda: g.invoke("text")).code is ErrorCode.INVALID_INPUT
    err = code_of(lambda: g.invoke({}))
    assert err.code is ErrorCode.EXECUTION_FAILED
    assert (
        isinstance(err.__cause__, OrchestratorError)
        and err.__cause__.code is ErrorCode.INVALID_STATE
    )


def test_node_overrides_are_validated_and_keep_the_steps_options() -> None:
    @bf.step(tags=["io"], timeout=5)
    def fetch(s: dict[str, Any]) -> None:
        return None

    g = bf.Graph().add_node("get", fetch, retry_policy=bf.RetryPolicy(max_attempts=2))
    node = g._nodes["get"]
    assert isinstance(node, bf.Step) and node.name == "get" and node.fn is fetch.fn
    assert node.spec.tags == ("io",) and node.spec.timeout == 5.0
    assert node.spec.retry_policy == bf.RetryPolicy(max_attempts=2)
    for bad in ({"retry_policy": 3}, {"timeout": -1}, {"track": "no"}):
        assert code_of(lambda bad=bad: bf.Graph().add_node("x", fetch, **bad)).code is (
            ErrorCode.INVALID_CONFIG
        )
    assert code_of(lambda: bf.Graph().add_node("c", bf.Chain([len]), timeout=1)).code is (
        ErrorCode.INVALID_CONFIG
    )


# ------------------------------------------------------------------ a step as a node


def _every_option_set() -> dict[str, Any]:
    """A non-default value for every StepSpec field but the name."""
    return {
        "description": "fetches",
        "retry_policy": bf.RetryPolicy(max_attempts=4),
        "timeout": 7.0,
        "cache": True,
        "tags": ("io", "net"),
        "track": False,
        "circuit_breaker": "node-spec-breaker",
        "concurrency": "node-spec-slots",
        "max_concurrency": 2,
        "rate_limit": "node-spec-rate",
        "fallback": "node-spec-fallback",
        "provider": "node-spec-provider",
    }


def test_a_step_as_a_node_keeps_every_spec_field() -> None:
    options = _every_option_set()
    # ``streaming`` is what the function is, not an option: a streaming node keeps it
    # (tests/test_streaming.py: its update is {node: value}).
    fields = {f.name for f in dataclasses.fields(StepSpec)} - {"name", "streaming"}
    # A new StepSpec field must be added here, and so proven kept by a node.
    assert set(options) == fields
    defaults = StepSpec(name="x")
    assert all(getattr(defaults, k) != v for k, v in options.items())

    fetch = bf.step(**options)(identity)
    node = bf.Graph().add_node("get", fetch)._nodes["get"]
    assert isinstance(node, bf.Step) and node.name == node.spec.name == "get"
    for f in dataclasses.fields(StepSpec):
        if f.name != "name":
            assert getattr(node.spec, f.name) == getattr(fetch.spec, f.name), f.name

    policy = bf.RetryPolicy(max_attempts=2)
    overridden = bf.Graph().add_node("get", fetch, retry_policy=policy, timeout=3, track=True)
    spec = overridden._nodes["get"].spec  # type: ignore[attr-defined]
    assert spec == dataclasses.replace(
        fetch.spec, name="get", retry_policy=policy, timeout=3.0, track=True
    )


def test_a_node_keeps_its_steps_circuit_breaker() -> None:
    breaker = bf.CircuitBreaker(f"node-breaker-{uuid.uuid4().hex[:8]}", failure_threshold=2)
    calls: list[int] = []

    @bf.step(circuit_breaker=breaker.name)
    def call_api(state: dict[str, Any]) -> None:
        calls.append(1)
        raise ConnectionError("down")

    g = bf.Graph(provider="local").add_node("api", call_api).set_entry_point("api")
    for _ in range(2):
        assert code_of(lambda: g.invoke({})).code is ErrorCode.EXECUTION_FAILED
    assert breaker.state is bf.CircuitState.OPEN
    err = code_of(lambda: g.invoke({}))
    assert isinstance(err.__cause__, OrchestratorError)
    assert err.__cause__.code is ErrorCode.CIRCUIT_BREAKER_OPEN and len(calls) == 2


def test_a_node_keeps_its_steps_concurrency_and_rate_limits() -> None:
    from beluga_flows.engine.local import LOCAL_LIMITS

    slots = f"node-slots-{uuid.uuid4().hex[:8]}"
    held: list[int] = []

    @bf.step(concurrency=slots, max_concurrency=1)
    def query(state: dict[str, Any]) -> None:
        held.append(LOCAL_LIMITS.in_use(slots))  # this call holds the one slot

    g = bf.Graph(provider="local").add_node("q", query).set_entry_point("q")
    g.invoke({})
    assert held == [1] and LOCAL_LIMITS.in_use(slots) == 0

    @bf.step(rate_limit=f"undeclared-{uuid.uuid4().hex[:8]}")
    def limited(state: dict[str, Any]) -> None:
        return None

    g = bf.Graph(provider="local").add_node("r", limited).set_entry_point("r")
    err = code_of(lambda: g.invoke({}))
    assert isinstance(err.__cause__, OrchestratorError)
    assert err.__cause__.code is ErrorCode.NOT_FOUND  # the rate limit was looked up
