"""One benchmark child: one runner on one workload in a fresh process, JSON out.

``bench/run.py`` starts one of these per (runner, workload) so no runner shares warm
state, imports or memory with another. Run by hand for a single row::

    python bench/child.py bf-inline chain50-trivial --runs 5 --out /tmp/row.json

A *run* is ``asyncio.run(...)`` of one invocation on a fresh event loop, for every
runner (so the asyncio baseline of a one-step run includes creating the loop, as in
``/work/shared/ANCHORS.md``). Graphs, chains, tasks and flows are built once, before
timing. Fast runners time batches of runs (each sample is a batch mean of >= 20 ms);
Prefect runners time single runs and wait for the server to go idle between them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

RunOnce = Callable[[], Awaitable[Any]]

PREFECT_RUNNERS = ("prefect-raw", "prefect-raw-nocache", "bf-tracked")
BATCH_SECONDS = 0.02  # a fast runner's sample is the mean of a batch this long
MAX_BATCH = 500


@dataclass(frozen=True)
class Workload:
    """``steps`` steps in a line, each sleeping ``delay`` seconds then returning x + 1."""

    name: str
    steps: int
    delay: float


WORKLOADS = {
    w.name: w
    for w in (
        Workload("chain50-trivial", 50, 0.0),
        Workload("chain50-io", 50, 0.01),
        Workload("flow-start", 1, 0.0),
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


BUILDERS: dict[str, Callable[[Workload], RunOnce]] = {
    "asyncio": build_asyncio,
    "langgraph": build_langgraph,
    "prefect-raw": build_prefect_raw,
    "prefect-raw-nocache": lambda w: build_prefect_raw(w, cache=False),
    "bf-tracked": lambda w: build_bf(w, track=True),
    "bf-inline": lambda w: build_bf(w, track=False),
    "bf-inline-sync": lambda w: build_bf(w, track=False, sync=True),
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
    res.batch = 1 if prefect else calibrate(run, w.steps)
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
    measure(res, BUILDERS[args.runner](w), w, args)
    res.rss_mib = peak_rss_mib()
    res.prefect_imported = "prefect" in sys.modules
    text = json.dumps(asdict(res))
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
