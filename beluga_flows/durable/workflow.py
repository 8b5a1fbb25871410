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

Example (the in-workflow helpers are in :mod:`beluga_flows.durable.inside`)::

    orders = bf.Workflow(order_flow, name="orders")
    handle = orders.execute({"order_id": 7}, workflow_id="order-7")
    orders.signal("order-7", handle.run_id, "approval", {"approved": True})
    orders.get_result("order-7", handle.run_id, timeout=60)
"""

from __future__ import annotations

import inspect
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from beluga_flows._validate import config_error, identifier, non_negative_int
from beluga_flows.core.decorators import Flow, flow
from beluga_flows.durable.client import WorkflowClient, WorkflowHandle, _adapter, _sync, _traced
from beluga_flows.durable.live import StepStatus
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["StepStatus", "Workflow", "WorkflowClient", "WorkflowHandle", "serve"]

T = TypeVar("T")
MODES = ("auto", "served", "in_process")


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
        async with _traced("execute", wid, self.name):
            return await self._start(wid, uuid.uuid4().hex, parameters, previous=None)

    def execute(self, input: Any = None, workflow_id: str | None = None) -> WorkflowHandle:
        """Sync :meth:`aexecute`."""
        return _sync(lambda: self.aexecute(input, workflow_id))

    async def aresume(self, workflow_id: str) -> WorkflowHandle:
        """Start a new run of a crashed, failed or cancelled workflow that reuses its
        completed steps' results. A run whose owner process died is marked Crashed
        first; a live one → ``INVALID_STATE``, as is a completed or compensated one."""
        runs, _, _ = _adapter()
        async with _traced("resume", workflow_id, self.name), runs.client() as client:
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
                tags=self.flow.spec.tags,
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
