"""What a definition's steps do when they run: one :class:`Execution` per run.

The graph driver and scheduler decide *when* each top-level step runs (as soon as
its own dependencies have ended); the node they start is a :class:`StepNode`, which
asks the run's :class:`Execution` to carry the step out:

* skip it (``dependency_failed``, ``branch_not_taken``, ``dependencies_skipped``,
  ``condition_false``), or
* run it by type — ``action`` (one call of its bound step through the middleware
  stack: retries, timeout, breaker, limits; a Prefect task run named after the step
  id), ``conditional`` (pick a branch), ``parallel`` (children at most
  ``max_parallel_steps`` at once, a success threshold, optionally deciding early and
  cancelling the stragglers), ``loop`` (capped) or ``approval``;
* on failure run its ``error_handlers`` (the first that returns recovers it); a
  failure nothing recovers either lets the run go on (``continue_on_failure``) or
  stops it: the node raises, the scheduler (``fail_fast``) starts nothing more and
  the driver cancels what runs; then the ``rollback_actions`` of completed steps run
  in reverse completion order, each once, a failing one recorded while the others
  still run. A workflow timeout or a cancel rolls back the same way.

``data`` lives here, not in the graph's state: a node returns no update, so the
scheduler copies nothing per step, and an expression binds only the names it reads
(:class:`Scope`), so a step costs the same at step 10 and at step 10,000.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Mapping
from typing import Any

from beluga_flows.core.runnable import Runnable
from beluga_flows.definitions.compile import CompiledStep, error_code
from beluga_flows.definitions.kinds import StepKinds
from beluga_flows.definitions.records import ExecutionResult, StepRecord
from beluga_flows.definitions.state import Scope, _now, message
from beluga_flows.durable.live import CURRENT as DURABLE_RUN
from beluga_flows.durable.live import CancelRequested, StepStatus
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.graph import driver

__all__ = ["RUN", "Execution", "StepNode"]

RUN: contextvars.ContextVar[Execution] = contextvars.ContextVar("beluga_definition_run")


class StepNode(Runnable):
    """The graph node of a top-level step: the run's :class:`Execution` carries it out."""

    def __init__(self, step_id: str) -> None:
        self.name = step_id

    async def ainvoke(self, input: Any, **opts: Any) -> None:
        await RUN.get().run_node(self.name)


class Execution(StepKinds):
    """One run of a compiled definition: its ``data``, records and outcome."""

    async def run(self) -> ExecutionResult:
        """Drive the plan to its end, roll back if it did not complete."""
        self.loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        self._cancel = asyncio.Event()
        token = RUN.set(self)
        try:
            await self._drive()
        finally:
            RUN.reset(token)
            self.duration_s = time.monotonic() - self._started
        return self.result()

    async def _drive(self) -> None:
        assert self._cancel is not None
        driving = asyncio.ensure_future(driver.drive(self.plan.graph, self.engine, {}))
        stop = asyncio.ensure_future(self._cancel.wait())
        try:
            await asyncio.wait({driving, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            driving.cancel()
            stop.cancel()
            raise
        stop.cancel()
        if not driving.done():  # engine.cancel(): stop what runs, then roll back
            driving.cancel()
            await asyncio.gather(driving, return_exceptions=True)
            return await self._end("cancelled", None)
        try:
            driving.result()
        except CancelRequested:  # a durable run's cancel (WorkflowClient.cancel)
            await self._end("cancelled", None)
            raise
        except OrchestratorError as err:
            if err is self.failure:
                return await self._end("failed", None)
            status = "timeout" if err.code is ErrorCode.TIMEOUT else "failed"
            return await self._end(status, err)
        self.status = "completed"

    async def _end(self, status: str, err: OrchestratorError | None) -> None:
        self.status = status
        live = (StepStatus.RUNNING, StepStatus.WAITING, StepStatus.RETRYING)
        running = [sid for sid, r in self.records.items() if r.status in live]
        if err is not None:  # the run's own deadline (or a fault of no step)
            d = self.plan.definition
            text = (
                f"workflow {d.workflow_id!r} timed out after {d.timeout:g}s "
                f"(running: {', '.join(running) or 'nothing'})"
                if status == "timeout"
                else err.message
            )
            self.errors.append({"step_id": None, "code": err.code.value, "message": text})
        for sid in running:
            self._close(self.records[sid], StepStatus.CANCELLED)
        await self.rollback()

    def cancel(self) -> None:
        """Stop the run (it rolls back and ends ``cancelled``); callable from any thread."""
        if self._cancel is None or self.loop is None:
            return
        self.loop.call_soon_threadsafe(self._cancel.set)

    def result(self) -> ExecutionResult:
        """The outcome so far (the engine adds SLA figures and alerts)."""
        d = self.plan.definition
        return ExecutionResult(
            execution_id=self.execution_id,
            workflow_id=d.workflow_id,
            version=d.version,
            definition_hash=d.definition_hash,
            status=self.status,
            result=self.data,
            steps={sid: r.status for sid, r in self.records.items()},
            step_records=self.records,
            errors=self.errors,
            rollback_performed=bool(self.rolled_back),
            rolled_back=self.rolled_back,
            duration_s=self.duration_s,
        )

    # ---------------------------------------------------------------- a node

    async def run_node(self, step_id: str) -> None:
        """Carry out top-level step ``step_id``; raise when its failure stops the run."""
        cs = self.plan.steps[step_id]
        record = self.records[step_id]
        reason = self._skip_reason(cs)
        if reason is not None:
            self._skip(record, reason)
            return
        ok, err = await self.run_step(cs, step_id, {})
        if ok or err is None:
            return
        self.errors.append(
            {"step_id": step_id, "code": error_code(err).value, "message": message(err)}
        )
        if not cs.definition.continue_on_failure:
            self.failure = OrchestratorError(
                "definition",
                f"step {step_id!r} failed: {message(err)}",
                error_code(err),
                step=step_id,
            )
            raise self.failure

    def _skip_reason(self, cs: CompiledStep) -> str | None:
        if not cs.dependencies:
            return None
        deps = [self.records[d] for d in cs.dependencies]
        if any(r.status is StepStatus.FAILED and not r.recovered for r in deps):
            return "dependency_failed"
        for gate in cs.gates:
            chosen = self.branches.get(gate)
            if chosen is not None and cs.id not in chosen["next"]:
                return "branch_not_taken"
        if deps and all(r.status is StepStatus.SKIPPED for r in deps):
            return "dependencies_skipped"
        return None

    # ---------------------------------------------------------------- a step

    async def run_step(
        self, cs: CompiledStep, rid: str, bound: Mapping[str, Any]
    ) -> tuple[bool, BaseException | None]:
        """Run one step (or child) recorded as ``rid``: ``(True, None)`` when it
        completed or was recovered, ``(False, None)`` when skipped, ``(False, err)``
        when it failed."""
        record = self.records.get(rid)
        if record is None:
            record = self.records[rid] = StepRecord()
        scope = Scope(self, bound)
        try:
            if cs.guards and not all(self._truth(cs, g, scope, "condition") for g in cs.guards):
                self._skip(record, "condition_false")
                return False, None
            record.status = StepStatus.RUNNING
            record.started_at = _now()
            if cs.definition.type == "action":  # the common case, without a detour
                args, kwargs = self._arguments(cs, scope)
                assert cs.call is not None
                output, mapped = await self.call(cs.call, rid, record, args, kwargs), False
            else:
                output, mapped = await self._dispatch(cs, rid, record, scope)
            if not mapped:
                self._map_output(cs, rid, output, bound)
            self.outputs[rid] = output
        except asyncio.CancelledError:
            self._close(record, StepStatus.CANCELLED)
            raise
        except Exception as err:
            return await self._failed(cs, rid, record, err, bound)
        self._close(record, StepStatus.COMPLETED)
        if cs.rollbacks:
            self.completed.append((rid, cs))
        return True, None

    async def _dispatch(
        self, cs: CompiledStep, rid: str, record: StepRecord, scope: Scope
    ) -> tuple[Any, bool]:
        kind = cs.definition.type
        if kind == "conditional":
            return self._route(cs, scope), False
        if kind == "parallel":
            return await self._parallel(cs, rid, scope), False
        if kind == "loop":
            return await self._loop(cs, rid, record, scope)
        return await self._approval(cs, rid), False

    async def _failed(
        self,
        cs: CompiledStep,
        rid: str,
        record: StepRecord,
        err: BaseException,
        bound: Mapping[str, Any],
    ) -> tuple[bool, BaseException | None]:
        code = error_code(err)
        record.error = {"code": code.value, "message": message(err)}
        if record.started_at is None:
            record.started_at = _now()
        problem = {"step_id": rid, "code": code.value, "message": message(err)}
        for name, handler in cs.handlers:
            try:
                value = await self.call(
                    handler, f"handler-{rid}", StepRecord(), ({**self.data, "error": problem},), {}
                )
                self._map_output(cs, rid, value, bound)
                self.outputs[rid] = value
            except Exception as failed:
                record.error["message"] += f"; handler {name!r} failed: {message(failed)}"
                continue
            record.recovered = True
            self._close(record, StepStatus.FAILED)
            return True, None
        self._close(record, StepStatus.FAILED)
        return False, err

    # ---------------------------------------------------------------- rollback

    async def rollback(self) -> None:
        """The ``rollback_actions`` of every completed step, in reverse completion
        order, each called once with ``data``; a failure is recorded, the rest run.
        In a durable run each is a durable step (``rollback-<id>``): a run resumed
        after a crash mid-rollback does not undo a step twice. The cancel being
        handled is set aside meanwhile, or the rollbacks' own step boundaries would
        stop them."""
        live = DURABLE_RUN.get()
        pending = live is not None and live.cancel_requested
        if live is not None and pending:
            live.cancel_requested = False
        try:
            for rid, cs in reversed(self.completed):
                for name, step in cs.rollbacks:
                    try:
                        await self.call(
                            step, f"rollback-{rid}", StepRecord(), (dict(self.data),), {}
                        )
                    except Exception as err:
                        self.errors.append(
                            {
                                "step_id": rid,
                                "code": error_code(err).value,
                                "message": f"rollback action {name!r} failed: {message(err)}",
                            }
                        )
                self.rolled_back.append(rid)
        finally:
            if live is not None and pending:
                live.cancel_requested = True
