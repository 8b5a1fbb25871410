"""``@step(fallback=...)``: returned instead of raising, after the last attempt only,
on both engines; on Prefect the task run shows the failure and the fallback."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError

from .prefect_api import flow_runs, task_runs

NO_WAIT = bf.RetryPolicy(max_attempts=3, initial_delay=0, jitter=0)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_a_value_fallback_comes_after_the_last_attempt(engine: str) -> None:
    calls: list[int] = []

    @bf.step(retry_policy=NO_WAIT, fallback={"answer": None})
    def ask(q: str) -> dict[str, Any]:
        calls.append(1)
        raise ConnectionError("provider down")

    assert ask("why") == {"answer": None}
    assert len(calls) == 3  # every attempt ran first


def test_a_callable_fallback_gets_the_final_error(engine: str) -> None:
    seen: list[BaseException] = []
    calls: list[int] = []

    def default(err: BaseException) -> str:
        seen.append(err)
        return f"fallback after {getattr(err, 'attempts', '?')} attempts"

    @bf.step(retry_policy=NO_WAIT, fallback=default)
    async def ask(q: str) -> str:
        calls.append(1)
        raise ConnectionError(f"down #{len(calls)}")

    assert asyncio.run(ask("q")) == "fallback after 3 attempts"
    [err] = seen
    assert isinstance(err, ConnectionError) and str(err) == "down #3"


def test_an_async_fallback_is_awaited(engine: str) -> None:
    async def cached(err: BaseException) -> str:
        await asyncio.sleep(0)
        return f"cached ({type(err).__name__})"

    @bf.step(fallback=cached)
    def ask() -> str:
        raise ValueError("bad")

    assert ask() == "cached (ValueError)"


def test_no_fallback_on_success_nor_when_a_retry_succeeds(engine: str) -> None:
    calls: list[int] = []
    used: list[BaseException] = []

    @bf.step(retry_policy=NO_WAIT, fallback=used.append)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("blip")
        return "real"

    assert flaky() == "real"
    assert len(calls) == 3 and used == []


def test_an_error_the_policy_does_not_retry_falls_back_at_once(engine: str) -> None:
    calls: list[int] = []

    @bf.step(retry_policy=NO_WAIT, fallback="default")
    def strict(x: int) -> str:
        calls.append(x)
        raise OrchestratorError("strict", "bad input", ErrorCode.INVALID_INPUT)

    assert strict(1) == "default"
    assert calls == [1]


def test_cancellation_is_never_replaced(engine: str) -> None:
    @bf.step(fallback="nope")
    def cancelled() -> None:
        raise OrchestratorError("step", "cancelled by its run", ErrorCode.TASK_CANCELED)

    with pytest.raises(OrchestratorError) as info:
        cancelled()
    assert info.value.code is ErrorCode.TASK_CANCELED


def test_a_failing_fallback_raises_its_own_error(engine: str) -> None:
    def broken(err: BaseException) -> str:
        raise KeyError("no default either")

    @bf.step(fallback=broken)
    def ask() -> str:
        raise ConnectionError("down")

    with pytest.raises(KeyError):
        ask()


def test_an_inline_step_falls_back_too(engine: str) -> None:
    calls: list[int] = []

    @bf.step(retry_policy=NO_WAIT, fallback=lambda err: -1, track=False)
    def glue(x: int) -> int:
        calls.append(x)
        raise ConnectionError("down")

    assert glue(5) == -1 and calls == [5, 5, 5]


def test_chain_members_and_graph_nodes_keep_their_fallback(engine: str) -> None:
    @bf.step(fallback=lambda err: {"text": "(unavailable)"})
    def fetch(q: str) -> dict[str, str]:
        raise ConnectionError("down")

    @bf.step
    def shout(d: dict[str, str]) -> str:
        return d["text"].upper()

    assert bf.Chain([fetch, shout]).invoke("q") == "(UNAVAILABLE)"

    graph = bf.Graph()

    @bf.step(fallback=lambda err: {"text": "fallback"})
    def node(state: dict[str, Any]) -> dict[str, Any]:
        raise ConnectionError("down")

    graph.add_node("fetch", node)
    graph.add_edge(bf.START, "fetch")
    assert graph.compile().invoke({"q": "x"})["text"] == "fallback"


@pytest.mark.parametrize(
    "bad",
    [
        lambda: None,  # takes no error
        lambda err, extra: None,  # wants two
    ],
)
def test_a_callable_fallback_must_take_the_error(bad: Any) -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.step(fallback=bad)(lambda: None)
    assert info.value.code is ErrorCode.INVALID_CONFIG and "fallback" in str(info.value)


def test_the_prefect_task_run_shows_the_failure_and_the_fallback(prefect_server: Any) -> None:
    flow_name = unique("fallback")
    policy = bf.RetryPolicy(max_attempts=2, initial_delay=0, jitter=0)

    @bf.step(retry_policy=policy, fallback="cached answer")
    def ask() -> str:
        raise ConnectionError("provider down")

    @bf.flow(name=flow_name)
    def pipeline() -> str:
        return ask()  # type: ignore[no-any-return]

    with bf.use_engine("prefect"):
        assert pipeline() == "cached answer"
    [run] = flow_runs(flow_name)
    assert run.state.is_completed()
    [task] = task_runs(run.id, expect=1)
    assert task.run_count == 2  # both attempts ran
    assert task.state.name == "Completed"
    assert task.state.message == "failed: provider down; returned the fallback"
    history = asyncio.run(_state_names(task.id))
    assert "Retrying" in history and history[-1] == "Completed"


async def _state_names(task_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        states = await client.read_task_run_states(task_run_id)
    return [s.name for s in sorted(states, key=lambda s: s.timestamp)]


def test_a_workflow_step_records_its_fallback_as_its_result(prefect_server: Any) -> None:
    calls: list[int] = []

    @bf.step(retry_policy=bf.RetryPolicy(max_attempts=2, initial_delay=0), fallback="default")
    def lookup(x: int) -> str:
        calls.append(x)
        raise ConnectionError("down")

    def body(x: int) -> str:
        return f"got {lookup(x)}"

    wf = bf.Workflow(body, name=unique("wf-fallback"), mode="in_process")
    wid = unique("fallback-run")
    wf.execute(7, workflow_id=wid)
    assert wf.get_result(wid, timeout=60) == "got default"
    assert calls == [7, 7]


def test_a_fallback_is_never_cached(engine: str) -> None:
    calls: list[int] = []

    @bf.step(cache=True, fallback="default")
    def lookup(x: int) -> str:
        calls.append(x)
        if len(calls) == 1:
            raise ConnectionError("down")
        return f"real {x}"

    x = uuid.uuid4().int % 10**9
    assert lookup(x) == "default"
    assert lookup(x) == f"real {x}"  # the same input runs again: no fallback was cached
    assert lookup(x) == f"real {x}"  # the real result was
    assert calls == [x, x]
