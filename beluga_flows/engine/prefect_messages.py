"""Messages to and from a live workflow run on Prefect: signals, queries, approvals.
Part of the Prefect adapter.

Messages are flow-run inputs (the storage behind Prefect's ``send_input``):
``beluga-signal-…``, ``beluga-query-…`` and ``beluga-control-…`` keys sort by send
time, so a run takes them in order; query answers come back as ``bfreply-<id>``.
An approval is a Prefect pause with a typed form (what the UI shows); its outcome
is recorded as an ``"approval"`` signal so a resumed run replays it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.input.run_input import RunInput, keyset_from_paused_state
from prefect.logging import get_logger
from prefect.states import Paused, Running

from .. import _execute
from .._durable import LiveRun
from ..errors import ErrorCode, OrchestratorError
from . import prefect_runs as runs

__all__ = [
    "ApprovalForm",
    "answer",
    "ask",
    "copy_signals",
    "encode",
    "message_key",
    "report_progress",
    "request_approval",
    "send",
]

_log = get_logger("beluga_flows.workflow")
_PAUSE_CEILING = 366 * 24 * 3600  # Prefect's own pause timeout fails the run: keep it out of reach


def message_key(kind: str) -> str:
    """A flow-run input key that sorts by send time (keys: lowercase, digits, dashes)."""
    return f"beluga-{kind}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def encode(op: str, value: Any) -> str:
    """JSON for the API; anything else is ``INVALID_INPUT``."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as err:
        raise OrchestratorError(
            op, f"data must be JSON-serialisable: {err}", ErrorCode.INVALID_INPUT
        ) from err


# ---------------------------------------------------------------- messages


async def send(client: PrefectClient, run: FlowRun, kind: str, payload: dict[str, Any]) -> str:
    """Leave a message for the live run; its watcher picks it up within a poll."""
    key = message_key(kind)
    await client.create_flow_run_input(run.id, key, encode(kind, payload), sender="beluga_flows")
    return key


async def copy_signals(client: PrefectClient, source: FlowRun, target: FlowRun) -> int:
    """Give a resumed run every signal its predecessor received (same keys, same order)."""
    inputs = await client.filter_flow_run_input(source.id, "beluga-signal-", 10_000, set())
    for item in sorted(inputs, key=lambda i: i.key):
        await client.create_flow_run_input(target.id, item.key, item.value, sender=item.sender)
    return len(inputs)


async def ask(
    client: PrefectClient, run: FlowRun, name: str, args: list[Any], timeout: float
) -> Any:
    """A custom query answered by the live run (``TIMEOUT`` if it does not answer)."""
    key = await send(client, run, "query", {"name": name, "args": args})
    reply_key = "bfreply-" + key.removeprefix("beluga-query-")
    deadline = time.monotonic() + timeout
    while True:
        found = await client.filter_flow_run_input(run.id, reply_key, 1, set())
        if found:
            reply = json.loads(found[0].value)
            if "error" in reply:
                err = reply["error"]
                raise OrchestratorError("query", err["message"], ErrorCode(err["code"]))
            return reply["ok"]
        if time.monotonic() > deadline:
            current = await client.read_flow_run(run.id)
            runs.require_live("query", current)
            raise OrchestratorError(
                "query",
                f"run {run.id} did not answer {name!r} within {timeout:g}s",
                ErrorCode.TIMEOUT,
            )
        await asyncio.sleep(min(runs.POLL, 0.2))


async def answer(run: LiveRun, name: str, args: list[Any]) -> str:
    """The live run's reply to a custom query (JSON, ``ok`` or ``error``)."""
    handler = run.queries.get(name)
    if handler is None:
        known = ", ".join(sorted(["status", "result", "steps", *run.queries]))
        err = {"code": "invalid_input", "message": f"unknown query {name!r}; known: {known}"}
        return json.dumps({"error": err})
    try:
        value = await _execute.call(handler, tuple(args), {})
        return json.dumps({"ok": value}, default=str)
    except Exception as exc:
        code = exc.code.value if isinstance(exc, OrchestratorError) else "execution_failed"
        return json.dumps({"error": {"code": code, "message": f"query {name!r} failed: {exc}"}})


# ---------------------------------------------------------------- approval


class ApprovalForm(RunInput):
    """The form the Prefect UI shows on a paused workflow run."""

    approved: bool = False
    reviewer: str | None = None
    comment: str | None = None


_TIMED_OUT = {"__beluga_timeout__": True}


async def request_approval(run: LiveRun, prompt: str, timeout: float | None) -> dict[str, Any]:
    """Pause the run with an approval form until a decision or ``timeout``.

    A decision already sent as an ``"approval"`` signal is taken without pausing.
    Prefect's own pause timeout would end the run Failed even if the workflow
    catches it, so the pause is given a far ceiling and the timeout is ours: the
    run goes back to Running and ``TIMEOUT`` is raised inside the workflow. Every
    outcome is recorded as an ``"approval"`` signal, so a resumed run replays it.
    """
    run.checkpoint()
    found, data = run.take_signal("approval")
    if found:
        return _decision(data, timeout)
    form = ApprovalForm.with_initial_data(description=prompt)
    state: State[Any] = Paused(
        timeout_seconds=_PAUSE_CEILING, pause_key=f"approval-{message_key('p')[-8:]}"
    )
    keyset = keyset_from_paused_state(state)
    state.state_details.run_input_keyset = {str(k): v for k, v in keyset.items()}
    async with get_client() as client:
        await client.set_flow_run_state(run.run_id, state)  # type: ignore[arg-type]
        await form.asave(keyset, flow_run_id=run.run_id)  # type: ignore[arg-type]
        _log.info("workflow %s waits for approval: %s", run.workflow_id, prompt)
        try:
            data, unrecorded = await _await_decision(client, run, keyset, timeout)
        finally:
            await _unpause(client, run)
        if unrecorded:
            await _record(client, run, data)
    return _decision(data, timeout)


async def _await_decision(
    client: PrefectClient, run: LiveRun, keyset: Any, timeout: float | None
) -> tuple[dict[str, Any], bool]:
    """The decision, and whether it still needs recording (one from the signal queue
    is recorded already)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        run.checkpoint()
        found, data = run.take_signal("approval")
        if found:
            return dict(data), False
        fr = await client.read_flow_run(run.run_id)  # type: ignore[arg-type]
        if fr.state is not None and fr.state.type == StateType.RUNNING:  # resumed with input
            answer = await ApprovalForm.aload(keyset, flow_run_id=fr.id)
            return answer.model_dump(include={"approved", "reviewer", "comment"}), True
        if deadline is not None and loop.time() >= deadline:
            return dict(_TIMED_OUT), True
        await asyncio.sleep(
            runs.POLL if deadline is None else min(runs.POLL, max(0.0, deadline - loop.time()))
        )


async def _unpause(client: PrefectClient, run: LiveRun) -> None:
    fr = await client.read_flow_run(run.run_id)  # type: ignore[arg-type]
    if fr.state is not None and fr.state.type == StateType.PAUSED:
        await runs.force_state(client, fr.id, Running())


async def _record(client: PrefectClient, run: LiveRun, data: dict[str, Any]) -> None:
    key = message_key("signal")
    run.seen.add(key)  # ours: the watcher must not deliver it again
    await client.create_flow_run_input(
        run.run_id,  # type: ignore[arg-type]
        key,
        json.dumps({"name": "approval", "data": data}),
        sender="beluga_flows",
    )


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
