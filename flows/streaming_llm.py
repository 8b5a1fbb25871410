"""Example: a token-streaming "LLM" inside a graph, printed live (no network, no model).

``plan`` picks the points to cover, ``llm`` is a streaming step (an async-generator
function under ``@bf.step``) that yields its answer token by token, ``summarize``
counts what came out. ``stream_mode=["messages", "custom", "updates"]`` shows each
token as ``llm`` yields it, the progress notes nodes pass to ``bf.emit``, and each
node's update as it ends; the graph's final state holds the joined answer
(``{"llm": "..."}``). Each node execution is a task run of the ``streaming-llm``
flow run on Prefect.

    python flows/streaming_llm.py                               # prints the tokens live
    beluga-flows run flows/streaming_llm.py:streaming_llm --param topic=retries
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import beluga_flows as bf

POINTS = {
    "retries": ["retry transient errors", "back off exponentially", "give up on bad input"],
    "timeouts": ["bound every call", "fail fast", "retry what timed out"],
}


def plan(state: dict[str, Any]) -> dict[str, Any]:
    points = POINTS.get(state["topic"], [f"say something about {state['topic']}"])
    bf.emit(f"planned {len(points)} points")
    return {"points": points}


@bf.step(retries=1)  # a retry restarts the generator
async def fake_llm(state: dict[str, Any]) -> AsyncIterator[str]:
    """A fake chat model: the answer, a word at a time."""
    answer = f"On {state['topic']}: " + "; ".join(state["points"]) + "."
    for i, word in enumerate(answer.split(" ")):
        await asyncio.sleep(state.get("delay", 0.02))  # "thinking"
        yield word if i == 0 else " " + word


def summarize(state: dict[str, Any]) -> dict[str, Any]:
    bf.emit("summarizing")
    return {"words": len(state["llm"].split())}


def build() -> bf.CompiledGraph:
    g = bf.Graph(name="streaming-llm")
    g.add_node("plan", plan)
    g.add_node("llm", fake_llm)  # its update is {"llm": <the joined answer>}
    g.add_node("summarize", summarize)
    g.add_edge(bf.START, "plan")
    g.add_edge("plan", "llm")
    g.add_edge("llm", "summarize")
    return g.compile()


streaming_llm_graph = build()


@bf.flow(name="streaming-llm")
async def streaming_llm(topic: str = "retries", delay: float = 0.02) -> dict[str, Any]:
    """Stream the answer on ``topic`` to stdout as it is written; return the summary."""
    words = 0
    modes = ["messages", "custom", "updates"]
    async for mode, payload in streaming_llm_graph.astream(
        {"topic": topic, "delay": delay}, stream_mode=modes
    ):
        if mode == "messages":  # (node, token): printed as it comes
            print(payload[1], end="", flush=True)
        elif mode == "custom":
            print(f"[{payload}]", file=sys.stderr, flush=True)
        elif payload[0] == "summarize":
            words = payload[1]["words"]
    print(flush=True)
    return {"topic": topic, "words": words}


if __name__ == "__main__":
    print(asyncio.run(streaming_llm()))
