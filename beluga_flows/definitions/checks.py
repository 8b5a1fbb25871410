"""Validation before anything runs: every problem of a definition, each with its path.

:func:`problems` reports each as an :class:`~beluga_flows.OrchestratorError` with the
code API.md §6 gives it: duplicate ids and malformed steps ``INVALID_CONFIG``, a
dependency or branch target naming no step ``NOT_FOUND``, a dependency cycle
``WORKFLOW_DEADLOCK`` (naming a step of the cycle), an unknown action ``NOT_FOUND``
(naming the action and the step), an expression that does not compile
``INVALID_CONFIG`` (naming the step and the expression). Expressions are compiled
here, once; :mod:`.compile` takes them from the checker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from beluga_flows.definitions import actions as registry
from beluga_flows.definitions.expressions import Expression, ExpressionError, compile_expression
from beluga_flows.definitions.model import Branch, ElseBranch, StepDefinition, WorkflowDefinition
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["Actions", "Checker", "edges", "problems", "raise_problems", "targets_of"]

Actions = Mapping[str, Callable[..., Any]] | None


def targets_of(condition: Any) -> list[str]:
    """The steps a conditional's branch enables (none for a plain guard)."""
    if isinstance(condition, Branch):
        return condition.then
    if isinstance(condition, ElseBranch):
        return condition.else_
    return []


def _problem(path: str, message: str, code: ErrorCode) -> OrchestratorError:
    return OrchestratorError("definition", f"{path}: {message}", code, path=path)


def _paths(definition: WorkflowDefinition) -> list[tuple[str, StepDefinition, str | None]]:
    """(path, step, parent id) for every step, depth first."""
    out: list[tuple[str, StepDefinition, str | None]] = []

    def visit(prefix: str, s: StepDefinition, parent: str | None) -> None:
        out.append((prefix, s, parent))
        for i, child in enumerate(s.parallel_steps):
            visit(f"{prefix}.parallel_steps[{i}]", child, s.step_id)

    for i, s in enumerate(definition.steps):
        visit(f"steps[{i}]", s, None)
    return out


def problems(definition: WorkflowDefinition, actions: Actions = None) -> list[OrchestratorError]:
    """Every problem of ``definition`` (``[]`` when it would run)."""
    return Checker(definition, actions).run()


def raise_problems(found: list[OrchestratorError], source: str) -> None:
    """Raise one error carrying every problem (the first one's code), if any."""
    if not found:
        return
    first = found[0]
    listed = "; ".join(p.message for p in found)
    err = OrchestratorError(
        "definition", f"{source}: {len(found)} problem(s): {listed}", first.code
    )
    err.problems = found  # type: ignore[attr-defined]
    raise err


class Checker:
    def __init__(self, definition: WorkflowDefinition, actions: Actions) -> None:
        self.d = definition
        self.actions = actions
        self.found: list[OrchestratorError] = []
        self.where = _paths(definition)
        self.top = {s.step_id for s in definition.steps}
        self.expressions: dict[tuple[str, str], Expression] = {}

    @functools.cached_property
    def known(self) -> str:
        """The top-level step ids, for messages (sorted once, and only when needed)."""
        return ", ".join(sorted(self.top))

    def run(self) -> list[OrchestratorError]:
        self._ids()
        for path, s, parent in self.where:
            self._shape(path, s, parent)
            self._references(path, s, parent)
            self._actions(path, s)
            self._expressions(path, s)
        self._cycles()
        self._sla()
        return self.found

    def add(self, path: str, message: str, code: ErrorCode = ErrorCode.INVALID_CONFIG) -> None:
        self.found.append(_problem(path, message, code))

    def _ids(self) -> None:
        first: dict[str, str] = {}
        for path, s, _ in self.where:
            if s.step_id in first:
                self.add(
                    f"{path}.step_id",
                    f"duplicate step id {s.step_id!r} (first at {first[s.step_id]})",
                )
            else:
                first[s.step_id] = path

    def _shape(self, path: str, s: StepDefinition, parent: str | None) -> None:
        kind = s.type
        branches = [c for c in s.conditions if not isinstance(c, str)]
        if kind in ("action", "loop") and s.action is None:
            self.add(f"{path}.action", f"a {kind} step names its action (step {s.step_id!r})")
        if kind in ("parallel", "conditional", "approval") and s.action is not None:
            self.add(f"{path}.action", f"a {kind} step has no action of its own")
        if kind == "conditional":
            if not s.conditions:
                self.add(f"{path}.conditions", "a conditional step needs at least one branch")
            if any(isinstance(c, str) for c in s.conditions):
                self.add(f"{path}.conditions", "a conditional's conditions are {if, then} branches")
            elses = [i for i, c in enumerate(s.conditions) if isinstance(c, ElseBranch)]
            if len(elses) > 1 or (elses and elses[0] != len(s.conditions) - 1):
                self.add(f"{path}.conditions", "at most one {else} branch, and it comes last")
        elif branches:
            self.add(f"{path}.conditions", f"branches belong to conditional steps, not {kind}")
        if kind == "parallel":
            if not s.parallel_steps:
                self.add(f"{path}.parallel_steps", "a parallel step needs children")
            if s.for_each is not None and len(s.parallel_steps) != 1:
                self.add(f"{path}.for_each", "for_each runs exactly one child per item")
        else:
            if s.parallel_steps:
                self.add(f"{path}.parallel_steps", f"only parallel steps have children ({kind})")
            if s.for_each is not None:
                self.add(f"{path}.for_each", f"only parallel steps have for_each ({kind})")
        if kind == "loop" and s.loop_condition is None:
            self.add(f"{path}.loop_condition", "a loop step needs its loop_condition")
        if kind != "loop" and s.loop_condition is not None:
            self.add(f"{path}.loop_condition", f"only loop steps have a loop_condition ({kind})")
        if parent is not None and s.dependencies:
            self.add(
                f"{path}.dependencies",
                f"a child of parallel step {parent!r} starts with its siblings: no dependencies",
            )

    def _references(self, path: str, s: StepDefinition, parent: str | None) -> None:
        for i, dep in enumerate(s.dependencies):
            if dep not in self.top:
                self.add(
                    f"{path}.dependencies[{i}]",
                    f"unknown step {dep!r} (top-level steps: {self.known})",
                    ErrorCode.NOT_FOUND,
                )
            elif dep == s.step_id:
                self.add(
                    f"{path}.dependencies[{i}]",
                    f"step {dep!r} depends on itself",
                    ErrorCode.WORKFLOW_DEADLOCK,
                )
        for i, c in enumerate(s.conditions):
            targets = targets_of(c)
            for j, t in enumerate(targets):
                if t not in self.top:
                    key = "then" if isinstance(c, Branch) else "else"
                    self.add(
                        f"{path}.conditions[{i}].{key}[{j}]",
                        f"branch target {t!r} names no top-level step (steps: {self.known})",
                        ErrorCode.NOT_FOUND,
                    )
                elif parent is not None:
                    self.add(f"{path}.conditions[{i}]", "a parallel's child cannot route steps")

    def _actions(self, path: str, s: StepDefinition) -> None:
        named = [("action", s.action)] if s.action is not None else []
        named += [(f"error_handlers[{i}]", a) for i, a in enumerate(s.error_handlers)]
        named += [(f"rollback_actions[{i}]", a) for i, a in enumerate(s.rollback_actions)]
        for key, name in named:
            if registry.lookup(self.actions, name) is None:
                self.add(
                    f"{path}.{key}",
                    f"unknown action {name!r} in step {s.step_id!r}",
                    ErrorCode.NOT_FOUND,
                )

    def _expressions(self, path: str, s: StepDefinition) -> None:
        texts: list[tuple[str, str]] = []
        for i, c in enumerate(s.conditions):
            texts.append((f"conditions[{i}]", c if isinstance(c, str) else getattr(c, "if_", "")))
        texts += [(f"input_mapping.{k}", v) for k, v in s.input_mapping.items()]
        texts += [(f"output_mapping.{k}", v) for k, v in s.output_mapping.items()]
        texts += [(k, v) for k in ("for_each", "loop_condition") if (v := getattr(s, k))]
        for key, text in texts:
            if not text:
                continue  # an else branch
            try:
                self.expressions[(path, key)] = compile_expression(text)
            except ExpressionError as err:
                self.add(f"{path}.{key}", f"expression in step {s.step_id!r}: {err}")

    def _cycles(self) -> None:
        successors = edges(self.d)
        state: dict[str, int] = {}  # 1 visiting, 2 done
        reported: set[str] = set()
        for start in [s.step_id for s in self.d.steps]:
            if state.get(start):
                continue
            stack = [(start, iter(successors.get(start, ())))]
            state[start] = 1
            trail = [start]
            while stack:
                node, pending = stack[-1]
                nxt = next(pending, None)
                if nxt is None:
                    stack.pop()
                    trail.pop()
                    state[node] = 2
                elif state.get(nxt) == 1:
                    cycle = trail[trail.index(nxt) :]
                    if not reported & set(cycle):
                        reported |= set(cycle)
                        path = next(p for p, s, _ in self.where if s.step_id == nxt)
                        self.add(
                            f"{path}.dependencies",
                            f"dependency cycle through step {nxt!r}: " + " -> ".join([*cycle, nxt]),
                            ErrorCode.WORKFLOW_DEADLOCK,
                        )
                elif nxt not in state and nxt in successors:
                    state[nxt] = 1
                    trail.append(nxt)
                    stack.append((nxt, iter(successors.get(nxt, ()))))

    def _sla(self) -> None:
        if self.d.sla_targets is None:
            return
        every = {s.step_id for _, s, _ in self.where}
        for sid in self.d.sla_targets.steps:
            if sid not in every:
                self.add(
                    f"sla_targets.steps.{sid}",
                    f"SLA names unknown step {sid!r}",
                    ErrorCode.NOT_FOUND,
                )


def edges(definition: WorkflowDefinition) -> dict[str, list[str]]:
    """step → the top-level steps that wait for it (dependencies and branch targets)."""
    top = {s.step_id for s in definition.steps}
    edges: dict[str, list[str]] = {sid: [] for sid in top}
    for s in definition.steps:
        for dep in s.dependencies:
            if dep in top and dep != s.step_id and s.step_id not in edges[dep]:
                edges[dep].append(s.step_id)
        for c in s.conditions:
            targets = targets_of(c)
            for t in targets:
                if t in top and t not in edges[s.step_id]:
                    edges[s.step_id].append(t)
    return edges
