"""Example: retries with backoff and a timeout, as Prefect shows them.

``flaky_inventory`` fails twice with a transient error before it answers (watch
its task run go Retrying → Completed in the UI); ``slow_pricing`` is cut off by
its timeout and the flow falls back to list prices, so the run still completes.

    beluga-flows run flows/resilient_fetch.py:resilient_fetch
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import beluga_flows as bf

_attempts = itertools.count(1)


@bf.step(retry_policy=bf.RetryPolicy(max_attempts=4, initial_delay=0.2, max_delay=1.0))
async def flaky_inventory(sku: str) -> int:
    """Stock level from a warehouse API that drops the first two calls."""
    if next(_attempts) % 3 != 0:
        raise ConnectionError("warehouse API: connection reset")
    return 42


@bf.step(timeout=0.5)
async def slow_pricing(sku: str) -> float:
    """A pricing service that is far too slow today."""
    await asyncio.sleep(5)
    return 9.99


@bf.flow(name="resilient-fetch")
async def resilient_fetch(sku: str = "kayak") -> dict[str, Any]:
    """Stock and price for ``sku``, degrading gracefully when pricing times out."""
    stock = await flaky_inventory(sku)
    try:
        price = await slow_pricing(sku)
        source = "pricing-service"
    except bf.OrchestratorError as err:
        if err.code is not bf.ErrorCode.TIMEOUT:
            raise
        price, source = 420.0, "list price (pricing timed out)"
    return {"sku": sku, "stock": stock, "price": price, "price_source": source}


if __name__ == "__main__":
    print(asyncio.run(resilient_fetch()))
