"""Declarative deployments: validation, ``serve`` firing a schedule, ``deploy`` to a
process work pool run by a real ``prefect worker``, ``list`` and ``graph draw`` —
all through the real command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.tools import deploy
from beluga_flows.tools.server import LocalServer
from tests.prefect_api import deployment
from tests.procs import stop, until

ROOT = Path(__file__).resolve().parents[1]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beluga_flows.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def env(prefect_server: LocalServer) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("entrypoint: flows/x.py:f\n", "name"),
        ("name: a\nentrypoint: flows/x.py\n", "entrypoint"),
        ("name: a\nentrypoint: x.py:f\nschedule: {cron: '* * * * *', interval: 5}\n", "schedule"),
        ("name: a\nentrypoint: x.py:f\nschedule: {cron: 'every day'}\n", "schedule"),
        ("name: a\nentrypoint: x.py:f\nschedule: {interval: 5, timezone: Mars/Base}\n", "schedule"),
        ("name: a\nentrypoint: x.py:f\nschedule: {interval: -1}\n", "schedule.interval"),
        ("name: a\nentrypoint: x.py:f\nconcurrency: 0\n", "concurrency"),
        ("name: a\nentrypoint: x.py:f\nretries: 3\n", "retries"),
        ("name: a\n  entrypoint: [\n", None),
    ],
)
def test_bad_files_name_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(OrchestratorError) as info:
        deploy.load([str(path)])
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert str(path) in str(info.value)
    if field is not None:
        assert f": {field}" in str(info.value)


def test_the_shipped_deployment_files_are_valid() -> None:
    loaded = deploy.load(["deployments"])
    assert {item.spec.name for item in loaded} == {"every-minute", "hourly", "nightly"}
    nightly = next(item.spec for item in loaded if item.spec.name == "nightly")
    assert nightly.entrypoint.endswith(".yaml") and nightly.actions


def test_an_entrypoint_that_does_not_import_registers_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    good = f"good-{uuid.uuid4().hex[:6]}"
    write(tmp_path, "a.yaml", f"name: {good}\nentrypoint: tests/deploy_app.py:tick\n")
    write(tmp_path, "b.yaml", "name: bad\nentrypoint: tests/no_such_module.py:flow\n")
    done = cli(env, "serve", str(tmp_path))
    assert done.returncode == 2 and "no such file" in done.stderr, done.stderr
    write(tmp_path, "b.yaml", "name: bad\nentrypoint: tests/deploy_broken.py:flow\n")
    done = cli(env, "serve", str(tmp_path))
    assert done.returncode == 2 and "does not import" in done.stderr, done.stderr
    assert "no_such_package_anywhere" in done.stderr and "[invalid_config]" in done.stderr
    write(tmp_path, "b.yaml", "name: bad\nentrypoint: tests/deploy_app.py:broken\n")
    done = cli(env, "serve", str(tmp_path))
    assert done.returncode == 2 and "is not a flow" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert deployment(f"tick/{good}") is None  # nothing half-registered


def test_serve_fires_an_interval_schedule(env: dict[str, str], tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.txt"
    name = f"every-2s-{uuid.uuid4().hex[:6]}"
    path = write(
        tmp_path,
        "tick.yaml",
        f"name: {name}\nentrypoint: tests/deploy_app.py:tick\n"
        f"parameters: {{path: '{ticks}'}}\nschedule: {{interval: 2}}\ntags: [beluga:test]\n",
    )
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beluga_flows.cli", "serve", str(path)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        until(
            lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 2,
            timeout=150,
            what="two scheduled runs",
        )

        def completed_listed() -> subprocess.CompletedProcess[str] | None:
            # A tick is written inside its run: the run completes a moment later.
            listed = cli(env, "list")
            runs = listed.stdout.partition("Latest runs")[2].splitlines()
            done = any(" tick " in ln and "Completed" in ln for ln in runs)
            return listed if done else None

        listed = until(completed_listed, timeout=120, what="a completed scheduled run")
        assert listed.returncode == 0 and f"tick/{name}" in listed.stdout
        assert "every 2 s" in listed.stdout
        runs = listed.stdout.partition("Latest runs")[2].splitlines()
        assert not any("Scheduled" in ln for ln in runs)  # runs that ran, not future ones
    finally:
        code = stop(proc)
    log = (tmp_path / "serve.log").read_text()
    assert code == 0, f"serve did not stop on SIGTERM:\n{log[-3000:]}"
    assert "stopping: cancelling in-flight runs" in log
    assert log.rstrip().endswith("Stopped serving.")
    listed = cli(env, "list")  # no orphaned schedule keeps piling up runs
    assert any(f"tick/{name}" in ln and "PAUSED" in ln for ln in listed.stdout.splitlines())


def test_deploy_to_a_process_pool_and_a_worker_runs_it(env: dict[str, str], tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.txt"
    pool, name = f"pool-{uuid.uuid4().hex[:6]}", f"on-demand-{uuid.uuid4().hex[:6]}"
    path = write(
        tmp_path,
        "tick.yaml",
        f"name: {name}\nentrypoint: tests/deploy_app.py:tick\n"
        f"parameters: {{path: '{ticks}'}}\nwork_pool: {pool}\n",
    )
    done = cli(env, "deploy", str(path))
    assert done.returncode == 0, done.stderr
    assert f"created process work pool {pool!r}" in done.stdout
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        async def run() -> Any:
            from prefect.deployments import run_deployment

            return await run_deployment(f"tick/{name}", timeout=150)

        flow_run = asyncio.run(run())
        assert flow_run.state.is_completed(), flow_run.state
        assert len(ticks.read_text().splitlines()) == 1
    finally:
        stop(worker)


def test_graph_draw_prints_or_writes_mermaid(env: dict[str, str], tmp_path: Path) -> None:
    done = cli(env, "graph", "draw", "flows/research_assistant.py:research_graph")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flowchart") or "graph" in done.stdout.splitlines()[0]
    assert "search_titles" in done.stdout and "review" in done.stdout
    out = tmp_path / "graph.mmd"
    assert (
        cli(env, "graph", "draw", "flows/research_assistant.py:build", "--out", str(out)).returncode
        == 0
    )
    assert "search_bodies" in out.read_text()
    reader, writer = os.pipe()  # `beluga-flows graph draw … | head`, the reader gone
    os.close(reader)
    with os.fdopen(writer, "wb") as closed:
        piped = subprocess.run(
            [sys.executable, "-m", "beluga_flows.cli", "graph", "draw",
             "flows/research_assistant.py:research_graph"],
            cwd=ROOT, env=env, stdout=closed, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert piped.returncode == 141 and piped.stderr == "", piped.stderr  # as `yes | head`
    wrong = cli(env, "graph", "draw", "flows/sales_report.py:sales_report")
    assert wrong.returncode == 2 and "[invalid_input]" in wrong.stderr


# ---------------------------------------------------------------- workflow definitions

TICK_ACTIONS = """\
import time
from pathlib import Path

import beluga_flows as bf


@bf.action("tick_{uid}")
def tick(path: str) -> float:
    now = time.time()
    with Path(path).open("a") as fh:
        fh.write(f"{{now}}\\n")
    return now
"""

TICK_DEFINITION = """\
workflow_id: ticking-{uid}
description: Append the time to a file
steps:
  - step_id: tick
    action: tick_{uid}
    input_mapping: {{path: path}}
"""


def _runs(flow_name: str) -> list[Any]:
    """Every run of ``flow_name``, finished or not."""
    from tests.prefect_api import _flow_runs

    return asyncio.run(_flow_runs(flow_name))


def definition_files(folder: Path) -> tuple[str, Path, Path]:
    """A definition and its actions file, with names of their own (one registry a process)."""
    uid = uuid.uuid4().hex[:8]
    actions = write(folder, f"tick_actions_{uid}.py", TICK_ACTIONS.format(uid=uid))
    definition = write(folder, "ticking.yaml", TICK_DEFINITION.format(uid=uid))
    return uid, definition, actions


def test_a_deployment_can_name_a_definition(tmp_path: Path) -> None:
    uid, definition, actions = definition_files(tmp_path)
    path = write(
        tmp_path,
        "d.yaml",
        f"name: ticking\nentrypoint: {definition}\nactions: [{actions}]\n"
        f"parameters: {{path: out.txt}}\nschedule: {{interval: 60}}\ntags: [team-a]\n",
    )
    (built,) = deploy.build(deploy.load([str(path)]), served=True)
    assert built.name == "ticking" and built.flow_name == f"ticking-{uid}"
    assert built.entrypoint == deploy.RUN_DEFINITION_ENTRYPOINT
    assert built.parameters == {
        "definition": str(definition.resolve()),
        "actions": [str(actions.resolve())],
        "input_data": {"path": "out.txt"},
    }
    assert {"team-a", "beluga:definition", f"workflow:ticking-{uid}", "version:1.0"} <= set(
        built.tags
    )
    assert built.description == "Append the time to a file"


@pytest.mark.parametrize(
    ("lines", "stage", "field"),
    [
        ("entrypoint: x.py:f\nactions: [a.py]\n", "load", "actions"),
        ("entrypoint: {definition}\nactions: [a.txt]\n", "load", "actions"),
        ("entrypoint: {folder}/nowhere.yaml\n", "build", "entrypoint"),
        ("entrypoint: {definition}\nactions: [{folder}/nowhere.py]\n", "build", "actions"),
        ("entrypoint: {definition}\n", "build", "entrypoint"),  # its actions unknown
        ("entrypoint: {folder}/broken.yaml\nactions: [{actions}]\n", "build", "entrypoint"),
    ],
)
def test_bad_definition_deployments_name_the_file_and_the_field(
    tmp_path: Path, lines: str, stage: str, field: str
) -> None:
    _, definition, actions = definition_files(tmp_path)
    write(tmp_path, "broken.yaml", "workflow_id: x\nsteps: [{step_id: a, timeout: -1}]\n")
    text = lines.format(definition=definition, actions=actions, folder=tmp_path)
    path = write(tmp_path, "d.yaml", "name: bad\n" + text)
    with pytest.raises(OrchestratorError) as info:
        deploy.build(deploy.load([str(path)]), served=True)
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert f"{path}: {field}" in str(info.value), str(info.value)
    if stage == "build":
        deploy.load([str(path)])  # the file itself is well-formed


def test_the_definition_flow_fails_when_the_execution_fails(
    prefect_server: LocalServer, tmp_path: Path
) -> None:
    _, definition, actions = definition_files(tmp_path)
    ticks = tmp_path / "ticks.txt"
    body = deploy.run_definition.fn  # what a deployment's flow run executes
    summary = asyncio.run(body(str(definition), [str(actions)], {"path": str(ticks)}))
    assert summary["status"] == "completed" and ticks.exists()
    with pytest.raises(OrchestratorError) as info:  # a folder is no file to append to
        asyncio.run(body(str(definition), [str(actions)], {"path": str(tmp_path)}))
    assert info.value.code is ErrorCode.EXECUTION_FAILED and "failed" in str(info.value)


def test_serve_runs_a_scheduled_definition(env: dict[str, str], tmp_path: Path) -> None:
    from tests.prefect_api import flow_runs, task_runs

    uid, definition, actions = definition_files(tmp_path)
    # After the tick, the scheduled run asks for approval: it is durable, so the form
    # is in the UI and WorkflowClient finds the run by its name.
    with definition.open("a") as fh:
        fh.write(
            "  - step_id: sign_off\n    type: approval\n    dependencies: [tick]\n"
            "  - step_id: tock\n    action: tick_" + uid + "\n"
            "    input_mapping: {path: path}\n    dependencies: [sign_off]\n"
        )
    ticks = tmp_path / "ticks.txt"
    path = write(
        tmp_path,
        "d.yaml",
        f"name: ticking-{uid}\nentrypoint: {definition}\nactions: [{actions}]\n"
        # every 30 s: each run waits for its approval, a process apiece meanwhile
        f"parameters: {{path: '{ticks}'}}\nschedule: {{interval: 30}}\ntags: [beluga:test]\n",
    )
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beluga_flows.cli", "serve", str(path)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        until(ticks.exists, timeout=120, what="a scheduled run of the definition")
        client = bf.WorkflowClient()
        paused = until(
            lambda: [r for r in _runs(f"ticking-{uid}") if r.state.type.value == "PAUSED"],
            timeout=120,
            what="a scheduled run waiting for its approval",
        )[0]
        assert client.query(paused.name, None, "status") == "paused"
        client.signal(paused.name, None, "approval", {"approved": True, "reviewer": "ops"})
        summary = client.get_result(paused.name, None, timeout=60)  # run_definition's dict
        assert summary["status"] == "completed"
        assert summary["result"]["sign_off"]["reviewer"] == "ops"
        done = str(paused.id)
        completed = [r for r in flow_runs(f"ticking-{uid}", timeout=0) if str(r.id) == done]
        assert {"beluga:definition", f"workflow:ticking-{uid}"} <= set(completed[0].tags)
        steps = task_runs(completed[0].id, expect=3)
        # the engine ran it: a task run per step
        assert [t.name for t in steps] == ["tick", "sign_off", "tock"]
    finally:
        code = stop(proc)
    log_text = (tmp_path / "serve.log").read_text()
    assert code == 0, log_text[-3000:]


def test_deploy_a_definition_to_a_process_pool(env: dict[str, str], tmp_path: Path) -> None:
    uid, definition, actions = definition_files(tmp_path)
    ticks = tmp_path / "ticks.txt"
    pool = f"pool-{uid}"
    path = write(
        tmp_path,
        "d.yaml",
        f"name: on-demand\nentrypoint: {definition}\nactions: [{actions}]\n"
        f"parameters: {{path: '{ticks}'}}\nwork_pool: {pool}\n",
    )
    done = cli(env, "deploy", str(path))
    assert done.returncode == 0, done.stderr
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        async def run() -> Any:
            from prefect.deployments import run_deployment

            return await run_deployment(f"ticking-{uid}/on-demand", timeout=150)

        flow_run = asyncio.run(run())
        assert flow_run.state.is_completed(), (tmp_path / "worker.log").read_text()[-3000:]
        assert len(ticks.read_text().splitlines()) == 1
    finally:
        stop(worker)
