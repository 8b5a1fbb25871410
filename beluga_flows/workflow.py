"""Durable, long-running, interactive workflows on Prefect (Temporal-style).

A :class:`Workflow` wraps a plain function (or a ``@bf.flow``). ``execute`` starts a
run and returns a :class:`WorkflowHandle` at once; any process can then signal it,
query it, cancel or terminate it and wait for its result by id. Inside the
function, :func:`wait_for_signal`, :func:`request_approval`, :func:`query_handler`
and :func:`compensate` talk to the live run.

Two execution modes behind one API: a run is hosted by a process serving the
workflow's deployment (``wf.serve()``; production, survives the caller) or, when
nothing serves it, in the calling process on a background event loop.

Every step result is persisted under a key derived from (workflow id, execution,
step, input, occurrence), so ``resume`` continues a crashed or failed run without
running completed steps again.

Example (the in-workflow helpers are in :mod:`beluga_flows.inside`)::

    orders = bf.Workflow(order_flow, name="orders")
    handle = orders.execute({"order_id": 7}, workflow_id="order-7")
    orders.signal("order-7", handle.run_id, "approval", {"approved": True})
    orders.get_result("order-7", handle.run_id, timeout=60)
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from . import _execute, telemetry
from ._durable import StepStatus
from ._validate import config_error, identifier, non_negative_int
from .decorators import Flow, flow
from .errors import ErrorCode, OrchestratorError
from .inside import approval_data

__all__ = ["StepStatus", "Workflow", "WorkflowClient", "WorkflowHandle", "serve"]

T = TypeVar("T")
MODES = ("auto", "served", "in_process")


@dataclass(frozen=True)
class WorkflowHandle:
    """Where a workflow run can be found: the business key and the Prefect flow-run id."""

    workflow_id: str
    run_id: str


def _adapter() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The Prefect adapter's workflow modules, imported when first used."""
    from .engine import prefect_host, prefect_messages, prefect_runs

    return prefect_runs, prefect_messages, prefect_host


@contextlib.asynccontextmanager
async def _traced(op: str, workflow_id: str) -> AsyncIterator[None]:
    """A ``workflow.<op>`` span (a no-op without a tracer provider)."""
    with telemetry.span(f"workflow.{op}", **{"workflow.id": workflow_id}):
        yield


def _sync(factory: Callable[[], Awaitable[T]]) -> T:
    return _execute.run_sync(factory)


class WorkflowClient:
    """Talk to workflow runs by id, without the workflow's code (what the CLI uses).

    ``run_id=None`` means the workflow's latest run. Unknown ids → ``NOT_FOUND``.

    Example::

        client = bf.WorkflowClient()
        client.signal("order-7", None, "approval", {"approved": True, "reviewer": "ana"})
        client.query("order-7", None, "status")        # 'running'
    """

    # ---------------------------------------------------------------- results

    async def aget_result(
        self, workflow_id: str, run_id: str | None = None, timeout: float | None = None
    ) -> Any:
        """Wait for the run's value; re-raise its ``OrchestratorError``; ``TIMEOUT``
        after ``timeout`` seconds (the run goes on). Cancelled → ``TASK_CANCELED``."""
        runs, _, _ = _adapter()
        async with _traced("get_result", workflow_id), runs.client() as client:
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
        async with _traced("signal", workflow_id), runs.client() as client:
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
            from .engine.prefect_approval import address

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
        :func:`query_handler` (unknown → ``INVALID_INPUT``, finished → ``INVALID_STATE``)."""
        identifier("query", query_type, "query type")
        runs, messages, _ = _adapter()
        args_list = list(args)
        messages.encode("query", args_list)
        async with _traced("query", workflow_id), runs.client() as client:
            fr = await runs.find_run(client, "query", workflow_id, run_id)
            if query_type == "status":
                return (
                    "crashed" if runs.is_live(fr) and runs.owner_dead(fr) else runs.state_name(fr)
                )
            if query_type == "result":
                return None if runs.is_live(fr) else await runs.outcome(fr)
            if query_type == "steps":
                return await runs.step_statuses(client, fr)
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
        async with _traced("cancel", workflow_id), runs.client() as client:
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
        async with _traced("terminate", workflow_id), runs.client() as client:
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


class Workflow(WorkflowClient):
    """A durable workflow: ``execute`` it, talk to its runs, ``resume`` it after a crash.

    ``fn`` is a plain function (sync or async) or a ``@bf.flow``. ``timeout`` bounds
    each run (``TIMEOUT``), ``retries`` replays a failed run that many times (completed
    steps come from storage). ``mode`` picks where runs execute: ``"auto"`` (the
    served deployment ``<name>/<task_queue>`` when something serves it, else this
    process), ``"served"`` or ``"in_process"``.

    Example::

        orders = bf.Workflow(order_flow, name="orders")
        handle = orders.execute({"order_id": 7}, workflow_id="order-7")
    """

    def __init__(
        self,
        fn: Callable[..., Any] | Flow,
        *,
        name: str | None = None,
        task_queue: str = "default",
        timeout: Any = None,
        retries: int = 0,
        mode: str = "auto",
    ) -> None:
        owner = "workflow"
        if isinstance(fn, Flow):
            same = name is None and timeout is None and not retries
            self.flow = (
                fn
                if same
                else flow(
                    name=name or fn.spec.name,
                    timeout=timeout if timeout is not None else fn.spec.timeout,
                    retries=retries or fn.spec.retries,
                    max_workers=fn.spec.max_workers,
                    tags=fn.spec.tags,
                )(fn.fn)
            )
        else:
            non_negative_int(owner, "retries", retries, maximum=20)
            self.flow = flow(name=name, timeout=timeout, retries=retries)(fn)
        if not isinstance(task_queue, str) or not 1 <= len(task_queue) <= 255:
            raise config_error(owner, f"task_queue must be 1..255 chars, got {task_queue!r}")
        if mode not in MODES:
            raise config_error(owner, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.name = self.flow.spec.name
        self.task_queue = task_queue
        self.mode = mode

    @property
    def prefect_flow(self) -> Any:
        """The Prefect flow behind the workflow (what a served deployment runs)."""
        _, _, host = _adapter()
        return host.workflow_flow(self.name, self.flow)

    def _parameters(self, input: Any) -> dict[str, Any]:
        params = [
            p
            for p in inspect.signature(self.flow.fn).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        names = {p.name for p in params}
        if isinstance(input, Mapping) and input and set(input) <= names:
            return dict(input)
        if input is None and all(p.default is not p.empty for p in params):
            return {}
        if not params:
            raise OrchestratorError(
                "execute", f"{self.name} takes no input, got {input!r}", ErrorCode.INVALID_INPUT
            )
        return {params[0].name: input}

    async def aexecute(self, input: Any = None, workflow_id: str | None = None) -> WorkflowHandle:
        """Start a run and return its handle at once. A second live run with the same
        ``workflow_id`` → ``INVALID_STATE``; input must be JSON (``INVALID_INPUT``)."""
        wid = workflow_id if workflow_id is not None else f"{self.name}-{uuid.uuid4().hex[:12]}"
        identifier("execute", wid)
        parameters = self._parameters(input)
        async with _traced("execute", wid):
            return await self._start(wid, uuid.uuid4().hex, parameters, previous=None)

    def execute(self, input: Any = None, workflow_id: str | None = None) -> WorkflowHandle:
        """Sync :meth:`aexecute`."""
        return _sync(lambda: self.aexecute(input, workflow_id))

    async def aresume(self, workflow_id: str) -> WorkflowHandle:
        """Start a new run of a crashed, failed or cancelled workflow that reuses its
        completed steps' results. A run whose owner process died is marked Crashed
        first; a live one → ``INVALID_STATE``, as is a completed or compensated one."""
        runs, _, _ = _adapter()
        async with _traced("resume", workflow_id), runs.client() as client:
            last = await runs.find_run(client, "resume", workflow_id, None)
            if runs.is_live(last) and runs.owner_dead(last):
                await runs.mark_crashed(client, last)
                last = await client.read_flow_run(last.id)
            runs.check_resumable(last)
        identity = (last.context or {}).get("beluga", {})
        return await self._start(
            workflow_id,
            identity.get("execution") or (last.labels or {}).get("beluga.execution", str(last.id)),
            dict(last.parameters),
            previous=last,
        )

    async def acancel(self, workflow_id: str, run_id: str | None = None) -> None:
        """:meth:`WorkflowClient.acancel`; a run whose owner died is resumed here at
        once, to run its compensations (it ends Cancelled)."""
        if await self._cancel(workflow_id, run_id):
            await self.aresume(workflow_id)

    def resume(self, workflow_id: str) -> WorkflowHandle:
        """Sync :meth:`aresume`."""
        return _sync(lambda: self.aresume(workflow_id))

    async def _start(
        self, workflow_id: str, execution: str, parameters: dict[str, Any], previous: Any
    ) -> WorkflowHandle:
        runs, messages, host = _adapter()
        messages.encode("execute", parameters)
        pf = self.prefect_flow
        async with runs.client() as client:
            deployment = await host.deployment_id(client, self.name, self.task_queue, self.mode)
            resumed = {} if previous is None else {"resumed": True}
            if previous is not None and (reason := runs.rollback_of(previous)) is not None:
                resumed["rollback"] = reason
            fr = await runs.create_run(
                client,
                pf,
                workflow_id,
                execution,
                parameters,
                deployment_id=deployment,
                labels={} if deployment is not None else runs.owner_labels(),
                identity=resumed,
            )
            if previous is not None:
                try:
                    await messages.copy_history(client, previous, fr)
                except BaseException:  # never leave a half-made run holding the id
                    await runs.force_state(client, fr.id, runs.cancelled("resume failed"))
                    raise
        if deployment is None:
            host.host.start(pf, fr, parameters)
        return WorkflowHandle(workflow_id, str(fr.id))

    def serve(self, *, limit: int | None = None) -> None:
        """Serve this workflow's deployment ``<name>/<task_queue>`` until interrupted:
        ``execute`` from any process then runs here (a subprocess per run). To serve
        several workflows in one process, use :func:`serve`."""
        serve(self, limit=limit)

    def _entrypoint(self) -> str:
        module = sys.modules.get(self.flow.fn.__module__)
        path = getattr(module, "__file__", None)
        names = [k for k, v in vars(module).items() if v is self] if module is not None else []
        if not path or not names:
            raise config_error(
                "workflow", f"define {self.name!r} at module level in a file to serve it"
            )
        return f"{path}:{names[0]}.prefect_flow"

    def __repr__(self) -> str:
        return f"<workflow {self.name!r} queue={self.task_queue!r} mode={self.mode!r}>"


def serve(*workflows: Workflow, limit: int | None = None) -> None:
    """Serve the deployments of several workflows from one process (one Prefect
    runner), until interrupted. ``limit`` bounds the runs executing at once.

    Example::

        bf.serve(orders, refunds, limit=20)
    """
    if not workflows or not all(isinstance(w, Workflow) for w in workflows):
        raise config_error("serve", f"expected bf.Workflow objects, got {workflows!r}")
    _, _, host = _adapter()
    host.serve([(w, w._entrypoint()) for w in workflows], limit=limit)
