"""Process liveness and pid files (``beluga_flows._procs``) against real processes:
a recorded start time that does not match means another process, never signalled."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from beluga_flows._procs import alive, process_start, record, recorded, terminate
from tests.procs import stop


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        stop(proc)


def test_the_recorded_start_identifies_the_process(sleeper: subprocess.Popen[bytes]) -> None:
    started = process_start(sleeper.pid)
    assert started and float(started) > 0  # seconds since the epoch
    assert process_start(sleeper.pid) == started  # the same every time it is read
    assert alive(sleeper.pid) and alive(sleeper.pid, started)
    earlier = f"{float(started) - 3600:.3f}"  # a process that had this pid an hour ago
    assert not alive(sleeper.pid, earlier)


# A child that answers each line on stdin with the signals it has received.
_LISTENER = """
import signal, sys
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append("TERM"))
print("ready", flush=True)
for line in sys.stdin:
    print(",".join(got) or "none", flush=True)
"""


def test_terminate_never_signals_a_process_that_started_at_another_time() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        wrong = f"{float(process_start(child.pid)) - 3600:.3f}"  # the pid's earlier owner
        terminate({"pid": child.pid, "pid_start": wrong}, grace=5)
        child.stdin.write("signals?\n")
        child.stdin.flush()
        # A signal sent before this line was written is handled before it is read.
        assert child.stdout.readline() == "none\n"
    finally:
        child.kill()
        child.wait(30)


def test_terminate_stops_the_recorded_process(sleeper: subprocess.Popen[bytes]) -> None:
    terminate({"pid": sleeper.pid, "pid_start": process_start(sleeper.pid)}, grace=30)
    assert sleeper.wait(30) == -15 and not alive(sleeper.pid)


def test_an_exited_unreaped_process_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start(proc.pid)
    try:
        from tests.procs import until

        until(lambda: not alive(proc.pid), 60, "the child to exit")  # a zombie until reaped
        assert not alive(proc.pid, started or None)
    finally:
        proc.wait(30)


def test_old_and_odd_recorded_starts_do_not_crash(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    # An older version recorded the kernel's clock ticks since boot (an integer):
    # a wrong one is another process, and garbage cannot tell, so the pid decides.
    assert not alive(sleeper.pid, "1")
    assert alive(sleeper.pid, "not a start time")
    path = tmp_path / "server.json"
    path.write_text(json.dumps({"pid": sleeper.pid, "pid_start": "1"}))
    assert recorded(path) is None and not path.exists()  # stale, removed
    assert recorded(tmp_path / "missing.json") is None
    state = record(path, sleeper.pid, ui_url="u")
    assert recorded(path) == state and state["pid_start"] == process_start(sleeper.pid)


def test_a_pid_that_does_not_exist() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait(30)
    assert not alive(gone.pid) and process_start(gone.pid) == ""
    terminate({"pid": gone.pid, "pid_start": ""}, grace=1)  # nothing to do, no error
