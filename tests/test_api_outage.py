"""A Prefect API outage mid-run: the test's own server is stopped for 15 s while a
durable workflow and a tracked chain run in a client process, then started again on
the same database and port.

Nothing may be lost or repeated: the client exits with the right results, every
step ran exactly once (the ledgers), and the server, once back, has both flow runs
Completed with all their task runs Completed (what the UI shows).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from beluga_flows.tools.server import LocalServer, free_port
from tests.procs import stop, until
from tests.workflow_app import lines

CLIENT = Path(__file__).with_name("outage_client.py")
OUTAGE = 15.0
SQUARES = sum(i * i for i in range(10))


def _post(server: LocalServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    answer = httpx.post(f"{server.api_url}{path}", json=body, timeout=30)
    found: list[dict[str, Any]] = answer.json()
    return found


def _flow_run(server: LocalServer, **filter: Any) -> dict[str, Any] | None:
    found = _post(server, "/flow_runs/filter", filter)
    return found[0] if found else None


def _settled(server: LocalServer, run: dict[str, Any] | None) -> Any:
    """The run and its task runs once all are final (task runs are recorded from
    events, a moment after the run ends), else ``None``."""
    if run is None or run["state"]["type"] not in ("COMPLETED", "FAILED", "CRASHED"):
        return None
    tasks = _post(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    if len(tasks) < 10 or any(t["state"]["type"] != "COMPLETED" for t in tasks):
        return None
    return run, tasks


def _states(server: LocalServer, run: dict[str, Any] | None) -> Any:
    if run is None:
        return None
    tasks = _post(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    return run["state"]["type"], sorted((t["name"], (t["state"] or {}).get("type")) for t in tasks)


@pytest.mark.slow
def test_a_15s_api_outage_loses_no_run_repeats_no_step_and_the_ui_sees_it_all(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = LocalServer.launch(tmp_path / "server", port=port)
    try:
        server.wait_ready(180)
        env = {
            **os.environ,
            **server.client_env(),
            "PREFECT_HOME": str(tmp_path / "client"),
            "PYTHONPATH": str(Path(__file__).parents[1]),
            "BELUGA_FLOWS_WORKFLOW_POLL": "0.2",
        }
        ledgers = tmp_path / "ledgers"
        ledgers.mkdir()
        wf_ledger, chain_ledger = str(ledgers / "workflow.txt"), str(ledgers / "chain.txt")
        with (tmp_path / "client.err").open("wb") as errors:
            client = subprocess.Popen(
                [sys.executable, str(CLIENT), "outage-wf", str(ledgers)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        try:
            until(
                lambda: "done 2" in lines(wf_ledger) and "done 2" in lines(chain_ledger),
                timeout=180,
                what="both runs mid-way",
            )
            server.stop()  # SIGTERM, wait: the API is gone
            down_at = (lines(wf_ledger), lines(chain_ledger))
            time.sleep(OUTAGE)
            assert client.poll() is None, "the client gave up during the outage"
            up = time.time()
            server = LocalServer.launch(tmp_path / "server", port=port)
            server.wait_ready(180)
            out, _ = client.communicate(timeout=300)
        finally:
            stop(client)
        err = (tmp_path / "client.err").read_text()
        assert client.returncode == 0, err[:5000]  # the first traceback is the cause
        result = json.loads(out.strip().splitlines()[-1])

        # The outage hit both runs mid-way, and neither lost or repeated a step.
        assert all("done 9" not in ran for ran in down_at), down_at
        for ledger in (wf_ledger, chain_ledger):
            ran = lines(ledger)
            assert [ran.count(f"start {i}") for i in range(10)] == [1] * 10, (ledger, ran)
            assert [ran.count(f"done {i}") for i in range(10)] == [1] * 10, (ledger, ran)
        assert "error" not in result, result["error"]  # the chain's
        assert result["workflow"] == SQUARES
        # The status was asked across the outage too (asked before the server was back,
        # answered after), and every answer was right.
        seen = result["seen"]
        statuses = [status for *_, status in seen]
        assert statuses[-1] == "completed" and "running" in statuses, seen
        assert set(statuses) <= {"pending", "running", "completed"}, seen
        assert any(asked < up < answered for asked, answered, _ in seen), (up, seen)
        assert result["value"]["n"] == 10 and result["value"]["total"] == SQUARES

        # What the UI shows: both flow runs Completed, each with ten Completed task runs.
        def workflow_run() -> Any:
            return _flow_run(server, flow_runs={"id": {"any_": [result["run_id"]]}})

        def chain_run() -> Any:
            return _flow_run(server, flows={"name": {"any_": ["outage-chain"]}})

        for read in (workflow_run, chain_run):
            try:
                run, tasks = until(lambda read=read: _settled(server, read()), timeout=90)
            except AssertionError:
                raise AssertionError(f"{read.__name__}: {_states(server, read())}") from None
            assert run["state"]["type"] == "COMPLETED", run["state"]
            assert len(tasks) == 10, [t["name"] for t in tasks]
    finally:
        server.stop()
