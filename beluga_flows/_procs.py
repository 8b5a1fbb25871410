"""Local processes: whether one is alive (the check the CLI and the workflow host
share: a background ``serve``, a server, the owner of a workflow run) and the pid
files the CLI keeps for the processes it leaves running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

__all__ = ["alive", "process_start", "record", "recorded", "terminate"]


_START = 19  # starttime's index among the fields after the command name (proc(5))


def _stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or []."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (guards against pid reuse), or ``""``."""
    fields = _stat(pid)
    return fields[_START] if len(fields) > _START else ""


def alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs: it exists, is not a zombie (exited, not yet reaped) and,
    when ``started`` is given, is the same process that started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    fields = _stat(pid)  # [] when /proc cannot tell: trust the signal check
    if fields and fields[0] in ("Z", "X"):
        return False
    return not started or len(fields) <= _START or fields[_START] == started


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
    """SIGTERM the recorded process, wait up to ``grace`` seconds, then SIGKILL."""
    pid, started = int(state["pid"]), state.get("pid_start") or None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid, started):
            os.kill(pid, signal.SIGKILL)
