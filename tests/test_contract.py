"""One contract, two engines: every test here runs on the local engine and on Prefect.

What a user sees must not depend on where steps run: values, retries, timeouts,
error codes, chain semantics, batch and stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError

FAST = bf.RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05, jitter=0)


# ------------------------------------------------------------------ steps


@pytest.mark.parametrize("track", [True, False])
def test_sync_and_async_steps_return_values(engine: str, track: bool) -> None:
    @bf.step(track=track)
    def double(x: int) -> int:
        return 2 * x

    @bf.step(track=track)
    async def inc(x: int) -> int:
        return x + 1

    assert double(4) == 8
    assert asyncio.run(inc(4)) == 5
    assert double.fn(4) == 8 and double.name == "double"
    assert double.invoke(5) == 10 and inc.invoke(5) == 6


@pytest.mark.parametrize("track", [True, False])
def test_retries_really_happen_and_count_attempts(engine: str, track: bool) -> None:
    calls: list[int] = []

    @bf.step(retry_policy=FAST, track=track)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("transient")
        return x

    assert flaky(7) == 7
    assert len(calls) == 3


def test_exhausted_retries_raise_last_error_with_attempts(engine: str) -> None:
    calls: list[int] = []

    @bf.step(retry_policy=FAST)
    def always(x: int) -> int:
        calls.append(x)
        raise ConnectionError(f"down #{len(calls)}")

    with pytest.raises(ConnectionError, match="down #3") as info:
        always(1)
    assert info.value.attempts == 3  # type: ignore[attr-defined]
    assert len(calls) == 3


def test_non_retryable_codes_are_never_retried(engine: str) -> None:
    calls: list[int] = []

    @bf.step(retry_policy=FAST)
    def picky(x: int) -> int:
        calls.append(x)
        raise OrchestratorError("picky", "bad input", ErrorCode.INVALID_INPUT)

    with pytest.raises(OrchestratorError) as info:
        picky(1)
    assert info.value.code is ErrorCode.INVALID_INPUT
    assert calls == [1] and info.value.attempts == 1  # type: ignore[attr-defined]


def test_retry_on_limits_what_is_retried(engine: str) -> None:
    calls: list[str] = []
    policy = bf.RetryPolicy(max_attempts=4, initial_delay=0.01, jitter=0, retry_on=(KeyError,))

    @bf.step(retry_policy=policy)
    def step_(kind: str) -> None:
        calls.append(kind)
        raise (KeyError if len(calls) < 2 else ValueError)(kind)

    with pytest.raises(ValueError):
        step_("k")
    assert len(calls) == 2  # KeyError retried once, ValueError not


@pytest.mark.parametrize("track", [True, False])
def test_timeout_preempts_a_blocking_sync_step(engine: str, track: bool) -> None:
    @bf.step(timeout=0.3, track=track)
    def stuck(x: int) -> int:
        time.sleep(4)
        return x

    start = time.monotonic()
    with pytest.raises(OrchestratorError) as info:
        stuck(1)
    assert info.value.code is ErrorCode.TIMEOUT and info.value.retryable
    assert "stuck" in str(info.value)
    assert time.monotonic() - start < 2.5  # the caller did not wait for the 4 s call


def test_timeout_preempts_an_async_step_that_blocks_its_loop(engine: str) -> None:
    @bf.step(timeout=0.3)
    async def hog(x: int) -> int:
        time.sleep(4)  # blocks whatever loop runs it
        return x

    start = time.monotonic()
    with pytest.raises(OrchestratorError) as info:
        asyncio.run(hog(1))
    assert info.value.code is ErrorCode.TIMEOUT
    assert time.monotonic() - start < 2.5


def test_timeout_cancels_a_cooperative_async_step(engine: str) -> None:
    reached: list[str] = []

    @bf.step(timeout=0.2)
    async def sleepy() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            reached.append("cancelled")
            raise
        reached.append("finished")

    with pytest.raises(OrchestratorError) as info:
        asyncio.run(sleepy())
    assert info.value.code is ErrorCode.TIMEOUT
    deadline = time.monotonic() + 2
    while not reached and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reached == ["cancelled"]


def test_timed_out_attempts_are_retried(engine: str) -> None:
    calls: list[int] = []
    late = threading.Event()

    def retryable(err: BaseException) -> bool:
        late.set()  # the timed-out first call ends now, and only then is it retried
        return True

    @bf.step(timeout=0.2, retry_policy=bf.RetryPolicy(initial_delay=0.01, retry_on=retryable))
    def slow_then_fast() -> str:
        calls.append(1)
        if len(calls) == 1:
            late.wait(30)
        return "ok"

    assert slow_then_fast() == "ok"
    assert len(calls) == 2


# ------------------------------------------------------------------ flows


def test_sync_and_async_flows(engine: str) -> None:
    @bf.step
    def add(a: int, b: int) -> int:
        return a + b

    @bf.step
    async def square(x: int) -> int:
        return x * x

    @bf.flow
    def total(n: int) -> int:
        return sum(add(i, 1) for i in range(n))

    @bf.flow(max_workers=2)
    async def squares(n: int) -> list[int]:
        return list(await asyncio.gather(*(square(i) for i in range(n))))

    assert total(3) == 6
    assert asyncio.run(squares(4)) == [0, 1, 4, 9]
    assert total.fn(2) == 3


def test_flow_timeout(engine: str) -> None:
    @bf.flow(timeout=0.3)
    async def forever() -> None:
        await asyncio.sleep(10)

    with pytest.raises(OrchestratorError) as info:
        asyncio.run(forever())
    assert info.value.code is ErrorCode.TIMEOUT


def test_flow_max_workers_bounds_concurrent_steps(engine: str) -> None:
    running: list[int] = []
    peak: list[int] = [0]

    @bf.step
    async def work(i: int) -> int:
        running.append(i)
        peak[0] = max(peak[0], len(running))
        await asyncio.sleep(0.05)
        running.remove(i)
        return i

    @bf.flow(max_workers=2)
    async def fan(n: int) -> list[int]:
        return list(await asyncio.gather(*(work(i) for i in range(n))))

    assert asyncio.run(fan(6)) == list(range(6))
    assert peak[0] == 2


def test_sync_step_called_from_async_code_is_awaited(engine: str) -> None:
    @bf.step
    def plain(x: int) -> int:
        return x * 3

    @bf.flow
    async def mixed(x: int) -> int:
        # On the loop thread a sync step returns an awaitable: it runs in a worker
        # thread and the loop goes on meanwhile.
        return await plain(x) + 1

    assert asyncio.run(mixed(2)) == 7


# ------------------------------------------------------------------ chains


@bf.step
def upper(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "input": d["input"].upper()}


@bf.step
async def exclaim(d: dict[str, Any]) -> str:
    return d["input"] + "!"


def test_chain_passes_outputs_along(engine: str) -> None:
    chain = bf.Chain([upper, exclaim, lambda s: s * 2], name="shout")
    assert chain.invoke({"input": "hi"}) == "HI!HI!"
    assert chain.invoke("hey") == "HEY!HEY!"  # one input key: str becomes {input: str}
    assert asyncio.run(chain.ainvoke("yo")) == "YO!YO!"


def test_empty_chain_returns_its_input(engine: str) -> None:
    assert bf.Chain([]).invoke({"input": 1}) == {"input": 1}


def test_failing_step_names_itself_and_stops_the_chain(engine: str) -> None:
    ran: list[str] = []

    def boom(d: Any) -> Any:
        raise ValueError("kaput")

    def after(d: Any) -> Any:
        ran.append("after")
        return d

    chain = bf.Chain([upper, boom, after])
    with pytest.raises(OrchestratorError) as info:
        chain.invoke("x")
    err = info.value
    assert err.code is ErrorCode.EXECUTION_FAILED
    assert "step 1 'boom'" in str(err) and "kaput" in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert err.step == "boom" and err.step_index == 1  # type: ignore[attr-defined]
    assert ran == []


def test_chain_timeout_bounds_the_whole_chain(engine: str) -> None:
    async def nap(d: Any) -> Any:
        await asyncio.sleep(0.25)
        return d

    chain = bf.Chain([nap, nap, nap, nap], timeout=0.4)
    with pytest.raises(OrchestratorError) as info:
        chain.invoke("x")
    assert info.value.code is ErrorCode.TIMEOUT


def test_chain_retries_rerun_the_chain(engine: str) -> None:
    calls: list[int] = []

    def once_broken(d: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("blip")
        return "fine"

    chain = bf.Chain([once_broken], retries=1)  # one retry after ~0.5 s
    assert chain.invoke("x") == "fine"
    assert len(calls) == 2


def test_batch_keeps_order_and_can_return_exceptions(engine: str) -> None:
    def maybe(d: dict[str, Any]) -> int:
        if d["input"] == "bad":
            raise ValueError("bad item")
        return len(d["input"])

    chain = bf.Chain([maybe])
    assert chain.batch(["a", "bb", "ccc"]) == [1, 2, 3]
    results = chain.batch(["a", "bad", "ccc"], return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert (
        isinstance(results[1], OrchestratorError) and results[1].code is ErrorCode.EXECUTION_FAILED
    )
    with pytest.raises(OrchestratorError):
        chain.batch(["bad"])


def test_stream_runs_all_but_last_then_streams_it(engine: str) -> None:
    def words(d: dict[str, Any]) -> Any:
        return iter(d["input"].split())

    assert list(bf.Chain([upper, words]).stream("a b c")) == ["A", "B", "C"]
    assert list(bf.Chain([upper, exclaim]).stream("a")) == ["A!"]  # a plain value once


def test_pipe_composes_runnables(engine: str) -> None:
    @bf.step
    def plus_one(x: int) -> int:
        return x + 1

    @bf.step
    def times_ten(x: int) -> int:
        return x * 10

    piped = plus_one | times_ten | (lambda x: x - 1)
    assert isinstance(piped, bf.Chain) and len(piped.steps) == 3
    assert piped.invoke(1) == 19


def test_chain_with_memory(engine: str) -> None:
    memory = bf.BufferMemory(k=2)

    def reply(d: dict[str, Any]) -> str:
        return f"{d['input']} (after {d['history'].count('Human:')} turns)"

    chain = bf.Chain([reply], memory=memory)
    assert chain.invoke("hello") == "hello (after 0 turns)"
    assert chain.invoke({"input": "again"}) == "again (after 1 turns)"
    assert memory.exchanges[-1] == ({"input": "again"}, {"output": "again (after 1 turns)"})
    assert "Human: hello" in memory.load_memory_variables({})["history"]


def test_flow_retries_rerun_a_failed_flow(engine: str) -> None:
    calls: list[int] = []

    @bf.flow(retries=1)
    def shaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        return "second run"

    assert shaky() == "second run"
    assert len(calls) == 2
