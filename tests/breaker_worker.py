"""A worker process for the cross-process breaker test (run as a script).

usage: breaker_worker.py REDIS_URL BREAKER START_AT CALLS
Waits until START_AT (wall clock), then makes CALLS concurrent calls through the
shared Redis-backed breaker. Each admitted call counts itself in Redis, holds for
0.5 s and fails, so the probes are in flight together.
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis

import beluga_flows as bf


async def main(url: str, name: str, start_at: float, calls: int) -> None:
    counter = redis.Redis.from_url(url)
    breaker = bf.CircuitBreaker(
        name, recovery_timeout=1, half_open_max_calls=2, store=bf.RedisStore(url)
    )

    async def probe() -> None:
        counter.incr(f"probes:{name}")
        await asyncio.sleep(0.5)
        raise ConnectionError("still down")

    await asyncio.sleep(max(0.0, start_at - time.time()))
    results = await asyncio.gather(
        *(breaker.call(probe) for _ in range(calls)), return_exceptions=True
    )
    fast = sum(isinstance(r, bf.OrchestratorError) for r in results)
    counter.incrby(f"rejected:{name}", fast)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
