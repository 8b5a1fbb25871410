"""What workflow interaction costs on Prefect's API: signals, queries, execute, result.

Starts a private Prefect server (SQLite, loopback), hosts one workflow run in this
process and measures, per operation, the caller's wall time, the HTTP requests the
caller makes, and for signals the delivery latency (sent → ``wait_for_signal``
returns inside the run). It also counts the requests a live run's watcher makes
while idle. Medians over ``--n`` repetitions; ``BELUGA_FLOWS_WORKFLOW_POLL`` sets
the run's poll interval (default 0.5 s).

    python bench/workflow_roundtrips.py [--n 20]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RECEIVED: dict[int, float] = {}
COUNTS: collections.Counter[str] = collections.Counter()


def count_requests() -> None:
    """Count Prefect API requests by thread: the caller's and the hosted run's."""
    from prefect.client.base import PrefectHttpxAsyncClient

    original = PrefectHttpxAsyncClient.send

    async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        who = "run" if threading.current_thread().name == "beluga-workflows" else "caller"
        COUNTS[who] += 1
        return await original(self, request, *args, **kwargs)

    PrefectHttpxAsyncClient.send = send  # type: ignore[method-assign]


def echo(n: int) -> int:
    """Wait for ``n`` "ping" signals; note when each arrived."""
    import beluga_flows as bf

    seen = {"count": 0}

    @bf.query_handler("count")
    def count() -> int:
        return seen["count"]

    for _ in range(n):
        ping = bf.wait_for_signal("ping")
        RECEIVED[ping["i"]] = time.time()
        seen["count"] += 1
    return seen["count"]


def measure(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    before = COUNTS["caller"]
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, COUNTS["caller"] - before, value


def row(name: str, samples: list[tuple[float, int, Any]], extra: str = "") -> str:
    wall = statistics.median(s[0] for s in samples) * 1000
    calls = statistics.median(s[1] for s in samples)
    return f"| {name} | {wall:.1f} ms | {calls:g} | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from beluga_flows.tools.server import LocalServer

    with tempfile.TemporaryDirectory() as tmp, LocalServer.start(Path(tmp) / "srv") as server:
        os.environ.update(server.client_env())
        os.environ["PREFECT_LOGGING_LEVEL"] = "CRITICAL"
        import beluga_flows as bf

        count_requests()
        wf = bf.Workflow(echo, name="bench-echo", mode="in_process")
        n = args.n
        warm = wf.execute({"n": 1}, workflow_id="warm-up")
        wf.signal("warm-up", warm.run_id, "ping", {"i": -1})
        wf.get_result("warm-up", warm.run_id, timeout=60)

        execute = [measure(lambda i=i: wf.execute({"n": n}, workflow_id=f"echo-{i}")) for i in (0,)]
        handle = execute[0][2]
        time.sleep(2)  # the run is up and waiting
        before_idle = COUNTS["run"]
        time.sleep(5)
        watcher_rps = (COUNTS["run"] - before_idle) / 5
        sent: dict[int, float] = {}
        signals = []
        for i in range(n):
            sent[i] = time.time()
            ping = {"i": i}
            signals.append(measure(lambda p=ping: wf.signal("echo-0", handle.run_id, "ping", p)))
            time.sleep(0.05)
        result = measure(lambda: wf.get_result("echo-0", handle.run_id, timeout=120))
        delivery = [RECEIVED[i] - sent[i] for i in range(n)]

        other = wf.execute({"n": 1}, workflow_id="echo-queries")
        time.sleep(1)

        def ask(kind: str) -> list[tuple[float, int, Any]]:
            return [measure(lambda: wf.query("echo-queries", other.run_id, kind)) for _ in range(n)]

        status, steps, custom = ask("status"), ask("steps"), ask("count")
        wf.signal("echo-queries", other.run_id, "ping", {"i": 10_000})
        wf.get_result("echo-queries", other.run_id, timeout=60)

        poll = os.environ.get("BELUGA_FLOWS_WORKFLOW_POLL", "0.5")
        print(f"Workflow interaction on Prefect 3.8.8 (SQLite server), poll {poll} s, n={n}")
        print("| operation | caller wall (median) | caller API requests | notes |")
        print("|---|---|---|---|")
        print(row("execute (in-process)", execute, "returns before the run starts"))
        print(
            row(
                "signal",
                signals,
                f"delivered to `wait_for_signal` in {statistics.median(delivery) * 1000:.0f} ms "
                f"median, {max(delivery) * 1000:.0f} ms max",
            )
        )
        print(row("query status", status, "one flow-run read"))
        print(row("query steps", steps, "flow-run read + task-run filter"))
        print(row("query custom (answered by the run)", custom, "round trip via the run's watcher"))
        print(row("get_result", [result], "right after the last signal: waits, reads the result"))
        print(f"| live run, idle | | {watcher_rps:.1f} req/s | the run's watcher: state + inputs |")


if __name__ == "__main__":
    main()
