"""What a definition's run reports: :class:`StepRecord` and :class:`ExecutionResult`.

Plain frozen-at-the-end values (``to_dict()`` gives JSON), plus the one piece of
shared bookkeeping the bound actions use: :data:`ATTEMPTS`, the record of the step
being run, on which each attempt of its action counts itself (in whatever thread or
task run the attempt executes).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic_core import to_jsonable_python

from beluga_flows.definitions.deadlines import deadlines
from beluga_flows.durable.live import StepStatus
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "ATTEMPTS",
    "ExecutionResult",
    "StepRecord",
    "counted",
    "finished_result",
    "outcome_error",
]


@dataclass
class StepRecord:
    """How one step (or one ``for_each`` child, ``"<child>[<index>]"``) went."""

    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    duration_s: float | None = None
    error: dict[str, str] | None = None
    skipped_reason: str | None = None
    recovered: bool = False
    iterations: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (times as ISO 8601)."""
        out = asdict(self)
        out["status"] = str(self.status)
        for key in ("started_at", "ended_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one execution of a :class:`~beluga_flows.WorkflowDefinition`.

    ``status`` is ``completed``, ``failed``, ``timeout`` or ``cancelled``; the run's
    own failures are reported here, never raised. ``result`` is the final ``data``.
    """

    execution_id: str
    workflow_id: str
    version: str
    definition_hash: str
    status: str
    result: dict[str, Any]
    steps: dict[str, StepStatus]
    step_records: dict[str, StepRecord]
    errors: list[dict[str, Any]] = field(default_factory=list)
    rollback_performed: bool = False
    rolled_back: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    sla: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        """Whether the run completed."""
        return self.status == "completed"

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-able: values in ``result`` that JSON has no type for
        (dates, decimals, bytes, sets, dataclasses, models) in their JSON form, any
        other object as its ``repr``."""
        made: dict[str, Any] = to_jsonable_python(
            {
                "execution_id": self.execution_id,
                "workflow_id": self.workflow_id,
                "version": self.version,
                "definition_hash": self.definition_hash,
                "status": self.status,
                "result": self.result,
                "steps": {k: str(v) for k, v in self.steps.items()},
                "step_records": {k: r.to_dict() for k, r in self.step_records.items()},
                "errors": list(self.errors),
                "rollback_performed": self.rollback_performed,
                "rolled_back": list(self.rolled_back),
                "duration_s": self.duration_s,
                "sla": self.sla,
                "alerts": self.alerts,
            },
            fallback=repr,
        )
        return made


# The record of the step whose action is being called (set by the runtime per call).
ATTEMPTS: contextvars.ContextVar[StepRecord] = contextvars.ContextVar("beluga_definition_record")


def counted(fn: Callable[..., Any], name: str, timeout: float | None) -> Callable[..., Any]:
    """``fn`` counting each attempt on :data:`ATTEMPTS`; an async ``fn`` bounded by
    ``timeout`` per attempt (``TIMEOUT``), cancelled cooperatively at its next
    ``await`` (:mod:`.deadlines`: one loop timer for all attempts)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def attempt_async(*args: Any, **kwargs: Any) -> Any:
            _count()
            if timeout is None:
                return await fn(*args, **kwargs)
            clock = deadlines()
            entry = clock.add(timeout)
            try:
                return await fn(*args, **kwargs)
            except asyncio.CancelledError:
                if not entry.fired or entry.task is None:
                    raise  # somebody else's cancel
                entry.task.uncancel()
                raise OrchestratorError(
                    "step", f"{name!r} timed out after {timeout:g}s", ErrorCode.TIMEOUT, step=name
                ) from None
            finally:
                clock.done(entry)

        return attempt_async

    @functools.wraps(fn)
    def attempt(*args: Any, **kwargs: Any) -> Any:
        _count()
        return fn(*args, **kwargs)

    return attempt


def _count() -> None:
    record = ATTEMPTS.get(None)
    if record is not None:
        record.attempts += 1


def outcome_error(workflow_id: str, result: ExecutionResult) -> OrchestratorError:
    """The error a run that did not complete ends its flow run with (shown Failed in
    the UI, its code in the state message); it carries the whole result."""
    first = result.errors[0] if result.errors else {"code": "execution_failed", "message": ""}
    code = ErrorCode.TASK_CANCELED if result.status == "cancelled" else ErrorCode(first["code"])
    return OrchestratorError(
        "definition",
        f"{workflow_id} {result.status}: {first['message']}",
        code,
        execution_result=result,
    )


def finished_result(err: OrchestratorError) -> ExecutionResult:
    """The result a run that did not complete ended with (:func:`outcome_error`); any
    other error is raised again."""
    finished = getattr(err, "execution_result", None)
    if not isinstance(finished, ExecutionResult):
        raise err
    return finished
