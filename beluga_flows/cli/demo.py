"""``beluga-flows demo``: the showcase on the embedded server.

It starts the local Prefect server (SQLite, under ``$BELUGA_FLOWS_HOME``), serves the
example deployments of ``deployments/`` in a background process (a one-minute
interval and an hourly cron), runs every example once (a chain, a graph, the
resilience example, a graph streaming a fake LLM's tokens live, the order workflow
and the enterprise orchestrator, both approved through a signal, and the onboarding
definition: one durable run approved through a signal, one that fails at
provisioning and rolls back, and ``flows/orchestrated.py``: an Orchestrator's chains
under admission control) and prints where to see each run, then a one-line summary
of the process's metrics (``bf.get_metrics()``). The server and the schedules keep
running afterwards; ``beluga-flows server --stop`` stops both. Ctrl-C stops the demo
cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import time
from pathlib import Path
from typing import Any

from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.telemetry import get_metrics
from beluga_flows.tools.server import ensure_server, home, use_server
from beluga_flows.tools.serving import serving, start_serving
from beluga_flows.tools.targets import load_target, run_target

__all__ = ["demo"]

DEMOS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("flows/sales_report.py:sales_report", {"csv_path": "flows/data/sales.csv"}),
    ("flows/resilient_fetch.py:resilient_fetch", {}),
    ("flows/research_assistant.py:research", {}),
    ("flows/streaming_llm.py:streaming_llm", {}),  # prints its tokens as they stream
)
# The demo also runs flows/order_workflow.py:orders (see _demo_order),
# flows/enterprise_orchestrator.py:enterprise (see _demo_enterprise) and the
# workflows/onboarding.yaml definition (see _demo_definition).


def _latest_run_url(ui_url: str, flow_name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    finished = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]

    async def latest() -> Any:  # the run just made, not a scheduled one
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=finished))
                ),
                sort=FlowRunSort.END_TIME_DESC,
                limit=1,
            )

    runs = asyncio.run(latest())
    return f"{ui_url}/runs/flow-run/{runs[0].id}" if runs else f"{ui_url}/runs"


def demo(args: argparse.Namespace) -> int:
    """Run the showcase (see the module docstring)."""
    missing = [t for t, _ in DEMOS if not Path(t.partition(":")[0]).is_file()]
    if missing:
        raise OrchestratorError(
            "cli",
            f"run the demo from the project root ({missing[0]} not found)",
            ErrorCode.NOT_FOUND,
        )
    state = ensure_server(args.port)
    use_server(state)
    serving = start_serving(state["api_url"])
    print(
        f"Serving the scheduled deployments of deployments/ (pid {serving}; log {home()}/serve.log)"
    )
    lines = []
    for target, params in DEMOS:
        obj = load_target(target)
        print(f"\n== {target}")
        if "out_dir" in inspect.signature(obj.fn).parameters:
            params = {**params, "out_dir": args.out}
        result = run_target(obj, params)
        print(json.dumps(result, default=str, indent=2))
        lines.append(f"  {obj.name:<18} {_latest_run_url(state['ui_url'], obj.name)}")
    order = _demo_order(args.out)
    lines.append(f"  {'orders':<18} {state['ui_url']}/runs/flow-run/{order.run_id}")
    lines.append(f"  {'enterprise':<18} {state['ui_url']}/runs/flow-run/{_demo_enterprise()}")
    approved = _demo_definition(args.out)
    orchestrated = _demo_orchestrator()
    lines.append(f"  {'onboarding':<18} {state['ui_url']}/runs/flow-run/{approved}")
    rolled_back = _latest_run_url(state["ui_url"], "customer-onboarding")
    lines.append(f"  {'onboarding (fail)':<18} {rolled_back}")
    _wait_until_served(serving)  # the deployments link below must show them
    print("\nSee the runs in the Prefect UI:")
    print("\n".join(lines))
    lines.append(f"  {'orchestrated':<18} {orchestrated}")
    print(f"  all runs           {state['ui_url']}/runs")
    print(f"  deployments        {state['ui_url']}/deployments (sales-report runs every minute)")
    print(
        "The server and the schedules keep running in the background; "
        "stop both with: beluga-flows server --stop"
    )
    m = get_metrics()  # this process: every run above, by kind, as they ended
    print(
        f"metrics: {m['total_executions']} runs finished, {m['error_count']} with an error; "
        f"active now: {m['active_chains']} chains, {m['active_graphs']} graphs, "
        f"{m['active_workflows']} workflows"
    )
    return 0


def _wait_until_served(pid: int, timeout: float = 180) -> None:
    """Wait until the background ``serve`` has registered every deployment of
    ``deployments/`` (it imports them while the examples run)."""
    from prefect.client.orchestration import get_client

    from beluga_flows.tools.deploy import load

    wanted = {item.spec.name for item in load(["deployments"])}

    async def registered() -> set[str]:
        async with get_client() as client:
            return {d.name for d in await client.read_deployments() if not d.paused}

    deadline = time.monotonic() + timeout
    while not wanted <= asyncio.run(registered()):
        if serving() is None or time.monotonic() > deadline:
            raise OrchestratorError(
                "demo",
                f"the background serve (pid {pid}) did not register {sorted(wanted)}; "
                f"see {home()}/serve.log",
                ErrorCode.EXECUTION_FAILED,
            )
        time.sleep(0.5)


def _demo_order(out: str) -> Any:
    """Run the order workflow above its approval threshold and approve it by signal."""
    orders = load_target("flows/order_workflow.py:orders")
    workflow_id = f"order-demo-{int(time.time())}"
    print("\n== flows/order_workflow.py:orders (a durable workflow)")
    handle = orders.execute(
        {"order_id": 7, "amount": 740.0, "ledger": f"{out}/order_ledger.jsonl"},
        workflow_id=workflow_id,
    )
    print(f"started: workflow_id={handle.workflow_id} run_id={handle.run_id}")
    deadline = time.monotonic() + 120
    while orders.query(workflow_id, handle.run_id, "status") != "paused":
        if time.monotonic() > deadline:
            raise OrchestratorError("demo", "the order never asked for approval", ErrorCode.TIMEOUT)
        time.sleep(0.2)
    stage = orders.query(workflow_id, handle.run_id, "progress")
    print(f"paused for approval ({stage}); approving it with an 'approval' signal")
    orders.signal(workflow_id, handle.run_id, "approval", {"approved": True, "reviewer": "demo"})
    print(json.dumps(orders.get_result(workflow_id, handle.run_id, timeout=120), indent=2))
    return handle


def _demo_enterprise() -> str:
    """Run the enterprise orchestrator on a task that needs a reviewer and approve it by
    signal when its ``human_approval`` node asks (independent work goes on); the run id."""
    source = "flows/enterprise_orchestrator.py"
    enterprise = load_target(f"{source}:enterprise")
    task = load_target(f"{source}:EXAMPLES")["approval"]
    wid = f"enterprise-demo-{int(time.time())}"
    print(f"\n== {source}:enterprise (a graph inside a durable workflow: {task!r})")
    run_id = enterprise.execute({"task": task}, workflow_id=wid).run_id
    print(f"started: workflow_id={wid} run_id={run_id}")
    deadline = time.monotonic() + 120
    waiting = ("scheduled", "pending", "running")
    while (status := enterprise.query(wid, run_id, "status")) in waiting:
        if time.monotonic() > deadline:
            raise OrchestratorError("demo", "no approval was asked", ErrorCode.TIMEOUT)
        time.sleep(0.2)
    if status == "paused":
        print("its human_approval node asks for approval; approving it with a signal")
        approval = {"approved": True, "reviewer": "demo", "comment": "from make demo"}
        enterprise.signal(wid, run_id, "approval", approval)
    print(json.dumps(enterprise.get_result(wid, run_id, timeout=180), indent=2))
    return str(run_id)


def _demo_definition(out: str) -> str:
    """The onboarding definition twice: a durable run of a business customer above the
    approval threshold, approved by signal when its form opens, and a run whose card
    issue fails, so its provisioning rolls back. Returns the durable run's id."""
    from beluga_flows.definitions.engine import WorkflowEngine
    from beluga_flows.definitions.model import WorkflowDefinition
    from beluga_flows.durable.client import WorkflowClient
    from beluga_flows.tools.deploy import import_actions

    import_actions(["workflows/onboarding_actions.py"])
    definition = WorkflowDefinition.from_yaml("workflows/onboarding.yaml")
    engine = WorkflowEngine(provider="prefect")
    wid = f"onboarding-demo-{int(time.time())}"
    print("\n== workflows/onboarding.yaml (a declarative workflow, durable: engine.start)")
    handle = engine.start(
        definition, {"customer_id": "c-1002", "out_dir": f"{out}/onboarding"}, workflow_id=wid
    )
    client = WorkflowClient()
    deadline = time.monotonic() + 120
    while client.query(wid, handle.run_id, "status") != "paused":
        if time.monotonic() > deadline:
            raise OrchestratorError("demo", "no approval was asked", ErrorCode.TIMEOUT)
        time.sleep(0.2)
    print("its credit_approval step asks for approval; approving it with a signal")
    client.signal(wid, handle.run_id, "approval", {"approved": True, "reviewer": "demo"})
    approved = engine.result(definition, wid, timeout=120)
    steps = {k: str(v) for k, v in approved.steps.items()}
    print(f"status {approved.status}; steps: {json.dumps(steps)}")
    print("\n== workflows/onboarding.yaml again, for a customer whose card cannot be issued")
    failed = engine.execute(definition, {"customer_id": "c-1005", "out_dir": f"{out}/onboarding"})
    print(f"status {failed.status}; rolled back, newest first: {', '.join(failed.rolled_back)}")
    return handle.run_id


def _demo_orchestrator() -> str:
    """``flows/orchestrated.py``: an orchestrator's chains under admission control and a
    graph, with its own metrics and health; a one-line summary of what it printed."""
    print("\n== flows/orchestrated.py (an Orchestrator: defaults, admission, metrics, health)")
    main = load_target("flows/orchestrated.py:main")
    report = asyncio.run(main("prefect"))
    print(json.dumps(report, indent=2))
    m = report["metrics"]
    return (
        f"{m['total_executions']} runs, at most {report['peak_concurrent_chains']} chains at "
        f"once; health: {', '.join(f'{k} {v}' for k, v in report['health'].items())}"
    )
