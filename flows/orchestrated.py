"""An orchestrator in front of a chain and a graph: defaults, admission, metrics, health.

``bf.new_orchestrator(...)`` holds one validated configuration; what it creates takes
its defaults (timeouts, retries, workers) and runs through its admission control (at
most ``max_concurrent_chains`` chains at once, ``queue_size`` more waiting). Here 6
summaries are requested at once with room for 2 running and 4 queued: all complete,
never more than 2 at a time; a 7th concurrent one would get ``RESOURCE_EXHAUSTED``.

Run it in-process (no Prefect API)::

    python flows/orchestrated.py --local

or against a server (``beluga-flows server``): each chain and graph run is then a
flow run, and the chains share the Prefect global concurrency limit
``beluga-orch-demo-chains`` with every other process running this orchestrator::

    PREFECT_API_URL=http://127.0.0.1:4200/api python flows/orchestrated.py
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import beluga_flows as bf

orch = bf.new_orchestrator(
    name="demo",
    max_concurrent_chains=2,
    queue_size=4,
    chain_timeout=30,
    chain_retries=1,
    graph_timeout=60,
    max_workers=4,
    metrics_prefix="demo.orchestration",
)
PEAK = {"now": 0, "max": 0}


@bf.step
async def fetch(query: dict[str, Any]) -> str:
    PEAK["now"] += 1
    PEAK["max"] = max(PEAK["max"], PEAK["now"])
    await asyncio.sleep(0.05)  # a slow API in real life
    PEAK["now"] -= 1
    return f"notes about {query['input']}"


@bf.step
def summarise(notes: str) -> str:
    return notes.upper()


def research(state: dict[str, Any]) -> dict[str, Any]:
    return {"facts": [f"{state['topic']} is {n}" for n in ("old", "useful")]}


def write(state: dict[str, Any]) -> dict[str, Any]:
    return {"report": "; ".join(state["facts"])}


async def main(provider: str) -> dict[str, Any]:
    digest = orch.create_chain([fetch, summarise], provider=provider, name="digest")
    topics = ["whales", "orcas", "belugas", "narwhals", "dolphins", "porpoises"]
    summaries = await asyncio.gather(*(digest.ainvoke(t) for t in topics))

    graph = orch.create_graph(provider=provider, name="report")
    graph.add_node("research", research).add_node("write", write)
    graph.add_edge(bf.START, "research").add_edge("research", "write")
    final = await graph.ainvoke({"topic": "belugas"})

    health = await orch.ahealth(timeout=3)
    return {
        "summaries": summaries,
        "report": final["report"],
        "peak_concurrent_chains": PEAK["max"],
        "metrics": orch.get_metrics(),
        "health": {name: c.status for name, c in health.components.items()},
    }


if __name__ == "__main__":
    where = "local" if "--local" in sys.argv else "prefect"
    print(json.dumps(asyncio.run(main(where)), indent=2))
