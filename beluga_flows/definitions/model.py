"""The file format of a declarative workflow (API.md §6), as pydantic v2 models.

Every model forbids unknown fields and is frozen: a definition is data to validate
and hash, not an object to mutate. Schema problems are all reported at once, each
with its path (``steps[2].parallel_failure_threshold``), in one ``INVALID_CONFIG``.
What the schema cannot say (ids that must exist, cycles, actions, expressions) is
checked by :func:`beluga_flows.definitions.compile.problems`.

Example::

    definition = bf.WorkflowDefinition.from_yaml("workflows/onboarding.yaml")
    definition = bf.WorkflowDefinition.from_dict({
        "workflow_id": "hello",
        "steps": [{"step_id": "greet", "action": "greet", "input_mapping": {"who": "name"}}],
    })
    schema = bf.WorkflowDefinition.json_schema()     # for editor completion
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "DEFAULT_STEP_TIMEOUT",
    "DEFAULT_WORKFLOW_TIMEOUT",
    "Branch",
    "ElseBranch",
    "RetryPolicyModel",
    "SLATargets",
    "StepDefinition",
    "StepType",
    "WorkflowDefinition",
    "path_of",
]

DEFAULT_STEP_TIMEOUT = 300.0
DEFAULT_WORKFLOW_TIMEOUT = 3600.0
MAX_SECONDS = 24 * 3600.0
StepType = Literal["action", "parallel", "loop", "conditional", "approval"]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
StepId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Unique in the whole definition, children included: letters, digits, _ . -",
    ),
]
Expr = Annotated[str, Field(min_length=1, description="A CEL expression")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicyModel(_Model):
    """:class:`~beluga_flows.RetryPolicy`'s fields; ``retry_on`` lists error-code values."""

    max_attempts: int = Field(3, ge=1, le=1000)
    initial_delay: float = Field(0.5, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    max_delay: float = Field(30.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    multiplier: float = Field(2.0, ge=1, le=1000, allow_inf_nan=False)
    jitter: float = Field(0.25, ge=0, le=1)
    retry_on: list[ErrorCode] | None = Field(
        None, description="Error codes to retry (default: the transient ones)"
    )


class SLATargets(_Model):
    """Duration targets: a breach alerts, it never stops the run."""

    max_duration_s: Seconds | None = None
    steps: dict[str, Seconds] = Field(default_factory=dict)


class Branch(_Model):
    """A conditional's branch: when ``if`` is true, the steps in ``then`` run."""

    if_: Expr = Field(alias="if")
    then: list[str]


class ElseBranch(_Model):
    """A conditional's fallback branch."""

    else_: list[str] = Field(alias="else")


class StepDefinition(_Model):
    """One step (children of a ``parallel`` step are full steps too)."""

    step_id: StepId
    name: str | None = None
    type: StepType = "action"
    action: str | None = Field(None, min_length=1)
    input_mapping: dict[str, Expr] = Field(default_factory=dict)
    output_mapping: dict[str, Expr] = Field(default_factory=dict)
    dependencies: list[str] = Field(default_factory=list)
    conditions: list[Expr | Branch | ElseBranch] = Field(
        default_factory=list,
        description="Guards (CEL, all must be true); on a conditional step, its branches",
    )
    retry_policy: RetryPolicyModel | None = None
    continue_on_failure: bool = False
    error_handlers: list[str] = Field(default_factory=list)
    rollback_actions: list[str] = Field(default_factory=list)
    parallel_steps: list[StepDefinition] = Field(default_factory=list)
    for_each: Expr | None = None
    parallel_failure_threshold: float = Field(0.5, ge=0, le=1)
    cancel_remaining: bool = False
    loop_condition: Expr | None = None
    loop_max_iterations: int = Field(100, ge=1, le=100_000)
    on_max_iterations: Literal["fail", "continue"] = "fail"
    prompt: str | None = None
    on_timeout: Literal["fail", "approve", "reject"] = "fail"
    timeout: Seconds = DEFAULT_STEP_TIMEOUT

    def walk(self) -> list[StepDefinition]:
        """This step and its children, depth first."""
        found = [self]
        for child in self.parallel_steps:
            found += child.walk()
        return found


class WorkflowDefinition(_Model):
    """A workflow written as data: validated before anything runs, then executed by
    :class:`~beluga_flows.WorkflowEngine` on the same core as graphs."""

    workflow_id: str = Field(min_length=1, max_length=255)
    name: str | None = None
    description: str | None = None
    version: str = "1.0"
    steps: list[StepDefinition] = Field(min_length=1)
    global_variables: dict[str, Any] = Field(default_factory=dict)
    timeout: Seconds = DEFAULT_WORKFLOW_TIMEOUT
    max_parallel_steps: int = Field(10, ge=1, le=10_000)
    retry_policy: RetryPolicyModel | None = None
    sla_targets: SLATargets | None = None
    tags: list[str] = Field(default_factory=list)

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str = "definition"
    ) -> WorkflowDefinition:
        """Validate a mapping (``INVALID_CONFIG`` listing every problem with its path)."""
        if not isinstance(data, Mapping):
            raise OrchestratorError(
                "definition",
                f"{source}: a workflow definition is a mapping, got {type(data).__name__}",
                ErrorCode.INVALID_CONFIG,
            )
        try:
            return cls.model_validate(dict(data))
        except pydantic.ValidationError as err:
            raise schema_error(source, err) from None

    @classmethod
    def from_yaml(cls, source: str | Path) -> WorkflowDefinition:
        """Load a YAML file (a ``str`` holding a newline is read as YAML text)."""
        if isinstance(source, str) and "\n" in source:
            text, where = source, "definition"
        else:
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as err:
                raise OrchestratorError(
                    "definition", f"{path}: cannot read: {err.strerror}", ErrorCode.INVALID_CONFIG
                ) from None
            where = str(path)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(err, "problem", None) or str(err)
            raise OrchestratorError(
                "definition", f"{where}: malformed YAML{at}: {problem}", ErrorCode.INVALID_CONFIG
            ) from None
        return cls.from_dict(data if data is not None else {}, source=where)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the file format (``workflows/schema.json``)."""
        schema = cls.model_json_schema(by_alias=True)
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://beluga-flows.dev/schemas/workflow-definition.json",
            **schema,
        }

    # ---------------------------------------------------------------- reading

    @cached_property
    def definition_hash(self) -> str:
        """sha256 of the canonical definition (defaults filled in, keys sorted)."""
        canonical = json.dumps(
            self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def draw_mermaid(self) -> str:
        """The definition as a mermaid flowchart: a shape per step type, children in a
        subgraph, dependencies as arrows, branches labelled with their condition. It
        needs no actions: the structure is enough."""
        lines = ["flowchart TD"]
        for s in self.steps:
            label = _SHAPES[s.type].format(f"{s.step_id}: {s.type}")
            lines.append(f"    {_node(s.step_id)}{label}")
            if s.parallel_steps:
                lines.append(f"    subgraph {_node(s.step_id)}_children [{s.step_id}]")
                lines += [f"        {_node(c.step_id)}[{c.step_id}]" for c in s.parallel_steps]
                lines.append("    end")
                lines += [
                    f"    {_node(s.step_id)} -.-> {_node(c.step_id)}" for c in s.parallel_steps
                ]
        for s in self.steps:
            lines += [f"    {_node(dep)} --> {_node(s.step_id)}" for dep in s.dependencies]
            for n, c in enumerate(s.conditions):
                if isinstance(c, str):
                    continue
                text = f"{n}: {c.if_}" if isinstance(c, Branch) else "else"
                text = text.replace('"', "'")
                targets = c.then if isinstance(c, Branch) else c.else_
                lines += [f'    {_node(s.step_id)} -- "{text}" --> {_node(t)}' for t in targets]
        return "\n".join(lines)

    def all_steps(self) -> list[StepDefinition]:
        """Every step, children included, depth first in file order."""
        found: list[StepDefinition] = []
        for s in self.steps:
            found += s.walk()
        return found


_SHAPES = {
    "action": "[{}]",
    "conditional": "{{{{{}}}}}",
    "parallel": "[/{}/]",
    "loop": "(({}))",
    "approval": "[[{}]]",
}


def _node(step_id: str) -> str:
    return "s_" + "".join(c if c.isalnum() else "_" for c in step_id)


def path_of(loc: tuple[Any, ...]) -> str:
    """``("steps", 2, "timeout")`` → ``steps[2].timeout``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def schema_error(source: str, err: pydantic.ValidationError) -> OrchestratorError:
    """One ``INVALID_CONFIG`` listing every schema problem with its path."""
    messages: dict[str, str] = {}
    for item in err.errors():
        loc = item["loc"]
        where = path_of(tuple(p for p in loc if p not in _UNION_TAGS)) or "(top level)"
        if any(p in _UNION_TAGS for p in loc):  # a condition: one message, not one per member
            messages[where] = (
                "expected a CEL expression (a string), an {if, then} branch or an {else} branch"
            )
        else:
            messages.setdefault(where, item["msg"])
    problems = [
        OrchestratorError("definition", f"{where}: {msg}", ErrorCode.INVALID_CONFIG)
        for where, msg in messages.items()
    ]
    made = OrchestratorError(
        "definition",
        f"{source}: {len(problems)} problem(s): " + "; ".join(p.message for p in problems),
        ErrorCode.INVALID_CONFIG,
    )
    made.problems = problems  # type: ignore[attr-defined]
    return made


_UNION_TAGS = frozenset({"str", "constrained-str", "Branch", "ElseBranch"})
