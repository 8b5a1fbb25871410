"""The step types: ``conditional``, ``loop``, ``parallel`` and ``approval``.

(``action`` is one call of the bound step, in :mod:`.runtime`.) Each is a method of
:class:`StepKinds`, which :class:`~.runtime.Execution` is; a parallel step's children
run through :class:`_Fanout`.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict
from typing import Any

from beluga_flows.core.decorators import Step, StepSpec
from beluga_flows.definitions.compile import CompiledStep, error_code
from beluga_flows.definitions.records import StepRecord
from beluga_flows.definitions.state import RunBase, Scope, message
from beluga_flows.durable import inside
from beluga_flows.durable.live import CURRENT as DURABLE_RUN
from beluga_flows.durable.live import StepStatus
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["StepKinds"]


class StepKinds(RunBase):
    """What the non-action step types do."""

    def _route(self, cs: CompiledStep, scope: Scope) -> dict[str, Any]:
        chosen: dict[str, Any] = {"branch": None, "next": []}
        for i, (expr, targets) in enumerate(cs.branches):
            if expr is None or self._truth(cs, expr, scope, f"conditions[{i}]"):
                chosen = {"branch": "else" if expr is None else i, "next": list(targets)}
                break
        self.branches[cs.id] = chosen
        return chosen

    async def _loop(
        self, cs: CompiledStep, rid: str, record: StepRecord, scope: Scope
    ) -> tuple[Any, bool]:
        d = cs.definition
        assert cs.loop_condition is not None and cs.call is not None
        record.iterations = 0
        last = None
        while True:
            here = Scope(self, {**scope.bound, "iteration": record.iterations})
            if not self._truth(cs, cs.loop_condition, here, "loop_condition"):
                return last, True
            if record.iterations >= d.loop_max_iterations:
                if d.on_max_iterations == "continue":
                    return last, True
                raise OrchestratorError(
                    "definition",
                    f"loop step {rid!r} still running after loop_max_iterations="
                    f"{d.loop_max_iterations}",
                    ErrorCode.WORKFLOW_DEADLOCK,
                    step=rid,
                )
            args, kwargs = self._arguments(cs, here)
            last = await self.call(cs.call, f"{rid}-{record.iterations + 1}", record, args, kwargs)
            record.iterations += 1
            self._map_output(cs, rid, last, {**here.bound, "iteration": record.iterations - 1})

    async def _parallel(self, cs: CompiledStep, rid: str, scope: Scope) -> dict[str, Any]:
        if cs.for_each is not None:
            items = self._eval(cs, cs.for_each, scope, "for_each")
            if not isinstance(items, list):
                raise OrchestratorError(
                    "definition",
                    f"step {rid!r}: for_each {cs.for_each.source!r} gave "
                    f"{type(items).__name__}, not a list",
                    ErrorCode.INVALID_INPUT,
                    step=rid,
                )
            child = self.plan.steps[cs.children[0]]
            runs = [
                (child, f"{child.id}[{i}]", {**scope.bound, "item": item, "index": i})
                for i, item in enumerate(items)
            ]
        else:
            runs = [(self.plan.steps[c], c, dict(scope.bound)) for c in cs.children]
        return await _Fanout(self, cs, runs).run()

    async def _approval(self, cs: CompiledStep, rid: str) -> dict[str, Any]:
        d = cs.definition
        prompt = (
            d.prompt or f"Approve step {rid!r} of workflow {self.plan.definition.workflow_id!r}?"
        )
        try:
            if rid in self.presets:
                decision = inside.approval_data(self.presets[rid])
            elif DURABLE_RUN.get() is not None:  # a durable run: the UI form, the signal
                decision = await self.call(
                    _approval_step(rid), rid, StepRecord(), (prompt, d.timeout), {}
                )
            else:
                decision = inside.approval_data(await self.next_signal("approval", d.timeout, rid))
        except OrchestratorError as err:
            if err.code is not ErrorCode.TIMEOUT or d.on_timeout == "fail":
                raise
            decision = {
                "approved": d.on_timeout == "approve",
                "reviewer": None,
                "comment": f"{d.on_timeout} on timeout after {d.timeout:g}s",
            }
        decision = {"reviewer": None, "comment": None, **decision}
        self.data[rid] = decision  # a rejection still tells what was decided
        if not decision["approved"]:
            who = f" by {decision['reviewer']}" if decision.get("reviewer") else ""
            raise OrchestratorError(
                "definition", f"approval {rid!r} rejected{who}", ErrorCode.INVALID_STATE, step=rid
            )
        return decision


class _Fanout:
    """A parallel step's children: at most ``max_parallel_steps`` at once, a success
    threshold, and (``cancel_remaining``) a decision as soon as it is certain."""

    def __init__(
        self, run: RunBase, cs: CompiledStep, runs: list[tuple[CompiledStep, str, dict[str, Any]]]
    ) -> None:
        self.run_ = run
        self.cs = cs
        self.runs = runs
        self.total = len(runs)
        threshold = cs.definition.parallel_failure_threshold
        self.need = math.ceil(threshold * self.total - 1e-9)
        self.ok: list[str] = []
        self.failures: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}

    async def run(self) -> dict[str, Any]:
        limit = asyncio.Semaphore(self.run_.plan.definition.max_parallel_steps)
        tasks = {
            asyncio.ensure_future(self._one(limit, child, rid, bound)): rid
            for child, rid, bound in self.runs
        }
        try:
            pending = set(tasks)
            while pending and not self._decided(len(pending)):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # control flow only: failures are counted by _one
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _, rid, _ in self.runs:
                record = self.run_.records.setdefault(rid, StepRecord())
                if record.status is StepStatus.PENDING:
                    record.status = StepStatus.CANCELLED
        rate = len(self.ok) / self.total if self.total else 1.0
        output = {
            "total_steps": self.total,
            "successful_steps": len(self.ok),
            "failed_steps": len(self.failures),
            "success_rate": rate,
            "results": self.results,
            "failures": self.failures,
        }
        if len(self.ok) < self.need:
            raise OrchestratorError(
                "definition",
                f"parallel step {self.cs.id!r}: {len(self.ok)} of {self.total} children "
                f"succeeded, below parallel_failure_threshold="
                f"{self.cs.definition.parallel_failure_threshold:g}",
                ErrorCode.EXECUTION_FAILED,
                step=self.cs.id,
                output=output,
            )
        return output

    def _decided(self, pending: int) -> bool:
        if not self.cs.definition.cancel_remaining:
            return False
        return len(self.ok) >= self.need or len(self.ok) + pending < self.need

    async def _one(
        self, limit: asyncio.Semaphore, child: CompiledStep, rid: str, bound: dict[str, Any]
    ) -> None:
        async with limit:
            ok, err = await self.run_.run_step(child, rid, bound)
        if ok:
            self.ok.append(rid)
            self.results[rid] = self._output(child, rid)
        elif err is not None:
            self.failures.append(
                {"step_id": rid, "code": error_code(err).value, "message": message(err)}
            )

    def _output(self, child: CompiledStep, rid: str) -> Any:
        return self.run_.outputs.get(rid)


async def _ask(prompt: str, timeout: float) -> dict[str, Any]:
    decision = await inside.request_approval(prompt, timeout)
    return asdict(decision)


def _approval_step(step_id: str) -> Step:
    """An approval inside a durable run: a step (a task run named after the step id,
    its decision stored with it) that shows the form and takes the signal."""
    return _APPROVALS.setdefault(step_id, Step(_ask, StepSpec(name=step_id)))


_APPROVALS: dict[str, Step] = {}
