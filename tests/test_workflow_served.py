"""The served-deployment mode: runs execute in a separate ``wf.serve()`` process.

The serving process is a real Prefect runner (a subprocess per flow run); this test
process only talks to the runs through the API, as a web service or CLI would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from beluga_flows._procs import alive
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.tools.server import LocalServer
from tests import workflow_app
from tests.prefect_api import deployment, flow_run
from tests.procs import stop, until
from tests.workflow_app import handoff, lines, served, served_steps

ROOT = Path(__file__).resolve().parents[1]


def _serving(name: str) -> bool:
    """Registered by a runner that serves it now (a stopped one pauses it)."""
    found = deployment(name)
    return found is not None and not found.paused


def _serve(log: Path, *targets: str) -> subprocess.Popen[bytes]:
    """``beluga-flows workflow serve TARGETS``, once its deployments are served."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beluga_flows.cli", "workflow", "serve", *targets],
            cwd=ROOT,
            env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    names = [f"{getattr(workflow_app, t.rpartition(':')[2]).name}/default" for t in targets]
    deadline = time.monotonic() + 120
    while not all(_serving(name) for name in names):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the workflow was never served"
        time.sleep(0.2)
    return proc


@pytest.fixture(scope="module")
def worker(prefect_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log = tmp_path_factory.mktemp("served") / "worker.log"
    proc = _serve(log, "tests/workflow_app.py:served", "tests/workflow_app.py:served_steps")
    yield proc.pid
    assert stop(proc) == 0, log.read_text()[-3000:]


def test_a_served_run_executes_in_the_worker_and_answers_signals_and_queries(
    worker: int, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.txt")
    wid = f"served-{uuid.uuid4().hex[:8]}"
    handle = served.execute({"ledger": ledger, "expect": 2}, workflow_id=wid)
    served.signal(wid, handle.run_id, "item", "a")
    served.signal(wid, handle.run_id, "item", "b")
    assert served.get_result(wid, handle.run_id, timeout=120) == {"items": ["a", "b"]}
    run = flow_run(handle.run_id)
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
    until(lambda: served.query(wid, None, "received", "~", timeout=60) == ["~a"])
    served.cancel(wid, handle.run_id)
    with pytest.raises(OrchestratorError) as info:
        served.get_result(wid, handle.run_id, timeout=120)
    assert info.value.code is ErrorCode.TASK_CANCELED
    assert lines(ledger) == ["do first", "do second", "undo second", "undo first"]


def test_a_served_run_terminates_at_once(worker: int, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.txt")
    wid = f"served-{uuid.uuid4().hex[:8]}"
    handle = served.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)
    until(lambda: len(lines(ledger)) == 2)
    served.terminate(wid, handle.run_id, reason="operator said so")
    with pytest.raises(OrchestratorError) as info:
        served.get_result(wid, handle.run_id, timeout=120)
    assert "terminated: operator said so" in str(info.value)
    owner = int(flow_run(handle.run_id).labels["beluga.pid"])
    until(lambda: not alive(owner))  # the run's process is gone; its last word is in
    run = flow_run(handle.run_id)
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
    assert flow_run(second.run_id).deployment_id is not None


def test_a_stopped_worker_leaves_its_runs_resumable_by_the_next_one(
    prefect_server: LocalServer, tmp_path: Path
) -> None:
    """A worker stopped mid-run (a deploy, a scale-down) cancels its runs without
    compensating; the next worker resumes them from their stored steps."""
    ledger, target = str(tmp_path / "ledger.txt"), "tests/workflow_app.py:handoff"
    first = _serve(tmp_path / "a.log", target)
    try:
        wid = f"handoff-{uuid.uuid4().hex[:8]}"
        handle = handoff.execute({"ledger": ledger, "delay": 0.5}, workflow_id=wid)
        until(lambda: "done 2" in lines(ledger), what="three steps")
    finally:
        assert stop(first) == 0, (tmp_path / "a.log").read_text()[-3000:]
    run = flow_run(handle.run_id)
    assert run.state.type.value in ("CANCELLED", "CRASHED"), run.state
    assert not _serving("wf-handoff/default")  # paused while nothing serves it
    before = [ln for ln in lines(ledger) if ln.startswith("done")]
    second = _serve(tmp_path / "b.log", target)
    try:
        resumed = handoff.resume(wid)
        assert handoff.get_result(wid, resumed.run_id, timeout=120) == 285
    finally:
        stop(second)
    ran = lines(ledger)
    assert all(f"done {i}" in ran for i in range(10)) and len(before) >= 3
    stored = len(before) - 1  # the step stopped mid-record may run again (at least once)
    assert [ran.count(f"start {i}") for i in range(stored)] == [1] * stored, ran
    assert flow_run(resumed.run_id).deployment_id is not None
