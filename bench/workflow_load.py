"""The API load of live workflows waiting for signals, and how fast a signal lands.

Starts a private Prefect server (SQLite, loopback). For each N (1, 50, 500 by
default) a fresh child process hosts N in-process workflow runs that each wait for
one "go" signal. Once they all wait, the child counts the requests its hosting
thread (every run and the watcher) sends to the server over an idle window, then
signals a sample of runs one at a time, at random moments, and measures delivery
(signal sent → ``wait_for_signal`` returns inside the run). Requests are counted on
Prefect's HTTP client.

    python bench/workflow_load.py [--runs 1,50,500] [--idle 20] [--sample 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECEIVED: dict[int, float] = {}
WAITING: set[int] = set()
COUNT = {"run": 0}


def count_requests() -> None:
    """Count the Prefect API requests of the thread that hosts the runs."""
    from prefect.client.base import PrefectHttpxAsyncClient

    original = PrefectHttpxAsyncClient.send

    async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "beluga-workflows":
            COUNT["run"] += 1
        return await original(self, request, *args, **kwargs)

    PrefectHttpxAsyncClient.send = send  # type: ignore[method-assign]


async def waiter(i: int) -> int:
    """Wait for one "go" signal; note when it arrived."""
    import beluga_flows as bf

    WAITING.add(i)
    await bf.wait_for_signal("go")
    RECEIVED[i] = time.time()
    return i


def child(n: int, idle: float, sample: int) -> dict[str, Any]:
    import beluga_flows as bf

    count_requests()
    wf = bf.Workflow(waiter, name="bench-load", mode="in_process")
    started = time.perf_counter()

    async def start_all() -> list[bf.WorkflowHandle]:
        handles: list[bf.WorkflowHandle] = []
        for first in range(0, n, 25):
            batch = range(first, min(n, first + 25))
            handles += await asyncio.gather(
                *(wf.aexecute({"i": i}, workflow_id=f"load-{n}-{i}") for i in batch)
            )
        return handles

    handles = asyncio.run(start_all())
    deadline = time.monotonic() + 900
    while len(WAITING) < n:
        assert time.monotonic() < deadline, f"only {len(WAITING)} of {n} runs started"
        time.sleep(0.2)
    start_s = time.perf_counter() - started
    time.sleep(10)  # the start-up traffic (state changes, labels) ends
    before = COUNT["run"]
    time.sleep(idle)
    idle_rps = (COUNT["run"] - before) / idle
    rng = random.Random(7)
    delivery = []
    for i in rng.sample(range(n), min(sample, n)):
        time.sleep(rng.uniform(0.3, 1.3))  # a random moment in the watcher's cycle
        sent = time.time()
        wf.signal(f"load-{n}-{i}", handles[i].run_id, "go")
        while i not in RECEIVED:
            assert time.time() - sent < 60, f"signal to run {i} not delivered in 60 s"
            time.sleep(0.005)
        delivery.append(RECEIVED[i] - sent)
    return {
        "runs": n,
        "start_s": round(start_s, 1),
        "idle_rps": round(idle_rps, 2),
        "delivery_median_ms": round(statistics.median(delivery) * 1000),
        "delivery_max_ms": round(max(delivery) * 1000),
        "signals": len(delivery),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1,50,500")
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--sample", type=int, default=15)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child is not None:
        print(json.dumps(child(args.child, args.idle, args.sample)), flush=True)
        os._exit(0)  # the runs still waiting die with the process (no crash marking)
    from beluga_flows.tools.server import LocalServer

    rows = []
    with tempfile.TemporaryDirectory() as tmp, LocalServer.start(Path(tmp) / "srv") as server:
        env = {**os.environ, **server.client_env(), "PREFECT_LOGGING_LEVEL": "CRITICAL"}
        for n in (int(x) for x in args.runs.split(",")):
            command = [sys.executable, __file__, "--child", str(n), "--idle", str(args.idle)]
            done = subprocess.run(
                [*command, "--sample", str(args.sample)],
                env=env,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr[-4000:])
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    poll = os.environ.get("BELUGA_FLOWS_WORKFLOW_POLL", "0.5")
    print(f"Live workflows waiting for a signal, one host process, poll {poll} s, SQLite server")
    print("| live runs | start all (s) | idle API requests/s (all runs) | delivery median | max |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['runs']} | {r['start_s']} | {r['idle_rps']} | "
            f"{r['delivery_median_ms']} ms | {r['delivery_max_ms']} ms |"
        )


if __name__ == "__main__":
    main()
