"""Local processes: whether one is alive (the check the CLI and the workflow host
share: a background ``serve``, a server, the owner of a workflow run) and the pid
files the CLI keeps for the processes it leaves running.

A pid alone does not name a process: once it exits, the system may give its pid
to an unrelated one. So every record keeps the process's start time too (psutil's
``create_time``, on every platform), and a live pid whose start time differs is
another process: never reported alive, never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["alive", "process_start", "record", "recorded", "terminate"]

# A recorded and a read start time of the same process agree to the clock tick, but
# both add the boot time the system reports, which a clock step can move a little.
# A pid reused within a second of its first start is not a concern: the pid space
# would have to wrap in that second.
_SAME_START = 1.0


def process_start(pid: int) -> str:
    """When ``pid`` started, as seconds since the epoch (text, as recorded), or ``""``."""
    try:
        return f"{psutil.Process(pid).create_time():.3f}"
    except psutil.Error:
        return ""


def _recorded_start(value: str) -> float | None:
    """A recorded start in seconds since the epoch, or ``None`` when it cannot tell.

    This version writes seconds (with a decimal point); an integer is what an older
    version wrote on Linux: the kernel's clock ticks since boot."""
    try:
        if "." in value:
            return float(value)
        return int(value) / os.sysconf("SC_CLK_TCK") + float(psutil.boot_time())
    except (ValueError, OSError, AttributeError, psutil.Error):
        return None


def alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs: it exists, is not a zombie (exited, not yet reaped) and,
    when ``started`` is given, is the same process that started then. A recorded
    start that cannot be read as a time cannot tell: the pid alone decides."""
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        expected = _recorded_start(started) if started else None
        return expected is None or abs(proc.create_time() - expected) < _SAME_START
    except psutil.NoSuchProcess:  # a ZombieProcess too
        return False
    except psutil.AccessDenied:  # exists, but someone else's: not one we recorded
        return not started


def record(path: Path, pid: int, **extra: Any) -> dict[str, Any]:
    """Write a pid file: ``pid``, its start time (so a reused pid is not taken for
    it) and ``extra`` facts; returns what was written."""
    state = {**extra, "pid": pid, "pid_start": process_start(pid)}
    path.write_text(json.dumps(state))
    return state


def recorded(path: Path) -> dict[str, Any] | None:
    """The pid file's facts while its process runs; ``None`` (and the stale file
    removed) once it does not."""
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if alive(pid, state.get("pid_start") or None):
        return state
    path.unlink(missing_ok=True)
    return None


def terminate(state: dict[str, Any], grace: float) -> None:
    """SIGTERM the recorded process, wait up to ``grace`` seconds, then SIGKILL.
    A process that is not the recorded one (its start time differs) is left alone."""
    pid, started = int(state["pid"]), state.get("pid_start") or None
    if not alive(pid, started):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid, started):
            os.kill(pid, signal.SIGKILL)
