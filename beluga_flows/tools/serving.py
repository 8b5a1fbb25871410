"""The background ``beluga-flows serve deployments`` process the demo starts.

Recorded in ``$BELUGA_FLOWS_HOME/serve.json`` so a later command finds it:
``demo`` reuses it, ``server --stop`` stops it (before the server: it pauses its
schedules through the server). Shared by those commands, so it lives below them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from beluga_flows._procs import record, recorded, terminate
from beluga_flows.tools.server import home

__all__ = ["serving", "start_serving", "stop_serving"]


def _serve_file() -> Path:
    return home() / "serve.json"


def serving() -> dict[str, Any] | None:
    """The record of the background ``serve`` process, if one runs."""
    return recorded(_serve_file())


def start_serving(api_url: str) -> int:
    """``beluga-flows serve deployments/`` in the background (reused if running)."""
    state = recorded(_serve_file())
    if state is not None:
        return int(state["pid"])
    log = (home() / "serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "beluga_flows.cli", "serve", "deployments"],
        env={**os.environ, "PREFECT_API_URL": api_url},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # outlives the demo and its Ctrl-C
    )
    log.close()
    record(_serve_file(), proc.pid)
    return proc.pid


def stop_serving() -> None:
    """Stop the background ``serve`` process the demo started, if any: it cancels
    its in-flight runs and pauses its schedules (a minute at most, then killed)."""
    state = recorded(_serve_file())
    if state is not None:
        terminate(state, grace=60)
        print("Stopped serving the example deployments.")
    _serve_file().unlink(missing_ok=True)
