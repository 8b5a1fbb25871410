"""Flows the deployment tests serve and deploy."""

from __future__ import annotations

import time
from pathlib import Path

import beluga_flows as bf


@bf.flow(name="tick")
def tick(path: str) -> float:
    """Append the time to ``path`` (each scheduled run leaves a line)."""
    now = time.time()
    with Path(path).open("a") as fh:
        fh.write(f"{now}\n")
    return now


broken = "not a flow"
