"""How close to its deadline does a step's timeout fire?

Prefect's own task timeout is best effort (measured: a 1 s timeout on a sync task
blocked in ``time.sleep(3)`` fired at 3.0 s; an async task that blocks is never
interrupted). beluga_flows must raise ``TIMEOUT`` within ~10 % of the deadline in
every case. This script measures the caller's wait for four kinds of stuck step,
inline and as Prefect task runs, and prints the ratio to the deadline.

    python bench/timeouts.py [--deadline 1.0] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = ("sync-blocking", "async-blocking", "async-cooperative", "sync-cpu")


def make_steps(bf: Any, deadline: float, track: bool) -> dict[str, Any]:
    """One step per kind of stuck work, each 3x longer than the deadline."""
    stuck = 3 * deadline

    @bf.step(timeout=deadline, track=track, name="sync-blocking")
    def sync_blocking() -> None:
        time.sleep(stuck)

    @bf.step(timeout=deadline, track=track, name="async-blocking")
    async def async_blocking() -> None:
        time.sleep(stuck)  # blocks whatever loop runs it

    @bf.step(timeout=deadline, track=track, name="async-cooperative")
    async def async_cooperative() -> None:
        await asyncio.sleep(stuck)

    @bf.step(timeout=deadline, track=track, name="sync-cpu")
    def sync_cpu() -> None:
        end = time.monotonic() + stuck
        while time.monotonic() < end:
            pass

    return dict(
        zip(KINDS, (sync_blocking, async_blocking, async_cooperative, sync_cpu), strict=True)
    )


async def measure(step: Any, bf: Any) -> float:
    start = time.perf_counter()
    try:
        result = step()
        if asyncio.iscoroutine(result):
            await result
    except bf.OrchestratorError as err:
        assert err.code is bf.ErrorCode.TIMEOUT, err
    return time.perf_counter() - start


async def run_all(bf: Any, deadline: float, runs: int, mode: str) -> dict[str, list[float]]:
    steps = make_steps(bf, deadline, track=(mode == "prefect"))
    waits: dict[str, list[float]] = {k: [] for k in KINDS}
    for kind, step in steps.items():
        await measure(step, bf)  # warm-up (first task run, thread pool)
        for _ in range(runs):
            waits[kind].append(await measure(step, bf))
            await asyncio.sleep(3 * deadline)  # let abandoned work finish
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from beluga_flows.tools.server import LocalServer

    with tempfile.TemporaryDirectory() as tmp, LocalServer.start(Path(tmp) / "srv") as server:
        os.environ.update(server.client_env())
        os.environ["PREFECT_LOGGING_LEVEL"] = "CRITICAL"
        import beluga_flows as bf

        print(f"deadline {args.deadline:g}s; median caller wait of {args.runs} runs / deadline")
        print(f"{'kind':<20}{'inline':>16}{'prefect task':>18}")
        results: dict[str, dict[str, list[float]]] = {}
        for mode in ("inline", "prefect"):
            results[mode] = asyncio.run(run_all(bf, args.deadline, args.runs, mode))

        def fmt(waits: list[float]) -> str:
            median = statistics.median(waits)
            return f"{median:.3f}s {median / args.deadline:.2f}x"

        for kind in KINDS:
            print(
                f"{kind:<20}{fmt(results['inline'][kind]):>16}{fmt(results['prefect'][kind]):>18}"
            )


if __name__ == "__main__":
    main()
