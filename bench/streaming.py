"""What live streaming costs: time to the first update, and per-chunk overhead.

Two workloads, one process, the runners of a workload interleaved sample by sample:

1. **first update**: a 3-node graph ``a → b → c`` (trivial nodes returning one key);
   from calling ``astream(stream_mode="updates")`` to receiving ``a``'s update, and
   to the end of the stream; ``ainvoke`` of the same graph for comparison. Local
   provider (nodes ``track=False``); with ``--prefect`` also on a temporary Prefect
   server (tracked nodes: a flow run and three task runs per run, a few samples).
2. **per chunk**: one node yielding ``CHUNKS`` ints, consumed live, per chunk:

   * ``asyncio``: a plain async generator iterated directly — the floor;
   * ``bf messages``: a ``bf.Graph`` whose node is a streaming step (``track=False``,
     local), ``astream(stream_mode="messages")``;
   * ``bf step.astream``: the streaming step's own ``astream``;
   * ``bf emit``: a node calling ``bf.emit`` per item, ``stream_mode="custom"``;
   * ``langgraph custom``: a LangGraph node calling ``get_stream_writer()`` per item,
     ``astream(stream_mode="custom")``;
   * ``langchain model alone``: the fake chat model's ``astream``, no graph;
   * ``langgraph messages``: a LangGraph node streaming a fake chat model
     (``GenericFakeChatModel``, a word per chunk, the spaces as chunks too; ten answers
     of 500 words), ``astream(stream_mode="messages")`` — how LangGraph streams LLM
     tokens.

    python bench/streaming.py              # ~30 s; summary on stderr, JSON on stdout
    python bench/streaming.py --prefect    # + first update on a temporary Prefect server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

import beluga_flows as bf

CHUNKS = 5000
ANSWER_WORDS = 500  # LangGraph messages: CHUNKS words as ANSWERS chat-model answers
ANSWERS = CHUNKS // ANSWER_WORDS
TARGET_US = 20.0  # per chunk, inline streaming step
TIMES = "\u00d7"


def fmt(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


# ---------------------------------------------------------------- first update


def three_nodes(provider: str, track: bool) -> bf.CompiledGraph:
    g = bf.Graph(name="bench-stream-3", provider=provider)
    for prev, name in ((bf.START, "a"), ("a", "b"), ("b", "c")):
        g.add_node(name, lambda s, n=name: {n: 1}, track=track)
        g.add_edge(prev, name)
    return g.compile()


async def first_update(graph: bf.CompiledGraph) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = None
    async for _ in graph.astream({}, stream_mode="updates"):
        if first is None:
            first = time.perf_counter() - t0
    return first or 0.0, time.perf_counter() - t0


async def invoked(graph: bf.CompiledGraph) -> float:
    t0 = time.perf_counter()
    await graph.ainvoke({})
    return time.perf_counter() - t0


async def first_updates(provider: str, track: bool, samples: int) -> dict[str, Any]:
    graph = three_nodes(provider, track)
    await first_update(graph)  # warm-up (Prefect: registers the flow and tasks)
    await invoked(graph)
    firsts, wholes, invokes = [], [], []
    for _ in range(samples):
        first, whole = await first_update(graph)
        firsts.append(first)
        wholes.append(whole)
        invokes.append(await invoked(graph))
    return {
        "first": statistics.median(firsts),
        "stream_total": statistics.median(wholes),
        "invoke_total": statistics.median(invokes),
        "samples": samples,
    }


# ---------------------------------------------------------------- per chunk


async def _ints(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def runners() -> dict[str, Callable[[], Awaitable[int]]]:
    """Each consumes CHUNKS chunks streamed live and returns how many it saw."""

    async def floor() -> int:
        return len([1 async for _ in _ints(CHUNKS)])

    @bf.step(track=False)
    async def tokens(state: Any) -> AsyncIterator[int]:
        for i in range(CHUNKS):
            yield i

    g = bf.Graph(name="bench-messages", provider="local")
    g.add_node("llm", tokens)
    g.add_edge(bf.START, "llm")
    messages = g.compile()

    def emitter(state: Any) -> None:
        for i in range(CHUNKS):
            bf.emit(i)

    async def aemitter(state: Any) -> None:
        emitter(state)

    e = bf.Graph(name="bench-emit", provider="local")
    e.add_node("emit", aemitter, track=False)
    e.add_edge(bf.START, "emit")
    emits = e.compile()

    async def bf_messages() -> int:
        return len([1 async for _ in messages.astream({}, stream_mode="messages")])

    async def bf_step() -> int:
        return len([1 async for _ in tokens.astream({})])

    async def bf_emit() -> int:
        return len([1 async for _ in emits.astream({}, stream_mode="custom")])

    return {
        "asyncio": floor,
        "bf messages": bf_messages,
        "bf step.astream": bf_step,
        "bf emit": bf_emit,
        **langgraph_runners(),
    }


def langgraph_runners() -> dict[str, Callable[[], Awaitable[int]]]:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        out: Any

    async def writer_node(state: State) -> State:
        write = get_stream_writer()
        for i in range(CHUNKS):
            write(i)
        return {}

    # LangChain accumulates each message as it streams (quadratic in its length): the
    # node streams CHUNKS words as several answers of an LLM's usual length.
    text = " ".join(["tok"] * ANSWER_WORDS)

    async def model_node(state: State) -> State:
        model = GenericFakeChatModel(messages=iter([AIMessage(content=text)] * ANSWERS))
        for _ in range(ANSWERS):
            async for _ in model.astream("hi"):  # the chunks reach the stream by callbacks
                pass
        return {}

    def build(node: Callable[..., Any]) -> Any:
        sg = StateGraph(State)
        sg.add_node("n", node)
        sg.add_edge(START, "n")
        sg.add_edge("n", END)
        return sg.compile()

    custom, chat = build(writer_node), build(model_node)

    async def lc_model() -> int:  # the chat model's own cost, no graph, no stream mode
        model = GenericFakeChatModel(messages=iter([AIMessage(content=text)] * ANSWERS))
        seen = 0
        for _ in range(ANSWERS):
            seen += len([1 async for _ in model.astream("hi")])
        return seen

    async def lg_custom() -> int:
        return len([1 async for _ in custom.astream({}, stream_mode="custom")])

    async def lg_messages() -> int:
        # GenericFakeChatModel streams each space as a chunk too: 2 * CHUNKS - 1 chunks.
        return len([1 async for _ in chat.astream({}, stream_mode="messages")])

    return {
        "langgraph custom": lg_custom,
        "langgraph messages": lg_messages,
        "langchain model alone": lc_model,
    }


async def per_chunk(samples: int) -> dict[str, Any]:
    found: dict[str, list[float]] = {}
    chunks: dict[str, int] = {}
    run = runners()
    for name, fn in run.items():  # warm-up, and count what each really streams
        chunks[name] = await fn()
    names = list(run)
    for i in range(samples):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            await run[name]()
            found.setdefault(name, []).append((time.perf_counter() - t0) / chunks[name])
    floor = statistics.median(found["asyncio"])
    return {
        name: {
            "per_chunk": statistics.median(v),
            "min": min(v),
            "max": max(v),
            "vs_floor": statistics.median(v) / floor,
            "chunks_seen": chunks[name],
        }
        for name, v in found.items()
    }


# ---------------------------------------------------------------- Prefect


def on_prefect(samples: int) -> dict[str, Any]:
    import os

    from beluga_flows.tools.server import LocalServer, prefect_env

    root = Path(tempfile.mkdtemp(prefix="beluga-bench-stream-"))
    os.environ.update(prefect_env(root / "client", PREFECT_LOGGING_LEVEL="ERROR"))
    server = LocalServer.launch(root / "server")
    try:
        server.wait_ready(180)
        os.environ["PREFECT_API_URL"] = server.api_url
        return asyncio.run(first_updates("prefect", True, samples))
    finally:
        server.stop()


# ---------------------------------------------------------------- report


def markdown(r: dict[str, Any]) -> list[str]:
    """The RESULTS.md section (bench/run.py puts it between its markers)."""
    c = r["per_chunk"]
    bf_s = c["bf messages"]["per_chunk"]
    bf_us = bf_s * 1e6
    lg_custom, lg_messages = (
        c["langgraph custom"]["per_chunk"],
        c["langgraph messages"]["per_chunk"],
    )
    rows = [
        "| runner | per chunk | range | vs asyncio floor | vs bf messages |",
        "|---|---|---|---|---|",
    ]
    for name, v in c.items():
        rows.append(
            f"| {name} | {fmt(v['per_chunk'])} | {fmt(v['min'])}-{fmt(v['max'])} | "
            f"{v['vs_floor']:.3g}{TIMES} | "
            f"{v['per_chunk'] / c['bf messages']['per_chunk']:.3g}{TIMES} |"
        )
    firsts = [
        "| provider | first update | whole stream | `ainvoke` | samples |",
        "|---|---|---|---|---|",
    ]
    for provider, f in r["first_update"].items():
        firsts.append(
            f"| {provider} | {fmt(f['first'])} | {fmt(f['stream_total'])} | "
            f"{fmt(f['invoke_total'])} | {f['samples']} |"
        )
    met = "met" if bf_us <= TARGET_US else "**not met**"
    return [
        "## streaming: live graph streams and streaming steps\n",
        f"`bench/streaming.py` on {r['date']} ({r['wall_s']:.0f} s, load average "
        f"{r['load_before']}): one process, runners interleaved sample by sample.\n",
        f"Target: a streaming step inline (`track=False`, local) costs ≤ {TARGET_US:g} µs per "
        f'chunk streamed live to `stream_mode="messages"`; measured **{bf_us:.3g} µs**: '
        f"{met}. LangGraph's own stream path (`get_stream_writer`, `custom`) costs "
        f"{lg_custom / bf_s:.3g}{TIMES} that per chunk; its `messages` mode with a fake chat "
        f"model {lg_messages / bf_s:.3g}{TIMES}, most of it LangChain's chat-model machinery "
        "(`langchain model alone`).\n",
        f"### per chunk: one node yielding {CHUNKS:,} chunks, consumed live\n",
        "\n".join(rows) + "\n",
        "`langgraph custom` is a node calling `get_stream_writer()` per item "
        '(`stream_mode="custom"`); `langgraph messages` streams `GenericFakeChatModel` '
        'tokens through LangChain\'s callbacks (`stream_mode="messages"`), which is how '
        "LangGraph streams LLM tokens: ten answers of 500 words (it yields the spaces "
        "between the words as chunks too: every figure is per chunk the consumer "
        "received); `langchain model alone` iterates the same model's `astream` with no "
        "graph.\n",
        '### first update: a 3-node graph `a → b → c`, `stream_mode="updates"`\n',
        "\n".join(firsts) + "\n",
        "On Prefect a run is a flow run and three task runs; plain `ainvoke` runs on this "
        "machine stall ~2.5 s now and then too (SQLite server, shared CPUs), so compare "
        "medians, and the local row for what streaming itself adds.\n",
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=7)
    p.add_argument("--prefect", action="store_true", help="also on a temporary Prefect server")
    args = p.parse_args(argv)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "chunks": CHUNKS,
    }
    result["per_chunk"] = asyncio.run(per_chunk(args.samples))
    result["first_update"] = {"local": asyncio.run(first_updates("local", False, 200))}
    if args.prefect:
        result["first_update"]["prefect"] = on_prefect(9)
    result["wall_s"] = time.perf_counter() - started
    result["markdown"] = markdown(result)
    print("\n".join(result["markdown"]), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
