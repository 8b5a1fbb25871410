"""What the declarative engine's SLA monitor asks of Prefect: the run times of a
definition's latest completed runs (its duration baseline, the same in every
process) and an event for each alert (the UI's event feed; automations act on it).
Part of the Prefect adapter.
"""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import emit_event

__all__ = ["emit", "recent_durations"]


async def recent_durations(tags: list[str], limit: int) -> list[float]:
    """Run times (s) of the latest ``limit`` completed flow runs carrying every tag in
    ``tags``, oldest first."""
    async with get_client() as client:
        found = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=tags),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
    return [r.total_run_time.total_seconds() for r in reversed(found)]


async def emit(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    """Emit a Prefect event about ``resource``."""
    emit_event(event=event, resource=resource, payload=payload)
