"""Inside a workflow run: signals, approvals, query handlers and compensations.

These are called from the workflow function itself, or from a step it runs (a
graph node, a chain step): there they belong to that step execution (see
:class:`~beluga_flows.durable.live.NodeScope`) — the node waits for its signal or
approval while independent branches go on. In a sync workflow function
they are plain calls; in an async one, ``wait_for_signal`` and ``request_approval``
return awaitables. Outside a workflow run they raise ``INVALID_STATE``.

Example::

    def order_flow(order_id: int) -> str:
        payment = charge(order_id)
        bf.compensate(lambda: refund(payment))
        decision = bf.request_approval(f"ship order {order_id}?", timeout=3600)
        return "shipped" if decision.approved else "held"
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import cloudpickle

from beluga_flows import _sync
from beluga_flows._validate import config_error, identifier
from beluga_flows.durable.live import NODE, current
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "BUILTIN_QUERIES",
    "Approval",
    "approval_data",
    "compensate",
    "query_handler",
    "report_progress",
    "request_approval",
    "wait_for_signal",
]

T = TypeVar("T")
BUILTIN_QUERIES = ("status", "result", "steps")


@dataclass(frozen=True)
class Approval:
    """A decision on :func:`request_approval` (the ``"approval"`` signal's mapping)."""

    approved: bool
    reviewer: str | None = None
    comment: str | None = None


def _dual(op: str, factory: Callable[[], Awaitable[T]]) -> Any:
    """Awaitable in async workflow code, a plain call in sync workflow code. Inside a
    step the wait belongs to its execution: it is cancelled when the step ends (a sync
    step abandoned at its timeout must not leave its approval or signal wait open)."""
    current(op)
    scope = NODE.get()
    work = factory if scope is None else functools.partial(_owned, scope.waits, factory)
    if _sync.in_running_loop():
        return work()
    return _sync.run_sync(work)


async def _owned(waits: set[asyncio.Task[Any]], factory: Callable[[], Awaitable[T]]) -> T:
    task = asyncio.current_task()
    if task is not None:
        waits.add(task)
    try:
        return await factory()
    finally:
        waits.discard(task)  # type: ignore[arg-type]


def wait_for_signal(name: str, timeout: float | None = None) -> Any:
    """The next ``name`` signal's data (``TIMEOUT`` after ``timeout`` seconds).

    Example::

        decision = bf.wait_for_signal("approve", timeout=3600)      # sync workflow
        decision = await bf.wait_for_signal("approve")              # async workflow
    """
    identifier("wait_for_signal", name, "signal name")
    scope = NODE.get()
    if scope is None:
        return _dual(
            "wait_for_signal", lambda: current("wait_for_signal").next_signal(name, timeout)
        )

    async def claim() -> Any:
        from beluga_flows.engine.prefect.approval import claim_signal

        return await claim_signal(scope, name, timeout)

    return _dual("wait_for_signal", claim)


def request_approval(prompt: str, timeout: float | None = None) -> Any:
    """Pause the run with an approval form in the Prefect UI; returns an :class:`Approval`.

    An ``"approval"`` signal (``wf.signal(..., "approval", {...})`` or the CLI) answers
    it too. ``TIMEOUT`` is raised inside the workflow after ``timeout`` seconds; catch
    it to take a default branch.

    Example::

        if bf.request_approval("refund over $500?", timeout=3600).approved: ...
    """

    async def ask() -> Approval:
        from beluga_flows.engine.prefect.approval import request_approval as pause_for_approval

        data = await pause_for_approval(current("request_approval"), prompt, timeout)
        return Approval(**data)

    return _dual("request_approval", ask)


def report_progress(percent: float, description: str | None = None) -> Any:
    """Show how far the run is (0-100) as a progress artifact in the Prefect UI.

    Example::

        bf.report_progress(50, "charged, waiting for approval")   # sync workflow
        await bf.report_progress(100)                              # async workflow
    """
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
        raise OrchestratorError(
            "report_progress", f"percent must be 0..100, got {percent!r}", ErrorCode.INVALID_INPUT
        )

    async def report() -> None:
        from beluga_flows.engine.prefect.approval import report_progress as publish

        await publish(current("report_progress"), float(percent), description)

    return _dual("report_progress", report)


def query_handler(name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Register a function answering ``wf.query(..., name, *args)`` on the live run.

    Example::

        @bf.query_handler("progress")
        def progress() -> int:
            return done
    """
    identifier("query_handler", name, "query name")
    if name in BUILTIN_QUERIES:
        raise config_error("query_handler", f"{name!r} is a built-in query")

    def register(fn: Callable[..., T]) -> Callable[..., T]:
        if not callable(fn):
            raise config_error("query_handler", f"expected a function, got {fn!r}")
        current("query_handler").queries[name] = fn
        return fn

    return register


def compensate(undo: Callable[[], Any]) -> None:
    """Register ``undo`` (zero arguments) for the step just completed: if the workflow
    fails or is cancelled, undos run in reverse order, each as a task run.

    Example::

        receipt = charge(order)
        bf.compensate(lambda: refund(receipt))
    """
    if not callable(undo):
        raise OrchestratorError(
            "compensate",
            f"expected a zero-argument callable, got {undo!r}",
            ErrorCode.INVALID_INPUT,
        )
    run = current("compensate")
    scope = NODE.get()
    if scope is None:
        run.compensations.append((run.last_step or "workflow", "body", undo))
        return
    # Stored with the step's result (a resumed run finds the step done and must
    # still be able to undo it): it must pickle, and that is checked now.
    try:
        cloudpickle.dumps(undo)
    except Exception as err:
        raise OrchestratorError(
            "compensate",
            f"a compensation registered inside step {scope.label!r} is stored with its "
            f"result and must pickle: {err}",
            ErrorCode.INVALID_INPUT,
        ) from err
    scope.undos.append(undo)


def approval_data(data: Any) -> dict[str, Any]:
    """An ``"approval"`` signal's data, checked (``INVALID_INPUT`` when malformed)."""
    ok = isinstance(data, Mapping) and isinstance(data.get("approved"), bool)
    extra = set(data) - {"approved", "reviewer", "comment"} if isinstance(data, Mapping) else set()
    texts = ok and all(
        data.get(k) is None or isinstance(data.get(k), str) for k in ("reviewer", "comment")
    )
    if not ok or extra or not texts:
        raise OrchestratorError(
            "signal",
            'an "approval" signal carries {"approved": bool, "reviewer": str, "comment": str}, '
            f"got {data!r}",
            ErrorCode.INVALID_INPUT,
        )
    return dict(data)
