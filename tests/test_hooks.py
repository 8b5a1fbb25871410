"""Hooks around chain steps and graph nodes, on both engines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError


def recorder(log: list[Any], tag: str) -> bf.Hooks:
    return bf.Hooks(
        before_step=lambda name, value: log.append((tag, "before", name, value)),
        after_step=lambda name, value, out: log.append((tag, "after", name, value, out)),
    )


def test_chain_hooks_see_names_and_values_and_run_in_the_order_given(engine: str) -> None:
    log: list[Any] = []

    def first(x: int) -> int:
        return x + 1

    def second(x: int) -> int:
        return x * 10

    hooks = bf.Hooks(
        before_step=[
            lambda n, v: log.append(("a", "before", n, v)),
            lambda n, v: log.append(("b", "before", n, v)),
        ],
        after_step=lambda n, v, out: log.append(("a", "after", n, v, out)),
    )
    assert bf.Chain([first, second], hooks=hooks).invoke(1) == 20
    assert log == [
        ("a", "before", "first", 1),
        ("b", "before", "first", 1),
        ("a", "after", "first", 1, 2),
        ("a", "before", "second", 2),
        ("b", "before", "second", 2),
        ("a", "after", "second", 2, 20),
    ]


def test_a_list_of_hooks_runs_in_the_order_given() -> None:
    log: list[Any] = []
    chain = bf.Chain(
        [bf.step(track=False)(abs)],
        hooks=[recorder(log, "one"), recorder(log, "two")],
        provider="local",
    )
    assert chain.invoke(-3) == 3
    assert [entry[:2] for entry in log] == [
        ("one", "before"),
        ("two", "before"),
        ("one", "after"),
        ("two", "after"),
    ]


def test_chain_on_error_replacement_lets_the_chain_go_on(engine: str) -> None:
    errors: list[Any] = []
    after: list[Any] = []

    def broken(x: int) -> int:
        raise ValueError("boom")

    def then(x: int) -> int:
        return x + 1

    def replace(name: str, value: Any, err: BaseException) -> int:
        errors.append((name, value, type(err).__name__, str(err)))
        return 41

    hooks = bf.Hooks(on_error=replace, after_step=lambda n, v, out: after.append((n, out)))
    assert bf.Chain([broken, then], hooks=hooks).invoke(7) == 42
    assert errors == [("broken", 7, "ValueError", "boom")]
    assert after == [("broken", 41), ("then", 42)]


def test_on_error_that_reraises_keeps_the_original_error(engine: str) -> None:
    seen: list[str] = []

    def broken(x: int) -> int:
        raise ValueError("boom")

    def decline(name: str, value: Any, err: BaseException) -> Any:
        seen.append(name)
        raise err

    with pytest.raises(OrchestratorError) as info:
        bf.Chain([broken], hooks=bf.Hooks(on_error=decline)).invoke(1)
    assert info.value.code is ErrorCode.EXECUTION_FAILED and "'broken'" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError) and seen == ["broken"]


def test_declined_errors_pass_to_the_next_handler_and_the_first_answer_wins() -> None:
    calls: list[str] = []

    def broken(x: int) -> int:
        raise ValueError("boom")

    def decline(name: str, value: Any, err: BaseException) -> Any:
        calls.append(f"decline:{type(err).__name__}")
        raise KeyError("translated")

    def answer(name: str, value: Any, err: BaseException) -> Any:
        calls.append(f"answer:{type(err).__name__}")
        return "fixed"

    def never(name: str, value: Any, err: BaseException) -> Any:
        calls.append("never")
        return "unused"

    hooks = bf.Hooks(on_error=[decline, answer, never])
    assert bf.Chain([broken], hooks=hooks, provider="local").invoke(1) == "fixed"
    assert calls == ["decline:ValueError", "answer:KeyError"]
    # every handler declining: the last error raised propagates
    with pytest.raises(OrchestratorError) as info:
        bf.Chain([broken], hooks=bf.Hooks(on_error=decline), provider="local").invoke(1)
    assert isinstance(info.value.__cause__, KeyError)


def test_async_hooks_are_awaited(engine: str) -> None:
    log: list[Any] = []

    async def before(name: str, value: Any) -> None:
        await asyncio.sleep(0)
        log.append(("before", name))

    async def on_error(name: str, value: Any, err: BaseException) -> dict[str, Any]:
        await asyncio.sleep(0)
        log.append(("error", name, str(err)))
        return {"answer": "fallback"}

    def fail(state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("down")

    g = bf.Graph(name="hooked", hooks=bf.Hooks(before_step=before, on_error=on_error))
    g.add_node("ask", fail).add_edge(bf.START, "ask")
    assert g.invoke({"q": 1}) == {"q": 1, "answer": "fallback"}
    assert log == [("before", "ask"), ("error", "ask", "down")]


def test_graph_hooks_see_node_names_states_and_updates(engine: str) -> None:
    log: list[Any] = []
    g = bf.Graph(name="hooks-graph", parallel=False, hooks=recorder(log, "g"))
    g.add_node("plan", lambda s: {"plan": s["q"] + "!"})
    g.add_node("write", lambda s: {"out": s["plan"] * 2})
    g.add_edge(bf.START, "plan").add_edge("plan", "write")
    assert g.invoke({"q": "a"}) == {"q": "a", "plan": "a!", "out": "a!a!"}
    assert log == [
        ("g", "before", "plan", {"q": "a"}),
        ("g", "after", "plan", {"q": "a"}, {"plan": "a!"}),
        ("g", "before", "write", {"q": "a", "plan": "a!"}),
        ("g", "after", "write", {"q": "a", "plan": "a!"}, {"out": "a!a!"}),
    ]


def test_graph_on_error_reraise_fails_the_node_as_usual() -> None:
    def fail(state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("down")

    def decline(name: str, value: Any, err: BaseException) -> Any:
        raise

    g = bf.Graph(name="reraise", hooks=bf.Hooks(on_error=decline), provider="local")
    g.add_node("ask", fail).add_node("other", lambda s: {"ok": True})
    g.add_edge(bf.START, "ask").add_edge(bf.START, "other")
    with pytest.raises(OrchestratorError) as info:
        g.invoke({})
    err = info.value
    assert err.code is ErrorCode.EXECUTION_FAILED and "'ask'" in str(err)
    assert isinstance(err.__cause__, RuntimeError)
    assert err.report.statuses["other"] is bf.NodeStatus.COMPLETED  # type: ignore[attr-defined]


def test_a_failing_before_hook_fails_the_step_without_running_it() -> None:
    ran: list[int] = []

    def guard(name: str, value: Any) -> None:
        raise PermissionError(f"{name} is not allowed")

    def work(x: int) -> int:
        ran.append(x)
        return x

    with pytest.raises(OrchestratorError) as info:
        bf.Chain([work], hooks=bf.Hooks(before_step=guard), provider="local").invoke(1)
    assert isinstance(info.value.__cause__, PermissionError) and ran == []


def test_step_retries_happen_before_on_error_and_chain_retries_rerun_hooks() -> None:
    attempts: list[int] = []
    log: list[str] = []

    @bf.step(retries=2, retry_policy=None, track=False)
    def flaky(x: int) -> int:
        attempts.append(x)
        raise ConnectionError("flaky")

    hooks = bf.Hooks(
        before_step=lambda n, v: log.append("before"),
        on_error=lambda n, v, e: log.append(f"error:{getattr(e, 'attempts', None)}") or -1,
    )
    clock = bf.LocalEngine(sleep=_no_sleep)
    assert bf.Chain([flaky], hooks=hooks, provider=clock).invoke(1) == -1
    assert len(attempts) == 3 and log == ["before", "error:3"]

    log.clear()
    calls = iter([ConnectionError("once"), None])

    def once(x: int) -> int:
        err = next(calls)
        if err is not None:
            raise err
        return x

    chain = bf.Chain([once], hooks=bf.Hooks(before_step=lambda n, v: log.append(n)), retries=1)
    assert chain.invoke(5, provider=clock) == 5
    assert log == ["once", "once"]


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"before_step": 3}, "before_step"),
        ({"after_step": [print, "x"]}, "after_step"),
        ({"on_error": "log"}, "on_error"),
        ({"on_error": int}, "on_error"),
    ],
)
def test_invalid_hooks_are_invalid_config(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.Hooks(**options)
    assert info.value.code is ErrorCode.INVALID_CONFIG and fragment in str(info.value)


@pytest.mark.parametrize("bad", [print, {"before_step": print}, [bf.Hooks(), "x"]])
def test_chain_and_graph_refuse_what_is_not_hooks(bad: Any) -> None:
    for build in (lambda: bf.Chain([print], hooks=bad), lambda: bf.Graph(hooks=bad)):
        with pytest.raises(OrchestratorError) as info:
            build()
        assert info.value.code is ErrorCode.INVALID_CONFIG


def test_hooks_are_frozen_and_combine() -> None:
    a = bf.Hooks(before_step=print)
    both = a + bf.Hooks(before_step=repr, on_error=len)
    assert both.before_step == (print, repr) and both.on_error == (len,)
    with pytest.raises(AttributeError):
        a.before_step = ()  # type: ignore[misc]


def test_orchestrator_passes_hooks_to_chains_and_graphs() -> None:
    log: list[str] = []
    hooks = bf.Hooks(before_step=lambda n, v: log.append(n))
    orch = bf.new_orchestrator()
    chain = orch.create_chain([bf.step(track=False)(abs)], provider="local", hooks=hooks)
    assert chain.invoke(-1) == 1
    graph = orch.create_graph(provider="local", name="orch-hooks", hooks=hooks)
    graph.add_node("n", lambda s: {"done": True}).add_edge(bf.START, "n")
    assert graph.invoke({}) == {"done": True}
    assert log == ["abs", "n"]
