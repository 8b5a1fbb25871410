"""Declarative deployments: ``deployments/*.yaml`` files, validated, served or deployed.

One file declares one deployment of a flow (a ``@bf.flow``, a ``bf.Workflow`` or a
Prefect flow, or a workflow definition) found at ``entrypoint``::

    name: nightly-sales                     # the deployment's name
    entrypoint: flows/sales_report.py:sales_report
    description: The nightly CSV report
    parameters: {csv_path: flows/data/sales.csv}
    schedule: {cron: "0 2 * * *", timezone: Europe/Lisbon}   # or interval: 3600, or rrule: ...
    tags: [reports]
    work_pool: default                      # for `beluga-flows deploy` (workers)
    concurrency: 1                          # runs of this deployment at once

A workflow definition (API.md §6) is deployed by naming its YAML file, with the
Python files that register its actions; ``parameters`` are its input data::

    name: onboarding
    entrypoint: workflows/onboarding.yaml
    actions: [workflows/onboarding_actions.py]
    parameters: {customer_id: c-1}

Its runs are runs of the flow named after its ``workflow_id``: the importable
:data:`definition_workflow` (a durable :class:`~beluga_flows.Workflow` of the
:data:`run_definition` flow), which loads the file and its actions in the process
that runs it (a served runner or a worker) and executes it on Prefect. A scheduled
run is durable: its approval steps show their form in the UI, and
:class:`~beluga_flows.WorkflowClient` finds it by its run name.

Everything is checked before anything is registered: a bad file raises
``INVALID_CONFIG`` naming the file and the field, an entrypoint that does not import
raises with its import error, and nothing is half-registered. Prefect is imported
only when deployments are built (this is an edge module, like the CLI).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from beluga_flows.core.decorators import flow
from beluga_flows.durable.workflow import Workflow
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "RUN_DEFINITION_ENTRYPOINT",
    "DeploymentFile",
    "Schedule",
    "build",
    "import_actions",
    "is_definition",
    "load",
    "prefect_flow_of",
    "definition_workflow",
    "run_definition",
]

DEFINITION_SUFFIXES = (".yaml", ".yml")
# What a runner or worker imports for a definition's deployment: beluga_flows itself.
RUN_DEFINITION_ENTRYPOINT = "beluga_flows.tools.deploy:definition_workflow.prefect_flow"


class Schedule(pydantic.BaseModel):
    """Exactly one of ``cron``, ``interval`` (seconds) or ``rrule``, in ``timezone``."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    cron: str | None = None
    interval: float | None = pydantic.Field(default=None, gt=0)
    rrule: str | None = None
    timezone: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        kinds = [k for k in ("cron", "interval", "rrule") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of cron, interval, rrule (got {kinds or 'none'})")
        if self.cron is not None:
            from prefect.client.schemas.schedules import CronSchedule

            try:
                CronSchedule(cron=self.cron)
            except pydantic.ValidationError:
                raise ValueError(f"not a cron expression: {self.cron!r}") from None
        if self.timezone is not None:
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {self.timezone!r}") from None
        return self


class DeploymentFile(pydantic.BaseModel):
    """One ``deployments/*.yaml`` file."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = pydantic.Field(min_length=1, max_length=255)
    entrypoint: str = pydantic.Field(pattern=r"^([^:]+\.py:[A-Za-z_][\w.]*|[^:]+\.ya?ml)$")
    actions: list[str] = []
    description: str | None = None
    parameters: dict[str, Any] = {}
    schedule: Schedule | None = None
    tags: list[str] = []
    work_pool: str | None = None
    concurrency: int | None = pydantic.Field(default=None, ge=1)
    paused: bool = False

    @pydantic.field_validator("actions")
    @classmethod
    def _actions_of_a_definition(cls, value: list[str], info: pydantic.ValidationInfo) -> list[str]:
        entrypoint = info.data.get("entrypoint")
        if value and entrypoint is not None and not is_definition(entrypoint):
            raise ValueError(
                f"only a workflow definition entrypoint (FILE.yaml) takes actions, not {entrypoint}"
            )
        if bad := [a for a in value if not a.endswith(".py")]:
            raise ValueError(f"actions are Python files (FILE.py), got {bad[0]!r}")
        return value


def is_definition(entrypoint: str) -> bool:
    """Whether ``entrypoint`` names a workflow definition file rather than ``FILE.py:FLOW``."""
    return entrypoint.endswith(DEFINITION_SUFFIXES)


def import_actions(paths: Iterable[str], *, what: str = "--actions") -> None:
    """Import each Python file (once per process, like a ``FILE:NAME`` target) so the
    actions it registers (``@bf.action``) are known: a missing file is ``NOT_FOUND``,
    one that does not import ``INVALID_CONFIG`` naming ``what`` and the file."""
    from beluga_flows.tools.targets import load_target

    for path in paths:
        if not path.endswith(".py"):
            raise OrchestratorError(
                "cli", f"{what} {path}: not a Python file (FILE.py)", ErrorCode.INVALID_INPUT
            )
        load_target(f"{path}:__name__", what=f"{what} {path}")


@dataclass(frozen=True)
class Loaded:
    """A validated file and where it came from."""

    path: Path
    spec: DeploymentFile


def _config_error(path: Path, err: pydantic.ValidationError) -> OrchestratorError:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(file)"
    return OrchestratorError(
        "deploy", f"{path}: {where}: {first['msg']}", ErrorCode.INVALID_CONFIG, field=where
    )


def files(paths: list[str] | None, default: str = "deployments") -> list[Path]:
    """The YAML files named by ``paths`` (files or folders; default ``deployments/``)."""
    found: list[Path] = []
    for raw in paths or [default]:
        path = Path(raw)
        if path.is_dir():
            found += sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        elif path.is_file():
            found.append(path)
        else:
            raise OrchestratorError("deploy", f"no such file or folder: {raw}", ErrorCode.NOT_FOUND)
    if not found:
        raise OrchestratorError("deploy", f"no deployment files in {paths}", ErrorCode.NOT_FOUND)
    return found


def load(paths: list[str] | None = None) -> list[Loaded]:
    """Read and validate every file; the first bad one raises ``INVALID_CONFIG``."""
    loaded = []
    for path in files(paths):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise OrchestratorError(
                "deploy", f"{path}: not valid YAML: {err}", ErrorCode.INVALID_CONFIG
            ) from err
        try:
            loaded.append(Loaded(path, DeploymentFile.model_validate(data)))
        except pydantic.ValidationError as err:
            raise _config_error(path, err) from None
    names = [item.spec.name for item in loaded]
    if duplicate := next((n for n in names if names.count(n) > 1), None):
        raise OrchestratorError(
            "deploy", f"two files declare deployment {duplicate!r}", ErrorCode.INVALID_CONFIG
        )
    return loaded


def prefect_flow_of(obj: Any, where: str) -> tuple[Any, str]:
    """The Prefect flow behind ``obj`` and the attribute path a runner imports."""
    from prefect import Flow as PrefectFlow

    from beluga_flows.core.decorators import Flow
    from beluga_flows.durable.workflow import Workflow

    if isinstance(obj, Workflow):
        return obj.prefect_flow, ".prefect_flow"
    if isinstance(obj, Flow):
        return obj.to_prefect(), ".prefect_flow"
    if isinstance(obj, PrefectFlow):
        return obj, ""
    raise OrchestratorError(
        "deploy",
        f"{where} is not a flow (a @bf.flow, bf.Workflow or Prefect flow): {obj!r}",
        ErrorCode.INVALID_CONFIG,
    )


def _schedules(schedule: Schedule | None) -> list[Any] | None:
    if schedule is None:
        return None
    from prefect.schedules import Cron, Interval, RRule

    tz = schedule.timezone
    if schedule.cron is not None:
        return [Cron(schedule.cron, timezone=tz)]
    if schedule.interval is not None:
        return [Interval(schedule.interval, timezone=tz)]
    assert schedule.rrule is not None
    return [RRule(schedule.rrule, timezone=tz)]


def build(loaded: list[Loaded], *, served: bool = False, work_pool: str | None = None) -> list[Any]:
    """Prefect ``RunnerDeployment``s for ``loaded``; every entrypoint is imported first.
    ``served`` deployments run in this process's runner, so they take no work pool."""
    from prefect.deployments.runner import RunnerDeployment

    from beluga_flows.tools.targets import load_target

    built = []
    for item in loaded:
        spec = item.spec
        pool = None if served else work_pool or spec.work_pool
        common: dict[str, Any] = {
            "name": spec.name,
            "schedules": _schedules(spec.schedule),
            "description": spec.description,
            "tags": spec.tags,
            "concurrency_limit": spec.concurrency,
            "paused": spec.paused,
            "work_pool_name": pool,
        }
        if is_definition(spec.entrypoint):
            definition, parameters = _definition(item)
            d_tags = ["beluga:definition", f"workflow:{definition.workflow_id}"]
            d_tags += [f"version:{definition.version}", *definition.tags]
            built.append(
                RunnerDeployment.from_entrypoint(
                    RUN_DEFINITION_ENTRYPOINT,
                    flow_name=definition.workflow_id,  # as execute names its flow
                    parameters=parameters,
                    **{
                        **common,
                        "description": spec.description or definition.description,
                        "tags": list(dict.fromkeys([*spec.tags, *d_tags])),
                    },
                )
            )
            continue
        obj = load_target(spec.entrypoint, what=f"{item.path}: entrypoint {spec.entrypoint}")
        _, attribute = prefect_flow_of(obj, f"{item.path}: entrypoint {spec.entrypoint}")
        path, _, name = spec.entrypoint.rpartition(":")
        built.append(
            RunnerDeployment.from_entrypoint(
                f"{Path(path).resolve()}:{name}{attribute}", parameters=spec.parameters, **common
            )
        )
    return built


def _definition(item: Loaded) -> tuple[Any, dict[str, Any]]:
    """Check a definition deployment (its file, its actions, the definition itself) and
    give the definition and :data:`run_definition`'s parameters."""
    from beluga_flows.definitions.engine import WorkflowEngine
    from beluga_flows.definitions.model import WorkflowDefinition

    spec = item.spec

    def bad(field: str, message: str) -> OrchestratorError:
        return OrchestratorError(
            "deploy", f"{item.path}: {field}: {message}", ErrorCode.INVALID_CONFIG, field=field
        )

    if not Path(spec.entrypoint).is_file():
        raise bad("entrypoint", f"no such file: {spec.entrypoint}")
    if missing := [a for a in spec.actions if not Path(a).is_file()]:
        raise bad("actions", f"no such file: {missing[0]}")
    import_actions(spec.actions, what=f"{item.path}: actions:")
    try:
        definition = WorkflowDefinition.from_yaml(spec.entrypoint)
    except OrchestratorError as err:
        raise bad("entrypoint", err.message) from None
    if problems := WorkflowEngine().validate(definition):
        listed = "; ".join(p.message for p in problems)
        raise bad("entrypoint", f"{spec.entrypoint}: {len(problems)} problem(s): {listed}")
    parameters = {
        "definition": str(Path(spec.entrypoint).resolve()),
        "actions": [str(Path(a).resolve()) for a in spec.actions],
        "input_data": spec.parameters,
    }
    return definition, parameters


@flow(name="run-definition")
async def run_definition(
    definition: str, actions: list[str] | None = None, input_data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the workflow definition file ``definition`` on Prefect with ``input_data``,
    after importing the ``actions`` files; the run fails when the execution does not
    complete (with the code of its first error). What a definition's deployment runs."""
    from beluga_flows.definitions.engine import WorkflowEngine
    from beluga_flows.definitions.model import WorkflowDefinition

    import_actions(actions or [], what="actions:")
    loaded = WorkflowDefinition.from_yaml(definition)
    result = await WorkflowEngine(provider="prefect").aexecute(loaded, input_data or {})
    if result.status != "completed":
        first = result.errors[0] if result.errors else {}
        raise OrchestratorError(
            "definition",
            f"{loaded.workflow_id} {result.status}: {first.get('message', 'no error recorded')}",
            first.get("code") or ErrorCode.EXECUTION_FAILED,
        )
    summary: dict[str, Any] = result.to_dict()
    return summary


# Deployed definitions run durably: a scheduled run shows its approval forms in the UI,
# takes signals, cancels with rollback and resumes (its workflow id is its run name).
definition_workflow = Workflow(run_definition)
