"""Workflow runs on Prefect, seen from the client: create, find, read, end, wait
and tell whether a run's owner is alive. Part of the Prefect adapter (the seam);
messages to a live run are in :mod:`.messages`.

Every operation is a few Prefect API calls on the flow run, so it works from any
process: the one hosting the run, a CLI, another service.

A workflow run is a flow run tagged ``beluga:workflow`` and ``workflow:<id>``, named
after the workflow id, with labels ``beluga.workflow_id`` and ``beluga.execution``
(the lineage that shares step results across resumes) and, once it runs,
``beluga.host`` / ``beluga.pid`` / ``beluga.pid_start`` (its owner, so a dead run
can be told from a live one).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import uuid
from typing import Any

from prefect.client.base import PrefectHttpxAsyncClient
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import FlowRunCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Crashed, Pending, to_state_create

from beluga_flows._procs import alive, process_start
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "LIVE",
    "POLL",
    "check_resumable",
    "create_run",
    "drop_duplicate",
    "find_run",
    "force_state",
    "is_live",
    "mark_crashed",
    "outcome",
    "owner_dead",
    "owner_labels",
    "refuse_duplicate",
    "require_live",
    "rollback_of",
    "runs_of",
    "state_name",
    "wait_final",
    "workflow_tags",
]

TAG = "beluga:workflow"
LIVE = {
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.PAUSED,
    StateType.CANCELLING,
}
POLL = float(os.environ.get("BELUGA_FLOWS_WORKFLOW_POLL", "0.5"))


def workflow_tags(workflow_id: str) -> list[str]:
    """The tags that find a workflow's runs (and show them in the UI)."""
    return [TAG, f"workflow:{workflow_id}"]


# ---------------------------------------------------------------- owners


def owner_labels() -> dict[str, Any]:
    """Labels naming this process as the run's owner."""
    pid = os.getpid()
    return {
        "beluga.host": socket.gethostname(),
        "beluga.pid": str(pid),
        "beluga.pid_start": process_start(pid),
    }


def owner_dead(run: FlowRun) -> bool:
    """Whether the process that owns ``run`` is gone (known only on its own host)."""
    labels = run.labels or {}
    pid = labels.get("beluga.pid")
    if not pid or labels.get("beluga.host") != socket.gethostname():
        return False
    return not alive(int(pid), str(labels.get("beluga.pid_start") or "") or None)


# ---------------------------------------------------------------- finding runs


async def runs_of(client: PrefectClient, workflow_id: str) -> list[FlowRun]:
    """The runs of ``workflow_id``, newest first."""
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=workflow_tags(workflow_id))),
        sort=FlowRunSort.START_TIME_DESC,
        limit=200,
    )
    # Tags find them; the label says whose they are (a run may carry another
    # workflow's tag too: a definition's runs are tagged with the definition's id).
    mine = [
        r for r in runs if (r.labels or {}).get("beluga.workflow_id", workflow_id) == workflow_id
    ]
    return sorted(mine, key=lambda r: r.created or 0, reverse=True)


async def find_run(client: PrefectClient, op: str, workflow_id: str, run_id: str | None) -> FlowRun:
    """The run ``run_id`` of ``workflow_id`` (its latest run when ``None``)."""
    if run_id is None:  # the latest live run, else the latest run
        runs = await runs_of(client, workflow_id)
        if not runs:
            raise OrchestratorError(op, f"no workflow {workflow_id!r}", ErrorCode.NOT_FOUND)
        return next((r for r in runs if is_live(r)), runs[0])
    try:
        run = await client.read_flow_run(uuid.UUID(str(run_id)))
    except (ObjectNotFound, ValueError):
        raise OrchestratorError(
            op, f"no run {run_id!r} of workflow {workflow_id!r}", ErrorCode.NOT_FOUND
        ) from None
    if (run.labels or {}).get("beluga.workflow_id") != workflow_id:
        raise OrchestratorError(
            op, f"run {run_id} is not a run of workflow {workflow_id!r}", ErrorCode.NOT_FOUND
        )
    return run


def state_name(run: FlowRun) -> str:
    """``running``, ``paused``, ``completed`` … (the state type, lower case)."""
    return run.state.type.value.lower() if run.state is not None else "pending"


def is_live(run: FlowRun) -> bool:
    """Not in a final state yet."""
    return run.state is None or run.state.type in LIVE


def not_started(run: FlowRun) -> bool:
    """Created but not picked up yet (nothing to compensate)."""
    return run.state is None or run.state.type in (StateType.SCHEDULED, StateType.PENDING)


def cancelled(message: str) -> State[Any]:
    """A Cancelled state with ``message``."""
    return Cancelled(message=message)


def check_resumable(run: FlowRun) -> None:
    """``INVALID_STATE`` unless ``run`` crashed, failed or was cancelled/terminated
    without compensating (a compensated run's effects were undone: start anew)."""
    if is_live(run):
        raise OrchestratorError(
            "resume",
            f"run {run.id} is still {state_name(run)} (owner "
            f"{(run.labels or {}).get('beluga.pid', '?')} on "
            f"{(run.labels or {}).get('beluga.host', '?')}); terminate it first",
            ErrorCode.INVALID_STATE,
        )
    if run.state is not None and run.state.type == StateType.COMPLETED:
        raise OrchestratorError(
            "resume", f"run {run.id} already completed", ErrorCode.INVALID_STATE
        )
    if (run.labels or {}).get("beluga.compensated") == "true":
        raise OrchestratorError(
            "resume",
            f"run {run.id} ran its compensations; start a new workflow instead",
            ErrorCode.INVALID_STATE,
        )


def require_live(op: str, run: FlowRun) -> None:
    """``INVALID_STATE`` when ``run`` already finished."""
    if not is_live(run):
        raise OrchestratorError(
            op,
            f"workflow run {run.id} already finished ({state_name(run)})",
            ErrorCode.INVALID_STATE,
        )


# ---------------------------------------------------------------- creating runs


async def create_run(
    client: PrefectClient,
    flow: Any,
    workflow_id: str,
    execution: str,
    parameters: dict[str, Any],
    *,
    deployment_id: uuid.UUID | None,
    labels: dict[str, Any],
    identity: dict[str, Any] | None = None,
    tags: tuple[str, ...] = (),
) -> FlowRun:
    """A Pending flow run for the workflow (from its deployment when served).

    A second *live* run with the same workflow id is refused with ``INVALID_STATE``.
    Two starters racing both create a run, then both look again: the younger one
    cancels itself, so exactly one stays live.
    """
    await refuse_duplicate(client, workflow_id, None)
    all_labels: dict[str, Any] = {
        "beluga.workflow_id": workflow_id,
        "beluga.execution": execution,
        **labels,
    }
    own = workflow_tags(workflow_id)
    all_tags = [*own, *(t for t in tags if t not in own)]
    # The run reads its identity from its context: a runner may pick a deployment's
    # run up before the labels below are written.
    context = {"beluga": {"workflow_id": workflow_id, "execution": execution, **(identity or {})}}
    # Prefect's client retries a POST whose answer was lost (a slow, locked server):
    # the key makes the retry return the run the first attempt made, not a second one.
    once = f"beluga-{uuid.uuid4().hex}"
    if deployment_id is not None:
        run = await client.create_flow_run_from_deployment(
            deployment_id,
            parameters=parameters,
            name=workflow_id,
            tags=all_tags,
            context=context,
            labels=all_labels,
            idempotency_key=once,
        )
    else:
        flow_id = await client.create_flow(flow)
        create = FlowRunCreate(
            flow_id=flow_id,
            name=workflow_id,
            parameters=parameters,
            context=context,
            tags=all_tags,
            labels=all_labels,
            state=to_state_create(Pending()),
            idempotency_key=once,
        )
        response = await client.request(
            "POST", "/flow_runs/", json=create.model_dump(mode="json", exclude_unset=True)
        )
        run = FlowRun.model_validate(response.json())
    try:
        await refuse_duplicate(client, workflow_id, run)
    except OrchestratorError:
        await drop_duplicate(client, run)
        raise
    return run


async def drop_duplicate(client: PrefectClient, run: FlowRun) -> None:
    """End a run that lost a duplicate-start race and take it out of its workflow's
    runs (its ``workflow:<id>`` tag), so "the latest run" is always the winner."""
    await client.set_flow_run_state(run.id, Cancelled(message="duplicate workflow id"), force=True)
    await client.update_flow_run(run.id, tags=[TAG, "beluga:duplicate"])


async def refuse_duplicate(client: PrefectClient, workflow_id: str, mine: FlowRun | None) -> None:
    """``INVALID_STATE`` when ``workflow_id`` has a live run (older than ``mine``)."""
    live = [r for r in await runs_of(client, workflow_id) if is_live(r) and not owner_dead(r)]
    if mine is not None:
        older = [
            r
            for r in live
            if r.id != mine.id and (r.created, str(r.id)) < (mine.created, str(mine.id))
        ]
    else:
        older = live
    if older:
        raise OrchestratorError(
            "execute",
            f"workflow {workflow_id!r} already has a live run {older[0].id} "
            f"({state_name(older[0])})",
            ErrorCode.INVALID_STATE,
        )


# ---------------------------------------------------------------- ending runs


async def force_state(client: PrefectClient, run_id: Any, state: State[Any]) -> None:
    """Set a state regardless of orchestration rules (terminate, crash marking)."""
    await client.set_flow_run_state(run_id, state, force=True)


async def mark_crashed(client: PrefectClient, run: FlowRun, note: str = "") -> None:
    """Record that ``run``'s owner died: Prefect would leave it Running forever."""
    labels = run.labels or {}
    await force_state(
        client,
        run.id,
        Crashed(
            message=f"owner process {labels.get('beluga.pid')} on "
            f"{labels.get('beluga.host')} is gone{note}"
        ),
    )


def rollback_of(run: FlowRun) -> str | None:
    """``"cancel"`` / ``"failure"`` when ``run`` stopped while compensating (its resume
    must finish rolling back, never go forward), else ``None``."""
    labels = run.labels or {}
    if labels.get("beluga.compensated") == "true":
        return None
    reason = labels.get("beluga.compensating")
    return str(reason) if reason else None


async def wait_final(client: PrefectClient, run_id: Any, timeout: float | None) -> FlowRun:
    """Poll until the run is final; ``TIMEOUT`` after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.05
    while True:
        run = await client.read_flow_run(run_id)
        if not is_live(run):
            return run
        if deadline is not None and time.monotonic() >= deadline:
            raise OrchestratorError(
                "get_result",
                f"run {run_id} not finished within {timeout:g}s ({state_name(run)})",
                ErrorCode.TIMEOUT,
            )
        wait = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(wait)
        delay = min(delay * 2, POLL)


_CODED = re.compile(r"orchestrator (?P<op>[^\s\[]+) \[(?P<code>[a-z_]+)\]: (?P<msg>.*)", re.S)


async def outcome(run: FlowRun) -> Any:
    """The value of a finished run, or its error re-raised with its code."""
    state = run.state
    assert state is not None
    if state.type == StateType.COMPLETED:
        return await state.aresult()  # type: ignore[attr-defined]
    if state.type == StateType.CANCELLED:
        raise OrchestratorError(
            "workflow", state.message or "cancelled", ErrorCode.TASK_CANCELED, run_id=str(run.id)
        )
    try:
        await state.aresult(raise_on_failure=True)  # type: ignore[attr-defined]
    except OrchestratorError:
        raise
    except Exception as err:
        found = _CODED.search(state.message or "")
        if found is not None:
            raise OrchestratorError(
                found["op"], found["msg"], ErrorCode(found["code"]), run_id=str(run.id)
            ) from err
        raise OrchestratorError(
            "workflow", state.message or repr(err), ErrorCode.EXECUTION_FAILED, run_id=str(run.id)
        ) from err
    raise OrchestratorError(
        "workflow",
        f"run {run.id} ended {state_name(run)}: {state.message}",
        ErrorCode.EXECUTION_FAILED,
        run_id=str(run.id),
    )


def client() -> PrefectClient:
    """A Prefect client (an async context manager) that rides out an API outage: Prefect
    retries a refused connection only on a client that has connected once, and every
    call from outside a run (a status query, get_result …) makes a new one."""
    made = get_client()
    if isinstance(made._client, PrefectHttpxAsyncClient):  # retry from the first call on
        made._client._has_connected = True
    return made
