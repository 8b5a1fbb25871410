"""A worker process admitted as a half-open probe that then hangs (run as a script).

usage: breaker_probe_worker.py REDIS_URL BREAKER NOW RECOVERY_TIMEOUT
Its breaker's clock stands still at NOW (past the recovery time), so its call is
admitted as the probe; the call marks ``admitted:BREAKER`` in Redis and hangs
until the test SIGKILLs the process: the probe never reports back.
"""

from __future__ import annotations

import asyncio
import sys

import redis

import beluga_flows as bf


async def main(url: str, name: str, now: float, recovery: float) -> None:
    marker = redis.Redis.from_url(url)
    breaker = bf.CircuitBreaker(
        name, recovery_timeout=recovery, store=bf.RedisStore(url), clock=lambda: now
    )

    async def hang() -> None:
        marker.set(f"admitted:{name}", 1)
        await asyncio.Event().wait()

    await breaker.call(hang)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
