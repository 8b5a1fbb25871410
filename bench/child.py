"""One benchmark child: one runner on one workload in a fresh process, JSON out.

``bench/run.py`` starts one of these per (runner, workload) so no runner shares warm
state, imports or memory with another. Run by hand for a single row::

    python bench/child.py bf-inline chain50-trivial --runs 5 --out /tmp/row.json
    python bench/child.py langgraph diamond5x20 --runs 5

A *run* is ``asyncio.run(...)`` of one invocation on a fresh event loop, for every
runner (so the asyncio baseline of a one-step run includes creating the loop, as in
``bench/ANCHORS.md``). Graphs, chains, tasks and flows are built once, before
timing. Fast runners time batches of runs (each sample is a batch mean of >= 20 ms);
Prefect runners time single runs and wait for the server to go idle between them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import operator
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

RunOnce = Callable[[], Awaitable[Any]]

PREFECT_RUNNERS = ("prefect-raw", "prefect-raw-nocache", "bf-tracked")
BATCH_SECONDS = 0.02  # a fast runner's sample is the mean of a batch this long
MAX_BATCH = 500


@dataclass(frozen=True)
class Workload:
    """What one run does; every step or node sleeps ``delay`` s (if any), returns x + 1.

    * ``chain``: ``steps`` steps in a line (a ``bf.Chain``; flow-start: a ``@bf.flow``).
    * ``layers``: a graph of ``layers`` layers of ``width`` nodes, every node of a layer
      depending on every node of the previous layer (one layer: a fan-out; width 1: a
      line of graph nodes); at most ``limit`` nodes at once when set.
    * ``loop``: one node sent back to itself by a router until it has run ``steps`` times.
    """

    name: str
    steps: int
    delay: float
    kind: str = "chain"
    layers: int = 1
    width: int = 1
    limit: int | None = None


def layered(name: str, layers: int, width: int, delay: float, limit: int | None = None) -> Workload:
    """A ``layers`` x ``width`` graph workload."""
    return Workload(name, layers * width, delay, "layers", layers, width, limit)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("chain50-trivial", 50, 0.0),
        Workload("chain50-io", 50, 0.01),
        Workload("flow-start", 1, 0.0),
        layered("fanout100", 1, 100, 0.1),
        layered("fanout100-max10", 1, 100, 0.1, limit=10),
        layered("diamond5x20", 5, 20, 0.02),
        Workload("loop100", 100, 0.0, kind="loop"),
        layered("graph1k-inline", 1000, 1, 0.0),
        layered("graph10k-inline", 10_000, 1, 0.0),
    )
}


class Marks:
    """perf_counter stamps taken inside the first and the last step body."""

    first = 0.0
    last = 0.0


def _rename(fn: Callable[..., Any], index: int) -> None:
    fn.__name__ = fn.__qualname__ = f"step_{index}"


def async_body(index: int, w: Workload) -> Callable[[int], Awaitable[int]]:
    """Step ``index`` as an async function (``await asyncio.sleep`` for IO)."""
    is_first, is_last, delay = index == 0, index == w.steps - 1, w.delay

    async def body(x: int) -> int:
        if is_first:
            Marks.first = time.perf_counter()
        if delay:
            await asyncio.sleep(delay)
        if is_last:
            Marks.last = time.perf_counter()
        return x + 1

    _rename(body, index)
    return body


def sync_body(index: int, w: Workload) -> Callable[[int], int]:
    """Step ``index`` as a sync function (``time.sleep`` for IO)."""
    is_first, is_last, delay = index == 0, index == w.steps - 1, w.delay

    def body(x: int) -> int:
        if is_first:
            Marks.first = time.perf_counter()
        if delay:
            time.sleep(delay)
        if is_last:
            Marks.last = time.perf_counter()
        return x + 1

    _rename(body, index)
    return body


# ---------------------------------------------------------------- runners


def build_asyncio(w: Workload) -> RunOnce:
    """Plain async functions awaited in sequence."""
    fns = [async_body(i, w) for i in range(w.steps)]

    async def run() -> int:
        x = 0
        for fn in fns:
            x = await fn(x)
        return x

    return run


class GraphState(TypedDict):
    """The LangGraph state: one counter."""

    x: int


def _graph_node(fn: Callable[[int], Awaitable[int]]) -> Callable[..., Awaitable[dict[str, int]]]:
    async def node(state: GraphState) -> dict[str, int]:
        return {"x": await fn(state["x"])}

    return node


def build_langgraph(w: Workload) -> RunOnce:
    """A StateGraph with ``steps`` nodes in a line, ``ainvoke``."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(GraphState)
    previous = START
    for i in range(w.steps):
        graph.add_node(f"step_{i}", _graph_node(async_body(i, w)))
        graph.add_edge(previous, f"step_{i}")
        previous = f"step_{i}"
    graph.add_edge(previous, END)
    app = graph.compile()
    config: Any = {"recursion_limit": w.steps + 10}

    async def run() -> int:
        return int((await app.ainvoke({"x": 0}, config))["x"])

    return run


def build_prefect_raw(w: Workload, *, cache: bool = True) -> RunOnce:
    """An async ``@prefect.flow`` awaiting async ``@prefect.task``s one by one.

    ``cache=True`` keeps Prefect's defaults (the DEFAULT cache policy computes a key per
    call); ``cache=False`` uses beluga_flows' task options (NO_CACHE, no persistence).
    """
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    opts: dict[str, Any] = {} if cache else {"cache_policy": NO_CACHE, "persist_result": False}
    tasks = [task(**opts)(async_body(i, w)) for i in range(w.steps)]

    @flow(name=f"raw-{w.name}")
    async def raw_flow(x: int) -> int:
        for t in tasks:
            x = await t(x)
        return x

    return lambda: raw_flow(0)


def build_bf(w: Workload, *, track: bool, sync: bool = False) -> RunOnce:
    """beluga_flows: a Chain of steps, or for flow-start a ``@bf.flow`` with one step.

    Untracked runs use ``provider="local"`` / ``use_engine("local")``: no Prefect API.
    """
    import beluga_flows as bf

    make = sync_body if sync else async_body
    steps = [bf.step(track=track)(make(i, w)) for i in range(w.steps)]
    provider = None if track else "local"
    if w.name == "flow-start":
        return _bf_flow_start(steps[0], provider)
    chain = bf.Chain(steps, name=w.name, provider=provider)
    return lambda: chain.ainvoke(0)


def _bf_flow_start(first: Any, provider: str | None) -> RunOnce:
    import beluga_flows as bf

    @bf.flow(name="flow-start")
    async def one(x: int) -> int:
        return int(await first.ainvoke(x))

    async def run() -> int:
        if provider is None:
            return int(await one(0))
        with bf.use_engine(provider):
            return int(await one(0))

    return run


# ---------------------------------------------------------------- graph runners
#
# Layered graphs: node i of the graph calls step body i (so the stamps of the first
# and the last node give the per-node cost of a line). In a line (width 1) the nodes
# pass the counter x along; in a wider graph node i is called with its index i (a
# distinct input per task: Prefect's default cache key includes the inputs) and
# appends i to the list ``done``, which has an ``operator.add`` reducer.


def layer_bodies(w: Workload) -> list[list[tuple[int, Callable[[int], Awaitable[int]]]]]:
    """The step bodies of a layered workload, layer by layer, with their node index."""
    return [
        [(k * w.width + j, async_body(k * w.width + j, w)) for j in range(w.width)]
        for k in range(w.layers)
    ]


def node_name(index: int, w: Workload) -> str:
    """Node ``index`` of a layered graph: ``n<layer>_<position>``."""
    return f"n{index // w.width}_{index % w.width}"


async def _limited(limit: asyncio.Semaphore | None, call: Awaitable[Any]) -> Any:
    if limit is None:
        return await call
    async with limit:
        return await call


def _limit(w: Workload) -> asyncio.Semaphore | None:
    """A fresh semaphore per run (it binds to the run's event loop)."""
    return asyncio.Semaphore(w.limit) if w.limit else None


class LayerState(TypedDict, total=False):
    """A layered graph's state: the line counter, the list every fan-out node extends."""

    x: int
    done: Annotated[list[int], operator.add]


def layer_node(
    index: int, fn: Callable[[int], Awaitable[int]], w: Workload
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """Graph node ``index`` (LangGraph and bf): ``state -> updates``."""
    if w.width == 1:

        async def node(state: dict[str, Any]) -> dict[str, Any]:
            return {"x": await fn(state["x"])}

    else:

        async def node(state: dict[str, Any]) -> dict[str, Any]:
            await fn(index)
            return {"done": [index]}

    node.__name__ = node.__qualname__ = node_name(index, w)
    return node


def initial_state(w: Workload) -> dict[str, Any]:
    """The state a layered graph starts from."""
    return {"x": 0} if w.width == 1 else {"x": 0, "done": []}


def layers_asyncio(w: Workload) -> RunOnce:
    """Plain asyncio: ``gather`` per layer (a Semaphore when limited), awaits in a line."""
    layers = layer_bodies(w)

    async def run() -> int:
        x, limit = 0, _limit(w)
        for layer in layers:
            if len(layer) == 1:
                x = await layer[0][1](x)
            else:
                await asyncio.gather(*(_limited(limit, fn(i)) for i, fn in layer))
        return x

    return run


def layers_langgraph(w: Workload) -> RunOnce:
    """A StateGraph: START -> layer 0; each node of layer k+1 joins all of layer k."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(LayerState)
    previous: list[str] = []
    for layer in layer_bodies(w):
        names = [node_name(i, w) for i, _ in layer]
        for (i, fn), name in zip(layer, names, strict=True):
            graph.add_node(name, layer_node(i, fn, w))
            if not previous:
                graph.add_edge(START, name)
            else:
                graph.add_edge(previous if len(previous) > 1 else previous[0], name)
        previous = names
    for name in previous:
        graph.add_edge(name, END)
    app = graph.compile()
    config: Any = {"recursion_limit": w.layers + 10}
    if w.limit:
        config["max_concurrency"] = w.limit

    async def run() -> Any:
        return await app.ainvoke(initial_state(w), config)

    return run


def layers_prefect_raw(w: Workload) -> RunOnce:
    """An async flow: ``asyncio.gather`` of async tasks per layer (a barrier per layer),
    a Semaphore around the awaited tasks when limited; Prefect's task defaults."""
    from prefect import flow, task

    layers = [[(i, task(fn)) for i, fn in layer] for layer in layer_bodies(w)]

    @flow(name=f"raw-{w.name}")
    async def raw_flow(x: int) -> int:
        limit = _limit(w)
        for layer in layers:
            if len(layer) == 1:
                x = await layer[0][1](x)
            else:
                await asyncio.gather(*(_limited(limit, t(i)) for i, t in layer))
        return x

    return lambda: raw_flow(0)


def layers_bf(w: Workload, *, track: bool) -> RunOnce:
    """A ``bf.Graph``: tracked (Prefect engine, a task run per node, a flow run per
    invocation) or inline (``provider="local"``, nodes ``track=False``)."""
    import beluga_flows as bf

    graph = bf.Graph(
        name=w.name,
        max_workers=w.limit or 1000,  # 1000 (the maximum): unbounded here
        reducers={"done": operator.add} if w.width > 1 else None,
        provider=None if track else "local",
    )
    previous: list[str] = []
    for layer in layer_bodies(w):
        names = [node_name(i, w) for i, _ in layer]
        for (i, fn), name in zip(layer, names, strict=True):
            graph.add_node(name, layer_node(i, fn, w), track=None if track else False)
            for before in previous or [bf.START]:
                graph.add_edge(before, name)
        previous = names
    compiled = graph.compile()
    return lambda: compiled.ainvoke(initial_state(w))


# Loops: node "tick" adds 1 to ``count``; the router sends it back until count == steps.


def loop_tick(w: Workload) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """The loop's node, stamping its first entry and its last exit."""
    n = w.steps

    async def tick(state: dict[str, Any]) -> dict[str, Any]:
        count = state["count"]
        if count == 0:
            Marks.first = time.perf_counter()
        count += 1
        if count == n:
            Marks.last = time.perf_counter()
        return {"count": count}

    return tick


def loop_route(w: Workload) -> Callable[[dict[str, Any]], str]:
    """The loop's router: ``again`` until the counter reaches ``steps``."""
    n = w.steps
    return lambda state: "again" if state["count"] < n else "done"


class LoopState(TypedDict):
    """The loop's state: one counter."""

    count: int


def loop_asyncio(w: Workload) -> RunOnce:
    """Plain asyncio: await the node, merge its update, ask the router, repeat."""
    tick, route = loop_tick(w), loop_route(w)

    async def run() -> dict[str, Any]:
        state = {"count": 0}
        while True:
            state.update(await tick(state))
            if route(state) == "done":
                return state

    return run


def loop_langgraph(w: Workload) -> RunOnce:
    """A StateGraph: tick, with a conditional edge back to itself or to END."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(LoopState)
    graph.add_node("tick", loop_tick(w))
    graph.add_edge(START, "tick")
    graph.add_conditional_edges("tick", loop_route(w), {"again": "tick", "done": END})
    app = graph.compile()
    config: Any = {"recursion_limit": 2 * w.steps + 10}
    return lambda: app.ainvoke({"count": 0}, config)


def loop_prefect_raw(w: Workload) -> RunOnce:
    """An async flow awaiting one async task per iteration, the router inline."""
    from prefect import flow, task

    tick, route = task(loop_tick(w)), loop_route(w)

    @flow(name=f"raw-{w.name}")
    async def raw_flow(count: int) -> int:
        state = {"count": count}
        while True:
            state.update(await tick(state))
            if route(state) == "done":
                return state["count"]

    return lambda: raw_flow(0)


def loop_bf(w: Workload, *, track: bool) -> RunOnce:
    """A ``bf.Graph`` with one node and a conditional edge back to it."""
    import beluga_flows as bf

    graph = bf.Graph(name=w.name, max_iterations=w.steps, provider=None if track else "local")
    graph.add_node("tick", loop_tick(w), track=None if track else False)
    graph.set_entry_point("tick")
    graph.add_conditional_edges("tick", loop_route(w), {"again": "tick", "done": bf.END})
    compiled = graph.compile()
    return lambda: compiled.ainvoke({"count": 0})


Builder = Callable[[Workload], RunOnce]
BUILDERS: dict[str, dict[str, Builder]] = {  # runner -> workload kind -> builder
    "asyncio": {"chain": build_asyncio, "layers": layers_asyncio, "loop": loop_asyncio},
    "langgraph": {"chain": build_langgraph, "layers": layers_langgraph, "loop": loop_langgraph},
    "prefect-raw": {
        "chain": build_prefect_raw,
        "layers": layers_prefect_raw,
        "loop": loop_prefect_raw,
    },
    "prefect-raw-nocache": {"chain": lambda w: build_prefect_raw(w, cache=False)},
    "bf-tracked": {
        "chain": lambda w: build_bf(w, track=True),
        "layers": lambda w: layers_bf(w, track=True),
        "loop": lambda w: loop_bf(w, track=True),
    },
    "bf-inline": {
        "chain": lambda w: build_bf(w, track=False),
        "layers": lambda w: layers_bf(w, track=False),
        "loop": lambda w: loop_bf(w, track=False),
    },
    "bf-inline-sync": {"chain": lambda w: build_bf(w, track=False, sync=True)},
}


# ---------------------------------------------------------------- measuring


@dataclass
class Result:
    """What the child reports; times in seconds, one list entry per sample."""

    runner: str
    workload: str
    batch: int = 1
    first_run: float = 0.0
    total: list[float] = field(default_factory=list)
    per_step: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    idle_wait: list[float] = field(default_factory=list)
    rss_mib: float = 0.0
    prefect_imported: bool = False


def server_cpu_seconds(pid: int | None) -> float:
    """User + system CPU of process ``pid`` so far (0 without a server)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int | None, min_idle: float, max_wait: float = 8.0) -> float:
    """Sleep ``min_idle`` s, then until server ``pid`` uses < 10 % of a core; time waited."""
    start = time.perf_counter()
    time.sleep(min_idle)
    while pid is not None and time.perf_counter() - start < max_wait:
        before = server_cpu_seconds(pid)
        time.sleep(0.25)
        if server_cpu_seconds(pid) - before < 0.025:
            break
    return time.perf_counter() - start


async def _drive(run: RunOnce) -> Any:
    return await run()


def timed(run: RunOnce, batch: int, steps: int) -> tuple[float, float, float]:
    """Mean wall time, per-step time inside the run, and client CPU of ``batch`` runs."""
    inner = 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(batch):
        asyncio.run(_drive(run))
        inner += Marks.last - Marks.first
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return wall / batch, inner / batch / steps, cpu / batch


def calibrate(run: RunOnce, steps: int) -> int:
    """Runs per sample so that a sample lasts about BATCH_SECONDS."""
    one = timed(run, 1, steps)[0]
    return max(1, min(MAX_BATCH, math.ceil(BATCH_SECONDS / max(one, 1e-9))))


def measure(res: Result, run: RunOnce, w: Workload, args: argparse.Namespace) -> None:
    """Warm up, then take ``args.runs`` samples into ``res``."""
    prefect = res.runner in PREFECT_RUNNERS
    server = os.environ.get("BENCH_SERVER_PID") if prefect else None
    pid = int(server) if server else None
    idle = args.min_idle if prefect else 0.0
    res.first_run = timed(run, 1, w.steps)[0]
    for _ in range(args.warmup - 1):
        timed(run, 1, w.steps)
    wait_idle(pid, idle)
    long_run = res.first_run >= 4 * BATCH_SECONDS  # no batches: skip the calibration
    res.batch = 1 if prefect or long_run else calibrate(run, w.steps)
    profiler = cProfile.Profile() if args.profile else None
    for _ in range(args.runs):
        cpu0 = server_cpu_seconds(pid)
        if profiler is not None:
            profiler.enable()
        total, per_step, client = timed(run, res.batch, w.steps)
        if profiler is not None:
            profiler.disable()
        res.idle_wait.append(wait_idle(pid, idle))
        res.total.append(total)
        res.per_step.append(per_step)
        res.client_cpu.append(client)
        res.server_cpu.append(server_cpu_seconds(pid) - cpu0)
    if profiler is not None:
        profiler.dump_stats(args.profile)


def peak_rss_mib() -> float:
    """Peak RSS of this process in MiB.

    ``VmHWM`` rather than ``getrusage().ru_maxrss``: on Linux ``ru_maxrss`` survives
    ``execve``, so a child forked from the (bigger) parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the child."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runner", choices=sorted(BUILDERS))
    p.add_argument("workload", choices=sorted(WORKLOADS))
    p.add_argument("--runs", type=int, default=5, help="measured samples after warm-up")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs (>= 1)")
    p.add_argument("--min-idle", type=float, default=1.0, help="Prefect: idle s between runs")
    p.add_argument("--profile", help="write cProfile stats of the measured runs here")
    p.add_argument("--out", help="JSON result file (default: stdout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build the runner, measure it, write the JSON result."""
    args = parse_args(argv)
    w = WORKLOADS[args.workload]
    res = Result(runner=args.runner, workload=w.name)
    builder = BUILDERS[args.runner].get(w.kind)
    if builder is None:
        sys.exit(f"runner {args.runner} has no {w.kind} workloads")
    measure(res, builder(w), w, args)
    res.rss_mib = peak_rss_mib()
    res.prefect_imported = "prefect" in sys.modules
    text = json.dumps(asdict(res))
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
