"""The served-deployment mode: runs execute in a separate ``wf.serve()`` process.

The serving process is a real Prefect runner (a subprocess per flow run); this test
process only talks to the runs through the API, as a web service or CLI would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.server import LocalServer
from tests.procs import stop
from tests.workflow_app import lines, served, served_steps

ROOT = Path(__file__).resolve().parents[1]


def _deployment_ready() -> bool:
    async def read(name: str) -> Any:
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(name)
            except ObjectNotFound:
                return None

    names = ("wf-served/default", "wf-served-steps/default")
    return all(asyncio.run(read(name)) is not None for name in names)


@pytest.fixture(scope="module")
def worker(prefect_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log = tmp_path_factory.mktemp("served") / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "beluga_flows.cli", "workflow", "serve"),
                *("tests/workflow_app.py:served", "tests/workflow_app.py:served_steps"),
            ],
            cwd=ROOT,
            env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not _deployment_ready():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the workflow was never served"
        time.sleep(0.2)
    yield proc.pid
    assert stop(proc) == 0, log.read_text()[-3000:]


def _run(run_id: str) -> Any:
    async def read() -> Any:
        async with get_client() as client:
            return await client.read_flow_run(uuid.UUID(run_id))

    return asyncio.run(read())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def test_a_served_run_executes_in_the_worker_and_answers_signals_and_queries(
    worker: int, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.txt")
    wid = f"served-{uuid.uuid4().hex[:8]}"
    handle = served.execute({"ledger": ledger, "expect": 2}, workflow_id=wid)
    served.signal(wid, handle.run_id, "item", "a")
    served.signal(wid, handle.run_id, "item", "b")
    assert served.get_result(wid, handle.run_id, timeout=120) == {"items": ["a", "b"]}
    run = _run(handle.run_id)
    assert run.deployment_id is not None
    assert run.labels["beluga.pid"] not in (str(os.getpid()), str(worker))  # a runner subprocess
    assert lines(ledger) == ["do first", "do second", "do last"]


def test_a_served_run_answers_custom_queries_and_cancels_gracefully(
    worker: int, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.txt")
    wid = f"served-{uuid.uuid4().hex[:8]}"
    handle = served.execute({"ledger": ledger, "expect": 2}, workflow_id=wid)
    served.signal(wid, None, "item", "a")
    _wait(lambda: served.query(wid, None, "received", "~", timeout=60) == ["~a"])
    served.cancel(wid, handle.run_id)
    with pytest.raises(OrchestratorError) as info:
        served.get_result(wid, handle.run_id, timeout=120)
    assert info.value.code is ErrorCode.TASK_CANCELED
    assert lines(ledger) == ["do first", "do second", "undo second", "undo first"]


def test_a_served_run_terminates_at_once(worker: int, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.txt")
    wid = f"served-{uuid.uuid4().hex[:8]}"
    handle = served.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)
    _wait(lambda: len(lines(ledger)) == 2)
    served.terminate(wid, handle.run_id, reason="operator said so")
    with pytest.raises(OrchestratorError) as info:
        served.get_result(wid, handle.run_id, timeout=120)
    assert "terminated: operator said so" in str(info.value)
    owner = int(_run(handle.run_id).labels["beluga.pid"])
    _wait(lambda: not _alive(owner))  # the run's process is gone; its last word is in
    run = _run(handle.run_id)
    assert run.state.type.value == "CANCELLED" and run.state.message.endswith("operator said so")
    assert lines(ledger) == ["do first", "do second"]


def test_a_failed_served_run_resumes_in_the_worker_from_stored_steps(
    worker: int, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.txt")
    Path(ledger + ".broken").touch()  # step 5 fails once
    wid = f"served-{uuid.uuid4().hex[:8]}"
    first = served_steps.execute({"ledger": ledger}, workflow_id=wid)
    with pytest.raises(OrchestratorError) as failed:
        served_steps.get_result(wid, first.run_id, timeout=120)
    assert failed.value.code is ErrorCode.EXECUTION_FAILED
    second = served_steps.resume(wid)
    assert served_steps.get_result(wid, second.run_id, timeout=120) == 285
    ran = lines(ledger)
    assert [ran.count(f"done {i}") for i in range(10)] == [1] * 10
    assert [ran.count(f"start {i}") for i in range(10)] == [1] * 5 + [2] + [1] * 4
    assert _run(second.run_id).deployment_id is not None
