"""A tiny beluga_flows provider: chains and graphs that run in-process and say so.

``make_chain(steps, **options)`` builds a local chain whose output is tagged
``{"provider": "tiny", ...}``; ``make_graph(**options)`` a local graph. The chain
factory offers a health check (``make_chain.health_check``).
"""

from __future__ import annotations

from typing import Any

import beluga_flows as bf

CALLS: list[dict[str, Any]] = []  # the options each factory call received


def _tag(output: Any) -> dict[str, Any]:
    return {"provider": "tiny", "output": output}


def make_chain(steps: Any, **options: Any) -> bf.Runnable:
    """A local chain of ``steps`` plus a last step that tags the output."""
    CALLS.append({"kind": "chain", **options})
    return bf.Chain([*steps, _tag], provider="local", **options)


def make_graph(**options: Any) -> bf.Runnable:
    """A local graph."""
    CALLS.append({"kind": "graph", **options})
    return bf.Graph(provider="local", **options)


def _health() -> tuple[str, str]:
    return ("ok", "tiny is fine")


make_chain.health_check = _health  # type: ignore[attr-defined]
