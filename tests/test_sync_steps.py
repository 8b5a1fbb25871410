"""Sync steps never block the event loop.

A sync step called from async code returns an awaitable (its function runs in a
worker thread).
"""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError

PATIENCE = 20  # seconds a test waits on something that must not take long


# ------------------------------------------------------------ sync steps in async code


def test_a_sync_step_gathered_in_an_async_flow_runs_beside_a_coroutine(engine: str) -> None:
    gate = threading.Event()

    @bf.step
    def wait_for_gate(x: int) -> int:
        if not gate.wait(PATIENCE):
            raise AssertionError("the loop was blocked: the coroutine never ran")
        return x

    async def open_gate() -> str:
        await asyncio.sleep(0)
        gate.set()
        return "opened"

    @bf.flow
    async def both() -> list[object]:
        return list(await asyncio.gather(wait_for_gate(1), open_gate()))

    assert asyncio.run(both()) == [1, "opened"]


def test_a_flow_timeout_fires_while_a_sync_step_from_async_code_is_stuck(engine: str) -> None:
    release = threading.Event()

    @bf.step
    def stuck() -> str:
        release.wait(PATIENCE)
        return "released"

    @bf.flow(timeout=0.5)
    async def body() -> str:
        result: str = await stuck()
        return result

    try:
        with pytest.raises(OrchestratorError) as info:
            asyncio.run(body())
        assert info.value.code is ErrorCode.TIMEOUT
        assert not release.is_set()  # it fired at its deadline, not when the step let go
    finally:
        release.set()


def test_a_sync_step_called_in_async_code_and_never_awaited_warns_by_name() -> None:
    @bf.step(track=False)
    def forgotten(x: int) -> int:
        return x

    async def careless() -> None:
        forgotten(1)  # no await: nothing runs, and Python says so

    with pytest.warns(RuntimeWarning, match="'forgotten'.*never awaited"):
        asyncio.run(careless())
        gc.collect()
