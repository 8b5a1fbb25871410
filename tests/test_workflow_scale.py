"""Many live workflows in one host process (issue 11): the API load does not grow
per run, signals still land within a second, and none is lost."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from typing import Any

import pytest
from prefect.client.base import PrefectHttpxAsyncClient

import beluga_flows as bf
from beluga_flows.engine.prefect import runs as prefect_runs
from tests.procs import until

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

RUNS = 100
RECEIVED: dict[int, float] = {}
WAITING: set[int] = set()


async def waiter(i: int) -> int:
    WAITING.add(i)
    await bf.wait_for_signal("go", timeout=900)
    RECEIVED[i] = time.monotonic()
    return i


waiters = bf.Workflow(waiter, name="wf-scale", mode="in_process")


def test_a_hundred_waiting_runs_cost_under_two_requests_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prefect_runs, "POLL", 0.5)  # the default, not the suite's fast poll
    counted = {"host": 0}
    send = PrefectHttpxAsyncClient.send

    async def counting(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "beluga-workflows":
            counted["host"] += 1
        return await send(self, request, *args, **kwargs)

    monkeypatch.setattr(PrefectHttpxAsyncClient, "send", counting)
    prefix = f"scale-{uuid.uuid4().hex[:6]}"

    async def start() -> list[bf.WorkflowHandle]:
        return [await waiters.aexecute({"i": i}, workflow_id=f"{prefix}-{i}") for i in range(RUNS)]

    handles = asyncio.run(start())
    until(lambda: len(WAITING) == RUNS, 600, "every run to wait")
    time.sleep(8)  # start-up traffic ends (and the watcher's poll backs off)
    before = counted["host"]
    time.sleep(15)
    idle_rps = (counted["host"] - before) / 15
    assert idle_rps <= 2.0, f"{idle_rps:.2f} requests/s for {RUNS} idle runs"

    delivery = []
    for i in range(0, RUNS, 10):  # at different moments of the watcher's cycle
        time.sleep(0.37)
        sent = time.monotonic()
        waiters.signal(f"{prefix}-{i}", handles[i].run_id, "go")
        until(lambda i=i: i in RECEIVED, 60, f"run {i} to get its signal")
        delivery.append(RECEIVED[i] - sent)
    assert statistics.median(delivery) <= 1.0, delivery

    for i in range(RUNS):  # the rest: nothing lost
        if i not in RECEIVED:
            waiters.signal(f"{prefix}-{i}", handles[i].run_id, "go")
    results = [
        waiters.get_result(f"{prefix}-{i}", h.run_id, timeout=300) for i, h in enumerate(handles)
    ]
    assert results == list(range(RUNS))
