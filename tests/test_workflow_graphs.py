"""Graphs inside durable workflows (API.md §12), on a real temporary Prefect server.

Node executions are workflow steps with durable keys: a resumed run skips completed
nodes; approvals, signals and compensations work inside nodes while other branches
run; outside a workflow the same calls are ``INVALID_STATE``.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import pytest

import beluga_flows as bf
from beluga_flows.errors import ErrorCode, OrchestratorError
from tests.graph_workflows import (
    charges,
    diamond,
    links,
    pair,
    retried_graph,
    reviewed,
    takers,
)
from tests.procs import until
from tests.workflow_app import lines

pytestmark = pytest.mark.usefixtures("prefect_server")

wait_until = functools.partial(until, timeout=60)


def new_id() -> str:
    return f"graph-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.txt")


def test_resume_continues_a_failed_graph_without_running_completed_nodes(ledger: str) -> None:
    Path(ledger + ".c").touch()  # node c fails once
    wid = new_id()
    diamond.execute({"ledger": ledger}, workflow_id=wid)
    with pytest.raises(OrchestratorError) as failed:
        diamond.get_result(wid, timeout=60)
    assert "c is broken" in str(failed.value)
    second = diamond.resume(wid)
    assert diamond.get_result(wid, second.run_id, timeout=60) == "ABCD"
    ran = lines(ledger)
    assert {n: ran.count(f"start {n}") for n in "abcd"} == {"a": 1, "b": 1, "c": 2, "d": 1}
    listed = wait_until(
        lambda: (s := diamond.query(wid, second.run_id, "steps")) and len(s) == 4 and s
    )
    assert set(listed) == {"a", "b", "c", "d"}  # node executions, by label
    assert all(status is bf.StepStatus.COMPLETED for status in listed.values())


def test_resume_continues_a_failed_chain_from_its_failed_step(ledger: str) -> None:
    Path(ledger + ".q").touch()
    wid = new_id()
    links.execute({"ledger": ledger}, workflow_id=wid)
    with pytest.raises(OrchestratorError):
        links.get_result(wid, timeout=60)
    second = links.resume(wid)
    assert links.get_result(wid, second.run_id, timeout=60) == "pqr"
    assert lines(ledger) == ["link p", "link q", "link q", "link r"]


def test_a_node_waits_for_approval_while_an_independent_branch_finishes(ledger: str) -> None:
    wid = new_id()
    reviewed.execute({"ledger": ledger}, workflow_id=wid)
    wait_until(lambda: reviewed.query(wid, None, "status") == "paused")
    wait_until(lambda: "crunch done" in lines(ledger))  # the other branch went on
    # The API hears of a task run's end after its code ran (the client reports states
    # through events): wait for it to show, rather than read it once.
    steps = wait_until(
        lambda: (
            (s := reviewed.query(wid, None, "steps")).get("crunch") is bf.StepStatus.COMPLETED and s
        )
    )
    assert steps["review"] is bf.StepStatus.RUNNING
    assert "publish" not in lines(ledger)
    reviewed.signal(wid, None, "approval", {"approved": True, "reviewer": "ana"})
    assert reviewed.get_result(wid, timeout=60) == {
        "approved": True,
        "reviewer": "ana",
        "numbers": 45,
        "published": True,
    }
    assert lines(ledger).count("review asks") == 1


def test_cancel_runs_the_compensations_of_completed_nodes_in_reverse(ledger: str) -> None:
    wid = new_id()
    handle = charges.execute({"ledger": ledger}, workflow_id=wid)
    wait_until(lambda: "hold waits" in lines(ledger))
    charges.cancel(wid, handle.run_id)
    with pytest.raises(OrchestratorError) as info:
        charges.get_result(wid, handle.run_id, timeout=60)
    assert info.value.code is ErrorCode.TASK_CANCELED
    assert lines(ledger) == [
        "charge first",
        "charge second",
        "hold waits",
        "refund second",
        "refund first",
    ]
    # The compensations ran (the ledger says so); the API shows their task runs end
    # once the client's state events reach it: wait for that, rather than read once.
    compensations = ("compensate-second", "compensate-first")
    done = wait_until(
        lambda: (
            (s := charges.query(wid, None, "steps"))
            and all(s.get(c) is bf.StepStatus.COMPLETED for c in compensations)
            and s
        ),
        what="the compensations' task runs completed",
    )
    assert {c: done[c] for c in compensations} == dict.fromkeys(
        compensations, bf.StepStatus.COMPLETED
    )


def test_parallel_approvals_take_turns_and_a_timeout_counts_while_waiting(ledger: str) -> None:
    wid = new_id()
    pair.execute({"ledger": ledger}, workflow_id=wid)
    # hasty's second runs out while patient holds the run's one form (or the other way)
    wait_until(lambda: any(line.endswith("timeout") for line in lines(ledger)))
    wait_until(lambda: pair.query(wid, None, "status") == "paused")
    pair.signal(wid, None, "approval", {"approved": True, "reviewer": "ana"})
    assert pair.get_result(wid, timeout=60) == {"patient": True, "hasty": "timeout"}


def test_undos_of_a_node_that_failed_survive_the_workflows_retry(ledger: str) -> None:
    Path(ledger + ".card").touch()  # the card node charges, then fails once
    wid = new_id()
    retried_graph.execute({"ledger": ledger}, workflow_id=wid)
    with pytest.raises(OrchestratorError) as failed:
        retried_graph.get_result(wid, timeout=60)
    assert "ship node is broken" in str(failed.value)
    # two charges happened (the failed attempt's and the retry's): both are refunded
    assert lines(ledger) == ["charge card", "charge card", "refund card", "refund card"]


def test_a_resumed_node_takes_the_signal_it_took_before_not_a_finished_nodes(
    ledger: str,
) -> None:
    Path(ledger + ".y").touch()  # node y fails once, after taking its signal
    wid = new_id()
    takers.execute({"ledger": ledger}, workflow_id=wid)
    takers.signal(wid, None, "item", "one")
    takers.signal(wid, None, "item", "two")
    with pytest.raises(OrchestratorError):
        takers.get_result(wid, timeout=60)
    second = takers.resume(wid)
    # x is not run again, so without its claim y would now take "one"
    assert takers.get_result(wid, second.run_id, timeout=60) == {"x": "one", "y": "two"}
    assert lines(ledger) == ["x took one", "y took two", "y took two"]


def test_in_node_calls_outside_a_workflow_are_invalid_state() -> None:
    graph = bf.Graph(name="outside")
    graph.add_node("ask", lambda state: {"ok": bf.request_approval("ok?").approved})
    graph.add_edge(bf.START, "ask")
    with bf.use_engine("local"), pytest.raises(OrchestratorError) as info:
        graph.invoke({})
    assert info.value.report.errors["ask"].code is ErrorCode.INVALID_STATE

    @bf.step
    def undoable() -> None:
        bf.compensate(lambda: None)

    with pytest.raises(OrchestratorError) as direct:
        undoable()
    assert direct.value.code is ErrorCode.INVALID_STATE
