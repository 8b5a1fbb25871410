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


def kill_when(
    workers: list[tuple[str, str, subprocess.Popen[bytes]]], timeout: float = 240
) -> None:
    """SIGKILL each ``(ledger, line, process)`` the moment ``line`` is in its ledger,
    watching all of them at once (a worker that ends first fails the test)."""
    deadline, alive = time.monotonic() + timeout, list(workers)
    while alive:
        for worker in list(alive):
            ledger, line, proc = worker
            if line in lines(ledger):
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                alive.remove(worker)
            else:
                assert proc.poll() is None, f"a worker ended before {line!r}: {lines(ledger)}"
        assert time.monotonic() < deadline, f"never reached: {[w[1] for w in alive]}"
        time.sleep(0.02)


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

    kill_when([(ledger, f"start {step}", proc) for _, ledger, step, proc in workers])

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


TRIALS = 20


def _trial(n: int, rng: random.Random) -> tuple[str, str, str]:
    """(workflow, input, the ledger line to kill at) for trial ``n``."""
    if n % 5 == 4:  # during compensation, with the undo in flight
        name = rng.choice(["charge", "reserve"])
        return "refunds", "{}", f"undoing {name}"
    if n % 5 == 3:  # before the failure that compensates
        return "refunds", "{}", rng.choice(["do charge", "start 5"])
    at = rng.choice([f"start {i}" for i in range(1, 6)] + [f"start node {x}" for x in "abcd"])
    return "mixed", '{"delay": 0.3}', at


@pytest.mark.slow
def test_twenty_crashes_lose_nothing_repeat_no_completed_step_undo_at_most_once(
    tmp_path: Path,
) -> None:
    from tests.workflow_app import graph_and_steps, mixed, refunds

    rng = random.Random(os.environ.get("BELUGA_CRASH_SEED", "11"))
    with bf.use_engine("local"):
        expected = graph_and_steps(str(tmp_path / "uninterrupted.txt"), 0.0)
    trials = [(n, *_trial(n, rng)) for n in range(TRIALS)]
    for first in range(0, TRIALS, 5):  # five workers at a time
        workers = []
        for n, name, extra, kill_at in trials[first : first + 5]:
            wid, ledger = f"trial-{n}-{os.urandom(3).hex()}", str(tmp_path / f"trial-{n}.txt")
            if name == "refunds":
                Path(ledger + ".broken").touch()  # step 5 fails once: the undos run
            if kill_at.startswith("undoing "):
                Path(f"{ledger}.hold.{kill_at.split()[1]}").touch()
            cmd = [sys.executable, str(WORKER), wid, ledger, name, extra]
            workers.append((wid, ledger, name, kill_at, subprocess.Popen(cmd)))
        kill_when([(ledger, kill_at, proc) for _, ledger, _, kill_at, proc in workers])
        for wid, ledger, name, kill_at, _ in workers:
            for hold in Path(ledger).parent.glob(Path(ledger).name + ".hold.*"):
                hold.unlink()
            before = lines(ledger)
            workflow = mixed if name == "mixed" else refunds
            handle = workflow.resume(wid)
            ran = lines(ledger)
            if name == "mixed":
                assert workflow.get_result(wid, handle.run_id, timeout=180) == expected
                ran = lines(ledger)
                done = [x for x in ran if x.startswith("done")]
                assert sorted(done) == sorted(set(done)), (kill_at, ran)  # nothing twice
                assert len(done) == 10, (kill_at, ran)  # six steps, four nodes: none lost
                for line in before:  # what completed before the crash never started again
                    if line.startswith("done"):
                        assert ran.count(line.replace("done", "start", 1)) == 1, (kill_at, ran)
            elif kill_at.startswith("undoing "):  # mid-compensation: the rest of the roll-back
                with pytest.raises(bf.OrchestratorError) as rolled:
                    workflow.get_result(wid, handle.run_id, timeout=180)
                assert "rolled back" in str(rolled.value)
                ran = lines(ledger)
                assert "do ship" not in ran, (kill_at, ran)
                for undo in ("charge", "reserve"):
                    assert ran.count(f"undone {undo}") == 1, (kill_at, ran)  # at most once…
                assert ran.count("do charge") == 1 and ran.count("do reserve") == 1, ran
            else:  # before the failure: the step in flight may run again (at least once)
                try:
                    workflow.get_result(wid, handle.run_id, timeout=180)
                    shipped = True
                except bf.OrchestratorError:
                    shipped = False  # it failed again: everything is undone, once
                ran = lines(ledger)
                assert ran.count("do reserve") == 1, (kill_at, ran)  # completed: not again
                assert ran.count("do ship") == int(shipped), (kill_at, ran)
                for undo in ("charge", "reserve"):
                    assert ran.count(f"undone {undo}") == int(not shipped), (kill_at, ran)
