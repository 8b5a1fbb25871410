"""Whether a local process is alive: the one check the CLI and the workflow host
share (a background ``serve``, a server, the owner of a workflow run)."""

from __future__ import annotations

import os

__all__ = ["alive", "process_start"]


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
    return fields[19] if len(fields) > 19 else ""


def alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs: it exists, is not a zombie (exited, not yet reaped) and,
    when ``started`` is given, is the same process that started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False
    return not started or not fields or process_start(pid) == started
