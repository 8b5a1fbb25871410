"""Approvals and progress of a live workflow run on Prefect. Part of the Prefect adapter.

An approval is a Prefect pause with a typed form (what the UI shows). Each
``request_approval`` call is request *n* of its attempt (see
:class:`~beluga_flows.durable.live.LiveRun`); an answer — the form, or an ``"approval"``
signal, which the client addresses to the request open when it was sent — belongs to
that request only. The decision taken (an answer, or a timeout) is logged for the
request, so a retry or a resumed run replays it without asking anyone again.

Inside a step (a graph node) the request is ``<step label>/<n>``: its own, whatever
the parallel branches do. A flow run has one pause, so requests from parallel steps
take turns (one form at a time); the other branches keep running meanwhile. A
signal a step waits for is claimed, and the claim logged (see :func:`claim_signal`).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import State, StateType
from prefect.input.run_input import RunInput, keyset_from_paused_state
from prefect.logging import get_logger
from prefect.states import Paused, Running

from beluga_flows.durable.live import NODE, LiveRun, NodeScope
from beluga_flows.engine.prefect import messages, runs, watch
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "APPROVAL_LABEL",
    "ApprovalForm",
    "address",
    "claim_signal",
    "report_progress",
    "request_approval",
]

_log = get_logger("beluga_flows.workflow")
_PAUSE_CEILING = 366 * 24 * 3600  # Prefect's own pause timeout fails the run: keep it out of reach
APPROVAL_LABEL = "beluga.approval"  # the latest request the run opened (answers address it)
_TIMED_OUT = {"__beluga_timeout__": True}


class ApprovalForm(RunInput):
    """The form the Prefect UI shows on a paused workflow run."""

    approved: bool = False
    reviewer: str | None = None
    comment: str | None = None


async def request_approval(run: LiveRun, prompt: str, timeout: float | None) -> dict[str, Any]:
    """Request ``n``: its recorded decision when there is one, else an answer already
    sent to it, else a pause with an approval form until a decision or ``timeout``.

    Prefect's own pause timeout would end the run Failed even if the workflow
    catches it, so the pause is given a far ceiling and the timeout is ours: the
    run goes back to Running and ``TIMEOUT`` is raised inside the workflow.
    """
    run.checkpoint()
    scope = NODE.get()
    n: int | str = scope.next_approval() if scope is not None else run.next_approval()
    if n not in run.decisions:
        await watch.look_now(run)  # an answer or a copied decision not taken in yet
    if n in run.decisions:
        return _decision(run.decisions[n], timeout)
    run.stop_if_rolling_back(f"approval {n}")
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    turn = await _take_turn(run, n, deadline)
    if n in run.decisions:  # decided while it waited for its turn (a replayed record)
        return _decision(run.decisions[n], timeout)
    _, data = run.take_answer(n)
    if turn is False:
        data = dict(_TIMED_OUT)  # its time ran out behind another request's form
    elif turn is True:
        try:
            data = await _ask(run, n, prompt, deadline)
        finally:
            run.end_approval_turn()
    async with get_client() as client:
        await _record(client, run, n, dict(data))
    return _decision(data, timeout)


async def _take_turn(run: LiveRun, n: int | str, deadline: float | None) -> bool | None:
    """Wait for the run's one form: ``True`` when it is ours, ``False`` when
    ``deadline`` passed first, ``None`` when request ``n`` was answered (or decided)
    meanwhile and needs no form. A cancel raises here."""
    loop = asyncio.get_running_loop()
    while True:
        run.mark_seen()
        run.checkpoint()
        if n in run.decisions or run.take_answer(n)[0]:
            return None
        if run.take_approval_turn():
            return True
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return False
        await run.changed(remaining)


async def _ask(run: LiveRun, n: int | str, prompt: str, deadline: float | None) -> dict[str, Any]:
    """With the form ours: an answer already sent to request ``n``, else a pause."""
    run.checkpoint()
    found, data = run.take_answer(n)
    if found:
        return dict(data)
    remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
    async with get_client() as client:
        return await _pause(client, run, n, prompt, remaining)


async def _pause(
    client: PrefectClient, run: LiveRun, n: int | str, prompt: str, timeout: float | None
) -> dict[str, Any]:
    form = ApprovalForm.with_initial_data(description=prompt)
    slug = re.sub(r"[^a-z0-9]+", "-", str(n).lower()).strip("-")  # keys: [a-z0-9-]
    state: State[Any] = Paused(
        timeout_seconds=_PAUSE_CEILING, pause_key=f"approval-{slug}-{uuid.uuid4().hex[:8]}"
    )
    keyset = keyset_from_paused_state(state)
    state.state_details.run_input_keyset = {str(k): v for k, v in keyset.items()}
    await client.update_flow_run_labels(run.run_id, {APPROVAL_LABEL: n})  # type: ignore[arg-type]
    await client.set_flow_run_state(run.run_id, state)  # type: ignore[arg-type]
    await form.asave(keyset, flow_run_id=run.run_id)  # type: ignore[arg-type]
    _log.info("workflow %s waits for approval %s: %s", run.workflow_id, n, prompt)
    run.paused = True
    try:
        return await _await_decision(client, run, n, keyset, timeout)
    finally:
        run.paused = run.unpaused = False
        fr = await client.read_flow_run(run.run_id)  # type: ignore[arg-type]
        if fr.state is not None and fr.state.type == StateType.PAUSED:
            await runs.force_state(client, fr.id, Running())


async def _await_decision(
    client: PrefectClient, run: LiveRun, n: int | str, keyset: Any, timeout: float | None
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        run.mark_seen()
        run.checkpoint()
        found, data = run.take_answer(n)
        if found or run.unpaused:
            # A sender tries the form first; one that found it answered already sent
            # an answer behind it: the form (resumed, the run Running) came first.
            run.unpaused = False
            fr = await client.read_flow_run(run.run_id)  # type: ignore[arg-type]
            if fr.state is not None and fr.state.type == StateType.RUNNING:
                answer = await ApprovalForm.aload(keyset, flow_run_id=fr.id)
                return answer.model_dump(include={"approved", "reviewer", "comment"})
            if found:
                return dict(data)
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return dict(_TIMED_OUT)
        await run.changed(remaining)


async def _record(client: PrefectClient, run: LiveRun, n: int | str, data: dict[str, Any]) -> None:
    """Log the decision of request ``n``: replays take it instead of asking again."""
    run.deliver_decision(n, data)
    body = json.dumps({"kind": "decision", "request": n, "data": data})
    await messages.log(client, run.run_id, messages.message_key(""), body)


def _decision(data: Any, timeout: float | None) -> dict[str, Any]:
    if data == _TIMED_OUT:
        raise OrchestratorError(
            "request_approval",
            f"no decision within {timeout if timeout is not None else 0:g}s",
            ErrorCode.TIMEOUT,
        )
    return dict(data)


async def report_progress(run: LiveRun, percent: float, description: str | None) -> None:
    """Create, then update, the run's progress artifact (the UI's Artifacts tab)."""
    from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

    if run.progress_artifact is None:
        slug = re.sub(r"[^a-z0-9-]+", "-", run.workflow_id.lower()).strip("-")
        run.progress_artifact = await acreate_progress_artifact(
            percent, key=f"progress-{slug}"[:100], description=description
        )
    else:
        await aupdate_progress_artifact(run.progress_artifact, percent, description=description)


def address(labels: dict[str, Any] | None) -> int | str:
    """The request an ``"approval"`` signal sent now answers: the latest one the run
    opened (a late answer stays with it), or the first when none was opened yet."""
    return messages.request_id((labels or {}).get(APPROVAL_LABEL) or 1)


async def claim_signal(scope: NodeScope, name: str, timeout: float | None) -> Any:
    """``wait_for_signal`` inside a step: the next signal ``name`` nobody took,
    claimed for this step execution (the claim is logged before it is used, so a
    resumed run gives the same signal to the same step and never to another one)."""
    run = scope.run
    key = scope.next_claim(name)
    await watch.look_now(run)  # claims and signals a resumed run inherited
    data = await run.next_signal(name, timeout, key=key)
    index = run.claims[name][key]
    body = json.dumps({"kind": "claim", "name": name, "key": key, "index": index})
    async with get_client() as client:
        await messages.log(client, run.run_id, messages.message_key(""), body)
    return data
