"""Live streams: graph stream modes, streaming steps, ``bf.emit``, early stop, Prefect.

Liveness is proved with handshakes, never with sleeps: a node (or a streaming step)
waits for an event that the consumer sets only after it saw an earlier item, so a
stream that delivered its items at the end would deadlock (and fail through the
generous ``asyncio.wait_for`` around it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import operator
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError
from beluga_flows.tools.server import LocalServer

from .prefect_api import flow_runs, task_runs
from .test_cli import cli, example

WAIT = 60  # seconds: only a deadlock (a stream that is not live) ever reaches it
FAST = bf.RetryPolicy(max_attempts=2, initial_delay=0, jitter=0, retry_on=(ValueError,))


def line(*nodes: tuple[str, Any], **options: Any) -> bf.Graph:
    """A graph running ``nodes`` one after another."""
    graph = bf.Graph(name=f"stream-{uuid.uuid4().hex[:6]}", **options)
    previous = bf.START
    for name, fn in nodes:
        graph.add_node(name, fn)
        graph.add_edge(previous, name)
        previous = name
    return graph


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return await asyncio.wait_for(_all(stream), WAIT)


async def _all(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


@bf.step
async def tokens(state: dict[str, Any]) -> AsyncIterator[str]:
    for token in ("Hel", "lo"):
        yield token


# ---------------------------------------------------------------- modes


def test_values_and_updates_modes(engine: str) -> None:
    graph = line(
        ("a", lambda s: {"x": 1}), ("b", lambda s: {"y": s["x"] + 1}), ("c", lambda s: None)
    )
    values = asyncio.run(collect(graph.astream({"q": 0})))
    assert values == [{"q": 0, "x": 1}, {"q": 0, "x": 1, "y": 2}, {"q": 0, "x": 1, "y": 2}]
    updates = list(graph.compile().stream({"q": 0}, stream_mode="updates"))  # the sync twin
    assert updates == [("a", {"x": 1}), ("b", {"y": 2}), ("c", {})]


def test_several_modes_yield_mode_payload_pairs(engine: str) -> None:
    def plan(state: dict[str, Any]) -> dict[str, Any]:
        bf.emit({"planning": state["q"]})
        return {"plan": "p"}

    graph = line(("plan", plan), ("llm", tokens))
    got = asyncio.run(
        collect(graph.astream({"q": 1}, stream_mode=["updates", "values", "custom", "messages"]))
    )
    assert got == [
        ("custom", {"planning": 1}),
        ("updates", ("plan", {"plan": "p"})),
        ("values", {"q": 1, "plan": "p"}),
        ("messages", ("llm", "Hel")),
        ("messages", ("llm", "lo")),
        ("updates", ("llm", {"llm": "Hello"})),  # a streaming node's update: {node: value}
        ("values", {"q": 1, "plan": "p", "llm": "Hello"}),
    ]


def test_a_bad_stream_mode_is_invalid_config() -> None:
    graph = line(("a", lambda s: None), provider="local")
    for bad in ("tokens", ["values", "nope"], [], 3):
        with pytest.raises(OrchestratorError) as info:
            list(graph.stream({}, stream_mode=bad))
        assert info.value.code is ErrorCode.INVALID_CONFIG


# ---------------------------------------------------------------- liveness


def test_updates_arrive_while_the_graph_runs(engine: str) -> None:
    async def main() -> list[Any]:
        seen_a = asyncio.Event()

        async def b(state: dict[str, Any]) -> dict[str, Any]:
            await seen_a.wait()  # set by the consumer once it saw a's update
            return {"b": True}

        got = []
        async for node, update in line(("a", lambda s: {"a": 1}), ("b", b)).astream(
            {}, stream_mode="updates"
        ):
            got.append((node, update))
            if node == "a":
                seen_a.set()
        return got

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == [("a", {"a": 1}), ("b", {"b": True})]


def test_chunks_arrive_before_the_streaming_node_ends(engine: str) -> None:
    async def main() -> list[Any]:
        seen = asyncio.Event()

        @bf.step
        async def llm(state: dict[str, Any]) -> AsyncIterator[str]:
            yield "first"
            await seen.wait()  # set by the consumer once it saw "first"
            yield "second"

        got = []
        async for mode, payload in line(("llm", llm)).astream(
            {}, stream_mode=["messages", "updates"]
        ):
            got.append((mode, payload))
            if payload == ("llm", "first"):
                seen.set()
        return got

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == [
        ("messages", ("llm", "first")),
        ("messages", ("llm", "second")),
        ("updates", ("llm", {"llm": "firstsecond"})),
    ]


def test_custom_emit_from_sync_and_async_steps(engine: str) -> None:
    @bf.step
    async def fetch(n: int) -> int:
        bf.emit(f"fetching {n}")
        return n * 2

    @bf.step(track=False)
    def parse(n: int) -> int:  # sync: runs in a worker thread
        bf.emit(f"parsing {n}")
        return n + 1

    async def work(state: dict[str, Any]) -> dict[str, Any]:
        bf.emit("start")
        return {"n": await parse(await fetch(state["n"]))}

    def sync_node(state: dict[str, Any]) -> None:  # a sync node: a worker thread too
        bf.emit(f"n is {state['n']}")

    graph = line(("work", work), ("report", sync_node))
    got = asyncio.run(collect(graph.astream({"n": 3}, stream_mode="custom")))
    assert got == ["start", "fetching 3", "parsing 6", "n is 7"]


def test_emit_without_a_stream_is_a_no_op() -> None:
    bf.emit("nobody listens")

    @bf.step(track=False)
    def node(x: int) -> int:
        bf.emit(x)
        return x

    assert node.invoke(4) == 4


# ---------------------------------------------------------------- streaming steps


def test_streaming_step_values_str_join_or_list(engine: str) -> None:
    @bf.step
    async def words(n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"w{i} "

    @bf.step
    async def mixed(n: int) -> AsyncIterator[Any]:
        yield "a"
        yield n

    @bf.step
    async def nothing(n: int) -> AsyncIterator[Any]:
        return
        yield

    assert words.invoke(3) == "w0 w1 w2 "
    assert mixed.invoke(7) == ["a", 7]
    assert nothing.invoke(0) == []
    assert asyncio.run(words(2)) == "w0 w1 "  # awaited like an async step
    assert bf.Chain([words, str.upper], provider=engine).invoke(2) == "W0 W1 "


def test_sync_generator_step(engine: str) -> None:
    @bf.step
    def numbers(state: dict[str, Any]) -> Iterator[int]:
        yield from (1, 2, 3)

    assert numbers.invoke({}) == [1, 2, 3]
    assert list(numbers.stream({})) == [1, 2, 3]
    got = list(line(("numbers", numbers)).stream({}, stream_mode=["messages", "values"]))
    assert got == [
        ("messages", ("numbers", 1)),
        ("messages", ("numbers", 2)),
        ("messages", ("numbers", 3)),
        ("values", {"numbers": [1, 2, 3]}),
    ]


def test_a_streaming_step_inside_a_node_reports_under_the_node(engine: str) -> None:
    async def answer(state: dict[str, Any]) -> dict[str, Any]:
        return {"text": await tokens(state)}

    got = list(line(("answer", answer)).stream({}, stream_mode=["messages", "updates"]))
    assert got == [
        ("messages", ("answer", "Hel")),
        ("messages", ("answer", "lo")),
        ("updates", ("answer", {"text": "Hello"})),
    ]


def test_retries_restart_the_generator(engine: str) -> None:
    attempts: list[int] = []

    @bf.step(retry_policy=FAST)
    async def flaky(state: dict[str, Any]) -> AsyncIterator[str]:
        attempts.append(1)
        yield f"try{len(attempts)} "
        if len(attempts) == 1:
            raise ValueError("dropped connection")
        yield "done"

    got = list(line(("flaky", flaky)).stream({}, stream_mode=["messages", "values"]))
    # The failed attempt's chunk was already streamed (as in LangGraph).
    assert got == [
        ("messages", ("flaky", "try1 ")),
        ("messages", ("flaky", "try2 ")),
        ("messages", ("flaky", "done")),
        ("values", {"flaky": "try2 done"}),
    ]
    assert len(attempts) == 2


def test_the_timeout_bounds_the_whole_generation(engine: str) -> None:
    @bf.step(timeout=0.5)
    async def endless(state: dict[str, Any]) -> AsyncIterator[int]:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.01)

    async def main() -> tuple[list[Any], OrchestratorError]:
        got: list[Any] = []
        with pytest.raises(OrchestratorError) as info:
            async for chunk in line(("endless", endless)).astream({}, stream_mode="messages"):
                got.append(chunk)
        return got, info.value

    got, err = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert err.code is ErrorCode.EXECUTION_FAILED
    assert isinstance(err.__cause__, OrchestratorError)
    assert err.__cause__.code is ErrorCode.TIMEOUT
    assert got[:2] == [("endless", 0), ("endless", 1)]


def test_step_astream_yields_chunks_live(engine: str) -> None:
    async def main() -> list[str]:
        seen = asyncio.Event()

        @bf.step
        async def llm(prompt: str) -> AsyncIterator[str]:
            yield prompt
            await seen.wait()
            yield "!"

        got = []
        async for chunk in llm.astream("hi"):
            got.append(chunk)
            seen.set()
        return got

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == ["hi", "!"]


def test_chain_stream_yields_the_last_steps_chunks_live(engine: str) -> None:
    async def main() -> list[str]:
        seen = asyncio.Event()

        @bf.step
        async def llm(prompt: dict[str, Any]) -> AsyncIterator[str]:
            yield prompt["input"]
            await seen.wait()
            yield "?"

        inner_chunks = tokens  # a streaming step called by the streamed one

        @bf.step
        async def outer(prompt: dict[str, Any]) -> AsyncIterator[str]:
            yield await inner_chunks({})

        got = []
        async for chunk in bf.Chain([lambda x: {"input": x["input"].upper()}, llm]).astream(
            {"input": "why"}
        ):
            got.append(chunk)
            seen.set()
        # Only the streamed step's own chunks: not those of the steps it calls.
        assert [c async for c in outer.astream({})] == ["Hello"]
        return got

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == ["WHY", "?"]


# ---------------------------------------------------------------- errors and early stop


def test_a_failure_is_raised_after_the_items_before_it(engine: str) -> None:
    def boom(state: dict[str, Any]) -> None:
        raise RuntimeError("no luck")

    graph = line(("a", lambda s: {"a": 1}), ("boom", boom))
    got: list[Any] = []
    with pytest.raises(OrchestratorError) as info:
        for item in graph.stream({}, stream_mode="updates"):
            got.append(item)
    assert got == [("a", {"a": 1})]
    assert info.value.code is ErrorCode.EXECUTION_FAILED and "boom" in str(info.value)


events: list[asyncio.Event] = []  # (started, cancelled) of the current run


@bf.step
async def llm(state: dict[str, Any]) -> AsyncIterator[str]:
    started, cancelled = events
    started.set()
    yield "one"
    try:
        await asyncio.Event().wait()  # forever, until cancelled
    finally:
        cancelled.set()
    yield "never"


@pytest.mark.parametrize("how", ["aclose", "break"])
def test_a_consumer_that_stops_early_cancels_the_run(engine: str, how: str) -> None:
    problems: list[Any] = []
    later: list[int] = []
    graph = line(("llm", llm), ("after", lambda s: later.append(1)))

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: problems.append(ctx))
        started, cancelled = asyncio.Event(), asyncio.Event()
        before = asyncio.all_tasks()
        events[:] = [started, cancelled]

        stream = graph.astream({}, stream_mode="messages")
        if how == "aclose":
            async with contextlib.aclosing(stream):
                async for _ in stream:
                    break
            assert cancelled.is_set()  # cancelled and awaited by aclose()
        else:
            async for _ in stream:
                break
            del stream  # the loop's async-generator finalizer closes it, in a task
            await cancelled.wait()
            while asyncio.all_tasks() - before:  # that task ends (else: wait_for fails)
                await asyncio.sleep(0)
        assert started.is_set() and not later
        assert asyncio.all_tasks() - before == set()  # no orphan task

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "never awaited", "destroyed but pending" …
        warnings.simplefilter("ignore", ResourceWarning)  # Prefect's client sockets, any run
        asyncio.run(asyncio.wait_for(main(), WAIT))
        gc.collect()
    assert problems == []
    if engine == "prefect":
        # Prefect records a run cancelled under it (asyncio) as Crashed, saying so.
        [run] = flow_runs(graph.name)
        assert run.state.is_crashed() and "cancelled" in run.state.message, run.state


# ---------------------------------------------------------------- nesting, flows


def test_a_nested_graph_streams_its_chunks_but_not_its_updates(engine: str) -> None:
    inner = line(("llm", tokens), ("note", lambda s: {"noted": True}))
    graph = line(("prep", lambda s: {"p": 1}), ("inner", inner.compile()))
    got = list(graph.stream({}, stream_mode=["updates", "messages"]))
    assert got == [
        ("updates", ("prep", {"p": 1})),
        ("messages", ("llm", "Hel")),
        ("messages", ("llm", "lo")),
        ("updates", ("inner", {"p": 1, "llm": "Hello", "noted": True})),
    ]


def test_streaming_inside_a_flow(engine: str) -> None:
    graph = line(("plan", lambda s: {"plan": 1}), ("llm", tokens), reducers={"log": operator.add})

    @bf.flow(name=f"streamer-{uuid.uuid4().hex[:6]}")
    async def streamer() -> list[Any]:
        return [item async for item in graph.astream({}, stream_mode="messages")]

    assert asyncio.run(streamer()) == [("llm", "Hel"), ("llm", "lo")]


# ---------------------------------------------------------------- Prefect


@pytest.mark.usefixtures("prefect_server")
def test_on_prefect_a_streaming_task_run_completes_with_the_final_value() -> None:
    attempts: list[int] = []

    @bf.step(retry_policy=FAST, cache=True)  # cache: its result is persisted, to read back
    async def llm(state: dict[str, Any]) -> AsyncIterator[str]:
        attempts.append(1)
        yield f"{state['q']} "
        if len(attempts) == 1:
            raise ValueError("dropped")
        yield "answered"

    graph = line(("llm", llm), provider="prefect")
    question = uuid.uuid4().hex[:8]
    got = list(graph.stream({"q": question}, stream_mode="messages"))
    assert got == [("llm", f"{question} "), ("llm", f"{question} "), ("llm", "answered")]
    [run] = flow_runs(graph.name)
    [task] = task_runs(run.id, expect=1)
    assert task.name == "llm-1" and task.state.is_completed() and task.run_count == 2
    assert asyncio.run(_result(task.state)) == f"{question} answered"


async def _result(state: Any) -> Any:
    value: Callable[..., Any] = state.result
    got = value(raise_on_failure=True)
    return await got if asyncio.iscoroutine(got) else got


# ---------------------------------------------------------------- the example


def test_the_streaming_llm_example_prints_tokens_live(prefect_server: LocalServer) -> None:
    done = example("flows/streaming_llm.py", prefect_server.api_url)
    assert done.returncode == 0, done.stderr
    answer = "On retries: retry transient errors; back off exponentially; give up on bad input."
    assert done.stdout.splitlines() == [answer, "{'topic': 'retries', 'words': 13}"]
    assert "[planned 3 points]" in done.stderr and "[summarizing]" in done.stderr

    ran = cli(
        "run",
        "flows/streaming_llm.py:streaming_llm",
        "--param",
        "topic=timeouts",
        "--param",
        "delay=0",
        env={"PREFECT_API_URL": prefect_server.api_url},
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("On timeouts: bound every call; fail fast; retry what timed out.")
    assert json.loads(ran.stdout[ran.stdout.index("{") :]) == {"topic": "timeouts", "words": 11}
