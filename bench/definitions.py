"""What a declarative definition costs: makespan, per-step overhead, validation, scaling.

Four workloads, all on the local provider (no Prefect server), in one process, the
runners of a workload interleaved sample by sample so that a noisy moment of the
machine falls on all of them alike:

1. **makespan**: a layered definition of 5 x 20 steps; step ``j`` of layer ``k+1``
   depends on steps ``j`` and ``(j+1) % 20`` of layer ``k``, so a fast branch can run
   ahead. Each step ``await asyncio.sleep(d)`` with ``d`` 5-40 ms drawn from a fixed
   seed; ``max_parallel_steps=100`` (the limit never binds). The ideal is the critical
   path (the longest path of durations, computed exactly). Runners: the definition
   (``bf.WorkflowEngine(provider="local").aexecute``), the wave runner
   (``bench/wave.py``: the seed's ready-steps-then-``gather`` loop, a barrier per
   wave) and ``bf.Graph`` (the same DAG, ``provider="local"``, nodes ``track=False``
   returning ``None``).
2. **overhead**: the same 5 x 20 shape with trivial async actions (no sleep); each
   definition step has ``input_mapping: {x: "n + 1"}`` (one CEL expression evaluated
   per step is part of the measured cost); the graph's nodes take the state and return
   ``None``. Per step inside the run (first body entered → last body left, / 100) and
   whole run / 100.
3. **validation**: ``engine.validate(dict)`` of a 1,000-step layered definition (50 x 20)
   whose every step has an ``input_mapping`` expression and a ``conditions`` guard:
   parsing the dict and every check, as a caller pays it.
4. **scaling**: the overhead workload's steps at 50 x 20 (1,000) and 500 x 20 (10,000)
   steps, ``max_parallel_steps=1000``; whole run / steps.

A *run* is ``asyncio.run`` of one execution on a fresh event loop; definitions are
parsed and compiled before timing (the engine keeps the compiled plan; its first run,
reported separately, compiles). Short runs are timed in batches of >= 20 ms.
Medians and ranges; the targets' verdicts are computed here.

    python bench/definitions.py                 # ~1 min; human summary on stderr,
                                                # one JSON dict on stdout (bench/run.py)
    python bench/definitions.py --quick         # fewer samples
    python bench/definitions.py --profile /tmp/def.prof   # cProfile of the overhead
                                                # workload's definition runs only
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import math
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import beluga_flows as bf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wave import WaveRunner

RunOnce = Callable[[], Awaitable[Any]]

LAYERS, WIDTH = 5, 20
SEED = 20261203
MIN_MS, MAX_MS = 5, 40
BATCH_SECONDS = 0.02
MAX_BATCH = 200
QUIET_BUSY = 0.25
TIMES, DASH = "\u00d7", "\u2013"  # multiplication sign, en dash
TARGETS = {"makespan": 1.15, "overhead": 1.5, "validation_s": 0.5, "scaling": 2.0}


class Marks:
    """Stamps: the first step body entered and the last one left in a run."""

    first: float | None = None
    last = 0.0


def enter() -> None:
    if Marks.first is None:
        Marks.first = time.perf_counter()


def leave() -> None:
    Marks.last = time.perf_counter()


# ---------------------------------------------------------------- definitions


def sid(k: int, j: int) -> str:
    return f"s{k}_{j}"


def layered(
    layers: int,
    width: int,
    action: Callable[[int, int], str],
    *,
    inputs: Callable[[int, int], dict[str, str]] | None = None,
    conditions: Callable[[int, int], list[str]] | None = None,
    max_parallel: int = 100,
) -> dict[str, Any]:
    """``layers`` x ``width`` steps; step j of layer k+1 depends on j and (j+1) % width."""
    steps = []
    for k in range(layers):
        for j in range(width):
            step: dict[str, Any] = {"step_id": sid(k, j), "action": action(k, j)}
            if k:
                step["dependencies"] = list(
                    dict.fromkeys([sid(k - 1, j), sid(k - 1, (j + 1) % width)])
                )
            if inputs is not None:
                step["input_mapping"] = inputs(k, j)
            if conditions is not None:
                step["conditions"] = conditions(k, j)
            steps.append(step)
    return {
        "workflow_id": f"bench-{layers}x{width}",
        "steps": steps,
        "max_parallel_steps": max_parallel,
        "timeout": 600,
    }


def durations(layers: int, width: int, seed: int = SEED) -> dict[str, float]:
    """A deterministic duration (MIN_MS..MAX_MS, whole ms) per step."""
    rng = random.Random(seed)
    return {
        sid(k, j): rng.randint(MIN_MS, MAX_MS) / 1000 for k in range(layers) for j in range(width)
    }


def critical_path(definition: Mapping[str, Any], took: Mapping[str, float]) -> float:
    """The longest path of durations (steps are listed after their dependencies)."""
    finish: dict[str, float] = {}
    for s in definition["steps"]:
        start = max((finish[d] for d in s.get("dependencies", ())), default=0.0)
        finish[s["step_id"]] = start + took[s["step_id"]]
    return max(finish.values())


def wave_path(definition: Mapping[str, Any], took: Mapping[str, float]) -> float:
    """What waves cost with free scheduling: the sum of each wave's slowest step."""
    done: set[str] = set()
    pending, total = list(definition["steps"]), 0.0
    while pending:
        ready = [s for s in pending if all(d in done for d in s.get("dependencies", ()))]
        total += max(took[s["step_id"]] for s in ready)
        done |= {s["step_id"] for s in ready}
        pending = [s for s in pending if s["step_id"] not in done]
    return total


# ---------------------------------------------------------------- runners


def definition_runner(
    definition: Mapping[str, Any], actions: Mapping[str, Any], data: Mapping[str, Any]
) -> RunOnce:
    """``bf.WorkflowEngine(provider="local").aexecute`` of the parsed definition."""
    engine = bf.WorkflowEngine(actions=actions, provider="local")
    parsed = bf.WorkflowDefinition.from_dict(definition)
    _ = parsed.definition_hash  # computed once, before timing

    async def run() -> Any:
        result = await engine.aexecute(parsed, data)
        if result.status != "completed":
            raise RuntimeError(f"definition run {result.status}: {result.errors[:1]}")
        return result

    return run


def wave_runner(
    definition: Mapping[str, Any], actions: Mapping[str, Any], data: Mapping[str, Any]
) -> RunOnce:
    """``bench/wave.py``: ready steps, ``gather``, barrier, again."""
    runner = WaveRunner(definition, actions)
    return lambda: runner.run(data)


def graph_runner(
    definition: Mapping[str, Any], node: Callable[[str], Callable[..., Awaitable[None]]]
) -> RunOnce:
    """The definition's DAG as a ``bf.Graph`` (local provider, untracked nodes)."""
    graph = bf.Graph(
        name=definition["workflow_id"],
        max_workers=min(1000, definition["max_parallel_steps"]),
        provider="local",
    )
    for s in definition["steps"]:
        graph.add_node(s["step_id"], node(s["step_id"]), track=False)
        for dep in s.get("dependencies") or [bf.START]:
            graph.add_edge(dep, s["step_id"])
    compiled = graph.compile()
    return lambda: compiled.ainvoke({})


# ---------------------------------------------------------------- timing


async def _drive(run: RunOnce) -> None:
    # The result is dropped here: asyncio.run's SIGINT handling formats the main task's
    # repr (its result included) when it restores the handler — ~1 ms for an
    # ExecutionResult of 100 steps, a cost of asyncio.run, not of the engine.
    await run()


def timed(run: RunOnce, batch: int, steps: int) -> tuple[float, float, float]:
    """Mean wall time, per step inside the run, client CPU of ``batch`` runs."""
    inner = 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(batch):
        Marks.first = None
        asyncio.run(_drive(run))
        inner += Marks.last - (Marks.first or Marks.last)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return wall / batch, inner / batch / steps, cpu / batch


def batch_for(run: RunOnce, steps: int) -> int:
    one = min(timed(run, 1, steps)[0] for _ in range(3))
    return max(1, min(MAX_BATCH, math.ceil(BATCH_SECONDS / max(one, 1e-9))))


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": values,
    }


def interleaved(
    runners: Mapping[str, RunOnce], steps: int, samples: int, batches: bool
) -> dict[str, dict[str, Any]]:
    """Warm up each runner, then ``samples`` samples each, the order rotating."""
    names = list(runners)
    first = {n: timed(runners[n], 1, steps)[0] for n in names}
    batch = {n: batch_for(runners[n], steps) if batches else 1 for n in names}
    out: dict[str, dict[str, list[float]]] = {
        n: {"total": [], "per_step": [], "cpu": []} for n in names
    }
    for i in range(samples):
        for n in names[i % len(names) :] + names[: i % len(names)]:
            total, per_step, cpu = timed(runners[n], batch[n], steps)
            out[n]["total"].append(total)
            out[n]["per_step"].append(per_step)
            out[n]["cpu"].append(cpu)
    return {
        n: {
            "first_run": first[n],
            "batch": batch[n],
            "total": stats(out[n]["total"]),
            "per_step": stats(out[n]["per_step"]),
            "per_step_run": stats([t / steps for t in out[n]["total"]]),
            "cpu": stats(out[n]["cpu"]),
        }
        for n in names
    }


# ---------------------------------------------------------------- workloads


def makespan(samples: int) -> dict[str, Any]:
    took = durations(LAYERS, WIDTH)
    definition = layered(LAYERS, WIDTH, action=lambda k, j: sid(k, j))

    def sleeper(d: float) -> Callable[..., Awaitable[None]]:
        async def act(_: Any = None) -> None:
            await asyncio.sleep(d)

        return act

    actions = {name: sleeper(d) for name, d in took.items()}
    runners = {
        "definition": definition_runner(definition, actions, {}),
        "wave": wave_runner(definition, actions, {}),
        "graph": graph_runner(definition, lambda s: sleeper(took[s])),
    }
    measured = interleaved(runners, LAYERS * WIDTH, samples, batches=False)
    return {
        "shape": f"{LAYERS}x{WIDTH}",
        "ideal_s": critical_path(definition, took),
        "wave_ideal_s": wave_path(definition, took),
        "sum_s": sum(took.values()),
        "runners": {
            n: {"first_run": r["first_run"], "total": r["total"]} for n, r in measured.items()
        },
    }


async def inc(x: int) -> int:
    enter()
    leave()
    return x


async def node(_: Any) -> None:
    enter()
    leave()


def trivial(layers: int, width: int, max_parallel: int = 100) -> dict[str, Any]:
    return layered(
        layers,
        width,
        action=lambda k, j: "inc",
        inputs=lambda k, j: {"x": "n + 1"},
        max_parallel=max_parallel,
    )


def overhead(samples: int) -> dict[str, Any]:
    definition = trivial(LAYERS, WIDTH)
    runners = {
        "definition": definition_runner(definition, {"inc": inc}, {"n": 1}),
        "graph": graph_runner(definition, lambda s: node),
    }
    return {
        "shape": f"{LAYERS}x{WIDTH}",
        "runners": interleaved(runners, LAYERS * WIDTH, samples, batches=True),
    }


def validation(runs: int) -> dict[str, Any]:
    width, layers = 20, 50
    definition = layered(
        layers,
        width,
        action=lambda k, j: "inc",
        inputs=lambda k, j: {"x": f"n * {k + 1} + {j}"},
        conditions=lambda k, j: [f"n >= {-(k * width + j)} && size(label) > 0"],
    )
    engine = bf.WorkflowEngine(actions={"inc": inc}, provider="local")
    problems = engine.validate(definition)
    if problems:
        raise RuntimeError(f"validation workload is invalid: {problems[:3]}")
    parsed = bf.WorkflowDefinition.from_dict(definition)
    whole, parse, checks = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        engine.validate(definition)
        t1 = time.perf_counter()
        bf.WorkflowDefinition.from_dict(definition)
        t2 = time.perf_counter()
        engine.validate(parsed)
        t3 = time.perf_counter()
        whole.append(t1 - t0)
        parse.append(t2 - t1)
        checks.append(t3 - t2)
    return {
        "steps": layers * width,
        "expressions": 2 * layers * width,
        "validate_s": stats(whole),
        "parse_s": stats(parse),
        "checks_s": stats(checks),
    }


def scaling(samples: int) -> dict[str, Any]:
    sizes = {1000: trivial(50, WIDTH, 1000), 10000: trivial(500, WIDTH, 1000)}
    found: dict[str, Any] = {}
    runners = {str(n): definition_runner(d, {"inc": inc}, {"n": 1}) for n, d in sizes.items()}
    for n, run in runners.items():  # the first run compiles: timed apart
        t0 = time.perf_counter()
        asyncio.run(_drive(run))
        found[n] = {"first_run": time.perf_counter() - t0}
    for n, run in runners.items():
        steps = int(n)
        per_step, per_step_run = [], []
        for _ in range(samples):
            total, inner, _cpu = timed(run, 1, steps)
            per_step.append(inner)
            per_step_run.append(total / steps)
        found[n].update(per_step=stats(per_step), per_step_run=stats(per_step_run))
    return {"width": WIDTH, "max_parallel_steps": 1000, "sizes": found}


# ---------------------------------------------------------------- verdicts


def fmt(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The four targets: statement, what was measured (medians), met or not."""
    x = TIMES
    m = r["makespan"]
    ideal = m["ideal_s"]
    ratio = {n: v["total"]["median"] / ideal for n, v in m["runners"].items()}
    o = r["overhead"]["runners"]
    d_in, g_in = o["definition"]["per_step"]["median"], o["graph"]["per_step"]["median"]
    d_run, g_run = o["definition"]["per_step_run"]["median"], o["graph"]["per_step_run"]["median"]
    v = r["validation"]
    val = v["validate_s"]
    s = r["scaling"]["sizes"]
    small, big = s["1000"]["per_step_run"]["median"], s["10000"]["per_step_run"]["median"]
    small_in, big_in = s["1000"]["per_step"]["median"], s["10000"]["per_step"]["median"]
    makespan = m["runners"]["definition"]["total"]["median"]
    return [
        {
            "target": f"definition makespan ≤ {TARGETS['makespan']}{x} ideal (5 {x} 20, "
            f"uneven sleeps, critical path {fmt(ideal)})",
            "measured": f"definition {fmt(makespan)} = **{ratio['definition']:.3g}{x} ideal** "
            f"(bf.Graph {ratio['graph']:.3g}{x}, wave runner {ratio['wave']:.3g}{x}; "
            f"a wave barrier's floor {m['wave_ideal_s'] / ideal:.3g}{x})",
            "met": ratio["definition"] <= TARGETS["makespan"],
        },
        {
            "target": f"definition per step ≤ {TARGETS['overhead']}{x} bf.Graph node per step "
            f"(5 {x} 20 trivial, one CEL input expression per step)",
            "measured": f"inside the run {fmt(d_in)} vs {fmt(g_in)} = **{d_in / g_in:.3g}{x}**; "
            f"whole run / 100: {fmt(d_run)} vs {fmt(g_run)} = {d_run / g_run:.3g}{x}",
            "met": d_in / g_in <= TARGETS["overhead"],
        },
        {
            "target": f"engine.validate() of a 1,000-step definition < {TARGETS['validation_s']} s",
            "measured": f"**{fmt(val['median'])}** (range {fmt(val['min'])}{DASH}"
            f"{fmt(val['max'])}; parse {fmt(v['parse_s']['median'])}, checks "
            f"{fmt(v['checks_s']['median'])})",
            "met": val["median"] < TARGETS["validation_s"],
        },
        {
            "target": f"(linear) definition per step at 10,000 steps ≤ {TARGETS['scaling']}{x} "
            "at 1,000",
            "measured": f"whole run / steps {fmt(big)} vs {fmt(small)} = "
            f"**{big / small:.3g}{x}** (inside the run {fmt(big_in)} vs {fmt(small_in)} = "
            f"{big_in / small_in:.3g}{x})",
            "met": big / small <= TARGETS["scaling"],
        },
    ]


# ---------------------------------------------------------------- main


def cpu_busy(window: float = 0.5) -> float:
    """Fraction of all CPUs busy over the next ``window`` seconds (/proc/stat)."""

    def ticks() -> tuple[int, int]:
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(values), values[3] + values[4]

    (t0, i0), _ = ticks(), time.sleep(window)
    t1, i1 = ticks()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_wait: float) -> float:
    deadline = time.perf_counter() + max_wait
    busy = cpu_busy()
    while busy > QUIET_BUSY and time.perf_counter() < deadline:
        busy = cpu_busy()
    return busy


def summary(r: dict[str, Any]) -> str:
    lines = [f"machine busy at start: {r['busy_before']:.0%}, took {r['wall_s']:.0f} s"]
    m = r["makespan"]
    lines.append(f"makespan 5x20: ideal {fmt(m['ideal_s'])}, waves' floor {fmt(m['wave_ideal_s'])}")
    for n, v in m["runners"].items():
        t = v["total"]
        lines.append(
            f"  {n:<11}{fmt(t['median']):>10}  {t['median'] / m['ideal_s']:.3g}x ideal  "
            f"({fmt(t['min'])}-{fmt(t['max'])})"
        )
    lines.append("overhead 5x20 trivial: per step inside the run / whole run per step")
    for n, v in r["overhead"]["runners"].items():
        lines.append(
            f"  {n:<11}{fmt(v['per_step']['median']):>10} / {fmt(v['per_step_run']['median'])}"
            f"  (batch {v['batch']}, first run {fmt(v['first_run'])})"
        )
    val = r["validation"]
    lines.append(
        f"validate 1,000 steps: {fmt(val['validate_s']['median'])} (parse "
        f"{fmt(val['parse_s']['median'])}, checks {fmt(val['checks_s']['median'])})"
    )
    for n, v in r["scaling"]["sizes"].items():
        lines.append(
            f"scaling {n:>6} steps: {fmt(v['per_step_run']['median'])} per step (whole run), "
            f"{fmt(v['per_step']['median'])} inside, first run {fmt(v['first_run'])}"
        )
    for t in r["targets"]:
        lines.append(f"[{'met' if t['met'] else 'NOT MET'}] {t['target']}: {t['measured']}")
    return "\n".join(lines)


def profile(path: str, runs: int) -> None:
    """cProfile ``runs`` runs of the overhead workload's definition runner."""
    run = definition_runner(trivial(LAYERS, WIDTH), {"inc": inc}, {"n": 1})
    timed(run, 3, LAYERS * WIDTH)
    profiler = cProfile.Profile()
    profiler.enable()
    timed(run, runs, LAYERS * WIDTH)
    profiler.disable()
    profiler.dump_stats(path)
    print(f"wrote {path} ({runs} runs of {LAYERS * WIDTH} steps)", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer samples")
    p.add_argument("--profile", help="only profile the overhead workload's definition runs")
    p.add_argument("--profile-runs", type=int, default=200)
    p.add_argument("--quiet-wait", type=float, default=30.0, help="wait this long for < 25 % CPU")
    args = p.parse_args(argv)
    # A run twice as long as the engine's baseline (its last 20 runs) is an "anomaly"
    # alert, logged as a warning; the alert is still computed, its log line not shown.
    logging.getLogger("beluga_flows.definitions").setLevel(logging.ERROR)
    if args.profile:
        return profile(args.profile, args.profile_runs)
    quick = args.quick
    started = time.perf_counter()
    result: dict[str, Any] = {
        "busy_before": wait_quiet(args.quiet_wait),
        "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    result["makespan"] = makespan(5 if quick else 11)
    result["overhead"] = overhead(9 if quick else 21)
    result["validation"] = validation(3 if quick else 7)
    result["scaling"] = scaling(3 if quick else 7)
    result["wall_s"] = time.perf_counter() - started
    result["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    result["mode"] = "quick" if quick else "normal"
    result["targets"] = targets(result)
    print(summary(result), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
