"""Turn the children's JSON results into Markdown tables and the targets check.

Every row shows absolute medians and the ratio to the ``asyncio`` row of the same
workload measured in the same bench run (see ``bench/ANCHORS.md``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]

IDEALS = {  # makespan if the runner cost nothing: the sleeps on the critical path
    "chain50-io": 0.5,  # 50 x 10 ms in a line
    "fanout100": 0.1,  # 100 x 0.1 s side by side
    "fanout100-max10": 1.0,  # 100 x 0.1 s, 10 at a time
    "diamond5x20": 0.1,  # 5 layers x 20 ms
}
INLINE_STEP_TARGET = 50e-6
INLINE_ITERATION_TARGET = 50e-6
IDEAL_TARGETS = (("fanout100", 1.10), ("diamond5x20", 1.15))  # bf-inline makespan / ideal
TRACKED_GRAPH_WORKLOADS = ("fanout100", "fanout100-max10", "diamond5x20")
# bf-inline per node, 10,000 nodes / 1,000 nodes: the two sizes run in two processes,
# which differ by up to ~30 % on their own; a quadratic scheduler would show ~10x.
LINEAR_TARGET = 2.0
RATIO_TARGET = 1.1
TIMES = "\u00d7"  # multiplication sign
NONE = "\u2013"  # en dash: no value


def fmt_time(seconds: float | None) -> str:
    """Seconds as ns/µs/ms/s with three significant digits."""
    if seconds is None:
        return NONE
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(value: float | None, base: float | None) -> str:
    """``value / base`` as ``12.3x`` (with a multiplication sign)."""
    if value is None or not base:
        return NONE
    ratio = value / base
    return f"{ratio:,.0f}{TIMES}" if ratio >= 100 else f"{ratio:.3g}{TIMES}"


def median(row: Row | None, key: str) -> float | None:
    """Median of ``row[key]`` (None for a missing row or an empty list)."""
    if row is None or row.get("error") or not row.get(key):
        return None
    return float(statistics.median(row[key]))


def spread(row: Row, key: str) -> str:
    """``min-max`` of ``row[key]`` (with an en dash)."""
    values = row.get(key) or []
    return f"{fmt_time(min(values))}{NONE}{fmt_time(max(values))}" if values else NONE


@dataclass(frozen=True)
class Column:
    """A table column: header and a cell renderer given (row, asyncio row)."""

    header: str
    cell: Callable[[Row, Row | None], str]


def _abs(key: str) -> Callable[[Row, Row | None], str]:
    return lambda row, base: fmt_time(median(row, key))


def _rel(key: str) -> Callable[[Row, Row | None], str]:
    return lambda row, base: fmt_ratio(median(row, key), median(base, key))


def _server_cpu(row: Row, base: Row | None) -> str:
    return fmt_time(median(row, "server_cpu")) if any(row.get("server_cpu") or []) else NONE


def _samples(row: Row, base: Row | None) -> str:
    batch = row.get("batch", 1)
    return f"{len(row['total'])}" + (f" {TIMES} {batch}" if batch > 1 else "")


def _over_ideal(row: Row, base: Row | None) -> str:
    total = median(row, "total")
    return NONE if total is None else f"+{fmt_time(total - IDEALS[row['workload']])}"


def _x_ideal(row: Row, base: Row | None) -> str:
    total = median(row, "total")
    return NONE if total is None else f"{total / IDEALS[row['workload']]:.3g}{TIMES}"


COMMON = (
    Column("first run", lambda row, base: fmt_time(row.get("first_run"))),
    Column("client CPU / run", _abs("client_cpu")),
    Column("server CPU / run", _server_cpu),
    Column("peak RSS", lambda row, base: f"{row['rss_mib']:.0f} MiB"),
    Column("samples", _samples),
)

COLUMNS: dict[str, tuple[Column, ...]] = {
    "chain50-trivial": (
        Column("per step", _abs("per_step")),
        Column(f"{TIMES} asyncio", _rel("per_step")),
        Column("whole run", _abs("total")),
        Column(f"{TIMES} asyncio", _rel("total")),
        Column("run range", lambda row, base: spread(row, "total")),
        *COMMON,
    ),
    "chain50-io": (
        Column("makespan", _abs("total")),
        Column(f"{TIMES} asyncio", _rel("total")),
        Column("over ideal 0.5 s", _over_ideal),
        Column("range", lambda row, base: spread(row, "total")),
        *COMMON,
    ),
    "flow-start": (
        Column("run", _abs("total")),
        Column(f"{TIMES} asyncio", _rel("total")),
        Column("range", lambda row, base: spread(row, "total")),
        *COMMON,
    ),
    "loop100": (
        Column("per iteration", _abs("per_step")),
        Column(f"{TIMES} asyncio", _rel("per_step")),
        Column("whole run", _abs("total")),
        Column(f"{TIMES} asyncio", _rel("total")),
        Column("run range", lambda row, base: spread(row, "total")),
        *COMMON,
    ),
}
MAKESPAN = (
    Column("makespan", _abs("total")),
    Column(f"{TIMES} ideal", _x_ideal),
    Column(f"{TIMES} asyncio", _rel("total")),
    Column("range", lambda row, base: spread(row, "total")),
    *COMMON,
)
for _workload in TRACKED_GRAPH_WORKLOADS:
    COLUMNS[_workload] = MAKESPAN

TITLES = {
    "chain50-trivial": "chain of 50 trivial async steps (x + 1)",
    "chain50-io": f"chain of 50 steps {TIMES} `asyncio.sleep(0.01)` (ideal 0.5 s)",
    "flow-start": "one run with one trivial step (run start overhead)",
    "fanout100": f"fan-out of 100 nodes {TIMES} `asyncio.sleep(0.1)`, unbounded (ideal 0.1 s)",
    "fanout100-max10": "the same fan-out, at most 10 nodes at once (ideal 1.0 s)",
    "diamond5x20": (
        f"5 layers {TIMES} 20 nodes {TIMES} `asyncio.sleep(0.02)`, every node depending on "
        "every node of the layer before (ideal 0.1 s)"
    ),
    "loop100": "a conditional loop: one trivial node, routed back to itself 100 times",
    "graph-scale": (
        "a line of 1,000 and of 10,000 trivial graph nodes (bf-inline; asyncio: the same "
        "functions awaited in a line)"
    ),
}


def table(workload: str, rows: Sequence[Row]) -> str:
    """The Markdown table of one workload."""
    cols = COLUMNS[workload]
    base = next((r for r in rows if r["runner"] == "asyncio" and not r.get("error")), None)
    lines = [
        "| runner | " + " | ".join(c.header for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for row in rows:
        if row.get("error"):
            lines.append(f"| {row['runner']} | failed: {row['error']} |" + " |" * (len(cols) - 1))
            continue
        cells = " | ".join(c.cell(row, base) for c in cols)
        lines.append(f"| {row['runner']} | {cells} |")
    return "\n".join(lines)


SCALE_SIZES = (("graph1k-inline", 1_000), ("graph10k-inline", 10_000))


def scale_table(results: dict[str, dict[str, Row]], runners: Sequence[str]) -> str:
    """graph1k-inline and graph10k-inline in one table: per-node cost at both sizes."""
    cols = (
        Column("per node", _abs("per_step")),
        Column(f"{TIMES} asyncio", _rel("per_step")),
        Column("whole run", _abs("total")),
        Column(f"{TIMES} asyncio", _rel("total")),
        Column("run range", lambda row, base: spread(row, "total")),
        *COMMON,
    )
    lines = [
        "| runner | nodes | " + " | ".join(c.header for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for runner in runners:
        for workload, size in SCALE_SIZES:
            rows = results.get(workload, {})
            row = rows.get(runner)
            if row is None:
                continue
            if row.get("error"):
                pad = " |" * (len(cols) - 1)
                lines.append(f"| {runner} | {size:,} | failed: {row['error']} |{pad}")
                continue
            base = rows.get("asyncio")
            cells = " | ".join(c.cell(row, base) for c in cols)
            lines.append(f"| {runner} | {size:,} | {cells} |")
    return "\n".join(lines)


def linearity(results: dict[str, dict[str, Row]], runner: str) -> float | None:
    """``runner``'s per-node cost at 10,000 nodes over its cost at 1,000 nodes."""
    small = median(results.get("graph1k-inline", {}).get(runner), "per_step")
    big = median(results.get("graph10k-inline", {}).get(runner), "per_step")
    return None if small is None or big is None else big / small


@dataclass(frozen=True)
class Target:
    """One target: its statement, the measured value and the verdict."""

    text: str
    measured: str
    met: bool | None


def _ratio_target(text: str, key: str, ours: Row | None, theirs: Row | None, label: str) -> Target:
    a, b = median(ours, key), median(theirs, key)
    if a is None or b is None:
        return Target(text, "not measured", None)
    measured = (
        f"bf-tracked {fmt_time(a)} vs {label} {fmt_time(b)} = **{a / b:.2f}{TIMES}** "
        f"(bf range {spread(ours or {}, key)}, {label} range {spread(theirs or {}, key)})"
    )
    return Target(text, measured, a / b <= RATIO_TARGET)


def targets(results: dict[str, dict[str, Row]]) -> list[Target]:
    """The three targets of the brief, plus the stricter no-cache comparison."""
    chain, start = results.get("chain50-trivial", {}), results.get("flow-start", {})
    found = [
        _ratio_target(
            f"bf-tracked per-step cost ≤ 1.1 {TIMES} prefect-raw per step (chain50-trivial)",
            "per_step",
            chain.get("bf-tracked"),
            chain.get("prefect-raw"),
            "prefect-raw",
        ),
    ]
    if "prefect-raw-nocache" in chain:
        found.append(
            _ratio_target(
                f"(stricter, same task options as bf) bf-tracked per step ≤ 1.1 {TIMES} "
                "prefect-raw-nocache per step",
                "per_step",
                chain.get("bf-tracked"),
                chain.get("prefect-raw-nocache"),
                "prefect-raw-nocache",
            )
        )
    inline = median(chain.get("bf-inline"), "per_step")
    found.append(
        Target(
            "bf-inline ≤ 50 µs per step (chain50-trivial)",
            "not measured" if inline is None else f"bf-inline **{fmt_time(inline)}** per step",
            None if inline is None else inline <= INLINE_STEP_TARGET,
        )
    )
    found.append(
        _ratio_target(
            f"bf flow start ≤ 1.1 {TIMES} raw async Prefect flow start (flow-start)",
            "total",
            start.get("bf-tracked"),
            start.get("prefect-raw"),
            "prefect-raw",
        )
    )
    return found + graph_targets(results)


def _peer(rows: dict[str, Row], key: str, scale: float = 0.0) -> str:
    """LangGraph's value for comparison (its multiple of ``scale`` when given)."""
    value = median(rows.get("langgraph"), key)
    if value is None:
        return ""
    return f" (LangGraph {fmt_time(value)}" + (f" = {value / scale:.2f}{TIMES})" if scale else ")")


def graph_targets(results: dict[str, dict[str, Row]]) -> list[Target]:
    """The graph targets: bf-inline near the ideal makespan and cheap per loop
    iteration, bf-tracked no slower than raw Prefect, bf-inline linear in size."""
    found = []
    for workload, limit in IDEAL_TARGETS:
        rows, ideal = results.get(workload, {}), IDEALS[workload]
        total = median(rows.get("bf-inline"), "total")
        found.append(
            Target(
                f"bf-inline makespan ≤ {limit:.2f} {TIMES} ideal ({fmt_time(ideal)}) on {workload}",
                "not measured"
                if total is None
                else f"bf-inline {fmt_time(total)} = **{total / ideal:.2f}{TIMES} ideal**"
                + _peer(rows, "total", ideal),
                None if total is None else total <= limit * ideal,
            )
        )
    loop = results.get("loop100", {})
    per_iter = median(loop.get("bf-inline"), "per_step")
    found.append(
        Target(
            "bf-inline ≤ 50 µs per loop iteration (loop100)",
            "not measured"
            if per_iter is None
            else f"bf-inline **{fmt_time(per_iter)}** per iteration" + _peer(loop, "per_step"),
            None if per_iter is None else per_iter <= INLINE_ITERATION_TARGET,
        )
    )
    for workload in TRACKED_GRAPH_WORKLOADS:
        rows = results.get(workload, {})
        found.append(
            _ratio_target(
                f"bf-tracked makespan ≤ 1.1 {TIMES} prefect-raw ({workload})",
                "total",
                rows.get("bf-tracked"),
                rows.get("prefect-raw"),
                "prefect-raw",
            )
        )
    ratio = linearity(results, "bf-inline")
    small = median(results.get("graph1k-inline", {}).get("bf-inline"), "per_step")
    big = median(results.get("graph10k-inline", {}).get("bf-inline"), "per_step")
    found.append(
        Target(
            f"(linear scheduling) bf-inline per node at 10,000 nodes ≤ {LINEAR_TARGET:g} "
            f"{TIMES} per node at 1,000 (graph1k-inline, graph10k-inline)",
            "not measured"
            if ratio is None
            else f"{fmt_time(big)} vs {fmt_time(small)} per node = **{ratio:.2f}{TIMES}**",
            None if ratio is None else ratio <= LINEAR_TARGET,
        )
    )
    return found


def targets_markdown(found: Sequence[Target]) -> str:
    """The targets as a Markdown table."""
    verdict = {True: "**met**", False: "**not met**", None: "not measured"}
    lines = ["| target | measured (medians) | verdict |", "|---|---|---|"]
    lines += [f"| {t.text} | {t.measured} | {verdict[t.met]} |" for t in found]
    return "\n".join(lines)
