"""Durable workflows against the session's real Prefect server: ids, signals,
queries, cancel vs terminate, approval, compensation, retries and resume."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client

import beluga_flows as bf
from beluga_flows.engine.prefect import host as prefect_host
from beluga_flows.errors import ErrorCode, OrchestratorError
from tests.prefect_api import flow_run
from tests.procs import until
from tests.workflow_app import approvals, lines, replayed, retried, signals, steps, timed

pytestmark = pytest.mark.usefixtures("prefect_server")


wait_until = functools.partial(until, timeout=60)


def new_id(prefix: str = "wf") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def hosted_here_finished(run_id: str) -> bool:
    return run_id not in prefect_host.host.live


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.txt")


def test_execute_returns_a_handle_at_once_and_ids_show_in_prefect(ledger: str) -> None:
    wid = new_id("order")
    handle = signals.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)
    assert handle.workflow_id == wid and uuid.UUID(handle.run_id)
    run = flow_run(handle.run_id)
    assert run.name == wid
    assert {"beluga:workflow", f"workflow:{wid}"} <= set(run.tags)
    assert run.labels["beluga.workflow_id"] == wid
    with pytest.raises(OrchestratorError) as dup:
        signals.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)
    assert dup.value.code is ErrorCode.INVALID_STATE and handle.run_id in str(dup.value)
    assert flow_run(handle.run_id).state.is_final() is False  # it waits for its signal

    signals.signal(wid, handle.run_id, "item", "x")
    assert signals.get_result(wid, handle.run_id, timeout=60) == {"items": ["x"]}

    again = signals.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)  # id free again
    assert again.run_id != handle.run_id
    signals.signal(wid, None, "item", "y")  # None: the latest run
    assert signals.get_result(wid, timeout=60) == {"items": ["y"]}
    assert [h.run_id for h in asyncio.run(signals.ahandles(wid))] == [again.run_id, handle.run_id]


def test_a_missing_workflow_id_is_generated(ledger: str) -> None:
    handle = steps.execute({"ledger": ledger, "n": 2})
    assert handle.workflow_id.startswith("wf-ten-steps-")
    assert steps.get_result(handle.workflow_id, timeout=60) == 1


def test_signals_arrive_in_order_and_none_is_lost_before_the_wait(ledger: str) -> None:
    wid = new_id()
    handle = signals.execute({"ledger": ledger, "expect": 3}, workflow_id=wid)
    for item in (1, {"two": 2}, [3]):  # sent before the run reaches its wait
        signals.signal(wid, handle.run_id, "item", item)
    assert signals.get_result(wid, timeout=60) == {"items": [1, {"two": 2}, [3]]}


def test_signal_and_query_errors_carry_their_codes(ledger: str) -> None:
    wid = new_id()
    handle = signals.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)
    cases: list[tuple[Callable[[], Any], ErrorCode]] = [
        (lambda: signals.signal("no-such-workflow", None, "item", 1), ErrorCode.NOT_FOUND),
        (lambda: signals.signal(wid, str(uuid.uuid4()), "item", 1), ErrorCode.NOT_FOUND),
        (lambda: signals.signal(wid, "not-a-uuid", "item", 1), ErrorCode.NOT_FOUND),
        (lambda: signals.signal(wid, None, "item", object()), ErrorCode.INVALID_INPUT),
        (lambda: signals.signal(wid, None, "approval", {"ok": 1}), ErrorCode.INVALID_INPUT),
        (lambda: signals.signal(wid, None, "", 1), ErrorCode.INVALID_INPUT),
        (lambda: signals.query(wid, None, "no-such-query", timeout=30), ErrorCode.INVALID_INPUT),
        (lambda: signals.query("no-such-workflow", None, "status"), ErrorCode.NOT_FOUND),
    ]
    for call, code in cases:
        with pytest.raises(OrchestratorError) as info:
            call()
        assert info.value.code is code, (info.value, code)
    with pytest.raises(OrchestratorError) as waited:
        signals.get_result(wid, timeout=0.3)  # it waits for a signal: the run goes on
    assert waited.value.code is ErrorCode.TIMEOUT
    signals.signal(wid, None, "item", 1)
    signals.get_result(wid, timeout=60)
    with pytest.raises(OrchestratorError) as finished:
        signals.signal(wid, handle.run_id, "item", 2)
    assert finished.value.code is ErrorCode.INVALID_STATE
    # A finished run answers its handlers with the answer it recorded as it ended
    # (issue 11, defect 16): a known query is answered, an unknown one is bad input.
    assert signals.query(wid, None, "received") == ["1"]
    with pytest.raises(OrchestratorError) as unknown:
        signals.query(wid, None, "no-such-query")
    assert unknown.value.code is ErrorCode.INVALID_INPUT and "received" in str(unknown.value)
    with pytest.raises(OrchestratorError) as with_args:
        signals.query(wid, None, "received", "#")
    assert with_args.value.code is ErrorCode.INVALID_STATE


def test_queries_read_prefect_and_ask_the_live_run(ledger: str) -> None:
    wid = new_id()
    handle = signals.execute({"ledger": ledger, "expect": 2}, workflow_id=wid)
    signals.signal(wid, None, "item", "a")
    assert wait_until(lambda: signals.query(wid, None, "received", "#", timeout=30) == ["#a"])
    assert signals.query(wid, handle.run_id, "status") == "running"
    assert signals.query(wid, handle.run_id, "result") is None
    both_done = {"act": bf.StepStatus.COMPLETED, "act-2": bf.StepStatus.COMPLETED}
    # The server records a task run's final state from its events, a moment after the
    # step returned: "running" until then.
    assert wait_until(lambda: signals.query(wid, None, "steps") == both_done)
    signals.signal(wid, None, "item", "b")
    assert signals.get_result(wid, timeout=60) == {"items": ["a", "b"]}
    assert signals.query(wid, handle.run_id, "status") == "completed"
    assert signals.query(wid, handle.run_id, "result") == {"items": ["a", "b"]}
    steps_now = wait_until(lambda: (s := signals.query(wid, None, "steps")) and len(s) == 3 and s)
    assert steps_now["act-3"] is bf.StepStatus.COMPLETED


def test_cancel_is_graceful_compensations_run_in_reverse(ledger: str) -> None:
    wid = new_id()
    handle = signals.execute({"ledger": ledger, "expect": 2}, workflow_id=wid)
    signals.signal(wid, None, "item", "a")
    wait_until(lambda: signals.query(wid, None, "received", timeout=30) == ["a"])
    signals.cancel(wid, handle.run_id)
    with pytest.raises(OrchestratorError) as info:
        signals.get_result(wid, handle.run_id, timeout=60)
    assert info.value.code is ErrorCode.TASK_CANCELED
    assert signals.query(wid, None, "status") == "cancelled"
    assert lines(ledger) == ["do first", "do second", "undo second", "undo first"]
    done = wait_until(lambda: (s := signals.query(wid, None, "steps")) and len(s) >= 4 and s)
    assert done["compensate-act-2"] is bf.StepStatus.COMPLETED
    assert done["compensate-act"] is bf.StepStatus.COMPLETED
    with pytest.raises(OrchestratorError) as again:
        signals.cancel(wid, handle.run_id)
    assert again.value.code is ErrorCode.INVALID_STATE


def test_terminate_stops_now_runs_nothing_more_and_keeps_its_reason(ledger: str) -> None:
    wid = new_id()
    handle = signals.execute({"ledger": ledger, "expect": 2}, workflow_id=wid)
    wait_until(lambda: len(lines(ledger)) == 2)
    signals.terminate(wid, handle.run_id, reason="stuck on a vendor")
    with pytest.raises(OrchestratorError) as info:
        signals.get_result(wid, handle.run_id, timeout=60)
    assert info.value.code is ErrorCode.TASK_CANCELED
    assert "terminated: stuck on a vendor" in str(info.value)
    wait_until(lambda: hosted_here_finished(handle.run_id), what="the host to let go")
    run = flow_run(handle.run_id)  # the engine's last word did not overwrite it
    assert run.state.type.value == "CANCELLED"
    assert run.state.message == "terminated: stuck on a vendor"
    assert lines(ledger) == ["do first", "do second"]  # no compensation


def test_terminate_during_a_blocking_step_runs_no_further_step(ledger: str) -> None:
    wid = new_id()
    handle = steps.execute({"ledger": ledger, "delay": 1.0, "n": 4}, workflow_id=wid)
    wait_until(lambda: "start 1" in lines(ledger))
    steps.terminate(wid, handle.run_id, reason="now")
    wait_until(lambda: hosted_here_finished(handle.run_id))
    assert flow_run(handle.run_id).state.message == "terminated: now"
    wait_until(lambda: "done 1" in lines(ledger))  # the blocked thread finishes its step…
    time.sleep(0.5)
    assert "start 2" not in lines(ledger)  # …and starts no other


def test_failure_compensates_and_reports_compensations_that_fail(ledger: str) -> None:
    wid = new_id()
    handle = signals.execute({"ledger": ledger, "expect": 0, "fail": "fragile"}, workflow_id=wid)
    with pytest.raises(OrchestratorError) as info:
        signals.get_result(wid, handle.run_id, timeout=60)
    err = info.value
    assert err.code is ErrorCode.DEPENDENCY_FAILED
    assert "fragile went wrong" in str(err) and "cannot undo fragile" in str(err)
    assert lines(ledger) == [
        "do first",
        "do second",
        "do fragile",
        "undo fragile",
        "undo second",
        "undo first",
    ]
    statuses = wait_until(lambda: (s := signals.query(wid, None, "steps")) and len(s) >= 6 and s)
    assert statuses["compensate-act-3"] is bf.StepStatus.FAILED
    with pytest.raises(OrchestratorError) as resume:
        signals.resume(wid)
    assert resume.value.code is ErrorCode.INVALID_STATE and "compensations" in str(resume.value)


def _paused(wid: str) -> bool:
    return bool(approvals.query(wid, None, "status") == "paused")


def test_approval_pauses_with_a_form_and_a_signal_resumes_it(ledger: str) -> None:
    wid = new_id()
    handle = approvals.execute({"ledger": ledger}, workflow_id=wid)
    wait_until(lambda: _paused(wid))
    run = flow_run(handle.run_id)
    keyset = run.state.state_details.run_input_keyset
    assert keyset is not None  # the UI shows a form from this schema

    async def form() -> tuple[str, str]:
        async with get_client() as client:
            return (
                await client.read_flow_run_input(run.id, keyset["schema"]),
                await client.read_flow_run_input(run.id, keyset["description"]),
            )

    schema, description = asyncio.run(form())
    assert "approved" in schema and "reviewer" in schema and "ship it?" in description
    approvals.signal(wid, None, "approval", {"approved": True, "reviewer": "ana", "comment": "ok"})
    assert approvals.get_result(wid, timeout=60) == "approved=True by ana (ok)"


def test_approval_through_prefects_resume_form_like_the_ui(ledger: str) -> None:
    wid = new_id()
    handle = approvals.execute({"ledger": ledger}, workflow_id=wid)
    wait_until(lambda: _paused(wid))

    async def resume() -> Any:
        async with get_client() as client:
            return await client.resume_flow_run(
                uuid.UUID(handle.run_id), run_input={"approved": True, "reviewer": "ui"}
            )

    assert asyncio.run(resume()).status.value == "ACCEPT"
    assert approvals.get_result(wid, timeout=60) == "approved=True by ui (None)"


def test_a_rejection_sent_before_the_request_is_the_workflows_to_handle(ledger: str) -> None:
    wid = new_id()
    approvals.execute({"ledger": ledger}, workflow_id=wid)
    approvals.signal(wid, None, "approval", {"approved": False, "reviewer": "bob"})
    assert approvals.get_result(wid, timeout=60) == "approved=False by bob (None)"


def test_an_approval_timeout_is_raised_inside_and_can_be_caught(ledger: str) -> None:
    wid = new_id()
    handle = approvals.execute({"ledger": ledger, "timeout": 1.0}, workflow_id=wid)
    assert approvals.get_result(wid, timeout=60) == "timed out: default branch"
    assert flow_run(handle.run_id).state.type.value == "COMPLETED"  # not Failed


def test_workflow_retries_replay_completed_steps_from_storage(ledger: str) -> None:
    Path(ledger + ".broken").touch()
    assert retried.get_result(retried.execute({"ledger": ledger}).workflow_id, timeout=120) == 285
    ran = lines(ledger)
    assert [ran.count(f"start {i}") for i in range(10)] == [1] * 5 + [2] + [1] * 4
    assert [ran.count(f"done {i}") for i in range(10)] == [1] * 10


def test_resume_after_a_failure_reuses_completed_steps(ledger: str) -> None:
    Path(ledger + ".broken").touch()
    wid = new_id()
    first = steps.execute({"ledger": ledger}, workflow_id=wid)
    with pytest.raises(OrchestratorError) as failed:
        steps.get_result(wid, timeout=60)
    assert failed.value.code is ErrorCode.EXECUTION_FAILED and "broken" in str(failed.value)
    second = steps.resume(wid)
    assert second.workflow_id == wid and second.run_id != first.run_id
    assert steps.get_result(wid, second.run_id, timeout=60) == 285
    ran = lines(ledger)
    assert [ran.count(f"done {i}") for i in range(10)] == [1] * 10
    assert [ran.count(f"start {i}") for i in range(10)] == [1] * 5 + [2] + [1] * 4
    cached = wait_until(lambda: (s := steps.query(wid, second.run_id, "steps")) and len(s) == 10)
    assert cached
    with pytest.raises(OrchestratorError) as done:
        steps.resume(wid)
    assert done.value.code is ErrorCode.INVALID_STATE
    with pytest.raises(OrchestratorError) as unknown:
        steps.resume("never-started")
    assert unknown.value.code is ErrorCode.NOT_FOUND


def test_resume_refuses_a_live_run(ledger: str) -> None:
    wid = new_id()
    signals.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)
    with pytest.raises(OrchestratorError) as live:
        signals.resume(wid)
    assert live.value.code is ErrorCode.INVALID_STATE and "terminate it first" in str(live.value)
    signals.signal(wid, None, "item", 1)
    signals.get_result(wid, timeout=60)


def test_bad_definitions_and_calls_outside_a_run_are_refused() -> None:
    with pytest.raises(OrchestratorError) as not_fn:
        bf.Workflow(42)  # type: ignore[arg-type]
    assert not_fn.value.code is ErrorCode.INVALID_CONFIG
    with pytest.raises(OrchestratorError) as mode:
        bf.Workflow(lambda: 1, mode="cloud")
    assert mode.value.code is ErrorCode.INVALID_CONFIG
    with pytest.raises(OrchestratorError) as outside:
        bf.wait_for_signal("go")
    assert outside.value.code is ErrorCode.INVALID_STATE
    with pytest.raises(OrchestratorError) as undo:
        bf.compensate("refund")  # type: ignore[arg-type]
    assert undo.value.code is ErrorCode.INVALID_INPUT
    with pytest.raises(OrchestratorError) as builtin:
        bf.query_handler("status")
    assert builtin.value.code is ErrorCode.INVALID_CONFIG
    with pytest.raises(OrchestratorError) as not_json:
        steps.execute({"ledger": object()})
    assert not_json.value.code is ErrorCode.INVALID_INPUT


def test_cancel_or_terminate_sent_before_the_run_starts_wins(ledger: str) -> None:
    for stop in ("cancel", "terminate"):
        wid = new_id(stop)
        handle = signals.execute({"ledger": ledger, "expect": 1}, workflow_id=wid)
        getattr(signals, stop)(wid, handle.run_id)  # at once: the run is not up yet
        with pytest.raises(OrchestratorError) as info:
            signals.get_result(wid, handle.run_id, timeout=60)
        assert info.value.code is ErrorCode.TASK_CANCELED
        wait_until(lambda h=handle: hosted_here_finished(h.run_id))
        assert flow_run(handle.run_id).state.type.value == "CANCELLED"
    assert lines(ledger) == []  # no step ran


def test_a_retry_replays_the_signals_the_failed_attempt_took(ledger: str) -> None:
    Path(ledger + ".broken").touch()
    wid = new_id()
    replayed.execute({"ledger": ledger}, workflow_id=wid)
    replayed.signal(wid, None, "item", "only once")
    assert replayed.get_result(wid, timeout=60) == "only once"
    assert lines(ledger).count("start 5") == 2


def test_a_sync_body_past_its_timeout_starts_no_further_step(ledger: str) -> None:
    wid = new_id()
    handle = timed.execute({"ledger": ledger, "delay": 0.4}, workflow_id=wid)
    with pytest.raises(OrchestratorError) as info:
        timed.get_result(wid, handle.run_id, timeout=60)
    assert info.value.code is ErrorCode.TIMEOUT
    started = len([x for x in lines(ledger) if x.startswith("start")])
    time.sleep(1.5)  # the abandoned thread finishes the step it is in…
    assert len([x for x in lines(ledger) if x.startswith("start")]) == started  # …no more


def test_a_duplicate_start_race_leaves_the_winner_as_the_run(ledger: str) -> None:
    wid = new_id("race")

    async def race() -> list[Any]:
        start = functools.partial(signals.aexecute, {"ledger": ledger, "expect": 1}, wid)
        return await asyncio.gather(start(), start(), start(), return_exceptions=True)

    outcomes = asyncio.run(race())
    [winner] = [o for o in outcomes if isinstance(o, bf.WorkflowHandle)]
    assert all(
        isinstance(o, OrchestratorError) and o.code is ErrorCode.INVALID_STATE
        for o in outcomes
        if o is not winner
    ), outcomes
    signals.signal(wid, None, "item", "won")  # None: the latest run, which is the winner
    assert signals.get_result(wid, timeout=60) == {"items": ["won"]}
    assert signals.query(wid, None, "status") == "completed"  # not a loser's "cancelled"
    assert [h.run_id for h in asyncio.run(signals.ahandles(wid))] == [winner.run_id]
