"""The client side of the API-outage test: a durable workflow and a tracked chain,
ten 1 s steps each, running at once against the server the test stops and restarts,
while the main thread asks the workflow's status once a second (as a dashboard would,
each call a new client) until it is final.

Usage: ``outage_client.py <workflow id> <ledger dir>``. Each step appends to a ledger
(``workflow.txt`` / ``chain.txt``), so the test knows when both are mid-run and can
count repeats. Prints one JSON line: the results and the run ids.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))

import beluga_flows as bf
from tests.workflow_app import note, ten_steps

outage = bf.Workflow(ten_steps, name="wf-outage", mode="in_process")


@bf.step
def link(state: dict[str, Any]) -> dict[str, Any]:
    """One chain step: the next number, after a second."""
    n = int(state["n"])
    note(state["ledger"], f"start {n}")
    time.sleep(1.0)
    note(state["ledger"], f"done {n}")
    return {**state, "n": n + 1, "total": int(state["total"]) + n * n}


CHAIN = bf.Chain([link] * 10, name="outage-chain")


def main(workflow_id: str, ledgers: Path) -> None:
    chained: dict[str, Any] = {}
    handle = outage.execute(
        {"ledger": str(ledgers / "workflow.txt"), "delay": 1.0}, workflow_id=workflow_id
    )

    def chain() -> None:
        try:
            chained["value"] = CHAIN.invoke(
                {"ledger": str(ledgers / "chain.txt"), "n": 0, "total": 0}
            )
        except Exception as err:  # reported on stdout: the test shows it
            chained["error"] = repr(err)

    thread = threading.Thread(target=chain)
    thread.start()
    seen: list[tuple[float, float, str]] = []  # a dashboard: (asked, answered, status)
    while not seen or seen[-1][2] not in ("completed", "failed", "crashed", "cancelled"):
        asked = time.time()
        status = outage.query(workflow_id, handle.run_id, "status")
        seen.append((asked, time.time(), status))
        time.sleep(1.0)
    value = outage.get_result(workflow_id, handle.run_id, timeout=300)
    thread.join(300)
    out = {"workflow": value, "run_id": handle.run_id, "seen": seen, **chained}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
