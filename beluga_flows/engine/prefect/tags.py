"""Which Prefect tags a run started by beluga_flows passes on to its task runs.

A flow run's own tags (``beluga:flow``, ``beluga:chain``, ``beluga:graph``, a
``@flow(tags=...)``) mark that flow run only; its task runs carry their step's
``tags=`` and whatever ``prefect.tags(...)`` the caller had entered, as they would
in a plain Prefect flow. A tagged task run is not free: Prefect's task engine asks
for tag concurrency slots for each one (a hop to its slot service thread, and an
API request whenever its 5-second "no limits" cache has expired).

Example::

    with run_tags("beluga:flow", "nightly"):   # around the flow call
        await prefect_flow(...)
    # ... and inside the flow body:
    with step_tags():
        ...                                    # task runs: the caller's tags only
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from prefect import tags as prefect_tags
from prefect.context import TagsContext

__all__ = ["run_tags", "step_tags"]

# The tags the task runs of a run started here inherit (the caller's).
_STEP_TAGS: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "beluga_step_tags", default=None
)


@contextlib.contextmanager
def run_tags(*tags: str) -> Iterator[None]:
    """Around a flow call: its flow run gets ``tags``, its task runs the caller's tags."""
    token = _STEP_TAGS.set(set(TagsContext.get().current_tags))
    try:
        with prefect_tags(*tags):
            yield
    finally:
        _STEP_TAGS.reset(token)


@contextlib.contextmanager
def step_tags() -> Iterator[None]:
    """Inside a flow body: the tags its task runs inherit (see :func:`run_tags`)."""
    tags = _STEP_TAGS.get()
    if tags is None:
        yield
        return
    with TagsContext(current_tags=tags):
        yield
