"""SLAs, duration baselines, alerts and the run's markdown report.

An SLA is not a timeout: a breach never stops a run. Each breach (and each run that
takes more than twice its baseline: an ``anomaly``) becomes an alert in the result,
a warning log record, a ``<prefix>.sla.breaches`` point, a Prefect event
``beluga.workflow.sla-breach`` (on the Prefect engine) and a call of every
``on_alert`` callback. The baseline is the median duration of the last 20 completed
executions of the same ``workflow_id``: read from the Prefect API on the Prefect
engine, else remembered by the :class:`~beluga_flows.WorkflowEngine` itself. A run is
an anomaly when it takes more than twice the baseline *and* at least 0.1 s longer
(runs of a few milliseconds double by scheduling jitter alone).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from beluga_flows import _sync, telemetry
from beluga_flows.definitions.compile import DefinitionPlan
from beluga_flows.definitions.records import ExecutionResult
from beluga_flows.engine import Engine

__all__ = ["BASELINE_RUNS", "Monitor", "report_markdown"]

BASELINE_RUNS = 20
ANOMALY_FACTOR = 2.0
# Millisecond runs double by jitter alone: an anomaly is also at least this much slower.
ANOMALY_MIN_EXCESS_S = 0.1
_log = logging.getLogger("beluga_flows.definitions")
Alert = dict[str, Any]


class Monitor:
    """One engine's SLA bookkeeping: the durations it has seen, its alert callbacks."""

    def __init__(self, on_alert: Sequence[Callable[[Alert], Any]]) -> None:
        self.on_alert = tuple(on_alert)
        self.history: dict[str, collections.deque[float]] = {}

    async def baseline(self, engine: Engine, plan: DefinitionPlan) -> float | None:
        """The median of the last completed runs' durations (``None``: none yet)."""
        wid = plan.definition.workflow_id
        durations: list[float] = list(self.history.get(wid, ()))
        recent = getattr(engine, "recent_durations", None)
        if recent is not None:  # the Prefect API knows every process's runs
            try:
                seen = await recent(["beluga:definition", f"workflow:{wid}"], BASELINE_RUNS)
                durations = seen or durations
            except Exception as err:  # a baseline is advice: never fail a run for it
                _log.warning("definition %s: no baseline from the Prefect API: %s", wid, err)
        return statistics.median(durations[-BASELINE_RUNS:]) if durations else None

    async def judge(
        self, engine: Engine, plan: DefinitionPlan, result: ExecutionResult, baseline: float | None
    ) -> ExecutionResult:
        """``result`` with its ``sla`` figures and ``alerts``; the alerts are sent."""
        d = plan.definition
        targets = d.sla_targets
        sla: dict[str, dict[str, Any]] = {}
        alerts: list[Alert] = []

        def target(
            name: str, limit: float | None, actual: float | None, base: float | None
        ) -> None:
            met = limit is None or actual is None or actual <= limit
            sla[name] = {"limit_s": limit, "actual_s": actual, "met": met, "baseline_s": base}
            if not met:
                alerts.append(
                    {"kind": "sla_breach", "target": name, "limit_s": limit, "actual_s": actual}
                )

        if (targets is not None and targets.max_duration_s is not None) or baseline is not None:
            limit = targets.max_duration_s if targets is not None else None
            target("workflow", limit, result.duration_s, baseline)
        for sid, limit in (targets.steps if targets is not None else {}).items():
            record = result.step_records.get(sid)
            target(sid, limit, record.duration_s if record is not None else None, None)
        if (
            baseline is not None
            and result.duration_s > ANOMALY_FACTOR * baseline
            and result.duration_s - baseline >= ANOMALY_MIN_EXCESS_S
        ):
            alerts.append(
                {
                    "kind": "anomaly",
                    "target": "workflow",
                    "baseline_s": baseline,
                    "actual_s": result.duration_s,
                }
            )
        if result.status == "completed":
            self.history.setdefault(d.workflow_id, collections.deque(maxlen=BASELINE_RUNS)).append(
                result.duration_s
            )
        for alert in alerts:
            await self._send(engine, plan, result, alert)
        return dataclasses.replace(result, sla=sla, alerts=alerts)

    async def _send(
        self, engine: Engine, plan: DefinitionPlan, result: ExecutionResult, alert: Alert
    ) -> None:
        wid = plan.definition.workflow_id
        _log.warning(
            "definition %s execution %s: %s on %s (%.3fs)",
            *(wid, result.execution_id, alert["kind"], alert["target"], alert["actual_s"] or 0),
            extra={"workflow.id": wid, "alert": alert},
        )
        if alert["kind"] == "sla_breach":
            telemetry.record_sla_breach(wid, alert["target"])
        emit = getattr(engine, "emit_event", None)
        if emit is not None:
            await emit(
                "beluga.workflow.sla-breach"
                if alert["kind"] == "sla_breach"
                else "beluga.workflow.anomaly",
                {"prefect.resource.id": f"beluga.workflow.{wid}", "prefect.resource.name": wid},
                {**alert, "execution_id": result.execution_id, "version": result.version},
            )
        for callback in self.on_alert:
            try:
                await _sync.settled(callback(alert))
            except Exception as err:  # an alert hook must not fail the run it reports
                _log.error("on_alert callback %r failed: %s", callback, err)


def report_markdown(plan: DefinitionPlan, result: ExecutionResult) -> str:
    """The run as markdown: outcome, the step table, alerts and the mermaid drawing."""
    lines = [
        f"# {plan.definition.name or plan.definition.workflow_id} — {result.status}",
        "",
        f"execution `{result.execution_id}` · version {result.version} · "
        f"{result.duration_s:.3f}s · definition `{result.definition_hash[:12]}`",
        "",
        "| step | status | attempts | duration (s) | note |",
        "|---|---|---|---|---|",
    ]
    for sid, r in result.step_records.items():
        note = r.skipped_reason or (r.error or {}).get("message", "")
        if r.recovered:
            note = f"recovered: {note}"
        if r.iterations is not None:
            note = f"{r.iterations} iteration(s) {note}".strip()
        duration = f"{r.duration_s:.3f}" if r.duration_s is not None else ""
        note = note.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {sid} | {r.status} | {r.attempts} | {duration} | {note} |")
    if result.rolled_back:
        lines += ["", f"Rolled back: {', '.join(result.rolled_back)}"]
    if result.alerts:
        lines += ["", "Alerts:", *[f"* {a}" for a in result.alerts]]
    lines += ["", "```mermaid", plan.draw_mermaid(), "```"]
    return "\n".join(lines)
