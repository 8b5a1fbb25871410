"""A tracked step costs the Prefect API what a plain Prefect task costs (issue 16).

The shapes of ``bench/tracked.py`` at small sizes, raw Prefect against beluga_flows,
counted by ``bench/apicount.py`` on Prefect's own HTTP clients, events worker and log
worker: every request (by method and path), every event (by name), every log record
must be the same. Counts are stable where times are not; the times are the bench's.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from apicount import ApiCount  # noqa: E402
from child import Workload, layered  # noqa: E402
from tracked import RAW, SHAPES, build  # noqa: E402

SMALL = {  # the bench's shapes, a few task runs each
    "run-start": Workload("run-start", 1, 0.0),
    "line50": Workload("line50", 3, 0.0),
    "gather100": layered("gather100", 1, 4, 0.0),
    "fanout100": layered("fanout100", 1, 4, 0.0),
    "diamond5x20": layered("diamond5x20", 2, 3, 0.0),
}
CASES = [(shape, runner) for shape in SHAPES for runner in SHAPES[shape][2] if runner != RAW]
Sent = tuple[Counter[str], Counter[str], Counter[str]]
_SEEN: dict[tuple[str, int, str, int, int], Sent] = {}  # a shape is counted once


def _sent(shape: str, runner: str, w: Workload) -> Sent:
    """What one run sends to the API: requests (log batches aside), events, log records.

    After a warm-up run whose events are flushed: the events worker reads each flow
    once per process (to relate its events to it), whenever it gets to them."""
    key = (runner, w.steps, w.kind, w.layers, w.width)
    if key not in _SEEN:
        _SEEN[key] = _count(build(shape, runner, w))
    return _SEEN[key]


def _count(run: Any) -> Sent:
    asyncio.run(run())
    ApiCount.drain()
    with ApiCount() as count:
        asyncio.run(run())
        ApiCount.drain()
    return count.stable_requests, count.events, count.logs


@pytest.mark.parametrize(("shape", "runner"), CASES, ids=[f"{s}-{r}" for s, r in CASES])
def test_a_tracked_run_sends_what_the_plain_prefect_run_sends(
    prefect_server: Any, shape: str, runner: str
) -> None:
    w = SMALL[shape]
    raw, bf = _sent(shape, RAW, w), _sent(shape, runner, w)
    assert bf[0] == raw[0]  # requests, by method and path
    assert bf[1] == raw[1]  # events, by name: a task run is reported by its state events
    assert bf[2] == raw[2]  # log records
    assert raw[1]["prefect.task-run.Completed"] == w.steps  # every task run was counted


def test_per_task_run_a_tracked_step_adds_what_a_raw_task_adds(prefect_server: Any) -> None:
    one, three = SMALL["run-start"], SMALL["line50"]  # 1 and 3 steps in a line
    raw_one, raw_three = _sent("line50", RAW, one), _sent("line50", RAW, three)
    for runner in ("bf-flow", "bf-chain"):
        bf_one, bf_three = _sent("line50", runner, one), _sent("line50", runner, three)
        for k in range(3):  # two more task runs cost the same on both sides
            assert bf_three[k] - bf_one[k] == raw_three[k] - raw_one[k]
        assert raw_three[0] == raw_one[0]  # a task run makes no request of its own
