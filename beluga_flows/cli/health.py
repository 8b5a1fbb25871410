"""``beluga-flows health [--json] [--redis URL] [--timeout S]``: the orchestrator's
health report, for people and for liveness/readiness probes.

Checks what :meth:`~beluga_flows.Orchestrator.health` checks from this process: the
Prefect API (``PREFECT_API_URL``, else the home's server when it runs), the breaker
store (``--redis URL`` or ``$BELUGA_FLOWS_REDIS_URL``: a Redis PING; else in-memory)
and the installed providers that offer a check. Prints one line per component (or
the report as JSON with ``--json``); exit 0 when healthy, 1 when not.

Example::

    beluga-flows health --json
    beluga-flows health --redis redis://redis:6379/0 --timeout 3
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["register"]


def _cmd_health(args: argparse.Namespace) -> int:
    from beluga_flows.orchestrator import Orchestrator
    from beluga_flows.resilience.stores import RedisStore

    url = args.redis or os.environ.get("BELUGA_FLOWS_REDIS_URL")
    store = RedisStore(url, timeout=args.timeout) if url else None
    try:
        report = Orchestrator(breaker_store=store).health(timeout=args.timeout)
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("healthy" if report.healthy else "unhealthy")
        for name, c in sorted(report.components.items()):
            latency = "" if c.latency_ms is None else f" ({c.latency_ms:.1f} ms)"
            print(f"  {name:<14} {c.status:<9}{latency} {c.detail}")
    return 0 if report.healthy else 1


def register(sub: Any) -> None:
    """Add ``health`` to the ``beluga-flows`` parser."""
    health = sub.add_parser("health", help="check the Prefect API, breaker store and providers")
    health.add_argument("--json", action="store_true", help="print the report as JSON")
    health.add_argument("--redis", metavar="URL", help="the Redis breaker store to PING")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    health.set_defaults(func=_cmd_health)
