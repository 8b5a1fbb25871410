"""Workflow definitions on a real temporary Prefect server (API.md §6, "On Prefect").

One flow run per execution (tagged ``beluga:definition``, ``workflow:<id>``,
``version:<v>``), a task run per step execution named after the step id (loop
iterations and ``for_each`` children apart), a markdown artifact; durable runs
started with ``engine.start`` are signalled, queried, cancelled with rollback and
resumed without running completed steps again; the duration baseline comes from the
Prefect API, so a new engine in another process sees it.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.events.worker import EventsWorker

import beluga_flows as bf
from beluga_flows.errors import ErrorCode, OrchestratorError
from tests.prefect_api import artifacts, task_runs
from tests.procs import until
from tests.workflow_app import lines, note  # a ledger of what the actions did

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]
wait_until = functools.partial(until, timeout=60)


def new_id() -> str:
    return f"def-{uuid.uuid4().hex[:10]}"


def reserve(data: dict[str, Any]) -> str:
    note(data["ledger"], "reserve")
    return "R-1"


def release(data: dict[str, Any]) -> None:
    note(data["ledger"], "release")


def charge(ledger: str, amount: int) -> int:
    note(ledger, f"charge {amount}")
    if Path(ledger + ".broken").exists():
        raise ValueError("card declined")
    return amount


def poll(ledger: str, n: int) -> int:
    note(ledger, f"poll {n}")
    return n + 1


def check(ledger: str, item: str) -> str:
    note(ledger, f"check {item}")
    return item.upper()


ACTIONS = {
    "reserve": reserve,
    "release": release,
    "charge": charge,
    "poll": poll,
    "check": check,
}


def order(workflow_id: str, *, approval: bool = False, undo: bool = True) -> bf.WorkflowDefinition:
    steps: list[dict[str, Any]] = [
        {
            "step_id": "reserve",
            "action": "reserve",
            "rollback_actions": ["release"] if undo else [],
        },
        {
            "step_id": "poll",
            "type": "loop",
            "action": "poll",
            "input_mapping": {"ledger": "ledger", "n": "polls"},
            "output_mapping": {"polls": "result"},
            "loop_condition": "polls < 2",
            "dependencies": ["reserve"],
        },
        {
            "step_id": "checks",
            "type": "parallel",
            "for_each": "items",
            "dependencies": ["reserve"],
            "parallel_steps": [
                {
                    "step_id": "check",
                    "action": "check",
                    "input_mapping": {"ledger": "ledger", "item": "item"},
                }
            ],
        },
    ]
    last = ["poll", "checks"]
    if approval:
        steps.append({"step_id": "review", "type": "approval", "dependencies": last})
        last = ["review"]
    steps.append(
        {
            "step_id": "charge",
            "action": "charge",
            "input_mapping": {"ledger": "ledger", "amount": "amount"},
            "dependencies": last,
        }
    )
    return bf.WorkflowDefinition.from_dict(
        {"workflow_id": workflow_id, "version": "3", "steps": steps}
    )


def run_of(workflow_id: str) -> Any:
    async def read() -> Any:
        async with get_client() as client:
            found = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=["beluga:definition", f"workflow:{workflow_id}"])
                )
            )
            return [r for r in found if r.state is not None and r.state.is_final()]

    return wait_until(lambda: asyncio.run(read()), what="the definition's flow run")[0]


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.txt")


def data(ledger: str) -> dict[str, Any]:
    return {"ledger": ledger, "amount": 40, "polls": 0, "items": ["a", "b"]}


def test_an_execution_is_a_flow_run_with_a_task_run_per_step_execution(ledger: str) -> None:
    wid = new_id()
    engine = bf.WorkflowEngine(ACTIONS, provider="prefect")
    result = engine.execute(order(wid), data(ledger))
    assert result.status == "completed", result.errors
    assert result.step_records["poll"].iterations == 2
    fr = run_of(wid)
    assert {"beluga:definition", f"workflow:{wid}", "version:3"} <= set(fr.tags)
    names = sorted(t.name for t in task_runs(fr.id, expect=6))
    assert names == ["charge", "check[0]", "check[1]", "poll-1", "poll-2", "reserve"]
    (report,) = [a for a in artifacts(fr.id) if a.key == f"definition-{wid}"]
    assert "| charge | completed | 1 |" in report.data
    assert "```mermaid" in report.data and "flowchart TD" in report.data


def test_a_failed_execution_shows_failed_with_its_code_and_rolls_back(ledger: str) -> None:
    wid = new_id()
    Path(ledger + ".broken").touch()
    result = bf.WorkflowEngine(ACTIONS, provider="prefect").execute(order(wid), data(ledger))
    assert result.status == "failed"
    assert result.errors[0]["step_id"] == "charge"
    assert result.rolled_back == ["reserve"] and lines(ledger)[-1] == "release"
    fr = run_of(wid)
    assert fr.state.type.value == "FAILED" and "execution_failed" in fr.state.message
    assert "rollback-reserve" in [t.name for t in task_runs(fr.id, expect=7)]


def test_a_durable_run_waits_for_approval_then_completes(ledger: str) -> None:
    wid = new_id()
    engine = bf.WorkflowEngine(ACTIONS, provider="prefect")
    definition = order("orders-approval", approval=True)
    handle = engine.start(definition, data(ledger), workflow_id=wid)
    client = bf.WorkflowClient()
    # The form is open once the run is paused (an answer goes to the form open when
    # it is sent).
    wait_until(lambda: client.query(wid, None, "status") == "paused")
    assert client.query(wid, None, "steps")["review"] == "running"
    assert "charge 40" not in lines(ledger)
    client.signal(wid, handle.run_id, "approval", {"approved": True, "reviewer": "ana"})
    result = engine.result(definition, wid, timeout=60)
    assert result.status == "completed"
    assert result.result["review"] == {"approved": True, "reviewer": "ana", "comment": None}
    assert lines(ledger)[-1] == "charge 40"
    steps = client.query(wid, None, "steps")
    assert {"reserve", "poll-1", "poll-2", "check[0]", "check[1]", "review", "charge"} <= set(steps)


def test_cancelling_a_durable_run_rolls_back_its_completed_steps(ledger: str) -> None:
    wid = new_id()
    engine = bf.WorkflowEngine(ACTIONS, provider="prefect")
    definition = order("orders-cancel", approval=True)
    engine.start(definition, data(ledger), workflow_id=wid)
    client = bf.WorkflowClient()
    wait_until(lambda: client.query(wid, None, "steps").get("review") == "running")
    client.cancel(wid)
    with pytest.raises(OrchestratorError) as caught:
        engine.result(definition, wid, timeout=60)
    assert caught.value.code is ErrorCode.TASK_CANCELED
    assert lines(ledger).count("release") == 1 and "charge 40" not in lines(ledger)


def test_terminating_a_durable_run_stops_it_without_rollback(ledger: str) -> None:
    wid = new_id()
    engine = bf.WorkflowEngine(ACTIONS, provider="prefect")
    definition = order("orders-terminate", approval=True)
    engine.start(definition, data(ledger), workflow_id=wid)
    client = bf.WorkflowClient()
    wait_until(lambda: client.query(wid, None, "status") == "paused")
    client.terminate(wid, None, reason="stuck")
    with pytest.raises(OrchestratorError) as caught:
        engine.result(definition, wid, timeout=60)
    assert caught.value.code is ErrorCode.TASK_CANCELED
    assert "release" not in lines(ledger) and "charge 40" not in lines(ledger)


def test_resume_continues_a_failed_run_without_running_completed_steps(ledger: str) -> None:
    wid = new_id()
    engine = bf.WorkflowEngine(ACTIONS, provider="prefect")
    definition = order("orders-resume", undo=False)  # nothing to roll back: resumable
    Path(ledger + ".broken").touch()
    engine.start(definition, data(ledger), workflow_id=wid)
    assert engine.result(definition, wid, timeout=60).status == "failed"
    before = lines(ledger)
    assert before.count("reserve") == 1 and before.count("poll 0") == 1
    Path(ledger + ".broken").unlink()
    engine.resume(definition, wid)
    result = engine.result(definition, wid, timeout=60)
    assert result.status == "completed", result.errors
    after = lines(ledger)
    # Completed steps came from storage: reserve, the polls and the checks ran once.
    assert after.count("reserve") == 1 and after.count("poll 0") == after.count("check a") == 1
    assert after[-1] == "charge 40"


def test_a_run_that_rolled_back_is_not_resumed(ledger: str) -> None:
    wid = new_id()
    engine = bf.WorkflowEngine(ACTIONS, provider="prefect")
    definition = order("orders-rolled-back")
    Path(ledger + ".broken").touch()
    engine.start(definition, data(ledger), workflow_id=wid)
    result = engine.result(definition, wid, timeout=60)
    assert result.status == "failed" and result.rolled_back == ["reserve"]
    with pytest.raises(OrchestratorError) as caught:
        engine.resume(definition, wid)  # its reservation was released: nothing to continue
    assert caught.value.code is ErrorCode.INVALID_STATE and "reserve" in caught.value.message
    assert lines(ledger).count("release") == 1


async def history_of(workflow_id: str) -> list[float]:
    """The run times the Prefect API recorded for a definition's completed runs."""
    from prefect.client.schemas.filters import FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        found = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["beluga:definition", f"workflow:{workflow_id}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
            )
        )
    return [r.total_run_time.total_seconds() for r in found]


async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def test_an_anomaly_is_judged_against_the_baseline_read_from_the_prefect_api(
    prefect_server: Any,
) -> None:
    wid = new_id()
    definition = bf.WorkflowDefinition.from_dict(
        {
            "workflow_id": wid,
            "steps": [{"step_id": "nap", "action": "nap", "input_mapping": {"seconds": "s"}}],
            # the step's own time: a loaded machine slows a run's start, not a nap
            "sla_targets": {"steps": {"nap": 1.0}},
        }
    )
    first = bf.WorkflowEngine({"nap": nap}, provider="prefect")
    for _ in range(2):
        assert first.execute(definition, {"s": 0.01}).status == "completed"
    # A new engine has seen no run: its baseline is the median of the run times the
    # Prefect API recorded for the two quick runs (times vary with the machine's load,
    # so the anomaly verdict is checked against them, not against a guess).
    recorded = asyncio.run(history_of(wid))
    assert len(recorded) == 2
    seen: list[dict[str, Any]] = []
    fresh = bf.WorkflowEngine({"nap": nap}, provider="prefect", on_alert=seen.append)
    result = fresh.execute(definition, {"s": 3.0})  # a 3 s nap breaches its 1 s step target
    baseline = statistics.median(recorded)
    assert result.sla["workflow"]["baseline_s"] == pytest.approx(baseline)
    anomaly = result.duration_s > 2 * baseline and result.duration_s - baseline >= 0.1
    kinds = sorted(a["kind"] for a in result.alerts)
    assert kinds == (["anomaly", "sla_breach"] if anomaly else ["sla_breach"])
    assert seen == result.alerts
    assert result.sla["nap"]["met"] is False and result.status == "completed"
    # Each alert is a Prefect event about the workflow too (the UI's event feed).
    EventsWorker.drain_all(timeout=10)

    def events() -> list[str]:
        body = {"filter": {"event": {"prefix": ["beluga.workflow."]}}, "limit": 50}
        found = httpx.post(f"{prefect_server.api_url}/events/filter", json=body, timeout=10)
        # only this execution's: on a loaded machine a quick run can breach its target too
        return sorted(
            e["event"]
            for e in found.json()["events"]
            if e["resource"]["prefect.resource.id"] == f"beluga.workflow.{wid}"
            and e["payload"]["execution_id"] == result.execution_id
        )

    expected = sorted(f"beluga.workflow.{k.replace('_', '-')}" for k in kinds)
    wait_until(lambda: len(events()) >= len(expected), what="the alert events")
    assert events() == expected


def test_a_durable_definition_survives_a_killed_host(tmp_path: Path) -> None:
    """SIGKILL the process hosting a durable definition run in the middle of its
    ``for_each`` children; resume it here: completed steps (and children) are not run
    again, the rest run once, and the run completes."""
    from tests.definition_app import DEFINITION, engine
    from tests.test_workflow_crash import kill_when

    wid, ledger = new_id(), str(tmp_path / "ledger.txt")
    worker = Path(__file__).with_name("definition_crash_worker.py")
    proc = subprocess.Popen([sys.executable, str(worker), wid, ledger, "0.3"])
    kill_when([(ledger, "start item 2", proc)])
    assert bf.WorkflowClient().query(wid, None, "status") == "crashed"
    runner = engine()
    runner.resume(DEFINITION, wid)
    result = runner.result(DEFINITION, wid, timeout=120)
    assert result.status == "completed", result.errors
    assert result.result["items"]["results"] == {"item[0]": 101, "item[1]": 102, "item[2]": 103}
    ran = lines(ledger)
    for n in range(6):
        assert ran.count(f"done {n}") == 1, ran
    for n in (0, 1, 2):  # completed before the kill: never started again
        assert ran.count(f"start {n}") == 1, ran
    for item in (1, 2, 3):
        assert ran.count(f"done item {item}") == 1, ran
