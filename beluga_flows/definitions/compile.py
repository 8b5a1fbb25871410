"""Validation and compilation: a definition becomes a frozen :class:`DefinitionPlan`.

:func:`problems` reports *every* problem with its path, each an
:class:`~beluga_flows.OrchestratorError` with the code API.md §6 gives it: duplicate
ids and malformed steps ``INVALID_CONFIG``, a dependency or branch target naming no
step ``NOT_FOUND``, a dependency cycle ``WORKFLOW_DEADLOCK`` (naming a step of the
cycle), an unknown action ``NOT_FOUND`` (naming the action and the step), an
expression that does not compile ``INVALID_CONFIG`` (naming the step and the
expression). Expressions are compiled here, once.

:func:`compile_definition` turns a valid definition into a :class:`DefinitionPlan`:
its top-level steps are the nodes of a graph :class:`~beluga_flows.graph.plan.Plan`
(dependencies and conditional branches are its plain edges; ``fail_fast``; at most
``max_parallel_steps`` running), so the graph scheduler decides what starts when —
each step as soon as its own dependencies have ended, never a wave at a time — and
the graph driver carries it out through the one middleware stack. Each action is
bound to a step named after the step id, with the step's retry policy and timeout.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from beluga_flows.core.decorators import Step, StepSpec
from beluga_flows.core.runnable import Runnable
from beluga_flows.definitions import actions as registry
from beluga_flows.definitions import records
from beluga_flows.definitions.checks import Actions, Checker, edges, raise_problems
from beluga_flows.definitions.expressions import Expression
from beluga_flows.definitions.model import (
    Branch,
    ElseBranch,
    RetryPolicyModel,
    StepDefinition,
    WorkflowDefinition,
)
from beluga_flows.errors import ErrorCode, OrchestratorError, is_retryable
from beluga_flows.graph.plan import Plan, compile_plan
from beluga_flows.resilience.retry import RetryPolicy

__all__ = [
    "CompiledStep",
    "DefinitionPlan",
    "compile_definition",
    "error_code",
]


@dataclass(frozen=True)
class CompiledStep:
    """One step, ready to run: its expressions compiled, its action bound."""

    definition: StepDefinition
    path: str  # "steps[2]" or "steps[2].parallel_steps[0]"
    guards: tuple[Expression, ...] = ()
    branches: tuple[tuple[Expression | None, tuple[str, ...]], ...] = ()  # None: else
    inputs: Mapping[str, Expression] = field(default_factory=dict)
    outputs: Mapping[str, Expression] = field(default_factory=dict)
    for_each: Expression | None = None
    loop_condition: Expression | None = None
    call: Step | None = None
    handlers: tuple[tuple[str, Step], ...] = ()
    rollbacks: tuple[tuple[str, Step], ...] = ()
    children: tuple[str, ...] = ()
    gates: tuple[str, ...] = ()  # conditionals with this step in a branch
    dependencies: tuple[str, ...] = ()  # what it waits for (gates included)

    @property
    def id(self) -> str:
        """The step id."""
        return self.definition.step_id


@dataclass(frozen=True)
class DefinitionPlan:
    """A validated definition: its steps compiled, its graph plan built."""

    definition: WorkflowDefinition
    steps: Mapping[str, CompiledStep]  # every step, children included
    top: tuple[str, ...]
    graph: Plan

    def draw_mermaid(self) -> str:
        """The definition as a mermaid flowchart (``WorkflowDefinition.draw_mermaid``)."""
        return self.definition.draw_mermaid()


# ---------------------------------------------------------------- compilation


def error_code(err: BaseException) -> ErrorCode:
    """The code a step failure is reported and retried by (a plain exception from an
    action is ``EXECUTION_FAILED``)."""
    return err.code if isinstance(err, OrchestratorError) else ErrorCode.EXECUTION_FAILED


def retry_policy(model: RetryPolicyModel | None) -> RetryPolicy | None:
    """A definition's retry policy: only transient errors are retried unless
    ``retry_on`` lists the codes to retry."""
    if model is None or model.max_attempts == 1:
        return None
    codes = frozenset(model.retry_on) if model.retry_on is not None else None
    return RetryPolicy(
        max_attempts=model.max_attempts,
        initial_delay=model.initial_delay,
        max_delay=model.max_delay,
        multiplier=model.multiplier,
        jitter=model.jitter,
        retry_on=functools.partial(_retry_on, codes) if codes is not None else is_retryable,
    )


def _retry_on(codes: frozenset[ErrorCode], err: BaseException) -> bool:
    return error_code(err) in codes


def bind(
    fn: Callable[..., Any], name: str, *, retry_policy: RetryPolicy | None, timeout: float
) -> Step:
    """``fn`` (a function or a ``@bf.step``) as the step ``name`` that runs one step of a
    definition. A ``@bf.step`` keeps its own policies where the definition gives none
    (its breaker, limits and tags always). Each attempt is counted on the running
    step's record, and its timeout is per attempt: a sync action is abandoned in its
    thread at the deadline, an async one is cancelled at its next ``await`` on the
    run's own loop (so it may share events and clients with the rest of the run)."""
    base = fn if isinstance(fn, Step) else None
    target = base.fn if base is not None else fn
    spec = base.spec if base is not None else StepSpec(name=name)
    timeout = spec.timeout or timeout
    is_async = inspect.iscoroutinefunction(target)
    spec = dataclasses.replace(
        spec,
        name=name,
        retry_policy=retry_policy or spec.retry_policy,
        timeout=None if is_async else timeout,
    )
    return Step(records.counted(target, name, timeout if is_async else None), spec)


def compile_definition(
    definition: WorkflowDefinition, actions: Actions, node: Callable[[str], Runnable]
) -> DefinitionPlan:
    """Validate (raising one error listing every problem) and compile ``definition``;
    ``node(step_id)`` makes the graph node that runs a top-level step."""
    checker = Checker(definition, actions)
    raise_problems(checker.run(), f"workflow {definition.workflow_id!r}")
    gates: dict[str, list[str]] = {}
    for s in definition.steps:
        for c in s.conditions:
            if isinstance(c, Branch | ElseBranch):
                for t in c.then if isinstance(c, Branch) else c.else_:
                    if s.step_id not in gates.setdefault(t, []):
                        gates[t].append(s.step_id)
    steps = {
        s.step_id: _compiled(definition, path, s, checker, actions, tuple(gates.get(s.step_id, ())))
        for path, s, _ in checker.where
    }
    top = tuple(s.step_id for s in definition.steps)
    successors = edges(definition)
    graph = compile_plan(
        name=definition.workflow_id,
        nodes={sid: node(sid) for sid in top},
        edges=[(src, dst) for src, dsts in successors.items() for dst in dsts],
        routes=(),
        entry=[sid for sid in top if not steps[sid].dependencies],
        finish=(),
        max_workers=definition.max_parallel_steps,
        parallel=True,
        max_iterations=1,
        reducers={},
        timeout=definition.timeout,
        fail_fast=True,
        site="definition.step",
    )
    return DefinitionPlan(definition, MappingProxyType(steps), top, graph)


def _compiled(
    definition: WorkflowDefinition,
    path: str,
    s: StepDefinition,
    checker: Checker,
    actions: Actions,
    gates: tuple[str, ...],
) -> CompiledStep:
    expr = checker.expressions

    def found(name: str) -> Callable[..., Any]:
        fn = registry.lookup(actions, name)
        assert fn is not None  # checked
        return fn

    policy = retry_policy(s.retry_policy or definition.retry_policy)
    call = None
    if s.action is not None:
        call = bind(found(s.action), s.step_id, retry_policy=policy, timeout=s.timeout)
    branches = tuple(
        (expr[(path, f"conditions[{i}]")], tuple(c.then))
        if isinstance(c, Branch)
        else (None, tuple(c.else_))
        for i, c in enumerate(s.conditions)
        if isinstance(c, Branch | ElseBranch)
    )
    return CompiledStep(
        definition=s,
        path=path,
        guards=tuple(
            expr[(path, f"conditions[{i}]")]
            for i, c in enumerate(s.conditions)
            if isinstance(c, str)
        ),
        branches=branches,
        inputs=MappingProxyType({k: expr[(path, f"input_mapping.{k}")] for k in s.input_mapping}),
        outputs=MappingProxyType(
            {k: expr[(path, f"output_mapping.{k}")] for k in s.output_mapping}
        ),
        for_each=expr.get((path, "for_each")),
        loop_condition=expr.get((path, "loop_condition")),
        call=call,
        handlers=tuple(
            (a, bind(found(a), f"handler-{s.step_id}", retry_policy=None, timeout=s.timeout))
            for a in s.error_handlers
        ),
        rollbacks=tuple(
            (a, bind(found(a), f"rollback-{s.step_id}", retry_policy=None, timeout=s.timeout))
            for a in s.rollback_actions
        ),
        children=tuple(c.step_id for c in s.parallel_steps),
        gates=gates,
        dependencies=tuple(dict.fromkeys([*s.dependencies, *gates])),
    )
