"""Serve deployments in this process until Ctrl-C or SIGTERM. Part of the Prefect
adapter: ``beluga-flows serve``, ``workflow serve`` and ``Workflow.serve`` all end
here (:func:`serve` builds a workflow's deployments; :func:`deployment_id` finds the
served one a new workflow run goes to).

It is :func:`prefect.serve` with a working shutdown. Prefect's runner answers
SIGTERM by calling its async ``stop()`` from the signal handler without awaiting it
and exiting mid-loop ("coroutine was never awaited", asyncio tracebacks, and under
load a process that does not exit); cancelling its task (asyncio's Ctrl-C) leaves
its poller starting runs. Here the first Ctrl-C or SIGTERM awaits the runner's own
``astop()``: no new runs, in-flight runs cancelled (their processes stopped, their
runs marked Cancelled), schedules paused, then this returns. A second signal exits
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import uuid
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound

from beluga_flows.engine.prefect import runs
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["deployment_id", "serve", "serve_deployments"]


def serve_deployments(deployments: list[Any], *, limit: int | None) -> None:
    """Register ``deployments`` (``RunnerDeployment``) and run their scheduled and
    requested runs here, at most ``limit`` at a time; returns after Ctrl-C/SIGTERM."""
    from prefect.runner import Runner

    runner = Runner(limit=limit, pause_on_shutdown=True)
    for deployment in deployments:
        deployment.work_pool_name = None  # a served deployment needs no work pool
        runner.add_deployment(deployment)

    async def run() -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        signalled: list[int] = []
        stopping: list[asyncio.Task[None]] = []  # holds the stop task until it ends

        def stop() -> None:
            if runner.started:
                stopping.append(loop.create_task(runner.astop()))
            else:  # still registering: nothing runs yet
                task.cancel()

        def on_signal(signum: int, frame: Any) -> None:
            if signalled:  # os.write: print() may not re-enter a half-written stream
                os.write(2, b"stopped without waiting for in-flight runs\n")
                os._exit(128 + signum)
            signalled.append(signum)
            os.write(2, b"stopping: cancelling in-flight runs (again to force)\n")
            loop.call_soon_threadsafe(stop)

        runner.handle_sigterm = on_signal  # type: ignore[method-assign]
        if main:  # signal handlers belong to the main thread (so does the runner's)
            signal.signal(signal.SIGTERM, on_signal)  # the runner sets it again at start
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                signal.signal(signal.SIGINT, on_signal)
        await runner.start()

    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(run())
    finally:
        if main:
            signal.signal(signal.SIGINT, before[0])
            signal.signal(signal.SIGTERM, before[1])


def serve(served: list[tuple[Any, str]], *, limit: int | None) -> None:
    """Serve each ``(workflow, entrypoint)``'s deployment ``<name>/<task_queue>`` in
    one Prefect runner (blocks until Ctrl-C or SIGTERM)."""
    from prefect.deployments.runner import RunnerDeployment

    deployments = [
        RunnerDeployment.from_entrypoint(
            entrypoint,
            name=workflow.task_queue,
            tags=[runs.TAG],
            description=workflow.flow.spec.description,
        )
        for workflow, entrypoint in served
    ]
    serve_deployments(deployments, limit=limit)


async def deployment_id(
    client: PrefectClient, flow_name: str, queue: str, mode: str
) -> uuid.UUID | None:
    """The served deployment that runs this workflow, or ``None`` for in-process.

    ``auto`` uses the deployment ``<flow>/<task_queue>`` when something serves it
    (Prefect marks it READY while a runner or worker polls), ``served`` requires it,
    ``in_process`` never looks.
    """
    if mode == "in_process":
        return None
    try:
        deployment = await client.read_deployment_by_name(f"{flow_name}/{queue}")
    except ObjectNotFound:
        if mode == "served":
            raise OrchestratorError(
                "execute",
                f"no deployment {flow_name}/{queue}: start a worker with wf.serve()",
                ErrorCode.NOT_FOUND,
            ) from None
        return None
    if mode == "auto" and str(getattr(deployment.status, "value", deployment.status)) != "READY":
        return None
    return deployment.id
