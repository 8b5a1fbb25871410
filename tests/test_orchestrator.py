"""The orchestrator (API.md §9): config, defaults, features, admission, metrics, providers.

Everything here runs on the local provider (no Prefect API), except where a test says
otherwise. Admission is proven with real concurrency: steps that wait on events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import telemetry
from beluga_flows.orchestrator import registry

PROVIDER_PKG = Path(__file__).parent / "provider_pkg"

# ---------------------------------------------------------------- config

GOOD_BAD: list[tuple[str, Any, Any]] = [
    ("name", "orders-eu", "no spaces"),
    ("chain_timeout", dt.timedelta(minutes=2), 0),
    ("chain_retries", 20, 21),
    ("graph_timeout", 86400, 86400.5),
    ("graph_retries", 0, -1),
    ("max_workers", 1000, 1001),
    ("parallel", False, "yes"),
    ("queue_size", 100_000, 0),
    ("max_concurrent_chains", 10_000, 10_001),
    ("task_queue", "q" * 255, "q" * 256),
    ("workflow_timeout", 0.5, dt.timedelta(hours=25)),
    ("workflow_retries", 5, 2.5),
    ("max_concurrent_workflows", 1, 0),
    ("metrics_prefix", "myapp.orchestration", ""),
    ("health_check_interval", 0.1, 0),
    ("features", {"chains": False}, {"chainz": False}),
    ("record_data", True, "no"),
    ("breaker_store", bf.MemoryStore(), object()),
]


@pytest.mark.parametrize(("field", "good", "bad"), GOOD_BAD, ids=[g[0] for g in GOOD_BAD])
def test_every_field_takes_a_good_value_and_names_itself_when_bad(
    field: str, good: Any, bad: Any
) -> None:
    config = bf.OrchestratorConfig(**{field: good})
    assert getattr(config, field) is not None
    with pytest.raises(bf.OrchestratorError) as err:
        bf.OrchestratorConfig(**{field: bad})
    assert err.value.code is bf.ErrorCode.INVALID_CONFIG
    assert field in str(err.value)
    with pytest.raises(bf.OrchestratorError, match=field):
        bf.new_orchestrator(**{field: bad})


def test_defaults_are_the_contract_and_durations_are_float_seconds() -> None:
    c = bf.OrchestratorConfig()
    assert (c.chain_timeout, c.chain_retries, c.graph_timeout, c.graph_retries) == (
        300.0,
        3,
        600.0,
        3,
    )
    assert (c.max_workers, c.parallel, c.queue_size, c.max_concurrent_chains) == (5, True, 100, 10)
    assert (c.task_queue, c.workflow_timeout, c.workflow_retries) == ("beluga-workflows", 1800.0, 5)
    assert (c.max_concurrent_workflows, c.metrics_prefix, c.health_check_interval) == (
        50,
        "beluga.orchestration",
        30.0,
    )
    assert c.features == bf.EnabledFeatures(
        chains=True, graphs=True, workflows=True, definitions=True
    )
    assert (c.record_data, c.breaker_store) == (False, None)
    timed = bf.OrchestratorConfig(chain_timeout=dt.timedelta(seconds=90))
    assert timed.chain_timeout == 90.0 and isinstance(timed.chain_timeout, float)


def test_config_is_frozen_and_unknown_options_are_named() -> None:
    config = bf.OrchestratorConfig()
    with pytest.raises(Exception, match="frozen"):
        config.max_workers = 3  # type: ignore[misc]
    with pytest.raises(bf.OrchestratorError) as err:
        bf.new_orchestrator(max_wrokers=3)
    assert err.value.code is bf.ErrorCode.INVALID_CONFIG
    assert "max_wrokers" in str(err.value) and "unknown option" in str(err.value)


def test_orchestrator_takes_a_config_a_mapping_or_nothing() -> None:
    assert bf.Orchestrator().config == bf.OrchestratorConfig()
    assert bf.Orchestrator({"max_workers": 7}).config.max_workers == 7
    config = bf.OrchestratorConfig(max_workers=8)
    assert bf.Orchestrator(config).config is config
    with pytest.raises(bf.OrchestratorError, match="config must be"):
        bf.Orchestrator(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- defaults


def _echo(x: Any) -> Any:
    return x


def test_chains_and_graphs_take_the_config_defaults_unless_overridden() -> None:
    orch = bf.new_orchestrator(
        chain_timeout=12, chain_retries=1, graph_timeout=34, graph_retries=2, max_workers=3
    )
    chain = orch.create_chain([_echo], provider="local")
    assert (chain.inner.timeout, chain.inner.retries) == (12.0, 1)
    chain = orch.create_chain([_echo], provider="local", timeout=5, retries=0, name="mine")
    assert (chain.inner.timeout, chain.inner.retries, chain.name) == (5.0, 0, "mine")
    graph = orch.create_graph(provider="local", name="g")
    assert (graph.timeout, graph.retries, graph.max_workers, graph.parallel) == (34.0, 2, 3, True)
    graph = orch.create_graph(provider="local", max_workers=9, parallel=False, timeout=1)
    assert (graph.timeout, graph.max_workers, graph.parallel) == (1.0, 9, False)


def test_workflows_take_the_config_defaults_unless_overridden() -> None:
    orch = bf.new_orchestrator(task_queue="eu", workflow_timeout=60, workflow_retries=1)
    wf = orch.create_workflow(_echo, name="echo-wf")
    assert isinstance(wf, bf.Workflow)
    assert (wf.task_queue, wf.flow.spec.timeout, wf.flow.spec.retries) == ("eu", 60.0, 1)
    wf = orch.create_workflow(_echo, name="echo-wf", task_queue="us", timeout=5, retries=0)
    assert (wf.task_queue, wf.flow.spec.timeout, wf.flow.spec.retries) == ("us", 5.0, 0)

    @bf.flow(name="flowed", timeout=7, tags=("t",))
    def flowed(x: int) -> int:
        return x

    wf = orch.create_workflow(flowed)
    assert (wf.name, wf.flow.spec.timeout, wf.flow.spec.retries, wf.flow.spec.tags) == (
        "flowed",
        7.0,
        1,
        ("t",),
    )


@pytest.mark.parametrize("feature", ["chains", "graphs", "workflows", "definitions"])
def test_a_disabled_feature_is_invalid_state(feature: str) -> None:
    orch = bf.new_orchestrator(features={feature: False})
    create: dict[str, Callable[[], Any]] = {
        "chains": lambda: orch.create_chain([_echo]),
        "graphs": lambda: orch.create_graph(),
        "workflows": lambda: orch.create_workflow(_echo),
        "definitions": lambda: orch.create_definition({"workflow_id": "w", "steps": []}),
    }
    with pytest.raises(bf.OrchestratorError) as err:
        create[feature]()
    assert err.value.code is bf.ErrorCode.INVALID_STATE
    assert f"{feature}_disabled" in str(err.value)
    if feature != "graphs":  # the other kinds are still made
        assert orch.create_graph(provider="local") is not None


# ---------------------------------------------------------------- admission


async def _until(predicate: Callable[[], bool]) -> None:
    """Let the other tasks run until ``predicate`` holds (no clock involved)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_admission_runs_n_queues_queue_size_and_refuses_the_rest() -> None:
    orch = bf.new_orchestrator(max_concurrent_chains=2, queue_size=1, chain_retries=0)
    release, inside = asyncio.Event(), []

    @bf.step(track=False)
    async def hold(x: dict[str, Any]) -> int:
        inside.append(x["input"])
        await release.wait()
        return int(x["input"])

    chain = orch.create_chain([hold], provider="local")
    gate = orch.gates["chain"].admission
    assert gate is not None
    first = [asyncio.create_task(chain.ainvoke({"input": i})) for i in (1, 2)]
    await _until(lambda: len(inside) == 2)
    assert orch.get_metrics()["active_chains"] == 2
    queued = asyncio.create_task(chain.ainvoke({"input": 3}))
    await _until(lambda: gate.waiting == 1)
    assert inside == [1, 2]  # the third waits in the queue, its step has not started
    with pytest.raises(bf.OrchestratorError) as err:
        await chain.ainvoke({"input": 4})
    assert err.value.code is bf.ErrorCode.RESOURCE_EXHAUSTED
    release.set()
    assert await asyncio.gather(*first, queued) == [1, 2, 3]
    assert inside == [1, 2, 3]
    assert (gate.active, gate.waiting) == (0, 0)
    assert orch.get_metrics() == {
        "active_chains": 0,
        "active_graphs": 0,
        "active_workflows": 0,
        "total_executions": 3,  # the refused call never ran
        "error_count": 0,
    }


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    orch = bf.new_orchestrator(max_concurrent_chains=1, queue_size=1, chain_retries=0)
    release = asyncio.Event()

    async def hold(x: Any) -> Any:
        await release.wait()
        return x

    chain = orch.create_chain([hold], provider="local")
    gate = orch.gates["chain"].admission
    assert gate is not None
    running = asyncio.create_task(chain.ainvoke({"input": 1}))
    await _until(lambda: gate.active == 1)
    waiter = asyncio.create_task(chain.ainvoke({"input": 2}))
    await _until(lambda: gate.waiting == 1)
    waiter.cancel()
    await _until(waiter.done)
    assert gate.waiting == 0
    again = asyncio.create_task(chain.ainvoke({"input": 3}))  # the queue has room again
    await _until(lambda: gate.waiting == 1)
    release.set()
    assert await running == {"input": 1} and await again == {"input": 3}
    assert (gate.active, gate.waiting) == (0, 0)


def test_admission_holds_across_threads() -> None:
    orch = bf.new_orchestrator(max_concurrent_chains=2, queue_size=10, chain_retries=0)
    release, lock, entered = threading.Event(), threading.Lock(), threading.Semaphore(0)
    now = {"in": 0, "max": 0}

    def hold(x: Any) -> Any:
        with lock:
            now["in"] += 1
            now["max"] = max(now["max"], now["in"])
        entered.release()
        release.wait(30)
        with lock:
            now["in"] -= 1
        return x

    chain = orch.create_chain([hold], provider="local")
    gate = orch.gates["chain"].admission
    assert gate is not None
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(chain.invoke({"input": i})))
        for i in range(5)
    ]
    for t in threads:
        t.start()
    assert entered.acquire(timeout=30) and entered.acquire(timeout=30)  # two are inside
    for _ in range(3000):  # and the three others queue (bounded wait)
        if gate.active == 2 and gate.waiting == 3:
            break
        threading.Event().wait(0.01)
    assert (gate.active, gate.waiting) == (2, 3)
    assert orch.get_metrics()["active_chains"] == 2
    release.set()
    for t in threads:
        t.join(30)
    assert sorted(r["input"] for r in results) == [0, 1, 2, 3, 4]
    assert now["max"] == 2
    assert orch.get_metrics()["total_executions"] == 5


async def test_workflow_runs_are_admitted_where_they_execute() -> None:
    orch = bf.new_orchestrator(max_concurrent_workflows=1, queue_size=1)
    release, started = asyncio.Event(), asyncio.Event()

    async def order(order_id: int) -> int:
        started.set()
        await release.wait()
        return order_id

    # A provider that is none of beluga's engines: no Prefect global limit is held.
    if "t-workflow" not in registry.known_providers("workflow"):
        bf.register_workflow_provider("t-workflow", lambda fn, **o: bf.Workflow(fn, **o))
    wf = orch.create_workflow(order, name="orders-admitted", provider="t-workflow")
    body = wf.flow.fn  # what each workflow run executes
    gate = orch.gates["workflow"].admission
    assert gate is not None
    one = asyncio.create_task(body(order_id=1))
    await started.wait()
    assert orch.get_metrics()["active_workflows"] == 1
    two = asyncio.create_task(body(order_id=2))
    await _until(lambda: gate.waiting == 1)
    with pytest.raises(bf.OrchestratorError) as err:
        await body(order_id=3)
    assert err.value.code is bf.ErrorCode.RESOURCE_EXHAUSTED
    release.set()
    assert [await one, await two] == [1, 2]
    assert orch.get_metrics()["active_workflows"] == 0


# ---------------------------------------------------------------- metrics


async def test_metrics_go_up_and_down_per_orchestrator() -> None:
    orch = bf.new_orchestrator(chain_retries=0, graph_retries=0, metrics_prefix="t.orch")
    other = bf.new_orchestrator()
    release, inside = asyncio.Event(), asyncio.Event()
    seen: dict[str, Any] = {}

    async def hold(x: Any) -> Any:
        seen["prefix"] = telemetry.current_prefix()
        seen["record_data"] = telemetry.RECORD_DATA.get()
        inside.set()
        await release.wait()
        return x

    def boom(x: Any) -> Any:
        raise ValueError("boom")

    chain = orch.create_chain([hold], provider="local")
    task = asyncio.create_task(chain.ainvoke({"input": 1}))
    await inside.wait()
    assert orch.get_metrics()["active_chains"] == 1
    assert other.get_metrics()["active_chains"] == 0
    assert seen == {"prefix": "t.orch", "record_data": False}
    release.set()
    await task
    with pytest.raises(bf.OrchestratorError):
        await orch.create_chain([boom], provider="local").ainvoke({"input": 1})
    graph = orch.create_graph(provider="local", name="g")
    graph.add_node("a", lambda s: {"a": 1}).add_edge(bf.START, "a")
    assert (await graph.ainvoke({}))["a"] == 1
    compiled = graph.compile()
    assert (await compiled.ainvoke({}))["a"] == 1
    assert [c async for c in chain.astream({"input": 2})] == [{"input": 2}]
    assert orch.get_metrics() == {
        "active_chains": 0,
        "active_graphs": 0,
        "active_workflows": 0,
        "total_executions": 5,
        "error_count": 1,
    }
    assert other.get_metrics()["total_executions"] == 0


def test_record_data_and_batch_through_the_wrapper() -> None:
    orch = bf.new_orchestrator(record_data=True, chain_retries=0)
    flags: list[bool] = []

    def look(x: Any) -> Any:
        flags.append(telemetry.RECORD_DATA.get())
        return x["input"] * 2

    chain = orch.create_chain([look], provider="local")
    assert isinstance(chain, bf.Runnable)
    assert chain.batch([{"input": 1}, {"input": 2}, {"input": 3}]) == [2, 4, 6]
    assert list(chain.stream({"input": 4})) == [8]
    assert flags == [True] * 4
    assert orch.get_metrics()["total_executions"] == 4


def test_a_definition_runs_counted_as_a_workflow() -> None:
    orch = bf.new_orchestrator()
    definition = {
        "workflow_id": "orch-def",
        "steps": [{"step_id": "double", "action": "double", "input_mapping": {"n": "n"}}],
    }
    made = orch.create_definition(definition, actions={"double": lambda n: n * 2}, provider="local")
    assert made.validate() == []
    result = made.invoke({"n": 21})
    assert result.status == "completed" and result.result["double"] == 42
    assert orch.get_metrics()["total_executions"] == 1
    with pytest.raises(bf.OrchestratorError) as err:
        orch.create_definition(definition, actions={}, provider="local")
    assert err.value.code is bf.ErrorCode.NOT_FOUND


# ---------------------------------------------------------------- providers


def test_a_registered_provider_gets_the_options_and_names_are_guarded() -> None:
    calls: list[dict[str, Any]] = []

    def factory(steps: Any, **options: Any) -> bf.Runnable:
        calls.append(options)
        return bf.Chain(steps, provider="local", **options)

    bf.register_chain_provider("t-recording", factory)
    orch = bf.new_orchestrator(chain_timeout=9, chain_retries=0)
    chain = orch.create_chain([_echo], provider="t-recording", name="rec")
    assert chain.invoke({"input": 1}) == {"input": 1}
    assert calls == [{"timeout": 9.0, "retries": 0, "name": "rec"}]
    for name in ("t-recording", "local", "prefect"):
        with pytest.raises(bf.OrchestratorError) as err:
            bf.register_chain_provider(name, factory)
        assert err.value.code is bf.ErrorCode.INVALID_CONFIG and name in str(err.value)
    bf.register_graph_provider("t-recording", lambda **o: bf.Graph(provider="local", **o))
    bf.register_workflow_provider("t-recording", lambda fn, **o: bf.Workflow(fn, **o))
    with pytest.raises(bf.OrchestratorError) as err:
        bf.register_chain_provider("t-bad", 42)  # type: ignore[arg-type]
    assert err.value.code is bf.ErrorCode.INVALID_CONFIG


def test_an_unknown_provider_is_not_found_listing_the_known_ones() -> None:
    orch = bf.new_orchestrator()
    with pytest.raises(bf.OrchestratorError) as err:
        orch.create_chain([_echo], provider="nope")
    assert err.value.code is bf.ErrorCode.NOT_FOUND
    assert "nope" in str(err.value) and "local" in str(err.value) and "prefect" in str(err.value)
    with pytest.raises(bf.OrchestratorError) as err:
        orch.create_workflow(_echo, provider="local")  # workflows need the Prefect API
    assert err.value.code is bf.ErrorCode.NOT_FOUND and "prefect" in str(err.value)


def test_a_factory_that_returns_no_runnable_is_invalid_config() -> None:
    bf.register_chain_provider("t-broken", lambda steps, **o: "not a runnable")
    with pytest.raises(bf.OrchestratorError) as err:
        bf.new_orchestrator().create_chain([_echo], provider="t-broken")
    assert err.value.code is bf.ErrorCode.INVALID_CONFIG and "t-broken" in str(err.value)


@pytest.fixture(scope="session")
def tiny_provider() -> str:
    """tests/provider_pkg installed into the running venv (once; skipped when it is)."""
    try:
        installed = importlib.metadata.version("beluga-tiny-provider") == "1.0.0"
    except importlib.metadata.PackageNotFoundError:
        installed = False
    if not installed:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--no-input", "--disable-pip-version-check", str(PROVIDER_PKG)],
            check=True,
            timeout=300,
        )  # fmt: skip
    registry.reload_entry_points()
    return "tiny"


def test_an_installed_package_provides_a_provider_by_entry_point(tiny_provider: str) -> None:
    assert tiny_provider in registry.known_providers("chain")
    orch = bf.new_orchestrator(chain_retries=0)
    chain = orch.create_chain([_echo], provider=tiny_provider)
    assert chain.invoke("hi") == {"provider": "tiny", "output": {"input": "hi"}}
    import beluga_tiny_provider  # type: ignore[import-not-found]

    assert beluga_tiny_provider.CALLS[-1] == {"kind": "chain", "timeout": 300.0, "retries": 0}
    graph = orch.create_graph(provider=tiny_provider)
    graph.add_node("a", lambda s: {"a": 1}).add_edge(bf.START, "a")
    assert graph.invoke({})["a"] == 1
    with pytest.raises(bf.OrchestratorError) as err:
        bf.register_chain_provider(tiny_provider, lambda steps, **o: bf.Chain(steps))
    assert err.value.code is bf.ErrorCode.INVALID_CONFIG
    with pytest.raises(bf.OrchestratorError) as err:
        orch.create_chain([_echo], provider="tiny2")
    assert err.value.code is bf.ErrorCode.NOT_FOUND and tiny_provider in str(err.value)
    # its factory offers a health check: the report names the provider
    found = orch.health().components[tiny_provider]
    assert (found.status, found.detail) == ("ok", "tiny is fine")
