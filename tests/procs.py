"""Waiting for things and stopping the processes the tests start."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any


def until(check: Callable[[], Any], timeout: float = 120, what: str = "it") -> Any:
    """Poll ``check`` until it returns something truthy (and return that)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def stop(proc: subprocess.Popen[Any], timeout: float = 90) -> int | None:
    """SIGTERM ``proc`` and wait; kill it if it does not exit in ``timeout`` seconds,
    so no stray process outlives its test. The exit code, or ``None`` if killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None
