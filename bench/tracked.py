"""Tracked beluga_flows against the plain Prefect shapes a user writes, in one process.

Five shapes, each written twice (or three times) and measured alternately, run by run,
against one real Prefect server (SQLite) that is idle before every run:

* ``run-start``: one run with one trivial step. Raw: an ``@flow async`` awaiting one
  ``@task async``. beluga_flows: an ``@bf.flow`` awaiting one ``@bf.step``; a one-step
  ``bf.Chain`` invoked outside a flow (its own flow run).
* ``line50``: 50 trivial steps in a line (``x + 1``). Raw: the flow awaiting 50 tasks
  one by one. beluga_flows: an ``@bf.flow`` awaiting 50 steps; a ``bf.Chain`` of 50.
* ``gather100``: a flow ``asyncio.gather``-ing 100 steps that sleep 0.1 s (raw tasks;
  ``step.ainvoke`` calls in an ``@bf.flow``).
* ``fanout100``: raw, the flow gathering 100 tasks (0.1 s); beluga_flows, a compiled
  ``bf.Graph`` of 100 nodes from START (``max_workers=1000``): its own flow run.
* ``diamond5x20``: 5 layers x 20 nodes x 20 ms. Raw: the flow gathering each layer (a
  barrier per layer). beluga_flows: a ``bf.Graph`` with an edge from every node of a
  layer to every node of the next (a node starts when its predecessors are done).

Raw tasks and flows are ``prefect.task(fn)`` / ``@prefect.flow`` with no options, so
they keep Prefect's defaults as a new user gets them (the DEFAULT cache policy, result
persistence off); the client runs with Prefect's default settings (INFO logs to the
API included), only ``PREFECT_API_URL`` and a private ``PREFECT_HOME`` set.

Method: one process (shapes built before timing, one warm-up run per runner and
shape), ``--rounds`` rounds, each ``--runs`` runs per runner and shape, the runners
of a shape alternating run by run (the first one rotating). Before every run: a full
garbage collection in the client (``gc.collect()``: every run starts with the same
collector state, instead of a ~100 ms generation-2 collection falling on one run in
four at random), sleep ``--min-idle`` s, then until the server uses < 10 % of a core.
Per run: wall time (``asyncio.run`` of one invocation), client CPU
(``time.process_time`` over the run), server CPU (psutil, from the run's start until
the server is idle again), and what the run sent to the API (``bench/apicount.py``:
requests without the log worker's batches, events, log records). Medians over all
rounds.

    python bench/tracked.py             # ~13 min; summary on stderr, JSON on stdout
    python bench/tracked.py --runs 2 --rounds 1 --shapes run-start,line50   # a quick look
    python bench/run.py --only tracked  # the same, and its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from child import (  # noqa: E402
    Workload,
    async_body,
    build_bf,
    build_prefect_raw,
    layered,
    layers_bf,
    layers_prefect_raw,
)
from report import NONE, TIMES, fmt_time  # noqa: E402  (bench/ is not a package)

RunOnce = Callable[[], Awaitable[Any]]
TARGET = 1.05  # bf-tracked / raw, medians
RAW = "raw"

# shape -> (what it is, its workload, its runners in display order)
SHAPES: dict[str, tuple[str, Workload, tuple[str, ...]]] = {
    "run-start": (
        "one run with one trivial step",
        Workload("run-start", 1, 0.0),
        (RAW, "bf-flow", "bf-chain"),
    ),
    "line50": (
        "50 trivial steps in a line (`x + 1`)",
        Workload("line50", 50, 0.0),
        (RAW, "bf-flow", "bf-chain"),
    ),
    "gather100": (
        "a flow gathering 100 steps that sleep 0.1 s",
        layered("gather100", 1, 100, 0.1),
        (RAW, "bf-flow"),
    ),
    "fanout100": (
        f"a graph fan-out: 100 nodes {TIMES} 0.1 s",
        layered("fanout100", 1, 100, 0.1),
        (RAW, "bf-graph"),
    ),
    "diamond5x20": (
        f"5 layers {TIMES} 20 nodes {TIMES} 20 ms, each layer joined on the one before",
        layered("diamond5x20", 5, 20, 0.02),
        (RAW, "bf-graph"),
    ),
}
RUNNERS = {
    RAW: "raw Prefect",
    "bf-flow": "`@bf.flow` + `@bf.step`",
    "bf-chain": "`bf.Chain` outside a flow",
    "bf-graph": "`bf.Graph` (compiled)",
}
WHAT = {
    ("run-start", RAW): "`@flow async` awaiting one `@task async`",
    ("run-start", "bf-flow"): "`@bf.flow async` awaiting one `@bf.step` (`step.ainvoke`)",
    ("run-start", "bf-chain"): "`await bf.Chain([step]).ainvoke(0)`: its own flow run",
    ("line50", RAW): "`@flow async` awaiting 50 `@task async` one by one",
    ("line50", "bf-flow"): "`@bf.flow async` awaiting 50 `@bf.step`s one by one",
    ("line50", "bf-chain"): "`await bf.Chain(50 steps).ainvoke(0)`: its own flow run",
    ("gather100", RAW): "`@flow async`: `asyncio.gather` of 100 `@task async` calls",
    ("gather100", "bf-flow"): "`@bf.flow async`: `asyncio.gather` of 100 `step.ainvoke` calls",
    ("fanout100", RAW): "`@flow async`: `asyncio.gather` of 100 tasks",
    ("fanout100", "bf-graph"): "`bf.Graph(max_workers=1000)`, 100 nodes from START, "
    "`compiled.ainvoke(state)`: its own flow run",
    ("diamond5x20", RAW): "`@flow async`: `asyncio.gather` per layer (a barrier per layer)",
    ("diamond5x20", "bf-graph"): "`bf.Graph`: edges from every node of a layer to every "
    "node of the next; a node starts when its predecessors are done",
}


# ---------------------------------------------------------------- the shapes


def bf_flow(w: Workload) -> RunOnce:
    """``@bf.flow`` awaiting ``w.steps`` steps in a line, or gathering them (width > 1)."""
    import beluga_flows as bf

    steps = [bf.step(async_body(i, w)) for i in range(w.steps)]
    if w.width > 1:

        @bf.flow(name=f"bf-{w.name}")
        async def gathered(x: int) -> int:
            await asyncio.gather(*(s.ainvoke(i) for i, s in enumerate(steps)))
            return x

        return lambda: gathered(0)

    @bf.flow(name=f"bf-{w.name}")
    async def line(x: int) -> int:
        for s in steps:
            x = await s.ainvoke(x)
        return x

    return lambda: line(0)


def build(shape: str, runner: str, w: Workload | None = None) -> RunOnce:
    """The run of ``runner`` on ``shape`` (``w`` overrides the shape's size: tests)."""
    w = w or SHAPES[shape][1]
    if runner == RAW:
        return layers_prefect_raw(w) if w.kind == "layers" else build_prefect_raw(w)
    if runner == "bf-flow":
        return bf_flow(w)
    if runner == "bf-chain":
        return build_bf(w, track=True)
    if runner == "bf-graph":
        return layers_bf(w, track=True)
    raise ValueError(f"unknown runner {runner!r}")


# ---------------------------------------------------------------- measuring


class Server:
    """The server process's CPU (its children included), for idleness and cost."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)

    def cpu(self) -> float:
        procs = [self.proc, *self.proc.children(recursive=True)]
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
            except Exception:  # a child that just ended
                continue
            total += t.user + t.system
        return total

    def wait_idle(self, min_idle: float, max_wait: float = 15.0) -> float:
        """Sleep ``min_idle`` s, then until the server uses < 10 % of a core."""
        start = time.perf_counter()
        time.sleep(min_idle)
        while time.perf_counter() - start < max_wait:
            before = self.cpu()
            time.sleep(0.25)
            if self.cpu() - before < 0.025:
                break
        return time.perf_counter() - start


def measure_one(run: RunOnce, server: Server, count: Any, min_idle: float) -> dict[str, Any]:
    """One run after a full collection and with the server idle: times, CPU and what
    it sent to the API."""
    gc.collect()
    server.wait_idle(min_idle)
    before = count.totals()
    s0, c0, t0 = server.cpu(), time.process_time(), time.perf_counter()
    asyncio.run(_drive(run))
    wall, client = time.perf_counter() - t0, time.process_time() - c0
    server.wait_idle(0.0)  # its post-processing of this run belongs to this run
    after = count.totals()
    return {
        "wall": wall,
        "client_cpu": client,
        "server_cpu": server.cpu() - s0,
        "requests": after[0] - before[0],
        "events": after[1] - before[1],
        "logs": after[2] - before[2],
    }


async def _drive(run: RunOnce) -> Any:
    return await run()


def bench(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """Every shape: warm-up, then the rounds, runners alternating run by run."""
    from apicount import ApiCount

    shapes = [s for s in SHAPES if s in args.shapes.split(",")]
    runs = {s: {r: build(s, r) for r in SHAPES[s][2]} for s in shapes}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        s: {r: [] for r in runs[s]} for s in shapes
    }
    with ApiCount() as count:
        first = {s: {r: _first(fn, server) for r, fn in runs[s].items()} for s in shapes}
        # The events worker reads each flow once per process (to relate its events):
        # done for every flow now, not in some measured run.
        ApiCount.drain()
        for rnd in range(args.rounds):
            for shape in shapes:
                order = list(runs[shape])
                for i in range(args.runs):
                    k = (i + rnd) % len(order)
                    for runner in order[k:] + order[:k]:
                        sample = measure_one(runs[shape][runner], server, count, args.min_idle)
                        sample["round"] = rnd
                        samples[shape][runner].append(sample)
                print(f"  round {rnd + 1}: {shape} done", file=sys.stderr, flush=True)
    return {"samples": samples, "first_run": first}


def _first(run: RunOnce, server: Server) -> float:
    """The first (warm-up) run, with the server idle: it includes building the tasks
    and flows and the first API round trips."""
    gc.collect()
    server.wait_idle(0.0)
    t0 = time.perf_counter()
    asyncio.run(_drive(run))
    return time.perf_counter() - t0


def summarize(samples: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians, ranges, ratios to raw and the counts (with whether they varied)."""
    out: dict[str, Any] = {}
    for shape, by_runner in samples.items():
        rows: dict[str, Any] = {}
        for runner, runs in by_runner.items():
            row: dict[str, Any] = {"n": len(runs)}
            for key in ("wall", "client_cpu", "server_cpu"):
                values = [r[key] for r in runs]
                row[key] = statistics.median(values)
                row[key + "_range"] = (min(values), max(values))
            for key in ("requests", "events", "logs"):
                values = sorted({r[key] for r in runs})
                row[key] = statistics.median(r[key] for r in runs)
                row[key + "_seen"] = values
            rows[runner] = row
        raw = rows[RAW]
        for runner, row in rows.items():
            row["ratio"] = row["wall"] / raw["wall"]
            by_round = [
                statistics.median(s["wall"] for s in by_runner[runner] if s["round"] == k)
                / statistics.median(s["wall"] for s in by_runner[RAW] if s["round"] == k)
                for k in sorted({s["round"] for s in by_runner[RAW]})
            ]
            row["ratio_by_round"] = by_round
        out[shape] = rows
    return out


def per_task_run(summary: dict[str, Any]) -> dict[str, Any]:
    """API requests / events / log records per flow run and per task run, by runner
    kind: from run-start (1 task run) and line50 (50), as (line50 - run-start) / 49."""
    if "run-start" not in summary or "line50" not in summary:
        return {}
    one, fifty = summary["run-start"], summary["line50"]
    out: dict[str, Any] = {}
    for runner in one:
        if runner not in fifty:
            continue
        row = {}
        for key in ("requests", "events", "logs"):
            task = (fifty[runner][key] - one[runner][key]) / 49
            row[key + "_per_task"] = task
            row[key + "_per_flow"] = one[runner][key] - task
        out[runner] = row
    return out


def verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue-16 targets: each bf runner's median at most 1.05 times raw's, per shape."""
    found = []
    for shape, rows in summary.items():
        for runner, row in rows.items():
            if runner == RAW:
                continue
            found.append(
                {
                    "shape": shape,
                    "runner": runner,
                    "ratio": row["ratio"],
                    "met": row["ratio"] <= TARGET,
                    "counts_equal": all(
                        row[k] == rows[RAW][k] for k in ("requests", "events", "logs")
                    ),
                }
            )
    return found


# ---------------------------------------------------------------- output


def fmt_count(value: float, seen: list[int]) -> str:
    text = f"{value:g}"
    return text if len(seen) == 1 else f"{text} ({min(seen)}{NONE}{max(seen)})"


BEGIN = "<!-- tracked: written by bench/run.py, from bench/tracked.py -->"
END = "<!-- tracked: end -->"


def markdown(result: dict[str, Any]) -> list[str]:
    """The RESULTS.md section (between markers: ``bench/run.py --only tracked``)."""
    summary, meta = result["summary"], result["meta"]
    targets = [
        f"| shape | beluga_flows | median vs raw | each round | verdict (≤ {TARGET}{TIMES}) | "
        "requests / events / logs per run equal to raw |",
        "|---|---|---|---|---|---|",
    ]
    for v in result["verdicts"]:
        by_round = summary[v["shape"]][v["runner"]]["ratio_by_round"]
        rounds = " / ".join(f"{r:.2f}{TIMES}" for r in by_round)
        targets.append(
            f"| {v['shape']} | {RUNNERS[v['runner']]} | **{v['ratio']:.2f}{TIMES}** | {rounds} | "
            f"{'**met**' if v['met'] else '**not met**'} | "
            f"{'yes' if v['counts_equal'] else '**no**'} |"
        )
    table = [
        f"| shape | runner | what runs | wall (median) | {TIMES} raw | range | client CPU / run | "
        "server CPU / run | API requests / run | events / run | log records / run | "
        "first run | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, rows in summary.items():
        for runner, row in rows.items():
            lo, hi = row["wall_range"]
            table.append(
                f"| {shape} | {runner} | {WHAT[(shape, runner)]} | {fmt_time(row['wall'])} | "
                f"{row['ratio']:.2f}{TIMES} | {fmt_time(lo)}{NONE}{fmt_time(hi)} | "
                f"{fmt_time(row['client_cpu'])} | {fmt_time(row['server_cpu'])} | "
                f"{fmt_count(row['requests'], row['requests_seen'])} | "
                f"{fmt_count(row['events'], row['events_seen'])} | "
                f"{fmt_count(row['logs'], row['logs_seen'])} | "
                f"{fmt_time(result['first_run'][shape][runner])} | {row['n']} |"
            )
    unit = [
        "| runner | requests per flow run | events per flow run | log records per flow run | "
        "requests per task run | events per task run | log records per task run |",
        "|---|---|---|---|---|---|---|",
    ]
    for runner, row in result["per_task_run"].items():
        unit.append(
            f"| {runner} | {row['requests_per_flow']:g} | {row['events_per_flow']:g} | "
            f"{row['logs_per_flow']:g} | {row['requests_per_task']:g} | "
            f"{row['events_per_task']:g} | {row['logs_per_task']:g} |"
        )
    busy = meta["busy_before"]
    return [
        BEGIN,
        "## tracked: beluga_flows' tracked mode against the plain Prefect shapes\n",
        f"`bench/tracked.py` on {meta['date']} ({meta['wall_s'] / 60:.0f} min): one process, "
        f"one Prefect {meta['prefect']} server (SQLite, up in {meta['server_start_s']:.0f} s); "
        f"{meta['rounds']} round{'s' if meta['rounds'] > 1 else ''} {TIMES} {meta['runs']} "
        "runs per runner and shape, the runners of "
        "a shape alternating run by run; before every run a full garbage collection in the "
        f"client, ≥ {meta['min_idle']:g} s and the server idle (< 10 % of a core); one "
        "warm-up run each (*first run*, the server idle before it too). "
        f"Machine {busy:.0%} busy at start"
        + (" (**busy: numbers less reliable**)" if busy > 0.25 else "")
        + f", load average {meta['load_before']} / {meta['load_after']}. The client runs with "
        "Prefect's default settings (INFO logs to the API); raw tasks and flows are "
        "`prefect.task(fn)` / `@prefect.flow` without options (Prefect's DEFAULT cache "
        "policy, no result persistence). Shapes and method: the docstring of "
        "[`tracked.py`](tracked.py).\n",
        "\n".join(targets) + "\n",
        "\n".join(table) + "\n",
        "What a run sends to the API, per flow run and per task run (from run-start and "
        "line50: per task run = (line50 - run-start) / 49). *Requests* leave out the log "
        "worker's `POST /logs/` batches (their number depends on timing; the *log records* "
        "they carry are counted). A Prefect 3 task run is reported by events "
        "(Pending, Running, Completed), not by requests. The same counts are asserted by "
        "`tests/test_tracked_cost.py`.\n",
        "\n".join(unit) + "\n",
        "*client CPU / run*: `time.process_time()` of the process over the run (every "
        "thread: the events and log workers included); *server CPU / run*: the server "
        "process from the run's start until it is idle again.\n",
        END + "\n",
    ]


def summary_text(result: dict[str, Any]) -> str:
    """A short human summary for stderr."""
    lines = []
    for shape, rows in result["summary"].items():
        for runner, row in rows.items():
            lines.append(
                f"{shape:12} {runner:9} {fmt_time(row['wall']):>8} {row['ratio']:.2f}x  "
                f"cpu {fmt_time(row['client_cpu']):>8} server {fmt_time(row['server_cpu']):>8}  "
                f"req {row['requests']:g} ev {row['events']:g} logs {row['logs']:g}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="runs per runner, shape and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-idle", type=float, default=0.6, help="s before each run")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--api-url", help="an existing server (default: start one)")
    p.add_argument("--server-pid", type=int, help="its process id (with --api-url)")
    args = p.parse_args(argv)

    from run import cpu_busy, loadavg, version, wait_quiet

    from beluga_flows.tools.server import LocalServer

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="beluga-tracked-"))
    server: LocalServer | None = None
    if args.api_url is None:
        server = LocalServer.start(home=tmp / "server")
        assert server.process is not None
        api_url, pid = server.api_url, server.process.pid
    else:
        api_url, pid = args.api_url, args.server_pid
    up = time.perf_counter() - started
    # Prefect's defaults otherwise: nothing of beluga's logging config or levels.
    for key in [k for k in os.environ if k.startswith(("PREFECT_", "BELUGA_"))]:
        del os.environ[key]
    os.environ.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(tmp / "client"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "busy_before": wait_quiet(30.0),
        "load_before": loadavg(),
        "prefect": version("prefect"),
        "server_start_s": up,
        "runs": args.runs,
        "rounds": args.rounds,
        "min_idle": args.min_idle,
    }
    try:
        measured = bench(args, Server(pid))
    finally:
        if server is not None:
            server.stop()
    meta["load_after"] = loadavg()
    meta["busy_after"] = cpu_busy()
    meta["wall_s"] = time.perf_counter() - started
    summary = summarize(measured["samples"])
    result = {
        "meta": meta,
        "summary": summary,
        "per_task_run": per_task_run(summary),
        "verdicts": verdicts(summary),
        "first_run": measured["first_run"],
        "samples": measured["samples"],
    }
    print(summary_text(result), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
