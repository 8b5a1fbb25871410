"""The state of one definition run and the helpers every step type uses.

:class:`RunBase` holds a run's ``data``, records and signals, and knows how to
evaluate an expression over them (:class:`Scope`: only the names an expression
reads are resolved), call a bound step through the engine, and map a step's output
into ``data``. The step types build on it (:mod:`.kinds`), and the run's lifecycle
on those (:mod:`.runtime`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from beluga_flows.core import middleware
from beluga_flows.core.decorators import Step
from beluga_flows.definitions.compile import CompiledStep, DefinitionPlan
from beluga_flows.definitions.expressions import Expression, ExpressionError, identifiers
from beluga_flows.definitions.records import ATTEMPTS, StepRecord
from beluga_flows.durable.live import CURRENT as DURABLE_RUN
from beluga_flows.durable.live import StepStatus
from beluga_flows.engine import Engine
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["RunBase", "Scope", "message"]


class Scope(Mapping[str, Any]):
    """The variables an expression may read, resolved only when read: ``bound``
    (``result``, ``item``, ``index``, ``iteration``, ``error``) first, then ``data``,
    ``input`` and ``steps``, then each key of ``data``."""

    def __init__(self, run: RunBase, bound: Mapping[str, Any]) -> None:
        self.run = run
        self.bound = bound

    def __getitem__(self, name: str) -> Any:
        if name in self.bound:
            return self.bound[name]
        if name == "data":
            return self.run.data
        if name == "input":
            return self.run.input
        if name == "steps":
            return self.run.step_view()
        return self.run.data[name]

    def __contains__(self, name: object) -> bool:
        return name in self.bound or name in ("data", "input", "steps") or name in self.run.data

    def __iter__(self) -> Iterator[str]:
        yield from {*self.bound, "data", "input", "steps", *identifiers(self.run.data)}

    def __len__(self) -> int:
        return len(set(self))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RunBase:
    """A run's state and the helpers its steps share."""

    def __init__(
        self,
        plan: DefinitionPlan,
        engine: Engine,
        execution_id: str,
        input_data: Mapping[str, Any],
        approvals: Mapping[str, Any] | None = None,
    ) -> None:
        d = plan.definition
        self.plan = plan
        self.engine = engine
        self.execution_id = execution_id
        self.input = dict(input_data)
        self.data: dict[str, Any] = {**d.global_variables, **input_data}
        # A for_each child is a template: its runs are recorded as "<id>[<index>]".
        templates = {cs.children[0] for cs in plan.steps.values() if cs.for_each is not None}
        self.records: dict[str, StepRecord] = {
            sid: StepRecord() for sid in plan.steps if sid not in templates
        }
        self.branches: dict[str, dict[str, Any]] = {}
        self.completed: list[tuple[str, CompiledStep]] = []  # completion order
        self.outputs: dict[str, Any] = {}
        self.errors: list[dict[str, Any]] = []
        self.rolled_back: list[str] = []
        self.presets = dict(approvals or {})
        self.signals: dict[str, list[Any]] = {}
        self.failure: OrchestratorError | None = None
        self.status = "running"
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._cancel: asyncio.Event | None = None
        self._started = time.monotonic()
        self.duration_s = 0.0

    # ---------------------------------------------------------------- the run

    async def run_step(
        self, cs: CompiledStep, rid: str, bound: Mapping[str, Any]
    ) -> tuple[bool, BaseException | None]:
        """Run one step (see :meth:`.runtime.Execution.run_step`)."""
        raise NotImplementedError

    def step_view(self) -> dict[str, dict[str, Any]]:
        """``steps`` as expressions see it: ``{id: {"status", "attempts"}}``."""
        return {
            sid: {"status": str(r.status), "attempts": r.attempts}
            for sid, r in self.records.items()
        }

    def _arguments(self, cs: CompiledStep, scope: Scope) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if not cs.inputs:
            return (dict(self.data),), {}
        return (), {k: self._eval(cs, e, scope, f"input_mapping.{k}") for k, e in cs.inputs.items()}

    async def call(
        self,
        step: Step,
        label: str,
        record: StepRecord,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """One call of a bound step through the engine (a task run named ``label``),
        its attempts counted on ``record``."""
        if label != step.name and DURABLE_RUN.get() is not None:
            step = _labelled(step, label)  # a durable step is keyed by its name
        tokens = ATTEMPTS.set(record), middleware.RUN_LABEL.set(label)
        try:
            return await self.engine.run_step(step, args, kwargs)
        finally:
            ATTEMPTS.reset(tokens[0])
            middleware.RUN_LABEL.reset(tokens[1])

    def _map_output(
        self, cs: CompiledStep, rid: str, output: Any, bound: Mapping[str, Any]
    ) -> None:
        if cs.outputs:
            scope = Scope(self, {**bound, "result": output})
            values = {
                k: self._eval(cs, e, scope, f"output_mapping.{k}") for k, e in cs.outputs.items()
            }
            self.data.update(values)
        elif "index" not in bound:  # a for_each child's output is in its parent's results
            self.data[rid] = output

    # ---------------------------------------------------------------- signals

    def deliver(self, name: str, data: Any) -> None:
        """A signal for this run (``engine.signal``); callable from any thread."""
        if self.loop is None:
            self.signals.setdefault(name, []).append(data)
            return

        async def put() -> None:
            self.signals.setdefault(name, []).append(data)
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()

        asyncio.run_coroutine_threadsafe(put(), self.loop)

    async def next_signal(self, name: str, timeout: float, rid: str) -> Any:
        """The next ``name`` signal (``TIMEOUT`` after ``timeout`` seconds)."""
        assert self._changed is not None
        record = self.records[rid]
        record.status = StepStatus.WAITING
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: bool(self.signals.get(name)))
        except TimeoutError:
            raise OrchestratorError(
                "definition",
                f"step {rid!r} got no {name!r} signal within {timeout:g}s",
                ErrorCode.TIMEOUT,
                step=rid,
            ) from None
        finally:
            record.status = StepStatus.RUNNING
        return self.signals[name].pop(0)

    # ---------------------------------------------------------------- helpers

    def _eval(self, cs: CompiledStep, expr: Expression, scope: Scope, where: str) -> Any:
        try:
            return expr.evaluate(scope)
        except ExpressionError as err:
            raise OrchestratorError(
                "definition",
                f"step {cs.id!r} {where}: {err}",
                ErrorCode.INVALID_INPUT,
                step=cs.id,
            ) from None

    def _truth(self, cs: CompiledStep, expr: Expression, scope: Scope, where: str) -> bool:
        value = self._eval(cs, expr, scope, where)
        if not isinstance(value, bool):
            raise OrchestratorError(
                "definition",
                f"step {cs.id!r} {where}: {expr.source!r} gave {value!r}, not true or false",
                ErrorCode.INVALID_INPUT,
                step=cs.id,
            )
        return value

    def _skip(self, record: StepRecord, reason: str) -> None:
        record.skipped_reason = reason
        record.status = StepStatus.SKIPPED

    def _close(self, record: StepRecord, status: StepStatus) -> None:
        record.status = status
        record.ended_at = _now()
        if record.started_at is not None:
            record.duration_s = (record.ended_at - record.started_at).total_seconds()


def message(err: BaseException) -> str:
    """What an error says, without the ``orchestrator <op> [<code>]:`` prefix."""
    return err.message if isinstance(err, OrchestratorError) else str(err) or type(err).__name__


_LABELLED: weakref.WeakKeyDictionary[Step, dict[str, Step]] = weakref.WeakKeyDictionary()


def _labelled(step: Step, label: str) -> Step:
    """``step`` named ``label`` (``loop-3``, ``check[2]``): in a durable run a step's
    result is stored under a key made of its name, so each iteration and each
    ``for_each`` child keeps its own, whatever order parallel children finish in."""
    known = _LABELLED.setdefault(step, {})
    found = known.get(label)
    if found is None:
        found = known[label] = Step(step.fn, dataclasses.replace(step.spec, name=label))
    return found
