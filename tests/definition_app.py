"""A durable workflow definition whose actions log to a ledger (the crash test's app).

Imported by the test and by ``definition_crash_worker.py``: the same definition and
actions in both processes, so a run started (and killed) in the worker is resumed
in the test.
"""

from __future__ import annotations

import time
from typing import Any

import beluga_flows as bf
from tests.workflow_app import lines, note

__all__ = ["ACTIONS", "DEFINITION", "engine", "lines"]


def work(ledger: str, n: int, delay: float) -> int:
    note(ledger, f"start {n}")
    time.sleep(delay)
    note(ledger, f"done {n}")
    return n * n


def fan(ledger: str, item: int, delay: float) -> int:
    note(ledger, f"start item {item}")
    time.sleep(delay)
    note(ledger, f"done item {item}")
    return item + 100


ACTIONS: dict[str, Any] = {"work": work, "fan": fan}

# step0 -> step1 -> step2 -> items (for_each over 3) -> step3 -> step4 -> step5
_steps: list[dict[str, Any]] = []
for n in range(6):
    _steps.append(
        {
            "step_id": f"step{n}",
            "action": "work",
            "input_mapping": {"ledger": "ledger", "n": str(n), "delay": "delay"},
            "dependencies": [f"step{n - 1}"] if n and n != 3 else (["items"] if n == 3 else []),
        }
    )
_steps.insert(
    3,
    {
        "step_id": "items",
        "type": "parallel",
        "for_each": "[1, 2, 3]",
        "dependencies": ["step2"],
        "parallel_steps": [
            {
                "step_id": "item",
                "action": "fan",
                "input_mapping": {"ledger": "ledger", "item": "item", "delay": "delay"},
            }
        ],
    },
)
DEFINITION = bf.WorkflowDefinition.from_dict({"workflow_id": "crashable", "steps": _steps})


def engine() -> bf.WorkflowEngine:
    return bf.WorkflowEngine(ACTIONS, provider="prefect")
