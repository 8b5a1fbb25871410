"""Reading what the Prefect UI shows, from the session server's API."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.exceptions import ObjectNotFound


async def _flow_runs(flow_name: str) -> list[Any]:
    async with get_client() as client:
        return list(
            await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
            )
        )


async def _task_runs(flow_run_id: Any) -> list[Any]:
    async with get_client() as client:
        return list(
            await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        )


def flow_runs(flow_name: str, *, expect: int = 1, timeout: float = 20) -> list[Any]:
    """The finished flow runs of ``flow_name`` (waits for ``expect`` of them)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = asyncio.run(_flow_runs(flow_name))
        done = [r for r in runs if r.state is not None and r.state.is_final()]
        if len(done) >= expect or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


def task_runs(flow_run_id: Any, *, expect: int, timeout: float = 20) -> list[Any]:
    """The task runs of a flow run once ``expect`` of them are final (the server
    records task-run states from events, a moment after the run ends)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = asyncio.run(_task_runs(flow_run_id))
        done = [r for r in runs if r.state is not None and r.state.is_final()]
        if len(done) >= expect or time.monotonic() > deadline:
            return sorted(done, key=lambda r: r.expected_start_time or r.created)
        time.sleep(0.2)


async def _artifacts(flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return list(
            await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
        )


def artifacts(flow_run_id: Any) -> list[Any]:
    """The artifacts attached to a flow run."""
    return asyncio.run(_artifacts(flow_run_id))


def flow_run(run_id: Any) -> Any:
    """A flow run as the server has it now."""

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_flow_run(uuid.UUID(str(run_id)))

    return asyncio.run(read())


def deployment(name: str) -> Any:
    """The deployment ``flow/name``, or ``None`` when it is not registered."""

    async def read() -> Any:
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(name)
            except ObjectNotFound:
                return None

    return asyncio.run(read())
