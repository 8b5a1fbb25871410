"""Talk to workflow runs by id: results, signals, queries, cancel and terminate.

:class:`WorkflowClient` needs no workflow code (services and the CLI use it);
:class:`~beluga_flows.Workflow` extends it with starting and resuming runs. Every
operation is a few Prefect API calls through the adapter, made from any process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from beluga_flows import telemetry
from beluga_flows._sync import run_sync
from beluga_flows._validate import identifier
from beluga_flows.durable.inside import approval_data

__all__ = ["WorkflowClient", "WorkflowHandle"]

T = TypeVar("T")


@dataclass(frozen=True)
class WorkflowHandle:
    """Where a workflow run can be found: the business key and the Prefect flow-run id."""

    workflow_id: str
    run_id: str


def _adapter() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The Prefect adapter's workflow modules, imported when first used."""
    from beluga_flows.engine.prefect import host as prefect_host
    from beluga_flows.engine.prefect import messages as prefect_messages
    from beluga_flows.engine.prefect import runs as prefect_runs

    return prefect_runs, prefect_messages, prefect_host


@contextlib.asynccontextmanager
async def _traced(op: str, workflow_id: str, name: str | None = None) -> AsyncIterator[None]:
    """A ``workflow.<op>`` span (a no-op without a tracer provider): ``workflow.id``,
    and ``workflow.name`` when the caller knows the workflow (a client by id does not)."""
    attrs = {"workflow.id": workflow_id}
    if name is not None:
        attrs["workflow.name"] = name
    with telemetry.span(f"workflow.{op}", **attrs):
        yield


def _sync(factory: Callable[[], Awaitable[T]]) -> T:
    return run_sync(factory)


class WorkflowClient:
    """Talk to workflow runs by id, without the workflow's code (what the CLI uses).

    ``run_id=None`` means the workflow's latest run. Unknown ids → ``NOT_FOUND``.

    Example::

        client = bf.WorkflowClient()
        client.signal("order-7", None, "approval", {"approved": True, "reviewer": "ana"})
        client.query("order-7", None, "status")        # 'running'
    """

    @property
    def _name(self) -> str | None:
        """The workflow's name for spans, when this client knows it (a Workflow)."""
        name = getattr(self, "name", None)
        return name if isinstance(name, str) else None

    # ---------------------------------------------------------------- results

    async def aget_result(
        self, workflow_id: str, run_id: str | None = None, timeout: float | None = None
    ) -> Any:
        """Wait for the run's value; re-raise its ``OrchestratorError``; ``TIMEOUT``
        after ``timeout`` seconds (the run goes on). Cancelled → ``TASK_CANCELED``."""
        runs, _, _ = _adapter()
        async with _traced("get_result", workflow_id, self._name), runs.client() as client:
            fr = await runs.find_run(client, "get_result", workflow_id, run_id)
            fr = await runs.wait_final(client, fr.id, timeout)
            return await runs.outcome(fr)

    def get_result(
        self, workflow_id: str, run_id: str | None = None, timeout: float | None = None
    ) -> Any:
        """Sync :meth:`aget_result`."""
        return _sync(lambda: self.aget_result(workflow_id, run_id, timeout))

    # ---------------------------------------------------------------- signals

    async def asignal(
        self, workflow_id: str, run_id: str | None, name: str, data: Any = None
    ) -> None:
        """Deliver ``data`` to ``wait_for_signal(name)`` in the run (in order, none lost
        if sent before it waits). ``"approval"`` answers :func:`request_approval`,
        also when the run is paused on it. Finished run → ``INVALID_STATE``."""
        identifier("signal", name, "signal name")
        if name == "approval":
            data = approval_data(data)
        runs, messages, _ = _adapter()
        messages.encode("signal", data)
        async with _traced("signal", workflow_id, self._name), runs.client() as client:
            fr = await runs.find_run(client, "signal", workflow_id, run_id)
            runs.require_live("signal", fr)
            if name != "approval":
                await messages.send(client, fr, "signal", {"name": name, "data": data})
                return
            if fr.state is not None and fr.state.is_paused():  # answer the form itself
                result = await client.resume_flow_run(fr.id, run_input=data)
                if str(result.status.value).upper() == "ACCEPT":
                    await messages.notify(client, fr)  # its watcher looks at once
                    return
            from beluga_flows.engine.prefect.approval import address

            request = address(fr.labels)  # the request open now: never a later one
            await messages.send(client, fr, "answer", {"request": request, "data": data})

    def signal(self, workflow_id: str, run_id: str | None, name: str, data: Any = None) -> None:
        """Sync :meth:`asignal`."""
        _sync(lambda: self.asignal(workflow_id, run_id, name, data))

    # ---------------------------------------------------------------- queries

    async def aquery(
        self,
        workflow_id: str,
        run_id: str | None,
        query_type: str,
        *args: Any,
        timeout: float = 10.0,
    ) -> Any:
        """``status`` (state name, lower case), ``result`` (value once completed, else
        ``None``), ``steps`` (``{step: StepStatus}``) read from Prefect's API, so they
        work on finished and crashed runs; any other name is asked of the live run's
        :func:`query_handler` (unknown → ``INVALID_INPUT``); a finished run answers with
        what its handlers answered as it ended (``INVALID_STATE`` if it recorded none)."""
        identifier("query", query_type, "query type")
        runs, messages, _ = _adapter()
        args_list = list(args)
        messages.encode("query", args_list)
        async with _traced("query", workflow_id, self._name), runs.client() as client:
            fr = await runs.find_run(client, "query", workflow_id, run_id)
            if query_type == "status":
                return (
                    "crashed" if runs.is_live(fr) and runs.owner_dead(fr) else runs.state_name(fr)
                )
            if query_type == "result":
                return None if runs.is_live(fr) else await runs.outcome(fr)
            if query_type == "steps":
                return await messages.step_statuses(client, fr)
            if not runs.is_live(fr):  # the answers it recorded as it ended
                return await messages.final_answer(client, fr, query_type, args_list)
            return await messages.ask(client, fr, query_type, args_list, timeout)

    def query(
        self,
        workflow_id: str,
        run_id: str | None,
        query_type: str,
        *args: Any,
        timeout: float = 10.0,
    ) -> Any:
        """Sync :meth:`aquery`."""
        return _sync(lambda: self.aquery(workflow_id, run_id, query_type, *args, timeout=timeout))

    # ---------------------------------------------------------------- ending runs

    async def acancel(self, workflow_id: str, run_id: str | None = None) -> None:
        """Graceful: the run stops at its next step boundary (or signal/approval wait),
        its compensations run in reverse, and it ends Cancelled. A run that has not
        started yet is cancelled at once. A run whose owner process died is marked
        Crashed with the cancel recorded: its ``resume`` runs the compensations
        (:meth:`Workflow.cancel` does that at once). Finished → ``INVALID_STATE``."""
        await self._cancel(workflow_id, run_id)

    async def _cancel(self, workflow_id: str, run_id: str | None) -> bool:
        """Send the cancel; True when the run's owner is gone (a resume must act on it)."""
        runs, messages, _ = _adapter()
        async with _traced("cancel", workflow_id, self._name), runs.client() as client:
            fr = await runs.find_run(client, "cancel", workflow_id, run_id)
            runs.require_live("cancel", fr)
            await messages.send(client, fr, "cancel", {})
            if runs.not_started(fr):  # nothing ran: nothing to compensate
                await runs.force_state(client, fr.id, runs.cancelled("cancelled before it ran"))
            elif runs.owner_dead(fr):
                await runs.mark_crashed(client, fr, "; cancel recorded: resume runs its undos")
                return True
        return False

    def cancel(self, workflow_id: str, run_id: str | None = None) -> None:
        """Sync :meth:`acancel`."""
        _sync(lambda: self.acancel(workflow_id, run_id))

    async def aterminate(
        self, workflow_id: str, run_id: str | None = None, reason: str = "terminated"
    ) -> None:
        """Immediate: the run ends Cancelled now with ``terminated: <reason>`` as its
        state message; no further step and no compensation runs."""
        runs, messages, _ = _adapter()
        async with _traced("terminate", workflow_id, self._name), runs.client() as client:
            fr = await runs.find_run(client, "terminate", workflow_id, run_id)
            runs.require_live("terminate", fr)
            # The message stops a run that starts later (Prefect lets a starting run
            # leave Cancelled); the state stops a live one now, or a dead one for good.
            await messages.send(client, fr, "terminate", {"reason": reason})
            await runs.force_state(client, fr.id, runs.cancelled(f"terminated: {reason}"))

    def terminate(
        self, workflow_id: str, run_id: str | None = None, reason: str = "terminated"
    ) -> None:
        """Sync :meth:`aterminate`."""
        _sync(lambda: self.aterminate(workflow_id, run_id, reason))

    async def ahandles(self, workflow_id: str) -> list[WorkflowHandle]:
        """Every run of ``workflow_id``, newest first (resumes add runs)."""
        runs, _, _ = _adapter()
        async with runs.client() as client:
            return [
                WorkflowHandle(workflow_id, str(r.id))
                for r in await runs.runs_of(client, workflow_id)
            ]
