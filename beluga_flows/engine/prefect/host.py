"""Workflow runs on Prefect, seen from inside: the flow body, its compensations,
and the in-process host. Part of the Prefect adapter.

The body of a workflow's flow run (:func:`host_run`) sets up a
:class:`~beluga_flows.durable.live.LiveRun`, records this process as the owner, hands
the run to its loop's watcher (:mod:`.watch`: signals, queries, cancel and
terminate requests) and runs the user's function:

* cancel → compensations run in reverse, each a visible task run stored under its
  durable key (at most once per execution); the run ends Cancelled. Failure → the
  same, then the error is re-raised (compensation failures reported on it).
  Terminate → nothing more runs, and the body *returns* the same Cancelled state,
  so the engine's final proposal cannot overwrite it with Completed;
* a resumed run whose predecessor was compensating, or that inherits a pending
  cancel, *rolls back*: it replays only what was recorded, then compensates;
* as it ends, the run records its query handlers' answers.
Retries of the workflow are done here, not by Prefect: compensations must run once,
after the last attempt, and each attempt replays the completed steps from storage.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import functools
import threading
import uuid
import weakref
from typing import Any

from prefect import Flow as PrefectFlow
from prefect import Task as PrefectTask
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.context import FlowRunContext
from prefect.flow_engine import run_flow_async
from prefect.logging import get_logger
from prefect.states import Cancelled, Crashed
from prefect.utilities.annotations import quote

from beluga_flows import telemetry
from beluga_flows.core import middleware
from beluga_flows.core.specs import FlowLike
from beluga_flows.durable.live import (
    ATTEMPT,
    CURRENT,
    CancelRequested,
    LiveRun,
    RollbackStop,
    Terminated,
)
from beluga_flows.engine import use_engine  # steps in a workflow: Prefect task runs
from beluga_flows.engine.prefect import messages, runs, watch
from beluga_flows.engine.prefect.serve import deployment_id, serve  # for the workflow API
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["Host", "deployment_id", "host", "host_run", "serve", "workflow_flow"]

_log = get_logger("beluga_flows.workflow")
_FLOWS: weakref.WeakKeyDictionary[FlowLike, PrefectFlow[..., Any]] = weakref.WeakKeyDictionary()


def workflow_flow(name: str, flow: FlowLike) -> PrefectFlow[..., Any]:
    """The Prefect flow behind a workflow (built once per ``Flow``, kept weakly)."""
    cached = _FLOWS.get(flow)
    if cached is not None:
        return cached

    async def body(*args: Any, **kwargs: Any) -> Any:
        return await host_run(flow, args, kwargs)

    functools.update_wrapper(body, flow.fn)
    pf: PrefectFlow[..., Any] = PrefectFlow(
        fn=body,
        name=name,
        description=flow.spec.description,
        persist_result=True,  # get_result from any process, resume after a crash
        validate_parameters=False,
    )
    _FLOWS[flow] = pf
    return pf


# ---------------------------------------------------------------- the body


async def host_run(flow: FlowLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run one workflow execution inside its flow run (see the module docstring)."""
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    fr = ctx.flow_run
    identity = (fr.context or {}).get("beluga", {})
    run = LiveRun(
        workflow_id=str(identity.get("workflow_id", fr.name)),
        run_id=str(fr.id),
        execution=str(identity.get("execution", fr.id)),
        rollback=identity.get("rollback"),
        resumed=bool(identity.get("resumed")),
    )
    async with get_client() as client:
        await client.update_flow_run_labels(fr.id, runs.owner_labels())
        if "workflow_id" not in identity:  # a scheduled run: its name is its workflow id
            await _adopt(client, fr, run)
    token = CURRENT.set(run)
    host.runs[run.run_id] = run
    attrs = {"workflow.id": run.workflow_id}
    try:
        with use_engine("prefect"):
            async with telemetry.execution("workflow", flow.spec.name, attrs=attrs):
                result = await _supervise(flow, run, fr, args, kwargs)
    finally:
        CURRENT.reset(token)
        host.runs.pop(run.run_id, None)
        watch.unwatch(run)
        await _record_queries(run)
    if isinstance(result, State):
        return result
    # A terminate that landed after the last step: keep its state, not Completed.
    async with get_client() as client:
        now = await client.read_flow_run(fr.id)
    if now.state is not None and now.state.type == StateType.CANCELLED:
        return Cancelled(message=now.state.message)
    return result


async def _adopt(client: Any, fr: FlowRun, run: LiveRun) -> None:
    """Make a run a deployment's schedule started (not ``execute``) findable like any
    workflow run: tagged and labelled with its workflow id (its run name)."""
    tags = [*fr.tags, *(t for t in runs.workflow_tags(run.workflow_id) if t not in fr.tags)]
    await client.update_flow_run(fr.id, tags=tags)
    labels = {"beluga.workflow_id": run.workflow_id, "beluga.execution": run.execution}
    await client.update_flow_run_labels(fr.id, labels)


async def _record_queries(run: LiveRun) -> None:
    try:
        async with get_client() as client:
            await messages.record_final_queries(client, run)
    except Exception as err:  # the run's outcome matters more than its last answers
        _log.warning("workflow %s: could not record its query answers: %s", run.workflow_id, err)


async def _supervise(
    flow: FlowLike, run: LiveRun, fr: FlowRun, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The body under the watcher: its value, or the Cancelled state it ends in."""
    holder: dict[str, asyncio.Future[Any]] = {}
    watch.watch(run, lambda: holder["body"].cancel() if "body" in holder else None)
    await watch.look_now(run)  # what was sent before it started, a resume's history
    if run.terminated is not None:
        return Cancelled(message=run.terminated)
    async with get_client() as client:  # a duplicate start a runner picked up anyway
        try:
            await runs.refuse_duplicate(client, run.workflow_id, fr)
        except OrchestratorError:
            await runs.drop_duplicate(client, fr)
            return Cancelled(message="duplicate workflow id")
    if run.cancel_requested and not run.resumed:
        return Cancelled(message="cancelled before it started")
    if run.cancel_requested or run.rollback is not None:
        return await _roll_back(flow, run, args, kwargs)
    body = holder["body"] = asyncio.ensure_future(_attempts(flow, run, args, kwargs))
    try:
        return await body
    except asyncio.CancelledError:
        if run.terminated is None:
            raise
        return Cancelled(message=run.terminated)
    except Terminated:
        return Cancelled(message=run.terminated)
    except CancelRequested:
        return await _end_compensated(run, "cancel", None)
    except Exception as err:
        return await _end_compensated(run, "failure", err)


async def _end_compensated(run: LiveRun, reason: str, err: Exception | None) -> Any:
    """Run the compensations; a cancel ends Cancelled, a failure re-raises."""
    failures = await _compensate(run, reason)
    note = f"; {len(failures)} compensation(s) failed: {failures}" if failures else ""
    if err is None:
        return Cancelled(message=f"cancelled by request{note}")
    if failures:
        raise _with_failures(err, failures) from err
    raise err


async def _roll_back(
    flow: FlowLike, run: LiveRun, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A resumed run that must roll back (its predecessor was compensating, or a
    cancel is pending): replay the recorded work only, to register the same
    compensations, then run them (each undo at most once: a completed one is stored)."""
    reason = run.rollback or "cancel"
    run.rollback = reason
    token = ATTEMPT.set(run.begin_attempt())
    try:
        await middleware.run_flow_body(flow, args, kwargs)
    except (Exception, RollbackStop, CancelRequested) as err:
        _log.info("workflow %s: rolling back, replay stopped at %s", run.workflow_id, err)
    finally:
        ATTEMPT.reset(token)
    if reason == "cancel":
        return await _end_compensated(run, "cancel", None)
    return await _end_compensated(
        run,
        "failure",
        OrchestratorError("workflow", "rolled back after a failure", ErrorCode.EXECUTION_FAILED),
    )


async def _attempts(
    flow: FlowLike, run: LiveRun, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    attempt = 0
    while True:
        token = ATTEMPT.set(run.begin_attempt())
        try:
            return await middleware.run_flow_body(flow, args, kwargs)
        except Exception as err:
            run.retire()  # a sync body past its timeout runs on: stop it at its next step
            if attempt >= flow.spec.retries:
                raise
            _log.info(
                "workflow %s: attempt %d failed (%s), replaying its completed steps",
                *(run.workflow_id, attempt + 1, err),
            )
            attempt += 1
        finally:
            ATTEMPT.reset(token)


def _with_failures(err: Exception, failures: list[str]) -> OrchestratorError:
    code = err.code if isinstance(err, OrchestratorError) else ErrorCode.EXECUTION_FAILED
    message = str(err.message if isinstance(err, OrchestratorError) else err)
    made = OrchestratorError(
        "workflow",
        f"{message}; {len(failures)} compensation(s) failed: {'; '.join(failures)}",
        code,
        compensation_errors=failures,
    )
    made.__cause__ = err
    return made


# ---------------------------------------------------------------- compensations


async def _undo(fn: Any) -> None:
    await middleware.call(fn, (), {})  # its value is not kept: an undo is done or not


def _undo_task(label: str, key: str) -> PrefectTask[..., Any]:
    """The undo's task run, stored under its durable key once it completes."""
    return PrefectTask(
        fn=_undo,
        name="compensate",
        task_run_name=f"compensate-{label}",
        cache_policy=CacheKeyFnPolicy(cache_key_fn=lambda context, parameters: key),
        persist_result=True,
    )


async def _compensate(run: LiveRun, reason: str) -> list[str]:
    """Run the registered undos in reverse, each as a task run; report failures.

    The run is labelled ``beluga.compensating`` before the first undo, so a crash
    midway is resumed as a roll-back (never forward); each undo completes at most
    once across the whole execution (its result is stored under its durable key).
    """
    per_identity: collections.Counter[str] = collections.Counter()
    undos = []
    for label, identity, fn in [*run.kept, *run.compensations]:
        per_identity[identity] += 1
        undos.append((run.undo_key(identity, per_identity[identity]), label, fn))
    run.compensations.clear()
    run.kept.clear()
    run.retire()  # the body must not start another step while its effects are undone
    if not undos:
        return []
    async with get_client() as client:
        await client.update_flow_run_labels(run.run_id, {"beluga.compensating": reason})  # type: ignore[arg-type]
    failures: list[str] = []
    token = CURRENT.set(None)  # undo steps are plain task runs inside
    try:
        for key, label, fn in reversed(undos):
            try:
                await _undo_task(label, key)(quote(fn))
            except Exception as err:
                _log.error("compensation for %s failed: %s", label, err)
                failures.append(f"{label}: {err}")
    finally:
        CURRENT.reset(token)
    async with get_client() as client:
        await client.update_flow_run_labels(run.run_id, {"beluga.compensated": "true"})  # type: ignore[arg-type]
    return failures


# ---------------------------------------------------------------- the in-process host


class Host:
    """The in-process mode: workflow flow runs on one background event loop.

    Runs hosted here die with the process: at exit, :meth:`crash_all` stops them
    (no further step, no compensation) and records them Crashed, so ``resume`` can
    continue them.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.live: dict[str, concurrent.futures.Future[Any]] = {}
        self.runs: dict[str, LiveRun] = {}  # the live side of each run hosted here

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="beluga-workflows", daemon=True
                ).start()
                self._loop = loop
                # Before the interpreter joins worker threads (a sync workflow blocked
                # in wait_for_signal is one), which threading's own atexit hooks do.
                register = getattr(threading, "_register_atexit", atexit.register)
                register(self.crash_all)
            return self._loop

    def start(
        self, pf: PrefectFlow[..., Any], flow_run: FlowRun, parameters: dict[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start the flow run in the background; the future holds its final state."""
        loop = self._ensure_loop()
        fut = asyncio.run_coroutine_threadsafe(
            run_flow_async(pf, flow_run=flow_run, parameters=parameters, return_type="state"),
            loop,
        )
        key = str(flow_run.id)
        self.live[key] = fut
        fut.add_done_callback(lambda _: self.live.pop(key, None))
        return fut

    def crash_all(self) -> None:
        """Stop the runs still hosted here and mark them Crashed (the process is
        going away). A run that already ended on the server (terminated, say) keeps
        its state."""
        if not self.live or self._loop is None:
            return
        with contextlib.suppress(Exception), get_client(sync_client=True) as client:
            pending = [
                run_id
                for run_id in list(self.live)
                if runs.is_live(client.read_flow_run(uuid.UUID(run_id)))
            ]
            for run_id in pending:
                run = self.runs.get(run_id)
                if run is not None:
                    self._loop.call_soon_threadsafe(run.request_terminate, "host process exited")
            concurrent.futures.wait([f for r in pending if (f := self.live.get(r))], timeout=5)
            for run_id in pending:
                client.set_flow_run_state(
                    uuid.UUID(run_id), Crashed(message="host process exited"), force=True
                )


host = Host()
