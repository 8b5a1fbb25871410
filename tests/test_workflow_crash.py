"""Resume after a hard crash: worker processes are killed with SIGKILL mid-workflow.

Each worker hosts a ten-step workflow in-process (its run's owner is the worker's
pid). The test kills it when a randomly chosen step has started, then resumes the
workflow here: the dead run is recognised and marked Crashed, and the new run
reuses every completed step's stored result, so the final value equals an
uninterrupted run's and no completed step ran twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import beluga_flows as bf
from tests.prefect_api import flow_run
from tests.workflow_app import lines, steps, ten_steps

pytestmark = pytest.mark.usefixtures("prefect_server")

WORKER = Path(__file__).with_name("workflow_crash_worker.py")


def read_state(run_id: str) -> str:
    return str(flow_run(run_id).state.type.value)


KILLS = 5


def test_a_killed_worker_resumes_without_rerunning_completed_steps(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("BELUGA_CRASH_SEED", "7"))
    kill_at = rng.sample(range(1, 10), KILLS)  # a different step for each worker
    with bf.use_engine("local"):  # an uninterrupted run, in-process
        expected = ten_steps(str(tmp_path / "uninterrupted.txt"))
    workers = []
    for n, step in enumerate(kill_at):
        wid = f"crash-{n}-{os.urandom(4).hex()}"
        ledger = str(tmp_path / f"ledger-{n}.txt")
        proc = subprocess.Popen([sys.executable, str(WORKER), wid, ledger])
        workers.append((wid, ledger, step, proc))

    deadline = time.monotonic() + 240
    alive = list(workers)
    while alive:  # kill each worker the moment its chosen step has started
        for worker in list(alive):
            wid, ledger, step, proc = worker
            if f"start {step}" in lines(ledger):
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                alive.remove(worker)
            else:
                assert proc.poll() is None, f"worker {wid} ended before step {step}"
        assert time.monotonic() < deadline, f"workers never reached their steps: {alive}"
        time.sleep(0.02)

    for wid, ledger, step, _ in workers:
        assert steps.query(wid, None, "status") == "crashed"  # its owner is gone…
        [dead] = asyncio.run(steps.ahandles(wid))
        assert read_state(dead.run_id) == "RUNNING"  # …though Prefect still says Running
        handle = steps.resume(wid)
        assert steps.get_result(wid, handle.run_id, timeout=120) == expected
        ran = lines(ledger)
        assert [ran.count(f"done {i}") for i in range(10)] == [1] * 10, (step, ran)
        before = [ran.count(f"start {i}") for i in range(step)]
        assert before == [1] * step, (step, ran)  # completed steps never re-ran
        runs = [h.run_id for h in asyncio.run(steps.ahandles(wid))]
        assert len(runs) == 2 and steps.query(wid, runs[1], "status") == "crashed"


EXITING = """
import sys, time
sys.path.insert(0, "tests")
from workflow_app import lines, signals
signals.execute({"ledger": sys.argv[2], "expect": 1}, workflow_id=sys.argv[1])
while len(lines(sys.argv[2])) < 2:
    time.sleep(0.05)
"""  # …then the process exits normally, with its run still waiting for a signal


def test_a_host_that_exits_marks_its_runs_crashed_and_resume_continues(tmp_path: Path) -> None:
    from tests.workflow_app import signals

    wid, ledger = f"exit-{os.urandom(4).hex()}", str(tmp_path / "ledger.txt")
    done = subprocess.run(
        [sys.executable, "-c", EXITING, wid, ledger],
        cwd=Path(__file__).parents[1],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert signals.query(wid, None, "status") == "crashed"
    handle = signals.resume(wid)
    signals.signal(wid, handle.run_id, "item", "late")
    assert signals.get_result(wid, handle.run_id, timeout=60) == {"items": ["late"]}
    assert lines(ledger) == ["do first", "do second", "do last"]  # nothing ran twice
