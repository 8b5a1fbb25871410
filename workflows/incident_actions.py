"""Actions of ``workflows/incident_response.yaml``: an incident against a fake status page.

The status page is ``<out_dir>/status_page.json``: ``open_incident`` creates it, each
``poll_status_page`` call counts one poll and reports ``degraded`` until the page has
been polled ``recover_after`` times, then ``ok`` (a service that recovers by itself).
Every action appends a line to the incident timeline, ``<out_dir>/incident.log``.

    beluga-flows definition run workflows/incident_response.yaml \\
        --actions workflows/incident_actions.py --input '{"incident_id": "inc-7"}'
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import beluga_flows as bf


def _log(out_dir: str, incident_id: str, event: str, detail: str) -> None:
    """Append one line to the incident timeline."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with open(Path(out_dir) / "incident.log", "a") as fh:
        fh.write(f"{stamp} {incident_id} {event}: {detail}\n")


def _page_path(out_dir: str) -> Path:
    return Path(out_dir) / "status_page.json"


@bf.action
def open_incident(
    incident_id: str, service: str, out_dir: str, recover_after: int
) -> dict[str, Any]:
    """Create the status page (``degraded``) and the first timeline line."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    page = {
        "service": service,
        "status": "degraded",
        "polls": 0,
        "recover_after": recover_after,
        "region": "primary",
    }
    _page_path(out_dir).write_text(json.dumps(page, indent=2))
    _log(out_dir, incident_id, "opened", f"{service} degraded")
    return {"status": "degraded"}


@bf.action
def poll_status_page(incident_id: str, out_dir: str, poll_interval_s: float) -> dict[str, Any]:
    """One poll: wait ``poll_interval_s``, count the poll, report the page's status."""
    time.sleep(poll_interval_s)
    path = _page_path(out_dir)
    page = json.loads(path.read_text())
    page["polls"] += 1
    if page["status"] != "ok" and page["polls"] >= page["recover_after"]:
        page["status"] = "ok"
    path.write_text(json.dumps(page, indent=2))
    _log(out_dir, incident_id, "poll", f"#{page['polls']} {page['status']}")
    return {"status": page["status"], "polls": page["polls"]}


@bf.action
def resolve_incident(incident_id: str, out_dir: str, polls: int) -> dict[str, Any]:
    """The service recovered by itself: close the incident."""
    _log(out_dir, incident_id, "resolved", f"recovered after {polls} polls")
    return {"outcome": "recovered"}


@bf.action
def page_oncall(incident_id: str, service: str, out_dir: str, polls: int) -> dict[str, Any]:
    """Still degraded after the last poll: page the on-call engineer."""
    _log(out_dir, incident_id, "escalated", f"{service} still degraded after {polls} polls")
    with open(Path(out_dir) / "pages.log", "a") as fh:
        fh.write(f"{incident_id} on-call\n")
    return {"paged": "on-call"}


@bf.action
def page_incident_commander(data: dict[str, Any]) -> dict[str, Any]:
    """Error handler of the fail-over approval: nobody approved it, escalate one level up.

    Its return value becomes the approval step's output, so ``failover`` (guarded by
    ``failover_approval.approved``) is skipped and the run goes on to ``notify``.
    """
    error = data["error"]
    why = "no answer" if error["code"] == "timeout" else "declined"
    _log(data["out_dir"], data["incident_id"], "escalated", f"fail-over {why}: paging the IC")
    with open(Path(data["out_dir"]) / "pages.log", "a") as fh:
        fh.write(f"{data['incident_id']} incident-commander\n")
    return {"approved": False, "escalated_to": "incident-commander", "reason": why}


@bf.action
def fail_over(incident_id: str, service: str, out_dir: str) -> dict[str, Any]:
    """Move the service to the standby region: the status page turns ``ok``."""
    path = _page_path(out_dir)
    page = json.loads(path.read_text())
    page.update(region="standby", status="ok")
    path.write_text(json.dumps(page, indent=2))
    _log(out_dir, incident_id, "failover", f"{service} now served from standby")
    return {"outcome": "failed-over", "region": "standby"}


@bf.action
def fail_back(data: dict[str, Any]) -> None:
    """Rollback of ``fail_over``: the run failed after the switch, go back to primary."""
    path = _page_path(data["out_dir"])
    page = json.loads(path.read_text())
    page["region"] = "primary"
    path.write_text(json.dumps(page, indent=2))
    _log(data["out_dir"], data["incident_id"], "failback", "back on primary")


@bf.action
def notify_stakeholders(data: dict[str, Any]) -> dict[str, Any]:
    """The last word: one summary line in ``<out_dir>/notifications.log`` and the timeline."""
    page = json.loads(_page_path(data["out_dir"]).read_text())
    outcome = (
        "recovered by itself"
        if data.get("resolve")
        else "failed over to standby"
        if data.get("failover")
        else "still degraded, escalated"
    )
    line = (
        f"[{data['incident_id']}] {data['service']}: {outcome} "
        f"(status {page['status']}, region {page['region']}, {page['polls']} polls)"
    )
    with open(Path(data["out_dir"]) / "notifications.log", "a") as fh:
        fh.write(line + "\n")
    _log(data["out_dir"], data["incident_id"], "notified", outcome)
    return {"message": line, "outcome": outcome}
