"""``beluga-flows workflow …`` through the real command line, on the order example."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from beluga_flows.tools.server import LocalServer
from tests.prefect_api import artifacts
from tests.procs import until

ROOT = Path(__file__).resolve().parents[1]
ORDERS = "flows/order_workflow.py:orders"


@pytest.fixture
def env(prefect_server: LocalServer) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_server.api_url}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beluga_flows.cli", "workflow", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def start(env: dict[str, str], wid: str, ledger: Path, amount: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "beluga_flows.cli", "workflow", "start", ORDERS, "--id", wid),
            *("--param", "order_id=7", "--param", f"amount={amount}"),
            *("--param", f"ledger={ledger}"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def status(env: dict[str, str], wid: str) -> str:
    done = cli(env, "query", wid, "status")
    return done.stdout.strip() if done.returncode == 0 else ""


def events(ledger: Path) -> list[str]:
    if not ledger.exists():
        return []
    return [json.loads(line)["event"] for line in ledger.read_text().splitlines()]


def test_start_query_approve_and_read_the_result(env: dict[str, str], tmp_path: Path) -> None:
    wid, ledger = f"order-{uuid.uuid4().hex[:8]}", tmp_path / "ledger.jsonl"
    host = start(env, wid, ledger, amount=740)
    until(lambda: status(env, wid) == "paused")
    progress = cli(env, "query", wid, "progress")
    assert progress.returncode == 0 and progress.stdout.strip() == "awaiting approval"
    sent = cli(env, "signal", wid, "approval", "--data", '{"approved": true, "reviewer": "ana"}')
    assert sent.returncode == 0, sent.stderr
    out, err = host.communicate(timeout=120)
    assert host.returncode == 0, err
    handle = json.loads(out[: out.index("}") + 1])
    assert handle["workflow_id"] == wid
    result = cli(env, "result", wid, "--run", handle["run_id"])
    assert json.loads(result.stdout) == {
        "order_id": 7,
        "payment": "payment-7",
        "parcel": "parcel-7",
        "approved_by": "ana",
    }
    progress_artifacts = [a for a in artifacts(handle["run_id"]) if a.type == "progress"]
    assert [a.data for a in progress_artifacts] == [100.0]  # one artifact, updated in place
    steps = json.loads(cli(env, "query", wid, "steps").stdout)
    assert steps["reserve_stock"] == "completed" and steps["ship"] == "completed"
    assert events(ledger) == ["reserved", "charged", "shipped"]


def test_cancel_compensates_and_terminate_does_not(env: dict[str, str], tmp_path: Path) -> None:
    cancelled, terminated = (f"order-{uuid.uuid4().hex[:8]}" for _ in range(2))
    hosts = {
        wid: start(env, wid, tmp_path / f"{wid}.jsonl", amount=900)
        for wid in (cancelled, terminated)
    }
    until(lambda: status(env, cancelled) == "paused" and status(env, terminated) == "paused")
    assert cli(env, "cancel", cancelled).returncode == 0
    stop = cli(env, "terminate", terminated, "--reason", "fraud check")
    assert stop.returncode == 0, stop.stderr
    for host in hosts.values():
        _, err = host.communicate(timeout=120)
        assert host.returncode == 2 and "[task_canceled]" in err, err
    undone = events(tmp_path / f"{cancelled}.jsonl")
    assert undone == ["reserved", "charged", "refunded", "released"]
    assert events(tmp_path / f"{terminated}.jsonl") == ["reserved", "charged"]
    result = cli(env, "result", terminated)
    assert result.returncode == 2 and "terminated: fraud check" in result.stderr


def test_resume_continues_after_the_host_was_killed(env: dict[str, str], tmp_path: Path) -> None:
    wid, ledger = f"order-{uuid.uuid4().hex[:8]}", tmp_path / "ledger.jsonl"
    first = start(env, wid, ledger, amount=600)
    until(lambda: status(env, wid) == "paused")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    again = subprocess.Popen(
        [sys.executable, "-m", "beluga_flows.cli", "workflow", "resume", ORDERS, wid],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    until(lambda: status(env, wid) == "paused")
    cli(env, "signal", wid, "approval", "--data", '{"approved": true, "reviewer": "kim"}')
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert '"approved_by": "kim"' in out
    assert events(ledger) == ["reserved", "charged", "shipped"]  # nothing ran twice


def test_bad_commands_fail_with_one_line_and_a_code(env: dict[str, str]) -> None:
    unknown = cli(env, "signal", "no-such-order", "go")
    assert unknown.returncode == 2 and "[not_found]" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    not_workflow = cli(env, "start", "flows/sales_report.py:sales_report")
    assert not_workflow.returncode == 2 and "[invalid_input]" in not_workflow.stderr
    bad_query = cli(env, "query", "no-such-order", "status")
    assert bad_query.returncode == 2 and "[not_found]" in bad_query.stderr
