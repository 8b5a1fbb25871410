"""What a closed circuit breaker costs an inline step, per call.

Runs the same trivial async inline step with and without ``circuit_breaker=`` (and
with a Redis-backed breaker when ``--redis URL`` is given), medians of batches,
and prints microseconds per call and the difference.

    python bench/breaker_overhead.py [--calls 20000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import beluga_flows as bf


def make_step(breaker: Any) -> Any:
    @bf.step(track=False, circuit_breaker=breaker)
    async def inc(x: int) -> int:
        return x + 1

    return inc


async def per_call(step: Any, calls: int, batches: int) -> float:
    """Median seconds per call over ``batches`` batches of ``calls`` sequential calls."""
    samples = []
    with bf.use_engine("local"):
        for _ in range(batches + 1):  # the first batch warms up
            start = time.perf_counter()
            for i in range(calls):
                await step(i)
            samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples[1:])


async def main(calls: int, batches: int, redis_url: str | None) -> dict[str, float]:
    rows = {
        "no breaker": await per_call(make_step(None), calls, batches),
        "closed breaker (memory store)": await per_call(
            make_step(bf.CircuitBreaker(f"bench-{uuid.uuid4().hex[:6]}")), calls, batches
        ),
    }
    if redis_url:
        store = bf.RedisStore(redis_url)
        breaker = bf.CircuitBreaker(f"bench-{uuid.uuid4().hex[:6]}", store=store)
        rows["closed breaker (redis store)"] = await per_call(
            make_step(breaker), max(1, calls // 20), batches
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--redis", default=None)
    args = parser.parse_args()
    rows = asyncio.run(main(args.calls, args.batches, args.redis))
    base = rows["no breaker"]
    for name, value in rows.items():
        print(f"{name:<32}{value * 1e6:9.2f} µs/call   +{(value - base) * 1e6:8.2f} µs")
