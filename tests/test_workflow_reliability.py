"""Work is never lost or repeated (issue 11): approvals belong to the request they
answer, compensations run exactly once per undo, a cancel is never lost or read as a
terminate. Real runs on the session's Prefect server; crashes are real SIGKILLs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelled

import beluga_flows as bf
from beluga_flows.errors import ErrorCode, OrchestratorError
from tests.prefect_api import flow_run
from tests.procs import until
from tests.workflow_app import approval_retried, approvals_twice, lines, refunds, signals

pytestmark = pytest.mark.usefixtures("prefect_server")

WORKER = Path(__file__).with_name("workflow_crash_worker.py")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def status(workflow: bf.Workflow, wid: str) -> str:
    return str(workflow.query(wid, None, "status"))


def stage(wid: str) -> str:
    return str(approvals_twice.query(wid, None, "stage", timeout=30))


async def _resume_like_the_ui(run_id: str, data: dict[str, Any]) -> str:
    async with get_client() as client:
        result = await client.resume_flow_run(uuid.UUID(run_id), run_input=data)
    return str(result.status.value)


# ---------------------------------------------------------------- approvals


def test_an_answer_through_the_form_is_replayed_to_a_retry_not_asked_again(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.txt")
    Path(ledger + ".broken").touch()  # the step after the approval fails once
    wid = new_id("form-retry")
    handle = approval_retried.execute({"ledger": ledger}, workflow_id=wid)
    until(lambda: status(approval_retried, wid) == "paused", 60, "the approval pause")
    assert asyncio.run(_resume_like_the_ui(handle.run_id, {"approved": True, "reviewer": "ui"}))
    assert approval_retried.get_result(wid, timeout=60) == "ui"  # the retry did not pause
    assert lines(ledger).count("start 5") == 2


def test_a_late_answer_to_a_timed_out_request_does_not_answer_the_next() -> None:
    wid = new_id("late")
    approvals_twice.execute({"first_timeout": 1.0}, workflow_id=wid)
    until(lambda: stage(wid) == "between", 60, "the first request to time out")
    approvals_twice.signal(wid, None, "approval", {"approved": True, "reviewer": "late"})
    approvals_twice.signal(wid, None, "go")
    until(lambda: status(approvals_twice, wid) == "paused", 60, "the second request to pause")
    approvals_twice.signal(wid, None, "approval", {"approved": False, "reviewer": "carol"})
    assert approvals_twice.get_result(wid, timeout=60) == {
        "first": "timed out",
        "second": "False by carol",
    }


def test_a_second_reviewers_answer_stays_with_the_request_it_answered() -> None:
    wid = new_id("second-reviewer")
    approvals_twice.execute(None, workflow_id=wid)
    until(lambda: status(approvals_twice, wid) == "paused", 60, "the first request")
    approvals_twice.signal(wid, None, "approval", {"approved": True, "reviewer": "ana"})
    approvals_twice.signal(wid, None, "approval", {"approved": True, "reviewer": "bob"})
    until(lambda: stage(wid) == "between", 60, "the first decision")
    approvals_twice.signal(wid, None, "go")
    until(lambda: status(approvals_twice, wid) == "paused", 60, "the second request")
    approvals_twice.signal(wid, None, "approval", {"approved": False, "reviewer": "carol"})
    assert approvals_twice.get_result(wid, timeout=60) == {
        "first": "True by ana",
        "second": "False by carol",
    }


# ---------------------------------------------------------------- cancel


def test_a_cancelled_state_forced_from_outside_is_a_graceful_cancel(tmp_path: Path) -> None:
    """What a cancel racing the start does (it saw the run not started and forced
    Cancelled): the run that did start compensates, it is not terminated."""
    ledger = str(tmp_path / "ledger.txt")
    wid = new_id("forced")
    handle = signals.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)
    until(lambda: len(lines(ledger)) == 2, 60, "two steps")

    async def force() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(
                uuid.UUID(handle.run_id), Cancelled(message="cancelled before it ran"), force=True
            )

    asyncio.run(force())
    with pytest.raises(OrchestratorError) as info:
        signals.get_result(wid, handle.run_id, timeout=60)
    assert info.value.code is ErrorCode.TASK_CANCELED
    until(lambda: "undo first" in lines(ledger), 60, "the compensations")
    assert lines(ledger) == ["do first", "do second", "undo second", "undo first"]


def _host_and_kill(tmp_path: Path, wid: str, name: str, extra: str, ready: Any) -> str:
    """Host ``name`` in a worker process and SIGKILL it once ``ready(ledger lines)``."""
    ledger = str(tmp_path / f"{wid}.txt")
    proc = subprocess.Popen([sys.executable, str(WORKER), wid, ledger, name, extra])
    try:
        until(lambda: ready(lines(ledger)) or proc.poll() is not None, 120, "the worker")
        assert proc.poll() is None, "the worker ended before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return ledger


@pytest.mark.parametrize("client", ["workflow", "client"])
def test_cancelling_a_run_whose_owner_died_runs_its_compensations(
    tmp_path: Path, client: str
) -> None:
    wid = new_id(f"dead-{client}")

    def both_steps_recorded(got: list[str]) -> bool:
        # Killed once the second step's result (and its undo) is stored, not merely
        # once its code wrote the ledger: an unrecorded step has nothing to undo.
        if "do second" not in got:
            return False
        steps = signals.query(wid, None, "steps").values()
        return sum(s is bf.StepStatus.COMPLETED for s in steps) >= 2

    ledger = _host_and_kill(tmp_path, wid, "signals", '{"expect": 1}', both_steps_recorded)
    if client == "workflow":  # has the code: compensates at once
        signals.cancel(wid)
    else:  # by id only: the cancel is recorded, the resume acts on it
        bf.WorkflowClient().cancel(wid)
        assert status(signals, wid) == "crashed"
        signals.resume(wid)
    with pytest.raises(OrchestratorError) as info:
        signals.get_result(wid, timeout=60)
    assert info.value.code is ErrorCode.TASK_CANCELED
    assert lines(ledger) == ["do first", "do second", "undo second", "undo first"]
    with pytest.raises(OrchestratorError) as again:
        signals.resume(wid)  # compensated: nothing to resume
    assert again.value.code is ErrorCode.INVALID_STATE


def test_a_crash_during_compensation_resumes_into_the_rest_of_the_rollback(tmp_path: Path) -> None:
    wid = new_id("undo-crash")
    ledger = str(tmp_path / f"{wid}.txt")
    Path(ledger + ".broken").touch()  # step 5 fails once: a forward resume would ship
    Path(ledger + ".hold.reserve").touch()  # the second undo holds until the kill
    _host_and_kill(tmp_path, wid, "refunds", "{}", lambda got: "undoing reserve" in got)
    Path(ledger + ".hold.reserve").unlink()
    assert status(refunds, wid) == "crashed"
    handle = refunds.resume(wid)
    with pytest.raises(OrchestratorError) as info:
        refunds.get_result(wid, handle.run_id, timeout=120)
    assert info.value.code is ErrorCode.EXECUTION_FAILED and "rolled back" in str(info.value)
    ran = lines(ledger)
    assert "do ship" not in ran and ran.count("start 5") == 1  # never forward again
    assert ran.count("undoing charge") == ran.count("undone charge") == 1  # at most once
    assert ran.count("undone reserve") == 1  # the undo in flight at the crash, finished
    assert flow_run(handle.run_id).labels["beluga.compensated"] == "true"
    assert os.path.exists(ledger)
