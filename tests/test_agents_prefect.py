"""Agent patterns in the Prefect UI: one flow run per invocation outside a flow, a
task run per agent call named after the agent (read back from the Prefect API)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import beluga_flows as bf

from .prefect_api import flow_runs, task_runs
from .test_cli import example

pytestmark = pytest.mark.usefixtures("prefect_server")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_supervisor_rounds_are_task_runs_named_after_the_agents() -> None:
    name = unique("sup")
    team = {"draft": lambda t: f"draft of {t}", "edit": lambda t: t.upper()}
    sup = bf.Supervisor(bf.round_robin(), team, max_rounds=2, name=name, provider="prefect")
    assert sup.invoke("whales") == "DRAFT OF WHALES"
    [run] = flow_runs(name)
    assert run.state.is_completed() and "beluga:supervisor" in run.tags
    assert [t.name for t in task_runs(run.id, expect=2)] == ["draft-1", "edit-1"]


def test_blackboard_rounds_are_task_runs_per_agent_and_round() -> None:
    name = unique("board")
    agents = {"count": lambda b: {"n": b.get("n", 0) + 1}, "echo": lambda b: b.get("n")}
    board = bf.Blackboard(lambda b: b.get("n") == 2, agents, name=name, provider="prefect")
    assert board.invoke({}) == {"n": 2, "echo": 1}
    [run] = flow_runs(name)
    names = sorted(t.name for t in task_runs(run.id, expect=4))
    assert names == ["count-1", "count-2", "echo-1", "echo-2"]


def test_handoff_inside_a_flow_runs_its_agents_as_task_runs_of_that_flow() -> None:
    desk_name, flow_name = unique("desk"), unique("support")
    desk = bf.Handoff(
        {"triage": lambda q: bf.handoff_to("billing"), "billing": lambda q: f"refund: {q}"},
        entry="triage",
        name=desk_name,
    )

    @bf.flow(name=flow_name)
    def support(q: str) -> str:
        return str(desk.invoke(q))

    assert support("card") == "refund: card"
    assert flow_runs(desk_name, expect=0, timeout=0) == []
    [run] = flow_runs(flow_name)
    assert [t.name for t in task_runs(run.id, expect=2)] == ["triage-1", "billing-1"]


def test_hedge_loser_task_run_is_cancelled_on_prefect() -> None:
    name = unique("hedge")
    cancelled: list[str] = []
    started = asyncio.Event()

    async def replica_a(key: str) -> str:
        try:
            started.set()
            await asyncio.Event().wait()
            return "never"
        finally:
            cancelled.append("replica_a")

    async def replica_b(key: str) -> str:
        await started.wait()  # the primary runs before the secondary wins
        return f"b:{key}"

    hedged = bf.hedge(replica_a, replica_b, 0, name=name, provider="prefect")
    assert hedged.invoke("k") == "b:k"
    assert cancelled == ["replica_a"]
    [run] = flow_runs(name)
    tasks: dict[str, Any] = {t.name: t for t in task_runs(run.id, expect=2)}
    assert set(tasks) == {"replica_a-primary", "replica_b-secondary"}
    assert tasks["replica_b-secondary"].state.is_completed()
    assert not tasks["replica_a-primary"].state.is_completed()


def test_the_agents_example_runs_against_the_server(prefect_server: Any) -> None:
    done = example("flows/agents.py", prefect_server.api_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "triage -> billing: [ana] refund approved for: refund my double charge",
        "triage -> tech: KB: restart the service to clear E42",
        "triage: Thanks, we will get back to you.",
        "triage -> billing: [ben] refund approved for: refund",
    ]
    runs = sorted(flow_runs("support-desk", expect=4), key=lambda r: r.start_time)
    assert len(runs) == 4 and all(r.state.is_completed() for r in runs)
    first = {t.name for t in task_runs(runs[0].id, expect=3)}
    assert first == {"triage-1", "billing-1", "ana-1"}
    second = {t.name: t for t in task_runs(runs[1].id, expect=4)}
    assert {"triage-1", "tech-1", "slow_kb-primary", "mirror_kb-secondary"} <= set(second)
    assert not second["slow_kb-primary"].state.is_completed()  # the loser was cancelled
