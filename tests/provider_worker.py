"""A worker process for the cross-process provider-limits test (run as a script).

usage: provider_worker.py PROVIDER RPM CALLS TIMEOUT DIR
Declares ``ProviderLimits(PROVIDER, rpm=RPM)``, writes ``DIR/ready-<pid>``, waits for
``DIR/go``, then makes CALLS concurrent calls of a step of that provider on the
Prefect engine (its budgets are the server's global concurrency limits) and writes
``DIR/result-<pid>.json``: each call's outcome (``ok`` or its error code) and the
wall-clock start and end of the calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import beluga_flows as bf


async def main(provider: str, rpm: int, calls: int, timeout: float, folder: Path) -> None:
    bf.ProviderLimits(provider, rpm=rpm)

    @bf.step(provider=provider, timeout=timeout, track=False)
    async def complete(i: int) -> str:
        return "ok"

    async def outcome(i: int) -> str:
        try:
            return await complete(i)  # type: ignore[no-any-return]
        except bf.OrchestratorError as err:
            return str(err.code)

    (folder / f"ready-{os.getpid()}").touch()
    while not (folder / "go").exists():
        await asyncio.sleep(0.05)
    start = time.time()
    results = await asyncio.gather(*(outcome(i) for i in range(calls)))
    end = time.time()
    out = {"results": results, "start": start, "end": end}
    (folder / f"result-{os.getpid()}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    with bf.use_engine("prefect"):
        asyncio.run(
            main(
                sys.argv[1],
                int(sys.argv[2]),
                int(sys.argv[3]),
                float(sys.argv[4]),
                Path(sys.argv[5]),
            )
        )
