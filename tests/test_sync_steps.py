"""Sync steps never block the event loop, and a timed-out sync call stays contained.

A sync step called from async code returns an awaitable (its function runs in a
worker thread); a timed-out sync call is abandoned in a daemon thread that no
retry overlaps, that no later call waits behind, and that no exit joins.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError
from beluga_flows.tools.server import LocalServer

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


# ------------------------------------------------------------ timed-out sync calls


class Overlap:
    """Counts the calls of a function running at once (the peak is what matters)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = self.calls = 0

    def __enter__(self) -> int:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
            return self.calls

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def test_a_retry_waits_for_the_timed_out_call_it_would_overlap(engine: str) -> None:
    gate, second, overlap = threading.Event(), threading.Event(), Overlap()

    def release(err: BaseException) -> bool:
        gate.set()  # the first call is let go while the retry decides: after its timeout
        return True

    policy = bf.RetryPolicy(max_attempts=3, initial_delay=0, jitter=0, retry_on=release)

    @bf.step(timeout=1, retry_policy=policy)
    def slow_once() -> int:
        with overlap as call:
            if call > 1:
                second.set()
                return call
            if not gate.wait(PATIENCE):
                raise AssertionError("never released")
            # A retry that started now would be seen here: the two would overlap.
            second.wait(0.3)
            return call

    assert slow_once() == 2
    assert overlap.peak == 1


def test_a_timed_out_call_that_stays_stuck_is_not_retried_beside_itself(engine: str) -> None:
    gate, overlap = threading.Event(), Overlap()
    policy = bf.RetryPolicy(max_attempts=3, initial_delay=0, jitter=0)

    @bf.step(timeout=0.2, retry_policy=policy)
    def stuck() -> None:
        with overlap:
            gate.wait(PATIENCE)

    try:
        with pytest.raises(OrchestratorError) as info:
            stuck()
        assert overlap.calls == 1  # no second copy ran beside the stuck one
        assert info.value.code is ErrorCode.TIMEOUT
        assert info.value.attempts == 1  # type: ignore[attr-defined]
        assert "not retried: the timed-out call still runs" in str(info.value)
    finally:
        gate.set()


def test_stuck_timed_out_calls_do_not_starve_later_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BELUGA_FLOWS_PROVIDER", "local")
    gate = threading.Event()

    @bf.step(timeout=0.2, track=False)
    def stuck(i: int) -> int:
        gate.wait(PATIENCE * 3)
        return i

    @bf.step(track=False)
    def later(x: int) -> int:
        return x + 1

    async def scenario() -> int:
        outcomes = await asyncio.gather(*(stuck(i) for i in range(300)), return_exceptions=True)
        assert all(
            isinstance(o, OrchestratorError) and o.code is ErrorCode.TIMEOUT for o in outcomes
        )
        result: int = await asyncio.wait_for(later(1), PATIENCE)
        return result

    try:
        assert asyncio.run(scenario()) == 2
    finally:
        gate.set()


STUCK_SCRIPT = """
import time, beluga_flows as bf

@bf.step(timeout=0.3, track=False)
def stuck() -> None:
    time.sleep(120)

try:
    stuck()
except bf.OrchestratorError as err:
    print(err.code.value, flush=True)
"""


def test_a_process_exits_promptly_with_a_stuck_timed_out_call_behind() -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STUCK_SCRIPT)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,  # the stuck call blocks for 120 s: joining it would hang here
        env={**_env(root), "BELUGA_FLOWS_PROVIDER": "local"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["timeout"]


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root)}


STUCK_FLOW = """
import time, beluga_flows as bf

@bf.step
def stuck() -> None:
    time.sleep(120)

@bf.flow(timeout=1)
async def hangs() -> None:
    await stuck()
"""


def test_the_cli_exits_promptly_after_a_flow_timed_out_on_a_stuck_sync_step(
    prefect_server: LocalServer, tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "hangs.py").write_text(textwrap.dedent(STUCK_FLOW))
    done = subprocess.run(
        [Path(sys.executable).with_name("beluga-flows"), "run", f"{tmp_path}/hangs.py:hangs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,  # the stuck step sleeps for 120 s: joining its thread would hang here
        env={**_env(root), "PREFECT_API_URL": prefect_server.api_url},
    )
    assert done.returncode == 2, done.stderr
    assert "[timeout]" in done.stderr


# ------------------------------------------------------------ cancelling a bounded call


def test_cancelling_the_caller_cancels_an_async_step_bounded_by_a_timeout(engine: str) -> None:
    """An async step with ``timeout=`` runs on a private loop in a worker thread; a
    caller that is cancelled (a hedge's loser, a cancelled graph node) cancels it too,
    rather than leaving it running to its own deadline."""
    started, stopped = threading.Event(), threading.Event()

    @bf.step(timeout=PATIENCE * 3)
    async def wait_forever() -> None:
        started.set()
        try:
            await asyncio.sleep(PATIENCE * 3)
        finally:
            stopped.set()

    @bf.flow
    async def cancel_it() -> bool:
        call = asyncio.ensure_future(wait_forever())
        assert await asyncio.to_thread(started.wait, PATIENCE)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return await asyncio.to_thread(stopped.wait, PATIENCE)

    assert asyncio.run(cancel_it()) is True
