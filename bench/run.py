"""beluga_flows benchmark: runners x workloads, one child process per pair.

Usage::

    python bench/run.py               # normal mode (~20-25 min on 2 cores), writes RESULTS.md
    python bench/run.py --quick       # fewer repetitions (< 3 min)
    python bench/run.py --only graph  # only the graph workloads (or: --only chain)
    python bench/run.py --only definitions  # only bench/definitions.py (~1 min); replaces
                                            # its own section of RESULTS.md, keeps the rest
    python bench/run.py --only streaming    # only bench/streaming.py (~1 min), the same way
    python bench/run.py --only tracked      # only bench/tracked.py (~13 min; --quick: ~3 min),
                                            # replacing its own section the same way

Fast runners (asyncio, langgraph, bf-inline, bf-inline-sync) are measured first on a
quiet machine; then one real Prefect server is started and the Prefect runners
(prefect-raw, prefect-raw-nocache, bf-tracked) report to it, each in its own process
with its own PREFECT_HOME, waiting for the server to go idle between runs.
See bench/README.md for what each runner is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import tracked
from report import (
    NONE,
    TIMES,
    TITLES,
    Row,
    Target,
    fmt_time,
    scale_table,
    table,
    targets,
    targets_markdown,
)

from beluga_flows.tools.server import LocalServer

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"
CHAIN_WORKLOADS = ("chain50-trivial", "chain50-io", "flow-start")
GRAPH_WORKLOADS = (
    "fanout100",
    "fanout100-max10",
    "diamond5x20",
    "loop100",
    "graph1k-inline",
    "graph10k-inline",
)
WORKLOADS = CHAIN_WORKLOADS + GRAPH_WORKLOADS
GROUPS = {
    "chain": CHAIN_WORKLOADS,
    "graph": GRAPH_WORKLOADS,
    "workflow": (),
    "definitions": (),
    "streaming": (),
    "tracked": (),
}
SECTIONS = ("definitions", "streaming", "tracked")  # --only X replaces only its own section
SCALE_WORKLOADS = ("graph1k-inline", "graph10k-inline")  # one table for both
LONG_WORKLOADS = ("chain50-io", "fanout100-max10")  # runs of >= 0.5 s: fewer samples
FAST_RUNNERS = ("asyncio", "langgraph", "bf-inline", "bf-inline-sync")
PREFECT_RUNNERS = ("prefect-raw", "prefect-raw-nocache", "bf-tracked")
DISPLAY_ORDER = ("asyncio", "langgraph", *PREFECT_RUNNERS, "bf-inline", "bf-inline-sync")
GRAPH_RUNNERS = ("asyncio", "langgraph", "prefect-raw", "bf-tracked", "bf-inline")
SCALE_RUNNERS = ("asyncio", "bf-inline")
CHILD_TIMEOUT = 300.0
QUIET_BUSY = 0.25  # a child starts once other work uses < 25 % of all CPUs ...


@dataclass(frozen=True)
class Settings:
    """Repetitions of one mode."""

    mode: str
    runs: int  # single runs on the long workloads (chain50-io, fanout100-max10)
    prefect_runs: int  # Prefect runners on the short chain workloads (noisy: more runs)
    graph_prefect_runs: int  # Prefect runners on the graph workloads (100 task runs each)
    fast_runs: int  # fast runners on the short workloads: samples (batches if < 20 ms)
    min_idle: float  # Prefect: seconds of idle before each measured run
    quiet_wait: float  # ... or after waiting this long for that (then the row is flagged)
    quiet_window: float  # seconds of CPU sampling per quietness check
    nocache_row: bool  # also measure prefect-raw-nocache on chain50-trivial
    prefect_graphs: tuple[str, ...]  # graph workloads the Prefect runners measure

    def runs_for(self, runner: str, workload: str) -> int:
        if runner in PREFECT_RUNNERS and workload in GRAPH_WORKLOADS:
            return self.graph_prefect_runs
        if workload in LONG_WORKLOADS:
            return self.runs
        if runner in PREFECT_RUNNERS:
            return self.prefect_runs
        return self.fast_runs


def runners_for(workload: str) -> tuple[str, ...]:
    """The runners measured on ``workload``."""
    if workload in SCALE_WORKLOADS:
        return SCALE_RUNNERS
    if workload in GRAPH_WORKLOADS:
        return GRAPH_RUNNERS
    return DISPLAY_ORDER


NORMAL = Settings(
    "normal",
    runs=7,
    prefect_runs=11,
    graph_prefect_runs=7,
    fast_runs=31,
    min_idle=1.0,
    quiet_wait=30.0,
    quiet_window=0.5,
    nocache_row=True,
    prefect_graphs=GRAPH_WORKLOADS,
)
QUICK = Settings(
    "quick",
    runs=3,
    prefect_runs=3,
    graph_prefect_runs=2,
    fast_runs=11,
    min_idle=0.5,
    quiet_wait=5.0,
    quiet_window=0.25,
    nocache_row=False,
    prefect_graphs=("fanout100", "diamond5x20"),  # ~15 s per Prefect child on a graph
)


@dataclass
class Bench:
    """State of one bench run."""

    settings: Settings
    tmp: Path
    server: LocalServer | None = None
    results: dict[str, dict[str, Row]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- children


def base_env(tmp: Path, name: str) -> dict[str, str]:
    """The parent's environment without Prefect/beluga overrides, own PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BELUGA_"))}
    env.update(PREFECT_HOME=str(tmp / "clients" / name), PREFECT_LOGGING_LEVEL="WARNING")
    return env


def prefect_env(bench: Bench, name: str) -> dict[str, str]:
    """A Prefect child's environment: the server's client env, quiet logs, own home."""
    assert bench.server is not None and bench.server.process is not None
    env = base_env(bench.tmp, name)
    env.update(bench.server.client_env())
    env.update(
        PREFECT_HOME=str(bench.tmp / "clients" / name),
        PREFECT_LOGGING_LEVEL="WARNING",
        BENCH_SERVER_PID=str(bench.server.process.pid),
    )
    return env


def run_child(bench: Bench, runner: str, workload: str) -> Row:
    """Measure one (runner, workload) in a fresh process; an ``error`` row if it fails."""
    name = f"{runner}-{workload}"
    out, log = bench.tmp / f"{name}.json", bench.tmp / f"{name}.log"
    is_prefect = runner in PREFECT_RUNNERS
    env = prefect_env(bench, name) if is_prefect else base_env(bench.tmp, name)
    runs = bench.settings.runs_for(runner, workload)
    cmd = [
        sys.executable,
        str(CHILD),
        runner,
        workload,
        "--runs",
        str(runs),
        "--min-idle",
        str(bench.settings.min_idle),
        "--out",
        str(out),
    ]
    busy = wait_quiet(bench.settings.quiet_wait, bench.settings.quiet_window)
    started = time.perf_counter()
    with open(log, "wb") as err:
        try:
            code = subprocess.run(
                cmd,
                env=env,
                stdout=err,
                stderr=subprocess.STDOUT,
                timeout=CHILD_TIMEOUT,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    took = time.perf_counter() - started
    if code != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        print(f"  {name}: FAILED (exit {code})\n    " + "\n    ".join(tail), flush=True)
        return {"runner": runner, "workload": workload, "error": f"exit {code}"}
    row: Row = json.loads(out.read_text())
    row["busy_before"] = busy
    flag = f" (machine {busy:.0%} busy at start)" if busy > QUIET_BUSY else ""
    print(f"  {name}: {took:.1f} s{flag}", flush=True)
    return row


def cpu_ticks() -> tuple[int, int]:
    """(all, idle) CPU ticks of the machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values), values[3] + values[4]


def cpu_busy(window: float = 0.5) -> float:
    """Fraction of all CPUs busy over the next ``window`` seconds."""
    total0, idle0 = cpu_ticks()
    time.sleep(window)
    total1, idle1 = cpu_ticks()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(max_wait: float, window: float = 0.5) -> float:
    """Wait (up to ``max_wait`` s) until the machine is quiet; the last busy fraction."""
    deadline = time.perf_counter() + max_wait
    busy = cpu_busy(window)
    while busy > QUIET_BUSY and time.perf_counter() < deadline:
        busy = cpu_busy(window)
    return busy


def prefect_plan(settings: Settings) -> Iterator[tuple[str, str]]:
    """Prefect (workload, runner) pairs; raw and bf alternate who goes first."""
    tracked = [
        w
        for w in WORKLOADS
        if "bf-tracked" in runners_for(w) and (w in CHAIN_WORKLOADS or w in settings.prefect_graphs)
    ]
    for i, workload in enumerate(tracked):
        runners = ["prefect-raw", "bf-tracked"]
        if settings.nocache_row and workload == "chain50-trivial":
            runners.insert(1, "prefect-raw-nocache")
        for runner in runners if i % 2 == 0 else reversed(runners):
            yield workload, runner


def measure_all(bench: Bench, runners: set[str], workloads: set[str]) -> None:
    """Fast runners first, then the server and the Prefect runners."""
    fast = [(w, r) for w in WORKLOADS for r in FAST_RUNNERS if r in runners_for(w)]
    slow = list(prefect_plan(bench.settings))
    print("fast runners:", flush=True)
    for workload, runner in fast:
        if runner in runners and workload in workloads:
            bench.results.setdefault(workload, {})[runner] = run_child(bench, runner, workload)
    slow = [(w, r) for w, r in slow if r in runners and w in workloads]
    if not slow:
        return
    bench.server = start_server(bench)
    print("prefect runners:", flush=True)
    for workload, runner in slow:
        bench.results.setdefault(workload, {})[runner] = run_child(bench, runner, workload)


def start_server(bench: Bench) -> LocalServer:
    """One real Prefect server for every Prefect child."""
    started = time.perf_counter()
    server = LocalServer.start(home=bench.tmp / "server")
    bench.meta["server_start_s"] = time.perf_counter() - started
    print(f"prefect server up in {bench.meta['server_start_s']:.1f} s", flush=True)
    return server


# ---------------------------------------------------------------- machine / server facts


def proc_status(pid: int, key: str) -> str | None:
    """A ``/proc/<pid>/status`` field such as ``VmHWM``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str:
    """Installed version of ``package``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def loadavg() -> str:
    """The 1/5/15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, Any]:
    """Facts about the machine and the software measured."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "prefect": version("prefect"),
        "langgraph": version("langgraph"),
        "beluga_flows": version("beluga-flows"),
        "load_before": loadavg(),
    }


# ---------------------------------------------------------------- output


def ordered(rows: Mapping[str, Row]) -> list[Row]:
    """Rows in display order."""
    return [rows[r] for r in DISPLAY_ORDER if r in rows]


def busy_note(bench: Bench) -> str:
    """Which children started while other work kept the machine busy."""
    busy = [
        f"{row['runner']}/{workload} ({row['busy_before']:.0%})"
        for workload, rows in bench.results.items()
        for row in rows.values()
        if row.get("busy_before", 0.0) > QUIET_BUSY
    ]
    if not busy:
        return f"* every child started with the machine quiet (< {QUIET_BUSY:.0%} CPU busy)"
    return "* **started while the machine was busy** (numbers less reliable): " + ", ".join(busy)


def markdown(bench: Bench) -> str:
    """The whole RESULTS.md."""
    m, s = bench.meta, bench.settings
    parts = [
        "# Benchmark results\n",
        f"Written by `python bench/run.py{' --quick' if s.mode == 'quick' else ''}` on "
        f"{m['date']}; do not edit by hand (re-run the bench). How to run and what each "
        "runner is: [README.md](README.md).\n",
        "## Machine\n",
        f"* {m['nproc']} CPUs ({m['cpu']}), {m['platform']}",
        f"* Python {m['python']}, prefect {m['prefect']}, langgraph {m['langgraph']}, "
        f"beluga_flows {m['beluga_flows']}",
        f"* load average before / after: {m['load_before']} / {m.get('load_after', '?')}",
        f"* mode {s.mode}: {s.prefect_runs} measured runs per Prefect runner on the chain "
        f"workloads, {s.graph_prefect_runs} on the graph workloads; {s.fast_runs} samples "
        f"per fast runner (batches of runs when a run is < 20 ms); {s.runs} runs on "
        f"{' and '.join(LONG_WORKLOADS)} (fast runners); 1 warm-up run each; "
        f"Prefect runs start after ≥ {s.min_idle:g} s with the server idle"
        + (
            ""
            if s.prefect_graphs == GRAPH_WORKLOADS
            else f"; Prefect runners on {' and '.join(s.prefect_graphs)} only (graphs)"
        ),
        f"* Prefect server (SQLite, one for all Prefect children): up in "
        f"{m.get('server_start_s', 0):.1f} s, peak RSS {m.get('server_rss', '?')}, "
        f"CPU {m.get('server_cpu', '?')} over the bench",
        f"* whole bench: {m.get('wall_s', 0):.0f} s",
        *(
            f"* **{script} failed** (its section is missing): {why}"
            for script, why in m.get("failed", {}).items()
        ),
        busy_note(bench) + "\n",
        "## Targets\n",
        targets_markdown(
            targets(bench.results) + definitions_targets(bench) + tracked_targets(bench)
        )
        + "\n",
    ]
    for workload in WORKLOADS:
        if workload in bench.results and workload not in SCALE_WORKLOADS:
            parts += [
                f"## {workload}: {TITLES[workload]}\n",
                table(workload, ordered(bench.results[workload])) + "\n",
            ]
    if any(w in bench.results for w in SCALE_WORKLOADS):
        parts += [
            f"## {' / '.join(SCALE_WORKLOADS)}: {TITLES['graph-scale']}\n",
            scale_table(bench.results, DISPLAY_ORDER) + "\n",
        ]
    parts += breaker_markdown(bench)
    parts += workflow_markdown(bench)
    parts += workflow_load_markdown(bench)
    parts += definitions_markdown(bench)
    parts += streaming_markdown(bench)
    parts += tracked_markdown(bench)
    parts.append(NOTES)
    return "\n".join(parts)


NOTES = """## How to read this

* All times are medians. A *run* is `asyncio.run(...)` of one invocation on a fresh
  event loop for every runner, so the asyncio one-step run (~0.1 ms) is mostly the
  loop's own start-up. Ratios are to the asyncio row of the same table, same bench run.
* *per step* = time from entering the first step's body to leaving the last step's,
  divided by 50: the cost of a step inside a run, without the run's start and end.
  *whole run* includes the flow run's creation and completion. *per iteration*
  (loop100) and *per node* (graph1k/10k) are the same measure over 100 / N nodes.
* *makespan* (graph workloads, chain50-io) is the whole run; the *ideal* ratio divides
  it by the sleeps on the critical path. prefect-raw gathers each layer (a barrier per
  layer: the slowest task run of a layer holds the next layer back);
  LangGraph runs lock-step supersteps; bf.Graph starts a node as soon as its own
  predecessors are done. (The graph's mermaid artifact, one more API call per run,
  is opt-in since issue 16 and off here; the tables above may predate that.)
* bf-tracked passes the graph state to each node's task run as its parameter, wrapped
  in Prefect's `quote()` so the task engine does not walk it (`visit_collection`, twice
  per task run); before that change the walk cost ~0.3-1 ms of client CPU per node on
  diamond5x20, where the state's list grows to 80 entries.
* *client CPU / run*: CPU of the benchmark child per run; *server CPU / run*: CPU the
  Prefect server spent from the run's start until it was idle again (its per-task-run
  post-processing included). *first run*: the warm-up run (client set-up included).
* *peak RSS*: `VmHWM` of the child (the runner's imports included); the Prefect
  runners' server is listed under Machine.
* *prefect-raw* keeps Prefect's task defaults (DEFAULT cache policy: a cache key per
  call); *prefect-raw-nocache* and *bf-tracked* use NO_CACHE without persistence.
* *bf-tracked*'s first run includes importing Prefect: beluga_flows imports it lazily.
* Prefect numbers vary run to run by ±20-30 % on 2 cores (see the range columns); a
  ratio within ~10 % of 1.0 is within noise. Fast runners also vary ~±30 % between
  processes (a fresh process can be slower throughout), which moves their ratios.
"""


def side_bench(
    bench: Bench, script: str, key: str, timeout: float = 600, args: tuple[str, ...] = ()
) -> None:
    """Another bench script in its own process; its output goes to ``bench.meta[key]``.

    A script that fails or times out does not lose the rest of the bench: its section
    is left out and the report says why (``bench.meta["failed"][script]``)."""
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / script), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else err.stderr or ""
        last = [line for line in stderr.strip().splitlines() if line.strip()][-1:]
        why = f"{err}" + (f": {last[0].strip()}" if last else "")
        bench.meta.setdefault("failed", {})[script] = why
        print(f"{script} failed: {why}", file=sys.stderr, flush=True)
        return
    bench.meta[key] = done.stdout.strip()


def side_json(bench: Bench, key: str) -> None:
    """The last line of a side bench's output (its JSON), parsed in place."""
    if key in bench.meta:
        bench.meta[key] = json.loads(bench.meta[key].splitlines()[-1])


def workflow_markdown(bench: Bench) -> list[str]:
    """The workflow interaction section (bench/workflow_roundtrips.py's table)."""
    text = bench.meta.get("workflow")
    if not text:
        return []
    title, _, table_text = text.partition("\n")
    return [
        "## workflow: the Prefect API cost of signals and queries\n",
        f"`bench/workflow_roundtrips.py`: {title}. One run hosted in the bench process; the "
        "caller's requests are counted on Prefect's HTTP client, by thread.\n",
        table_text + "\n",
        "A signal is one flow-run input written by the caller (plus finding the run); "
        "the run's watcher reads state and inputs once per poll, so delivery takes about "
        "half a poll interval on average. A custom query is two round trips through "
        "that watcher. `BELUGA_FLOWS_WORKFLOW_POLL` trades latency for API load.\n",
    ]


def workflow_load_markdown(bench: Bench) -> list[str]:
    """Live workflows at scale (bench/workflow_load.py) and the issue-11 targets."""
    text = bench.meta.get("workflow_load")
    if not text:
        return []
    title, _, table_text = text.partition("\n")
    rows = [r.split("|") for r in table_text.splitlines()[2:]]
    at_most = max((r for r in rows if len(r) > 4), key=lambda r: int(r[1]), default=None)
    verdict = ""
    if at_most is not None:
        rps, median = float(at_most[3]), float(at_most[4].split()[0])
        ok = rps <= 2 and median <= 1000
        verdict = (
            f"Targets at {at_most[1].strip()} live runs: idle load <= 2 requests/s, signal "
            f"delivery median <= 1 s; measured {rps:g} requests/s and {median:g} ms: "
            f"{'**met**' if ok else '**not met**'}.\n"
        )
    return [
        "## workflow: many live runs in one process\n",
        f"`bench/workflow_load.py`: {title}. Each N in a fresh host process; requests are "
        "those the hosting thread (every run and the watcher) sends, counted on Prefect's "
        "HTTP client over an idle window; delivery is signal sent → `wait_for_signal` "
        "returns, for runs picked at random moments.\n",
        table_text + "\n",
        "One watcher per process finds the runs with mail in one query per poll and reads "
        "only their inboxes; a look at states (UI cancels, resumed approval forms) every "
        "10 polls. Starting many runs at once is bound by SQLite's write lock (use "
        "PostgreSQL for many workflows).\n",
        verdict,
    ]


DEFINITIONS_BEGIN = "<!-- definitions: written by bench/run.py, from bench/definitions.py -->"
DEFINITIONS_END = "<!-- definitions: end -->"


def definitions_targets(bench: Bench) -> list[Target]:
    """The declarative engine's targets, as bench/definitions.py judged them."""
    found = bench.meta.get("definitions")
    if not found:
        return []
    return [Target(t["target"], t["measured"], t["met"]) for t in found["targets"]]


def definitions_markdown(bench: Bench) -> list[str]:
    """The declarative-definitions section (bench/definitions.py), between markers so
    that ``--only definitions`` can replace it alone (see :func:`splice`)."""
    r = bench.meta.get("definitions")
    if not r:
        return []
    m, o, v = r["makespan"], r["overhead"], r["validation"]
    ideal = m["ideal_s"]
    makespan = [
        f"| runner | makespan | {TIMES} ideal | range | first run | samples |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("definition", "graph", "wave"):
        t = m["runners"][name]["total"]
        makespan.append(
            f"| {DEFINITION_RUNNERS[name]} | {fmt_time(t['median'])} | "
            f"{t['median'] / ideal:.3g}{TIMES} | {fmt_time(t['min'])}{NONE}{fmt_time(t['max'])} | "
            f"{fmt_time(m['runners'][name]['first_run'])} | {len(t['samples'])} |"
        )
    g = o["runners"]["graph"]
    steps = [
        f"| runner | per step (inside the run) | {TIMES} bf.Graph | range | whole run / step | "
        f"{TIMES} bf.Graph | whole run | client CPU / run | first run | samples |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("definition", "graph"):
        row = o["runners"][name]
        inner, per_run = row["per_step"], row["per_step_run"]
        steps.append(
            f"| {DEFINITION_RUNNERS[name]} | {fmt_time(inner['median'])} | "
            f"{inner['median'] / g['per_step']['median']:.3g}{TIMES} | "
            f"{fmt_time(inner['min'])}{NONE}{fmt_time(inner['max'])} | "
            f"{fmt_time(per_run['median'])} | "
            f"{per_run['median'] / g['per_step_run']['median']:.3g}{TIMES} | "
            f"{fmt_time(row['total']['median'])} | {fmt_time(row['cpu']['median'])} | "
            f"{fmt_time(row['first_run'])} | {len(inner['samples'])} {TIMES} {row['batch']} |"
        )
    checks = ["| measured | median | range |", "|---|---|---|"]
    for key, what in (
        ("validate_s", "`engine.validate(dict)`: parse + every check"),
        ("parse_s", "`WorkflowDefinition.from_dict` alone"),
        ("checks_s", "`engine.validate(parsed)`: the checks alone"),
    ):
        x = v[key]
        checks.append(
            f"| {what} | {fmt_time(x['median'])} | {fmt_time(x['min'])}{NONE}{fmt_time(x['max'])} |"
        )
    scale = [
        "| steps | per step (whole run) | range | per step (inside the run) | whole run | "
        "first run (compiles) | samples |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, row in r["scaling"]["sizes"].items():
        per_run = row["per_step_run"]
        scale.append(
            f"| {int(n):,} | {fmt_time(per_run['median'])} | "
            f"{fmt_time(per_run['min'])}{NONE}{fmt_time(per_run['max'])} | "
            f"{fmt_time(row['per_step']['median'])} | "
            f"{fmt_time(per_run['median'] * int(n))} | {fmt_time(row['first_run'])} | "
            f"{len(per_run['samples'])} |"
        )
    busy = r["busy_before"]
    return [
        DEFINITIONS_BEGIN,
        "## definitions: declarative workflows on the local provider\n",
        f"`bench/definitions.py` on {bench.meta.get('date', '?')} ({r['mode']} mode, "
        f"{r['wall_s']:.0f} s): one process, no "
        "Prefect server, the runners of a workload interleaved sample by sample; "
        f"machine {busy:.0%} busy at start"
        + (" (**busy: numbers less reliable**)" if busy > QUIET_BUSY else "")
        + f", load average {r['load_before']} / {r['load_after']}. "
        "Definitions are parsed and compiled before timing; workloads and runners: "
        "[README.md](README.md#declarative-definitions).\n",
        targets_markdown(definitions_targets(bench)) + "\n",
        f"### makespan: 5 {TIMES} 20 layered, uneven sleeps ({fmt_time(ideal)} critical path)\n",
        f"Step j of layer k+1 waits for steps j and (j+1) % 20 of layer k; each step sleeps "
        f"5-40 ms (fixed seed; {fmt_time(m['sum_s'])} in all). Ideal = the critical path, "
        f"{fmt_time(ideal)}; a barrier per wave cannot beat {fmt_time(m['wave_ideal_s'])} "
        f"({m['wave_ideal_s'] / ideal:.3g}{TIMES} ideal: the sum of each layer's slowest step).\n",
        "\n".join(makespan) + "\n",
        f"### per step: the same 5 {TIMES} 20 shape, trivial async steps\n",
        'Each definition step has `input_mapping: {x: "n + 1"}` (one CEL evaluation per '
        "step is in the cost); each graph node takes the state and returns `None`. *Inside "
        "the run*: first step body entered → last one left, / 100; *whole run / step*: "
        "the run (record set-up, result, SLA check and report included) / 100.\n",
        "\n".join(steps) + "\n",
        f"### validation: a {v['steps']:,}-step definition ({v['expressions']:,} expressions)\n",
        f"50 {TIMES} 20 layered; every step has an `input_mapping` expression and a `conditions` "
        "guard, each a different CEL text.\n",
        "\n".join(checks) + "\n",
        "### scaling: the per-step workload at 1,000 and 10,000 steps\n",
        f"50 {TIMES} 20 and 500 {TIMES} 20 layered, `max_parallel_steps: "
        f"{r['scaling']['max_parallel_steps']}`; the first run compiles the definition "
        "(validation included), the others reuse the engine's plan.\n",
        "\n".join(scale) + "\n",
        *compile_note(r["scaling"]["sizes"]),
        DEFINITIONS_END + "\n",
    ]


def compile_note(sizes: dict[str, Any]) -> list[str]:
    """A line comparing the first (compiling) run per step at both sizes."""
    small, big = (sizes[n]["first_run"] / int(n) for n in ("1000", "10000"))
    growth = big / small
    verdict = "linear" if growth <= 2 else f"**not linear**: {growth:.3g}{TIMES} per step"
    return [
        f"First run (compile + run) per step: {fmt_time(small)} at 1,000 steps, "
        f"{fmt_time(big)} at 10,000 ({verdict}).\n"
    ]


DEFINITION_RUNNERS = {
    "definition": "definition (`WorkflowEngine`, local)",
    "graph": "bf.Graph (local, untracked nodes)",
    "wave": "wave runner (`bench/wave.py`)",
}


STREAMING_BEGIN = "<!-- streaming: written by bench/run.py, from bench/streaming.py -->"
STREAMING_END = "<!-- streaming: end -->"


def streaming_markdown(bench: Bench) -> list[str]:
    """The streaming section: what bench/streaming.py wrote, between its markers."""
    r = bench.meta.get("streaming")
    if not r:
        return []
    return [STREAMING_BEGIN, *r["markdown"], STREAMING_END + "\n"]


def tracked_targets(bench: Bench) -> list[Target]:
    """Issue 16's targets, as bench/tracked.py judged them."""
    found = bench.meta.get("tracked")
    if not found:
        return []
    return [
        Target(
            f"bf-tracked ({v['runner']}) ≤ {tracked.TARGET} {TIMES} plain raw Prefect "
            f"({v['shape']}, "
            "same process, alternating)",
            f"**{v['ratio']:.2f}{TIMES}**; API requests, events and log records per run "
            + ("equal" if v["counts_equal"] else "**not equal**"),
            v["met"] and v["counts_equal"],
        )
        for v in found["verdicts"]
    ]


def tracked_markdown(bench: Bench) -> list[str]:
    """The tracked-against-raw-Prefect section (bench/tracked.py), between markers."""
    found = bench.meta.get("tracked")
    return tracked.markdown(found) if found else []


def splice(report: str, section: list[str], begin: str, end: str) -> str:
    """``report`` with the section between the markers ``begin`` and ``end`` replaced
    by ``section`` (or inserted before "## How to read this"); every other line of the
    report is kept."""
    block = "\n".join(section)
    if begin in report and end in report:
        head, _, rest = report.partition(begin)
        _, _, tail = rest.partition(end + "\n")
        return head + block + tail
    head, mark, tail = report.partition("## How to read this")
    if not mark:
        return report.rstrip("\n") + "\n\n" + block
    return head + block + "\n" + mark + tail


def breaker_markdown(bench: Bench) -> list[str]:
    """The breaker section and its target (closed breaker <= 5 µs per inline call)."""
    text = bench.meta.get("breaker")
    if not text:
        return []
    line = next(ln for ln in text.splitlines() if "memory store" in ln)
    extra = float(line.rsplit("+", 1)[1].split()[0])
    verdict = "**met**" if extra <= 5 else "**not met**"
    return [
        "## breaker: a closed circuit breaker on an inline step\n",
        "`bench/breaker_overhead.py`: the same trivial async inline step with and without "
        "`circuit_breaker=`, median of 7 batches of 20,000 calls.\n",
        "```\n" + text + "\n```\n",
        f"Target: a closed breaker adds <= 5 µs per call; measured **+{extra:.2f} µs**: "
        f"{verdict}.\n",
    ]


def finish(bench: Bench, started: float) -> None:
    """Record the server's and the machine's end state."""
    bench.meta["load_after"] = loadavg()
    bench.meta["wall_s"] = time.perf_counter() - started
    proc = bench.server.process if bench.server is not None else None
    if proc is not None and proc.poll() is None:
        hwm = (proc_status(proc.pid, "VmHWM") or "0 kB").split()[0]
        bench.meta["server_rss"] = f"{int(hwm) / 1024:.0f} MiB"
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        bench.meta["server_cpu"] = f"{cpu:.0f} s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description="beluga_flows benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (< 3 min)")
    p.add_argument(
        "--only", choices=sorted(GROUPS), help="only the chain, graph or workflow benchmarks"
    )
    p.add_argument("--runners", default=",".join(DISPLAY_ORDER), help="comma-separated subset")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="Markdown report")
    p.add_argument("--json", type=Path, help="also write every raw sample here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the bench, print the tables, write the report."""
    args = parse_args(argv)
    bench = Bench(QUICK if args.quick else NORMAL, Path(tempfile.mkdtemp(prefix="beluga-bench-")))
    bench.meta = machine()
    started = time.perf_counter()
    try:
        workloads = set(args.workloads.split(","))
        if args.only:
            workloads &= set(GROUPS[args.only])
        if not args.only or args.only == "definitions":
            # local provider only: measured before the Prefect server exists
            side_bench(bench, "definitions.py", "definitions")
            side_json(bench, "definitions")
        if not args.only or args.only == "streaming":
            side_bench(bench, "streaming.py", "streaming", args=("--prefect",))
            side_json(bench, "streaming")
        if not args.only or args.only == "tracked":
            # its own server and process, before the Prefect children's server exists
            quick = ("--runs", "2", "--rounds", "1") if args.quick else ()
            side_bench(bench, "tracked.py", "tracked", timeout=3600, args=quick)
            side_json(bench, "tracked")
        measure_all(bench, set(args.runners.split(",")), workloads)
        if not args.only or args.only == "chain":
            side_bench(bench, "breaker_overhead.py", "breaker")
        if not args.only or args.only == "workflow":
            side_bench(bench, "workflow_roundtrips.py", "workflow")
            side_bench(bench, "workflow_load.py", "workflow_load", timeout=3600)
        finish(bench, started)
    finally:
        if bench.server is not None:
            bench.server.stop()
        if not args.keep:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    if args.only in SECTIONS and args.out.exists():
        # the other sections stay as the last full run wrote them
        section, begin, end = {
            "definitions": (definitions_markdown, DEFINITIONS_BEGIN, DEFINITIONS_END),
            "streaming": (streaming_markdown, STREAMING_BEGIN, STREAMING_END),
            "tracked": (tracked_markdown, tracked.BEGIN, tracked.END),
        }[args.only]
        block = section(bench)
        if not block:  # its script failed: the last run's section stays
            raise SystemExit(f"{args.only}: {bench.meta.get('failed')}; {args.out} unchanged")
        print("\n" + "\n".join(block))
        args.out.write_text(splice(args.out.read_text(), block, begin, end))
    else:
        text = markdown(bench)
        print("\n" + text)
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"meta": bench.meta, "results": bench.results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
