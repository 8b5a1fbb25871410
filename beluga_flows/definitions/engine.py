"""The front door of the declarative engine: :class:`WorkflowEngine`.

Example::

    engine = bf.WorkflowEngine(provider="local")          # or "prefect" (the default engine)
    definition = bf.WorkflowDefinition.from_yaml("workflows/onboarding.yaml")
    assert engine.validate(definition) == []
    result = engine.execute(definition, {"customer_id": "c-1"})
    result.status, result.steps, result.rolled_back

    handle = engine.start(definition, {"customer_id": "c-2"}, workflow_id="onb-c-2")
    bf.WorkflowClient().signal("onb-c-2", None, "approval", {"approved": True})
    engine.result(definition, "onb-c-2")                   # the ExecutionResult

``execute`` runs to the end in this process (on Prefect: one flow run tagged
``beluga:definition``, ``workflow:<id>``, ``version:<v>``, a task run per action call,
a markdown artifact with the step table and the drawing). ``start`` makes the run
durable: a :class:`~beluga_flows.Workflow` run that :class:`~beluga_flows.WorkflowClient`
signals, queries, cancels (with rollback) and terminates, and that ``resume``
continues without running completed steps again.
"""

from __future__ import annotations

import collections
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from beluga_flows import _sync, telemetry
from beluga_flows._validate import config_error
from beluga_flows.core.decorators import flow
from beluga_flows.definitions.checks import problems
from beluga_flows.definitions.compile import DefinitionPlan, compile_definition
from beluga_flows.definitions.model import WorkflowDefinition
from beluga_flows.definitions.monitor import Monitor, report_markdown
from beluga_flows.definitions.records import ExecutionResult, finished_result, outcome_error
from beluga_flows.definitions.runtime import Execution, StepNode
from beluga_flows.durable.workflow import Workflow, WorkflowHandle
from beluga_flows.engine import Engine, get_engine
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["WorkflowEngine"]

_OPTIONS = frozenset({"approvals", "execution_id"})
_PLANS = 256  # compiled plans kept per engine, by definition hash


class WorkflowEngine:
    """Validates, runs and starts :class:`~beluga_flows.WorkflowDefinition` s.

    ``actions`` maps names to callables (or ``@bf.step`` s); ``None`` uses the global
    registry (``@bf.action``). ``provider`` is ``"prefect"``, ``"local"`` or ``None``
    (the engine in force, as for chains). ``on_alert`` callbacks receive each SLA or
    anomaly alert.
    """

    def __init__(
        self,
        actions: Mapping[str, Callable[..., Any]] | None = None,
        provider: str | Engine | None = None,
        on_alert: Callable[[dict[str, Any]], Any] | Iterable[Callable[[dict[str, Any]], Any]] = (),
    ) -> None:
        if actions is not None:
            if not isinstance(actions, Mapping):
                raise config_error(
                    "engine", f"actions must be a mapping name -> function, got {actions!r}"
                )
            for name, fn in actions.items():
                if not isinstance(name, str) or not callable(fn):
                    raise config_error("engine", f"action {name!r} must be a function, got {fn!r}")
            actions = dict(actions)
        if provider is not None:
            get_engine(provider)  # unknown -> NOT_FOUND listing the known ones
        callbacks = (on_alert,) if callable(on_alert) else tuple(on_alert)
        if not all(callable(c) for c in callbacks):
            raise config_error("engine", f"on_alert takes callables, got {on_alert!r}")
        self.actions = actions
        self.provider = provider
        self.monitor = Monitor(callbacks)
        self._plans: collections.OrderedDict[str, DefinitionPlan] = collections.OrderedDict()
        self._workflows: dict[str, Workflow] = {}
        self._live: dict[str, Execution] = {}

    # ---------------------------------------------------------------- checking

    def validate(
        self, definition: WorkflowDefinition | Mapping[str, Any]
    ) -> list[OrchestratorError]:
        """Every problem of ``definition``, each naming its path (``[]``: it would run).
        Never raises for a problem of the definition itself."""
        try:
            found = _definition(definition)
        except OrchestratorError as err:
            return list(getattr(err, "problems", [err]))
        return problems(found, self.actions)

    def compile(self, definition: WorkflowDefinition | Mapping[str, Any]) -> DefinitionPlan:
        """The compiled plan (kept by definition hash); raises one error listing every
        problem (with ``.problems``)."""
        found = _definition(definition)
        key = found.definition_hash
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = compile_definition(found, self.actions, StepNode)
            if len(self._plans) > _PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    def draw_mermaid(self, definition: WorkflowDefinition | Mapping[str, Any]) -> str:
        """The definition as a mermaid flowchart (needs no actions)."""
        return _definition(definition).draw_mermaid()

    # ---------------------------------------------------------------- running

    async def aexecute(
        self,
        definition: WorkflowDefinition | Mapping[str, Any],
        input_data: Mapping[str, Any] | None = None,
        execution_options: Mapping[str, Any] | None = None,
    ) -> ExecutionResult:
        """Run ``definition`` on ``input_data`` to its end; the run's own failures are
        in the result (``status``), problems of the definition are raised."""
        plan = self.compile(definition)
        options = _options(execution_options)
        data = _input(input_data)
        d = plan.definition
        engine = get_engine(self.provider)
        eid = options.get("execution_id") or f"{d.workflow_id}-{uuid.uuid4().hex[:12]}"
        if eid in self._live:
            raise OrchestratorError(
                "execute", f"execution {eid!r} is running", ErrorCode.INVALID_STATE
            )
        run = self._live[eid] = Execution(plan, engine, eid, data, options.get("approvals"))
        attrs = {"definition.version": d.version, "definition.steps": len(plan.steps)}
        try:
            async with telemetry.execution(
                "definition", d.workflow_id, attrs=attrs, span_name="definition.execute", input=data
            ) as sp:
                result: ExecutionResult = await engine.in_flow(
                    d.workflow_id,  # the flow's name: the same for execute and start
                    lambda _: self._body(engine, plan, run),
                    data,
                    description=d.description,
                    tags=_tags(d),
                )
                telemetry.record_value(sp, "output", result.result)
                return result
        except OrchestratorError as err:
            return finished_result(err)
        finally:
            self._live.pop(eid, None)

    def execute(
        self,
        definition: WorkflowDefinition | Mapping[str, Any],
        input_data: Mapping[str, Any] | None = None,
        execution_options: Mapping[str, Any] | None = None,
    ) -> ExecutionResult:
        """Sync :meth:`aexecute`."""
        return _sync.run_sync(lambda: self.aexecute(definition, input_data, execution_options))

    async def _body(self, engine: Engine, plan: DefinitionPlan, run: Execution) -> ExecutionResult:
        """Inside the run's flow: execute, judge the SLAs, publish the report; a run
        that did not complete raises (its flow run shows Failed) carrying its result."""
        baseline = await self.monitor.baseline(engine, plan)
        result = await self.monitor.judge(engine, plan, await run.run(), baseline)
        if engine.run_id() is not None:  # a flow run to attach the report to
            await engine.publish_markdown(
                _artifact_key(plan.definition.workflow_id),
                report_markdown(plan, result),
                f"definition {plan.definition.workflow_id!r} execution {result.execution_id}",
            )
        if result.status != "completed":
            failed = (
                result.errors[0] if result.errors else {"code": "execution_failed", "message": ""}
            )
            raise OrchestratorError(
                "definition",
                f"{plan.definition.workflow_id} {result.status}: {failed['message']}",
                ErrorCode(failed["code"])
                if result.status != "cancelled"
                else ErrorCode.TASK_CANCELED,
                execution_result=result,
            )
        return result

    # ---------------------------------------------------------------- local control

    async def asignal(self, execution_id: str, name: str, data: Any = None) -> None:
        """Send signal ``name`` to a running execution of this engine (an ``"approval"``
        answers its waiting approval step). Durable runs: :class:`~beluga_flows.WorkflowClient`."""
        self._running(execution_id).deliver(name, data)

    def signal(self, execution_id: str, name: str, data: Any = None) -> None:
        """Sync :meth:`asignal` (callable from any thread)."""
        self._running(execution_id).deliver(name, data)

    async def acancel(self, execution_id: str) -> None:
        """Cancel a running execution of this engine: what runs is cancelled, completed
        steps roll back, the result's status is ``cancelled``."""
        self._running(execution_id).cancel()

    def cancel(self, execution_id: str) -> None:
        """Sync :meth:`acancel` (callable from any thread)."""
        self._running(execution_id).cancel()

    def _running(self, execution_id: str) -> Execution:
        run = self._live.get(execution_id)
        if run is None:
            known = ", ".join(sorted(self._live)) or "none"
            raise OrchestratorError(
                "signal",
                f"no running execution {execution_id!r} (running: {known})",
                ErrorCode.NOT_FOUND,
            )
        return run

    # ---------------------------------------------------------------- durable runs

    def workflow(self, definition: WorkflowDefinition | Mapping[str, Any]) -> Workflow:
        """The durable :class:`~beluga_flows.Workflow` that runs ``definition`` (what
        ``start`` executes and a deployment serves): its input is the definition's
        ``input_data``, its result the :class:`ExecutionResult`."""
        plan = self.compile(definition)
        d = plan.definition
        found = self._workflows.get(d.definition_hash)
        if found is not None:
            return found
        engine = WorkflowEngine(self.actions, "prefect", self.monitor.on_alert)
        engine.monitor = self.monitor

        async def run_definition(input_data: dict[str, Any] | None = None) -> ExecutionResult:
            result = await engine.aexecute(d, input_data or {})
            if result.status != "completed":
                raise outcome_error(d.workflow_id, result)
            return result

        body = flow(
            name=f"definition-{d.workflow_id}",
            description=d.description,
            tags=(
                "beluga:definition",
                f"workflow:{d.workflow_id}",
                f"version:{d.version}",
                *d.tags,
            ),
        )(run_definition)
        made = self._workflows[d.definition_hash] = Workflow(body)
        return made

    async def astart(
        self,
        definition: WorkflowDefinition | Mapping[str, Any],
        input_data: Mapping[str, Any] | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowHandle:
        """Start a durable run (returns at once): signal, query (``"steps"``), cancel,
        terminate and resume it with :class:`~beluga_flows.WorkflowClient` / :meth:`resume`."""
        wf = self.workflow(definition)
        return await wf.aexecute(_input(input_data), workflow_id=workflow_id)

    def start(
        self,
        definition: WorkflowDefinition | Mapping[str, Any],
        input_data: Mapping[str, Any] | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowHandle:
        """Sync :meth:`astart`."""
        return _sync.run_sync(lambda: self.astart(definition, input_data, workflow_id))

    async def aresult(
        self,
        definition: WorkflowDefinition | Mapping[str, Any],
        workflow_id: str,
        run_id: str | None = None,
        timeout: float | None = None,
    ) -> ExecutionResult:
        """The :class:`ExecutionResult` of a durable run (waits up to ``timeout``);
        a cancelled or terminated run raises ``TASK_CANCELED``."""
        try:
            result: ExecutionResult = await self.workflow(definition).aget_result(
                workflow_id, run_id, timeout=timeout
            )
            return result
        except OrchestratorError as err:
            return finished_result(err)

    def result(
        self,
        definition: WorkflowDefinition | Mapping[str, Any],
        workflow_id: str,
        run_id: str | None = None,
        timeout: float | None = None,
    ) -> ExecutionResult:
        """Sync :meth:`aresult`."""
        return _sync.run_sync(lambda: self.aresult(definition, workflow_id, run_id, timeout))

    async def aresume(
        self, definition: WorkflowDefinition | Mapping[str, Any], workflow_id: str
    ) -> WorkflowHandle:
        """Continue a crashed or failed durable run: completed steps are not run
        again. A run that rolled back cannot be continued (its completed steps were
        undone): ``INVALID_STATE``; start a new run instead."""
        try:
            previous = await self.aresult(definition, workflow_id, timeout=0)
        except OrchestratorError:
            previous = None  # still live (crashed?), cancelled or lost: Workflow decides
        if previous is not None and previous.rollback_performed:
            raise OrchestratorError(
                "resume",
                f"workflow {workflow_id!r} rolled back {', '.join(previous.rolled_back)}; "
                "its completed steps were undone: start a new run",
                ErrorCode.INVALID_STATE,
            )
        return await self.workflow(definition).aresume(workflow_id)

    def resume(
        self, definition: WorkflowDefinition | Mapping[str, Any], workflow_id: str
    ) -> WorkflowHandle:
        """Sync :meth:`aresume`."""
        return _sync.run_sync(lambda: self.aresume(definition, workflow_id))

    def __repr__(self) -> str:
        return f"<WorkflowEngine provider={self.provider!r}>"


def _definition(definition: Any) -> WorkflowDefinition:
    if isinstance(definition, WorkflowDefinition):
        return definition
    if isinstance(definition, Mapping):
        return WorkflowDefinition.from_dict(definition)
    raise config_error(
        "definition", f"expected a WorkflowDefinition or a mapping, got {type(definition).__name__}"
    )


def _options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping) or set(options) - _OPTIONS:
        unknown = sorted(set(options) - _OPTIONS) if isinstance(options, Mapping) else options
        raise OrchestratorError(
            "execute",
            f"execution_options takes {sorted(_OPTIONS)}, got {unknown!r}",
            ErrorCode.INVALID_INPUT,
        )
    approvals = options.get("approvals") or {}
    if not isinstance(approvals, Mapping):
        raise OrchestratorError(
            "execute",
            f"approvals maps step ids to decisions, got {approvals!r}",
            ErrorCode.INVALID_INPUT,
        )
    return dict(options)


def _input(input_data: Any) -> dict[str, Any]:
    if input_data is None:
        return {}
    if not isinstance(input_data, Mapping) or not all(isinstance(k, str) for k in input_data):
        raise OrchestratorError(
            "execute",
            f"input_data is a mapping with string keys, got {type(input_data).__name__}",
            ErrorCode.INVALID_INPUT,
        )
    return dict(input_data)


def _artifact_key(workflow_id: str) -> str:
    return "definition-" + (re.sub(r"[^a-z0-9]+", "-", workflow_id.lower()).strip("-") or "run")


def _tags(d: WorkflowDefinition) -> tuple[str, ...]:
    return ("beluga:definition", f"workflow:{d.workflow_id}", f"version:{d.version}", *d.tags)
